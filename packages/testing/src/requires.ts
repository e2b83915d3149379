import { accessSync, constants } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";

// One skip message per reason and process: a describe block guarded in many files, or evaluated
// once per test, would otherwise repeat the same line.
const reported = new Set<string>();

function skip(what: string, reason: string): false {
  const line = `skipping ${what}: ${reason}`;
  if (!reported.has(line)) {
    reported.add(line);
    process.stderr.write(`${line}\n`);
  }
  return false;
}

/**
 * Whether this process runs as root (uid 0). When it does not, prints
 * `skipping <what>: needs root (running as uid N)` to stderr, once per `what` and process, and
 * returns false. Meant as `describe.runIf(requiresRoot("overlay mounts"))(...)`. Never throws.
 */
export function requiresRoot(what: string): boolean {
  const uid = process.getuid?.() ?? -1;
  if (uid === 0) return true;
  return skip(what, `needs root (running as uid ${uid})`);
}

/**
 * The absolute path of `cmd` when it is an executable file, either given as an absolute path or
 * found in a directory of `PATH`; undefined otherwise. Never throws.
 */
export function findCommand(cmd: string): string | undefined {
  const candidates = isAbsolute(cmd)
    ? [cmd]
    : (process.env.PATH ?? "")
        .split(delimiter)
        .filter((dir) => dir !== "")
        .map((dir) => join(dir, cmd));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here, or not executable: keep looking.
    }
  }
  return undefined;
}

/**
 * Whether the command `cmd` (a name looked up in `PATH`, or an absolute path) is installed, for
 * tests that use a tool as an oracle. When it is not, prints `skipping <what>: needs <cmd>` to
 * stderr, once per `what` and command, and returns false. Never throws.
 */
export function requiresCommand(cmd: string, what: string): boolean {
  if (findCommand(cmd) !== undefined) return true;
  return skip(what, `needs ${cmd} (not found in PATH)`);
}

/**
 * Whether network tests can run here: root (to create network namespaces), `nsenter` (to run
 * servers and clients inside them), and `ip` and `nft` (to snapshot the real host's links, routes
 * and ruleset before and after, see `hostNetworkSnapshot`). Prints why not, like the others.
 */
export function requiresNetworkSandbox(what: string): boolean {
  return (
    requiresRoot(what) &&
    requiresCommand("nsenter", what) &&
    requiresCommand("ip", what) &&
    requiresCommand("nft", what)
  );
}
