import { pack } from "tar-stream";

/** One entry of a fixture tar. @internal */
export interface TarEntry {
  /** Relative path without a leading `/` or `./` (`bin/busybox`). */
  readonly path: string;
  readonly type: "file" | "directory" | "symlink" | "link" | "fifo";
  /** Permission bits, including setuid/setgid/sticky. Default 0o755 for directories, 0o777 for symlinks, 0o644 otherwise. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** File contents (files only). */
  readonly content?: Buffer | string;
  /** Symlink target, or the archive path a hard link refers to. */
  readonly linkname?: string;
}

// Symlink permission bits are ignored by Linux; 0777 is what lstat shows and what tar tools write.
const DEFAULT_MODES: Readonly<Record<TarEntry["type"], number>> = {
  file: 0o644,
  directory: 0o755,
  symlink: 0o777,
  link: 0o644,
  fifo: 0o644,
};

/** Every fixture entry carries this mtime, so layer digests do not depend on when they were built. */
export const FIXTURE_MTIME = new Date("2024-01-01T00:00:00Z");

/**
 * Packs `entries` into an uncompressed tar, deterministically: entries sorted by path (a parent
 * directory sorts before its children), fixed mtime, numeric owners with fixed names. Throws an
 * `Error` when a hard link refers to a path that is not earlier in the archive, since extractors
 * resolve hard links against what they have already written.
 *
 * @internal
 */
export async function buildTar(entries: readonly TarEntry[]): Promise<Buffer> {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const seen = new Set<string>();
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    tar.on("data", (chunk: unknown) => chunks.push(chunk as Buffer));
    tar.on("end", () => resolve(Buffer.concat(chunks)));
    tar.on("error", reject);
  });
  for (const entry of sorted) {
    if (entry.type === "link" && !seen.has(entry.linkname ?? "")) {
      throw new Error(`fixture tar: hard link ${entry.path} -> ${entry.linkname} precedes its target`);
    }
    seen.add(entry.path);
    const uid = entry.uid ?? 0;
    const gid = entry.gid ?? 0;
    const content = entry.type === "file" ? Buffer.from(entry.content ?? "") : Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      tar.entry(
        {
          name: entry.path,
          type: entry.type,
          mode: entry.mode ?? DEFAULT_MODES[entry.type],
          uid,
          gid,
          uname: uid === 0 ? "root" : "",
          gname: gid === 0 ? "root" : "",
          mtime: FIXTURE_MTIME,
          size: content.length,
          ...(entry.linkname === undefined ? {} : { linkname: entry.linkname }),
        },
        content,
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }
  tar.finalize();
  return done;
}
