/**
 * The runc comparison: the same busybox bundles run under runc 1.1 (the oracle) and berth-runc
 * (the built CLI, as `npx berth-runc` runs it), comparing what the container sees. Where the two
 * differ on purpose, the test says so and why, next to the assertion.
 */
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkStateSchema } from "@berth/runtime";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Bundle, type Config, makeBundle, removeBundle } from "./runc/bundle.js";
import { type CliRuntime, type Outcome, openRuntime, removeCgroups } from "./runc/runtimes.js";

let serial = 0;

describe.runIf(requiresRoot("runc comparison (containers)") && requiresCommand("runc", "runc comparison"))(
  "berth-runc against runc: what the container sees",
  () => {
    let runc: CliRuntime;
    let berth: CliRuntime;
    const bundles: Bundle[] = [];
    const cgroups: string[] = [];

    beforeEach(() => {
      runc = openRuntime("runc");
      berth = openRuntime("berth-runc");
    });

    afterEach(async () => {
      // Runtimes first (they kill and delete their containers), then cgroups and bundles.
      await Promise.allSettled([runc.cleanup(), berth.cleanup()]);
      const left = cgroups.splice(0).flatMap((c) => removeCgroups(c));
      for (const b of bundles.splice(0)) removeBundle(b);
      expect(left).toEqual([]);
    });

    /** A bundle running `args` with a cgroupsPath of this test's own. */
    async function bundle(
      args: string[],
      edit?: (config: Config) => void,
    ): Promise<{ b: Bundle; id: string }> {
      const id = `cmp${serial++}`;
      const parent = `/berth-cmp-${process.pid}-${id}`;
      cgroups.push(`${parent}/${id}`);
      const b = await makeBundle(args, `${parent}/${id}`, edit);
      bundles.push(b);
      return { b, id };
    }

    /** Runs the bundle under runc, then under berth-runc (one at a time: they share the cgroup path). */
    async function both(args: string[], edit?: (config: Config) => void): Promise<[Outcome, Outcome]> {
      const { b, id } = await bundle(args, edit);
      const r = await runc.run(b.dir, id);
      const o = await berth.run(b.dir, id);
      return [r, o];
    }

    const sh = (script: string) => ["sh", "-c", script];

    it("ids and capabilities (/proc/self/status) match for the default spec", async () => {
      const [r, o] = await both(
        sh("grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status"),
      );
      expect(r.code).toBe(0);
      expect(o.stderr).toBe("");
      expect(o).toEqual(r);
    });

    it("a non-root user with additional gids and extra capabilities matches", async () => {
      const [r, o] = await both(
        sh("grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status; id"),
        (c) => {
          c.process.user = { uid: 1000, gid: 1001, additionalGids: [10, 20] };
          for (const set of ["bounding", "effective", "permitted", "inheritable", "ambient"]) {
            c.process.capabilities[set] = ["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"];
          }
        },
      );
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Uid:\t1000\t1000\t1000\t1000$/m);
      expect(o).toEqual(r);
    });

    it("mounts (mount point, fstype, per-mount options from mountinfo) match", async () => {
      const fields = (out: Outcome) =>
        out.stdout
          .trim()
          .split("\n")
          .map((line) => {
            const [left = "", right = ""] = line.split(" - ");
            const a = left.split(" ");
            return `${a[4]} ${right.split(" ")[0]} ${a[5]}`;
          })
          .sort();
      const [r, o] = await both(["cat", "/proc/self/mountinfo"]);
      expect(r.code).toBe(0);
      expect(o.code).toBe(0);
      const ours = fields(o)
        // Documented difference 1: on a hybrid host berth also binds the container's cgroup2
        // (unified) directory into the cgroup mount; runc 1.1 binds only the v1 hierarchies. It is
        // read-only like the others, and lets the container see its v2 membership.
        .filter((m) => m !== "/sys/fs/cgroup/unified cgroup2 ro,nosuid,nodev,noexec,relatime")
        .map((m) =>
          m
            // Documented difference 2: the spec's cgroup mount says "ro"; berth remounts the
            // tmpfs that holds the hierarchies read-only too, runc leaves that tmpfs writable.
            .replace(/^(\/sys\/fs\/cgroup tmpfs) ro,/, "$1 rw,")
            // Documented difference 3: berth's read-only paths (/proc/bus, /proc/sys, ...) are
            // remounted nosuid,nodev,noexec as well as ro; runc keeps the proc mount's flags.
            // Stricter, and nothing under those paths is executable or a device anyway.
            .replace(/^(\/proc\/\S+ proc) ro,nosuid,nodev,noexec,relatime$/, "$1 ro,relatime"),
        );
      expect(ours).toEqual(fields(r));
    });

    it("hostname and the network devices match; domainname is set as the spec asks", async () => {
      const [r, o] = await both(
        sh("hostname; cat /proc/sys/kernel/domainname; cut -d: -f1 /proc/net/dev | tail -n +3"),
        (c) => {
          c.hostname = "cmp-host";
          c.domainname = "cmp.example";
        },
      );
      // Documented difference: runc 1.1 ignores `domainname` (runtime-spec 1.0.2 added it; runc
      // implements it from 1.2). berth sets it, as the spec says.
      expect(r.stdout).toBe("cmp-host\n(none)\n    lo\n");
      expect(o).toEqual({ ...r, stdout: "cmp-host\ncmp.example\n    lo\n" });
    });

    it("rlimits (/proc/self/limits) match", async () => {
      const [r, o] = await both(["cat", "/proc/self/limits"], (c) => {
        c.process.rlimits = [
          { type: "RLIMIT_NOFILE", hard: 2048, soft: 1000 },
          { type: "RLIMIT_NPROC", hard: 300, soft: 200 },
          { type: "RLIMIT_CORE", hard: 0, soft: 0 },
        ];
      });
      expect(r.stdout).toMatch(/^Max open files\s+1000\s+2048\s+files/m);
      expect(o).toEqual(r);
    });

    it("cgroup limits, device rules and membership seen from inside match", async () => {
      const [r, o] = await both(
        sh(
          [
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.shares",
            // The kernel lists device rules in the order they were written, which differs.
            "sort /sys/fs/cgroup/devices/devices.list",
            "ls /sys/fs/cgroup",
            "cat /proc/self/cgroup",
          ].join("; "),
        ),
        (c) => {
          c.linux.resources = {
            ...c.linux.resources,
            memory: { limit: 64 * 1024 * 1024 },
            pids: { limit: 50 },
            cpu: { shares: 512 },
          };
        },
      );
      expect(r.stdout).toMatch(/^67108864\n50\n512\n/);
      // runc's default spec denies every device, then allows the default ones (runc's list).
      expect(r.stdout).toContain("c 1:3 rwm\n");
      expect(r.stdout).not.toContain("a *:* rwm");
      // Documented difference: berth also binds the cgroup2 (unified) directory (see mounts).
      expect({ ...o, stdout: o.stdout.replace(/^unified\n/m, "") }).toEqual(r);
    });

    it("exit codes propagate", async () => {
      const [r, o] = await both(sh("echo out; echo err >&2; exit 3"));
      expect(r).toMatchObject({ code: 3, stdout: "out\n", stderr: "err\n" });
      expect(o).toEqual(r);
    });

    it("no fds beyond 0-2 reach the container", async () => {
      const [r, o] = await both(["ls", "/proc/self/fd"]);
      // 3 is ls's own handle on the directory.
      expect(r.stdout).toBe("0\n1\n2\n3\n");
      expect(o).toEqual(r);
    });

    it("a signal sent with kill from outside reaches the container's trap", async () => {
      const script = sh("trap 'echo got-TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done");
      const { b, id } = await bundle(script);
      const outcomes: Outcome[] = [];
      for (const rt of [runc, berth]) {
        const running = rt.start(b.dir, id);
        await running.waitFor("ready");
        const killed = await rt.cli("kill", id, "TERM");
        expect(killed.code).toBe(0);
        outcomes.push(await running.done);
      }
      expect(outcomes[0]).toEqual({ code: 7, signal: null, stdout: "ready\ngot-TERM\n", stderr: "" });
      expect(outcomes[1]).toEqual(outcomes[0]);
    });

    it("create, state, start, kill, delete: the same states, valid against the state schema", async () => {
      const { b, id } = await bundle(["sleep", "30"]);
      for (const rt of [runc, berth]) {
        expect((await rt.cli("create", "-b", b.dir, id)).code).toBe(0);
      }
      const docs = await Promise.all(
        [runc, berth].map(async (rt) => JSON.parse((await rt.cli("state", id)).stdout)),
      );
      for (const doc of docs) {
        expect(checkStateSchema(doc)).toEqual([]);
        expect(doc).toMatchObject({ id, status: "created", bundle: b.dir, rootfs: `${b.dir}/rootfs` });
      }
      expect(Object.keys(docs[1]).sort()).toEqual(Object.keys(docs[0]).sort());
      // Duplicate ids fail the same way (exit 1) in both.
      for (const rt of [runc, berth]) expect((await rt.cli("create", "-b", b.dir, id)).code).toBe(1);
      for (const rt of [runc, berth]) {
        expect((await rt.cli("start", id)).code).toBe(0);
        expect(JSON.parse((await rt.cli("state", id)).stdout)).toMatchObject({ status: "running" });
        expect((await rt.cli("start", id)).code).toBe(1);
        expect((await rt.cli("delete", id)).code).toBe(1);
        expect((await rt.cli("kill", id, "KILL")).code).toBe(0);
      }
      for (const rt of [runc, berth]) {
        // The kill is asynchronous in both: wait until the state says stopped.
        let doc: { status?: string; pid?: number } = {};
        for (let i = 0; i < 100 && doc.status !== "stopped"; i++) {
          doc = JSON.parse((await rt.cli("state", id)).stdout);
          if (doc.status !== "stopped") await new Promise((r) => setTimeout(r, 50));
        }
        expect(doc).toMatchObject({ status: "stopped", pid: 0 });
        expect(checkStateSchema(doc)).toEqual([]);
        expect((await rt.cli("delete", id)).code).toBe(0);
        expect(await rt.cli("list", "-q")).toMatchObject({ code: 0, stdout: "" });
        expect((await rt.cli("state", id)).code).toBe(1);
      }
    });

    it("exec, ps, pause and resume behave like runc's", async () => {
      const { b, id } = await bundle(["sleep", "30"], (c) => {
        c.hostname = "exec-host";
      });
      const seen: unknown[] = [];
      for (const rt of [runc, berth]) {
        expect((await rt.cli("run", "-d", "-b", b.dir, id)).code).toBe(0);
        const exec = await rt.cli(
          "exec",
          "--env",
          "X=42",
          "--cwd",
          "/tmp",
          id,
          "sh",
          "-c",
          "hostname; pwd; echo $X; id -u; exit 4",
        );
        const pids = JSON.parse((await rt.cli("ps", "-f", "json", id)).stdout) as number[];
        const table = (await rt.cli("ps", id)).stdout.trim().split("\n");
        expect((await rt.cli("pause", id)).code).toBe(0);
        const paused = JSON.parse((await rt.cli("state", id)).stdout).status;
        const execPaused = (await rt.cli("exec", id, "true")).code;
        expect((await rt.cli("resume", id)).code).toBe(0);
        const resumed = JSON.parse((await rt.cli("state", id)).stdout).status;
        expect((await rt.cli("delete", "-f", id)).code).toBe(0);
        seen.push({
          exec: { code: exec.code, stdout: exec.stdout },
          pids: pids.length,
          header: table[0]?.split(/\s+/),
          rows: table.length - 1,
          paused,
          execPaused,
          resumed,
        });
      }
      expect(seen[0]).toEqual({
        exec: { code: 4, stdout: "exec-host\n/tmp\n42\n0\n" },
        pids: 1,
        header: ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        rows: 1,
        paused: "paused",
        // runc's exec exits 255 when it cannot run the process.
        execPaused: 255,
        resumed: "running",
      });
      expect(seen[1]).toEqual(seen[0]);
    });

    it("a process that cannot be executed fails the run and leaves nothing behind", async () => {
      const [r, o] = await both(["/nonexistent"]);
      expect(r.code).not.toBe(0);
      expect(o.code).not.toBe(0);
      // The messages differ (runc: exec: "/nonexistent": stat ...); both name the path.
      expect(o.stderr).toContain("/nonexistent");
      for (const rt of [runc, berth]) expect((await rt.cli("list", "-q")).stdout).toBe("");
    });
    it("a memory hog is OOM-killed under a small memory limit, under both runtimes", async () => {
      // Doubling a shell variable allocates until the 32 MiB limit is hit; the kernel's OOM
      // killer then sends SIGKILL, so the run ends with 128 + 9.
      const [r, o] = await both(sh("x=0123456789abcdef; while :; do x=$x$x; done"), (c) => {
        c.linux.resources = {
          ...(c.linux.resources ?? {}),
          memory: { limit: 32 * 1024 * 1024, swap: 32 * 1024 * 1024 },
        };
      });
      expect(r.code).toBe(137);
      expect(o.code).toBe(137);
    });

    it("a fork bomb stops at pids.max, under both runtimes", async () => {
      // A subshell forks 40 background sleeps against a limit of 16 tasks; forks past the limit
      // fail and end the subshell. The outer shell then reads the pids controller with builtins
      // only (no fork): the count stays under the limit and pids.events records the refusals.
      const script =
        "(for i in $(seq 40); do sleep 3 & done) 2>/dev/null; read n < /sys/fs/cgroup/pids/pids.current; read e < /sys/fs/cgroup/pids/pids.events; echo current=$n $e";
      const [r, o] = await both(sh(script), (c) => {
        c.linux.resources = { ...(c.linux.resources ?? {}), pids: { limit: 16 } };
      });
      for (const out of [r, o]) {
        const m = /current=(\d+) max (\d+)/.exec(out.stdout);
        expect(m, out.stdout + out.stderr).not.toBeNull();
        expect(Number(m?.[1])).toBeLessThanOrEqual(16);
        expect(Number(m?.[2])).toBeGreaterThan(0);
      }
    });

    // Hooks: one script, logging "<kind> <host|other> <cwd> <state JSON>" to <rootfs>/hooks.log,
    // where host|other says whether it runs in this test's mount namespace. The
    // runtime-namespace hooks and createContainer (which runs before pivot_root, with the host's
    // root still visible) run it by its host path; startContainer runs /bin/hook inside the
    // container. The rootfs is one directory, so all of them append to the same file, in order.
    const HOOK = `#!/bin/sh
state=$(cat)
[ "$(readlink /proc/self/ns/mnt)" = "$HOSTMNT" ] && ns=host || ns=other
echo "$1 $ns $(pwd) $state" >> "$LOG"
exit \${HOOKEXIT:-0}
`;
    const KINDS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

    /** A bundle running `args` with every hook kind; `fail` makes that kind's hook exit 3. */
    async function hookBundle(
      args: string[],
      fail?: string,
    ): Promise<{ b: Bundle; id: string; log: string }> {
      const { b, id } = await bundle(args, (c) => {
        c.root.readonly = false; // startContainer writes the log from inside.
      });
      const hostHook = join(b.dir, "rootfs", "bin", "hook");
      const log = join(b.dir, "rootfs", "hooks.log");
      writeFileSync(hostHook, HOOK, { mode: 0o755 });
      b.config.hooks = Object.fromEntries(
        KINDS.map((kind) => {
          const inside = kind === "startContainer";
          const env = [
            `LOG=${inside ? "/hooks.log" : log}`,
            `HOSTMNT=${readlinkSync("/proc/self/ns/mnt")}`,
            ...(kind === fail ? ["HOOKEXIT=3"] : []),
          ];
          return [kind, [{ path: inside ? "/bin/hook" : hostHook, args: ["hook", kind], env }]];
        }),
      );
      b.save();
      return { b, id, log };
    }

    /** The log as [kind, ns, cwd, status, pid] with the bundle path and the init's host pid abstracted. */
    function readHookLog(log: string, dir: string): string[][] {
      if (!existsSync(log)) return [];
      const rows = readFileSync(log, "utf8")
        .trim()
        .split("\n")
        .map((line) => {
          const [kind = "", ns = "", cwd = "", ...rest] = line.split(" ");
          if (rest.length === 0) return [kind];
          const state = JSON.parse(rest.join(" ")) as {
            id: string;
            status: string;
            pid?: number;
            bundle: string;
          };
          expect(state.bundle).toBe(dir);
          const pid = state.pid === undefined ? "none" : state.pid === 1 ? "1" : "init";
          return [kind, ns, cwd.replace(dir, "$BUNDLE"), state.status, pid];
        });
      rmSync(log);
      return rows;
    }

    it("hooks: each kind runs in the same place, with the same state, as under runc", async () => {
      const { b, id, log } = await hookBundle(["sh", "-c", "echo process >> /hooks.log"]);
      const seen: string[][][] = [];
      for (const rt of [runc, berth]) {
        const out = await rt.run(b.dir, id);
        expect(out).toMatchObject({ code: 0, stderr: "" });
        seen.push(readHookLog(log, b.dir));
      }
      const [r = [], o = []] = seen;
      expect(r).toEqual([
        ["prestart", "host", "$BUNDLE", "creating", "init"],
        ["createRuntime", "host", "$BUNDLE", "creating", "init"],
        ["createContainer", "other", "$BUNDLE/rootfs", "creating", "1"],
        ["poststart", "host", "$BUNDLE", "created", "init"],
        ["startContainer", "other", "/", "created", "1"],
        ["process"],
        ["poststop", "host", "$BUNDLE", "stopped", "none"],
      ]);
      // The process runs after startContainer and before poststop in both. Under berth it races
      // poststart (which waits only for the exec), so it is compared on its own.
      const at = (rows: string[][], kind: string) => rows.findIndex((row) => row[0] === kind);
      expect(at(o, "startContainer")).toBeLessThan(at(o, "process"));
      expect(at(o, "process")).toBeLessThan(at(o, "poststop"));
      const withoutProcess = (rows: string[][]) => rows.filter((row) => row[0] !== "process");
      // Documented difference: runc 1.1 runs poststart at the end of create (state "created"),
      // before the process is started, against the runtime spec ("after the user-specified
      // process is executed but before the start operation returns"; runc issue #4347, moved to
      // start by runc PR #5186). berth runs it in start once the process was exec'd: "running".
      const expected = withoutProcess(r).filter((row) => row[0] !== "poststart");
      expected.splice(4, 0, ["poststart", "host", "$BUNDLE", "running", "init"]);
      expect(withoutProcess(o)).toEqual(expected);
    });

    it("hooks: a failing hook before start fails the run, leaves nothing behind and runs poststop", async () => {
      for (const kind of ["prestart", "createRuntime", "createContainer", "startContainer"]) {
        const { b, id, log } = await hookBundle(["sh", "-c", "echo process >> /hooks.log"], kind);
        const kinds: string[][] = [];
        for (const rt of [runc, berth]) {
          const out = await rt.run(b.dir, id);
          expect(out.code, `${rt.name} ${kind}: ${out.stderr}`).toBe(1);
          if (rt === berth) expect(out.stderr).toContain(`${kind} hook #0 (`);
          kinds.push(readHookLog(log, b.dir).map((row) => row[0] ?? ""));
          expect((await rt.cli("list", "-q")).stdout).toBe("");
        }
        const upTo = KINDS.slice(0, KINDS.indexOf(kind) + 1);
        // Documented difference (see above): runc 1.1 has already run poststart when
        // startContainer fails; berth has not started the process, so it runs no poststart.
        const runcKinds = kind === "startContainer" ? [...upTo.slice(0, 3), "poststart", kind] : upTo;
        expect(kinds[0]).toEqual([...runcKinds, "poststop"]);
        expect(kinds[1]).toEqual([...upTo, "poststop"]);
      }
    });
  },
);

