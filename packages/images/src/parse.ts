import { createHash } from "node:crypto";
import type { Descriptor, Platform } from "@berth/content";
import { digestAlgorithm } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";
import { validateDigest } from "./digest.js";
import {
  isConfigMediaType,
  isIndexMediaType,
  isLayerMediaType,
  isManifestMediaType,
  MediaType,
} from "./media-types.js";
import type { ImageConfig, ImageDocument, ImageIndex, ImageManifest } from "./types.js";

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseJson(bytes: Uint8Array | string, what: string): JsonObject {
  const text =
    typeof bytes === "string"
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${what}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(value)) throw invalidArgument(`${what}: not a JSON object`);
  return value;
}

function describe(desc: Descriptor | undefined, kind: string): string {
  return desc === undefined ? kind : `${kind} ${desc.digest}`;
}

function optionalString(obj: JsonObject, key: string, where: string): void {
  if (obj[key] !== undefined && typeof obj[key] !== "string") {
    throw invalidArgument(`${where}: field "${key}" must be a string`);
  }
}

function stringArray(v: unknown, where: string): void {
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) {
    throw invalidArgument(`${where}: must be an array of strings`);
  }
}

function stringMap(v: unknown, where: string): void {
  if (!isObject(v) || Object.values(v).some((s) => typeof s !== "string")) {
    throw invalidArgument(`${where}: must be an object of strings`);
  }
}

function checkPlatform(v: unknown, where: string): asserts v is Platform {
  if (!isObject(v)) throw invalidArgument(`${where}: platform must be an object`);
  if (typeof v.architecture !== "string" || typeof v.os !== "string") {
    throw invalidArgument(`${where}: platform needs string "architecture" and "os"`);
  }
  optionalString(v, "variant", `${where} platform`);
  optionalString(v, "os.version", `${where} platform`);
  if (v["os.features"] !== undefined) stringArray(v["os.features"], `${where} platform os.features`);
  if (v.features !== undefined) stringArray(v.features, `${where} platform features`);
}

/**
 * Validates one descriptor (image-spec `descriptor.md`): media type, digest syntax, a size that is
 * a non-negative safe integer, and the optional fields' types. Embedded `data` must match size and
 * digest. Throws `invalid-argument` naming `where`.
 */
export function validateDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalidArgument(`${where}: descriptor must be an object`);
  if (typeof v.mediaType !== "string" || v.mediaType === "") {
    throw invalidArgument(`${where}: descriptor needs a "mediaType" string`);
  }
  const digest = validateDigest(v.digest, where);
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw invalidArgument(`${where}: size ${JSON.stringify(v.size)} is not a non-negative integer`);
  }
  if (v.urls !== undefined) stringArray(v.urls, `${where} urls`);
  if (v.annotations !== undefined) stringMap(v.annotations, `${where} annotations`);
  if (v.platform !== undefined) checkPlatform(v.platform, where);
  optionalString(v, "artifactType", where);
  if (v.data !== undefined) {
    if (typeof v.data !== "string") throw invalidArgument(`${where}: "data" must be a base64 string`);
    const data = Buffer.from(v.data, "base64");
    const actual = `${digestAlgorithm(digest)}:${createHash(digestAlgorithm(digest)).update(data).digest("hex")}`;
    if (data.length !== v.size || actual !== digest) {
      throw invalidArgument(
        `${where}: embedded data (${data.length} bytes, ${actual}) does not match the descriptor`,
      );
    }
  }
  return v as unknown as Descriptor;
}

function checkMediaTypeAgreement(doc: JsonObject, expected: string | undefined, what: string): void {
  if (doc.mediaType === undefined) return;
  if (typeof doc.mediaType !== "string") throw invalidArgument(`${what}: field "mediaType" must be a string`);
  if (expected !== undefined && doc.mediaType !== expected) {
    throw invalidArgument(
      `${what}: document media type ${doc.mediaType} does not match descriptor media type ${expected}`,
    );
  }
}

function checkSchemaVersion(doc: JsonObject, what: string): void {
  if (doc.schemaVersion !== 2) {
    throw invalidArgument(
      `${what}: schemaVersion ${JSON.stringify(doc.schemaVersion)} is not supported (want 2)`,
    );
  }
}

/**
 * Parses and validates an image index or Docker manifest list. When `desc` is given, a `mediaType`
 * in the document must equal `desc.mediaType`. Throws `invalid-argument` for malformed JSON, a
 * wrong schemaVersion, a non-index media type, manifest fields (`config`, `layers`) in the index,
 * or an invalid descriptor. Children of any media type are accepted (the spec says to ignore
 * unknown ones).
 */
