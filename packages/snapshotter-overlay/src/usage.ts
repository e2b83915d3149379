import type { BigIntStats } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Usage } from "@berth/snapshots";

// st_blocks counts 512-byte units whatever the filesystem's block size (stat(2)).
const BLOCK_UNIT = 512n;

/**
 * Disk usage of the tree at `root`, counted the way containerd's `fs.DiskUsage` does: `size` is
 * the space allocated on disk (`st_blocks × 512`, so sparse files count their allocated blocks
 * and small files a whole filesystem block, and directories count too), and `inodes` the number
 * of distinct inodes, the root included; hard links count once. Symlinks are not followed and
 * the walk does not stop at mount points below `root` (there are none in an upperdir).
 *
 * Throws the `lstat`/`readdir` error (e.g. ENOENT) if the tree changes under the walk in a way
 * that makes an entry vanish between listing and stat; callers walk trees nobody writes to, or
 * accept a retry.
 */
export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0n;
  const account = (st: BigIntStats): void => {
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) return;
    seen.add(key);
    size += st.blocks * BLOCK_UNIT;
  };
  const rootStat = await lstat(root, { bigint: true });
  account(rootStat);
  if (!rootStat.isDirectory()) return { inodes: seen.size, size: Number(size) };
  // Depth-first over directories, one directory's entries stat'ed at once: the thread pool
  // overlaps those calls, and memory stays bounded by the widest directory plus the depth.
  const pending: string[] = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    const names = await readdir(dir);
    const stats = await Promise.all(names.map((name) => lstat(join(dir, name), { bigint: true })));
    for (let i = 0; i < names.length; i++) {
      const st = stats[i] as BigIntStats;
      account(st);
      if (st.isDirectory()) pending.push(join(dir, names[i] as string));
    }
  }
  return { inodes: seen.size, size: Number(size) };
}
