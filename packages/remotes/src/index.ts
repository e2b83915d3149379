/**
 * Registry client per the OCI distribution spec, in the spirit of containerd's
 * `core/remotes/docker`: a {@link Resolver} (resolve, fetch, push) with anonymous, basic and
 * Docker token authentication, mirrors, plain HTTP for loopback and insecure hosts, and retries;
 * plus {@link fetchImage} and {@link pushImage}, which move a whole image graph between a registry
 * and a content store.
 *
 * @packageDocumentation
 */

export type { Credentials, CredentialsFunction } from "./auth.js";
export { defaultDockerConfigPath, loadDockerCredentials } from "./docker-config.js";
export type { FetchImageOptions, FetchImageResult } from "./fetch-image.js";
export { fetchImage } from "./fetch-image.js";
export type { DefaultHostsOptions, HostConfig } from "./hosts.js";
export { apiHost, defaultHosts, HostCapability, isLoopbackHost } from "./hosts.js";
export type { ProgressEvent } from "./progress.js";
export { progressInterval } from "./progress.js";
export type { PushImageOptions, PushImageResult } from "./push-image.js";
export { pushImage } from "./push-image.js";
export type {
  Fetcher,
  FetchOptions,
  Pusher,
  PushOptions,
  PushResult,
  PushSource,
  Resolved,
  Resolver,
  ResolverOptions,
  ResolverSettings,
} from "./resolver.js";
export { createResolver } from "./resolver.js";
