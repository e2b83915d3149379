import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { type ContentStore, createLocalContentStore, type Descriptor } from "@berth/content";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  isAlreadyExists,
  isNotFound,
  notImplemented,
} from "@berth/errdefs";
import {
  allPlatforms,
  children,
  exportImages,
  formatPlatform,
  type ImageConfig,
  type ImageManifest,
  importImages,
  isIndexMediaType,
  isManifestMediaType,
  parseReference,
  resolveImage,
  walkImage,
} from "@berth/images";
import {
  collectGarbage,
  type GcResult,
  type ImageRecord,
  type ImageStore,
  type Metadata,
  namespacedContentStore,
  openMetadata,
  validateNamespace,
} from "@berth/metadata";
import {
  type Credentials,
  type CredentialsFunction,
  createResolver,
  fetchImage,
  loadDockerCredentials,
  type ProgressEvent,
  pushImage,
  type Resolver,
} from "@berth/remotes";
import { Agent } from "undici";
import { choosePlatforms } from "./platforms.js";

/** Where and how a client works. */
export interface ClientOptions {
  /** Root directory of persistent data (metadata.db, content/). Default `/var/lib/berth`. */
  readonly root?: string;
  /** State directory (sockets, bundles). Default `/run/berth`. */
  readonly state?: string;
  /** The namespace every call works in. Default `default`. */
  readonly namespace?: string;
  /**
   * berthd's socket. When given the client talks to the daemon; until berthd exists this is
   * `not-implemented`. Omit it for embedded mode.
   */
  readonly address?: string;
}

/** Options shared by calls that talk to a registry. */
export interface RegistryCallOptions {
  /** Use plain HTTP for this registry (loopback registries use HTTP anyway). */
  readonly plainHttp?: boolean;
  /** Skip TLS certificate verification. */
  readonly skipVerify?: boolean;
  /** Credentials for the registry; otherwise the docker config file's, if any. */
  readonly credentials?: Credentials;
  /** Platforms in `os/arch[/variant]` form; default the host's. */
  readonly platforms?: readonly string[];
  /** Every platform of a multi-platform image. */
  readonly allPlatforms?: boolean;
  readonly onProgress?: (event: ProgressEvent) => void;
  readonly signal?: AbortSignal;
}

/** Options of {@link Client.push}. */
export interface PushCallOptions extends RegistryCallOptions {
  /** The local image to push; default the remote name. */
  readonly local?: string;
}

/** Options of {@link Client.importImages}. */
export interface ImportCallOptions {
  /** Base name for images whose archive names only a tag (ctr's `--base-name`). */
  readonly baseName?: string;
  readonly platforms?: readonly string[];
  readonly allPlatforms?: boolean;
  /** Also name each image `<name>@<digest>`. */
  readonly digests?: boolean;
}

/** A summary of an image for listings. */
export interface ImageSummary {
  /** Bytes of the image's blobs for the host platform (or of what is present, when incomplete). */
  readonly size: number;
  /** False when blobs of the host platform's image are missing from the store. */
  readonly complete: boolean;
  /** Platforms the image offers, `os/arch[/variant]`. */
  readonly platforms: string[];
}

/** What {@link Client.inspectImage} returns. */
export interface ImageDetails {
  readonly name: string;
  readonly target: Descriptor;
  readonly labels: Readonly<Record<string, string>>;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly manifestDescriptor: Descriptor;
  readonly manifest: ImageManifest;
  readonly config: ImageConfig;
}

/**
 * A berth client. The embedded implementation works in-process over the stores under `root`;
 * several processes may share one root. Call {@link Client.close} when done.
 */
