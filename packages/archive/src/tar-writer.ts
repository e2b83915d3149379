/** What {@link encodeTar} writes for one entry. Everything but `name` and `type` is optional. */
export interface TarWriteEntry {
  /** The name exactly as it should appear in the archive (not cleaned: tests use hostile names). */
  readonly name: string;
  readonly type: "file" | "link" | "symlink" | "char-device" | "block-device" | "directory" | "fifo";
  /** Permission bits; default 0o755 for directories, 0o777 for symlinks, 0o644 otherwise. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly content?: Uint8Array | string;
  readonly linkname?: string;
  /** Seconds since the epoch; default 1704067200 (2024-01-01T00:00:00Z). */
  readonly mtime?: number;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Written as `SCHILY.xattr.<name>` PAX records, values as raw bytes. */
  readonly xattrs?: Readonly<Record<string, Uint8Array | string>>;
  /** Extra raw PAX records (e.g. a `path` that differs from the ustar name). */
  readonly pax?: Readonly<Record<string, Uint8Array | string>>;
}

const TYPE_FLAGS: Readonly<Record<TarWriteEntry["type"], string>> = {
  file: "0",
  link: "1",
  symlink: "2",
  "char-device": "3",
  "block-device": "4",
  directory: "5",
  fifo: "6",
};

const DEFAULT_MTIME = 1704067200;

/**
 * Encodes entries as an uncompressed POSIX (ustar + PAX) tar, in the given order, ending with the
 * two zero blocks. Names and link targets longer than the ustar fields, or not plain ASCII, go
 * into PAX `path`/`linkpath` records. Used by tests to build ordinary and hostile layers; it does
 * not validate names on purpose.
 *
 * @internal
 */
export function encodeTar(entries: readonly TarWriteEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const content = entry.type === "file" ? Buffer.from(entry.content ?? "") : Buffer.alloc(0);
    const pax = new Map<string, Buffer>();
    const name = Buffer.from(entry.name);
    const linkname = Buffer.from(entry.linkname ?? "");
    if (name.length > 100 || !isAscii(name)) pax.set("path", name);
    if (linkname.length > 100 || !isAscii(linkname)) pax.set("linkpath", linkname);
    for (const [key, value] of Object.entries(entry.xattrs ?? {})) {
      pax.set(`SCHILY.xattr.${key}`, Buffer.from(value));
    }
    for (const [key, value] of Object.entries(entry.pax ?? {})) pax.set(key, Buffer.from(value));
    if (pax.size > 0) {
      const body = encodePax(pax);
      parts.push(header({ name: "PaxHeader", flag: "x", size: body.length, mode: 0o644 }), pad(body));
    }
    parts.push(
      header({
        name: pax.has("path") ? "" : entry.name,
        flag: TYPE_FLAGS[entry.type],
        size: content.length,
        mode: entry.mode ?? (entry.type === "directory" ? 0o755 : entry.type === "symlink" ? 0o777 : 0o644),
        uid: entry.uid ?? 0,
        gid: entry.gid ?? 0,
        mtime: entry.mtime ?? DEFAULT_MTIME,
        linkname: pax.has("linkpath") ? "" : (entry.linkname ?? ""),
        devmajor: entry.devmajor ?? 0,
        devminor: entry.devminor ?? 0,
      }),
      pad(content),
    );
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function isAscii(bytes: Buffer): boolean {
  for (const b of bytes) if (b === 0 || b > 0x7e) return false;
  return true;
}

function pad(data: Buffer): Buffer {
  const rest = data.length % 512;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(512 - rest)]);
}

function encodePax(records: Map<string, Buffer>): Buffer {
  const out: Buffer[] = [];
  for (const [key, value] of records) {
    const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
    // The length prefix counts itself, so find the fixed point.
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length = String(length).length + body.length;
    out.push(Buffer.from(String(length)), body);
  }
  return Buffer.concat(out);
}

interface RawHeader {
  readonly name: string;
  readonly flag: string;
  readonly size: number;
  readonly mode: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtime?: number;
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
}

function header(h: RawHeader): Buffer {
  const block = Buffer.alloc(512);
  block.write(h.name, 0, 100, "utf8");
  octal(block, 100, 8, h.mode);
  octal(block, 108, 8, h.uid ?? 0);
  octal(block, 116, 8, h.gid ?? 0);
  octal(block, 124, 12, h.size);
  octal(block, 136, 12, h.mtime ?? DEFAULT_MTIME);
  block.write(h.flag, 156, 1, "latin1");
  block.write(h.linkname ?? "", 157, 100, "utf8");
  block.write("ustar\0", 257, 6, "latin1");
  block.write("00", 263, 2, "latin1");
  block.write((h.uid ?? 0) === 0 ? "root" : "", 265, 32, "latin1");
  block.write((h.gid ?? 0) === 0 ? "root" : "", 297, 32, "latin1");
  octal(block, 329, 8, h.devmajor ?? 0);
  octal(block, 337, 8, h.devminor ?? 0);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
  return block;
}

function octal(block: Buffer, off: number, len: number, value: number): void {
  block.write(`${value.toString(8).padStart(len - 1, "0")}\0`, off, len, "latin1");
}
