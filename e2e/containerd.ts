import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A private containerd daemon for comparisons: its own root, state and socket, killed by pid on stop. */
export interface ContainerdHandle {
  readonly address: string;
  readonly root: string;
  /** Runs `ctr --address <sock> <args>` and returns stdout. */
  ctr(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts Debian's containerd with everything under a fresh temporary directory, so it shares
 * nothing with a containerd the host may run. The CRI plugin is disabled (it wants CNI config).
 */
export async function startContainerd(): Promise<ContainerdHandle> {
  const dir = mkdtempSync(join(tmpdir(), "berth-containerd-"));
  const address = join(dir, "containerd.sock");
  const config = join(dir, "config.toml");
  writeFileSync(
    config,
    [
      "version = 2",
      `root = "${join(dir, "root")}"`,
      `state = "${join(dir, "state")}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      "[grpc]",
      `  address = "${address}"`,
      "[ttrpc]",
      `  address = "${address}.ttrpc"`,
      "[debug]",
      `  address = "${address}.debug"`,
      "[metrics]",
      '  address = ""',
    ].join("\n"),
  );
  const child: ChildProcess = spawn("containerd", ["--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  const stop = async () => {
    if (child.exitCode === null && child.pid !== undefined) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(child.pid, "SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const ctr = async (...args: string[]) => (await run("ctr", ["--address", address, ...args])).stdout;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (existsSync(address)) {
      try {
        await ctr("version");
        break;
      } catch {
        // The socket exists before the services are registered; try again.
      }
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`containerd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { address, root: join(dir, "root"), ctr, stop };
}
