/**
 * Content-addressable blob store: resumable ingest, verified commit, labels, walk, delete; with an exported conformance suite.
 *
 * @packageDocumentation
 */

export {};
