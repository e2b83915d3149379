import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import { MediaType } from "./media-types.js";
import { parseConfig, parseImageDocument, parseIndex, parseManifest } from "./parse.js";

const d = (c: string) => `sha256:${c.repeat(64)}`;
const desc = (mediaType: string, c = "a", size = 10) => ({ mediaType, digest: d(c), size });
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const manifestDoc = {
  schemaVersion: 2,
  mediaType: MediaType.OciManifest,
  config: desc(MediaType.OciConfig, "c"),
  layers: [desc(MediaType.OciLayerGzip, "1"), desc("application/vnd.example.unknown", "2")],
};
const indexDoc = {
  schemaVersion: 2,
  manifests: [{ ...desc(MediaType.OciManifest, "b"), platform: { os: "linux", architecture: "amd64" } }],
};

function invalid(fn: () => unknown, ...fragments: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(isInvalidArgument(caught), String(caught)).toBe(true);
  for (const f of fragments) expect((caught as Error).message).toContain(f);
}

describe("parseManifest", () => {
  it("accepts OCI and Docker manifests, with unknown layer types", () => {
    expect(parseManifest(json(manifestDoc)).layers).toHaveLength(2);
    const docker = { ...manifestDoc, mediaType: MediaType.DockerManifest };
    expect(parseManifest(json(docker), desc(MediaType.DockerManifest)).mediaType).toBe(
      MediaType.DockerManifest,
    );
    const { mediaType: _omit, ...noType } = manifestDoc;
    expect(parseManifest(json(noType), desc(MediaType.OciManifest)).config.digest).toBe(d("c"));
  });

  it("checks the media type against the descriptor, naming both", () => {
    invalid(
      () => parseManifest(json(manifestDoc), desc(MediaType.DockerManifest, "e")),
      MediaType.OciManifest,
      MediaType.DockerManifest,
      d("e"),
    );
    invalid(
      () => parseManifest(json({ ...manifestDoc, mediaType: MediaType.OciIndex })),
      "not a manifest media type",
    );
  });

  it.each([
    ["bad JSON", "{", "not valid JSON"],
    ["array", "[]", "not a JSON object"],
    ["schemaVersion", JSON.stringify({ ...manifestDoc, schemaVersion: 1 }), "schemaVersion 1"],
    ["missing config", JSON.stringify({ ...manifestDoc, config: undefined }), "config"],
    ["layers not array", JSON.stringify({ ...manifestDoc, layers: {} }), '"layers" must be an array'],
    [
      "bad digest",
      JSON.stringify({ ...manifestDoc, layers: [{ ...desc(MediaType.OciLayer), digest: "sha256:xyz" }] }),
      "invalid digest",
    ],
    [
      "negative size",
      JSON.stringify({ ...manifestDoc, layers: [desc(MediaType.OciLayer, "a", -1)] }),
      "non-negative integer",
    ],
    [
      "fractional size",
      JSON.stringify({ ...manifestDoc, layers: [desc(MediaType.OciLayer, "a", 1.5)] }),
      "non-negative integer",
    ],
    ["no mediaType", JSON.stringify({ ...manifestDoc, config: { digest: d("c"), size: 1 } }), "mediaType"],
    ["manifests field", JSON.stringify({ ...manifestDoc, manifests: [] }), '"manifests"'],
    ["bad annotations", JSON.stringify({ ...manifestDoc, annotations: { a: 1 } }), "annotations"],
  ])("rejects %s", (_name, text, fragment) => {
    invalid(() => parseManifest(text), fragment);
  });

  it("verifies embedded data", () => {
    const data = Buffer.from("{}");
    const good = {
      mediaType: MediaType.OciEmpty,
      digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
      size: 2,
      data: data.toString("base64"),
    };
    expect(parseManifest(json({ ...manifestDoc, config: good })).config.data).toBe("e30=");
    invalid(() => parseManifest(json({ ...manifestDoc, config: { ...good, size: 3 } })), "embedded data");
  });
});

