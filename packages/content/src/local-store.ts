import { createHash, randomBytes } from "node:crypto";
import { constants, fstatSync, statSync } from "node:fs";
import {
  chmod,
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import {
  alreadyExists,
  failedPrecondition,
  internal,
  invalidArgument,
  isInvalidArgument,
  isNotFound,
  notFound,
  unavailable,
} from "@berth/errdefs";
import { type FileLock, fsyncDir, lockFile, tryLockFile } from "@berth/sys";
import { DigestAlgorithm, Digester, parseDigest } from "./digest.js";
import { type FieldAdaptor, labelField, matchFilters, parseFilters } from "./filters.js";
import type {
  CommitOptions,
  ContentStore,
  ContentWriter,
  Digest,
  Info,
  ReaderAt,
  Status,
  WriterOptions,
} from "./types.js";

/** Options of {@link createLocalContentStore}. */
export interface LocalContentStoreOptions {
  /**
   * Permission bits of committed blob files: `0o444` (the default; blobs are immutable, and a
   * stray write fails loudly) or `0o644`.
   */
  readonly blobMode?: 0o444 | 0o644;
}

/** The local store: a {@link ContentStore} over a directory, plus where that directory is. */
export interface LocalContentStore extends ContentStore {
  /** The absolute root directory the store was created on. */
  readonly root: string;
}

/** containerd's limit on the length of one label (key plus value). */
const maxLabelSize = 4096;
/** Chunk size for rehashing ingest data and copying. */
const chunkSize = 1 << 20;
const dirMode = 0o700;
const fileMode = 0o600;

function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String(err.code) : undefined;
}

/**
 * Validates labels the way containerd does: non-empty keys, and key plus value at most 4096
 * characters. Throws `invalid-argument` naming the offending key.
 */
function validateLabels(labels: Readonly<Record<string, string>>, what: string): void {
  for (const [key, value] of Object.entries(labels)) {
    if (key === "") throw invalidArgument(`${what}: label key must not be empty`);
    if (typeof value !== "string")
      throw invalidArgument(`${what}: label ${JSON.stringify(key)} must be a string`);
    if (key.length + value.length > maxLabelSize) {
      throw invalidArgument(
        `${what}: label ${JSON.stringify(key)} is longer than ${maxLabelSize} characters (key plus value)`,
      );
    }
  }
}

function withoutEmpty(labels: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (v !== "") out[k] = v;
  return out;
}

function validateRef(ref: unknown): asserts ref is string {
  if (typeof ref !== "string" || ref === "") throw invalidArgument("ingest ref must be a non-empty string");
}

function validateSize(size: number, what: string): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw invalidArgument(`${what}: size must be a non-negative integer, got ${String(size)}`);
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

function parseDate(text: string | undefined, fallback: Date): Date {
  if (text === undefined) return fallback;
  const d = new Date(text.trim());
  return Number.isNaN(d.getTime()) ? fallback : d;
}

/**
 * Writes `data` to `path` so that readers, in this or another process, see either the old or the
 * new content, never a mix, and the new content survives a crash once this resolves: temp file in
 * the same directory, fsync, rename over, fsync the directory.
 */
async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  try {
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, fileMode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** Feeds `length` bytes of `fh`, from offset 0, into a new digester. */
async function hashFile(fh: FileHandle, length: number, algorithm: DigestAlgorithm): Promise<Digester> {
  const digester = new Digester(algorithm);
  const buf = Buffer.allocUnsafe(Math.min(chunkSize, Math.max(length, 1)));
  let pos = 0;
  while (pos < length) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) break;
    digester.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return digester;
}

/**
 * The {@link FieldAdaptor} of a blob's {@link Info} for {@link matchFilters}: fields `digest`,
 * `size` (decimal) and `labels.<key>`.
 */
export function infoFieldAdaptor(info: Info): FieldAdaptor {
  return (fieldpath) => {
    const [head, ...rest] = fieldpath;
    switch (head) {
      case "digest":
        return rest.length === 0 ? info.digest : undefined;
      case "size":
        return rest.length === 0 ? String(info.size) : undefined;
      case "labels":
        return labelField(info.labels, rest);
      default:
        return undefined;
    }
  };
}

