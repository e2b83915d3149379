/**
 * Vitest global setup: builds (or loads from `.fixtures/`) the fixture images, starts one no-auth
 * loopback registry for the whole run, pushes every fixture to it and provides it to tests as
 * `sharedRegistry()` from @berth/testing. The returned teardown stops the registry and removes its
 * storage; a failure half-way stops whatever was started before rethrowing.
 */
import {
  buildFixtureImages,
  pushFixtures,
  type RegistryHandle,
  SHARED_REGISTRY_KEY,
  startRegistry,
} from "@berth/testing";
import type { TestProject } from "vitest/node";

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const fixtures = await buildFixtureImages();
  let registry: RegistryHandle | undefined;
  try {
    registry = await startRegistry();
    const refs = await pushFixtures(registry, fixtures);
    project.provide(SHARED_REGISTRY_KEY, { host: registry.host, url: registry.url, refs, fixtures });
  } catch (err) {
    await registry?.stop();
    throw err;
  }
  const started = registry;
  return () => started.stop();
}
