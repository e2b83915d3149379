import { createHash } from "node:crypto";

/** The exact records round `i` of crash-child.ts writes; the test recomputes them to compare. */
export function roundData(i: number) {
  const blob = Buffer.from(`blob number ${i} `.repeat(1 + (i % 7)));
  const digest = `sha256:${createHash("sha256").update(blob).digest("hex")}`;
  const labels: Record<string, string> = {};
  for (let k = 0; k < 40; k++) labels[`label.${k}`] = `${i}-${k}-${"x".repeat(50)}`;
  return { blob, digest, labels, name: `example.com/crash/image:${i}`, ref: `round-${i}` };
}

/** The media type crash-child.ts gives its image targets. */
export const crashMediaType = "application/vnd.oci.image.index.v1+json";
