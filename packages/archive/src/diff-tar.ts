/**
 * The streaming tar writer behind the diff functions: POSIX ustar headers with PAX extended headers
 * where ustar cannot hold a value (long or non-ASCII names, xattrs, large ids or sizes), written
 * deterministically, while computing the sha256 (the diffID) and size of everything written.
 *
 * @internal
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { posix } from "node:path";
import type { Writable } from "node:stream";
import { aborted, failedPrecondition } from "@berth/errdefs";

/** The entry types a layer diff writes. */
export type DiffEntryType =
  | "file"
  | "link"
  | "symlink"
  | "char-device"
  | "block-device"
  | "directory"
  | "fifo";

/** One tar header as the diff writes it. @internal */
export interface DiffEntry {
  /** Path relative to the layer root, without leading `/` or `./`; directories without trailing `/`. */
  readonly name: string;
  readonly type: DiffEntryType;
  /** Permission bits including setuid/setgid/sticky (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Content size of regular files; 0 for everything else. */
  readonly size: number;
  /** Whole seconds since the epoch (containerd truncates too; sub-second times are not kept). */
  readonly mtime: number;
  /** Symlink target, or the earlier archive name a hard link refers to. */
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Extended attributes, sorted by name, values as raw bytes (`SCHILY.xattr.<name>`). */
  readonly xattrs?: readonly (readonly [string, Buffer])[];
}

/** The ustar typeflag of each entry type. @internal */
export const TYPE_FLAGS: Readonly<Record<DiffEntryType, string>> = {
  file: "0",
  link: "1",
  symlink: "2",
  "char-device": "3",
  "block-device": "4",
  directory: "5",
  fifo: "6",
};

// Largest values of the ustar numeric fields (7 and 11 octal digits).
const MAX_ID = 0o7777777;
const MAX_SIZE = 0o77777777777;

/** Whether `value` can stand in a ustar field as is (no NUL, nothing above 0x7e). @internal */
export function isPlainAscii(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c > 0x7e) return false;
  }
  return true;
}

/** One PAX extended-header record, `"<len> <key>=<value>\n"`. @internal */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  // "%d %s=%s\n" where the length counts its own digits: iterate to the fixed point.
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

function octal(block: Buffer, offset: number, width: number, value: number): void {
  block.write(`${value.toString(8).padStart(width - 1, "0")}\0`, offset, width, "latin1");
}

/** The fields of one ustar header block. @internal */
export interface RawHeader {
  readonly name: string;
  readonly flag: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtime: number;
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  /** Owner names (empty when absent, as berth's diffs write them). */
  readonly uname?: string;
  readonly gname?: string;
}

/** Encodes one 512-byte ustar header block with its checksum. @internal */
export function encodeHeader(h: RawHeader): Buffer {
  const block = Buffer.alloc(512);
  block.write(h.name, 0, 100, "utf8");
  octal(block, 100, 8, h.mode);
  octal(block, 108, 8, h.uid);
  octal(block, 116, 8, h.gid);
  octal(block, 124, 12, h.size);
  octal(block, 136, 12, h.mtime);
  block.write(h.flag, 156, 1, "latin1");
  block.write(h.linkname, 157, 100, "utf8");
  block.write("ustar\u000000", 257, 8, "latin1");
  if (h.uname !== undefined) block.write(h.uname, 265, 32, "latin1");
  if (h.gname !== undefined) block.write(h.gname, 297, 32, "latin1");
  octal(block, 329, 8, h.devmajor);
  octal(block, 337, 8, h.devminor);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
  return block;
}

/**
 * Encodes the header block(s) of one entry: an optional PAX `x` header carrying the records ustar
 * cannot hold, then the ustar header. PAX records are sorted by key, so equal entries always
 * encode to equal bytes.
 *
 * @internal
 */
