import type { Descriptor, Digest } from "@berth/content";

/**
 * An image index (OCI `image-index.md`) or Docker manifest list: one manifest per platform, or
 * any set of manifests and nested indexes.
 */
export interface ImageIndex {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly manifests: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly annotations?: Readonly<Record<string, string>>;
}

/**
 * An image manifest (OCI `manifest.md`) or Docker schema 2 manifest: one config and an ordered
 * list of layers, base layer first.
 */
export interface ImageManifest {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** The execution parameters of an image (OCI `config.md`, the `config` field). */
export interface ImageRunConfig {
  readonly User?: string;
  readonly ExposedPorts?: Readonly<Record<string, object>>;
  readonly Env?: readonly string[];
  readonly Entrypoint?: readonly string[];
  readonly Cmd?: readonly string[];
  readonly Volumes?: Readonly<Record<string, object>>;
  readonly WorkingDir?: string;
  readonly Labels?: Readonly<Record<string, string>>;
  readonly StopSignal?: string;
  readonly ArgsEscaped?: boolean;
  readonly Shell?: readonly string[];
  readonly Healthcheck?: {
    readonly Test?: readonly string[];
    readonly Interval?: number;
    readonly Timeout?: number;
    readonly StartPeriod?: number;
    readonly Retries?: number;
  };
  readonly OnBuild?: readonly string[];
}

/** One entry of an image's history. */
export interface ImageHistory {
  readonly created?: string;
  readonly created_by?: string;
  readonly author?: string;
  readonly comment?: string;
  readonly empty_layer?: boolean;
}

/**
 * An image configuration (OCI `config.md`; Docker's `container.image.v1` has the same shape plus
 * fields berth ignores but keeps in the parsed object).
 */
export interface ImageConfig {
  readonly created?: string;
  readonly author?: string;
  readonly architecture: string;
  readonly os: string;
  readonly "os.version"?: string;
  readonly "os.features"?: readonly string[];
  readonly variant?: string;
  readonly config?: ImageRunConfig;
  readonly rootfs: { readonly type: "layers"; readonly diff_ids: readonly Digest[] };
  readonly history?: readonly ImageHistory[];
}

/**
 * The result of {@link parseImageDocument}: the parsed index or manifest itself, tagged with `kind`
 * and with `mediaType` always set to the effective media type (the hint, or what the document
 * says or looks like when the hint was generic).
 */
export type ImageDocument =
  | (ImageIndex & { readonly kind: "index"; readonly mediaType: string })
  | (ImageManifest & { readonly kind: "manifest"; readonly mediaType: string });
