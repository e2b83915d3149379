import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { type ContentStore, createLocalContentStore, type Descriptor, Labels } from "@berth/content";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  isAlreadyExists,
  isNotFound,
  notFound,
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
  type PlatformMatcher,
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
  type ContainerNetwork,
  createNetworkManager,
  type NetworkManager,
  type NetworkManagerOptions,
  type NetworkMode,
  NetworkModeKind,
  type PortMapping,
  parseNetworkMode,
  parsePortMapping,
} from "@berth/network";
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
import { checkContainerId, createRuntime, type Spec, type StdioSpec } from "@berth/runtime";
import { namespacedSnapshotter, type Snapshotter } from "@berth/snapshots";
import { createNativeSnapshotter } from "@berth/snapshotter-native";
import { createOverlaySnapshotter } from "@berth/snapshotter-overlay";
import { mountAll, unmountRecursive } from "@berth/sys";
import { Agent } from "undici";
import { type CommitSnapshotOptions, type CommitSnapshotResult, commitSnapshot } from "./commit.js";
import { specFromImage } from "./oci-spec.js";
import { choosePlatforms } from "./platforms.js";
import { type UnpackEvent, type UnpackResult, unpackImage, unpackLayers } from "./unpack.js";

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
  /**
   * Container networking (embedded mode): the namespace playing the host, the nftables table, CNI
   * directories. Network state lives in `<root>/network`.
   */
  readonly network?: Omit<NetworkManagerOptions, "stateDir">;
}

/** Label recording which image an active snapshot made by {@link Client.mountImage} came from. */
export const ImageLabel = "io.berth.image";

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

/** The snapshotters embedded mode knows, by the names containerd uses. */
export const SnapshotterName = { Overlay: "overlayfs", Native: "native" } as const;

/** Options of {@link Client.unpack}. */
export interface UnpackCallOptions {
  /** Snapshotter name; default `overlayfs`. */
  readonly snapshotter?: string;
  /** Platform in `os/arch[/variant]` form; default the host's. */
  readonly platform?: string;
  readonly onEvent?: (event: UnpackEvent) => void;
}

/** Options of {@link Client.commit}. */
export interface CommitCallOptions extends CommitSnapshotOptions {
  readonly snapshotter?: string;
  /** The base image; default the snapshot's `io.berth.image` label. */
  readonly base?: string;
  readonly platform?: string;
}

/** Options of {@link Client.pull}. */
export interface PullCallOptions extends RegistryCallOptions {
  /**
   * Also unpack the image into a snapshotter. For a single platform, each layer is applied as
   * soon as its blob is in the store, while later layers still download.
   */
  readonly unpack?: UnpackCallOptions;
}

