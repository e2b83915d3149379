import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { isAlreadyExists, isFailedPrecondition, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { hostNetworkSnapshot, requiresCommand, requiresRoot } from "@berth/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  joinNamespace,
  NamespaceFlag,
  type NftablesContext,
  nftablesAvailable,
  openNftables,
  runNftables,
  setns,
} from "./index.js";

// runNftables and openNftables program the network namespace of the calling thread. Each case
// moves this test process's main thread into a scratch namespace held by `unshare -n sleep` and
// back, so the host's own ruleset is never touched; killing the holder destroys the namespace and
// its tables (once no open context holds it: afterEach closes those first).
describe.runIf(
  requiresRoot("libnftables tests") &&
    requiresCommand("unshare", "libnftables tests") &&
    requiresCommand("nsenter", "libnftables tests") &&
    requiresCommand("nft", "libnftables tests (the oracle)") &&
    nftablesAvailable(),
)("runNftables", () => {
  const holders: ChildProcess[] = [];
  const contexts: NftablesContext[] = [];
  let holder: ChildProcess | undefined;
  let original: number | undefined;
  let before: Record<string, unknown>;

  /** A new network namespace held by `unshare -n sleep`; killed in afterEach. */
  const holdNetns = async (): Promise<ChildProcess> => {
    const child = spawn("unshare", ["-n", "--", "sh", "-c", "echo ready && exec sleep 600"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    holders.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`unshare exited with ${code}`)));
    });
    return child;
  };
  /** `nft` (the CLI, another process) inside the namespace of holder `of`. */
  const nft = (of: ChildProcess, ...args: string[]): string =>
    execFileSync("nsenter", [`--net=/proc/${of.pid}/ns/net`, "nft", ...args], { encoding: "utf8" });
  const open = (): NftablesContext => {
    const context = openNftables();
    contexts.push(context);
    return context;
  };

  beforeAll(() => {
    before = hostNetworkSnapshot();
  });

  afterAll(() => {
    expect(hostNetworkSnapshot()).toEqual(before);
  });

  beforeEach(async () => {
    holder = await holdNetns();
    original = openSync("/proc/thread-self/ns/net", "r");
    joinNamespace(`/proc/${holder.pid}/ns/net`, "net");
  });

  afterEach(async () => {
    for (const context of contexts.splice(0)) context.close();
    if (original !== undefined) {
      setns(original, NamespaceFlag.CLONE_NEWNET);
      closeSync(original);
      original = undefined;
    }
    for (const child of holders.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
      }
    }
  });

  it("applies a transaction and lists it as JSON with handles", () => {
    expect(
      runNftables('add table inet t\nadd chain inet t c\nadd rule inet t c tcp dport 1 accept comment "x"'),
    ).toBe("");
    const doc = JSON.parse(runNftables("list table inet t")) as { nftables: Array<Record<string, unknown>> };
    const rule = doc.nftables.find((o) => o.rule)?.rule as Record<string, unknown>;
    expect(rule).toMatchObject({ family: "inet", table: "t", chain: "c", comment: "x" });
    expect(typeof rule.handle).toBe("number");
    expect(runNftables("list table inet t", { json: false, handles: false })).toContain('comment "x"');
    // The oracle, run in the same namespace, sees the same table.
    const pid = holder?.pid as number;
    expect(
      execFileSync("nsenter", [`--net=/proc/${pid}/ns/net`, "nft", "list", "tables"], { encoding: "utf8" }),
    ).toContain("table inet t");
  });

  it("maps nft failures to error codes and applies nothing of a failed transaction", () => {
    const failure = (commands: string): unknown => {
      try {
        runNftables(commands);
      } catch (err) {
        return err;
      }
      throw new Error(`${commands} did not fail`);
    };
    const missing = failure("delete table inet nope");
    expect(isNotFound(missing)).toBe(true);
    expect(String((missing as Error).message)).toContain("delete table inet nope");
    expect(isInvalidArgument(failure("bogus"))).toBe(true);
    runNftables("add table inet t");
    expect(isAlreadyExists(failure("create table inet t"))).toBe(true);
    // One transaction: the chain of the failed batch must not exist afterwards.
    expect(isNotFound(failure("add chain inet t c2\ndelete chain inet t nope"))).toBe(true);
    expect(isNotFound(failure("list chain inet t c2"))).toBe(true);
  });

  it("keeps a context open across runs and sees what other processes change in between", () => {
    const me = holder as ChildProcess;
    const context = open();
    context.run("add table inet t\nadd chain inet t c\nadd rule inet t c tcp dport 1 accept");
    const rules = (text: string) =>
      (JSON.parse(text) as { nftables: Array<Record<string, unknown>> }).nftables.flatMap((o) =>
        o.rule ? [o.rule as Record<string, unknown>] : [],
      );
    const first = rules(context.run("list chain inet t c"));
    expect(first).toHaveLength(1);

    // Another process adds a rule and a chain; the open context's next listing has both.
    nft(me, "add", "rule", "inet", "t", "c", "tcp", "dport", "2", "accept");
    nft(me, "add", "chain", "inet", "t", "d");
    expect(rules(context.run("list chain inet t c")).map((r) => r.handle)).toHaveLength(2);
    expect(context.run("list table inet t", { json: false })).toContain("chain d");

    // A change (not a listing) into the chain the other process made: the context must know d.
    context.run("add rule inet t d udp dport 3 accept");
    expect(nft(me, "list", "chain", "inet", "t", "d")).toContain("udp dport 3 accept");

    // No listing in between. `add table` with a block fills the context's cache with what an
    // `add rule` needs, and as the table exists its commit is empty and the ruleset generation
    // stays: without another change, libnftables 1.0.6 reuses that cache for the next command
    // (strace shows one NFT_MSG_GETGEN, no dumps). The other process outdates it with a set;
    // libnftables sees the new generation and refetches, so the rule finds the set.
    context.run("add table inet t { }");
    nft(me, "add", "set", "inet", "t", "ports", "{ type inet_service; }");
    context.run("add rule inet t c tcp dport @ports accept");
    expect(nft(me, "list", "chain", "inet", "t", "c")).toContain("tcp dport @ports accept");

    // The other process deletes the rule the context listed first: deleting it by its stale
    // handle fails as not-found rather than hitting anything else.
    nft(me, "delete", "rule", "inet", "t", "c", "handle", String(first[0]?.handle));
    expect(() => context.run(`delete rule inet t c handle ${first[0]?.handle}`)).toThrowError(
      expect.objectContaining({ code: "not-found" }),
    );
    expect(rules(context.run("list chain inet t c"))).toHaveLength(2);

    // A second context's changes, too; and a deletion of a whole table behind its back.
    const second = open();
    second.run("add set inet t s { type ifname; }");
    expect(context.run("list set inet t s", { json: false })).toContain("type ifname");
    nft(me, "delete", "table", "inet", "t");
    expect(isNotFound(catching(() => context.run("list table inet t")))).toBe(true);
    expect(isNotFound(catching(() => second.run("list chain inet t c")))).toBe(true);
  });

  it("stays bound to the namespace it was opened in", async () => {
    const first = holder as ChildProcess;
    const context = open();
    const other = await holdNetns();
    joinNamespace(`/proc/${other.pid}/ns/net`, "net");
    // The thread is in `other` now (the host is never involved): the context still programs
    // the namespace it was opened in, a fresh one programs this one.
    context.run("add table inet bound");
    runNftables("add table inet here");
    expect(nft(first, "list", "tables")).toContain("table inet bound");
    expect(nft(first, "list", "tables")).not.toContain("table inet here");
    expect(nft(other, "list", "tables")).toContain("table inet here");
    expect(nft(other, "list", "tables")).not.toContain("table inet bound");
  });

  it("stays usable after a failure, with nothing of one run leaking into the next", () => {
    const context = open();
    const missing = catching(() => context.run("delete table inet nope"));
    expect(isNotFound(missing)).toBe(true);
    context.run("add table inet t");
    // Clean JSON: no error text of the failed run ahead of it.
    expect(JSON.parse(context.run("list table inet t"))).toHaveProperty("nftables");
    const syntax = catching(() => context.run("bogus"));
    expect(isInvalidArgument(syntax)).toBe(true);
    expect(String((syntax as Error).message)).not.toContain("nope");
    expect(context.run("list table inet t", { json: false, handles: false })).toMatch(/^table inet t \{/);
    // Options given at open are the defaults of every run.
    const text = openNftables({ json: false });
    contexts.push(text);
    expect(text.run("list table inet t")).toMatch(/^table inet t \{/);
    expect(JSON.parse(text.run("list table inet t", { json: true }))).toHaveProperty("nftables");
  });

  it("refuses runs after close, and closes once", () => {
    const context = openNftables();
    context.run("add table inet t");
    context.close();
    context.close();
    const closed = catching(() => context.run("list table inet t"));
    expect(isFailedPrecondition(closed)).toBe(true);
    expect(String((closed as Error).message)).toContain("list table inet t");
    // Closing deleted nothing: what the context committed stays.
    expect(nft(holder as ChildProcess, "list", "tables")).toContain("table inet t");
  });
});

function catching(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}
