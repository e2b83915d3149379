import { createHash } from "node:crypto";
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  realpathSync,
  rmSync,
  type Stats,
  statSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { pipeline, Readable } from "node:stream";
import { BerthError, canceled, dataLoss, invalidArgument, notFound } from "@berth/errdefs";
import { makedev, mknod, SystemError, setXattr } from "@berth/sys";
import { decompressStream, detectCompression } from "./compression.js";
import { assertInRoot, cleanLayerPath, DirResolver, lstatOrUndefined } from "./path-safety.js";
import { TarEntryType, type TarHeader, TarReader } from "./tar-reader.js";
import { classifyWhiteout, Whiteout, type WhiteoutKind } from "./whiteout.js";

/** How a layer stream is compressed; `auto` looks at its first bytes (gzip and zstd magic). */
export const LayerCompression = {
  None: "none",
  Gzip: "gzip",
  Zstd: "zstd",
  Auto: "auto",
} as const;

/** One of the values of {@link LayerCompression}. */
export type LayerCompression = (typeof LayerCompression)[keyof typeof LayerCompression];

/** What {@link applyLayer} does with OCI whiteouts. */
export const WhiteoutMode = {
  /**
   * Remove what the whiteouts name, from a directory that holds the parent layers' tree (a plain
   * directory, a native snapshot, or a mounted overlay).
   */
  Oci: "oci",
  /**
   * Write overlayfs markers instead, straight into an overlay upperdir whose lower layers are not
   * visible: `.wh.<name>` becomes a 0/0 character device `<name>`, `.wh..wh..opq` the xattr
   * `trusted.overlay.opaque=y` on its directory. Needs root (mknod, trusted.* xattrs).
   */
  Overlay: "overlay",
} as const;

/** One of the values of {@link WhiteoutMode}. */
export type WhiteoutMode = (typeof WhiteoutMode)[keyof typeof WhiteoutMode];

/** Options of {@link applyLayer}. */
export interface ApplyOptions {
  /** Default `auto`. */
  readonly compression?: LayerCompression;
  /** Default `oci`. */
  readonly whiteouts?: WhiteoutMode;
  /** The layer's diffID (`sha256:<hex>` of the uncompressed tar, from the image config's `rootfs.diff_ids`). */
  readonly expectedDiffId?: string;
  /** Keep the applying process's uid/gid on everything instead of the archive's (rootless unpack). */
  readonly noSameOwner?: boolean;
  /** Aborting stops the apply between reads and rejects with `canceled`. */
  readonly signal?: AbortSignal;
}

/** What {@link applyLayer} resolves with. */
export interface ApplyResult {
  /** `sha256:<hex>` of the uncompressed tar stream, every byte of it. */
  readonly diffId: string;
  /** Uncompressed bytes read. */
  readonly size: number;
  /** Tar entries read (files, directories, links, devices, whiteouts...). */
  readonly entries: number;
}