/** Options of {@link Client.run}. */
export interface RunCallOptions {
  /** Arguments replacing the image's Cmd. */
  readonly args?: readonly string[];
  /** Extra `KEY=value` environment entries. */
  readonly env?: readonly string[];
  /** Remove the container's snapshot when it exits. */
  readonly rm?: boolean;
  readonly snapshotter?: string;
  /** Mount the root filesystem read-only. */
  readonly readOnly?: boolean;
  /**
   * The container's network (a mode or its `--network` text: `none`, `host`, `bridge`, a berth
   * network's name, `container:<id>`, `ns:<path>`, `cni:<name>`). Default `none` like `ctr run`
   * (a namespace of its own with only lo), or the default bridge network when `ports` are given.
   */
  readonly network?: NetworkMode | string;
  /** Ports to publish (`[hostIP:]hostPort:containerPort[/udp]` or parsed mappings). */
  readonly ports?: readonly (PortMapping | string)[];
  /** The container's stdio (fds); this process's by default. */
  readonly stdio?: StdioSpec;
  /** Aborting kills the container (SIGKILL to all its processes); run then resolves with its exit code. */
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
  /**
   * Platforms (`os/arch[/variant]`) of multi-platform images to check and keep (labelled for
   * garbage collection); blobs of others in the archive are stored but left unreferenced. Default:
   * the host's and what it can run.
   */
  readonly platforms?: readonly string[];
  /** Check and keep every platform. */
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
  pull(ref: string, options?: PullCallOptions): Promise<ImageRecord>;
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
  /**
   * Writes the named images as an OCI layout tar to `out` (the caller ends `out`), with Docker's
   * `manifest.json` beside it for `docker load` unless `skipDockerManifest` is set.
   */
  exportImages(
    out: Writable,
    names: readonly string[],
    options?: {
      readonly platforms?: readonly string[];
      readonly allPlatforms?: boolean;
      readonly skipDockerManifest?: boolean;
    },
  ): Promise<void>;
  /** Record, manifest and config of an image for one platform (default the host's). */
  inspectImage(name: string, options?: { readonly platform?: string }): Promise<ImageDetails>;
  /** The namespace's view of a snapshotter (default `overlayfs`). `not-found` for an unknown name. */
  snapshotter(name?: string): Promise<Snapshotter>;
  /**
   * Unpacks an image's layers into a snapshotter (skipping layers already there) and returns the
   * top chain ID. Work is protected by a lease until the image's config records the chain.
   */
  unpack(name: string, options?: UnpackCallOptions): Promise<UnpackResult>;
  /**
   * Unpacks `name` if needed, prepares an active snapshot keyed `target` on its top layer (labels
   * record the image), and mounts it at `target`.
   */
  mountImage(
    name: string,
    target: string,
    options?: UnpackCallOptions & { readonly readOnly?: boolean },
  ): Promise<void>;
  /** Unmounts `target`; with `removeSnapshot`, also removes the snapshot keyed `target`. */
  unmountImage(
    target: string,
    options?: { readonly snapshotter?: string; readonly removeSnapshot?: boolean },
  ): Promise<void>;
  /**
   * Commits the changes of the active snapshot `key` as a new image named `name` on top of the
   * image it was made from (the `io.berth.image` label `mountImage` sets) or `options.base`.
   */
  commit(key: string, name: string, options?: CommitCallOptions): Promise<ImageRecord>;
  /**
   * Runs a container from an image in this process's runtime (`berth-runc` semantics), the
   * embedded form of `ctr run --rm`: unpacks the image, prepares an active snapshot keyed `id`,
   * mounts it as the bundle's rootfs, writes a spec from the image config, runs the container with
   * this process's stdio, and returns its exit code. The snapshot is removed afterwards with
   * `rm`, kept (for `berth commit`) otherwise.
   */
  run(name: string, id: string, options?: RunCallOptions): Promise<number>;
  /** The network of a container started by {@link Client.run} (addresses, mode, ports); `not-found` when it has none. */
  inspectContainerNetwork(id: string): Promise<ContainerNetwork>;
  /** Runs garbage collection over the whole root (every namespace). */
  garbageCollect(): Promise<GcResult>;
  /** Releases the database connection and, if one was used, the network manager's open sockets. */
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
  return new EmbeddedClient(
    namespace,
    meta,
    backing,
    root,
    options.state ?? "/run/berth",
    options.network ?? {},
  );
}

class EmbeddedClient implements Client {
  readonly content: ContentStore;
  readonly images: ImageStore;

  private readonly backends = new Map<string, Promise<Snapshotter>>();