export function parseIndex(bytes: Uint8Array | string, desc?: Descriptor): ImageIndex {
  const what = describe(desc, "index");
  return indexFrom(parseJson(bytes, what), what, desc?.mediaType);
}

function indexFrom(doc: JsonObject, what: string, expectedMediaType: string | undefined): ImageIndex {
  checkMediaTypeAgreement(doc, expectedMediaType, what);
  if (typeof doc.mediaType === "string" && !isIndexMediaType(doc.mediaType)) {
    throw invalidArgument(`${what}: media type ${doc.mediaType} is not an index media type`);
  }
  checkSchemaVersion(doc, what);
  // A document with both shapes is ambiguous: a registry could be tricked into serving a manifest
  // as an index or the reverse (the same check as containerd's validateMediaType, CVE-2021-41190).
  if (doc.config !== undefined || doc.layers !== undefined) {
    throw invalidArgument(`${what}: an index must not have "config" or "layers"`);
  }
  if (!Array.isArray(doc.manifests)) throw invalidArgument(`${what}: "manifests" must be an array`);
  doc.manifests.forEach((m, i) => {
    validateDescriptor(m, `${what} manifest ${i}`);
  });
  optionalString(doc, "artifactType", what);
  if (doc.subject !== undefined) validateDescriptor(doc.subject, `${what} subject`);
  if (doc.annotations !== undefined) stringMap(doc.annotations, `${what} annotations`);
  return doc as unknown as ImageIndex;
}

/**
 * Parses and validates an image manifest (OCI or Docker schema 2). When `desc` is given, a
 * `mediaType` in the document must equal `desc.mediaType`. Throws `invalid-argument` for malformed
 * JSON, a wrong schemaVersion, a non-manifest media type, a `manifests` field, or an invalid
 * config or layer descriptor. Config and layer media types are not restricted (artifacts use
 * their own).
 */
export function parseManifest(bytes: Uint8Array | string, desc?: Descriptor): ImageManifest {
  const what = describe(desc, "manifest");
  return manifestFrom(parseJson(bytes, what), what, desc?.mediaType);
}

function manifestFrom(doc: JsonObject, what: string, expectedMediaType: string | undefined): ImageManifest {
  checkMediaTypeAgreement(doc, expectedMediaType, what);
  if (typeof doc.mediaType === "string" && !isManifestMediaType(doc.mediaType)) {
    throw invalidArgument(`${what}: media type ${doc.mediaType} is not a manifest media type`);
  }
  checkSchemaVersion(doc, what);
  if (doc.manifests !== undefined) throw invalidArgument(`${what}: a manifest must not have "manifests"`);
  validateDescriptor(doc.config, `${what} config`);
  if (!Array.isArray(doc.layers)) throw invalidArgument(`${what}: "layers" must be an array`);
  doc.layers.forEach((l, i) => {
    validateDescriptor(l, `${what} layer ${i}`);
  });
  optionalString(doc, "artifactType", what);
  if (doc.subject !== undefined) validateDescriptor(doc.subject, `${what} subject`);
  if (doc.annotations !== undefined) stringMap(doc.annotations, `${what} annotations`);
  return doc as unknown as ImageManifest;
}

const runConfigStringArrays = ["Env", "Entrypoint", "Cmd", "Shell", "OnBuild"] as const;

/**
 * Parses and validates an image configuration: `architecture` and `os` strings, `rootfs` of type
 * `layers` with valid diff IDs, and well-typed optional fields. Docker writes `null` for empty
 * fields of the run config (`"Cmd": null`); those are removed from the returned object so that
 * callers only see absent or well-typed values. Throws `invalid-argument`.
 */
