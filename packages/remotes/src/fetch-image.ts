import type { ContentStore, ContentWriter, Descriptor } from "@berth/content";
import { readBlob } from "@berth/content";
import {
  canceled,
  dataLoss,
  ErrorCode,
  errorCode,
  errorMessage,
  isAlreadyExists,
  isFailedPrecondition,
  isNotFound,
  notFound,
  resourceExhausted,
  unavailable,
} from "@berth/errdefs";
import type { ImageManifest, PlatformMatcher } from "@berth/images";
import {
  allPlatforms,
  childrenOf,
  distributionSourceKey,
  distributionSourceLabel,
  filterPlatforms,
  gcChildLabels,
  hostPlatform,
  isIndexMediaType,
  isManifestMediaType,
  isNonDistributableMediaType,
  parseImageDocument,
  parseReference,
  platformMatcher,
} from "@berth/images";
import type { ProgressEvent } from "./progress.js";
import { Limiter, progressInterval } from "./progress.js";
import type { Fetcher, Resolver } from "./resolver.js";
import { digestLike, readCapped, settleAll } from "./util.js";

/** Options of {@link fetchImage}. */
export interface FetchImageOptions {
  /** Which platform's manifest to take from an index (the best match only). Default: the host's. */
  readonly platform?: PlatformMatcher;
  /** Take every manifest of an index. Overrides `platform`. */
  readonly allPlatforms?: boolean;
  readonly onProgress?: (event: ProgressEvent) => void;
  readonly signal?: AbortSignal;
  /** Blobs transferred at once. Default: the resolver's `concurrency`. */
  readonly concurrency?: number;
  /**
   * Called with each image manifest as soon as it is read and verified, before its config and
   * layers are fetched (and before the manifest itself is committed, which happens last). Lets a
   * caller unpack layers while later ones still download.
   */
  readonly onManifest?: (desc: Descriptor, manifest: ImageManifest) => void;
}

/** The result of {@link fetchImage}. */
export interface FetchImageResult {
  /** The normalized reference. */
  readonly name: string;
  /** The descriptor the reference resolved to. */
  readonly target: Descriptor;
  /** Every descriptor of the pulled graph (fetched or already present), children before parents. */
  readonly blobs: Descriptor[];
}

/** How many times a transfer whose body broke off is resumed (with a Range request) before failing. */
const bodyRetries = 3;

/**
 * Pulls an image into a content store: resolves `ref`, fetches the index or manifest (capped at
 * the resolver's `maxManifestSize`, digest-verified, its own media type checked against the
 * descriptor's), keeps the best manifest for `options.platform` (or all), then fetches configs
 * and layers. Each blob goes through `store.writer` under a ref unique to the registry,
 * repository and digest, resuming a previous partial ingest with a Range request; the store
 * verifies size and digest on commit. Children are committed before their parents, so an
 * interrupted pull never leaves a manifest whose children are missing. Parents carry containerd
 * gc labels for their children; every blob carries `containerd.io/distribution.source.<host>`.
 * Content already in the store is not fetched again (an index or manifest is read from the store).
 *
 * Throws: `invalid-argument` (malformed reference, document or media type), `not-found`
 * (reference, blob, or no manifest for the platform), `data-loss` (bytes that do not match their
 * digest, naming digest and registry; nothing is committed under that digest and the partial
 * ingest is dropped), `resource-exhausted` (oversized manifest), `unauthenticated`,
 * `unavailable` (network, after retries; the partial ingest is kept for a later resume),
 * `canceled` (signal).
 */
export async function fetchImage(
  resolver: Resolver,
  store: ContentStore,
  ref: string,
  options: FetchImageOptions = {},
): Promise<FetchImageResult> {
  const parsed = parseReference(ref);
  const emit = options.onProgress ?? (() => {});
  emit({ kind: "resolving", ref: parsed.toString(), offset: 0, total: 0 });
  const { name, descriptor } = await resolver.resolve(ref);
  emit({
    kind: "resolved",
    ref: name,
    digest: descriptor.digest,
    mediaType: descriptor.mediaType,
    offset: 0,
    total: descriptor.size,
  });
  const matcher =
    options.allPlatforms === true ? allPlatforms : (options.platform ?? platformMatcher(hostPlatform()));
  const pull = new Pull(
    store,
    resolver.fetcher(name),
    parsed.domain,
    parsed.path,
    new Limiter(options.concurrency ?? resolver.settings.concurrency),
    resolver.settings.maxManifestSize,
    matcher,
    options.allPlatforms === true,
    emit,
    options.signal,
    options.onManifest,
  );
  await pull.handle(descriptor);
  return { name, target: descriptor, blobs: pull.blobs };
}

