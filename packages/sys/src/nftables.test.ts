import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { isAlreadyExists, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { joinNamespace, NamespaceFlag, nftablesAvailable, runNftables, setns } from "./index.js";

// runNftables programs the network namespace of the calling thread. Each case moves this test
// process's main thread into a scratch namespace held by `unshare -n sleep` and back, so the
// host's own ruleset is never touched; killing the holder destroys the namespace and its tables.
describe.runIf(
  requiresRoot("libnftables tests") && requiresCommand("unshare", "libnftables tests") && nftablesAvailable(),
)("runNftables", () => {
  let holder: ChildProcess | undefined;
  let original: number | undefined;

  beforeEach(async () => {
    holder = spawn("unshare", ["-n", "--", "sh", "-c", "echo ready && exec sleep 600"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      holder?.stdout?.once("data", () => resolve());
      holder?.once("exit", (code) => reject(new Error(`unshare exited with ${code}`)));
    });
    original = openSync("/proc/thread-self/ns/net", "r");
    joinNamespace(`/proc/${holder.pid}/ns/net`, "net");
  });

  afterEach(async () => {
    if (original !== undefined) {
      setns(original, NamespaceFlag.CLONE_NEWNET);
      closeSync(original);
      original = undefined;
    }
    if (holder && holder.exitCode === null && holder.signalCode === null) {
      const exited = new Promise((resolve) => holder?.once("exit", resolve));
      holder.kill("SIGKILL");
      await exited;
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
});
