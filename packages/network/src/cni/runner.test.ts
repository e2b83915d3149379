import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorCode, isAlreadyExists, isCanceled, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseConflist } from "./conflist.js";
import { CniPluginError } from "./errors.js";
import { createCniRunner, formatCniArgs } from "./runner.js";
import type { CniRuntimeConfig } from "./types.js";

// A scriptable CNI plugin, the runner's real counterpart in these tests: it logs every call (its
// name, CNI_* environment and parsed stdin) to log.jsonl beside itself and behaves as its own
// config's "fake" key says. The same script is installed under several names.
const FAKE_PLUGIN = `#!${process.execPath}
const fs = require("node:fs");
const path = require("node:path");
const type = path.basename(process.argv[1]);
const raw = fs.readFileSync(0, "utf8");
const cmd = process.env.CNI_COMMAND;
if (cmd === "VERSION") {
  process.stdout.write(JSON.stringify({ cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] }));
  process.exit(0);
}
const conf = JSON.parse(raw);
const env = {};
for (const [k, v] of Object.entries(process.env)) if (k.startsWith("CNI_")) env[k] = v;
fs.appendFileSync(path.join(__dirname, "log.jsonl"), JSON.stringify({ type, cmd, env, conf }) + "\\n");
const fake = (conf.fake && conf.fake[cmd]) || {};
if (fake.sleep) setTimeout(() => process.exit(0), fake.sleep);
else if (fake.error) { process.stdout.write(JSON.stringify(fake.error)); process.exit(1); }
else if (fake.stderr) { process.stderr.write(fake.stderr); process.exit(3); }
else if (fake.garbage) { process.stdout.write("not json"); }
else if (cmd === "ADD") {
  const prev = conf.prevResult || { cniVersion: conf.cniVersion, interfaces: [], ips: [] };
  const interfaces = [...(prev.interfaces || []), { name: type }];
  process.stdout.write(JSON.stringify({ ...prev, cniVersion: conf.cniVersion, interfaces,
    ips: [...(prev.ips || []), { address: "10.1.0." + interfaces.length + "/24", interface: interfaces.length - 1 }] }));
}
`;

interface LogEntry {
  type: string;
  cmd: string;
  env: Record<string, string>;
  conf: Record<string, unknown>;
}

