import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAborted, isNotFound } from "@berth/errdefs";
import { readMountInfo } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HookKind, type HookState, hookState, runHooks, runHooksSync, runHooksWarn } from "./hooks.js";
import { createRuntime, type Runtime } from "./runtime.js";
import { defaultSpec, type Hook, type Hooks, type Process, type Spec } from "./spec.js";

const BUSYBOX = "/bin/busybox";

// Appends "<name> <state JSON>" (and, with $EXTRA, one more line of facts) to $LOG.
const HOOK_SCRIPT = `#!/bin/sh
state=$(cat)
printf '%s %s\\n' "$1" "$state" >> "$LOG"
if [ -n "$EXTRA" ]; then eval "$EXTRA" >> "$LOG"; fi
exit \${HOOKEXIT:-0}
`;

const state: HookState = hookState({
  ociVersion: "1.0.2",
  id: "h1",
  status: "creating",
  pid: 42,
  bundle: "/b",
  annotations: { a: "b" },
});

describe("hook state", () => {
  it("has the runtime-spec state's fields in runc's order, without pid 0 or empty annotations", () => {
    expect(JSON.stringify(state)).toBe(
      '{"ociVersion":"1.0.2","id":"h1","status":"creating","pid":42,"bundle":"/b","annotations":{"a":"b"}}',
    );
    const stopped = hookState({ ociVersion: "1.0.2", id: "h1", status: "stopped", pid: 0, bundle: "/b" });
    expect(JSON.stringify(stopped)).toBe('{"ociVersion":"1.0.2","id":"h1","status":"stopped","bundle":"/b"}');
    const noAnnotations = hookState({ ...stopped, pid: 0, annotations: {} });
    expect(noAnnotations).not.toHaveProperty("annotations");
  });
});

