import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Usage } from "@berth/snapshots";

/**
 * The disk usage of the tree at `dir`, as containerd's `fs.DiskUsage` counts it: allocated
 * blocks (`st_blocks` × 512, so sparse files count what they occupy) and inodes, each inode once
 * however many hardlinks name it, the root directory included. Throws the `fs` error of an entry
 * that could not be read.
 */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const name of await readdir(path)) await visit(join(path, name));
    }
  };
  await visit(dir);
  return { size, inodes: seen.size };
}
