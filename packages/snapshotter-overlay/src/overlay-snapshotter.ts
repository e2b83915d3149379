import { lchownSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { errorMessage, failedPrecondition, invalidArgument } from "@berth/errdefs";
import {
  type Info,
  Kind,
  type Mount,
  type SnapshotOptions,
  type Snapshotter,
  type Usage,
} from "@berth/snapshots";
import { type MetaStore, type MetaTx, openMetaStore, type SnapshotRecord } from "@berth/snapshots/storage";
import { fsyncDirSync, readMountInfo } from "@berth/sys";
import {
  needsUserXattr,
  noDType,
  noOverlay,
  overlayInProcFilesystems,
  probeOverlayMount,
  supportsDType,
  supportsIndex,
} from "./check.js";
import { diskUsage } from "./usage.js";

/**
 * The label the snapshotter adds to every {@link Info} it returns when
 * {@link OverlaySnapshotterOptions.upperdirLabel} is set: the absolute path of the snapshot's
 * upper directory (containerd's `containerd.io/snapshot/overlay.upperdir`).
 */
export const UPPERDIR_LABEL = "containerd.io/snapshot/overlay.upperdir";

/** Options of {@link createOverlaySnapshotter}. */
export interface OverlaySnapshotterOptions {
  /**
   * Defer deleting a removed snapshot's directory to {@link Snapshotter.cleanup} (containerd's
   * `AsynchronousRemove`): `remove` then only deletes the record, which is fast whatever the
   * size of the layer. Default false: `remove` deletes the directory before it returns.
   */
  readonly asyncRemove?: boolean;
  /**
   * Extra options for overlay mounts (e.g. `metacopy=off`, `redirect_dir=off`), placed after
   * the detected `index=…` and `userxattr` and before the per-snapshot directories. Not applied
   * to bind mounts, as in containerd. An `index=…` or `userxattr` here replaces what the
   * snapshotter would detect.
   */
  readonly mountOptions?: readonly string[];
  /** Add {@link UPPERDIR_LABEL} to the Info of every snapshot. Default false. */
  readonly upperdirLabel?: boolean;
  /**
   * Add `volatile` to the overlay mounts of active snapshots: overlayfs then skips every sync
   * to the upper layer, which makes unpacking layers much faster. Only for mounts whose contents
   * may be thrown away after a crash (unpack: the snapshot is removed unless it was committed).
   * overlayfs leaves a crash marker in the work directory that makes it refuse to mount the same
   * directories again; {@link Snapshotter.mounts} removes it when the machine has not rebooted
   * since (nothing can have been lost then), so a snapshot can be mounted, unmounted and mounted
   * again within one boot. Default false.
   */
  readonly volatile?: boolean;
  /**
   * Overlay's inode index: `"off"` (the default, what containerd does) adds `index=off` to
   * overlay mounts when the kernel has the feature; image layers are shared between mounts, and
   * with the index on, a second mount of a shared lower layer fails with ESTALE once a hard
   * link was copied up through the first. `"on"` adds `index=on`; `invalid-argument` at creation
   * if the kernel has no index feature.
   */
  readonly index?: "on" | "off";
}

/**
 * Creates the overlayfs snapshotter rooted at `root` (containerd's overlay snapshotter):
 * `root/metadata.db` holds the records, `root/snapshots/<id>/fs` is a snapshot's upper (or
 * only) directory and `root/snapshots/<id>/work` the overlay work directory of an active one.
 * Mounts are returned as data, to be performed with `mountAll` from `@berth/sys`:
 *
 * - no parent: a bind mount of the snapshot's own `fs` (`rw`, or `ro` for a view);
 * - a view of a single layer: a read-only bind mount of that layer;
 * - otherwise an overlay with `lowerdir=` listing the parents nearest first, and `upperdir=`,
 *   `workdir=` for an active snapshot (a view of several layers is an overlay without upper).
 *
 * `root` must be absolute and free of `,` and `:` (they would split overlay's option string).
 * Throws `invalid-argument` for such a root or an unsupported option, `failed-precondition` if
 * the filesystem of `root` lacks d_type, `not-implemented` if the kernel has no overlayfs. The
 * caller owns the snapshotter and must {@link Snapshotter.close} it. Several snapshotters (in
 * one or several processes) may share a root: all record changes go through the metadata
 * database's write transactions, and directories are created and renamed inside them.
 */
export async function createOverlaySnapshotter(
  root: string,
  options: OverlaySnapshotterOptions = {},
): Promise<Snapshotter> {
  if (!isAbsolute(root))
    throw invalidArgument(`overlay snapshotter root ${JSON.stringify(root)} must be absolute`);
  const base = resolve(root);
  if (/[,:]/.test(base)) {
    throw invalidArgument(
      `overlay snapshotter root ${base} must not contain ',' or ':': they separate overlay mount options and lower directories`,
    );
  }
  await mkdir(join(base, "snapshots"), { recursive: true, mode: 0o700 });
  if (!(await supportsDType(base))) throw noDType(base);
  if (!(await overlayInProcFilesystems())) {
    // Not registered yet may just mean the module is not loaded: a mount attempt autoloads it.
    const failure = await probeOverlayMount(base, []);
    if (failure !== undefined) throw noOverlay(failure);
  }

  const given = options.mountOptions ?? [];
  const has = (key: string): boolean => given.some((o) => o === key || o.startsWith(`${key}=`));
  const detected: string[] = [];
  if (!has("index")) {
    if (options.index === "on") {
      if (!supportsIndex())
        throw invalidArgument("index=on: this kernel's overlayfs has no inode index feature");
      detected.push("index=on");
    } else if (supportsIndex()) {
      detected.push("index=off");
    }
  }
  if (!has("userxattr") && (await needsUserXattr(base))) detected.push("userxattr");
  const overlayOptions = [...detected, ...given];
  const store = openMetaStore(join(base, "metadata.db"));
  return new OverlaySnapshotter(base, store, overlayOptions, options);
}

/**
 * Makes a volatile overlay mountable again after a clean unmount. A `volatile` mount leaves
 * `work/incompat/volatile` in its work directory, and overlayfs refuses (EINVAL) to mount those
 * directories again, because after a system crash the upper layer may have lost writes. Writes
 * are only lost when the machine went down: if the marker was made during the current boot (it
 * is younger than the boot time in /proc/stat) and no mount uses the upper directory now, the
 * page cache still holds everything, and the marker can go (the kernel's overlayfs documentation
 * allows removing it when the system is known not to have crashed). Markers from an earlier boot
 * stay: mounting then fails, as overlayfs intends.
 */
async function clearVolatileMarker(workdir: string, upperdir: string): Promise<void> {
  const marker = join(workdir, "work", "incompat", "volatile");
  let made: number;
  try {
    made = (await stat(marker)).ctimeMs;
  } catch {
    return;
  }
  const btime = /^btime (\d+)$/m.exec(await readFile("/proc/stat", "utf8"))?.[1];
  if (btime === undefined || made < Number(btime) * 1000) return;
  // mountinfo escapes space, tab, newline and backslash in octal.
  const escaped = upperdir.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
  const inUse = readMountInfo().some(
    (m) => m.fstype === "overlay" && m.superOptions.split(",").includes(`upperdir=${escaped}`),
  );
  if (!inUse) await rm(marker, { recursive: true, force: true });
}

// Temporary directories of snapshots being created, and directories of removed snapshots being
// deleted. Neither is a decimal id, so `cleanup` recognises them as leftovers.
const NEW_PREFIX = "new-";
const REMOVING_PREFIX = "rm-";

class OverlaySnapshotter implements Snapshotter {
  readonly #root: string;
  readonly #snapshots: string;
  readonly #store: MetaStore;
  readonly #overlayOptions: readonly string[];
  readonly #asyncRemove: boolean;
  readonly #upperdirLabel: boolean;
  readonly #volatile: boolean;
  #closed = false;

  constructor(
    root: string,
    store: MetaStore,
    overlayOptions: readonly string[],
    options: OverlaySnapshotterOptions,
  ) {
    this.#root = root;
    this.#snapshots = join(root, "snapshots");
    this.#store = store;
    this.#overlayOptions = overlayOptions;
    this.#asyncRemove = options.asyncRemove ?? false;
    this.#upperdirLabel = options.upperdirLabel ?? false;
    this.#volatile = options.volatile ?? false;
  }

  #upperPath(id: string): string {
    return join(this.#snapshots, id, "fs");
  }

  #workPath(id: string): string {
    return join(this.#snapshots, id, "work");
  }

  #tx<T>(fn: (tx: MetaTx) => T): T {
    if (this.#closed) throw failedPrecondition(`overlay snapshotter ${this.#root} is closed`);
    return this.#store.transaction(fn);
  }

  /** The id of snapshot `key` of any kind, inside a transaction. */
  #idOf(tx: MetaTx, key: string): string {
    return tx.lookup(key).id;
  }

  #withUpperdir(tx: MetaTx, info: Info): Info {
    if (!this.#upperdirLabel) return info;
    const id = this.#idOf(tx, info.name);
    return { ...info, labels: { ...info.labels, [UPPERDIR_LABEL]: this.#upperPath(id) } };
  }

  async stat(key: string): Promise<Info> {
    return this.#tx((tx) => this.#withUpperdir(tx, tx.getInfo(key)));
  }

  async update(
    info: { readonly name: string; readonly labels: Readonly<Record<string, string>> },
    fieldpaths?: readonly string[],
  ): Promise<Info> {
    return this.#tx((tx) => this.#withUpperdir(tx, tx.updateInfo(info, fieldpaths)));
  }

  async usage(key: string): Promise<Usage> {
    const { info, id } = this.#tx((tx) => {
      const info = tx.getInfo(key);
      return { info, id: info.kind === Kind.Active ? tx.getSnapshot(key).id : undefined };
    });
    if (info.kind === Kind.Committed) return this.#tx((tx) => tx.usage(key));
    // A view has no layer of its own; containerd reports the zero usage it recorded.
    if (id === undefined) return { size: 0, inodes: 0 };
    return diskUsage(this.#upperPath(id));
  }

  async mounts(key: string): Promise<Mount[]> {
    const record = this.#tx((tx) => tx.getSnapshot(key));
    if (this.#volatile && record.kind === Kind.Active && record.parentIds.length > 0) {
      await clearVolatileMarker(this.#workPath(record.id), this.#upperPath(record.id));
    }
    return this.#mounts(record);
  }

  async prepare(key: string, parent?: string, options?: SnapshotOptions): Promise<Mount[]> {
    return this.#create(Kind.Active, key, parent, options);
  }

  async view(key: string, parent?: string, options?: SnapshotOptions): Promise<Mount[]> {
    return this.#create(Kind.View, key, parent, options);
  }

  #create(
    kind: typeof Kind.Active | typeof Kind.View,
    key: string,
    parent: string | undefined,
    options: SnapshotOptions | undefined,
  ): Mount[] {
    let temp: string | undefined;
    try {
      const record = this.#tx((tx) => {
        // The directory is made and renamed inside the write transaction so that `cleanup`
        // (which lists directories in one too) never takes a snapshot being created for garbage.
        temp = mkdtempSync(join(this.#snapshots, NEW_PREFIX));
        mkdirSync(join(temp, "fs"), { mode: 0o755 });
        if (kind === Kind.Active) mkdirSync(join(temp, "work"), { mode: 0o711 });
        const record = tx.createSnapshot(kind, key, parent || undefined, options?.labels);
        const parentId = record.parentIds[0];
        if (parentId !== undefined) {
          // The root of the merged tree is the upper directory's: give it the parent's owner,
          // or an image whose root belongs to a non-root user would change hands.
          const st = statSync(this.#upperPath(parentId));
          lchownSync(join(temp, "fs"), st.uid, st.gid);
        }
        renameSync(temp, join(this.#snapshots, record.id));
        temp = undefined;
        // The record commits with FULL sync; make the rename as durable before it does.
        fsyncDirSync(this.#snapshots);
        return record;
      });
      return this.#mounts(record);
    } finally {
      if (temp !== undefined) rmSync(temp, { recursive: true, force: true });
    }
  }

  #mounts(s: SnapshotRecord): Mount[] {
    if (s.parentIds.length === 0) {
      // Overlay needs at least one lower layer: a base snapshot is its own directory.
      return [
        {
          type: "bind",
          source: this.#upperPath(s.id),
          options: [s.kind === Kind.View ? "ro" : "rw", "rbind"],
        },
      ];
    }
    const options = [...this.#overlayOptions];
    if (s.kind === Kind.Active) {
      if (this.#volatile) options.push("volatile");
      options.push(`workdir=${this.#workPath(s.id)}`, `upperdir=${this.#upperPath(s.id)}`);
    } else if (s.parentIds.length === 1) {
      // overlayfs without an upper layer wants two lower layers; one layer read-only is a bind.
      return [{ type: "bind", source: this.#upperPath(s.parentIds[0] as string), options: ["ro", "rbind"] }];
    }
    options.push(`lowerdir=${s.parentIds.map((id) => this.#upperPath(id)).join(":")}`);
    return [{ type: "overlay", source: "overlay", options }];
  }

  async commit(name: string, key: string, options?: SnapshotOptions): Promise<void> {
    const { id } = this.#tx((tx) => {
      const info = tx.getInfo(key);
      if (info.kind !== Kind.Active) {
        throw failedPrecondition(
          `cannot commit snapshot ${JSON.stringify(key)}: it is ${info.kind}, not active`,
        );
      }
      return tx.getSnapshot(key);
    });
    // Measured outside the transaction (it may take long, and transactions are synchronous);
    // the id check below makes sure the measured directory is still the one being committed.
    const usage = await diskUsage(this.#upperPath(id));
    this.#tx((tx) => {
      const current = tx.getSnapshot(key);
      if (current.id !== id) {
        throw failedPrecondition(`snapshot ${JSON.stringify(key)} was replaced while it was being committed`);
      }
      tx.commitActive(key, name, usage, options?.labels);
    });
  }

  async remove(key: string): Promise<void> {
    const removing = this.#tx((tx) => {
      const { id } = tx.remove(key);
      if (this.#asyncRemove) return undefined;
      // Renamed away inside the transaction: once the record is gone, so is the id's directory,
      // and a crash during the deletion below leaves a name `cleanup` knows to delete.
      const from = join(this.#snapshots, id);
      const to = join(this.#snapshots, `${REMOVING_PREFIX}${id}`);
      try {
        renameSync(from, to);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
      return to;
    });
    if (removing !== undefined) await rm(removing, { recursive: true, force: true });
  }

  async walk(fn: (info: Info) => void | Promise<void>, filters?: readonly string[]): Promise<void> {
    // The store's walk is synchronous and `fn` may be asynchronous: collect, then call.
    const infos = this.#tx((tx) => {
      const found: Info[] = [];
      tx.walk((info) => found.push(info), filters);
      // Ids are looked up after the walk: its cursor must be closed before other statements run.
      return found.map((info) => this.#withUpperdir(tx, info));
    });
    for (const info of infos) await fn(info);
  }

  /**
   * Deletes every directory under `snapshots/` that belongs to no snapshot: directories of
   * snapshots removed with `asyncRemove`, and leftovers of a crash (a half-created `new-*`, a
   * half-deleted `rm-*`, or an id whose record never committed). Errors deleting one directory
   * do not stop the others; the first is thrown at the end.
   */
  async cleanup(): Promise<void> {
    const garbage = this.#tx((tx) => {
      const ids = tx.ids();
      return readdirSync(this.#snapshots)
        .filter((name) => !ids.has(name))
        .map((name) => join(this.#snapshots, name));
    });
    let first: unknown;
    for (const dir of garbage) {
      try {
        await rm(dir, { recursive: true, force: true });
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) {
      throw failedPrecondition(`overlay snapshotter cleanup in ${this.#snapshots}: ${errorMessage(first)}`, {
        cause: first,
      });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#store.close();
  }
}