/**
 * The {@link FieldAdaptor} of an ingest's {@link Status}: fields `ref`, `expected` (when set),
 * `total` and `offset` (decimal).
 */
export function statusFieldAdaptor(status: Status): FieldAdaptor {
  return (fieldpath) => {
    if (fieldpath.length !== 1) return undefined;
    switch (fieldpath[0]) {
      case "ref":
        return status.ref;
      case "expected":
        return status.expected;
      case "total":
        return String(status.total);
      case "offset":
        return String(status.offset);
      default:
        return undefined;
    }
  };
}

interface LabelsRecord {
  readonly labels: Record<string, string>;
  readonly updatedAt?: string;
}

/**
 * Opens (creating if needed, directories 0700) a content store rooted at `root`:
 *
 * - `blobs/<alg>/<hex>`: committed blobs, read-only files (see {@link LocalContentStoreOptions}).
 * - `ingest/<sha256 of ref>/`: one directory per active ingest, with `ref`, `data`, `startedat`,
 *   `updatedat`, `total`, `expected` and a `lock` file that the writer holds with `flock(2)`.
 * - `labels/<alg>/<hex>.json`: labels of a blob, replaced atomically; `labels/lock` serializes
 *   label changes, commits and deletes across processes.
 *
 * Several stores, in one process or many, may share a root. The factory is async because it
 * creates the directories; it throws the underlying file-system error if it cannot. The store
 * holds no open files between calls; readers and writers it returns own theirs until closed.
 */
export async function createLocalContentStore(
  root: string,
  options: LocalContentStoreOptions = {},
): Promise<LocalContentStore> {
  if (typeof root !== "string" || root === "")
    throw invalidArgument("content store root must be a non-empty path");
  const blobMode = options.blobMode ?? 0o444;
  if (blobMode !== 0o444 && blobMode !== 0o644) {
    throw invalidArgument(
      `content store blobMode must be 0o444 or 0o644, got 0o${(blobMode as number).toString(8)}`,
    );
  }
  const store = new LocalStore(root, blobMode);
  await store.init();
  return store;
}

class LocalStore implements LocalContentStore {
  constructor(
    readonly root: string,
    readonly blobMode: number,
  ) {}

  async init(): Promise<void> {
    for (const dir of [
      this.root,
      join(this.root, "ingest"),
      ...Object.values(DigestAlgorithm).flatMap((alg) => [
        join(this.root, "blobs", alg),
        join(this.root, "labels", alg),
      ]),
    ]) {
      await mkdir(dir, { recursive: true, mode: dirMode });
    }
  }

