import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  errorCode,
  isAlreadyExists,
  isFailedPrecondition,
  isInvalidArgument,
  isNotFound,
} from "@berth/errdefs";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Info } from "../types.js";
import { type MetaStore, openMetaStore } from "./meta-store.js";

let dir: string;
let store: MetaStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-metastore-"));
  store = openMetaStore(join(dir, "metadata.db"));
});

afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return errorCode(err);
  }
  return undefined;
}

/** Builds base ← layer1 ← … ← layerN (committed) and returns the ids, base first. */
function chain(n: number): string[] {
  const ids: string[] = [];
  store.transaction((tx) => {
    let parent: string | undefined;
    for (let i = 0; i < n; i++) {
      const { id } = tx.createSnapshot("active", `active-${i}`, parent);
      tx.commitActive(`active-${i}`, `layer-${i}`, { size: i, inodes: 1 });
      ids.push(id);
      parent = `layer-${i}`;
    }
  });
  return ids;
}

describe("openMetaStore", () => {
  it("uses WAL and synchronous=FULL, and reopens an existing file", () => {
    store.transaction((tx) => tx.createSnapshot("active", "a", undefined));
    store.close();
    const raw = new Database(join(dir, "metadata.db"));
    try {
      expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
      expect(raw.pragma("user_version", { simple: true })).toBe(1);
    } finally {
      raw.close();
    }
    store = openMetaStore(join(dir, "metadata.db"));
    expect(store.transaction((tx) => tx.getInfo("a").kind)).toBe("active");
  });

  it("refuses a database written by a newer schema", () => {
    store.close();
    const raw = new Database(join(dir, "metadata.db"));
    raw.pragma("user_version = 99");
    raw.close();
    expect(codeOf(() => openMetaStore(join(dir, "metadata.db")))).toBe("failed-precondition");
    store = openMetaStore(join(dir, "other.db"));
  });

  it("rejects use after close", () => {
    store.close();
    expect(codeOf(() => store.transaction((tx) => tx.ids()))).toBe("failed-precondition");
    store.close();
    store = openMetaStore(join(dir, "metadata.db"));
  });
});

