import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { failedPrecondition, notFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { features } from "./features.js";
import { main } from "./main.js";
import type {
  CliContainerState,
  CliCreateOptions,
  CliExecOptions,
  CliProcess,
  CliRuntime,
} from "./runtime-api.js";
import { checkStateSchema } from "./state-schema.js";

/**
 * An in-memory runtime that records what the command line asked of it: these tests are about the
 * CLI's parsing and printing; the real runtime is exercised by the e2e comparison with runc.
 */
class RecordingRuntime implements CliRuntime {
  readonly calls: unknown[][] = [];
  readonly containers = new Map<string, CliContainerState>();
  runExit = 0;
  execExit = 0;
  lastProcess: CliProcess | undefined;
  root = "";

  #get(id: string): CliContainerState {
    const c = this.containers.get(id);
    if (c === undefined) throw notFound(`container ${id} does not exist`);
    return c;
  }
  async create(id: string, bundle: string, options: CliCreateOptions): Promise<CliContainerState> {
    this.calls.push(["create", id, bundle, options]);
    // The state directory, whose owner `list` shows.
    mkdirSync(join(this.root, id), { recursive: true });
    const state = {
      ociVersion: "1.0.2-dev",
      id,
      status: "created",
      pid: 4242,
      bundle,
      created: 1_700_000_000_000,
    };
    this.containers.set(id, state);
    return state;
  }
  async start(id: string): Promise<void> {
    this.calls.push(["start", id]);
    const c = this.#get(id);
    if (c.status !== "created") throw failedPrecondition("cannot start an already running container");
    this.containers.set(id, { ...c, status: "running" });
  }
  async run(id: string, bundle: string, options: CliCreateOptions): Promise<number> {
    this.calls.push(["run", id, bundle, options]);
    this.containers.set(id, { ociVersion: "1.0.2-dev", id, status: "stopped", pid: 7, bundle });
    return this.runExit;
  }
  state(id: string): CliContainerState {
    this.calls.push(["state", id]);
    return this.#get(id);
  }
  kill(id: string, signal: number, options: { all?: boolean }): void {
    this.calls.push(["kill", id, signal, options]);
    this.#get(id);
  }
  delete(id: string, options: { force?: boolean }): void {
    this.calls.push(["delete", id, options]);
    this.#get(id);
    this.containers.delete(id);
  }
  list(): CliContainerState[] {
    return [...this.containers.values()];
  }
  ps(id: string): number[] {
    this.#get(id);
    return [process.pid];
  }
  pause(id: string): void {
    this.calls.push(["pause", id]);
    this.containers.set(id, { ...this.#get(id), status: "paused" });
  }
  resume(id: string): void {
    this.calls.push(["resume", id]);
    this.containers.set(id, { ...this.#get(id), status: "running" });
  }
  async exec(id: string, process: CliProcess, options: CliExecOptions): Promise<number> {
    this.calls.push(["exec", id, options]);
    this.lastProcess = process;
    return this.execExit;
  }
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe("berth-runc command line", () => {
  let dir: string;
  let rt: RecordingRuntime;
  let opened: string[];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-runc-cli-"));
    rt = new RecordingRuntime();
    opened = [];
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function cli(...args: string[]): Promise<Result> {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const chunks = { out: [] as Buffer[], err: [] as Buffer[] };
    stdout.on("data", (b: Buffer) => chunks.out.push(b));
    stderr.on("data", (b: Buffer) => chunks.err.push(b));
    const code = await main(["node", "berth-runc", "--root", join(dir, "state"), ...args], {
      io: { stdout, stderr },
      openRuntime: (root) => {
        opened.push(root);
        mkdirSync(root, { recursive: true });
        rt.root = root;
        return rt;
      },
      defaultSpec: ({ rootless }) => ({ ociVersion: "1.0.2-dev", process: { args: ["sh"] }, rootless }),
    });
    return {
      code,
      stdout: Buffer.concat(chunks.out).toString(),
      stderr: Buffer.concat(chunks.err).toString(),
    };
  }

  function bundle(): string {
    const b = join(dir, "bundle");
    mkdirSync(join(b, "rootfs"), { recursive: true });
    writeFileSync(
      join(b, "config.json"),
      JSON.stringify({
        ociVersion: "1.0.2-dev",
        root: { path: "rootfs" },
        process: {
          terminal: true,
          user: { uid: 0, gid: 0 },
          args: ["sh"],
          env: ["PATH=/bin"],
          cwd: "/",
          capabilities: { bounding: ["CAP_KILL"], effective: ["CAP_KILL"], permitted: ["CAP_KILL"] },
        },
      }),
    );
    return b;
  }

  it("create passes an absolute bundle and runc's flags, and opens the runtime at --root", async () => {
    const b = bundle();
    const r = await cli("create", "-b", b, "--pid-file", "p.pid", "--no-pivot", "--preserve-fds", "2", "c1");
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(opened).toEqual([join(dir, "state")]);
    expect(rt.calls).toEqual([
      ["create", "c1", b, { pidFile: join(process.cwd(), "p.pid"), noPivot: true, preserveFds: 2 }],
    ]);
  });

  it("rejects ids runc rejects, --systemd-cgroup and unknown log formats, with exit status 1", async () => {
    const bad = await cli("create", "-b", bundle(), "../x");
    expect(bad).toMatchObject({ code: 1, stderr: "berth-runc: invalid id format: ../x\n" });
    const systemd = await cli("--systemd-cgroup", "list");
    expect(systemd.code).toBe(1);
    expect(systemd.stderr).toMatch(/^berth-runc: --systemd-cgroup: .*not supported/);
    const format = await cli("--log-format", "xml", "list");
    expect(format).toMatchObject({ code: 1, stderr: "berth-runc: invalid log-format: xml\n" });
    expect(rt.calls).toEqual([]);
  });

  it("reports usage errors like runc (exit 1, one line), in JSON with --log-format json", async () => {
    const missing = await cli("start");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^berth-runc: missing required argument 'container-id'\n$/);
    const json = await cli("--log-format", "json", "state", "nope");
    expect(json.code).toBe(1);
    const line = JSON.parse(json.stderr) as Record<string, unknown>;
    expect(line).toMatchObject({ level: "error", msg: "container nope does not exist" });
    expect(new Date(String(line.time)).getTime()).not.toBeNaN();
  });

  it("--log writes the error line to the file (JSON) and the message to stderr", async () => {
    const log = join(dir, "log.json");
    const r = await cli("--log", log, "--log-format", "json", "kill", "nope", "KILL");
    expect(r).toMatchObject({ code: 1, stderr: "berth-runc: container nope does not exist\n" });
    const lines = readFileSync(log, "utf8").trim().split("\n");
    expect(lines.map((l) => JSON.parse(l) as { level: string; msg: string })).toEqual([
      expect.objectContaining({ level: "error", msg: "container nope does not exist" }),
    ]);
    const text = join(dir, "log.txt");
    await cli("--log", text, "state", "nope");
    expect(readFileSync(text, "utf8")).toMatch(
      /^time="[^"]+" level=error msg="container nope does not exist"\n$/,
    );
  });

  it("run -d creates and starts; run in the foreground returns the container's status", async () => {
    const b = bundle();
    expect((await cli("run", "-d", "-b", b, "bg")).code).toBe(0);
    expect(rt.calls.map((c) => c[0])).toEqual(["create", "start"]);
    rt.calls.length = 0;
    rt.runExit = 3;
    expect((await cli("run", "-b", b, "fg")).code).toBe(3);
    expect(rt.calls).toEqual([["run", "fg", b, {}]]);
  });

  it("start twice fails the way the runtime says, with exit status 1", async () => {
    await cli("create", "-b", bundle(), "c1");
    expect((await cli("start", "c1")).code).toBe(0);
    expect(await cli("start", "c1")).toMatchObject({
      code: 1,
      stderr: "berth-runc: cannot start an already running container\n",
    });
  });

  it("state prints runc's document, valid against the runtime spec's state schema", async () => {
    const b = bundle();
    await cli("create", "-b", b, "c1");
    const r = await cli("state", "c1");
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(doc).toEqual({
      ociVersion: "1.0.2-dev",
      id: "c1",
      pid: 4242,
      status: "created",
      bundle: b,
      rootfs: join(b, "rootfs"),
      created: "2023-11-14T22:13:20.000Z",
      owner: "",
    });
    expect(checkStateSchema(doc)).toEqual([]);
    expect(r.stdout).toMatch(/^\{\n {2}"ociVersion"/);
  });

  it("kill sends SIGTERM by default and parses names, SIG names and numbers; -a reaches all", async () => {
    await cli("create", "-b", bundle(), "c1");
    rt.calls.length = 0;
    await cli("kill", "c1");
    await cli("kill", "c1", "KILL");
    await cli("kill", "c1", "sigusr1");
    await cli("kill", "-a", "c1", "9");
    expect(rt.calls).toEqual([
      ["kill", "c1", 15, {}],
      ["kill", "c1", 9, {}],
      ["kill", "c1", 10, {}],
      ["kill", "c1", 9, { all: true }],
    ]);
    expect(await cli("kill", "c1", "FOO")).toMatchObject({
      code: 1,
      stderr: 'berth-runc: unknown signal "FOO"\n',
    });
  });

  it("delete of a missing container fails without --force and succeeds with it", async () => {
    expect((await cli("delete", "gone")).code).toBe(1);
    expect(await cli("delete", "-f", "gone")).toMatchObject({ code: 0, stderr: "" });
  });

  it("list prints runc's table, JSON and ids; an unused root lists nothing", async () => {
    expect(await cli("list")).toMatchObject({
      code: 0,
      stdout: "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n",
    });
    const b = bundle();
    await cli("create", "-b", b, "c1");
    const table = (await cli("list")).stdout.split("\n");
    expect(table[0]).toBe(
      `ID          PID         STATUS      ${"BUNDLE".padEnd(b.length + 3)}${"CREATED".padEnd(27)}OWNER`,
    );
    expect(table[1]).toBe(`c1          4242        created     ${b}   2023-11-14T22:13:20.000Z   root`);
    const json = JSON.parse((await cli("list", "-f", "json")).stdout) as Record<string, unknown>[];
    expect(json).toHaveLength(1);
    expect(json[0]).toMatchObject({ id: "c1", pid: 4242, status: "created", owner: "root" });
    expect(checkStateSchema(json[0])).toEqual([]);
    expect((await cli("list", "-q")).stdout).toBe("c1\n");
  });

  it("ps prints the pids as JSON, or ps -ef's header and the container's rows", async () => {
    await cli("create", "-b", bundle(), "c1");
    expect((await cli("ps", "-f", "json", "c1")).stdout).toBe(`[${process.pid}]\n`);
    const table = (await cli("ps", "c1")).stdout.trim().split("\n");
    expect(table[0]).toMatch(/^UID\s+PID\s+PPID/);
    expect(table.slice(1).map((l) => Number(l.trim().split(/\s+/)[1]))).toEqual([process.pid]);
    // ps options after the id pass through to ps.
    const custom = (await cli("ps", "c1", "-o", "pid,comm")).stdout.trim().split("\n");
    expect(custom[0]?.trim()).toMatch(/^PID\s+COMMAND$/);
    expect(custom.length).toBe(2);
  });

  it("spec writes config.json with tabs and refuses to overwrite it", async () => {
    const b = join(dir, "new");
    mkdirSync(b);
    expect((await cli("spec", "-b", b, "--rootless")).code).toBe(0);
    const text = readFileSync(join(b, "config.json"), "utf8");
    expect(text.split("\n")[1]).toBe('\t"ociVersion": "1.0.2-dev",');
    expect(JSON.parse(text)).toMatchObject({ rootless: true });
    const again = await cli("spec", "-b", b);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^berth-runc: File config.json exists. Remove it first/);
  });

  it("features prints runc's keys", async () => {
    const r = await cli("features");
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(doc)).toEqual([
      "ociVersionMin",
      "ociVersionMax",
      "hooks",
      "mountOptions",
      "linux",
      "annotations",
    ]);
    expect(Object.keys(doc.linux as object)).toEqual([
      "namespaces",
      "capabilities",
      "cgroup",
      "seccomp",
      "apparmor",
      "selinux",
    ]);
    expect(doc).toEqual(
      features(String((doc.annotations as Record<string, string>)["io.berth.runtime.version"])),
    );
  });

  it("pause and resume reach the runtime; state shows paused (runc's extension of the schema)", async () => {
    await cli("create", "-b", bundle(), "c1");
    await cli("pause", "c1");
    const doc = JSON.parse((await cli("state", "c1")).stdout) as unknown;
    expect(checkStateSchema(doc, { allowPaused: true })).toEqual([]);
    expect(checkStateSchema(doc)).toEqual([
      'status "paused" is not one of creating, created, running, stopped',
    ]);
    await cli("resume", "c1");
    expect(rt.calls.map((c) => c[0]).filter((c) => c === "pause" || c === "resume")).toEqual([
      "pause",
      "resume",
    ]);
  });

  it("exec builds the process from the bundle's and the flags, passing the command's own options through", async () => {
    await cli("create", "-b", bundle(), "c1");
    await cli("start", "c1");
    rt.execExit = 5;
    const r = await cli(
      "exec",
      "--cwd",
      "/tmp",
      "-e",
      "A=1",
      "--env",
      "B=2",
      "-u",
      "1000:1001",
      "-g",
      "7",
      "--cap",
      "net_admin",
      "--no-new-privs",
      "--pid-file",
      "x.pid",
      "c1",
      "sh",
      "-c",
      "exit 5",
    );
    expect(r).toMatchObject({ code: 5, stderr: "" });
    expect(rt.lastProcess).toEqual({
      terminal: false,
      user: { uid: 1000, gid: 1001, additionalGids: [7] },
      args: ["sh", "-c", "exit 5"],
      env: ["PATH=/bin", "A=1", "B=2"],
      cwd: "/tmp",
      noNewPrivileges: true,
      capabilities: {
        bounding: ["CAP_KILL", "CAP_NET_ADMIN"],
        effective: ["CAP_KILL", "CAP_NET_ADMIN"],
        permitted: ["CAP_KILL", "CAP_NET_ADMIN"],
      },
    });
    expect(rt.calls.at(-1)).toEqual(["exec", "c1", { pidFile: join(process.cwd(), "x.pid") }]);
  });

  it("exec -p uses process.json as is; empty args and stopped or paused containers are refused", async () => {
    await cli("create", "-b", bundle(), "c1");
    await cli("start", "c1");
    const p = join(dir, "process.json");
    const process = { user: { uid: 5, gid: 5 }, args: ["id"], cwd: "/", terminal: false };
    writeFileSync(p, JSON.stringify(process));
    expect((await cli("exec", "-p", p, "-t", "c1")).code).toBe(0);
    expect(rt.lastProcess).toEqual(process);
    // exec's own failures exit with 255, like runc's, unlike the process's status.
    expect(await cli("exec", "c1")).toMatchObject({
      code: 255,
      stderr: expect.stringMatching(/^berth-runc: exec args cannot be empty/),
    });
    await cli("pause", "c1");
    expect(await cli("exec", "c1", "true")).toMatchObject({
      code: 255,
      stderr: expect.stringMatching(/cannot exec in a paused container c1/),
    });
    expect((await cli("exec", "--ignore-paused", "c1", "true")).code).toBe(0);
    rt.containers.set("c1", { ...rt.state("c1"), status: "stopped" });
    expect((await cli("exec", "c1", "true")).stderr).toMatch(/cannot exec in a stopped container c1/);
  });
});
