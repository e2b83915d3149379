// Test helper for load.test.ts, run as `node --conditions=@berth/source --import <ts-register>
// load-filter.mjs FILTER FLAGS MODE ARGS...`. It sets no_new_privs, loads the compiled filter
// FILTER (raw struct sock_filter bytes) on its main thread, then either
//   probe DIR   tries mkdir DIR and prints {"mkdir": "ok" | errno code, "seccomp": Seccomp: mode}
//   exec PATH ARGV...   execs PATH (the filter stays; the other Node threads die with the exec).
import { mkdirSync, readFileSync } from "node:fs";
import { execve, Prctl, prctl, seccompSetFilter } from "@berth/sys";

const [filterPath, flags, mode, ...rest] = process.argv.slice(2);
const program = new Uint8Array(readFileSync(filterPath));
prctl(Prctl.PR_SET_NO_NEW_PRIVS, 1);
seccompSetFilter(program, Number(flags));

if (mode === "probe") {
  let mkdir = "ok";
  try {
    mkdirSync(rest[0]);
  } catch (err) {
    mkdir = err.code;
  }
  const status = readFileSync("/proc/self/status", "utf8");
  const seccomp = /^Seccomp:\s*(\d+)/m.exec(status)?.[1];
  process.stdout.write(`${JSON.stringify({ mkdir, seccomp })}\n`);
} else if (mode === "exec") {
  execve(rest[0], rest, ["PATH=/bin"]);
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
