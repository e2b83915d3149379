import { Readable, Transform } from "node:stream";
import type { Descriptor } from "@berth/content";
import {
  type BerthError,
  dataLoss,
  ErrorCode,
  errorCode,
  invalidArgument,
  isNotFound,
  notFound,
  resourceExhausted,
  unavailable,
} from "@berth/errdefs";
import type { Reference } from "@berth/images";
import { isIndexMediaType, isManifestMediaType, MediaType, parseReference } from "@berth/images";
import type { Dispatcher } from "undici";
import type { CredentialsFunction } from "./auth.js";
import { Authorizer } from "./auth.js";
import type { HostCapability, HostConfig } from "./hosts.js";
import { defaultHosts } from "./hosts.js";
import type { RegistryResponse } from "./http.js";
import { header, RegistryClient, redact, statusError } from "./http.js";
import { digestLike, readCapped } from "./util.js";

/** Options of {@link createResolver}. Every field is optional. */
export interface ResolverOptions {
  /**
   * The endpoints serving a reference domain, in the order to try them (containerd's
   * `RegistryHosts`). When given, `plainHttp`, `insecureHosts` and `mirrors` are ignored.
   */
  readonly hosts?: (domain: string) => HostConfig[];
  /** Talk plain HTTP to every registry. Loopback hosts always use plain HTTP. */
  readonly plainHttp?: boolean;
  /** Registry hosts (`host[:port]`) reached over plain HTTP. */
  readonly insecureHosts?: readonly string[];
  /** Mirror endpoints per reference domain, tried before the upstream for resolve and pull. */
  readonly mirrors?: Readonly<Record<string, readonly string[]>>;
  /** Credentials per registry API host; anonymous when absent or when it returns undefined. */
  readonly credentials?: CredentialsFunction;
  /** The User-Agent header. Default `berth/0.1`. */
  readonly userAgent?: string;
  /** How many blobs {@link fetchImage} and {@link pushImage} transfer at once. Default 3. */
  readonly concurrency?: number;
  /** Largest manifest or index accepted, in bytes; larger ones are `resource-exhausted`. Default 4 MiB. */
  readonly maxManifestSize?: number;
  /** Retries after 5xx, 429 and broken connections. Default 3. */
  readonly retries?: number;
  /** Base delay of the exponential backoff between retries, in milliseconds. Default 250. */
  readonly retryDelay?: number;
  /** The undici dispatcher (an `Agent`) for every request; the global one when absent. */
  readonly dispatcher?: Dispatcher;
}

/** Options of {@link Fetcher.fetch}. */
export interface FetchOptions {
  /** Start at this byte (a `Range` request); bytes before it are not returned. */
  readonly offset?: number;
  readonly signal?: AbortSignal;
}

/** Reads content of one repository from its registry. */
export interface Fetcher {
  /**
   * Opens the content of `desc` (manifests and indexes from `/manifests/`, the rest from
   * `/blobs/`), following redirects, from `offset`. The caller owns and must consume or destroy
   * the stream. Bytes are NOT verified here: callers check the digest. Throws `not-found` when no
   * endpoint has it, `unauthenticated`, `unavailable`.
   */
  fetch(desc: Descriptor, options?: FetchOptions): Promise<Readable>;
}

/** The content to upload: bytes, or a function opening a fresh stream (called once per attempt). */
export type PushSource = Uint8Array | (() => Readable | Promise<Readable>);

/** Options of {@link Pusher.push}. */
export interface PushOptions {
  /** Tag the manifest with the reference's tag (the top-level manifest of a push). */
  readonly tag?: boolean;
  /** Another repository on the same registry that holds the blob: try a cross-repository mount. */
  readonly mountFrom?: string;
  /** Blobs larger than this are uploaded in chunks (PATCH with `Content-Range`). Default 16 MiB. */
  readonly chunkThreshold?: number;
  /** Size of each chunk of a chunked upload. Default 8 MiB. */
  readonly chunkSize?: number;
  /** Called with the bytes sent so far. */
  readonly onProgress?: (offset: number) => void;
  readonly signal?: AbortSignal;
}

