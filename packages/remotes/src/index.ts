/**
 * Registry client per the OCI distribution spec: resolve, fetch, push, auth, mirrors, retries.
 *
 * @packageDocumentation
 */

export {};