export interface Client {
  readonly namespace: string;
  /** The namespace's view of the content store. */
  readonly content: ContentStore;
  /** The namespace's image records. */
  readonly images: ImageStore;
  /**
   * Pulls `ref` (normalized like docker: `busybox` → `docker.io/library/busybox:latest`) and
   * records the image. Content is held by a lease until the record exists, so a concurrent
   * garbage collection cannot take it. Pulling again fetches nothing.
   */
  pull(ref: string, options?: RegistryCallOptions): Promise<ImageRecord>;
  /** Pushes a local image to `ref`. `not-found` if the local image does not exist. */
  push(ref: string, options?: PushCallOptions): Promise<void>;
  /** Image records matching any of `filters`, sorted by name. */
  listImages(filters?: readonly string[]): Promise<ImageRecord[]>;
  /** The record named `name` (exactly, or as a normalized reference). `not-found` otherwise. */
  getImage(name: string): Promise<ImageRecord>;
  /** Size, completeness and platforms of an image. */
  imageSummary(image: ImageRecord): Promise<ImageSummary>;
  /**
   * Deletes an image record. With `sync` (the default in embedded mode, where no daemon collects
   * garbage later) the content only this image held is collected before returning.
   */
  deleteImage(name: string, options?: { readonly sync?: boolean }): Promise<void>;
  /** Names `source`'s target `target` too. `already-exists` unless `force`. */
  tagImage(source: string, target: string, options?: { readonly force?: boolean }): Promise<ImageRecord>;
  /** Imports an OCI layout (tar or directory) or a `docker save` archive and records its images. */
  importImages(
    source: Readable | { readonly dir: string },
    options?: ImportCallOptions,
  ): Promise<ImageRecord[]>;
  /** Writes the named images as an OCI layout tar to `out` (the caller ends `out`). */
  exportImages(
    out: Writable,
    names: readonly string[],
    options?: { readonly platforms?: readonly string[]; readonly allPlatforms?: boolean },
  ): Promise<void>;
  /** Record, manifest and config of an image for one platform (default the host's). */
  inspectImage(name: string, options?: { readonly platform?: string }): Promise<ImageDetails>;
  /** Runs garbage collection over the whole root (every namespace). */
  garbageCollect(): Promise<GcResult>;
  /** Releases the database connection. */
  close(): Promise<void>;
}

/**
 * Creates a client. With `address` it would talk to berthd (a later issue); without, it opens the
 * stores under `root` in this process (embedded mode), creating them (mode 0700) if needed.
 * Errors: `invalid-argument` for a malformed namespace; `not-implemented` for `address`.
 */
export async function createClient(options: ClientOptions = {}): Promise<Client> {
  const namespace = options.namespace ?? "default";
  validateNamespace(namespace);
  if (options.address !== undefined) {
    throw notImplemented(
      `cannot connect to berthd at ${options.address}: the daemon is not part of this release yet; omit --address to use embedded mode`,
    );
  }
  const root = options.root ?? "/var/lib/berth";
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const backing = await createLocalContentStore(join(root, "content"));
  const meta = openMetadata(join(root, "metadata.db"), { contentStore: backing });
  return new EmbeddedClient(namespace, meta, backing);
}

class EmbeddedClient implements Client {
  readonly content: ContentStore;
  readonly images: ImageStore;

  constructor(
    readonly namespace: string,
    private readonly meta: Metadata,
    private readonly backing: ContentStore,
  ) {
    this.content = namespacedContentStore(meta, backing, namespace);
    this.images = meta.images(namespace);
  }

  private resolver(options: RegistryCallOptions, ref: string): Resolver {
    let credentials: CredentialsFunction | undefined;
    if (options.credentials !== undefined) {
      const given = options.credentials;
      credentials = async () => given;
    } else {
      credentials = loadDockerCredentials();
    }
    const host = parseReference(ref).domain;
    return createResolver({
      ...(options.plainHttp ? { insecureHosts: [host] } : {}),
      credentials,
      ...(options.skipVerify ? { dispatcher: new Agent({ connect: { rejectUnauthorized: false } }) } : {}),
    });
  }

  private async upsert(name: string, target: Descriptor, labels?: Readonly<Record<string, string>>) {
    try {
      return await this.images.create({ name, target, ...(labels ? { labels } : {}) });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      return await this.images.update({ name, target, ...(labels ? { labels } : {}) }, ["target"]);
    }
  }

