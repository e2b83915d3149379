import { randomBytes } from "node:crypto";
import { type BigIntStats, constants, createReadStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type ContentStore, type Descriptor, type Digest, Labels } from "@berth/content";
import { failedPrecondition, invalidArgument, isAlreadyExists, isNotFound } from "@berth/errdefs";
import { getXattr, listXattrs, type Mount, mountAll, unmountRecursive } from "@berth/sys";
import { type Compression, compressStream } from "./compression.js";
import { type DiffEntry, TarStreamWriter } from "./diff-tar.js";
import { Whiteout } from "./whiteout.js";

/** Options of {@link diffDirectories} and {@link diffOverlayUpper}. */
export interface DiffOptions {
  /** End `out` after the last byte (default true). */
  readonly end?: boolean;
}

/** What a diff wrote: the uncompressed tar's digest (the layer's diffID) and size. */
export interface DiffResult {
  readonly diffId: Digest;
  readonly size: number;
}

const { S_IFMT, S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO } = constants;

// Overlay keeps its own state in these xattrs; they describe the upperdir, not the layer.
const HIDDEN_XATTR_PREFIXES = [Whiteout.overlayXattrPrefix, "user.overlay."];

const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

function fileType(mode: number): number {
  return mode & S_IFMT;
}

function majorOf(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
}

function minorOf(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
}

function isOverlayWhiteout(st: BigIntStats): boolean {
  return fileType(Number(st.mode)) === S_IFCHR && st.rdev === 0n;
}

async function lstatOrUndefined(path: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (err) {
    if (
      (err as NodeJS.ErrnoException).code === "ENOENT" ||
      (err as NodeJS.ErrnoException).code === "ENOTDIR"
    ) {
      return undefined;
    }
    throw err;
  }
}

async function sortedNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort(byteOrder);
}

function readXattrs(path: string): [string, Buffer][] {
  let names: string[];
  try {
    names = listXattrs(path);
  } catch (err) {
    // Filesystems without xattr support have none to carry.
    if ((err as { errnoName?: string }).errnoName === "ENOTSUP") return [];
    throw err;
  }
  const out: [string, Buffer][] = [];
  for (const name of names.sort(byteOrder)) {
    if (HIDDEN_XATTR_PREFIXES.some((p) => name.startsWith(p))) continue;
    const value = getXattr(path, name);
    if (value !== undefined) out.push([name, Buffer.from(value)]);
  }
  return out;
}

function sameXattrs(
  a: readonly (readonly [string, Buffer])[],
  b: readonly (readonly [string, Buffer])[],
): boolean {
  return (
    a.length === b.length && a.every(([k, v], i) => b[i]?.[0] === k && v.equals(b[i]?.[1] ?? Buffer.alloc(0)))
  );
}

async function sameContent(a: string, b: string, size: bigint): Promise<boolean> {
  if (size === 0n) return true;
  if (size <= 1n << 20n) return (await readFile(a)).equals(await readFile(b));
  const left = createReadStream(a, { highWaterMark: 1 << 20 });
  const right = createReadStream(b, { highWaterMark: 1 << 20 })[Symbol.asyncIterator]();
  let pending: Buffer = Buffer.alloc(0);
  try {
    for await (const chunk of left as AsyncIterable<Buffer>) {
      let offset = 0;
      while (offset < chunk.length) {
        if (pending.length === 0) {
          const next = await right.next();
          if (next.done) return false;
          pending = next.value as Buffer;
        }
        const n = Math.min(pending.length, chunk.length - offset);
        if (!chunk.subarray(offset, offset + n).equals(pending.subarray(0, n))) return false;
        pending = pending.subarray(n);
        offset += n;
      }
    }
    return pending.length === 0 && (await right.next()).done === true;
  } finally {
    left.destroy();
    await right.return?.();
  }
}

/** Mtimes are equal, or equal in seconds when one side lost sub-second precision (a tar round trip). */
function sameTime(a: BigIntStats, b: BigIntStats): boolean {
  if (a.mtimeNs === b.mtimeNs) return true;
  const second = 1_000_000_000n;
  const truncated = a.mtimeNs % second === 0n || b.mtimeNs % second === 0n;
  return truncated && a.mtimeNs / second === b.mtimeNs / second;
}