describe("MetaTx", () => {
  it("creates snapshots with increasing ids and parent chains nearest first", () => {
    const ids = chain(3);
    expect(ids.map(Number)).toEqual([...ids.map(Number)].sort((a, b) => a - b));
    const rec = store.transaction((tx) => tx.createSnapshot("view", "v", "layer-2", { a: "1" }));
    expect(rec.kind).toBe("view");
    expect(rec.parentIds).toEqual([ids[2], ids[1], ids[0]]);
    expect(Number(rec.id)).toBeGreaterThan(Number(ids[2]));
    const again = store.transaction((tx) => tx.getSnapshot("v"));
    expect(again).toEqual(rec);
    expect(store.transaction((tx) => tx.lookup("layer-2"))).toEqual({
      id: ids[2],
      kind: "committed",
      parentIds: [ids[1], ids[0]],
    });
    expect(codeOf(() => store.transaction((tx) => tx.lookup("nope")))).toBe("not-found");
    const info = store.transaction((tx) => tx.getInfo("v"));
    expect(info).toMatchObject({ kind: "view", name: "v", parent: "layer-2", labels: { a: "1" } });
    expect(info.created).toBeInstanceOf(Date);
    const base = store.transaction((tx) => tx.getInfo("layer-0"));
    expect(base.parent).toBeUndefined();
    expect("parent" in base).toBe(false);
  });

  it("never reuses the id of a removed snapshot", () => {
    const first = store.transaction((tx) => tx.createSnapshot("active", "a", undefined).id);
    store.transaction((tx) => tx.remove("a"));
    const second = store.transaction((tx) => tx.createSnapshot("active", "a", undefined).id);
    expect(Number(second)).toBeGreaterThan(Number(first));
  });

  it("reports creation errors with the right codes", () => {
    chain(1);
    store.transaction((tx) => tx.createSnapshot("active", "busy", "layer-0"));
    expect(codeOf(() => store.transaction((tx) => tx.createSnapshot("active", "busy", undefined)))).toBe(
      "already-exists",
    );
    // A committed name is taken too.
    expect(codeOf(() => store.transaction((tx) => tx.createSnapshot("view", "layer-0", undefined)))).toBe(
      "already-exists",
    );
    expect(codeOf(() => store.transaction((tx) => tx.createSnapshot("active", "x", "missing")))).toBe(
      "not-found",
    );
    expect(codeOf(() => store.transaction((tx) => tx.createSnapshot("active", "x", "busy")))).toBe(
      "failed-precondition",
    );
    expect(codeOf(() => store.transaction((tx) => tx.createSnapshot("active", "", undefined)))).toBe(
      "invalid-argument",
    );
    expect(
      codeOf(() => store.transaction((tx) => tx.createSnapshot("active", "y", undefined, { "": "v" }))),
    ).toBe("invalid-argument");
    expect(
      codeOf(() =>
        store.transaction((tx) => tx.createSnapshot("active", "y", undefined, { k: "v".repeat(5000) })),
      ),
    ).toBe("invalid-argument");
    expect(codeOf(() => store.transaction((tx) => tx.getInfo("nope")))).toBe("not-found");
    expect(codeOf(() => store.transaction((tx) => tx.getSnapshot("layer-0")))).toBe("failed-precondition");
  });

  it("commits an active snapshot under its id, merging labels and recording usage", () => {
    const { id } = store.transaction((tx) => tx.createSnapshot("active", "a", undefined, { x: "1", y: "1" }));
    const committed = store.transaction((tx) =>
      tx.commitActive("a", "c", { size: 4096, inodes: 3 }, { y: "2", z: "3" }),
    );
    expect(committed).toBe(id);
    const info = store.transaction((tx) => tx.getInfo("c"));
    expect(info).toMatchObject({ kind: "committed", name: "c", labels: { x: "1", y: "2", z: "3" } });
    expect(store.transaction((tx) => tx.usage("c"))).toEqual({ size: 4096, inodes: 3 });
    expect(codeOf(() => store.transaction((tx) => tx.getInfo("a")))).toBe("not-found");
  });

  it("refuses to commit a view, a committed snapshot, or onto a taken name", () => {
    chain(1);
    store.transaction((tx) => {
      tx.createSnapshot("view", "v", "layer-0");
      tx.createSnapshot("active", "a", "layer-0");
    });
    const usage = { size: 0, inodes: 0 };
    expect(codeOf(() => store.transaction((tx) => tx.commitActive("v", "n", usage)))).toBe(
      "failed-precondition",
    );
    expect(codeOf(() => store.transaction((tx) => tx.commitActive("layer-0", "n", usage)))).toBe(
      "failed-precondition",
    );
    expect(codeOf(() => store.transaction((tx) => tx.commitActive("a", "layer-0", usage)))).toBe(
      "already-exists",
    );
    expect(codeOf(() => store.transaction((tx) => tx.commitActive("missing", "n", usage)))).toBe("not-found");
    expect(codeOf(() => store.transaction((tx) => tx.commitActive("a", "", usage)))).toBe("invalid-argument");
    expect(codeOf(() => store.transaction((tx) => tx.usage("a")))).toBe("failed-precondition");
  });

  it("updates labels wholesale or by field path", () => {
    store.transaction((tx) =>
      tx.createSnapshot("active", "a", undefined, { keep: "1", drop: "1", change: "1" }),
    );
    const before = store.transaction((tx) => tx.getInfo("a"));
    let info = store.transaction((tx) =>
      tx.updateInfo({ name: "a", labels: { change: "2", add: "3" } }, [
        "labels.change",
        "labels.add",
        "labels.drop",
      ]),
    );
    expect(info.labels).toEqual({ keep: "1", change: "2", add: "3" });
    expect(info.kind).toBe("active");
    expect(info.created.getTime()).toBe(before.created.getTime());
    expect(info.updated.getTime()).toBeGreaterThanOrEqual(before.updated.getTime());
    info = store.transaction((tx) => tx.updateInfo({ name: "a", labels: { only: "x" } }));
    expect(info.labels).toEqual({ only: "x" });
    info = store.transaction((tx) => tx.updateInfo({ name: "a", labels: { l: "y" } }, ["labels"]));
    expect(info.labels).toEqual({ l: "y" });
    expect(codeOf(() => store.transaction((tx) => tx.updateInfo({ name: "a", labels: {} }, ["kind"])))).toBe(
      "invalid-argument",
    );
    expect(codeOf(() => store.transaction((tx) => tx.updateInfo({ name: "zz", labels: {} })))).toBe(
      "not-found",
    );
  });

  it("removes a snapshot only when nothing has it as parent", () => {
    const ids = chain(2);
    expect(codeOf(() => store.transaction((tx) => tx.remove("layer-0")))).toBe("failed-precondition");
    expect(store.transaction((tx) => tx.remove("layer-1"))).toEqual({ id: ids[1], kind: "committed" });
    expect(store.transaction((tx) => tx.remove("layer-0"))).toEqual({ id: ids[0], kind: "committed" });
    expect(store.transaction((tx) => tx.ids())).toEqual(new Set());
    expect(codeOf(() => store.transaction((tx) => tx.remove("layer-0")))).toBe("not-found");
  });

  it("walks all snapshots or those matching filters", () => {
    chain(2);
    store.transaction((tx) => {
      tx.createSnapshot("active", "a", "layer-1", { team: "x", "containerd.io/gc.root": "1" });
      tx.createSnapshot("view", "v", "layer-0", { team: "y" });
    });
    const names = (filters?: string[]): string[] => {
      const out: Info[] = [];
      store.transaction((tx) => tx.walk((info) => out.push(info), filters));
      return out.map((i) => i.name);
    };
    expect(names()).toEqual(["layer-0", "layer-1", "a", "v"]);
    expect(names(["kind==committed"])).toEqual(["layer-0", "layer-1"]);
    expect(names(["parent==layer-1"])).toEqual(["a"]);
    expect(names(["labels.team==y", "name==layer-0"])).toEqual(["layer-0", "v"]);
    expect(names(['labels."containerd.io/gc.root"'])).toEqual(["a"]);
    expect(names(["kind==active,labels.team==y"])).toEqual([]);
    expect(names(["name~=^layer"])).toEqual(["layer-0", "layer-1"]);
    expect(codeOf(() => names(["kind=="]))).toBe("invalid-argument");
    expect(store.transaction((tx) => tx.ids()).size).toBe(4);
  });

  it("rolls back everything a failed transaction did", () => {
    const err = (() => {
      try {
        store.transaction((tx) => {
          tx.createSnapshot("active", "one", undefined);
          tx.createSnapshot("active", "one", undefined);
        });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(isAlreadyExists(err)).toBe(true);
    expect(store.transaction((tx) => tx.ids()).size).toBe(0);
  });

  it("rejects an asynchronous transaction function and rolls it back", () => {
    let caught: unknown;
    try {
      store.transaction(async (tx) => {
        tx.createSnapshot("active", "async", undefined);
      });
    } catch (err) {
      caught = err;
    }
    expect(errorCode(caught)).toBe("internal");
    expect(store.transaction((tx) => tx.ids()).size).toBe(0);
  });

  it("is shared by two handles on the same file", () => {
    const other = openMetaStore(join(dir, "metadata.db"));
    try {
      other.transaction((tx) => tx.createSnapshot("active", "from-other", undefined));
      expect(store.transaction((tx) => tx.getInfo("from-other").name)).toBe("from-other");
      const a = store.transaction((tx) => tx.createSnapshot("active", "x", undefined).id);
      const b = other.transaction((tx) => tx.createSnapshot("active", "y", undefined).id);
      expect(Number(b)).toBeGreaterThan(Number(a));
    } finally {
      other.close();
    }
  });

  it("uses guards that classify its errors", () => {
    expect(isNotFound(catchErr(() => store.transaction((tx) => tx.getInfo("none"))))).toBe(true);
    expect(
      isInvalidArgument(catchErr(() => store.transaction((tx) => tx.walk(() => {}, ["labels.a=="])))),
    ).toBe(true);
    chain(1);
    store.transaction((tx) => tx.createSnapshot("active", "child", "layer-0"));
    expect(isFailedPrecondition(catchErr(() => store.transaction((tx) => tx.remove("layer-0"))))).toBe(true);
  });
});

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
