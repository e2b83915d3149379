import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { collectOutput, requiresRoot } from "@berth/testing";
import { afterEach, describe, expect, it } from "vitest";
import { readMountInfo } from "./index.js";

// Namespaces, credentials, capabilities, seccomp and exec change the whole process for good, so
// each case runs in a throwaway `node` child on the package's TypeScript sources. The content
// package's module hooks transpile them; they are resolved by path rather than declared as a
// dependency because @berth/content depends on @berth/sys, and a declared edge back would make
// the package graph (and nx's build order) cyclic.
const register = pathToFileURL(
  createRequire(import.meta.url).resolve("@berth/content/testsuite/ts-register.mjs"),
).href;
const sysUrl = pathToFileURL(join(import.meta.dirname, "index.ts")).href;

const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of dirs.splice(0)) {
    // The children mount only in their own private mount namespaces; nothing may show here.
    expect(readMountInfo().filter((m) => m.mountPoint.startsWith(dir))).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  }
});

interface ChildResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `body` (an ES module body with `sys` imported and `out(value)` to report) in a new node. */
async function inChild(body: string, args: readonly string[] = []): Promise<ChildResult> {
  const code = `import * as sys from ${JSON.stringify(sysUrl)};
const out = (v) => process.stdout.write(JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x)) + "\\n");
const args = ${JSON.stringify(args)};
${body}`;
  const child = spawn(
    process.execPath,
    ["--conditions=@berth/source", "--import", register, "--input-type=module", "-e", code],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  children.push(child);
  const { code: status, stdout, stderr } = await collectOutput(child);
  return { status, stdout, stderr };
}

async function childJson(body: string, args: readonly string[] = []): Promise<Record<string, unknown>> {
  const r = await inChild(body, args);
  if (r.status !== 0) throw new Error(`child exited with ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "null") as Record<string, unknown>;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-sys-ns-"));
  dirs.push(dir);
  return dir;
}

describe.runIf(requiresRoot("namespace, credential and exec syscalls in child processes"))(
  "in a child process",
  () => {
    it("unshares UTS, sets host and domain name, and setns back", async () => {
      const got = await childJson(`
      import { hostname } from "node:os";
      import { openSync, readFileSync } from "node:fs";
      const original = openSync(sys.namespacePath("self", "uts"), "r");
      const before = hostname();
      sys.unshare(sys.NamespaceFlag.CLONE_NEWUTS);
      sys.sethostname("berth-test-host");
      sys.setdomainname("berth.test");
      const inside = [hostname(), readFileSync("/proc/sys/kernel/domainname", "utf8").trim()];
      sys.setns(original, sys.NamespaceFlag.CLONE_NEWUTS);
      let mnt;
      try { sys.joinNamespace(sys.namespacePath("self", "mount"), "mount"); } catch (e) { mnt = [e.errnoName, e.code]; }
      let longName;
      try { sys.sethostname("x".repeat(65)); } catch (e) { longName = e.code; }
      out({ before, inside, after: hostname(), mnt, longName });
    `);
      expect(got.inside).toEqual(["berth-test-host", "berth.test"]);
      expect(got.after).toBe(got.before);
      // A Node process is multithreaded, and the kernel refuses to move one into a mount namespace.
      expect(got.mnt).toEqual(["EINVAL", "invalid-argument"]);
      expect(got.longName).toBe("invalid-argument");
    });

    it("unshares the mount namespace of the main thread only and pivots into a tmpfs", async () => {
      const dir = tempDir();
      const got = await childJson(
        `
      import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
      import { readdir } from "node:fs/promises";
      const [dir] = args;
      sys.unshare(sys.NamespaceFlag.CLONE_NEWNS);
      sys.mount(null, "/", null, sys.MountFlag.REC | sys.MountFlag.PRIVATE, null);
      let notMountPoint;
      try { sys.pivotRoot(dir, dir); } catch (e) { notMountPoint = [e.syscall, e.path]; }
      sys.mount("tmpfs", dir, "tmpfs", 0, "size=1m");
      writeFileSync(dir + "/marker", "x");
      mkdirSync(dir + "/old");
      // libuv's worker threads did not unshare: async fs still sees the host's mounts.
      const workerView = await readdir(dir);
      process.chdir(dir);
      sys.pivotRoot(".", "old");
      sys.unmount("/old", { detach: true });
      out({ notMountPoint, workerView, root: readdirSync("/").sort(), cwd: process.cwd() });
    `,
        [dir],
      );
      expect(got.notMountPoint).toEqual(["pivot_root", dir]);
      expect(got.workerView).toEqual([]);
      expect(got.root).toEqual(["marker", "old"]);
      expect(got.cwd).toBe("/");
    });

    it("chroots into a directory", async () => {
      const dir = tempDir();
      const got = await childJson(
        `
      import { mkdirSync, readdirSync } from "node:fs";
      const [dir] = args;
      mkdirSync(dir + "/inside");
      sys.chroot(dir);
      process.chdir("/");
      let missing;
      try { sys.chroot("/nonexistent"); } catch (e) { missing = e.code; }
      out({ root: readdirSync("/"), missing });
    `,
        [dir],
      );
      expect(got).toEqual({ root: ["inside"], missing: "not-found" });
    });

    it("starts children as PID 1 after unshare(CLONE_NEWPID)", async () => {
      const got = await childJson(`
      import { execFileSync } from "node:child_process";
      import { readlinkSync } from "node:fs";
      sys.unshare(sys.NamespaceFlag.CLONE_NEWPID);
      const pid = execFileSync("/bin/busybox", ["sh", "-c", "echo $$"], { encoding: "utf8" }).trim();
      out({ pid, own: readlinkSync("/proc/self/ns/pid"), children: readlinkSync("/proc/self/ns/pid_for_children") });
    `);
      expect(got.pid).toBe("1");
      expect(got.children).not.toBe(got.own);
    });

    it("changes ids and groups in every thread", async () => {
      const got = await childJson(`
      import { readdirSync, readFileSync } from "node:fs";
      sys.setgroups([10, 20]);
      sys.setresgid(1000, 1001, 1002);
      sys.setresuid(2000, 2001, 2002);
      const tasks = readdirSync("/proc/self/task").map((tid) => {
        const s = readFileSync("/proc/self/task/" + tid + "/status", "utf8");
        return ["Uid", "Gid", "Groups"].map((f) => s.match(new RegExp("^" + f + ":\\\\s*(.*)$", "m"))[1].trim());
      });
      let denied;
      try { sys.setresuid(0, 0, 0); } catch (e) { denied = [e.errnoName, e.code]; }
      out({ tasks, ids: [sys.getuid(), sys.geteuid(), sys.getgid(), sys.getegid()], denied });
    `);
      const tasks = got.tasks as string[][];
      expect(tasks.length).toBeGreaterThan(1);
      for (const t of tasks) expect(t).toEqual(["2000\t2001\t2002\t2001", "1000\t1001\t1002\t1001", "10 20"]);
      expect(got.ids).toEqual([2000, 2001, 1000, 1001]);
      expect(got.denied).toEqual(["EPERM", "permission-denied"]);
    });

    it("sets the bounding, permitted, effective, inheritable and ambient sets", async () => {
      const got = await childJson(`
      import { readFileSync } from "node:fs";
      const keep = (1n << 0n) | (1n << 5n) | (1n << 10n);
      sys.dropBoundingSet(keep);
      sys.capset({ effective: keep, permitted: keep, inheritable: keep });
      sys.setAmbient(1n << 10n);
      const s = readFileSync("/proc/self/status", "utf8");
      const f = (n) => BigInt("0x" + s.match(new RegExp("^" + n + ":\\\\s+([0-9a-f]+)$", "m"))[1]);
      let raise;
      try { sys.capset({ effective: keep, permitted: keep | (1n << 21n), inheritable: 0n }); } catch (e) { raise = e.errnoName; }
      out({ caps: sys.capget(), bnd: sys.readBoundingSet(), amb: sys.readAmbient(),
            status: [f("CapEff"), f("CapPrm"), f("CapInh"), f("CapBnd"), f("CapAmb")], raise });
    `);
      const keep = String((1n << 0n) | (1n << 5n) | (1n << 10n));
      expect(got.caps).toEqual({ effective: keep, permitted: keep, inheritable: keep });
      expect(got.bnd).toBe(keep);
      expect(got.amb).toBe(String(1n << 10n));
      expect(got.status).toEqual([keep, keep, keep, keep, String(1n << 10n)]);
      expect(got.raise).toBe("EPERM");
    });

    it("loads a seccomp filter on every thread", async () => {
      const killNr = process.arch === "arm64" ? 129 : 62;
      const got = await childJson(
        `
      const [nr] = args;
      const prog = Buffer.alloc(4 * 8);
      const insn = (i, code, jt, jf, k) => { prog.writeUInt16LE(code, i * 8); prog[i * 8 + 2] = jt; prog[i * 8 + 3] = jf; prog.writeUInt32LE(k >>> 0, i * 8 + 4); };
      insn(0, 0x20, 0, 0, 0);                 // ld [0]  (seccomp_data.nr)
      insn(1, 0x15, 0, 1, Number(nr));        // jeq kill
      insn(2, 0x06, 0, 0, 0x00050000 | 3);    // ret ERRNO(ESRCH)
      insn(3, 0x06, 0, 0, 0x7fff0000);        // ret ALLOW
      sys.prctl(sys.Prctl.PR_SET_NO_NEW_PRIVS, 1);
      const rc = sys.seccompSetFilter(prog, sys.SeccompFilterFlag.TSYNC);
      let killed;
      try { sys.kill(process.pid, 0); } catch (e) { killed = e.errnoName; }
      const s = (await import("node:fs")).readFileSync("/proc/self/status", "utf8");
      out({ rc, killed, nnp: sys.prctl(sys.Prctl.PR_GET_NO_NEW_PRIVS), seccomp: s.match(/^Seccomp:\\s+(\\d+)/m)[1] });
    `,
        [String(killNr)],
      );
      expect(got).toMatchObject({ rc: 0, killed: "ESRCH", nnp: 1, seccomp: "2" });
    });

    it("becomes a session leader with a controlling terminal", async () => {
      const got = await childJson(`
      import { closeSync, openSync, readFileSync } from "node:fs";
      let before;
      try { closeSync(openSync("/dev/tty", "r")); before = "tty"; } catch (e) { before = e.code; }
      const sid = sys.setsid();
      const pty = sys.openpty();
      sys.setControllingTerminal(pty.slave);
      closeSync(openSync("/dev/tty", "r"));
      const ttyNr = Number(readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ")[4]);
      out({ sid, pid: process.pid, ttyNr, before });
    `);
      expect(got.sid).toBe(got.pid);
      expect(got.ttyNr).not.toBe(0);
    });

    it("execs with clean fds, signals and blocking stdio", async () => {
      const r = await inChild(`
      import { openSync } from "node:fs";
      const leak = openSync("/proc/self/status", "r");
      sys.setCloexec(leak, false);
      sys.setBlocking(0, false);
      sys.closeRange(3, undefined, sys.CloseRangeFlag.CLOEXEC);
      sys.setBlocking(0);
      // Node opens its stdio close-on-exec.
      for (const fd of [0, 1, 2]) sys.setCloexec(fd, false);
      sys.resetSignalsForExec();
      sys.execve("/bin/busybox", ["sh", "-c", "ls /proc/self/fd; grep -E '^Sig(Ign|Blk)' /proc/self/status; grep ^flags /proc/self/fdinfo/0"], ["PATH=/bin"]);
    `);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const lines = r.stdout.trim().split("\n");
      // 0-2 plus the directory ls is reading.
      expect(lines.slice(0, 4)).toEqual(["0", "1", "2", "3"]);
      expect(lines).toContain("SigIgn:\t0000000000000000");
      expect(lines).toContain("SigBlk:\t0000000000000000");
      const flags = Number.parseInt(lines.find((l) => l.startsWith("flags:"))?.split(/\s+/)[1] ?? "", 8);
      expect(flags & 0o4000).toBe(0);
    });
  },
);
