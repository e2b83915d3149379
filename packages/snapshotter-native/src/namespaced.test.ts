import { join } from "node:path";
import { openMetadata } from "@berth/metadata";
import { namespacedSnapshotter } from "@berth/snapshots";
import { snapshotterSuite } from "@berth/snapshots/testsuite";
import { createNativeSnapshotter } from "./index.js";

// The namespaced view over the metadata database, backed by the native snapshotter, passes the
// same conformance suite as the backend alone.
snapshotterSuite("namespaced over native", async (root) => {
  const meta = openMetadata(join(root, "metadata.db"));
  const backend = await createNativeSnapshotter(join(root, "native"));
  return {
    snapshotter: namespacedSnapshotter(meta, backend, "native", "default"),
    cleanup: async () => {
      await backend.close();
      meta.close();
    },
  };
});
