import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "./exec.js";
import {
  FIXTURE_NAMES,
  FIXTURE_REPOSITORIES,
  type Fixture,
  type FixtureName,
  type Fixtures,
} from "./fixtures.js";
import { MediaType, sha256 } from "./layout.js";
import type { RegistryHandle } from "./registry.js";

/** What {@link pushFixtures} returns: `<host>/fixtures/<repo>:<tag>` for every fixture. */
export type FixtureRefs = Readonly<Record<FixtureName, string>>;

/** `<flag>=user:password` when `registry` has credentials, else nothing (anonymous). */
function credsFlag(registry: RegistryHandle, flag: string): string[] {
  return registry.username === undefined || registry.password === undefined
    ? []
    : [`${flag}=${registry.username}:${registry.password}`];
}

/**
 * Pushes fixtures to `registry` (all of them, or those in `names`) with
 * `skopeo copy --all --preserve-digests`, credentials passed when the registry has them, as
 * `<host>/fixtures/<repo>:<tag>` (see {@link FIXTURE_REPOSITORIES}). Then reads each manifest back
 * with `skopeo inspect --raw` and checks that its digest equals the fixture's (the index digest for
 * `multiPlatform`): the registry holds exactly the fixture bytes, nothing recompressed or
 * converted. Resolves with the reference of every pushed fixture. The `dockerV2` fixture is read
 * through a temporary `dir:` copy (see `skopeoSource` in push.ts) since skopeo's `oci:` transport skips
 * Docker media types in `index.json`.
 *
 * Rejects with an `Error` naming the command or fixture when skopeo fails or a digest differs.
 */
export async function pushFixtures<N extends FixtureName = FixtureName>(
  registry: RegistryHandle,
  fixtures: Fixtures,
  names: readonly N[] = FIXTURE_NAMES as readonly FixtureName[] as readonly N[],
): Promise<Readonly<Record<N, string>>> {
  const refs = {} as Record<N, string>;
  // Sequential: parallel copies to one registry gain little on two cores and interleave failures.
  for (const name of names) {
    const fixture = fixtures[name];
    const ref = `${registry.host}/${FIXTURE_REPOSITORIES[name]}:${fixture.tag}`;
    const source = await skopeoSource(fixture);
    try {
      await run("skopeo", [
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--quiet",
        "--dest-tls-verify=false",
        ...credsFlag(registry, "--dest-creds"),
        source.name,
        `docker://${ref}`,
      ]);
    } finally {
      await source.dispose();
    }
    await verifyPushed(registry, ref, fixture);
    refs[name] = ref;
  }
  return refs;
}

/** Checks that `ref` in `registry` resolves to exactly the fixture's top-level manifest bytes. */
async function verifyPushed(registry: RegistryHandle, ref: string, fixture: Fixture): Promise<void> {
  const { stdout } = await run("skopeo", [
    "--insecure-policy",
    "inspect",
    "--raw",
    "--tls-verify=false",
    ...credsFlag(registry, "--creds"),
    `docker://${ref}`,
  ]);
  const expected = fixture.indexDigest ?? fixture.manifestDigest;
  const actual = sha256(stdout);
  if (actual !== expected) {
    throw new Error(
      `pushed fixture ${fixture.name} as ${ref}: registry serves ${actual}, expected ${expected}`,
    );
  }
}

/** A skopeo image name for a fixture, and what to remove once skopeo is done with it. @internal */
export interface SkopeoSource {
  readonly name: string;
  dispose(): Promise<void>;
}

/**
 * `oci:<layout>:<tag>` for OCI fixtures. skopeo 1.9's `oci:` transport skips `index.json` entries
 * whose media type is not an OCI manifest or index, so a Docker schema 2 fixture is handed to it
 * as a temporary `dir:` transport copy (`manifest.json`, blobs by hex digest, `version`), which
 * keeps the manifest bytes and therefore the digest. The caller must `dispose()` it.
 *
 * @internal
 */
export async function skopeoSource(fixture: Fixture): Promise<SkopeoSource> {
  if (fixture.manifestMediaType !== MediaType.dockerManifest) {
    return { name: `oci:${fixture.layoutDir}:${fixture.tag}`, dispose: async () => {} };
  }
  const dir = await mkdtemp(join(tmpdir(), "berth-fixture-dir-"));
  try {
    const blobPath = (digest: string) =>
      join(fixture.layoutDir, "blobs", "sha256", digest.slice("sha256:".length));
    await writeFile(join(dir, "manifest.json"), await readFile(blobPath(fixture.manifestDigest)));
    for (const digest of fixture.blobs) {
      if (digest !== fixture.manifestDigest)
        await copyFile(blobPath(digest), join(dir, digest.slice("sha256:".length)));
    }
    await writeFile(join(dir, "version"), "Directory Transport Version: 1.1\n");
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { name: `dir:${dir}`, dispose: () => rm(dir, { recursive: true, force: true }) };
}