/**
 * Applies one OCI layer (a tar changeset, image-spec `layer.md`) onto the directory `root`: regular
 * files, directories, symlinks, hard links, character and block devices and fifos with the owners
 * (unless `noSameOwner`), modes (setuid/setgid/sticky included), times and `SCHILY.xattr.*`
 * extended attributes of the archive. Whiteouts follow the spec: `.wh.<name>` deletes `<name>` of
 * the lower layers and `.wh..wh..opq` everything the lower layers have in its directory, while
 * what this same layer adds is never hidden by its own whiteouts, in whichever order they come.
 * An entry replaces what is at its path, except that a directory onto a directory merges (the
 * layer's attributes win). Directory times are set last, after all their children were written.
 * The diffID is computed over the uncompressed stream while applying.
 *
 * Path safety: every entry lands inside `root`. Leading `/` is stripped from names (as containerd
 * does); a NUL byte or a `..` component in a name or hard-link target is an error. Parent
 * directories are looked up component by component without following symlinks out of `root`: a
 * symlink (planted by an earlier layer or earlier in this one) is followed *inside* `root`, with
 * absolute targets taken relative to it — the containment containerd and umoci apply. The final
 * component is never followed: an entry replaces a symlink rather than writing through it, owners,
 * modes and times are set with `fchown`/`fchmod`/`futimes` on what was just created or with the
 * `l*` calls, and hard links may only name an existing non-directory inside `root` (a hard link to
 * a symlink links the symlink itself). `trusted.overlay.*` xattrs in the archive are dropped: they
 * are overlayfs metadata, and honouring them from a layer would let it forge whiteouts and
 * redirects in an upperdir. Reserved `.wh..wh.*` names other than the opaque marker are ignored.
 * Nothing outside `root` is created, changed or removed, provided nothing else changes `root`
 * while the apply runs (the caller owns it exclusively, e.g. an unpacking snapshot).
 *
 * The file system calls are synchronous and short, one entry at a time between reads of the
 * stream. Measured on an ext4 VM disk, creating a file (~0.5 ms per open(O_CREAT)) dominates, and
 * 16 concurrent asynchronous creates were no faster than sequential synchronous ones, so the
 * simpler order-preserving form is kept. GNU sparse entries are not supported.
 *
 * Errors: `invalid-argument` naming the entry for a hostile or malformed entry (escaping or NUL
 * names, bad whiteouts, a hard link to nothing or to a directory, a parent that is a file), or a
 * malformed or truncated tar; `data-loss` for corrupt compressed data and when the stream's digest
 * is not `expectedDiffId`; `canceled` when `signal` fires; `not-found` when `root` does not exist;
 * system errors as their codes, prefixed with the entry. After any error `root` is left partly
 * applied: the caller discards it (removes the snapshot). The stream is consumed to its end on
 * success and destroyed on failure.
 */
