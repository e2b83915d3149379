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
  CommitCallOptions,
  ImageDetails,
  ImageSummary,
  ImportCallOptions,
  PullCallOptions,
  PushCallOptions,
  RegistryCallOptions,
  RunCallOptions,
  UnpackCallOptions,
} from "./client.js";
export { createClient, ImageLabel, SnapshotterName } from "./client.js";
export type { CommitSnapshotOptions, CommitSnapshotResult } from "./commit.js";
export { commitSnapshot } from "./commit.js";
export type { PlatformChoice } from "./platforms.js";
export { choosePlatforms } from "./platforms.js";
export type { UnpackEvent, UnpackedLayer, UnpackLayersOptions, UnpackResult } from "./unpack.js";
export { applyToMounts, unpackImage, unpackLayers } from "./unpack.js";
