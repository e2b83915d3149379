/**
 * Test utilities for berth's own tests: `requiresRoot()` and `requiresCommand()` guards, a real
 * loopback registry (Debian's docker distribution, optionally with basic or token auth), and
 * deterministic fixture images built from busybox-static as OCI layouts. It imports no other
 * `@berth` package, so it stays an independent oracle for the code under test.
 *
 * @packageDocumentation
 */

export type { ContainerdHandle } from "./containerd.js";
export { startContainerd } from "./containerd.js";
export type { ChildOutput } from "./exec.js";
export { collectOutput } from "./exec.js";
export type { Fixture, FixtureName, FixturePlatformImage, Fixtures } from "./fixtures.js";
export {
  BUSYBOX_PATH,
  buildFixtureImages,
  FIXTURE_FORMAT_VERSION,
  FIXTURE_NAMES,
  FIXTURE_REPOSITORIES,
  FIXTURE_TAG,
  hostPlatform,
} from "./fixtures.js";
export type { FixturePlatform } from "./layout.js";
export { MediaType, REF_NAME_ANNOTATION } from "./layout.js";
export type { TcpServer } from "./net.js";
export { hostNetworkSnapshot, serveTcp, tcpFetch } from "./net.js";
export type { FixtureRefs } from "./push.js";
export { pushFixtures } from "./push.js";
export type { RegistryAuth, RegistryHandle, RegistryOptions, TokenServerHandle } from "./registry.js";
export { startRegistry } from "./registry.js";
export { findCommand, requiresCommand, requiresNetworkSandbox, requiresRoot } from "./requires.js";
export type { SharedRegistry } from "./shared.js";
export { SHARED_REGISTRY_KEY, sharedRegistry } from "./shared.js";
