import { type DiffEntryType, encodeHeader, isPlainAscii, padded, paxRecord, TYPE_FLAGS } from "./diff-tar.js";

/** What {@link encodeTar} writes for one entry. Everything but `name` and `type` is optional. */
export interface TarWriteEntry {
  /** The name exactly as it should appear in the archive (not cleaned: tests use hostile names). */
  readonly name: string;
  readonly type: DiffEntryType;
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
    if (name.length > 100 || !isPlainAscii(entry.name)) pax.set("path", name);
    if (linkname.length > 100 || !isPlainAscii(entry.linkname ?? "")) pax.set("linkpath", linkname);
    for (const [key, value] of Object.entries(entry.xattrs ?? {})) {
      pax.set(`SCHILY.xattr.${key}`, Buffer.from(value));
    }
    for (const [key, value] of Object.entries(entry.pax ?? {})) pax.set(key, Buffer.from(value));
    if (pax.size > 0) {
      const body = Buffer.concat([...pax].map(([key, value]) => paxRecord(key, value)));
      parts.push(header({ name: "PaxHeader", flag: "x", size: body.length, mode: 0o644 }), padded(body));
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
      padded(content),
    );
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** The header of one entry, with this writer's defaults: owner root, the fixed mtime. */
function header(h: {
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
}): Buffer {
  const uid = h.uid ?? 0;
  const gid = h.gid ?? 0;
  return encodeHeader({
    name: h.name,
    flag: h.flag,
    size: h.size,
    mode: h.mode,
    uid,
    gid,
    mtime: h.mtime ?? DEFAULT_MTIME,
    linkname: h.linkname ?? "",
    devmajor: h.devmajor ?? 0,
    devminor: h.devminor ?? 0,
    uname: uid === 0 ? "root" : "",
    gname: gid === 0 ? "root" : "",
  });
}