describe("parseIndex", () => {
  it("accepts indexes and manifest lists", () => {
    expect(parseIndex(json(indexDoc)).manifests[0]?.platform?.architecture).toBe("amd64");
    const list = { ...indexDoc, mediaType: MediaType.DockerManifestList };
    expect(parseIndex(json(list), desc(MediaType.DockerManifestList)).manifests).toHaveLength(1);
  });

  it("rejects manifests, mismatches and malformed platforms", () => {
    invalid(
      () =>
        parseIndex(json({ ...indexDoc, mediaType: MediaType.OciIndex }), desc(MediaType.DockerManifestList)),
      "does not match",
    );
    invalid(() => parseIndex(json({ ...indexDoc, layers: [] })), "must not have");
    invalid(() => parseIndex(json({ schemaVersion: 2 })), '"manifests" must be an array');
    invalid(
      () =>
        parseIndex(
          json({
            schemaVersion: 2,
            manifests: [{ ...desc(MediaType.OciManifest), platform: { os: "linux" } }],
          }),
        ),
      "platform",
    );
  });
});

describe("parseConfig", () => {
  const config = {
    architecture: "amd64",
    os: "linux",
    config: { Cmd: null, Env: ["A=1"], Entrypoint: null, Labels: { a: "b" } },
    rootfs: { type: "layers", diff_ids: [d("1")] },
    history: [{ created_by: "x" }],
  };

  it("accepts Docker-style nulls and drops them", () => {
    const parsed = parseConfig(json(config));
    expect(parsed.config).toEqual({ Env: ["A=1"], Labels: { a: "b" } });
    expect(parsed.rootfs.diff_ids).toEqual([d("1")]);
  });

  it.each([
    ["no architecture", { ...config, architecture: undefined }, "architecture"],
    ["no os", { ...config, os: 1 }, '"os"'],
    ["bad rootfs", { ...config, rootfs: { type: "x", diff_ids: [] } }, "rootfs"],
    ["bad diff id", { ...config, rootfs: { type: "layers", diff_ids: ["x"] } }, "diff_id 0"],
    ["bad Env", { ...config, config: { Env: "A=1" } }, "config.Env"],
    ["bad history", { ...config, history: [1] }, "history"],
  ])("rejects %s", (_name, value, fragment) => {
    invalid(() => parseConfig(json(value)), fragment);
  });
});

describe("parseImageDocument", () => {
  it("dispatches on the hint", () => {
    const m = parseImageDocument(json(manifestDoc), MediaType.OciManifest);
    expect(m.kind).toBe("manifest");
    const i = parseImageDocument(
      json({ ...indexDoc, mediaType: MediaType.DockerManifestList }),
      `${MediaType.DockerManifestList}; charset=utf-8`,
    );
    expect(i.kind === "index" && i.manifests.length).toBe(1);
    expect(i.mediaType).toBe(MediaType.DockerManifestList);
  });

  it("detects the type when the hint is generic", () => {
    expect(parseImageDocument(json(manifestDoc), "application/json")).toMatchObject({
      kind: "manifest",
      mediaType: MediaType.OciManifest,
    });
    expect(parseImageDocument(json(indexDoc))).toMatchObject({
      kind: "index",
      mediaType: MediaType.OciIndex,
    });
    const { mediaType: _omit, ...bare } = manifestDoc;
    expect(parseImageDocument(json(bare), "application/octet-stream").kind).toBe("manifest");
    invalid(() => parseImageDocument(json({ schemaVersion: 2 }), "application/json"), "neither an index");
  });

  it("rejects unknown, schema 1 and non-document types, and disagreements", () => {
    invalid(
      () => parseImageDocument(json(manifestDoc), "application/vnd.example+json"),
      "unsupported image media type",
    );
    invalid(() => parseImageDocument(json(manifestDoc), MediaType.DockerManifestSchema1Signed), "schema 1");
    invalid(() => parseImageDocument(json({ schemaVersion: 1 }), "application/json"), "schema 1");
    invalid(() => parseImageDocument(json(manifestDoc), MediaType.OciLayerGzip), "layer");
    invalid(() => parseImageDocument(json(manifestDoc), MediaType.DockerManifest), "does not match");
    invalid(
      () => parseImageDocument(json({ ...manifestDoc, mediaType: "application/x" }), "application/json"),
      "unsupported",
    );
  });
});