describe.runIf(requiresCommand("runc", "runc comparison (spec, features)"))(
  "berth-runc spec and features against runc's",
  () => {
    const dirs: string[] = [];
    afterEach(() => {
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    });

    it("spec writes the same config.json as runc spec, plain and --rootless", async () => {
      for (const flags of [[], ["--rootless"]]) {
        const docs: unknown[] = [];
        for (const name of ["runc", "berth-runc"] as const) {
          const rt = openRuntime(name);
          const dir = mkdtempSync(join(tmpdir(), "berth-cmp-spec-"));
          dirs.push(dir);
          try {
            expect((await rt.cli("spec", "-b", dir, ...flags)).code).toBe(0);
            docs.push(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")));
            // Both refuse to overwrite it.
            expect((await rt.cli("spec", "-b", dir)).code).toBe(1);
          } finally {
            await rt.cleanup();
          }
        }
        expect(docs[1]).toEqual(docs[0]);
      }
    });

    it("features has runc's keys and claims no namespace, capability or seccomp action runc lacks", async () => {
      const docs: Record<string, unknown>[] = [];
      for (const name of ["runc", "berth-runc"] as const) {
        const rt = openRuntime(name);
        try {
          docs.push(JSON.parse((await rt.cli("features")).stdout));
        } finally {
          await rt.cleanup();
        }
      }
      const [r, o] = docs as [
        Record<string, Record<string, unknown>>,
        Record<string, Record<string, unknown>>,
      ];
      expect(Object.keys(o).sort()).toEqual(Object.keys(r).sort());
      expect(Object.keys(o.linux ?? {}).sort()).toEqual(Object.keys(r.linux ?? {}).sort());
      // Everything berth claims, runc claims too (berth may claim less: no user namespace, ...).
      const subset = (ours: unknown, theirs: unknown) =>
        expect((ours as string[]).filter((x) => !(theirs as string[]).includes(x))).toEqual([]);
      subset(o.linux?.namespaces, r.linux?.namespaces);
      subset(o.linux?.capabilities, r.linux?.capabilities);
      subset(o.hooks, r.hooks);
      subset(o.mountOptions, r.mountOptions);
      const seccomp = (d: Record<string, Record<string, unknown>>) =>
        d.linux?.seccomp as Record<string, string[]>;
      subset(seccomp(o).actions, seccomp(r).actions);
      subset(seccomp(o).operators, seccomp(r).operators);
      subset(seccomp(o).archs, seccomp(r).archs);
    });
  },
);
