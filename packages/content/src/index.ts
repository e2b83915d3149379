/**
 * A content-addressable blob store: resumable ingest by ref, verified atomic commit, labels, walk
 * and delete. The conformance suite for any implementation is at `@berth/content/testsuite`.
 *
 * @packageDocumentation
 */

export { Labels } from "./labels.js";
export type {
  CommitOptions,
  ContentStore,
  ContentWriter,
  Descriptor,
  Digest,
  Info,
  Platform,
  ReaderAt,
  Status,
  WriterOptions,
} from "./types.js";