/** What a push did: uploaded, found the content present, or mounted it from another repository. */
export type PushResult = "pushed" | "exists" | "mounted";

/** Writes content to one repository of a registry. */
export interface Pusher {
  /**
   * Uploads `desc`: blobs through an upload session (monolithic PUT, or PATCH chunks then PUT),
   * manifests and indexes with a PUT carrying their media type, by tag when `options.tag` is set
   * and the reference has a tag, else by digest. Skips content the registry has. Throws
   * `invalid-argument` when the registry rejects the content, `unauthenticated`,
   * `permission-denied`, `unavailable`, `data-loss` when the registry computed another digest.
   */
  push(desc: Descriptor, source: PushSource, options?: PushOptions): Promise<PushResult>;
}

/** The result of {@link Resolver.resolve}. */
export interface Resolved {
  /** The normalized reference, e.g. `docker.io/library/busybox:latest`. */
  readonly name: string;
  /** The descriptor of the manifest or index the reference names. */
  readonly descriptor: Descriptor;
}

/**
 * Resolves references and opens fetchers and pushers for them (containerd's
 * `remotes.Resolver`). One resolver keeps authentication state (challenges, cached tokens) for
 * every registry it talks to; share it across pulls and pushes.
 */
export interface Resolver {
  /**
   * Finds the manifest or index `ref` names: `HEAD` (falling back to `GET`) of
   * `/v2/<repo>/manifests/<tag|digest>` on each endpoint in turn. Throws `invalid-argument` for
   * a malformed reference or a response that is not an image manifest or index, `not-found`
   * naming the reference, `unauthenticated` when credentials are refused, `resource-exhausted`
   * for a manifest above `maxManifestSize`, `unavailable` when no endpoint answers.
   */
  resolve(ref: string): Promise<Resolved>;
  /** A fetcher for the repository of `ref`. Throws `invalid-argument` for a malformed reference. */
  fetcher(ref: string): Fetcher;
  /** A pusher for the repository (and tag) of `ref`. Throws `invalid-argument` for a malformed reference. */
  pusher(ref: string): Pusher;
  /** The settings in force, for the image-level helpers. */
  readonly settings: ResolverSettings;
}

/** The effective settings of a {@link Resolver}. */
export interface ResolverSettings {
  readonly concurrency: number;
  readonly maxManifestSize: number;
}

const manifestAccept = [
  MediaType.OciIndex,
  MediaType.OciManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
  "*/*",
].join(", ");

/**
 * Creates a registry {@link Resolver}. Endpoints come from `options.hosts`, or from the simple
 * fields: mirrors first (resolve and pull), then the upstream; `docker.io` is served by
 * `registry-1.docker.io`; loopback and insecure hosts use plain HTTP. Throws `invalid-argument`
 * for a non-positive concurrency or size limit.
 */
export function createResolver(options: ResolverOptions = {}): Resolver {
  const concurrency = options.concurrency ?? 3;
  const maxManifestSize = options.maxManifestSize ?? 4 * 1024 * 1024;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw invalidArgument(`resolver concurrency must be a positive integer, got ${concurrency}`);
  }
  if (!Number.isInteger(maxManifestSize) || maxManifestSize < 1) {
    throw invalidArgument(`maxManifestSize must be a positive integer, got ${maxManifestSize}`);
  }
  const userAgent = options.userAgent ?? "berth/0.1";
  const authorizer = new Authorizer({
    credentials: options.credentials,
    dispatcher: options.dispatcher,
    userAgent,
  });
  const client = new RegistryClient({
    authorizer,
    dispatcher: options.dispatcher,
    userAgent,
    retries: options.retries ?? 3,
    retryDelay: options.retryDelay ?? 250,
  });
  const hostsOf =
    options.hosts ??
    ((domain: string) =>
      defaultHosts(domain, {
        ...(options.plainHttp === undefined ? {} : { plainHttp: options.plainHttp }),
        ...(options.insecureHosts === undefined ? {} : { insecureHosts: options.insecureHosts }),
        ...(options.mirrors === undefined ? {} : { mirrors: options.mirrors }),
      }));
  const base = { client, hostsOf, maxManifestSize };
  return {
    settings: { concurrency, maxManifestSize },
    resolve: async (ref) => resolve(base, parseReference(ref)),
    fetcher: (ref) => new RegistryFetcher(base, parseReference(ref)),
    pusher: (ref) => new RegistryPusher(base, parseReference(ref)),
  };
}

