/**
 * The berth client: one interface over embedded mode (in-process, over the stores under a root
 * directory, no daemon) and, in a later release, berthd over gRPC.
 *
 * @packageDocumentation
 */

export type { ImageRecord } from "@berth/metadata";
export type {
  Client,
  ClientOptions,
  ImageDetails,
  ImageSummary,
  ImportCallOptions,
  PushCallOptions,
  RegistryCallOptions,
} from "./client.js";
export { createClient } from "./client.js";
export type { PlatformChoice } from "./platforms.js";
export { choosePlatforms } from "./platforms.js";
