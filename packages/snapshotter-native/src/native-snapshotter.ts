import { randomUUID } from "node:crypto";
import { renameSync } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  aborted,
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  isNotFound,
  notFound,
} from "@berth/errdefs";
import {
  type Info,
  Kind,
  type Mount,
  type SnapshotOptions,
  type Snapshotter,
  type Usage,
} from "@berth/snapshots";
import { type NewSnapshotKind, openMetaStore } from "@berth/snapshots/storage";
import { copyTree } from "./copy-tree.js";
import { diskUsage } from "./disk-usage.js";

/** Options of {@link createNativeSnapshotter}. */
export interface NativeSnapshotterOptions {
  /** How long to wait for another process's write lock on the metadata database. Default 10 s. */
  readonly busyTimeoutMs?: number;
}

const TMP_PREFIX = "tmp-";
const REMOVED_PREFIX = "rm-";

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Creates the native snapshotter (containerd's `native`, Docker's `vfs`) over `root` (created
 * 0700 if missing). Every active snapshot and view is a full copy of its parent's tree, made by
 * {@link copyTree} (reflinks where the filesystem has them), so it works on any filesystem,
 * including inside an overlay, at the price of disk space and prepare time.
 *
 * On disk: `root/metadata.db` (the `MetaStore` of `@berth/snapshots/storage`), `root/snapshots/<id>/fs` (one tree per
 * snapshot; a commit keeps the directory). Copies are made under `root/snapshots/tmp-<pid>-<uuid>`
 * and renamed into place in the transaction that records the snapshot, and removal renames to
 * `rm-<id>` before deleting, so a crash leaves either a whole snapshot or a directory that
 * {@link Snapshotter.cleanup} removes. Several processes may share one root.
 *
 * Mounts are rbind mounts of the tree, `rw` for active snapshots and `ro` for views. Errors are
 * those of the {@link Snapshotter} contract; `aborted` if the parent was removed and recreated
 * while it was being copied; `failed-precondition` after {@link Snapshotter.close}. The caller
 * owns the snapshotter and must close it.
 */
