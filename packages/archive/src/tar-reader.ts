import { invalidArgument, notImplemented } from "@berth/errdefs";

/** The kinds of tar entry {@link TarReader} returns; other header types are consumed or rejected. */
export const TarEntryType = {
  File: "file",
  Link: "link",
  Symlink: "symlink",
  CharDevice: "char-device",
  BlockDevice: "block-device",
  Directory: "directory",
  Fifo: "fifo",
} as const;

/** One of the values of {@link TarEntryType}. */
export type TarEntryType = (typeof TarEntryType)[keyof typeof TarEntryType];

/**
 * One tar entry's header after PAX and GNU long-name records were merged into it. Names are as
 * stored in the archive (not cleaned); xattr values are raw bytes.
 */
export interface TarHeader {
  readonly name: string;
  readonly type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Bytes of content that follow the header (regular files only; 0 otherwise). */
  readonly size: number;
  /** Modification time in seconds since the epoch, with a fraction when PAX gave one. */
  readonly mtime: number;
  /** Access time in seconds, when the archive recorded one (PAX `atime`). */
  readonly atime: number | undefined;
  /** Symlink target, or the archive path a hard link refers to. */
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  /** `SCHILY.xattr.<name>` PAX records, name → raw value. */
  readonly xattrs: ReadonlyMap<string, Buffer>;
}

const BLOCK = 512;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A pull-based reader of a tar stream (POSIX ustar, PAX and GNU long names), written for layer
 * apply: PAX values stay bytes (tar libraries that decode them as UTF-8 corrupt binary xattrs such
 * as `security.capability`), and every byte of the source passes through `onChunk`, including what
 * follows the end-of-archive marker, so a digest over the whole stream can be computed.
 *
 * Usage: `for (let h; (h = await reader.next()); ) { for await (const chunk of reader.body()) … }`.
 * Content not read with {@link TarReader.body} is skipped by the next call to {@link TarReader.next}.
 *
 * Errors: `invalid-argument` for a malformed or truncated archive (the message names the offset),
 * `not-implemented` for GNU sparse files and multi-volume archives.
 *
 * @internal
 */
export class TarReader {
  readonly #source: AsyncIterator<Uint8Array>;
  readonly #onChunk: (chunk: Buffer) => void;
  #buffered: Buffer[] = [];
  #bufferedBytes = 0;
  #offset = 0; // archive offset of the next byte handed out
  #remaining = 0; // content bytes of the current entry not handed out yet
  #padding = 0; // padding after the current entry's content
  #ended = false;
  #sourceDone = false;

  constructor(source: AsyncIterable<Uint8Array>, onChunk: (chunk: Buffer) => void) {
    this.#source = source[Symbol.asyncIterator]();
    this.#onChunk = onChunk;
  }

  /** Archive offset of the next unread byte. */
  get offset(): number {
    return this.#offset;
  }

