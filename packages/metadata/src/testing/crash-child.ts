// The writer of the crash test (crash.test.ts): loops forever, each round committing one blob
// through a namespaced content store and creating one image with many labels, and prints the round
// number only after both transactions returned. The parent SIGKILLs it mid-loop.
import { createLocalContentStore } from "@berth/content";
import { namespacedContentStore } from "../content-store.js";
import { openMetadata } from "../open-metadata.js";
import { crashMediaType, roundData } from "./crash-data.js";

const [dbPath, contentRoot] = process.argv.slice(2) as [string, string];
const meta = openMetadata(dbPath);
const backing = await createLocalContentStore(contentRoot);
const content = namespacedContentStore(meta, backing, "crash");
const images = meta.images("crash");

process.stdout.write("ready\n");
for (let i = 0; ; i++) {
  const { blob, digest, labels, name, ref } = roundData(i);
  const w = await content.writer({ ref, total: blob.length, expected: digest });
  await w.write(blob);
  await w.commit(blob.length, digest, { labels: { round: String(i) } });
  await images.create({ name, target: { mediaType: crashMediaType, digest, size: blob.length }, labels });
  process.stdout.write(`${i}\n`);
}