  constructor(
    readonly namespace: string,
    private readonly meta: Metadata,
    private readonly backing: ContentStore,
    private readonly root: string,
    private readonly state: string,
    private readonly networkOptions: Omit<NetworkManagerOptions, "stateDir">,
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

  async pull(ref: string, options: PullCallOptions = {}): Promise<ImageRecord> {
    const name = parseReference(ref).toString();
    const choice = choosePlatforms(options);
    const resolver = this.resolver(options, name);
    return this.meta.leases(this.namespace).withLease(async (lease) => {
      const store = namespacedContentStore(this.meta, this.backing, this.namespace, { lease: lease.id });
      const unpack = options.unpack;
      if (unpack !== undefined && !choice.all && choice.matchers.length === 1) {
        const target = await this.fetchAndUnpack(
          resolver,
          store,
          name,
          choice.any,
          lease.id,
          options,
          unpack,
        );
        return this.upsert(name, target);
      }
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
      const record = await this.upsert(name, target);
      if (unpack !== undefined) {
        const snapshotterName = unpack.snapshotter ?? SnapshotterName.Overlay;
        const snapshots = await this.snapshotter(snapshotterName, lease.id);
        await unpackImage(store, snapshots, snapshotterName, target, choice.any, unpack.onEvent);
      }
      return record;
    });
  }

  /**
   * Fetches one platform of `name` and unpacks it at the same time: the manifest is handed over
   * as soon as it is verified, and each layer is applied once its blob is committed. A failure on
   * either side cancels the other.
   */
  private async fetchAndUnpack(
    resolver: Resolver,
    store: ContentStore,
    name: string,
    matcher: PlatformMatcher,
    lease: string,
    options: RegistryCallOptions,
    unpack: UnpackCallOptions,
  ): Promise<Descriptor> {
    const snapshotterName = unpack.snapshotter ?? SnapshotterName.Overlay;
    const snapshots = await this.snapshotter(snapshotterName, lease);
    const committed = new Set<string>();
    const waiting = new Map<string, Array<{ resolve: () => void; reject: (err: unknown) => void }>>();
    let failure: { err: unknown } | undefined;
    const fail = (err: unknown) => {
      failure ??= { err };
      for (const list of waiting.values()) for (const w of list) w.reject(err);
      waiting.clear();
    };
    const waitForBlob = (digest: string): Promise<void> => {
      if (committed.has(digest)) return Promise.resolve();
      if (failure) return Promise.reject(failure.err);
      return new Promise((resolve, reject) => {
        const list = waiting.get(digest) ?? [];
        list.push({ resolve, reject });
        waiting.set(digest, list);
      });
    };
    let manifestSeen: (manifest: ImageManifest) => void = () => {};
    const manifest = new Promise<ImageManifest>((resolve) => {
      manifestSeen = resolve;
    });
    const controller = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    const fetching = fetchImage(resolver, store, name, {
      platform: matcher,
      signal,
      onManifest: (_desc, m) => manifestSeen(m),
      onProgress: (event) => {
        if ((event.kind === "done" || event.kind === "exists") && event.digest !== undefined) {
          committed.add(event.digest);
          for (const w of waiting.get(event.digest) ?? []) w.resolve();
          waiting.delete(event.digest);
        }
        options.onProgress?.(event);
      },
    });
    const fetched = fetching.then(
      (result) => {
        // An image without a manifest for this platform never calls onManifest.
        fail(notFound(`pull ${name}: no image manifest to unpack`));
        return result;
      },
      (err: unknown) => {
        fail(err);
        throw err;
      },
    );
    let seen = false;
    void manifest.then(() => {
      seen = true;
    });
    const unpacking = Promise.race([
      manifest,
      fetched.then(async () => {
        await Promise.resolve();
        if (!seen) throw notFound(`pull ${name}: no image manifest to unpack`);
        return manifest;
      }),
    ]).then((m) =>
      unpackLayers(store, snapshots, snapshotterName, m, {
        waitForBlob,
        ...(unpack.onEvent ? { onEvent: unpack.onEvent } : {}),
      }),
    );
    try {
      const [result] = await Promise.all([fetched, unpacking]);
      return result.target;
    } catch (err) {
      controller.abort();
      await Promise.allSettled([fetched, unpacking]);
      throw err;
    }
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
    await this.images.delete(image.name);
    if (options.sync !== false) await this.garbageCollect();
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
      const requested = options.allPlatforms || (options.platforms?.length ?? 0) > 0;
      const choice = choosePlatforms(options);
      const imported = await importImages(store, source, {
        ...(options.baseName === undefined ? {} : { baseName: options.baseName }),
        ...(!requested ? {} : choice.all ? { allPlatforms: true } : { platform: choice.any }),
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
    options: {
      readonly platforms?: readonly string[];
      readonly allPlatforms?: boolean;
      readonly skipDockerManifest?: boolean;
    } = {},
  ): Promise<void> {
    if (names.length === 0) throw invalidArgument("export needs at least one image name");
    const images = [];
    for (const name of names) {
      const image = await this.getImage(name);
      images.push({ name: image.name, target: image.target });
    }
    // Exactly the platforms asked for (the host's by default), as ctr images export does.
    const choice = choosePlatforms(options, { strict: true });
    await exportImages(this.content, images, out, {
      ...(choice.all ? { allPlatforms: true } : { platform: choice.any }),
      ...(options.skipDockerManifest ? { skipDockerManifest: true } : {}),
    });
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

  private backend(name: string): Promise<Snapshotter> {
    let backend = this.backends.get(name);
    if (backend === undefined) {
      const dir = join(this.root, "snapshots", name);
      if (name === SnapshotterName.Overlay) backend = createOverlaySnapshotter(dir);
      else if (name === SnapshotterName.Native) backend = createNativeSnapshotter(dir);
      else {
        throw notFound(
          `snapshotter ${JSON.stringify(name)} is not known (embedded mode has ${Object.values(SnapshotterName).join(", ")})`,
        );
      }
      this.backends.set(name, backend);
    }
    return backend;
  }

  async snapshotter(name: string = SnapshotterName.Overlay, lease?: string): Promise<Snapshotter> {
    return namespacedSnapshotter(
      this.meta,
      await this.backend(name),
      name,
      this.namespace,
      lease === undefined ? {} : { lease },
    );
  }

  async unpack(name: string, options: UnpackCallOptions = {}): Promise<UnpackResult> {
    const image = await this.getImage(name);
    const snapshotterName = options.snapshotter ?? SnapshotterName.Overlay;
    const choice = choosePlatforms(options.platform === undefined ? {} : { platforms: [options.platform] });
    return this.meta.leases(this.namespace).withLease(async (lease) => {
      const snapshots = await this.snapshotter(snapshotterName, lease.id);
      const content = namespacedContentStore(this.meta, this.backing, this.namespace, { lease: lease.id });
      return unpackImage(content, snapshots, snapshotterName, image.target, choice.any, options.onEvent);
    });
  }

  async mountImage(
    name: string,
    target: string,
    options: UnpackCallOptions & { readonly readOnly?: boolean } = {},
  ): Promise<void> {
    const image = await this.getImage(name);
    const unpacked = await this.unpack(image.name, options);
    const snapshots = await this.snapshotter(options.snapshotter ?? SnapshotterName.Overlay);
    const labels = { [ImageLabel]: image.name, [Labels.GcRoot]: new Date().toISOString() };
    const mounts = options.readOnly
      ? await snapshots.view(target, unpacked.chainId, { labels })
      : await snapshots.prepare(target, unpacked.chainId, { labels });
    try {
      mountAll(mounts, target);
    } catch (err) {
      await snapshots.remove(target).catch(() => undefined);
      throw err;
    }
  }

  async unmountImage(
    target: string,
    options: { readonly snapshotter?: string; readonly removeSnapshot?: boolean } = {},
  ): Promise<void> {
    unmountRecursive(target);
    if (options.removeSnapshot) {
      const snapshots = await this.snapshotter(options.snapshotter ?? SnapshotterName.Overlay);
      await snapshots.remove(target);
    }
  }

  async commit(key: string, name: string, options: CommitCallOptions = {}): Promise<ImageRecord> {
    const target = parseReference(name).toString();
    return this.meta.leases(this.namespace).withLease(async (lease) => {
      const snapshots = await this.snapshotter(options.snapshotter ?? SnapshotterName.Overlay, lease.id);
      const baseName = options.base ?? (await snapshots.stat(key)).labels[ImageLabel];
      if (baseName === undefined) {
        throw invalidArgument(
          `snapshot ${key} does not record its image (no ${ImageLabel} label); name a base image`,
        );
      }
      const base = await this.getImage(baseName);
      const content = namespacedContentStore(this.meta, this.backing, this.namespace, { lease: lease.id });
      const choice = choosePlatforms(options.platform === undefined ? {} : { platforms: [options.platform] });
      const result: CommitSnapshotResult = await commitSnapshot(
        content,
        snapshots,
        key,
        base.target,
        choice.any,
        options,
      );
      return this.upsert(target, result.manifest);
    });
  }

  #network: NetworkManager | undefined;

  private network(): NetworkManager {
    this.#network ??= createNetworkManager({ ...this.networkOptions, stateDir: join(this.root, "network") });
    return this.#network;
  }

  /**
   * The network manager's key for a container: its id in the default namespace, `<namespace>.<id>`
   * in others (network records are shared by every namespace of the root).
   */
  private networkKey(id: string): string {
    return this.namespace === "default" ? id : `${this.namespace}.${id}`;
  }

  /** Tears down network records of containers that no runtime root of this state dir knows. */
  private async sweepNetworks(): Promise<void> {
    const live = new Set<string>();
    const roots = join(this.state, "runtime");
    let namespaces: string[] = [];
    try {
      namespaces = readdirSync(roots);
    } catch {
      // No container ever ran here.
    }
    for (const ns of namespaces) {
      for (const c of createRuntime({ root: join(roots, ns) }).list()) {
        live.add(ns === "default" ? c.id : `${ns}.${c.id}`);
      }
    }
    await this.network().sweep((key) => live.has(key));
  }

  async inspectContainerNetwork(id: string): Promise<ContainerNetwork> {
    checkContainerId(id);
    return this.network().inspect(this.networkKey(id));
  }

  async run(name: string, id: string, options: RunCallOptions = {}): Promise<number> {
    checkContainerId(id);
    const ports = (options.ports ?? []).map((p) => (typeof p === "string" ? parsePortMapping(p) : p));
    let mode: NetworkMode =
      typeof options.network === "string"
        ? parseNetworkMode(options.network)
        : (options.network ??
          (ports.length > 0 ? parseNetworkMode("bridge") : { kind: NetworkModeKind.None }));
    if (mode.kind === NetworkModeKind.Container) {
      checkContainerId(mode.container);
      mode = { ...mode, container: this.networkKey(mode.container) };
    }
    const image = await this.getImage(name);
    const snapshotterName = options.snapshotter ?? SnapshotterName.Overlay;
    const unpacked = await this.unpack(image.name, { snapshotter: snapshotterName });
    const snapshots = await this.snapshotter(snapshotterName);
    const network = this.network();
    const key = this.networkKey(id);
    await this.sweepNetworks();
    const plan = await network.prepare(key, { mode, ports, hostname: id });
    const bundle = join(this.state, this.namespace, id);
    const rootfs = join(bundle, "rootfs");
    let exitCode: number;
    try {
      const mounts = await snapshots.prepare(id, unpacked.chainId, {
        labels: { [ImageLabel]: image.name, [Labels.GcRoot]: new Date().toISOString() },
      });
      try {
        mkdirSync(rootfs, { recursive: true, mode: 0o700 });
        mountAll(mounts, rootfs);
        try {
          const config = (await resolveImage(this.content, image.target, choosePlatforms({}).any)).config;
          const base = specFromImage(config, {
            rootfs: "rootfs",
            hostname: id,
            ...(options.args === undefined ? {} : { args: options.args }),
            ...(options.env === undefined ? {} : { env: options.env }),
            ...(options.readOnly ? { readOnly: true } : {}),
          });
          const spec: Spec = {
            ...base,
            mounts: [...(base.mounts ?? []), ...plan.mounts],
            linux: {
              ...base.linux,
              namespaces: [
                ...(base.linux?.namespaces ?? []).filter((ns) => ns.type !== "network"),
                ...(plan.namespace === undefined ? [] : [plan.namespace]),
              ],
            },
          };
          writeFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 2), { mode: 0o600 });
          const runtime = createRuntime({ root: join(this.state, "runtime", this.namespace) });
          const kill = () => {
            runtime.kill(id, "SIGKILL", { all: true }).catch(() => undefined);
          };
          options.signal?.addEventListener("abort", kill, { once: true });
          try {
            exitCode = await runtime.run(id, bundle, {
              ...(options.stdio === undefined ? {} : { stdio: options.stdio }),
              beforeStart: async (state) => {
                await network.setup(key, { pid: state.pid });
                if (options.signal?.aborted) kill();
              },
            });
          } finally {
            options.signal?.removeEventListener("abort", kill);
          }
        } finally {
          unmountRecursive(rootfs, { detach: true });
        }
      } finally {
        if (options.rm) await snapshots.remove(id).catch(() => undefined);
      }
    } finally {
      rmSync(bundle, { recursive: true, force: true });
      await network.teardown(key);
    }
    return exitCode;
  }

  async garbageCollect(): Promise<GcResult> {
    const snapshotters: Record<string, Snapshotter> = {};
    for (const name of Object.values(SnapshotterName)) snapshotters[name] = await this.backend(name);
    return collectGarbage(this.meta, this.backing, { snapshotters });
  }

  async close(): Promise<void> {
    for (const backend of this.backends.values()) await (await backend).close();
    this.backends.clear();
    // The network manager's NAT keeps a libnftables netlink socket open until closed.
    this.#network?.close();
    this.meta.close();
  }
}
