import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";

const run = promisify(execFile);
const bin = new URL("../packages/cli/bin/berth.js", import.meta.url).pathname;
const built = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;

/** The test process's environment without berth's own variables, so the defaults apply. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of [
    "BERTH_NAMESPACE",
    "BERTH_ADDRESS",
    "BERTH_ROOT",
    "BERTH_STATE",
    "CONTAINERD_NAMESPACE",
  ]) {
    delete env[key];
  }
  return env;
}

/** What one `berth` invocation printed and how it exited. */
export interface BerthResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the real `berth` binary (the built CLI, as `npx berth` would) with `--root root`, and
 * never throws for a non-zero exit: tests assert on the code and output.
 */
export async function berth(root: string, ...args: string[]): Promise<BerthResult> {
  if (!existsSync(built)) throw new Error("the CLI is not built: run `npm run build` before the e2e tests");
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, "--root", root, ...args], {
      maxBuffer: 64 * 1024 * 1024,
      env: cleanEnv(),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}