export async function createNativeSnapshotter(
  root: string,
  options: NativeSnapshotterOptions = {},
): Promise<Snapshotter> {
  const base = resolve(root);
  const snapshotsDir = join(base, "snapshots");
  await mkdir(base, { recursive: true, mode: 0o700 });
  await mkdir(snapshotsDir, { recursive: true, mode: 0o700 });
  const store = openMetaStore(
    join(base, "metadata.db"),
    options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs },
  );
  const tmpPrefix = `${TMP_PREFIX}${process.pid}-`;
  /** Copies in progress in this process, which cleanup must not touch. */
  const inFlight = new Set<string>();

  const fsDir = (id: string): string => join(snapshotsDir, id, "fs");
  const mountsOf = (id: string, kind: Kind): Mount[] => [
    { type: "bind", source: fsDir(id), options: ["rbind", kind === Kind.View ? "ro" : "rw"] },
  ];

  async function createSnapshot(
    kind: NewSnapshotKind,
    key: string,
    parent: string | undefined,
    opts: SnapshotOptions | undefined,
  ): Promise<Mount[]> {
    if (typeof key !== "string" || key === "") throw invalidArgument("snapshot key must not be empty");
    const hasParent = parent !== undefined && parent !== "";
    // Fail fast, before a possibly long copy, on what the recording transaction would refuse.
    const parentId = store.transaction((tx) => {
      try {
        tx.lookup(key);
        throw alreadyExists(`snapshot ${JSON.stringify(key)} already exists`);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      if (!hasParent) return undefined;
      let p: ReturnType<typeof tx.lookup>;
      try {
        p = tx.lookup(parent);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        throw notFound(`parent snapshot ${JSON.stringify(parent)} of ${JSON.stringify(key)} does not exist`);
      }
      if (p.kind !== Kind.Committed) {
        throw failedPrecondition(
          `parent snapshot ${JSON.stringify(parent)} of ${JSON.stringify(key)} is ${p.kind}, not committed`,
        );
      }
      return p.id;
    });

    const tmpName = `${tmpPrefix}${randomUUID()}`;
    const tmp = join(snapshotsDir, tmpName);
    inFlight.add(tmpName);
    try {
      await mkdir(tmp, { mode: 0o700 });
      if (parentId === undefined) {
        await mkdir(join(tmp, "fs"), { mode: 0o755 });
      } else {
        try {
          await copyTree(fsDir(parentId), join(tmp, "fs"));
        } catch (err) {
          // A parent removed while it was being copied shows up as ENOENT somewhere in the walk:
          // report it as what it is.
          const gone = store.transaction((tx) => {
            try {
              return tx.lookup(parent as string).id !== parentId;
            } catch (e) {
              if (isNotFound(e)) return true;
              throw e;
            }
          });
          if (gone) {
            throw notFound(
              `parent snapshot ${JSON.stringify(parent)} of ${JSON.stringify(key)} was removed`,
              {
                cause: err,
              },
            );
          }
          throw err;
        }
      }
      const record = store.transaction((tx) => {
        const rec = tx.createSnapshot(kind, key, hasParent ? parent : undefined, opts?.labels);
        if (parentId !== undefined && rec.parentIds[0] !== parentId) {
          throw aborted(
            `snapshot ${JSON.stringify(key)}: parent ${JSON.stringify(parent)} was replaced while it was being copied`,
          );
        }
        // Inside the transaction: if the rename fails, the record is rolled back with it.
        renameSync(tmp, join(snapshotsDir, rec.id));
        return rec;
      });
      return mountsOf(record.id, record.kind);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
      throw err;
    } finally {
      inFlight.delete(tmpName);
    }
  }

  const snapshotter: Snapshotter = {
    async stat(key: string): Promise<Info> {
      return store.transaction((tx) => tx.getInfo(key));
    },

    async update(info, fieldpaths) {
      return store.transaction((tx) => tx.updateInfo(info, fieldpaths));
    },

    async usage(key: string): Promise<Usage> {
      const rec = store.transaction((tx) => tx.lookup(key));
      if (rec.kind === Kind.Committed) return store.transaction((tx) => tx.usage(key));
      // A view is never written to: like containerd, only active snapshots are measured.
      if (rec.kind === Kind.View) return { size: 0, inodes: 0 };
      return diskUsage(fsDir(rec.id));
    },

    async mounts(key: string): Promise<Mount[]> {
      const rec = store.transaction((tx) => tx.getSnapshot(key));
      return mountsOf(rec.id, rec.kind);
    },

    prepare(key, parent, opts) {
      return createSnapshot(Kind.Active, key, parent, opts);
    },

    view(key, parent, opts) {
      return createSnapshot(Kind.View, key, parent, opts);
    },

    async commit(name, key, opts) {
      const rec = store.transaction((tx) => tx.lookup(key));
      if (rec.kind !== Kind.Active) {
        throw failedPrecondition(
          `snapshot ${JSON.stringify(key)} is ${rec.kind}: only an active snapshot can be committed`,
        );
      }
      // Measured before the transaction (a walk is slow); the tree is the whole snapshot, as
      // containerd's native snapshotter records it.
      const usage = await diskUsage(fsDir(rec.id));
      store.transaction((tx) => {
        const id = tx.commitActive(key, name, usage, opts?.labels);
        if (id !== rec.id)
          throw aborted(`snapshot ${JSON.stringify(key)} was replaced while it was measured`);
      });
    },

    async remove(key) {
      const removed = store.transaction((tx) => {
        const { id } = tx.remove(key);
        const trash = join(snapshotsDir, `${REMOVED_PREFIX}${id}`);
        try {
          renameSync(join(snapshotsDir, id), trash);
        } catch (err) {
          // Already gone (a crash between an earlier rename and its commit): nothing to delete.
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
          return undefined;
        }
        return trash;
      });
      // The record is gone; if deleting the files fails, cleanup() removes them later.
      if (removed !== undefined) await rm(removed, { recursive: true, force: true }).catch(() => {});
    },

    async walk(fn, filters) {
      const infos: Info[] = [];
      store.transaction((tx) => tx.walk((info) => infos.push(info), filters));
      // Called outside the transaction, so that `fn` may await and use the snapshotter.
      for (const info of infos) await fn(info);
    },

    async cleanup() {
      const ids = store.transaction((tx) => tx.ids());
      for (const name of await readdir(snapshotsDir)) {
        if (ids.has(name) || inFlight.has(name)) continue;
        if (name.startsWith(TMP_PREFIX)) {
          // Another process's copy in progress: leave it unless that process is gone.
          const pid = Number(name.slice(TMP_PREFIX.length).split("-")[0]);
          if (pid !== process.pid && Number.isInteger(pid) && pid > 0 && processAlive(pid)) continue;
        }
        await rm(join(snapshotsDir, name), { recursive: true, force: true });
      }
    },

    async close() {
      store.close();
    },
  };
  return snapshotter;
}
