// Test helper for load.test.ts, run as `node --conditions=@berth/source --import <ts-register>
// load-filter.mjs FILTER FLAGS MODE ARGS...`. It sets no_new_privs, loads the compiled filter
// FILTER (raw struct sock_filter bytes) on its main thread, then either
//   probe DIR   tries mkdir DIR and prints {"mkdir": 0 | errno number, "seccomp": Seccomp: mode}
//   exec PATH ARGV...   execs PATH (the filter stays; the other Node threads die with the exec).
import { mkdirSync, readFileSync } from "node:fs";
import {
  execve,
  Prctl,
  prctl,
  resetSignalsForExec,
  seccompSetFilter,
  setBlocking,
  setCloexec,
} from "@berth/sys";

const [filterPath, flags, mode, ...rest] = process.argv.slice(2);
const program = new Uint8Array(readFileSync(filterPath));
if (mode === "exec") {
  // Node keeps its stdio close-on-exec and maybe non-blocking; the exec'd program needs them plain.
  // Done before the filter goes on, so that execve is the only call made under it.
  for (const fd of [0, 1, 2]) {
    setCloexec(fd, false);
    setBlocking(fd);
  }
  resetSignalsForExec();
}
prctl(Prctl.PR_SET_NO_NEW_PRIVS, 1);
seccompSetFilter(program, Number(flags));

if (mode === "probe") {
  let mkdir = 0;
  try {
    mkdirSync(rest[0]);
  } catch (err) {
    // libuv has no name for every errno (EDQUOT), so report the number.
    mkdir = -err.errno;
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
