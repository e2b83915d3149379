/**
 * Tar apply and diff for OCI layers: gzip/zstd, whiteouts, opaque dirs, ownership, xattrs, devices, path safety.
 *
 * @packageDocumentation
 */

export {};