  blobPath(digest: Digest): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, "blobs", algorithm, hex);
  }

  labelsPath(digest: Digest): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, "labels", algorithm, `${hex}.json`);
  }

  ingestDir(ref: string): string {
    // Hashing the ref gives a fixed-length, path-safe name whatever the ref contains ("/", "..").
    return join(this.root, "ingest", createHash("sha256").update(ref).digest("hex"));
  }

  /** Runs `fn` holding the store-wide labels lock (waiting for other processes if needed). */
  async withLabelsLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = await lockFile(join(this.root, "labels", "lock"));
    try {
      return await fn();
    } finally {
      lock.release();
    }
  }

  async readLabels(digest: Digest): Promise<LabelsRecord | undefined> {
    const text = await readText(this.labelsPath(digest));
    if (text === undefined) return undefined;
    try {
      const parsed = JSON.parse(text) as Partial<LabelsRecord>;
      return {
        labels: { ...(parsed.labels ?? {}) },
        ...(parsed.updatedAt ? { updatedAt: parsed.updatedAt } : {}),
      };
    } catch (cause) {
      throw internal(`labels of content ${digest} in ${this.labelsPath(digest)} are not valid JSON`, {
        cause,
      });
    }
  }

  /** Writes (or, when empty, removes) the labels of `digest`. Call with the labels lock held. */
  async writeLabels(digest: Digest, labels: Readonly<Record<string, string>>, now: Date): Promise<void> {
    const path = this.labelsPath(digest);
    if (Object.keys(labels).length === 0) {
      await rm(path, { force: true });
      return;
    }
    await writeFileAtomic(path, JSON.stringify({ labels, updatedAt: now.toISOString() }));
  }

  async info(digest: Digest): Promise<Info> {
    const path = this.blobPath(digest);
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(path);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") throw notFound(`content ${digest}: not found`, { cause: err });
      throw err;
    }
    const record = await this.readLabels(digest);
    return {
      digest,
      size: st.size,
      createdAt: st.mtime,
      updatedAt: parseDate(record?.updatedAt, st.mtime),
      labels: record?.labels ?? {},
    };
  }

  async update(
    info: { readonly digest: Digest; readonly labels: Readonly<Record<string, string>> },
    fieldpaths?: readonly string[],
  ): Promise<Info> {
    const { digest } = info;
    this.blobPath(digest);
    const given = info.labels ?? {};
    validateLabels(given, `update of content ${digest}`);
    for (const fp of fieldpaths ?? []) {
      if (fp !== "labels" && !(fp.startsWith("labels.") && fp.length > "labels.".length)) {
        throw invalidArgument(
          `update of content ${digest}: cannot update field ${JSON.stringify(fp)}; only "labels" and "labels.<key>"`,
        );
      }
    }
    await this.withLabelsLock(async () => {
      await this.info(digest);
      let next: Record<string, string>;
      if (fieldpaths === undefined || fieldpaths.length === 0) {
        next = withoutEmpty(given);
      } else {
        next = { ...((await this.readLabels(digest))?.labels ?? {}) };
        for (const fp of fieldpaths) {
          if (fp === "labels") {
            next = withoutEmpty(given);
            continue;
          }
          // As containerd does, everything after "labels." is the key, dots included.
          const key = fp.slice("labels.".length);
          const value = Object.hasOwn(given, key) ? given[key] : undefined;
          if (value === undefined || value === "") delete next[key];
          else next[key] = value;
        }
      }
      await this.writeLabels(digest, next, new Date());
    });
    return this.info(digest);
  }

  async walk(fn: (info: Info) => void | Promise<void>, filters?: readonly string[]): Promise<void> {
    const parsed = parseFilters(filters);
    for (const algorithm of Object.values(DigestAlgorithm)) {
      const dir = join(this.root, "blobs", algorithm);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (errnoCode(err) === "ENOENT") continue;
        throw err;
      }
      names.sort();
      for (const name of names) {
        const digest = `${algorithm}:${name}`;
        let info: Info;
        try {
          info = await this.info(digest);
        } catch (err) {
          // Not a blob name (a foreign file), or deleted by someone else since readdir: skip.
          if (isNotFound(err) || isInvalidArgument(err)) continue;
          throw err;
        }
        if (matchFilters(parsed, infoFieldAdaptor(info))) await fn(info);
      }
    }
  }

  async delete(digest: Digest): Promise<void> {
    const path = this.blobPath(digest);
    await this.withLabelsLock(async () => {
      try {
        await unlink(path);
      } catch (err) {
        if (errnoCode(err) === "ENOENT") throw notFound(`content ${digest}: not found`, { cause: err });
        throw err;
      }
      await fsyncDir(dirname(path));
      await rm(this.labelsPath(digest), { force: true });
    });
  }

  async readerAt(digest: Digest): Promise<ReaderAt> {
    const path = this.blobPath(digest);
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDONLY);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") throw notFound(`content ${digest}: not found`, { cause: err });
      throw err;
    }
    const { size } = await fh.stat();
    return new LocalReader(fh, size, digest);
  }

  async statusOfDir(dir: string, wantRef?: string): Promise<Status | undefined> {
    const ref = await readText(join(dir, "ref"));
    // A directory without "ref" is being created (or its creator crashed): not an ingest yet.
    if (ref === undefined || (wantRef !== undefined && ref !== wantRef)) return undefined;
    let dataStat: Awaited<ReturnType<typeof stat>>;
    try {
      dataStat = await stat(join(dir, "data"));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
    const [startedText, updatedText, totalText, expectedText] = await Promise.all(
      ["startedat", "updatedat", "total", "expected"].map((f) => readText(join(dir, f))),
    );
    const startedAt = parseDate(startedText, dataStat.birthtime);
    const updatedRecorded = parseDate(updatedText, startedAt);
    const updatedAt = new Date(Math.max(dataStat.mtime.getTime(), updatedRecorded.getTime()));
    const total = Number.parseInt(totalText ?? "0", 10);
    const expected = expectedText?.trim();
    return {
      ref,
      offset: dataStat.size,
      total: Number.isSafeInteger(total) && total > 0 ? total : 0,
      ...(expected ? { expected } : {}),
      startedAt,
      updatedAt,
    };
  }

  async status(ref: string): Promise<Status> {
    validateRef(ref);
    const status = await this.statusOfDir(this.ingestDir(ref), ref);
    if (status === undefined) throw notFound(`no active ingest for ref ${JSON.stringify(ref)}`);
    return status;
  }

  async listStatuses(filters?: readonly string[]): Promise<Status[]> {
    const parsed = parseFilters(filters);
    const ingest = join(this.root, "ingest");
    const out: Status[] = [];
    for (const name of await readdir(ingest)) {
      let status: Status | undefined;
      try {
        status = await this.statusOfDir(join(ingest, name));
      } catch (err) {
        // Removed by a commit or abort in another process while we read it.
        if (errnoCode(err) === "ENOENT" || errnoCode(err) === "ENOTDIR") continue;
        throw err;
      }
      if (status !== undefined && matchFilters(parsed, statusFieldAdaptor(status))) out.push(status);
    }
    return out.sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  }

  /**
   * Takes the ingest lock of `ref` without waiting. Returns undefined when the ingest directory
   * does not exist and `create` is false; throws `unavailable` when another writer holds it.
   */
  lockIngest(ref: string, create: boolean): Promise<FileLock | undefined> {
    return this.lockIngestAt(ref, this.ingestDir(ref), create);
  }

  async lockIngestAt(ref: string, dir: string, create: boolean): Promise<FileLock | undefined> {
    const lockPath = join(dir, "lock");
    // A commit or abort elsewhere may remove the directory, lock file included, between our
    // open() and flock(): we would then hold a lock on an unlinked file that nobody else sees.
    // So after locking, check the path still names the file we locked; if not, start over.
    for (let attempt = 0; attempt < 20; attempt++) {
      if (create) await mkdir(dir, { recursive: true, mode: dirMode });
      let lock: FileLock | undefined;
      try {
        if (!create) statSync(dir);
        lock = tryLockFile(lockPath);
      } catch (err) {
        if (errnoCode(err) === "ENOENT") {
          if (!create) return undefined;
          continue;
        }
        throw err;
      }
      if (lock === undefined) {
        throw unavailable(`ingest ref ${JSON.stringify(ref)} is locked: another writer holds it`);
      }
      const held = fstatSync(lock.fd);
      let current: ReturnType<typeof statSync> | undefined;
      try {
        current = statSync(lockPath);
      } catch {
        current = undefined;
      }
      if (current !== undefined && current.ino === held.ino && current.dev === held.dev) return lock;
      lock.release();
    }
    throw unavailable(`ingest ref ${JSON.stringify(ref)} keeps disappearing while being locked; retry`);
  }

  async abort(ref: string): Promise<void> {
    validateRef(ref);
    const dir = this.ingestDir(ref);
    const lock = await this.lockIngest(ref, false);
    if (lock === undefined) throw notFound(`no active ingest for ref ${JSON.stringify(ref)}`);
    try {
      const recorded = await readText(join(dir, "ref"));
      // Removing the directory (lock file included) while holding the lock: anyone who opened the
      // old lock file will notice the swap and retry (see lockIngestAt).
      await rm(dir, { recursive: true, force: true });
      if (recorded !== ref) throw notFound(`no active ingest for ref ${JSON.stringify(ref)}`);
    } finally {
      lock.release();
    }
  }

  async writer(options: WriterOptions): Promise<ContentWriter> {
    const { ref } = options;
    validateRef(ref);
    const total = options.total ?? 0;
    validateSize(total, `writer for ref ${JSON.stringify(ref)}`);
    const expected = options.expected || undefined;
    let algorithm: DigestAlgorithm = DigestAlgorithm.SHA256;
    if (expected !== undefined) {
      algorithm = parseDigest(expected).algorithm;
      if (await this.exists(expected)) {
        throw alreadyExists(`content ${expected} already exists (writer for ref ${JSON.stringify(ref)})`);
      }
    }
    const dir = this.ingestDir(ref);
    const lock = await this.lockIngestAt(ref, dir, true);
    if (lock === undefined) throw internal(`ingest lock for ref ${JSON.stringify(ref)} not created`);
    let fh: FileHandle | undefined;
    try {
      const now = new Date();
      const recordedRef = await readText(join(dir, "ref"));
      let startedAt = now;
      let recordedTotal = 0;
      let recordedExpected: Digest | undefined;
      if (recordedRef !== undefined && recordedRef !== ref) {
        throw internal(
          `ingest ${dir} records ref ${JSON.stringify(recordedRef)}, not ${JSON.stringify(ref)}`,
        );
      }
      if (recordedRef === undefined) {
        // New ingest, or one whose creator died before finishing this: start from nothing. The
        // "ref" file goes last, so a directory with it is always complete.
        await writeFile(join(dir, "data"), "", { mode: fileMode });
        await writeFile(join(dir, "startedat"), now.toISOString(), { mode: fileMode });
        await writeFile(join(dir, "updatedat"), now.toISOString(), { mode: fileMode });
        await writeFile(join(dir, "total"), String(total), { mode: fileMode });
        await writeFile(join(dir, "expected"), expected ?? "", { mode: fileMode });
        await writeFileAtomic(join(dir, "ref"), ref);
        recordedTotal = total;
        recordedExpected = expected;
      } else {
        const status = await this.statusOfDir(dir, ref);
        startedAt = status?.startedAt ?? now;
        recordedTotal = status?.total ?? 0;
        recordedExpected = status?.expected;
        if (total > 0 && recordedTotal > 0 && total !== recordedTotal) {
          throw failedPrecondition(
            `writer for ref ${JSON.stringify(ref)}: total ${total} differs from the ingest's recorded total ${recordedTotal}`,
          );
        }
        if (expected !== undefined && recordedExpected !== undefined && expected !== recordedExpected) {
          throw failedPrecondition(
            `writer for ref ${JSON.stringify(ref)}: expected ${expected} differs from the ingest's recorded ${recordedExpected}`,
          );
        }
        if (total > 0 && recordedTotal === 0) {
          await writeFile(join(dir, "total"), String(total), { mode: fileMode });
          recordedTotal = total;
        }
        if (expected !== undefined && recordedExpected === undefined) {
          await writeFile(join(dir, "expected"), expected, { mode: fileMode });
          recordedExpected = expected;
        }
      }
      if (recordedExpected !== undefined) algorithm = parseDigest(recordedExpected).algorithm;
      const dataPath = join(dir, "data");
      const existing = await stat(dataPath).catch((err: unknown) => {
        if (errnoCode(err) === "ENOENT") return undefined;
        throw err;
      });
      if (existing !== undefined && existing.nlink > 1) {
        // A crash between linking a committed blob and removing its ingest leaves "data" as a
        // second name of the blob. Writing through it would change a committed blob, so drop
        // that name and start the ingest over.
        await unlink(dataPath);
      } else if (existing !== undefined && (existing.mode & 0o777) !== fileMode) {
        // A crash between commit's chmod and its link leaves a read-only "data"; make it ours again.
        await chmod(dataPath, fileMode);
      }
      fh = await open(dataPath, constants.O_RDWR | constants.O_CREAT, fileMode);
      const st = await fh.stat();
      // The real length is the truth: a crash or a truncation can leave less than was written,
      // and the digest must cover exactly the bytes that are there.
      const digester = await hashFile(fh, st.size, algorithm);
      return new LocalWriter(this, {
        ref,
        dir,
        lock,
        fh,
        digester,
        offset: st.size,
        total: recordedTotal,
        expected: recordedExpected,
        startedAt,
      });
    } catch (err) {
      await fh?.close().catch(() => {});
      lock.release();
      throw err;
    }
  }

  async exists(digest: Digest): Promise<boolean> {
    try {
      await stat(this.blobPath(digest));
      return true;
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return false;
      throw err;
    }
  }
}