  async pull(ref: string, options: RegistryCallOptions = {}): Promise<ImageRecord> {
    const name = parseReference(ref).toString();
    const choice = choosePlatforms(options);
    const resolver = this.resolver(options, name);
    return this.meta.leases(this.namespace).withLease(async (lease) => {
      const store = namespacedContentStore(this.meta, this.backing, this.namespace, { lease: lease.id });
      let target: Descriptor | undefined;
      // One fetch per requested platform: fetchImage keeps the best manifest of each index, and
      // content already fetched for an earlier platform is found in the store, not fetched again.
      for (const matcher of choice.matchers) {
        const result = await fetchImage(resolver, store, name, {
          platform: matcher,
          allPlatforms: choice.all,
          ...(options.onProgress ? { onProgress: options.onProgress } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        });
        target = result.target;
      }
      if (target === undefined) throw invalidArgument(`pull ${name}: no platform selected`);
      return this.upsert(name, target);
    });
  }

  async push(ref: string, options: PushCallOptions = {}): Promise<void> {
    const remote = parseReference(ref).toString();
    const image = await this.getImage(options.local ?? ref);
    const choice = choosePlatforms(options);
    const explicit = options.allPlatforms || (options.platforms?.length ?? 0) > 0;
    await pushImage(this.resolver(options, remote), this.content, remote, image.target, {
      ...(explicit && !choice.all ? { platform: choice.any } : { allPlatforms: true }),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  listImages(filters?: readonly string[]): Promise<ImageRecord[]> {
    return this.images.list(filters);
  }

  async getImage(name: string): Promise<ImageRecord> {
    try {
      return await this.images.get(name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      let normalized: string;
      try {
        normalized = parseReference(name).toString();
      } catch {
        throw err;
      }
      if (normalized === name) throw err;
      return this.images.get(normalized);
    }
  }

  async imageSummary(image: ImageRecord): Promise<ImageSummary> {
    const platforms = new Set<string>();
    let size = 0;
    let complete = true;
    const host = choosePlatforms({}).any;
    try {
      await walkImage(
        this.content,
        image.target,
        async (desc) => {
          size += desc.size;
          if (isManifestMediaType(desc.mediaType) && desc.platform === undefined) {
            const resolved = await resolveImage(this.content, desc, allPlatforms);
            platforms.add(
              formatPlatform({
                os: resolved.config.os,
                architecture: resolved.config.architecture,
                ...(resolved.config.variant === undefined ? {} : { variant: resolved.config.variant }),
              }),
            );
          }
        },
        host,
        { limitManifests: 1 },
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
      complete = false;
    }
    if (isIndexMediaType(image.target.mediaType)) {
      try {
        for (const child of await children(this.content, image.target)) {
          if (child.platform) platforms.add(formatPlatform(child.platform));
        }
      } catch (err) {
        if (!isNotFound(err)) throw err;
        complete = false;
      }
    }
    return { size, complete, platforms: [...platforms].sort() };
  }

  async deleteImage(name: string, options: { readonly sync?: boolean } = {}): Promise<void> {
    const image = await this.getImage(name);
    await this.images.delete(image.name, options.sync === false ? {} : { sync: true });
  }

  async tagImage(source: string, target: string, options: { readonly force?: boolean } = {}) {
    const image = await this.getImage(source);
    const name = parseReference(target).toString();
    try {
      return await this.images.create({ name, target: image.target, labels: image.labels });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      if (!options.force) throw alreadyExists(`image ${name} exists already; use force to replace it`);
      return this.images.update({ name, target: image.target, labels: image.labels });
    }
  }

  async importImages(
    source: Readable | { readonly dir: string },
    options: ImportCallOptions = {},
  ): Promise<ImageRecord[]> {
    return this.meta.leases(this.namespace).withLease(async (lease) => {
      const store = namespacedContentStore(this.meta, this.backing, this.namespace, { lease: lease.id });
      const imported = await importImages(store, source, {
        ...(options.baseName === undefined ? {} : { baseName: options.baseName }),
      });
      if (imported.length === 0) {
        throw failedPrecondition(
          "the archive names no image (no org.opencontainers.image.ref.name or RepoTags); pass a base name",
        );
      }
      const records: ImageRecord[] = [];
      for (const image of imported) {
        records.push(await this.upsert(image.name, image.target));
        if (options.digests) {
          const base = parseReference(image.name).name;
          records.push(await this.upsert(`${base}@${image.target.digest}`, image.target));
        }
      }
      return records;
    });
  }

  async exportImages(
    out: Writable,
    names: readonly string[],
    options: { readonly platforms?: readonly string[]; readonly allPlatforms?: boolean } = {},
  ): Promise<void> {
    if (names.length === 0) throw invalidArgument("export needs at least one image name");
    const images = [];
    for (const name of names) {
      const image = await this.getImage(name);
      images.push({ name: image.name, target: image.target });
    }
    const choice = choosePlatforms(options);
    await exportImages(
      this.content,
      images,
      out,
      choice.all ? { allPlatforms: true } : { platform: choice.any },
    );
  }

  async inspectImage(name: string, options: { readonly platform?: string } = {}): Promise<ImageDetails> {
    const image = await this.getImage(name);
    const choice = choosePlatforms(options.platform === undefined ? {} : { platforms: [options.platform] });
    const resolved = await resolveImage(this.content, image.target, choice.any);
    return {
      name: image.name,
      target: image.target,
      labels: image.labels,
      createdAt: image.createdAt,
      updatedAt: image.updatedAt,
      manifestDescriptor: resolved.manifestDesc,
      manifest: resolved.manifest,
      config: resolved.config,
    };
  }

  garbageCollect(): Promise<GcResult> {
    return collectGarbage(this.meta, this.backing);
  }

  async close(): Promise<void> {
    this.meta.close();
  }
}