export function encodeEntryHeader(entry: DiffEntry): Buffer {
  const name = entry.type === "directory" ? `${entry.name}/` : entry.name;
  const linkname = entry.linkname ?? "";
  const records: [string, Buffer][] = [];
  const fitsName = Buffer.byteLength(name) <= 100 && isPlainAscii(name);
  const fitsLink = Buffer.byteLength(linkname) <= 100 && isPlainAscii(linkname);
  if (!fitsName) records.push(["path", Buffer.from(name)]);
  if (!fitsLink) records.push(["linkpath", Buffer.from(linkname)]);
  if (entry.uid > MAX_ID) records.push(["uid", Buffer.from(String(entry.uid))]);
  if (entry.gid > MAX_ID) records.push(["gid", Buffer.from(String(entry.gid))]);
  if (entry.size > MAX_SIZE) records.push(["size", Buffer.from(String(entry.size))]);
  const mtimeFits = entry.mtime >= 0 && entry.mtime <= MAX_SIZE;
  if (!mtimeFits) records.push(["mtime", Buffer.from(String(entry.mtime))]);
  for (const [key, value] of entry.xattrs ?? []) records.push([`SCHILY.xattr.${key}`, value]);
  records.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

  const parts: Buffer[] = [];
  if (records.length > 0) {
    const body = Buffer.concat(records.map(([key, value]) => paxRecord(key, value)));
    // Go's archive/tar names the extended header `<dir>/PaxHeaders.0/<base>`; any fixed name works.
    const paxName = posix.join(posix.dirname(entry.name), "PaxHeaders.0", posix.basename(entry.name));
    parts.push(
      encodeHeader({
        name: Buffer.from(paxName).subarray(0, 100).toString("latin1"),
        flag: "x",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: body.length,
        mtime: 0,
        linkname: "",
        devmajor: 0,
        devminor: 0,
      }),
      padded(body),
    );
  }
  parts.push(
    encodeHeader({
      name: fitsName ? name : "",
      flag: TYPE_FLAGS[entry.type],
      mode: entry.mode & 0o7777,
      uid: Math.min(entry.uid, MAX_ID),
      gid: Math.min(entry.gid, MAX_ID),
      size: Math.min(entry.size, MAX_SIZE),
      mtime: mtimeFits ? entry.mtime : 0,
      linkname: fitsLink ? linkname : "",
      devmajor: entry.devmajor ?? 0,
      devminor: entry.devminor ?? 0,
    }),
  );
  return Buffer.concat(parts);
}

/** `data` followed by zeros up to a multiple of 512 bytes. @internal */
export function padded(data: Buffer): Buffer {
  const rest = data.length % 512;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(512 - rest)]);
}

/**
 * Writes a tar to a Writable with backpressure, hashing every byte. The writer does not own `out`
 * beyond ending it in {@link TarStreamWriter.finish} when asked to.
 *
 * @internal
 */
export class TarStreamWriter {
  readonly #out: Writable;
  readonly #hash = createHash("sha256");
  #size = 0;

  constructor(out: Writable) {
    this.#out = out;
  }

  async #write(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    if (this.#out.destroyed || this.#out.writableEnded) {
      throw aborted("layer diff: the output stream was closed before the diff was complete");
    }
    this.#hash.update(chunk);
    this.#size += chunk.length;
    if (!this.#out.write(chunk)) {
      const closed = once(this.#out, "close").then(() => {
        throw aborted("layer diff: the output stream was closed before the diff was complete");
      });
      await Promise.race([once(this.#out, "drain"), closed]);
    }
  }

  /** Writes one entry; for regular files `content` yields exactly `entry.size` bytes. */
  async entry(entry: DiffEntry, content?: AsyncIterable<Buffer>): Promise<void> {
    await this.#write(encodeEntryHeader(entry));
    if (entry.type !== "file" || entry.size === 0) return;
    let written = 0;
    for await (const chunk of content ?? []) {
      if (written + chunk.length > entry.size) {
        throw failedPrecondition(
          `layer diff: ${entry.name} grew while it was being read (expected ${entry.size} bytes)`,
        );
      }
      await this.#write(chunk);
      written += chunk.length;
    }
    if (written !== entry.size) {
      throw failedPrecondition(
        `layer diff: ${entry.name} shrank while it was being read (${written} of ${entry.size} bytes)`,
      );
    }
    const rest = written % 512;
    if (rest !== 0) await this.#write(Buffer.alloc(512 - rest));
  }

  /** Writes the two zero blocks that end a tar, optionally ends `out`; returns digest and size. */
  async finish(end: boolean): Promise<{ readonly diffId: string; readonly size: number }> {
    await this.#write(Buffer.alloc(1024));
    // Not waiting for "finish": a Transform finishes only once its reader drained it, which is
    // the caller's pipeline to run.
    if (end) this.#out.end();
    return { diffId: `sha256:${this.#hash.digest("hex")}`, size: this.#size };
  }
}