/**
 * Whether the upper entry is unchanged from the lower one, the way containerd's double walk decides
 * it: same type, mode, owner, device, size, xattrs and link target, and same mtime — except that
 * when one mtime has no sub-second part (it came out of a tar), regular files are compared by
 * content.
 */
async function unchanged(
  lowerPath: string,
  lower: BigIntStats,
  upperPath: string,
  upper: BigIntStats,
): Promise<boolean> {
  if (
    lower.mode !== upper.mode ||
    lower.uid !== upper.uid ||
    lower.gid !== upper.gid ||
    lower.rdev !== upper.rdev ||
    (fileType(Number(upper.mode)) !== S_IFDIR && lower.size !== upper.size)
  ) {
    return false;
  }
  if (!sameXattrs(readXattrs(lowerPath), readXattrs(upperPath))) return false;
  const type = fileType(Number(upper.mode));
  if (type === S_IFLNK && (await readlink(lowerPath)) !== (await readlink(upperPath))) return false;
  if (!sameTime(lower, upper)) return false;
  if (type === S_IFREG && lower.mtimeNs !== upper.mtimeNs)
    return sameContent(lowerPath, upperPath, upper.size);
  return true;
}

/**
 * Emits tar entries in walk order: ancestors of every entry first (each once), hard links to
 * files already in the archive as links, sockets skipped.
 */
class Emitter {
  readonly #tar: TarStreamWriter;
  /** Directories entered but not yet written: written only when something below them is. */
  readonly #pending: { name: string; path: string; st: BigIntStats }[] = [];
  readonly #written = new Set<string>();
  readonly #inodes = new Map<string, string>();

  constructor(out: Writable) {
    this.#tar = new TarStreamWriter(out);
  }

  enterDirectory(name: string, path: string, st: BigIntStats): void {
    this.#pending.push({ name, path, st });
  }

  leaveDirectory(): void {
    this.#pending.pop();
  }

  async #flushParents(): Promise<void> {
    for (const dir of this.#pending) {
      if (this.#written.has(dir.name)) continue;
      this.#written.add(dir.name);
      await this.#tar.entry(this.#header(dir.name, dir.path, dir.st, "directory"));
    }
  }

  #header(
    name: string,
    path: string,
    st: BigIntStats,
    type: DiffEntry["type"],
    extra: Partial<DiffEntry> = {},
  ): DiffEntry {
    const xattrs = readXattrs(path);
    return {
      name,
      type,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: 0,
      mtime: Number(st.mtimeNs / 1_000_000_000n),
      ...(xattrs.length > 0 ? { xattrs } : {}),
      ...extra,
    };
  }

  /** Writes the directory itself now (changed or new), before its children. */
  async directory(): Promise<void> {
    await this.#flushParents();
  }

  /** Writes a non-directory entry. */
  async node(name: string, path: string, st: BigIntStats): Promise<void> {
    const type = fileType(Number(st.mode));
    if (type === S_IFSOCK) return; // tar cannot hold sockets; containerd skips them too
    await this.#flushParents();
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = this.#inodes.get(key);
      if (first !== undefined) {
        await this.#tar.entry(this.#header(name, path, st, "link", { linkname: first }));
        return;
      }
      this.#inodes.set(key, name);
    }
    switch (type) {
      case S_IFREG: {
        const size = Number(st.size);
        const content = size > 0 ? createReadStream(path, { highWaterMark: 256 << 10 }) : undefined;
        try {
          await this.#tar.entry(this.#header(name, path, st, "file", { size }), content);
        } finally {
          content?.destroy();
        }
        return;
      }
      case S_IFLNK:
        await this.#tar.entry(this.#header(name, path, st, "symlink", { linkname: await readlink(path) }));
        return;
      case S_IFCHR:
      case S_IFBLK:
        await this.#tar.entry(
          this.#header(name, path, st, type === S_IFCHR ? "char-device" : "block-device", {
            devmajor: majorOf(st.rdev),
            devminor: minorOf(st.rdev),
          }),
        );
        return;
      case S_IFIFO:
        await this.#tar.entry(this.#header(name, path, st, "fifo"));
        return;
      default:
        throw failedPrecondition(
          `layer diff: ${path} has an unsupported file type (mode ${st.mode.toString(8)})`,
        );
    }
  }

  /** Writes `.wh.<base>` (or the opaque marker) in directory `dir`. */
  async whiteout(dir: string, base: string): Promise<void> {
    await this.#flushParents();
    const name = dir === "" ? base : `${dir}/${base}`;
    await this.#tar.entry({ name, type: "file", mode: 0, uid: 0, gid: 0, size: 0, mtime: 0 });
  }

  finish(end: boolean): Promise<DiffResult> {
    return this.#tar.finish(end);
  }
}