describe("createCniRunner with scripted plugins", () => {
  let dir: string;
  let bin: string;
  let cacheDir: string;

  const rt: CniRuntimeConfig = {
    containerId: "ctr-1",
    netns: "/run/netns/ctr-1",
    ifName: "eth0",
    args: [
      ["IgnoreUnknown", "1"],
      ["K8S_POD_NAME", "web"],
    ],
    capabilityArgs: {
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }],
      bandwidth: { ingressRate: 1000 },
      unclaimed: true,
    },
  };

  function list(fake: Record<string, Record<string, unknown>> = {}, extra: Record<string, unknown> = {}) {
    return parseConflist({
      cniVersion: "1.0.0",
      name: "testnet",
      ...extra,
      plugins: [
        { type: "fake-a", capabilities: { portMappings: true }, own: "a", fake: fake["fake-a"] },
        { type: "fake-b", own: { nested: [1, 2] }, fake: fake["fake-b"] },
        { type: "fake-c", capabilities: { bandwidth: true, portMappings: false }, fake: fake["fake-c"] },
      ],
    });
  }

  async function log(): Promise<LogEntry[]> {
    const path = join(bin, "log.jsonl");
    if (!existsSync(path)) return [];
    return (await readFile(path, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as LogEntry);
  }

  const calls = async () => (await log()).map((e) => `${e.cmd} ${e.type}`);

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-cni-runner-"));
    bin = join(dir, "bin");
    cacheDir = join(dir, "cache");
    await mkdir(bin);
    for (const name of ["fake-a", "fake-b", "fake-c"]) {
      await writeFile(join(bin, name), FAKE_PLUGIN);
      await chmod(join(bin, name), 0o755);
    }
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("ADD runs the plugins in order with the CNI environment, chained prevResult and capability args", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [join(dir, "empty"), bin] });
    const result = await runner.addNetworkList(list(), rt);
    expect(result.interfaces?.map((i) => i.name)).toEqual(["fake-a", "fake-b", "fake-c"]);
    expect(result.ips?.map((ip) => ip.address)).toEqual(["10.1.0.1/24", "10.1.0.2/24", "10.1.0.3/24"]);

    const entries = await log();
    expect(entries.map((e) => `${e.cmd} ${e.type}`)).toEqual(["ADD fake-a", "ADD fake-b", "ADD fake-c"]);
    for (const e of entries) {
      expect(e.env).toEqual({
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "ctr-1",
        CNI_NETNS: "/run/netns/ctr-1",
        CNI_IFNAME: "eth0",
        CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=web",
        CNI_PATH: `${join(dir, "empty")}:${bin}`,
      });
      expect(e.conf).toMatchObject({ name: "testnet", cniVersion: "1.0.0", type: e.type });
    }
    const [a, b, c] = entries as [LogEntry, LogEntry, LogEntry];
    expect(a.conf.own).toBe("a");
    expect(a.conf.prevResult).toBeUndefined();
    expect(a.conf.runtimeConfig).toEqual({ portMappings: rt.capabilityArgs?.portMappings });
    expect(b.conf.own).toEqual({ nested: [1, 2] });
    expect(b.conf.runtimeConfig).toBeUndefined();
    expect((b.conf.prevResult as { interfaces: unknown[] }).interfaces).toEqual([{ name: "fake-a" }]);
    // fake-c declares portMappings false: only bandwidth reaches it.
    expect(c.conf.runtimeConfig).toEqual({ bandwidth: { ingressRate: 1000 } });
    expect((c.conf.prevResult as { interfaces: unknown[] }).interfaces).toHaveLength(2);

    expect(await runner.getCachedResult(list(), rt)).toEqual(result);
    const cache = JSON.parse(readFileSync(join(cacheDir, "results", "testnet-ctr-1-eth0"), "utf8")) as Record<
      string,
      unknown
    >;
    expect(cache).toMatchObject({
      kind: "cniCacheV1",
      containerId: "ctr-1",
      ifName: "eth0",
      networkName: "testnet",
    });
    expect(JSON.parse(Buffer.from(cache.config as string, "base64").toString())).toEqual(list());

    const again = await runner.addNetworkList(list(), rt).catch((e: unknown) => e);
    expect(isAlreadyExists(again)).toBe(true);
    expect((again as Error).message).toBe(
      "container ctr-1 is already attached to CNI network testnet as eth0",
    );
  });

  it("CHECK passes the cached result; DEL runs in reverse with cached args and removes the cache", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [bin] });
    const result = await runner.addNetworkList(list(), rt);
    await runner.checkNetworkList(list(), rt);
    const { args: _args, capabilityArgs: _caps, ...bare } = rt;
    await runner.delNetworkList(list(), bare);
    const entries = (await log()).slice(3);
    expect(entries.map((e) => `${e.cmd} ${e.type}`)).toEqual([
      "CHECK fake-a",
      "CHECK fake-b",
      "CHECK fake-c",
      "DEL fake-c",
      "DEL fake-b",
      "DEL fake-a",
    ]);
    for (const e of entries) expect(e.conf.prevResult).toEqual(result);
    const delA = entries[5] as LogEntry;
    expect(delA.env.CNI_ARGS).toBe("IgnoreUnknown=1;K8S_POD_NAME=web");
    expect(delA.conf.runtimeConfig).toEqual({ portMappings: rt.capabilityArgs?.portMappings });
    expect(existsSync(join(cacheDir, "results", "testnet-ctr-1-eth0"))).toBe(false);
    expect(await runner.getCachedResult(list(), rt)).toBeUndefined();

    // A second DEL (and a DEL with the namespace gone) still runs, with no prevResult.
    await runner.delNetworkList(list(), { ...rt, netns: "" });
    const last = (await log()).slice(9);
    expect(last.map((e) => `${e.cmd} ${e.type}`)).toEqual(["DEL fake-c", "DEL fake-b", "DEL fake-a"]);
    expect(last.every((e) => e.conf.prevResult === undefined && e.env.CNI_NETNS === "")).toBe(true);
  });

  it("CHECK needs a cached result, is skipped with disableCheck and refused before 0.4.0", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [bin] });
    const err = await runner.checkNetworkList(list(), rt).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toBe("no cached CNI result for container ctr-1 on network testnet (eth0)");
    await runner.checkNetworkList(list({}, { disableCheck: true }), rt);
    const old = await runner.checkNetworkList(list({}, { cniVersion: "0.3.1" }), rt).catch((e: unknown) => e);
    expect(errorCode(old)).toBe("not-implemented");
    expect(await calls()).toEqual([]);
  });

  it("a failing ADD throws the plugin's CNI error and rolls back with DEL in reverse", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [bin] });
    const failing = list({
      "fake-b": {
        ADD: { error: { cniVersion: "1.0.0", code: 7, msg: "bad subnet", details: "10.0.0.0/33" } },
      },
    });
    const err = await runner.addNetworkList(failing, rt).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniPluginError);
    expect(isInvalidArgument(err)).toBe(true);
    expect(err).toMatchObject({ plugin: "fake-b", command: "ADD", cniCode: 7, msg: "bad subnet", exit: 1 });
    expect((err as Error).message).toBe(
      "CNI plugin fake-b ADD for network testnet failed (CNI code 7): bad subnet: 10.0.0.0/33",
    );
    const entries = await log();
    expect(entries.map((e) => `${e.cmd} ${e.type}`)).toEqual([
      "ADD fake-a",
      "ADD fake-b",
      "DEL fake-c",
      "DEL fake-b",
      "DEL fake-a",
    ]);
    // The rollback hands over what was attached so far: fake-a's result.
    const rollbackC = entries[2] as LogEntry;
    expect((rollbackC.conf.prevResult as { interfaces: unknown[] }).interfaces).toEqual([{ name: "fake-a" }]);
    expect(await runner.getCachedResult(failing, rt)).toBeUndefined();
  });

  it("maps CNI codes, plain failures and unparsable results to errors naming the plugin", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [bin] });
    const retry = await runner
      .addNetworkList(list({ "fake-a": { ADD: { error: { code: 11, msg: "busy" } } } }), rt)
      .catch((e: unknown) => e);
    expect(errorCode(retry)).toBe("unavailable");
    const unknown = await runner
      .addNetworkList(list({ "fake-a": { ADD: { error: { code: 142, msg: "plugin specific" } } } }), rt)
      .catch((e: unknown) => e);
    expect(errorCode(unknown)).toBe("unknown");
    expect((unknown as Error).message).toContain("(CNI code 142): plugin specific");
    const plain = await runner
      .addNetworkList(list({ "fake-c": { ADD: { stderr: "segfault-ish\n" } } }), rt)
      .catch((e: unknown) => e);
    expect(plain).toMatchObject({ plugin: "fake-c", cniCode: undefined, exit: 3 });
    expect((plain as Error).message).toBe(
      "CNI plugin fake-c ADD for network testnet failed: exited with status 3: segfault-ish",
    );
    const garbage = await runner
      .addNetworkList(list({ "fake-b": { ADD: { garbage: true } } }), rt)
      .catch((e: unknown) => e);
    expect(garbage).toMatchObject({ plugin: "fake-b" });
    expect((garbage as Error).message).toContain("printed a result that is not JSON: not json");
    const delFail = await runner
      .delNetworkList(list({ "fake-b": { DEL: { error: { code: 3, msg: "gone" } } } }), rt)
      .catch((e: unknown) => e);
    expect(isNotFound(delFail)).toBe(true);
    expect(delFail).toMatchObject({ plugin: "fake-b", command: "DEL" });
  });

  it("refuses missing plugins before running any, and malformed runtime configs", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [bin] });
    const missing = parseConflist({
      cniVersion: "1.0.0",
      name: "testnet",
      plugins: [{ type: "fake-a" }, { type: "nonesuch" }],
    });
    const err = await runner.addNetworkList(missing, rt).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toBe(`CNI plugin nonesuch not found in ${bin}`);
    for (const bad of [
      { ...rt, ifName: "this-is-too-long0" },
      { ...rt, ifName: "eth:0" },
      { ...rt, containerId: "../x" },
      { ...rt, netns: "" },
      { ...rt, args: [["A;B", "1"]] as const },
    ]) {
      const e = await runner.addNetworkList(list(), bad).catch((x: unknown) => x);
      expect(isInvalidArgument(e), JSON.stringify(bad)).toBe(true);
    }
    expect(await calls()).toEqual([]);
  });

  it("asks a plugin its versions, and kills a plugin when the call is aborted", async () => {
    const runner = createCniRunner({ cacheDir, pluginPaths: [bin] });
    expect(await runner.pluginVersion("fake-a")).toEqual({
      cniVersion: "1.0.0",
      supportedVersions: ["0.4.0", "1.0.0"],
    });
    const controller = new AbortController();
    const pending = runner.addNetworkList(list({ "fake-a": { ADD: { sleep: 60_000 } } }), rt, {
      signal: controller.signal,
    });
    // Abort once the plugin has really started (it logs before sleeping).
    while ((await log()).length === 0) await new Promise((r) => setTimeout(r, 20));
    controller.abort();
    const err = await pending.catch((e: unknown) => e);
    expect(isCanceled(err)).toBe(true);
    // The rollback still ran, without the signal.
    expect(await calls()).toEqual(["ADD fake-a", "DEL fake-c", "DEL fake-b", "DEL fake-a"]);
  });

  it("formats CNI_ARGS as K=V pairs joined by semicolons", () => {
    expect(formatCniArgs(undefined)).toBe("");
    expect(formatCniArgs([["IP", "10.0.0.5"]])).toBe("IP=10.0.0.5");
    expect(
      formatCniArgs([
        ["A", "1"],
        ["B", "x=y"],
      ] as const),
    ).toBe("A=1;B=x=y");
  });
});