describe("running hooks", () => {
  let dir: string;
  let script: string;
  let log: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-hooks-"));
    script = join(dir, "hook.sh");
    log = join(dir, "log");
    writeFileSync(script, HOOK_SCRIPT, { mode: 0o755 });
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const hook = (name: string, env: string[] = [], more: Partial<Hook> = {}): Hook => ({
    path: script,
    args: [script, name],
    env: [`LOG=${log}`, ...env],
    ...more,
  });
  const lines = () => readFileSync(log, "utf8").trim().split("\n");

  for (const [mode, run] of [
    ["async", runHooks],
    ["sync", runHooksSync],
  ] as const) {
    it(`${mode}: runs the list in order, the state JSON on stdin, in the given cwd`, async () => {
      await run(HookKind.Prestart, [hook("one", ["EXTRA=pwd"]), hook("two")], state, { cwd: dir });
      expect(lines()).toEqual([`one ${JSON.stringify(state)}`, dir, `two ${JSON.stringify(state)}`]);
    });

    it(`${mode}: passes args as the whole argv (argv[0] included) and env as the whole environment`, async () => {
      // busybox picks its applet by argv[0], so argv[0] is visible.
      const out = join(dir, "out");
      const env = ["A=1", "B=x=y"];
      await run(
        HookKind.Poststart,
        [{ path: BUSYBOX, args: ["sh", "-c", `env > ${out}; echo "$0 $1" >> ${out}`, "zero", "one"], env }],
        state,
      );
      const seen = readFileSync(out, "utf8").trim().split("\n");
      expect(seen.filter((l) => /^[AB]=/.test(l)).sort()).toEqual(["A=1", "B=x=y"]);
      // Only what the hook asked for (busybox sh adds PWD, SHLVL and a default PATH itself).
      expect(seen.filter((l) => l.includes("=") && !/^(A|B|PWD|SHLVL|PATH)=/.test(l))).toEqual([]);
      expect(seen.at(-1)).toBe("zero one");
    });

    it(`${mode}: a hook without env gets the default env`, async () => {
      const out = join(dir, "out");
      await run(
        HookKind.CreateContainer,
        [{ path: BUSYBOX, args: ["sh", "-c", `echo "$X" > ${out}`] }],
        state,
        {
          defaultEnv: ["X=from-default"],
        },
      );
      expect(readFileSync(out, "utf8")).toBe("from-default\n");
    });

    it(`${mode}: the first failing hook stops the list; the error names it and carries its stderr`, async () => {
      const failing = hook("two", ["HOOKEXIT=3", "EXTRA=echo broken >&2"]);
      const err = await Promise.resolve()
        .then(() => run(HookKind.CreateRuntime, [hook("one"), failing, hook("three")], state))
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(isAborted(err)).toBe(true);
      expect((err as Error).message).toBe(
        `createRuntime hook #1 (${script}) exited with status 3; stderr: broken`,
      );
      expect(lines().map((l) => l.split(" ")[0])).toEqual(["one", "two"]);
    });

    it(`${mode}: a hook past its timeout is killed and fails`, async () => {
      const err = await Promise.resolve()
        .then(() => run(HookKind.Prestart, [{ path: BUSYBOX, args: ["sleep", "30"], timeout: 1 }], state))
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(isAborted(err)).toBe(true);
      expect((err as Error).message).toBe(
        `prestart hook #0 (${BUSYBOX}) ran past its timeout of 1.0s and was killed`,
      );
    });

    it(`${mode}: a missing hook is not-found`, async () => {
      const missing = join(dir, "nope");
      const err = await Promise.resolve()
        .then(() => run(HookKind.StartContainer, [{ path: missing }], state))
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(isNotFound(err)).toBe(true);
      expect((err as Error).message).toContain(`startContainer hook #0 (${missing})`);
    });
  }

  it("a hook that does not read its stdin still succeeds", async () => {
    const big = { ...state, annotations: { big: "x".repeat(1 << 20) } };
    await runHooks(HookKind.Poststop, [{ path: BUSYBOX, args: ["true"] }], big);
    runHooksSync(HookKind.Poststop, [{ path: BUSYBOX, args: ["true"] }], big);
  });

  it("runHooksWarn runs every hook and reports each failure as a warning", async () => {
    const warnings: string[] = [];
    await runHooksWarn(
      HookKind.Poststop,
      [hook("one", ["HOOKEXIT=1"]), hook("two"), hook("three", ["HOOKEXIT=2"])],
      state,
      {},
      (m) => warnings.push(m),
    );
    expect(lines().map((l) => l.split(" ")[0])).toEqual(["one", "two", "three"]);
    expect(warnings).toEqual([
      `poststop hook #0 (${script}) exited with status 1`,
      `poststop hook #2 (${script}) exited with status 2`,
    ]);
  });
});

