/**
 * The OCI and Docker image model: media types, references, descriptors, platforms, manifests,
 * and import/export of OCI layouts and archives.
 *
 * @packageDocumentation
 */

export type { KnownMediaType } from "./media-types.js";
export { MediaType } from "./media-types.js";