interface Base {
  readonly client: RegistryClient;
  readonly hostsOf: (domain: string) => HostConfig[];
  readonly maxManifestSize: number;
}

function endpoints(base: Base, ref: Reference, capability: HostCapability): HostConfig[] {
  const hosts = base.hostsOf(ref.domain).filter((h) => h.capabilities.includes(capability));
  if (hosts.length === 0)
    throw notFound(`no registry endpoint of ${ref.domain} may be used to ${capability}`);
  return hosts;
}

/** The URL of `/v2/<repo>/<rest>` on an endpoint, with the mirror namespace parameter. @internal */
export function endpointUrl(host: HostConfig, ref: Reference, rest: string): URL {
  const url = new URL(`${host.scheme}://${host.host}${host.path}/${ref.path}/${rest}`);
  if (host.mirror === true) url.searchParams.set("ns", ref.domain);
  return url;
}

function pullScope(ref: Reference): string {
  return `repository:${ref.path}:pull`;
}

const sniffableTypes = new Set(["", "application/json", "text/plain", "application/octet-stream"]);

async function resolve(base: Base, ref: Reference): Promise<Resolved> {
  const object = ref.digest ?? ref.tag;
  if (object === undefined)
    throw invalidArgument(`reference ${ref.toString()} names neither a tag nor a digest`);
  let firstError: unknown;
  for (const host of endpoints(base, ref, "resolve")) {
    try {
      const descriptor = await resolveOn(base, host, ref, object);
      return { name: ref.toString(), descriptor };
    } catch (err) {
      // A missing manifest on a mirror or a dead mirror is not final: the upstream may have it.
      // Malformed answers are final: they would be just as malformed from the next endpoint.
      const code = errorCode(err);
      if (
        code === ErrorCode.InvalidArgument ||
        code === ErrorCode.ResourceExhausted ||
        code === ErrorCode.Canceled
      ) {
        throw err;
      }
      if (firstError === undefined || (isNotFound(firstError) && !isNotFound(err))) firstError = err;
    }
  }
  throw firstError;
}

async function resolveOn(base: Base, host: HostConfig, ref: Reference, object: string): Promise<Descriptor> {
  const url = endpointUrl(host, ref, `manifests/${object}`);
  const headers = { accept: manifestAccept, ...host.headers };
  const what = `resolving ${ref.toString()} on ${host.host}`;
  const head = await base.client.send({ method: "HEAD", url, headers, scopes: [pullScope(ref)] });
  await head.body.dump();
  if (head.status === 404) throw notFound(`${ref.toString()}: not found on ${host.host}`);
  if (head.status === 401 || head.status === 403) throw await statusError(head, what);
  if (head.status === 200) {
    const mediaType = contentType(head);
    const digest = ref.digest ?? header(head, "docker-content-digest");
    const size = Number(header(head, "content-length"));
    if (digest !== undefined && !sniffableTypes.has(mediaType) && Number.isSafeInteger(size) && size > 0) {
      checkManifestType(mediaType, ref, host);
      if (size > base.maxManifestSize) throw tooLarge(ref, host, size, base.maxManifestSize);
      return { mediaType, digest, size };
    }
  }
  // Some registries answer HEAD without a digest or not at all: GET the document instead and
  // compute what is missing.
  const res = await base.client.send({ method: "GET", url, headers, scopes: [pullScope(ref)] });
  if (res.status !== 200) throw await statusError(res, what);
  const declared = Number(header(res, "content-length"));
  if (Number.isSafeInteger(declared) && declared > base.maxManifestSize) {
    res.body.destroy();
    throw tooLarge(ref, host, declared, base.maxManifestSize);
  }
  const bytes = await readCapped(res.body, base.maxManifestSize, () =>
    tooLarge(ref, host, undefined, base.maxManifestSize),
  );
  const computed = digestLike(ref.digest ?? "sha256:", bytes);
  if (ref.digest !== undefined && ref.digest !== computed) {
    throw dataLoss(
      `manifest ${ref.toString()} from ${host.host} has digest ${computed}, not the requested one`,
    );
  }
  let mediaType = contentType(res);
  if (sniffableTypes.has(mediaType)) mediaType = sniffMediaType(bytes) ?? mediaType;
  checkManifestType(mediaType, ref, host);
  return {
    mediaType,
    digest: ref.digest ?? header(res, "docker-content-digest") ?? computed,
    size: bytes.length,
  };
}