describe.runIf(requiresRoot("container hooks"))("hooks in the container lifecycle", () => {
  let dir: string;
  let root: string;
  let log: string;
  let out: string;
  let warnings: string[];
  let rt: Runtime;
  let serial = 0;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-hooks-rt-"));
    root = join(dir, "state");
    log = join(dir, "hooks.log");
    out = join(dir, "out");
    warnings = [];
    rt = createRuntime({ root, warn: (m) => warnings.push(m) });
  });

  afterEach(async () => {
    for (const c of existsSync(root) ? rt.list() : [])
      await rt.delete(c.id, { force: true }).catch(() => undefined);
    await rt.close();
    const leftover = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    rmSync(dir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  /**
   * A busybox bundle whose hooks (`kinds`, all six by default) run one script that logs its name
   * and state: by its host path in the runtime's namespaces and in createContainer (the host's
   * root is still visible there), by /bin/hook inside the container for startContainer, which
   * logs to /hooks.log in the rootfs. The process logs "process" there too.
   */
  function makeBundle(extra: (h: Record<string, Hook[]>) => void = () => undefined): string {
    const bundle = join(dir, `bundle${serial++}`);
    const rootfs = join(bundle, "rootfs");
    mkdirSync(join(rootfs, "bin"), { recursive: true });
    mkdirSync(join(rootfs, "tmp"));
    writeFileSync(join(rootfs, "bin", "busybox"), readFileSync(BUSYBOX), { mode: 0o755 });
    for (const a of ["sh", "cat", "printf", "readlink", "true", "pwd", "echo"])
      symlinkSync("busybox", join(rootfs, "bin", a));
    writeFileSync(join(rootfs, "bin", "hook"), HOOK_SCRIPT, { mode: 0o755 });
    const hostHook = join(rootfs, "bin", "hook");
    const h = (name: string, env: string[] = []): Hook => ({
      path: hostHook,
      args: ["hook", name],
      env: [`LOG=${log}`, ...env],
    });
    const hooks: Record<string, Hook[]> = {
      prestart: [h("prestart")],
      createRuntime: [h("createRuntime", ["EXTRA=pwd"])],
      createContainer: [h("createContainer", ["EXTRA=pwd; readlink /proc/self/ns/mnt"])],
      startContainer: [
        { path: "/bin/hook", args: ["hook", "startContainer"], env: ["LOG=/hooks.log", "EXTRA=pwd"] },
      ],
      poststart: [h("poststart")],
      poststop: [h("poststop")],
    };
    extra(hooks);
    const base = defaultSpec();
    const spec: Spec = {
      ...base,
      root: { path: "rootfs", readonly: false },
      process: {
        ...(base.process as Process),
        terminal: false,
        cwd: "/tmp",
        args: ["sh", "-c", "echo process >> /hooks.log; readlink /proc/self/ns/mnt"],
      },
      annotations: { "io.berth.test": "hooks" },
      hooks: hooks as Hooks,
    };
    writeFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    return bundle;
  }

  // The log as [name, state] pairs plus the other lines, in order.
  function readLog(path: string): (string | [string, Record<string, unknown>])[] {
    if (!existsSync(path)) return [];
    return readFileSync(path, "utf8")
      .trim()
      .split("\n")
      .map((l) => {
        const sp = l.indexOf(" {");
        return sp > 0 ? [l.slice(0, sp), JSON.parse(l.slice(sp + 1)) as Record<string, unknown>] : l;
      });
  }

  async function runIt(id: string, bundle: string): Promise<number> {
    const stdin = openSync("/dev/null", "r");
    const stdout = openSync(out, "w");
    try {
      return await rt.run(id, bundle, { stdio: [stdin, stdout, stdout] });
    } finally {
      closeSync(stdin);
      closeSync(stdout);
    }
  }

  it("runs all six kinds in the spec's order, each with its state, namespace and cwd", async () => {
    const bundle = makeBundle();
    const id = "hooks-all";
    // Split create / start / delete to see which step runs what.
    const stdin = openSync("/dev/null", "r");
    const stdout = openSync(out, "w");
    let created: number;
    try {
      created = (await rt.create(id, bundle, { stdio: [stdin, stdout, stdout] })).pid;
    } finally {
      closeSync(stdin);
      closeSync(stdout);
    }
    const common = {
      ociVersion: defaultSpec().ociVersion,
      id,
      bundle,
      annotations: { "io.berth.test": "hooks" },
    };
    const afterCreate = readLog(log);
    expect(afterCreate).toEqual([
      ["prestart", { ...common, status: "creating", pid: created }],
      ["createRuntime", { ...common, status: "creating", pid: created }],
      bundle,
      ["createContainer", { ...common, status: "creating", pid: 1 }],
      join(bundle, "rootfs"),
      expect.stringMatching(/^mnt:\[\d+\]$/),
    ]);
    await rt.start(id);
    // start returns once the process was exec'd and poststart has run.
    expect(readLog(log).slice(afterCreate.length)).toEqual([
      ["poststart", { ...common, status: "running", pid: created }],
    ]);
    for (let i = 0; i < 500 && rt.state(id).status !== "stopped"; i++)
      await new Promise((r) => setTimeout(r, 10));
    await rt.delete(id);
    expect(readLog(log).slice(afterCreate.length + 1)).toEqual([
      ["poststop", { ...common, status: "stopped" }],
    ]);
    // Inside the container: startContainer (in the process's cwd) before the process.
    expect(readLog(join(bundle, "rootfs", "hooks.log"))).toEqual([
      ["startContainer", { ...common, status: "created", pid: 1 }],
      "/tmp",
      "process",
    ]);
    // createContainer ran (with child_process from the init's main thread) in the container's
    // mount namespace: the one the process printed.
    expect(afterCreate[5]).toBe(readFileSync(out, "utf8").trim());
    expect(afterCreate[5]).not.toBe(readlinkSync("/proc/self/ns/mnt"));
    expect(warnings).toEqual([]);
  });

  it("a failing createRuntime hook fails create, leaves nothing behind, and runs poststop", async () => {
    const bundle = makeBundle((h) => {
      h.createRuntime = [{ ...(h.createRuntime?.[0] as Hook), env: [`LOG=${log}`, "HOOKEXIT=3"] }];
    });
    const err = await runIt("hooks-fail", bundle).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isAborted(err)).toBe(true);
    expect((err as Error).message).toMatch(/^createRuntime hook #0 \(.*\/bin\/hook\) exited with status 3$/);
    expect(readLog(log).map((l) => (typeof l === "string" ? l : l[0]))).toEqual([
      "prestart",
      "createRuntime",
      "poststop",
    ]);
    expect(rt.list()).toEqual([]);
    expect(existsSync(join(root, "hooks-fail"))).toBe(false);
    expect(existsSync("/sys/fs/cgroup/pids/berth/hooks-fail")).toBe(false);
  });

  it("a failing createContainer hook fails create with the init's error", async () => {
    const bundle = makeBundle((h) => {
      h.createContainer = [{ path: BUSYBOX, args: ["sh", "-c", "echo nope >&2; exit 5"] }];
    });
    const err = await runIt("hooks-cc", bundle).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isAborted(err)).toBe(true);
    expect((err as Error).message).toBe(
      `container hooks-cc: init failed: createContainer hook #0 (${BUSYBOX}) exited with status 5; stderr: nope`,
    );
    expect(rt.list()).toEqual([]);
  });

  it("a failing startContainer hook fails start; the process never runs", async () => {
    const bundle = makeBundle((h) => {
      h.startContainer = [{ path: "/bin/sh", args: ["sh", "-c", "exit 6"] }];
    });
    const err = await runIt("hooks-sc", bundle).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).toBe(
      "container hooks-sc: init failed: startContainer hook #0 (/bin/sh) exited with status 6",
    );
    expect(existsSync(join(bundle, "rootfs", "hooks.log"))).toBe(false);
    // run deleted the container: poststop ran.
    expect(
      readLog(log)
        .map((l) => (typeof l === "string" ? l : l[0]))
        .at(-1),
    ).toBe("poststop");
    expect(rt.list()).toEqual([]);
  });

  it("failing poststart and poststop hooks are warnings; the container runs to its end", async () => {
    const bundle = makeBundle((h) => {
      h.poststart = [{ path: BUSYBOX, args: ["false"] }];
      h.poststop = [{ path: BUSYBOX, args: ["false"] }, ...(h.poststop ?? [])];
    });
    expect(await runIt("hooks-warn", bundle)).toBe(0);
    expect(warnings).toEqual([
      `poststart hook #0 (${BUSYBOX}) exited with status 1`,
      `poststop hook #0 (${BUSYBOX}) exited with status 1`,
    ]);
    // The poststop hook after the failing one still ran.
    expect(
      readLog(log)
        .map((l) => (typeof l === "string" ? l : l[0]))
        .at(-1),
    ).toBe("poststop");
    expect(readFileSync(join(bundle, "rootfs", "hooks.log"), "utf8")).toContain("process\n");
  });

  it("exec'd processes run no hooks", async () => {
    const bundle = makeBundle();
    const stdin = openSync("/dev/null", "r");
    try {
      await rt.create("hooks-exec", bundle, { stdio: [stdin, stdin, stdin] });
    } finally {
      closeSync(stdin);
    }
    const before = readLog(log).length;
    const code = await rt.exec("hooks-exec", {
      ...(defaultSpec().process as Process),
      terminal: false,
      args: ["true"],
    });
    expect(code).toBe(0);
    expect(readLog(log).length).toBe(before);
  });
});