export async function applyLayer(
  root: string,
  stream: Readable,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  const realRoot = checkRoot(root);
  const { signal } = options;
  if (signal?.aborted) {
    stream.destroy();
    throw canceled(`apply layer onto ${root}: aborted`, { cause: signal.reason });
  }
  const onAbort = () =>
    stream.destroy(canceled(`apply layer onto ${root}: aborted`, { cause: signal?.reason }));
  signal?.addEventListener("abort", onAbort, { once: true });

  const hash = createHash("sha256");
  let size = 0;
  let entries = 0;
  let source: Readable | undefined;
  let reader: TarReader | undefined;
  try {
    source = await decompressed(stream, options.compression ?? LayerCompression.Auto);
    reader = new TarReader(source, (chunk) => {
      hash.update(chunk);
      size += chunk.length;
    });
    const applier = new Applier(realRoot, options);
    for (;;) {
      const header = await reader.next();
      if (header === undefined) break;
      entries++;
      await applier.apply(header, reader);
    }
    // Trailing blocks after the end marker are part of the layer blob's diffID too.
    await reader.drain();
    applier.finish();
  } catch (err) {
    stream.destroy();
    source?.destroy();
    await reader?.close().catch(() => {});
    if (signal?.aborted) throw canceled(`apply layer onto ${root}: aborted`, { cause: signal.reason });
    throw normalizeError(err, root);
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  const diffId = `sha256:${hash.digest("hex")}`;
  if (options.expectedDiffId !== undefined && options.expectedDiffId !== diffId) {
    throw dataLoss(
      `layer applied onto ${root}: uncompressed digest ${diffId} does not match the expected diffID ${options.expectedDiffId}`,
    );
  }
  return { diffId, size, entries };
}

function checkRoot(root: string): string {
  let real: string;
  try {
    real = realpathSync(root);
  } catch (cause) {
    throw notFound(`apply layer: root directory ${root} does not exist`, { cause });
  }
  if (!statSync(real).isDirectory()) throw invalidArgument(`apply layer: root ${root} is not a directory`);
  return real;
}

/** The uncompressed stream; with `auto`, the first bytes decide (and are replayed). */
async function decompressed(stream: Readable, compression: LayerCompression): Promise<Readable> {
  let input: Readable = stream;
  let kind = compression;
  if (kind === LayerCompression.Auto) {
    const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const head: Buffer[] = [];
    let headBytes = 0;
    // Four bytes tell gzip (1f 8b) and zstd (28 b5 2f fd) from a plain tar.
    while (headBytes < 4) {
      const next = await iterator.next();
      if (next.done) break;
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
      head.push(chunk);
      headBytes += chunk.length;
    }
    const start = Buffer.concat(head);
    kind = detectCompression(start);
    input = Readable.from(
      (async function* replay() {
        if (start.length > 0) yield start;
        try {
          for (;;) {
            const next = await iterator.next();
            if (next.done) return;
            yield next.value;
          }
        } finally {
          await iterator.return?.();
        }
      })(),
      { objectMode: false },
    );
  }
  if (kind === LayerCompression.None) return input;
  const decompressor = decompressStream(kind);
  // Errors of the input reach the decompressor, and so the reader.
  pipeline(input, decompressor, () => {});
  return decompressor;
}

function normalizeError(err: unknown, root: string): unknown {
  if (err instanceof BerthError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code.startsWith("Z_")) {
    return dataLoss(`layer applied onto ${root}: gzip data is corrupt: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return err;
}

/** A node:fs error (negative `errno`) or a @berth/sys error, named after the entry. */
function entryError(err: unknown, entry: string): unknown {
  let sys: SystemError | undefined;
  if (err instanceof SystemError) sys = err;
  else if (!(err instanceof BerthError)) {
    const e = err as NodeJS.ErrnoException;
    if (typeof e?.errno === "number" && typeof e.syscall === "string") {
      sys = new SystemError({
        syscall: e.syscall,
        errno: Math.abs(e.errno),
        ...(e.path === undefined ? {} : { path: e.path }),
      });
    }
  }
  if (sys === undefined) return err;
  return new BerthError(sys.code, `layer entry ${JSON.stringify(entry)}: ${sys.message}`, { cause: err });
}

const ENOTSUP = 95;
const EPERM = 1;

interface DirTimes {
  readonly atime: number;
  readonly mtime: number;
}

/** The state of one apply: what this layer added, and directory times to set at the end. */
class Applier {
  readonly #root: string;
  readonly #resolver: DirResolver;
  readonly #overlay: boolean;
  readonly #sameOwner: boolean;
  /** Real paths this layer created (whiteouts never hide them). */
  readonly #added = new Set<string>();
  /** Real directories with something this layer created below them. */
  readonly #addedAncestors = new Set<string>();
  /** Overlay whiteout devices this layer made (a directory replacing one must be opaque). */
  readonly #overlayWhiteouts = new Set<string>();
  readonly #dirTimes = new Map<string, DirTimes>();

  constructor(root: string, options: ApplyOptions) {
    this.#root = root;
    this.#resolver = new DirResolver(root);
    this.#overlay = (options.whiteouts ?? WhiteoutMode.Oci) === WhiteoutMode.Overlay;
    this.#sameOwner = options.noSameOwner !== true;
  }

  async apply(header: TarHeader, reader: TarReader): Promise<void> {
    try {
      await this.#apply(header, reader);
    } catch (err) {
      throw entryError(err, header.name);
    }
  }

  /** Sets the recorded directory times; directories removed since are skipped. */
  finish(): void {
    for (const [path, times] of this.#dirTimes) {
      try {
        lutimesSync(path, times.atime, times.mtime);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
  }

  async #apply(header: TarHeader, reader: TarReader): Promise<void> {
    const name = header.name;
    const components = cleanLayerPath(name);
    if (components.length === 0) {
      // "./" carries the root directory's own attributes; anything else cannot replace the root.
      if (header.type !== TarEntryType.Directory) {
        throw invalidArgument(
          `layer entry ${JSON.stringify(name)}: a ${header.type} cannot replace the root`,
        );
      }
      this.#directoryAttributes(this.#root, header);
      return;
    }
    const base = components[components.length - 1] as string;
    const parentComponents = components.slice(0, -1);
    const whiteout = classifyWhiteout(base, name);
    if (whiteout !== undefined) {
      this.#whiteout(whiteout, parentComponents, header);
      return;
    }

    const parent = this.#resolver.dir(parentComponents, name, true) as string;
    const path = `${parent}/${base}`;
    assertInRoot(this.#root, path, name);
    const linkTarget = header.type === TarEntryType.Link ? this.#hardlinkTarget(header, path) : undefined;

    const existing = lstatOrUndefined(path);
    let replacesWhiteout = false;
    if (existing !== undefined && !(existing.isDirectory() && header.type === TarEntryType.Directory)) {
      replacesWhiteout = this.#overlayWhiteouts.has(path);
      this.#remove(path, existing);
    }

    switch (header.type) {
      case TarEntryType.File:
        await this.#file(path, header, reader);
        break;
      case TarEntryType.Directory:
        if (existing === undefined || !existing.isDirectory()) {
          mkdirSync(path, 0o700);
          // `.wh.x` then `x/` in one layer: the new directory must not show the lower x's
          // children through overlayfs, which merges an upper directory with lower ones.
          if (replacesWhiteout) setXattr(path, Whiteout.overlayOpaqueXattr, "y");
        }
        this.#directoryAttributes(path, header);
        break;
      case TarEntryType.Symlink:
        symlinkSync(header.linkname, path);
        this.#attributes(path, header, false);
        break;
      case TarEntryType.Link:
        // link(2) does not follow a symlink target: the new name shares the symlink's own inode.
        linkSync(linkTarget as string, path);
        break;
      case TarEntryType.CharDevice:
      case TarEntryType.BlockDevice:
      case TarEntryType.Fifo: {
        const kind =
          header.type === TarEntryType.Fifo
            ? constants.S_IFIFO
            : header.type === TarEntryType.CharDevice
              ? constants.S_IFCHR
              : constants.S_IFBLK;
        const dev = header.type === TarEntryType.Fifo ? 0n : makedev(header.devmajor, header.devminor);
        mknod(path, kind | 0o600, dev);
        this.#attributes(path, header, true);
        break;
      }
    }
    this.#markAdded(path);
  }

  async #file(path: string, header: TarHeader, reader: TarReader): Promise<void> {
    // O_EXCL | O_NOFOLLOW: the path was just cleared, so anything there now (a symlink above all)
    // is an error rather than something to write through.
    const fd = openSync(
      path,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      for await (const chunk of reader.body()) {
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
      }
      if (this.#sameOwner) fchownSync(fd, header.uid, header.gid);
      // After chown, which clears setuid and setgid bits.
      fchmodSync(fd, header.mode);
      this.#xattrs(path, header, true);
      const [atime, mtime] = times(header);
      futimesSync(fd, atime, mtime);
    } finally {
      closeSync(fd);
    }
  }

  #directoryAttributes(path: string, header: TarHeader): void {
    if (this.#sameOwner) lchownSync(path, header.uid, header.gid);
    // A real directory here (created or lstat'ed just now), so chmod follows nothing.
    chmodSync(path, header.mode);
    this.#xattrs(path, header, true);
    const [atime, mtime] = times(header);
    this.#dirTimes.set(path, { atime, mtime });
  }

  /** Owner, mode (not for symlinks: Linux has no lchmod), xattrs and times of a non-file. */
  #attributes(path: string, header: TarHeader, chmod: boolean): void {
    if (this.#sameOwner) lchownSync(path, header.uid, header.gid);
    // Devices and fifos that mknod just made (the umask trimmed their mode); not symlinks.
    if (chmod) chmodSync(path, header.mode);
    this.#xattrs(path, header, false);
    const [atime, mtime] = times(header);
    lutimesSync(path, atime, mtime);
  }

  #xattrs(path: string, header: TarHeader, regularOrDir: boolean): void {
    for (const [key, value] of header.xattrs) {
      if (key.startsWith(Whiteout.overlayXattrPrefix)) continue;
      try {
        setXattr(path, key, value);
      } catch (err) {
        // As containerd: a file system without xattrs, and user.* on symlinks and devices (which
        // the kernel refuses), lose the attribute rather than the whole layer.
        if (err instanceof SystemError) {
          if (err.errno === ENOTSUP) continue;
          if (err.errno === EPERM && key.startsWith("user.") && !regularOrDir) continue;
        }
        throw err;
      }
    }
  }

  #hardlinkTarget(header: TarHeader, path: string): string {
    const name = header.name;
    const components = cleanLayerPath(header.linkname);
    if (components.length === 0) {
      throw invalidArgument(`layer entry ${JSON.stringify(name)}: hard link to the root directory`);
    }
    const parent = this.#resolver.dir(components.slice(0, -1), name, false);
    const target = parent === undefined ? undefined : `${parent}/${components[components.length - 1]}`;
    const st = target === undefined ? undefined : lstatOrUndefined(target);
    if (target === undefined || st === undefined) {
      throw invalidArgument(
        `layer entry ${JSON.stringify(name)}: hard link target ${JSON.stringify(header.linkname)} does not exist in the root`,
      );
    }
    assertInRoot(this.#root, target, name);
    if (st.isDirectory()) {
      throw invalidArgument(
        `layer entry ${JSON.stringify(name)}: hard link target ${JSON.stringify(header.linkname)} is a directory`,
      );
    }
    if (target === path) {
      throw invalidArgument(`layer entry ${JSON.stringify(name)}: hard link to itself`);
    }
    return target;
  }

  #whiteout(whiteout: WhiteoutKind, parentComponents: readonly string[], header: TarHeader): void {
    const name = header.name;
    if (whiteout.kind === "meta") return;
    // Overlay markers need their directory in the upperdir; removing needs nothing that is absent.
    const dir = this.#resolver.dir(parentComponents, name, this.#overlay || whiteout.kind === "opaque");
    if (dir === undefined) return;
    assertInRoot(this.#root, dir, name);
    if (whiteout.kind === "opaque") {
      if (this.#overlay) setXattr(dir, Whiteout.overlayOpaqueXattr, "y");
      else this.#clearLower(dir);
      return;
    }
    const path = `${dir}/${whiteout.target}`;
    const st = lstatOrUndefined(path);
    // image-spec: whiteouts apply only to lower layers; what this layer added stays (a directory it
    // merged into loses its lower children only).
    if (this.#added.has(path) || this.#addedAncestors.has(path)) {
      if (!this.#overlay && st?.isDirectory()) this.#clearLower(path);
      return;
    }
    if (this.#overlay) {
      if (st !== undefined) this.#remove(path, st);
      mknod(path, constants.S_IFCHR, 0n);
      if (this.#sameOwner) lchownSync(path, header.uid, header.gid);
      this.#overlayWhiteouts.add(path);
      return;
    }
    if (st !== undefined) this.#remove(path, st);
  }

  /** Removes everything below `dir` that this layer did not add (an opaque directory, OCI style). */
  #clearLower(dir: string): void {
    for (const child of readdirSync(dir)) {
      const path = `${dir}/${child}`;
      const st = lstatOrUndefined(path);
      if (st === undefined) continue;
      if (this.#added.has(path) || this.#addedAncestors.has(path)) {
        // A directory this layer merged into may still hold lower children.
        if (st.isDirectory()) this.#clearLower(path);
        continue;
      }
      this.#remove(path, st);
    }
  }

  #remove(path: string, st: Stats): void {
    assertInRoot(this.#root, path, path);
    if (path === this.#root) throw invalidArgument("layer apply: refusing to remove the root");
    // rm never follows symlinks, at the top or inside a tree.
    rmSync(path, { recursive: st.isDirectory(), force: true });
    this.#overlayWhiteouts.delete(path);
    if (st.isDirectory() || st.isSymbolicLink()) this.#resolver.invalidate();
    if (st.isDirectory()) {
      // Recorded directory times below a removed directory would be set through whatever takes
      // its place later, perhaps a symlink: forget them.
      const prefix = `${path}/`;
      for (const recorded of this.#dirTimes.keys()) {
        if (recorded === path || recorded.startsWith(prefix)) this.#dirTimes.delete(recorded);
      }
    }
  }

  #markAdded(path: string): void {
    this.#added.add(path);
    for (let dir = path.slice(0, path.lastIndexOf("/")); dir.length > this.#root.length; ) {
      if (this.#addedAncestors.has(dir)) break;
      this.#addedAncestors.add(dir);
      dir = dir.slice(0, dir.lastIndexOf("/"));
    }
  }
}

/** Access and modification times: atime is never earlier than mtime, as containerd sets them. */
function times(header: TarHeader): [number, number] {
  return [Math.max(header.atime ?? header.mtime, header.mtime), header.mtime];
}
