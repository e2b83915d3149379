import { closeSync, constants, fsyncSync, openSync } from "node:fs";
import { open } from "node:fs/promises";

/**
 * fsyncs a directory so that a rename or create inside it survives a crash. POSIX requires this
 * after `rename(2)` for the new name to be durable; without it a power cut can undo a commit.
 */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Asynchronous {@link fsyncDirSync}. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
