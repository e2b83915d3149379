import { join } from "node:path";
import { createLocalContentStore } from "@berth/content";
import type { ContentSuiteInstance } from "@berth/content/testsuite";
import { namespacedContentStore } from "../content-store.js";
import { openMetadata } from "../open-metadata.js";

/**
 * The namespaced store the content conformance suite runs against: `<root>/metadata.db` over a
 * local store in `<root>/content`, namespace "suite". Also the suite's peer-process entry point.
 */
export async function openSuiteStore(root: string): Promise<ContentSuiteInstance> {
  const meta = openMetadata(join(root, "metadata.db"));
  const backing = await createLocalContentStore(join(root, "content"));
  return { store: namespacedContentStore(meta, backing, "suite"), cleanup: async () => meta.close() };
}
