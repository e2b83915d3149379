/**
 * OCI and Docker image model: media types, references, descriptors, platforms, manifests, OCI layout and archive import/export.
 *
 * @packageDocumentation
 */

export {};