class LocalReader implements ReaderAt {
  #closed = false;
  constructor(
    readonly fh: FileHandle,
    readonly size: number,
    readonly digest: Digest,
  ) {}

  async readAt(buffer: Uint8Array, offset: number): Promise<number> {
    if (this.#closed) throw failedPrecondition(`reader of content ${this.digest} is closed`);
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw invalidArgument(
        `read of content ${this.digest}: offset must be a non-negative integer, got ${offset}`,
      );
    }
    if (offset >= this.size || buffer.length === 0) return 0;
    let done = 0;
    const want = Math.min(buffer.length, this.size - offset);
    while (done < want) {
      const { bytesRead } = await this.fh.read(buffer, done, want - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  stream(start = 0): Readable {
    if (this.#closed) throw failedPrecondition(`reader of content ${this.digest} is closed`);
    if (!Number.isSafeInteger(start) || start < 0) {
      throw invalidArgument(
        `stream of content ${this.digest}: start must be a non-negative integer, got ${start}`,
      );
    }
    // createReadStream cannot express an empty range (end must be >= 0 and >= start).
    if (start >= this.size) return Readable.from([]);
    // The stream reads the already-open file by position, so it keeps working if the blob is
    // deleted meanwhile, and does not close the handle: close() does.
    return this.fh.createReadStream({ start, end: this.size - 1, autoClose: false, emitClose: true });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.fh.close();
  }
}

interface WriterState {
  readonly ref: string;
  readonly dir: string;
  readonly lock: FileLock;
  readonly fh: FileHandle;
  readonly digester: Digester;
  readonly offset: number;
  readonly total: number;
  readonly expected: Digest | undefined;
  readonly startedAt: Date;
}

class LocalWriter implements ContentWriter {
  readonly ref: string;
  readonly #store: LocalStore;
  readonly #dir: string;
  readonly #lock: FileLock;
  readonly #fh: FileHandle;
  #digester: Digester;
  #offset: number;
  readonly #total: number;
  readonly #expected: Digest | undefined;
  readonly #startedAt: Date;
  #updatedAt: Date;
  #closed = false;
  // Operations run one at a time even if a caller does not await: the offset and the running
  // digest must follow the file exactly.
  #queue: Promise<unknown> = Promise.resolve();

  constructor(store: LocalStore, state: WriterState) {
    this.#store = store;
    this.ref = state.ref;
    this.#dir = state.dir;
    this.#lock = state.lock;
    this.#fh = state.fh;
    this.#digester = state.digester;
    this.#offset = state.offset;
    this.#total = state.total;
    this.#expected = state.expected;
    this.#startedAt = state.startedAt;
    this.#updatedAt = new Date();
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => {
      if (this.#closed) throw failedPrecondition(`writer for ref ${JSON.stringify(this.ref)} is closed`);
      return fn();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      const start = this.#offset;
      let done = 0;
      try {
        while (done < chunk.byteLength) {
          const { bytesWritten } = await this.#fh.write(chunk, done, chunk.byteLength - done, start + done);
          done += bytesWritten;
        }
      } catch (err) {
        // Cut off a partial write so that the file again holds exactly what the digest covers.
        await this.#fh.truncate(start).catch(() => {});
        throw err;
      }
      this.#digester.update(chunk);
      this.#offset += chunk.byteLength;
      this.#updatedAt = new Date();
    });
  }

  digest(): Digest {
    return this.#digester.digest();
  }

  status(): Promise<Status> {
    return Promise.resolve({
      ref: this.ref,
      offset: this.#offset,
      total: this.#total,
      ...(this.#expected !== undefined ? { expected: this.#expected } : {}),
      startedAt: this.#startedAt,
      updatedAt: this.#updatedAt,
    });
  }

  truncate(size: number): Promise<void> {
    return this.#serial(async () => {
      validateSize(size, `truncate of ref ${JSON.stringify(this.ref)}`);
      if (size > this.#offset) {
        throw invalidArgument(
          `truncate of ref ${JSON.stringify(this.ref)}: size ${size} is beyond the offset ${this.#offset}`,
        );
      }
      await this.#fh.truncate(size);
      this.#digester = await hashFile(this.#fh, size, this.#digester.algorithm);
      this.#offset = size;
      this.#updatedAt = new Date();
    });
  }

  commit(size: number, expected?: Digest, options?: CommitOptions): Promise<Digest> {
    return this.#serial(async () => {
      const what = `commit of ref ${JSON.stringify(this.ref)}`;
      validateSize(size, what);
      const want = expected || this.#expected;
      const algorithm = want !== undefined ? parseDigest(want).algorithm : this.#digester.algorithm;
      const labels = options?.labels ?? {};
      validateLabels(labels, what);

      const st = await this.#fh.stat();
      if (st.size !== this.#offset) {
        // Someone changed the ingest behind the lock's back; trust only what is on disk.
        this.#digester = await hashFile(this.#fh, st.size, this.#digester.algorithm);
        this.#offset = st.size;
      }
      const wantSize = size > 0 ? size : this.#total;
      if (wantSize > 0 && st.size !== wantSize) {
        throw failedPrecondition(`${what}: unexpected size ${st.size}, expected ${wantSize}`);
      }
      const actual =
        algorithm === this.#digester.algorithm
          ? this.#digester.digest()
          : (await hashFile(this.#fh, st.size, algorithm)).digest();
      if (want !== undefined && actual !== want) {
        throw failedPrecondition(`${what}: unexpected digest ${actual}, expected ${want}`);
      }

      const now = new Date();
      await this.#fh.chmod(this.#store.blobMode);
      await this.#fh.utimes(now, now);
      // The data must be on disk before its name is: otherwise a crash could leave a blob whose
      // name promises bytes that were never written.
      await this.#fh.sync();
      const blobPath = this.#store.blobPath(actual);
      const dataPath = join(this.#dir, "data");
      await this.#store.withLabelsLock(async () => {
        try {
          // link(2) rather than rename(2): it fails with EEXIST instead of replacing, so a blob
          // that is already there is never rewritten, even by a racing commit elsewhere.
          await link(dataPath, blobPath);
        } catch (err) {
          if (errnoCode(err) === "EEXIST") {
            await this.#finish();
            throw alreadyExists(`content ${actual} already exists (${what})`, { cause: err });
          }
          // The ingest stays usable (and resumable by a non-root writer) after, e.g., EXDEV.
          await this.#fh.chmod(fileMode).catch(() => {});
          throw err;
        }
        await fsyncDir(dirname(blobPath));
        // Replace whatever labels a crashed delete may have left behind.
        await this.#store.writeLabels(actual, withoutEmpty(labels), now);
      });
      await this.#finish();
      return actual;
    });
  }

  /** Removes the ingest (holding the lock while doing so) and releases everything. */
  async #finish(): Promise<void> {
    this.#closed = true;
    try {
      await this.#fh.close().catch(() => {});
      await unlink(join(this.#dir, "data")).catch(() => {});
      await rm(this.#dir, { recursive: true, force: true });
    } finally {
      this.#lock.release();
    }
  }

  close(): Promise<void> {
    if (this.#closed) return this.#queue.then(() => {});
    const run = this.#queue.then(async () => {
      if (this.#closed) return;
      this.#closed = true;
      try {
        await writeFile(join(this.#dir, "updatedat"), this.#updatedAt.toISOString(), {
          mode: fileMode,
        }).catch(() => {});
        await this.#fh.close();
      } finally {
        this.#lock.release();
      }
    });
    this.#queue = run.catch(() => {});
    return run;
  }
}