class Pull {
  readonly blobs: Descriptor[] = [];
  private readonly seen = new Map<string, Promise<void>>();
  private readonly sourceKey: string;

  constructor(
    private readonly store: ContentStore,
    private readonly fetcher: Fetcher,
    private readonly domain: string,
    private readonly repo: string,
    private readonly limiter: Limiter,
    private readonly maxManifestSize: number,
    private readonly matcher: PlatformMatcher,
    private readonly all: boolean,
    private readonly emit: (e: ProgressEvent) => void,
    private readonly signal: AbortSignal | undefined,
    private readonly onManifest: ((desc: Descriptor, manifest: ImageManifest) => void) | undefined,
  ) {
    this.sourceKey = distributionSourceKey(domain);
  }

  handle(desc: Descriptor): Promise<void> {
    let done = this.seen.get(desc.digest);
    if (done === undefined) {
      done = this.handleOnce(desc);
      this.seen.set(desc.digest, done);
    }
    return done;
  }

  private ingestRef(desc: Descriptor): string {
    return `remotes-${this.domain}/${this.repo}-${desc.digest}`;
  }

  private async handleOnce(desc: Descriptor): Promise<void> {
    this.checkSignal();
    if (!isIndexMediaType(desc.mediaType) && !isManifestMediaType(desc.mediaType)) {
      await this.limiter.run(
        () => this.ingest(desc, { [this.sourceKey]: this.repo }),
        () => this.emit({ kind: "waiting", ...this.event(desc, 0) }),
      );
      this.blobs.push(desc);
      return;
    }
    const bytes = await this.document(desc);
    const doc = parseImageDocument(bytes, desc.mediaType);
    if (doc.kind === "manifest") this.onManifest?.(desc, doc);
    let children = childrenOf(doc).filter((c) => !isNonDistributableMediaType(c.mediaType));
    if (isIndexMediaType(desc.mediaType) && !this.all) {
      // Like containerd's pull, take only the best match of an index for one platform.
      children = filterPlatforms(children, this.matcher, 1);
      if (!children.some((c) => isIndexMediaType(c.mediaType) || isManifestMediaType(c.mediaType))) {
        throw notFound(
          `${this.domain}/${this.repo}: index ${desc.digest} has no manifest for the requested platform`,
        );
      }
    }
    await settleAll(children.map((c) => this.handle(c)));
    await this.ingest(desc, { ...gcChildLabels(desc, children), [this.sourceKey]: this.repo }, bytes);
    this.blobs.push(desc);
  }

  private event(desc: Descriptor, offset: number) {
    return {
      ref: this.ingestRef(desc),
      digest: desc.digest,
      mediaType: desc.mediaType,
      offset,
      total: desc.size,
    };
  }

  private checkSignal(): void {
    if (this.signal?.aborted) throw canceled(`pull of ${this.domain}/${this.repo} was canceled`);
  }

