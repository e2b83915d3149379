// The benchmark registry: distribution on 127.0.0.1 (startRegistry from @berth/testing) with the
// fixture image pushed by skopeo. Its storage is kept in bench/.work/registry-<digest> between runs
// of the benchmarks (keyed on the manifest), so the push is quick after the first time; the
// registry process itself is new every time.
import { readdirSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { startRegistry } from "@berth/testing";
import { FIXTURE_TAG } from "./fixture.mjs";
import { exec, sec } from "./harness.mjs";

/**
 * Starts the registry (stopped by a cleanup of `cleanups`) and pushes the layout's image as
 * `bench/big:<tag>`. Resolves with the registry handle, the image reference and how long the push
 * took (`pushMs`). Logs the push with `log` when given; a caller that reports it its own way
 * leaves `log` out.
 */
export async function startFixtureRegistry(cleanups, workDir, layout, descriptor, log) {
  const storageDir = join(workDir, `registry-${descriptor.digest.slice(7, 19)}`);
  for (const old of readdirSync(workDir).filter((n) => n.startsWith("registry-"))) {
    if (join(workDir, old) !== storageDir) await rm(join(workDir, old), { recursive: true, force: true });
  }
  await mkdir(storageDir, { recursive: true });
  const registry = await startRegistry({ storageDir });
  cleanups.track(() => registry.stop());
  const ref = `${registry.host}/bench/big:${FIXTURE_TAG}`;
  const t = performance.now();
  await exec(cleanups, "skopeo", [
    "copy",
    "--quiet",
    "--preserve-digests",
    "--dest-tls-verify=false",
    `oci:${layout}:${FIXTURE_TAG}`,
    `docker://${ref}`,
  ]);
  const pushMs = performance.now() - t;
  log?.(`pushed ${ref} with skopeo in ${sec(pushMs)} s (registry pid ${registry.pid})`);
  return { registry, ref, pushMs };
}