export function parseConfig(bytes: Uint8Array | string): ImageConfig {
  const what = "image config";
  const doc = parseJson(bytes, what);
  if (typeof doc.architecture !== "string" || doc.architecture === "") {
    throw invalidArgument(`${what}: "architecture" must be a non-empty string`);
  }
  if (typeof doc.os !== "string" || doc.os === "")
    throw invalidArgument(`${what}: "os" must be a non-empty string`);
  for (const key of ["created", "author", "variant", "os.version"]) optionalString(doc, key, what);
  if (doc["os.features"] !== undefined && doc["os.features"] !== null)
    stringArray(doc["os.features"], `${what} os.features`);
  const rootfs = doc.rootfs;
  if (!isObject(rootfs) || rootfs.type !== "layers" || !Array.isArray(rootfs.diff_ids)) {
    throw invalidArgument(`${what}: "rootfs" must be {"type": "layers", "diff_ids": [...]}`);
  }
  rootfs.diff_ids.forEach((d, i) => {
    validateDigest(d, `${what} diff_id ${i}`);
  });
  if (doc.history !== undefined && doc.history !== null) {
    if (!Array.isArray(doc.history) || doc.history.some((h) => !isObject(h))) {
      throw invalidArgument(`${what}: "history" must be an array of objects`);
    }
  }
  if (doc.config === null) delete doc.config;
  if (doc.config !== undefined) {
    if (!isObject(doc.config)) throw invalidArgument(`${what}: "config" must be an object`);
    const run = doc.config;
    for (const [key, value] of Object.entries(run)) if (value === null) delete run[key];
    for (const key of runConfigStringArrays) {
      if (run[key] !== undefined) stringArray(run[key], `${what} config.${key}`);
    }
    for (const key of ["User", "WorkingDir", "StopSignal"]) optionalString(run, key, `${what} config`);
    if (run.Labels !== undefined) stringMap(run.Labels, `${what} config.Labels`);
    for (const key of ["ExposedPorts", "Volumes"]) {
      if (run[key] !== undefined && !isObject(run[key]))
        throw invalidArgument(`${what}: config.${key} must be an object`);
    }
  }
  return doc as unknown as ImageConfig;
}

/** Media types that say nothing about which image document a blob is, so its content decides. */
const genericMediaTypes: ReadonlySet<string> = new Set([
  "",
  "application/json",
  "application/octet-stream",
  "text/plain",
]);

/**
 * Parses an index or a manifest. `mediaTypeHint` (a descriptor's media type or a Content-Type
 * header; parameters are ignored) selects the parser; when it is generic (`application/json`,
 * `application/octet-stream`, `text/plain`, empty or missing) the document's own `mediaType`
 * field, or else its shape (`manifests` vs `config` + `layers`), decides. Throws
 * `invalid-argument` for Docker schema 1, for any other media type that is neither an index nor a
 * manifest, and for every error of {@link parseIndex} and {@link parseManifest}.
 */
export function parseImageDocument(bytes: Uint8Array | string, mediaTypeHint?: string): ImageDocument {
  const hint = (mediaTypeHint ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  if (
    hint === MediaType.DockerManifestSchema1Signed ||
    hint === "application/vnd.docker.distribution.manifest.v1+json"
  ) {
    throw invalidArgument(
      `Docker schema 1 manifests (${hint}) are not supported; convert the image to schema 2 or OCI`,
    );
  }
  const generic = genericMediaTypes.has(hint);
  if (!generic && !isIndexMediaType(hint) && !isManifestMediaType(hint)) {
    if (isConfigMediaType(hint) || isLayerMediaType(hint)) {
      throw invalidArgument(
        `media type ${hint} is a ${isConfigMediaType(hint) ? "config" : "layer"}, not an index or manifest`,
      );
    }
    throw invalidArgument(
      `unsupported image media type ${JSON.stringify(hint)}: not an OCI/Docker index or manifest`,
    );
  }
  const doc = parseJson(bytes, `image document (${hint || "no media type"})`);
  let mediaType = hint;
  if (generic) {
    if (doc.schemaVersion === 1) throw invalidArgument("Docker schema 1 manifests are not supported");
    if (typeof doc.mediaType === "string") mediaType = doc.mediaType;
    else if (Array.isArray(doc.manifests)) mediaType = MediaType.OciIndex;
    else if (doc.config !== undefined && Array.isArray(doc.layers)) mediaType = MediaType.OciManifest;
    else {
      throw invalidArgument(
        `image document (${hint || "no media type"}): neither an index ("manifests") nor a manifest ("config", "layers")`,
      );
    }
  }
  const expected = generic ? undefined : hint;
  if (isIndexMediaType(mediaType)) {
    return { ...indexFrom(doc, "index", expected), kind: "index", mediaType };
  }
  if (isManifestMediaType(mediaType)) {
    return { ...manifestFrom(doc, "manifest", expected), kind: "manifest", mediaType };
  }
  throw invalidArgument(
    `unsupported image media type ${JSON.stringify(mediaType)}: not an OCI/Docker index or manifest`,
  );
}
