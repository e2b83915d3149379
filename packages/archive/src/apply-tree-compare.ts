import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { getXattr, listXattrs } from "@berth/sys";

/** One file system object as {@link snapshotTree} records it. */
export interface TreeEntry {
  readonly type: "file" | "directory" | "symlink" | "char-device" | "block-device" | "fifo" | "socket";
  /** Permission bits with setuid, setgid and sticky. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Regular files only. */
  readonly size?: number;
  /** `sha256:<hex>` of a regular file's content, when asked for. */
  readonly digest?: string;
  /** Symlink target. */
  readonly link?: string;
  /** `major:minor` of a device. */
  readonly rdev?: string;
  /** For a file with several names inside the tree: the first of them in sorted order. */
  readonly hardlinkOf?: string;
  /** Extended attributes, name → hex of the value, sorted by name. */
  readonly xattrs: Readonly<Record<string, string>>;
  /** Modification time in ms, when asked for. */
  readonly mtimeMs?: number;
}

/** What {@link snapshotTree} records besides the always-recorded fields. */
export interface SnapshotTreeOptions {
  /** Hash regular files' contents (default true). */
  readonly contents?: boolean;
  /** Record modification times (default false: tools differ in how they set directory times). */
  readonly mtimes?: boolean;
  /** Relative paths to leave out, with everything below them. */
  readonly exclude?: readonly string[];
}

/** The type of a file system object as {@link TreeEntry} names it. */
export function fileTypeOf(
  st: Pick<
    Stats,
    "isFile" | "isDirectory" | "isSymbolicLink" | "isCharacterDevice" | "isBlockDevice" | "isFIFO"
  >,
): TreeEntry["type"] {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "directory";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isCharacterDevice()) return "char-device";
  if (st.isBlockDevice()) return "block-device";
  return st.isFIFO() ? "fifo" : "socket";
}

/**
 * Walks `root` without following symlinks and records every object below it (not `root` itself)
 * by its path relative to `root` (`etc/passwd`), in sorted order: type, mode, owner, size, content
 * digest, link target, device numbers, hard-link grouping and xattrs. Throws the fs error when the
 * tree cannot be read. Meant for tests comparing an unpack with an oracle such as `umoci unpack`.
 */
export function snapshotTree(root: string, options: SnapshotTreeOptions = {}): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  const inodes = new Map<string, string>();
  const exclude = new Set(options.exclude ?? []);
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const relPath = rel === "" ? name : `${rel}/${name}`;
      if (exclude.has(relPath)) continue;
      const abs = join(dir, name);
      const st = lstatSync(abs, { bigint: true });
      const type = fileTypeOf(st);
      const xattrs: Record<string, string> = {};
      for (const key of listXattrs(abs).sort()) xattrs[key] = getXattr(abs, key)?.toString("hex") ?? "";
      let hardlinkOf: string | undefined;
      if (type !== "directory" && st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        hardlinkOf = inodes.get(key);
        if (hardlinkOf === undefined) inodes.set(key, relPath);
      }
      const rdev = st.rdev;
      out.set(relPath, {
        type,
        mode: Number(st.mode) & 0o7777,
        uid: Number(st.uid),
        gid: Number(st.gid),
        ...(type === "file" ? { size: Number(st.size) } : {}),
        ...(type === "file" && options.contents !== false
          ? { digest: `sha256:${createHash("sha256").update(readFileSync(abs)).digest("hex")}` }
          : {}),
        ...(type === "symlink" ? { link: readlinkSync(abs) } : {}),
        ...(type === "char-device" || type === "block-device"
          ? {
              rdev: `${((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)}:${(rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)}`,
            }
          : {}),
        ...(hardlinkOf === undefined ? {} : { hardlinkOf }),
        xattrs,
        ...(options.mtimes === true ? { mtimeMs: Number(st.mtimeMs) } : {}),
      });
      if (type === "directory") walk(abs, relPath);
    }
  };
  walk(root, "");
  return out;
}

/**
 * Lists the differences between two snapshots from {@link snapshotTree}, one line each
 * (`only in expected: etc/x`, `bin/sh: mode 0755 != 0777`); an empty array when they are equal.
 */
export function compareTrees(expected: Map<string, TreeEntry>, actual: Map<string, TreeEntry>): string[] {
  const problems: string[] = [];
  for (const [path, want] of expected) {
    const got = actual.get(path);
    if (got === undefined) {
      problems.push(`only in expected: ${path} (${want.type})`);
      continue;
    }
    const fields = new Set([...Object.keys(want), ...Object.keys(got)]) as Set<keyof TreeEntry>;
    for (const field of fields) {
      const a = show(field, want[field]);
      const b = show(field, got[field]);
      if (a !== b) problems.push(`${path}: ${field} ${a} != ${b}`);
    }
  }
  for (const [path, got] of actual) {
    if (!expected.has(path)) problems.push(`only in actual: ${path} (${got.type})`);
  }
  return problems;
}

function show(field: keyof TreeEntry, value: unknown): string {
  if (value === undefined) return "(none)";
  if (field === "mode") return `0${(value as number).toString(8).padStart(4, "0")}`;
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