  /** The bytes of an index or manifest: from the store when present, else fetched and verified. */
  private async document(desc: Descriptor): Promise<Buffer> {
    if (desc.size > this.maxManifestSize) {
      throw resourceExhausted(
        `manifest ${desc.digest} of ${this.domain}/${this.repo} is ${desc.size} bytes, over the ${this.maxManifestSize}-byte limit`,
      );
    }
    try {
      return Buffer.from(await readBlob(this.store, desc.digest, { maxSize: this.maxManifestSize }));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return this.limiter.run(async () => {
      const stream = await this.fetcher.fetch(desc, this.signal === undefined ? {} : { signal: this.signal });
      const bytes = await readCapped(stream, this.maxManifestSize, () =>
        resourceExhausted(
          `manifest ${desc.digest} of ${this.domain}/${this.repo} is larger than the ${this.maxManifestSize}-byte limit`,
        ),
      );
      const computed = digestLike(desc.digest, bytes);
      if (computed !== desc.digest || bytes.length !== desc.size) {
        throw dataLoss(
          `manifest ${desc.digest} from registry ${this.domain} (${this.repo}) does not match its descriptor: got ${bytes.length} bytes with digest ${computed}, expected ${desc.size} bytes`,
        );
      }
      return bytes;
    });
  }

  /**
   * Writes one blob (from `bytes`, or fetched) into the store with `labels`, or merely adds the
   * labels when it is already there.
   */
  private async ingest(desc: Descriptor, labels: Record<string, string>, bytes?: Buffer): Promise<void> {
    const ref = this.ingestRef(desc);
    let writer: ContentWriter;
    try {
      writer = await this.store.writer({ ref, total: desc.size, expected: desc.digest });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      await this.mergeLabels(desc, labels);
      this.emit({ kind: "exists", ...this.event(desc, desc.size) });
      return;
    }
    try {
      if (bytes !== undefined) {
        if ((await writer.status()).offset !== 0) await writer.truncate(0);
        await writer.write(bytes);
      } else {
        await this.download(desc, writer);
      }
      await writer.commit(desc.size, desc.digest, { labels });
    } catch (err) {
      if (isAlreadyExists(err)) {
        // Another pull committed it first; ours was dropped by the store.
        await this.mergeLabels(desc, labels);
        this.emit({ kind: "exists", ...this.event(desc, desc.size) });
        return;
      }
      this.emit({ kind: "error", ...this.event(desc, 0) });
      await writer.close().catch(() => {});
      if (isFailedPrecondition(err) || errorCode(err) === ErrorCode.DataLoss) {
        // The bytes are not the blob: resuming them would only fail again, so drop the ingest.
        await this.store.abort(ref).catch(() => {});
        throw dataLoss(
          `blob ${desc.digest} from registry ${this.domain} (${this.repo}) does not match its digest or size: ${errorMessage(err)}`,
          { cause: err },
        );
      }
      throw err;
    }
    this.emit({ kind: "done", ...this.event(desc, desc.size) });
  }

  /** Copies the blob from the registry into `writer`, resuming from its offset after breaks. */
  private async download(desc: Descriptor, writer: ContentWriter): Promise<void> {
    let offset = (await writer.status()).offset;
    if (offset > desc.size) {
      await writer.truncate(0);
      offset = 0;
    }
    let last = 0;
    for (let attempt = 0; offset < desc.size; attempt++) {
      this.checkSignal();
      const stream = await this.fetcher.fetch(desc, {
        offset,
        ...(this.signal === undefined ? {} : { signal: this.signal }),
      });
      let broken: unknown;
      try {
        for await (const chunk of stream) {
          const buf = chunk as Buffer;
          if (offset + buf.length > desc.size) {
            stream.destroy();
            throw dataLoss(`registry sent more than the ${desc.size} bytes of the blob`);
          }
          await writer.write(buf);
          offset += buf.length;
          const now = Date.now();
          if (now - last >= progressInterval) {
            last = now;
            this.emit({ kind: "downloading", ...this.event(desc, offset) });
          }
        }
      } catch (err) {
        if (errorCode(err) === ErrorCode.DataLoss) throw err;
        if (this.signal?.aborted)
          throw canceled(`pull of ${this.domain}/${this.repo} was canceled`, { cause: err });
        broken = err;
      }
      if (offset >= desc.size) break;
      if (attempt >= bodyRetries) {
        throw unavailable(
          `blob ${desc.digest} from registry ${this.domain} (${this.repo}) broke off at ${offset} of ${desc.size} bytes${
            broken === undefined ? "" : `: ${errorMessage(broken)}`
          }; pulling again resumes from there`,
          { cause: broken },
        );
      }
    }
  }

  /** Adds labels to a stored blob, appending this repository to an existing distribution source. */
  private async mergeLabels(desc: Descriptor, labels: Record<string, string>): Promise<void> {
    const info = await this.store.info(desc.digest);
    const wanted = {
      ...labels,
      ...distributionSourceLabel(this.domain, this.repo, info.labels[this.sourceKey]),
    };
    const changed = Object.keys(wanted).filter((key) => info.labels[key] !== wanted[key]);
    if (changed.length === 0) return;
    await this.store.update(
      { digest: desc.digest, labels: Object.fromEntries(changed.map((k) => [k, wanted[k] as string])) },
      changed.map((k) => `labels.${k}`),
    );
  }
}