function contentType(res: RegistryResponse): string {
  return (header(res, "content-type") ?? "").split(";")[0]?.trim() ?? "";
}

function sniffMediaType(bytes: Uint8Array): string | undefined {
  try {
    const doc = JSON.parse(Buffer.from(bytes).toString("utf8")) as {
      mediaType?: unknown;
      manifests?: unknown;
    };
    if (typeof doc.mediaType === "string") return doc.mediaType;
    // OCI documents may omit mediaType; an index is told apart by its manifests list.
    return Array.isArray(doc.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  } catch {
    return undefined;
  }
}

function checkManifestType(mediaType: string, ref: Reference, host: HostConfig): void {
  if (!isIndexMediaType(mediaType) && !isManifestMediaType(mediaType)) {
    throw invalidArgument(
      `${ref.toString()} on ${host.host}: Content-Type ${JSON.stringify(mediaType)} is not an image manifest or index media type`,
    );
  }
}

function tooLarge(ref: Reference, host: HostConfig, size: number | undefined, limit: number): BerthError {
  return resourceExhausted(
    `manifest ${ref.toString()} on ${host.host} is ${size === undefined ? "larger than" : `${size} bytes, over`} the ${limit}-byte limit`,
  );
}

class RegistryFetcher implements Fetcher {
  constructor(
    private readonly base: Base,
    private readonly ref: Reference,
  ) {}

  async fetch(desc: Descriptor, options: FetchOptions = {}): Promise<Readable> {
    const offset = options.offset ?? 0;
    const kind =
      isIndexMediaType(desc.mediaType) || isManifestMediaType(desc.mediaType) ? "manifests" : "blobs";
    let firstError: unknown;
    for (const host of endpoints(this.base, this.ref, "pull")) {
      try {
        return await this.fetchFrom(host, kind, desc, offset, options.signal);
      } catch (err) {
        if (errorCode(err) === ErrorCode.Canceled) throw err;
        if (firstError === undefined || (isNotFound(firstError) && !isNotFound(err))) firstError = err;
      }
    }
    throw firstError;
  }

  private async fetchFrom(
    host: HostConfig,
    kind: "manifests" | "blobs",
    desc: Descriptor,
    offset: number,
    signal: AbortSignal | undefined,
  ): Promise<Readable> {
    const url = endpointUrl(host, this.ref, `${kind}/${desc.digest}`);
    const headers: Record<string, string> = { ...host.headers };
    headers.accept = kind === "manifests" ? `${desc.mediaType}, ${manifestAccept}` : "*/*";
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.base.client.send({
      method: "GET",
      url,
      headers,
      scopes: [pullScope(this.ref)],
      signal,
    });
    const what = `fetching ${kind === "manifests" ? "manifest" : "blob"} ${desc.digest} of ${this.ref.name} from ${host.host}`;
    if (res.status === 404) {
      await res.body.dump();
      throw notFound(`${what}: not found`);
    }
    if (offset > 0 && res.status === 206) return res.body;
    if (res.status !== 200) throw await statusError(res, `${what} (${redact(res.url)})`);
    if (offset === 0) return res.body;
    // The server ignored the Range header: drop the bytes the caller already has.
    return res.body.pipe(skipBytes(offset));
  }
}

function skipBytes(count: number): Transform {
  let left = count;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (left >= chunk.length) {
        left -= chunk.length;
        done();
        return;
      }
      const rest = chunk.subarray(left);
      left = 0;
      done(null, rest);
    },
  });
}

