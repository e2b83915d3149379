import type { Readable } from "node:stream";
import { finished } from "node:stream";
import type { ContentStore, Descriptor } from "@berth/content";
import { readBlob } from "@berth/content";
import { canceled, dataLoss } from "@berth/errdefs";
import type { PlatformMatcher } from "@berth/images";
import {
  childrenOf,
  distributionSourceKey,
  distributionSourceLabel,
  filterPlatforms,
  isIndexMediaType,
  isManifestMediaType,
  isNonDistributableMediaType,
  parseImageDocument,
  parseReference,
} from "@berth/images";
import type { ProgressEvent } from "./progress.js";
import { Limiter, progressInterval } from "./progress.js";
import type { Pusher, PushResult, Resolver } from "./resolver.js";
import { digestLike, settleAll } from "./util.js";

/** Options of {@link pushImage}. */
export interface PushImageOptions {
  /** Push only the manifests of an index that match this platform (the index itself is pushed whole). */
  readonly platform?: PlatformMatcher;
  /** Push every manifest of an index (the default when `platform` is not given). */
  readonly allPlatforms?: boolean;
  readonly onProgress?: (event: ProgressEvent) => void;
  readonly signal?: AbortSignal;
  /** Blobs transferred at once. Default: the resolver's `concurrency`. */
  readonly concurrency?: number;
  /** Blobs larger than this are uploaded in chunks. Default 16 MiB. */
  readonly chunkThreshold?: number;
  /** Chunk size of chunked uploads. Default 8 MiB. */
  readonly chunkSize?: number;
}

/** The result of {@link pushImage}. */
export interface PushImageResult {
  /** The normalized reference pushed to. */
  readonly name: string;
  readonly target: Descriptor;
  /** Every descriptor of the pushed graph, children before parents. */
  readonly blobs: Descriptor[];
}

/**
 * Pushes the image graph rooted at `target` from `store` to `ref`: blobs first (skipped when the
 * registry has them, mounted from another repository of the same registry when their
 * distribution source label names one, otherwise uploaded), then manifests, then the index, each
 * with its media type as Content-Type; the top-level document is tagged with the reference's tag
 * (or pushed by digest). Pushed blobs get the distribution source label of `ref`.
 *
 * Throws: `not-found` (content missing from the store), `invalid-argument` (malformed reference
 * or document, or rejected by the registry), `unauthenticated`, `permission-denied`,
 * `unavailable`, `data-loss` (stored bytes not matching their digest), `canceled`.
 */
export async function pushImage(
  resolver: Resolver,
  store: ContentStore,
  ref: string,
  target: Descriptor,
  options: PushImageOptions = {},
): Promise<PushImageResult> {
  const parsed = parseReference(ref);
  const push = new Push(
    store,
    resolver.pusher(ref),
    parsed.domain,
    parsed.path,
    new Limiter(options.concurrency ?? resolver.settings.concurrency),
    resolver.settings.maxManifestSize,
    options,
  );
  await push.handle(target, true);
  return { name: parsed.toString(), target, blobs: push.blobs };
}

class Push {
  readonly blobs: Descriptor[] = [];
  private readonly seen = new Map<string, Promise<void>>();
  private readonly sourceKey: string;
  private readonly emit: (e: ProgressEvent) => void;

  constructor(
    private readonly store: ContentStore,
    private readonly pusher: Pusher,
    private readonly domain: string,
    private readonly repo: string,
    private readonly limiter: Limiter,
    private readonly maxManifestSize: number,
    private readonly options: PushImageOptions,
  ) {
    this.sourceKey = distributionSourceKey(domain);
    this.emit = options.onProgress ?? (() => {});
  }

  handle(desc: Descriptor, top = false): Promise<void> {
    let done = this.seen.get(desc.digest);
    if (done === undefined) {
      done = this.handleOnce(desc, top);
      this.seen.set(desc.digest, done);
    }
    return done;
  }

  private async handleOnce(desc: Descriptor, top: boolean): Promise<void> {
    if (this.options.signal?.aborted) throw canceled(`push to ${this.repo} was canceled`);
    const event = {
      ref: `push-${desc.digest}`,
      digest: desc.digest,
      mediaType: desc.mediaType,
      total: desc.size,
    };
    if (isIndexMediaType(desc.mediaType) || isManifestMediaType(desc.mediaType)) {
      const bytes = await this.read(desc);
      let children = childrenOf(parseImageDocument(bytes, desc.mediaType)).filter(
        (c) => !isNonDistributableMediaType(c.mediaType),
      );
      if (
        isIndexMediaType(desc.mediaType) &&
        this.options.platform !== undefined &&
        this.options.allPlatforms !== true
      ) {
        children = filterPlatforms(children, this.options.platform);
      }
      await settleAll(children.map((c) => this.handle(c)));
      const result = await this.pusher.push(desc, bytes, {
        tag: top,
        ...(this.options.signal === undefined ? {} : { signal: this.options.signal }),
      });
      this.emit({ kind: result === "exists" ? "exists" : "done", ...event, offset: desc.size });
      this.blobs.push(desc);
      return;
    }
    const info = await this.store.info(desc.digest);
    const sources = (info.labels[this.sourceKey] ?? "").split(",").filter((r) => r !== "" && r !== this.repo);
    const result: PushResult = await this.limiter.run(
      async () => {
        let last = 0;
        return this.pusher.push(desc, () => this.open(desc), {
          ...(sources[0] === undefined ? {} : { mountFrom: sources[0] }),
          ...(this.options.chunkThreshold === undefined
            ? {}
            : { chunkThreshold: this.options.chunkThreshold }),
          ...(this.options.chunkSize === undefined ? {} : { chunkSize: this.options.chunkSize }),
          ...(this.options.signal === undefined ? {} : { signal: this.options.signal }),
          onProgress: (offset) => {
            const now = Date.now();
            if (now - last >= progressInterval && offset < desc.size) {
              last = now;
              this.emit({ kind: "uploading", ...event, offset });
            }
          },
        });
      },
      () => this.emit({ kind: "waiting", ...event, offset: 0 }),
    );
    this.emit({ kind: result === "pushed" ? "done" : result, ...event, offset: desc.size });
    const current = info.labels[this.sourceKey];
    const label = distributionSourceLabel(this.domain, this.repo, current);
    if (label[this.sourceKey] !== current)
      await this.store.update({ digest: desc.digest, labels: label }, [`labels.${this.sourceKey}`]);
    this.blobs.push(desc);
  }

  private async open(desc: Descriptor): Promise<Readable> {
    const reader = await this.store.readerAt(desc.digest);
    const stream = reader.stream();
    // The store's stream does not close its file at the end; the reader must be closed once the
    // stream ended, failed or was destroyed (undici destroys it when the request fails).
    finished(stream, () => {
      void reader.close();
    });
    return stream;
  }

  private async read(desc: Descriptor): Promise<Buffer> {
    const bytes = Buffer.from(await readBlob(this.store, desc.digest, { maxSize: this.maxManifestSize }));
    if (bytes.length !== desc.size || digestLike(desc.digest, bytes) !== desc.digest) {
      throw dataLoss(`stored ${desc.mediaType} ${desc.digest} does not match its descriptor`);
    }
    return bytes;
  }
}
