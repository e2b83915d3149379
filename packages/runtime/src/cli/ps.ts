import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { internal } from "@berth/errdefs";

const run = promisify(execFile);

/**
 * Filters `ps` output to the rows of `pids`, the way runc's `ps` does: the header line, then every
 * line whose PID column (found by name in the header) is one of `pids`, in `ps`'s order.
 *
 * @throws internal when the header has no PID column (e.g. `ps -o comm`).
 */
export function filterPsOutput(output: string, pids: readonly number[]): string {
  const lines = output.split("\n");
  const header = lines[0] ?? "";
  const index = header.trim().split(/\s+/).indexOf("PID");
  if (index < 0) throw internal(`couldn't find PID field in ps output: ${JSON.stringify(header)}`);
  const wanted = new Set(pids);
  const rows = lines.slice(1).filter((line) => {
    if (line.trim() === "") return false;
    return wanted.has(Number(line.trim().split(/\s+/)[index]));
  });
  return [header, ...rows].map((l) => `${l}\n`).join("");
}

/**
 * Runs `ps <psArgs>` (default `-ef`, like runc) and returns its output filtered to `pids`.
 *
 * @throws internal when ps fails (its output is in the message) or prints no PID column.
 */
export async function psTable(pids: readonly number[], psArgs: readonly string[]): Promise<string> {
  const args = psArgs.length === 0 ? ["-ef"] : [...psArgs];
  let stdout: string;
  try {
    ({ stdout } = await run("ps", args, { maxBuffer: 64 * 1024 * 1024 }));
  } catch (err) {
    const e = err as { message?: string; stderr?: string };
    throw internal(`ps ${args.join(" ")} failed: ${(e.stderr ?? "").trim() || e.message}`, { cause: err });
  }
  return filterPsOutput(stdout, pids);
}