const defaultChunkThreshold = 16 * 1024 * 1024;
const defaultChunkSize = 8 * 1024 * 1024;

class RegistryPusher implements Pusher {
  private readonly host: HostConfig;

  constructor(
    private readonly base: Base,
    private readonly ref: Reference,
  ) {
    const push = endpoints(base, ref, "push")[0];
    if (push === undefined) throw notFound(`no registry endpoint of ${ref.domain} may be used to push`);
    this.host = push;
  }

  async push(desc: Descriptor, source: PushSource, options: PushOptions = {}): Promise<PushResult> {
    if (isIndexMediaType(desc.mediaType) || isManifestMediaType(desc.mediaType)) {
      return this.pushManifest(desc, source, options);
    }
    return this.pushBlob(desc, source, options);
  }

  private scopes(mountFrom?: string): string[] {
    const scopes = [`repository:${this.ref.path}:pull,push`];
    if (mountFrom !== undefined && mountFrom !== this.ref.path) scopes.push(`repository:${mountFrom}:pull`);
    return scopes;
  }

  private async pushManifest(
    desc: Descriptor,
    source: PushSource,
    options: PushOptions,
  ): Promise<PushResult> {
    const byTag = options.tag === true && this.ref.tag !== undefined;
    const scopes = this.scopes();
    if (!byTag) {
      const head = await this.base.client.send({
        method: "HEAD",
        url: endpointUrl(this.host, this.ref, `manifests/${desc.digest}`),
        headers: { accept: `${desc.mediaType}, ${manifestAccept}`, ...this.host.headers },
        scopes,
        signal: options.signal,
      });
      await head.body.dump();
      if (head.status === 200) return "exists";
    }
    const bytes =
      source instanceof Uint8Array
        ? source
        : await readCapped(await source(), this.base.maxManifestSize, () =>
            resourceExhausted(`manifest ${desc.digest} is over the ${this.base.maxManifestSize}-byte limit`),
          );
    const computed = digestLike(desc.digest, bytes);
    if (computed !== desc.digest) {
      throw dataLoss(`manifest to push has digest ${computed}, not ${desc.digest}`);
    }
    const object = byTag ? (this.ref.tag as string) : desc.digest;
    const url = endpointUrl(this.host, this.ref, `manifests/${object}`);
    const res = await this.base.client.send({
      method: "PUT",
      url,
      headers: {
        "content-type": desc.mediaType,
        "content-length": String(bytes.length),
        ...this.host.headers,
      },
      body: bytes,
      scopes,
      signal: options.signal,
    });
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) {
      throw await statusError(
        res,
        `pushing manifest ${desc.digest} (${desc.mediaType}) to ${this.ref.name}:${object}`,
      );
    }
    await res.body.dump();
    const echoed = header(res, "docker-content-digest");
    if (echoed !== undefined && echoed !== desc.digest) {
      throw dataLoss(
        `registry ${this.host.host} stored manifest ${desc.digest} of ${this.ref.name} as ${echoed}`,
      );
    }
    options.onProgress?.(bytes.length);
    return "pushed";
  }

  private async pushBlob(desc: Descriptor, source: PushSource, options: PushOptions): Promise<PushResult> {
    const scopes = this.scopes(options.mountFrom);
    const head = await this.base.client.send({
      method: "HEAD",
      url: endpointUrl(this.host, this.ref, `blobs/${desc.digest}`),
      headers: { ...this.host.headers },
      scopes,
      signal: options.signal,
    });
    await head.body.dump();
    if (head.status === 200) return "exists";
    // Other answers than 200 and 404 (some registries refuse HEAD) just mean "upload it"; auth
    // failures would only repeat on the upload, so they end the push here.
    if (head.status === 401 || head.status === 403) {
      throw await statusError(head, `checking blob ${desc.digest} in ${this.ref.name}`);
    }
    const start = endpointUrl(this.host, this.ref, "blobs/uploads/");
    if (options.mountFrom !== undefined && options.mountFrom !== this.ref.path) {
      start.searchParams.set("mount", desc.digest);
      start.searchParams.set("from", options.mountFrom);
    }
    const post = await this.base.client.send({
      method: "POST",
      url: start,
      headers: { "content-length": "0", ...this.host.headers },
      scopes,
      signal: options.signal,
    });
    if (post.status === 201) {
      await post.body.dump();
      return "mounted";
    }
    if (post.status !== 202)
      throw await statusError(post, `starting an upload of blob ${desc.digest} to ${this.ref.name}`);
    await post.body.dump();
    let location = uploadLocation(post, this.ref);
    const threshold = options.chunkThreshold ?? defaultChunkThreshold;
    if (desc.size <= threshold) {
      const put = withDigest(location, desc.digest);
      const res = await this.base.client.send({
        method: "PUT",
        url: put,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(desc.size),
          ...this.host.headers,
        },
        body: source,
        scopes,
        signal: options.signal,
      });
      await this.finishUpload(res, desc);
      options.onProgress?.(desc.size);
      return "pushed";
    }
    const chunkSize = options.chunkSize ?? defaultChunkSize;
    let offset = 0;
    for await (const chunk of chunks(
      source instanceof Uint8Array ? Readable.from([source]) : await source(),
      chunkSize,
    )) {
      const res = await this.base.client.send({
        method: "PATCH",
        url: location,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(chunk.length),
          "content-range": `${offset}-${offset + chunk.length - 1}`,
          ...this.host.headers,
        },
        body: chunk,
        scopes,
        signal: options.signal,
      });
      if (res.status !== 202) {
        throw await statusError(
          res,
          `uploading bytes ${offset}-${offset + chunk.length - 1} of blob ${desc.digest} to ${this.ref.name}`,
        );
      }
      await res.body.dump();
      location = uploadLocation(res, this.ref);
      offset += chunk.length;
      options.onProgress?.(offset);
    }
    if (offset !== desc.size) {
      throw dataLoss(`blob ${desc.digest} to push gave ${offset} bytes, expected ${desc.size}`);
    }
    const res = await this.base.client.send({
      method: "PUT",
      url: withDigest(location, desc.digest),
      headers: { "content-length": "0", ...this.host.headers },
      scopes,
      signal: options.signal,
    });
    await this.finishUpload(res, desc);
    return "pushed";
  }

  private async finishUpload(res: RegistryResponse, desc: Descriptor): Promise<void> {
    if (res.status !== 201 && res.status !== 204) {
      const err = await statusError(res, `completing the upload of blob ${desc.digest} to ${this.ref.name}`);
      // The registry computes the digest of what it got; a mismatch means the bytes were not the blob.
      if (/DIGEST_INVALID|SIZE_INVALID/.test(err.message)) throw dataLoss(err.message, { cause: err });
      throw err;
    }
    await res.body.dump();
    const echoed = header(res, "docker-content-digest");
    if (echoed !== undefined && echoed !== desc.digest) {
      throw dataLoss(
        `registry ${this.host.host} stored blob ${desc.digest} of ${this.ref.name} as ${echoed}`,
      );
    }
  }
}

function uploadLocation(res: RegistryResponse, ref: Reference): URL {
  const location = header(res, "location");
  if (location === undefined || location === "") {
    throw unavailable(`registry answered an upload to ${ref.name} without a Location header`);
  }
  return new URL(location, res.url);
}

function withDigest(location: URL, digest: string): URL {
  const url = new URL(location);
  url.searchParams.set("digest", digest);
  return url;
}

async function* chunks(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    while (buf.length > 0) {
      const take = Math.min(size - n, buf.length);
      pending.push(buf.subarray(0, take));
      n += take;
      buf = buf.subarray(take);
      if (n === size) {
        yield Buffer.concat(pending, n);
        pending = [];
        n = 0;
      }
    }
  }
  if (n > 0) yield Buffer.concat(pending, n);
}