  /** Returns the next entry's header, or undefined at the end of the archive. */
  async next(): Promise<TarHeader | undefined> {
    if (this.#ended) return undefined;
    await this.#skip(this.#remaining + this.#padding);
    this.#remaining = 0;
    this.#padding = 0;

    let pax = new Map<string, Buffer>();
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const start = this.#offset;
      const block = await this.#read(BLOCK, true);
      // Go's archive/tar and GNU tar both accept an archive that ends at a block boundary without
      // the two zero blocks; many layer writers omit them.
      if (block === undefined || isZero(block)) {
        this.#ended = true;
        return undefined;
      }
      verifyChecksum(block, start);
      const flag = String.fromCharCode(block[156] ?? 0);
      const size = parseNumeric(block, 124, 12, "size", start);
      switch (flag) {
        case "x":
          pax = parsePax(await this.#readPadded(size, start), start);
          continue;
        case "g":
          // Global PAX headers are ignored, as containerd does: layer writers do not use them for
          // anything a file system can hold.
          await this.#readPadded(size, start);
          continue;
        case "L":
          longName = cString(await this.#readPadded(size, start), start, "GNU long name");
          continue;
        case "K":
          longLink = cString(await this.#readPadded(size, start), start, "GNU long link name");
          continue;
        case "V":
          await this.#readPadded(size, start);
          continue;
        case "S":
          throw notImplemented(`tar entry at offset ${start}: GNU sparse files are not supported`);
        case "M":
          throw notImplemented(`tar entry at offset ${start}: multi-volume archives are not supported`);
      }
      if (pax.has("GNU.sparse.major") || pax.has("GNU.sparse.name") || pax.has("GNU.sparse.map")) {
        throw notImplemented(`tar entry at offset ${start}: PAX sparse files are not supported`);
      }
      const header = this.#header(block, flag, start, pax, longName, longLink);
      const contentSize = paxNumber(pax, "size", start) ?? size;
      // Only regular files carry content that the extractor reads; the bytes of any other type are
      // still skipped so the stream stays aligned.
      this.#remaining = contentSize;
      this.#padding = (BLOCK - (contentSize % BLOCK)) % BLOCK;
      return header;
    }
  }

  /** Yields the current entry's content; each chunk is only valid until the next one is requested. */
  async *body(): AsyncGenerator<Buffer> {
    while (this.#remaining > 0) {
      const chunk = await this.#take(this.#remaining);
      this.#remaining -= chunk.length;
      yield chunk;
    }
  }

  /**
   * Reads the source to its end, so that `onChunk` has seen every byte (trailing zero blocks and
   * anything after them). Call it after {@link TarReader.next} returned undefined.
   */
  async drain(): Promise<void> {
    this.#buffered = [];
    this.#bufferedBytes = 0;
    while (await this.#pull()) {
      this.#buffered = [];
      this.#bufferedBytes = 0;
    }
  }

  /** Gives up on the source (on error or abort); safe to call more than once. */
  async close(): Promise<void> {
    if (this.#sourceDone) return;
    this.#sourceDone = true;
    await this.#source.return?.();
  }

  #header(
    block: Buffer,
    flag: string,
    start: number,
    pax: Map<string, Buffer>,
    longName: string | undefined,
    longLink: string | undefined,
  ): TarHeader {
    const type = entryType(flag, start);
    const posix = block.toString("latin1", 257, 263) === "ustar\0";
    let name = paxString(pax, "path", start) ?? longName;
    if (name === undefined) {
      name = field(block, 0, 100, start, "name");
      // The ustar prefix field only exists in POSIX archives; old GNU archives keep atime and ctime
      // there instead.
      const prefix = posix ? field(block, 345, 155, start, "prefix") : "";
      if (prefix !== "") name = `${prefix}/${name}`;
    }
    const linkname =
      paxString(pax, "linkpath", start) ?? longLink ?? field(block, 157, 100, start, "linkname");
    const xattrs = new Map<string, Buffer>();
    for (const [key, value] of pax) {
      if (key.startsWith("SCHILY.xattr.")) xattrs.set(key.slice("SCHILY.xattr.".length), value);
    }
    const mtime = paxTime(pax, "mtime", start) ?? parseNumeric(block, 136, 12, "mtime", start);
    return {
      name,
      type,
      mode: parseNumeric(block, 100, 8, "mode", start) & 0o7777,
      uid: paxNumber(pax, "uid", start) ?? parseNumeric(block, 108, 8, "uid", start),
      gid: paxNumber(pax, "gid", start) ?? parseNumeric(block, 116, 8, "gid", start),
      size:
        type === TarEntryType.File
          ? (paxNumber(pax, "size", start) ?? parseNumeric(block, 124, 12, "size", start))
          : 0,
      mtime,
      atime: paxTime(pax, "atime", start),
      linkname,
      devmajor: parseNumeric(block, 329, 8, "devmajor", start),
      devminor: parseNumeric(block, 337, 8, "devminor", start),
      xattrs,
    };
  }

  /** Reads `size` bytes plus their padding to the next block; returns the `size` bytes. */
  async #readPadded(size: number, start: number): Promise<Buffer> {
    if (size > 1 << 24)
      throw invalidArgument(`tar entry at offset ${start}: extended header of ${size} bytes`);
    const data = size === 0 ? Buffer.alloc(0) : ((await this.#read(size, false)) as Buffer);
    await this.#skip((BLOCK - (size % BLOCK)) % BLOCK);
    return data;
  }

  /** Reads exactly `n` bytes; at a clean end of the source returns undefined when `eofOk`. */
  async #read(n: number, eofOk: boolean): Promise<Buffer | undefined> {
    while (this.#bufferedBytes < n) {
      if (!(await this.#pull())) {
        if (eofOk && this.#bufferedBytes === 0) return undefined;
        throw invalidArgument(`tar archive truncated at offset ${this.#offset + this.#bufferedBytes}`);
      }
    }
    const joined =
      this.#buffered.length === 1 ? (this.#buffered[0] as Buffer) : Buffer.concat(this.#buffered);
    const out = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.#buffered = rest.length > 0 ? [rest] : [];
    this.#bufferedBytes = rest.length;
    this.#offset += n;
    return out;
  }

  /** Hands out up to `max` (> 0) bytes without copying. */
  async #take(max: number): Promise<Buffer> {
    if (this.#bufferedBytes === 0 && !(await this.#pull())) {
      throw invalidArgument(`tar archive truncated at offset ${this.#offset}`);
    }
    const first = this.#buffered[0] as Buffer;
    let out: Buffer;
    if (first.length <= max) {
      this.#buffered.shift();
      out = first;
    } else {
      out = first.subarray(0, max);
      this.#buffered[0] = first.subarray(max);
    }
    this.#bufferedBytes -= out.length;
    this.#offset += out.length;
    return out;
  }

  async #skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) left -= (await this.#take(left)).length;
  }

  async #pull(): Promise<boolean> {
    if (this.#sourceDone) return false;
    for (;;) {
      const result = await this.#source.next();
      if (result.done) {
        this.#sourceDone = true;
        return false;
      }
      const value = result.value;
      if (value.length === 0) continue;
      const chunk = Buffer.isBuffer(value)
        ? value
        : Buffer.from(value.buffer, value.byteOffset, value.length);
      this.#onChunk(chunk);
      this.#buffered.push(chunk);
      this.#bufferedBytes += chunk.length;
      return true;
    }
  }
}

function entryType(flag: string, start: number): TarEntryType {
  switch (flag) {
    case "0":
    case "\0":
    case "7": // contiguous file: a regular file everywhere that matters
      return TarEntryType.File;
    case "1":
      return TarEntryType.Link;
    case "2":
      return TarEntryType.Symlink;
    case "3":
      return TarEntryType.CharDevice;
    case "4":
      return TarEntryType.BlockDevice;
    case "5":
      return TarEntryType.Directory;
    case "6":
      return TarEntryType.Fifo;
    default:
      throw invalidArgument(
        `tar entry at offset ${start}: unsupported type flag ${JSON.stringify(flag)} (0x${flag.charCodeAt(0).toString(16)})`,
      );
  }
}

function isZero(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function verifyChecksum(block: Buffer, start: number): void {
  const stored = parseNumeric(block, 148, 8, "checksum", start);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  // Some old writers summed signed chars; Go and GNU tar accept either.
  if (stored !== unsigned && stored !== signed) {
    throw invalidArgument(`tar header at offset ${start}: bad checksum (not a tar archive, or corrupt)`);
  }
}

/** Parses an octal (NUL/space padded) or GNU base-256 numeric field. */
function parseNumeric(block: Buffer, off: number, len: number, what: string, start: number): number {
  const first = block[off] as number;
  if (first & 0x80) {
    // GNU base-256: the remaining bits of the field, big-endian; the top bit set means negative
    // when bit 6 is set too, which no valid size, owner or mode is.
    if (first & 0x40) throw invalidArgument(`tar header at offset ${start}: negative ${what}`);
    let value = BigInt(first & 0x3f);
    for (let i = 1; i < len; i++) value = (value << 8n) | BigInt(block[off + i] as number);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw invalidArgument(`tar header at offset ${start}: ${what} out of range`);
    }
    return Number(value);
  }
  const text = block
    .toString("latin1", off, off + len)
    .replace(/[\0 ]+$/, "")
    .replace(/^[ \0]+/, "");
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) {
    throw invalidArgument(
      `tar header at offset ${start}: ${what} field ${JSON.stringify(text)} is not octal`,
    );
  }
  return Number.parseInt(text, 8);
}

/** A NUL-terminated UTF-8 string field. */
function field(block: Buffer, off: number, len: number, start: number, what: string): string {
  const slice = block.subarray(off, off + len);
  const nul = slice.indexOf(0);
  return decode(nul === -1 ? slice : slice.subarray(0, nul), start, what);
}

function cString(data: Buffer, start: number, what: string): string {
  const nul = data.indexOf(0);
  return decode(nul === -1 ? data : data.subarray(0, nul), start, what);
}

function decode(bytes: Uint8Array, start: number, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch (cause) {
    // Linux names are bytes; berth handles them as strings, and silently replacing bytes would
    // write a different name than the layer holds.
    throw invalidArgument(`tar entry at offset ${start}: ${what} is not valid UTF-8`, { cause });
  }
}

/** Parses PAX extended header records: `<length> <key>=<value>\n`, values kept as bytes. */
function parsePax(data: Buffer, start: number): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) break;
    const lengthText = data.toString("latin1", pos, space);
    const length = Number.parseInt(lengthText, 10);
    if (!/^[0-9]+$/.test(lengthText) || length <= space - pos + 1 || pos + length > data.length) {
      // A trailing run of NULs is padding some writers leave; anything else is corrupt.
      if (data.subarray(pos).every((b) => b === 0)) break;
      throw invalidArgument(`tar PAX header at offset ${start}: malformed record length`);
    }
    const record = data.subarray(space + 1, pos + length);
    if (record[record.length - 1] !== 0x0a) {
      throw invalidArgument(`tar PAX header at offset ${start}: record does not end with a newline`);
    }
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw invalidArgument(`tar PAX header at offset ${start}: record without a key`);
    const key = decode(record.subarray(0, eq), start, "PAX key");
    records.set(key, Buffer.from(record.subarray(eq + 1, record.length - 1)));
    pos += length;
  }
  return records;
}

function paxString(pax: Map<string, Buffer>, key: string, start: number): string | undefined {
  const value = pax.get(key);
  if (value === undefined) return undefined;
  // A NUL inside a PAX path would be cut short by every system call: the name the kernel sees is
  // not the name the archive claims (Go's archive/tar rejects it too).
  if (value.includes(0)) throw invalidArgument(`tar PAX ${key} at offset ${start} contains a NUL byte`);
  return decode(value, start, `PAX ${key}`);
}

function paxNumber(pax: Map<string, Buffer>, key: string, start: number): number | undefined {
  const value = pax.get(key);
  if (value === undefined) return undefined;
  const text = value.toString("latin1");
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n)) {
    throw invalidArgument(`tar PAX ${key} at offset ${start}: ${JSON.stringify(text)} is not a number`);
  }
  return n;
}

function paxTime(pax: Map<string, Buffer>, key: string, start: number): number | undefined {
  const value = pax.get(key);
  if (value === undefined) return undefined;
  const text = value.toString("latin1");
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(text)) {
    throw invalidArgument(`tar PAX ${key} at offset ${start}: ${JSON.stringify(text)} is not a time`);
  }
  return Number(text);
}