function child(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

/**
 * Double walk of one directory level: `upperDir` against `lowerDir` (absent: everything is new).
 * Children are visited in byte order of their names, whiteouts sorting by their own `.wh.` name.
 */
async function walkPair(
  emitter: Emitter,
  rel: string,
  lowerDir: string | undefined,
  upperDir: string,
): Promise<void> {
  const upperNames = await sortedNames(upperDir);
  const lowerNames = lowerDir === undefined ? [] : await sortedNames(lowerDir);
  const upperSet = new Set(upperNames);
  // A directory none of whose old children survive is written as opaque (one marker instead of a
  // whiteout per child): this is what overlayfs records when a directory is removed and created
  // again, so the overlay fast path and the double walk agree.
  // Never at the root, which overlayfs cannot replace either.
  const opaque = rel !== "" && lowerNames.length > 0 && lowerNames.every((name) => !upperSet.has(name));
  if (opaque) {
    await emitter.directory();
    await emitter.whiteout(rel, Whiteout.opaque);
  }
  const items: { key: string; name: string; deleted: boolean }[] = upperNames.map((name) => ({
    key: name,
    name,
    deleted: false,
  }));
  if (!opaque) {
    for (const name of lowerNames) {
      if (!upperSet.has(name)) items.push({ key: `${Whiteout.prefix}${name}`, name, deleted: true });
    }
  }
  items.sort((a, b) => byteOrder(a.key, b.key));
  for (const item of items) {
    const name = child(rel, item.name);
    if (item.deleted) {
      await emitter.whiteout(rel, item.key);
      continue;
    }
    const upperPath = join(upperDir, item.name);
    const upperSt = await lstat(upperPath, { bigint: true });
    const lowerPath = opaque || lowerDir === undefined ? undefined : join(lowerDir, item.name);
    const lowerSt = lowerPath === undefined ? undefined : await lstatOrUndefined(lowerPath);
    const upperIsDir = fileType(Number(upperSt.mode)) === S_IFDIR;
    const lowerIsDir = lowerSt !== undefined && fileType(Number(lowerSt.mode)) === S_IFDIR;
    if (upperIsDir) {
      emitter.enterDirectory(name, upperPath, upperSt);
      const same =
        lowerSt !== undefined &&
        lowerPath !== undefined &&
        lowerIsDir &&
        (await unchanged(lowerPath, lowerSt, upperPath, upperSt));
      if (!same) await emitter.directory();
      await walkPair(emitter, name, lowerIsDir ? lowerPath : undefined, upperPath);
      emitter.leaveDirectory();
      continue;
    }
    if (
      lowerSt !== undefined &&
      lowerPath !== undefined &&
      (await unchanged(lowerPath, lowerSt, upperPath, upperSt))
    ) {
      continue;
    }
    await emitter.node(name, upperPath, upperSt);
  }
}

async function checkDirectory(path: string, what: string): Promise<void> {
  const st = await lstatOrUndefined(path);
  if (st === undefined) throw invalidArgument(`layer diff: ${what} ${path} does not exist`);
  if (!st.isDirectory()) throw invalidArgument(`layer diff: ${what} ${path} is not a directory`);
}

/**
 * Writes the changes from `lower` (absent: an empty tree) to `upper` to `out` as an uncompressed
 * OCI layer tar (image-spec `layer.md`): a double walk of both trees. Entries are sorted (a
 * directory before its children, names in byte order), with PAX headers where ustar cannot hold
 * a value, numeric uid/gid, permission bits, whole-second mtimes, xattrs (`SCHILY.xattr.*`,
 * overlay's own excepted), hard links within `upper` by inode, devices and fifos; deletions are
 * `.wh.<name>` whiteouts, and a directory whose old children are all gone is written opaque
 * (`.wh..wh..opq`). The parents of every changed entry are included, as containerd does. The same
 * trees always give the same bytes.
 *
 * Sockets are skipped. Ends `out` unless `options.end` is false; the caller owns `out` and must
 * consume it. Throws `invalid-argument` when a root is missing or not a directory,
 * `failed-precondition` when a file changes size while it is read.
 */
export async function diffDirectories(
  lower: string | undefined,
  upper: string,
  out: Writable,
  options: DiffOptions = {},
): Promise<DiffResult> {
  if (lower !== undefined) await checkDirectory(lower, "lower");
  await checkDirectory(upper, "upper");
  const emitter = new Emitter(out);
  await walkPair(emitter, "", lower, upper);
  return emitter.finish(options.end ?? true);
}

function isOpaqueDir(path: string): boolean {
  return getXattr(path, Whiteout.overlayOpaqueXattr)?.toString() === "y";
}

/**
 * Whether the merged `lowers` (top-most first) show a directory with at least one entry at `rel`,
 * following overlayfs's rules: a whiteout or a non-directory hides everything below it in lower
 * layers, an opaque directory hides the same directory of lower layers, whiteouts hide names.
 */
async function lowersHaveNonEmptyDir(lowers: readonly string[], rel: string): Promise<boolean> {
  const parts = rel.split("/");
  const hidden = new Set<string>();
  for (const lower of lowers) {
    let lastLayer = false;
    for (let i = 1; i < parts.length; i++) {
      const ancestor = join(lower, ...parts.slice(0, i));
      const st = await lstatOrUndefined(ancestor);
      if (st === undefined) break;
      if (!st.isDirectory()) return false;
      if (isOpaqueDir(ancestor)) lastLayer = true;
    }
    const path = join(lower, rel);
    const st = await lstatOrUndefined(path);
    if (st !== undefined) {
      if (!st.isDirectory()) return false;
      for (const name of await readdir(path)) {
        if (hidden.has(name)) continue;
        if (isOverlayWhiteout(await lstat(join(path, name), { bigint: true }))) hidden.add(name);
        else return true;
      }
      if (isOpaqueDir(path)) return false;
    }
    if (lastLayer) return false;
  }
  return false;
}

async function walkUpper(
  emitter: Emitter,
  lowers: readonly string[],
  rel: string,
  dir: string,
): Promise<void> {
  // Sorted by the names written to the tar: a whiteout sorts as `.wh.<name>`, as in the double walk.
  const items = await Promise.all(
    (await readdir(dir)).map(async (name) => {
      const path = join(dir, name);
      const st = await lstat(path, { bigint: true });
      const whiteout = isOverlayWhiteout(st);
      return { name, path, st, whiteout, key: whiteout ? `${Whiteout.prefix}${name}` : name };
    }),
  );
  items.sort((a, b) => byteOrder(a.key, b.key));
  for (const { name, path, st, whiteout, key } of items) {
    const entryName = child(rel, name);
    if (whiteout) {
      await emitter.whiteout(rel, key);
      continue;
    }
    if (getXattr(path, `${Whiteout.overlayXattrPrefix}redirect`) !== undefined) {
      throw failedPrecondition(
        `layer diff: ${path} is a renamed overlay directory (redirect_dir); diff the mounted tree with diffDirectories instead`,
      );
    }
    if (!st.isDirectory()) {
      if (getXattr(path, `${Whiteout.overlayXattrPrefix}metacopy`) !== undefined) {
        throw failedPrecondition(
          `layer diff: ${path} is an overlay metacopy (its data is in a lower layer); diff the mounted tree with diffDirectories instead`,
        );
      }
      await emitter.node(entryName, path, st);
      continue;
    }
    emitter.enterDirectory(entryName, path, st);
    // Every directory of an upperdir is part of the diff: overlayfs copies a directory up only
    // when something in it (or its own metadata) changed.
    await emitter.directory();
    if (isOpaqueDir(path)) {
      // overlayfs marks every directory created over a whiteout as opaque; the marker only
      // matters when a directory with content was replaced.
      if (await lowersHaveNonEmptyDir(lowers, entryName)) await emitter.whiteout(entryName, Whiteout.opaque);
    }
    await walkUpper(emitter, lowers, entryName, path);
    emitter.leaveDirectory();
  }
}

/**
 * The fast path of {@link diffDirectories} for an overlay snapshot: writes the layer straight
 * from the overlay `upperdir`, whose entries are exactly the changes. A 0/0 character device
 * becomes a `.wh.<name>` whiteout, a directory with `trusted.overlay.opaque=y` gets
 * `.wh..wh..opq` when the `lowers` (top-most first, as in overlay's `lowerdir`) held a non-empty
 * directory there, and everything else is written as in {@link diffDirectories}. The lowers are
 * read only to decide that.
 *
 * Throws `failed-precondition` for upperdirs using overlay's redirect_dir or metacopy features
 * (diff the mounted trees instead), `invalid-argument` when `upperdir` is missing. Ends `out`
 * unless `options.end` is false.
 */
export async function diffOverlayUpper(
  lowers: readonly string[],
  upperdir: string,
  out: Writable,
  options: DiffOptions = {},
): Promise<DiffResult> {
  await checkDirectory(upperdir, "upperdir");
  const emitter = new Emitter(out);
  await walkUpper(emitter, lowers, "", upperdir);
  return emitter.finish(options.end ?? true);
}

/** The OCI layer media types by compression (image-spec `media-types.md`). */
const LAYER_MEDIA_TYPES: Readonly<Record<Compression, string>> = {
  gzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  none: "application/vnd.oci.image.layer.v1.tar",
};

/**
 * One side of {@link writeDiff}: a directory path, or mounts as a snapshotter returns them. An
 * absent lower side is the empty tree.
 */
export type DiffSide = string | readonly Mount[];

/** Options of {@link writeDiff}. */
export interface WriteDiffOptions {
  /** Layer compression; default gzip. */
  readonly compression?: Compression;
  /** Compression level (see `compressStream`). */
  readonly level?: number;
  /** Labels for the committed blob, besides `containerd.io/uncompressed` which is always set. */
  readonly labels?: Readonly<Record<string, string>>;
  /** The content ingest ref; default a random `diff-…` ref. */
  readonly ref?: string;
  /** The descriptor's media type; default the OCI layer type for the compression. */
  readonly mediaType?: string;
}

/** What {@link writeDiff} stored: the compressed layer's descriptor and its diffID. */
export interface WriteDiffResult {
  readonly descriptor: Descriptor;
  readonly diffId: Digest;
}

function option(mount: Mount, key: string): string | undefined {
  const prefix = `${key}=`;
  return mount.options.find((o) => o.startsWith(prefix))?.slice(prefix.length);
}

function isBind(mount: Mount): boolean {
  return mount.type === "bind" || mount.options.includes("bind") || mount.options.includes("rbind");
}

/** The directories an overlay or bind mount stacks, top-most first; undefined for anything else. */
function layerDirs(mounts: readonly Mount[]): string[] | undefined {
  if (mounts.length !== 1) return undefined;
  const m = mounts[0] as Mount;
  if (isBind(m)) return [m.source];
  if (m.type !== "overlay") return undefined;
  const dirs: string[] = [];
  const upper = option(m, "upperdir");
  if (upper !== undefined) dirs.push(upper);
  const lowerdir = option(m, "lowerdir");
  if (lowerdir !== undefined) dirs.push(...lowerdir.split(":").filter((d) => d !== ""));
  for (const o of m.options) if (o.startsWith("lowerdir+=")) dirs.push(o.slice("lowerdir+=".length));
  return dirs;
}

/** Read-only form of mounts for the double walk: an overlay's upperdir becomes its top lowerdir. */
function readOnly(mounts: readonly Mount[]): Mount[] {
  return mounts.map((m) => {
    if (m.type === "overlay") {
      const dirs = layerDirs([m]) ?? [];
      if (dirs.length === 1) return { type: "bind", source: dirs[0] as string, options: ["rbind", "ro"] };
      return { type: "overlay", source: "overlay", options: ["ro", `lowerdir=${dirs.join(":")}`] };
    }
    return { ...m, options: [...m.options.filter((o) => o !== "rw"), "ro"] };
  });
}

/** A directory holding the tree of one side: the path itself, a bind source, or a temporary mount. */
async function sideDirectory(side: DiffSide, scratch: string, name: string): Promise<string> {
  if (typeof side === "string") return side;
  const dirs = layerDirs(side);
  if (dirs?.length === 1 && side.length === 1) return dirs[0] as string;
  const target = join(scratch, name);
  await mkdir(target);
  mountAll(readOnly(side), target);
  return target;
}

function sameDirs(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Computes the diff between `lower` (absent: empty) and `upper`, compresses it and commits it to
 * `store` through `store.writer()`, with the `containerd.io/uncompressed` label set to the diffID
 * (and `options.labels`). Returns the compressed blob's descriptor and the diffID.
 *
 * When `upper` is an overlay mount whose lower directories are exactly `lower`'s, the upperdir is
 * read directly ({@link diffOverlayUpper}); otherwise both sides are walked
 * ({@link diffDirectories}), mounting them read-only under a temporary directory when they are
 * not plain directories or bind mounts (that needs root), and unmounting before returning.
 *
 * An identical blob already in the store is not an error: its labels are updated and its
 * descriptor returned. Throws `invalid-argument` for missing roots or bad options, and whatever
 * the store throws.
 */
export async function writeDiff(
  store: ContentStore,
  lower: DiffSide | undefined,
  upper: DiffSide,
  options: WriteDiffOptions = {},
): Promise<WriteDiffResult> {
  const compression = options.compression ?? "gzip";
  const compressor = compressStream(compression, options.level === undefined ? {} : { level: options.level });
  const ref = options.ref ?? `diff-${randomBytes(12).toString("hex")}`;
  let scratch: string | undefined;
  const writer = await store.writer({ ref });
  let committed = false;
  try {
    const tarStream = new PassThrough({ highWaterMark: 1 << 20 });
    let compressedSize = 0;
    const sink = pipeline(tarStream, compressor, async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) {
        await writer.write(chunk);
        compressedSize += chunk.length;
      }
    });
    let diff: Promise<DiffResult>;
    const upperDirs = typeof upper === "string" ? undefined : layerDirs(upper);
    const upperMount = typeof upper === "string" ? undefined : upper[0];
    const lowerDirs = lower === undefined ? [] : typeof lower === "string" ? [lower] : layerDirs(lower);
    if (
      upperMount?.type === "overlay" &&
      option(upperMount, "upperdir") !== undefined &&
      upperDirs !== undefined &&
      lowerDirs !== undefined &&
      sameDirs(upperDirs.slice(1), lowerDirs)
    ) {
      diff = diffOverlayUpper(lowerDirs, upperDirs[0] as string, tarStream);
    } else {
      const needsMount = [lower, upper].some(
        (s) => s !== undefined && typeof s !== "string" && layerDirs(s)?.length !== 1,
      );
      if (needsMount) scratch = await mkdtemp(join(tmpdir(), "berth-diff-"));
      const lowerDir = lower === undefined ? undefined : await sideDirectory(lower, scratch ?? "", "lower");
      const upperDir = await sideDirectory(upper, scratch ?? "", "upper");
      diff = diffDirectories(lowerDir, upperDir, tarStream);
    }
    // Both sides must settle before anything is cleaned up; the first failure wins.
    const [diffResult, sinkResult] = await Promise.allSettled([
      diff.catch((err: unknown) => {
        tarStream.destroy(err as Error);
        throw err;
      }),
      sink,
    ]);
    if (diffResult.status === "rejected") throw diffResult.reason;
    if (sinkResult.status === "rejected") throw sinkResult.reason;
    const { diffId } = diffResult.value;
    const labels = { ...options.labels, [Labels.Uncompressed]: diffId };
    const digest = writer.digest();
    try {
      await writer.commit(compressedSize, undefined, { labels });
      committed = true;
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      committed = true;
      await store.update(
        { digest, labels },
        Object.keys(labels).map((k) => `labels.${k}`),
      );
    }
    return {
      descriptor: {
        mediaType: options.mediaType ?? LAYER_MEDIA_TYPES[compression],
        digest,
        size: compressedSize,
      },
      diffId,
    };
  } finally {
    if (!committed) {
      await writer.close().catch(() => {});
      await store.abort(ref).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
    if (scratch !== undefined) {
      unmountRecursive(scratch, { detach: true });
      await rm(scratch, { recursive: true, force: true });
    }
  }
}
