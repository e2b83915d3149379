import { describe, expect, it } from "vitest";
import {
  isConfigMediaType,
  isIndexMediaType,
  isKnownMediaType,
  isLayerMediaType,
  isManifestMediaType,
  isNonDistributableMediaType,
  layerCompression,
  MediaType,
} from "./media-types.js";

describe("media type predicates", () => {
  it("classifies indexes, manifests and configs of both families", () => {
    expect(isIndexMediaType(MediaType.OciIndex)).toBe(true);
    expect(isIndexMediaType(MediaType.DockerManifestList)).toBe(true);
    expect(isIndexMediaType(MediaType.OciManifest)).toBe(false);
    expect(isManifestMediaType(MediaType.OciManifest)).toBe(true);
    expect(isManifestMediaType(`${MediaType.DockerManifest}; charset=utf-8`)).toBe(true);
    expect(isManifestMediaType(MediaType.DockerManifestSchema1Signed)).toBe(false);
    expect(isConfigMediaType(MediaType.OciConfig)).toBe(true);
    expect(isConfigMediaType(MediaType.DockerConfig)).toBe(true);
    expect(isConfigMediaType(MediaType.OciEmpty)).toBe(false);
  });

  it("recognizes every layer type and its compression", () => {
    const cases: Array<[string, string | undefined]> = [
      [MediaType.OciLayer, "none"],
      [MediaType.OciLayerGzip, "gzip"],
      [MediaType.OciLayerZstd, "zstd"],
      [MediaType.OciLayerNonDistributable, "none"],
      [MediaType.OciLayerNonDistributableGzip, "gzip"],
      [MediaType.OciLayerNonDistributableZstd, "zstd"],
      [MediaType.DockerLayer, "none"],
      [MediaType.DockerLayerGzip, "gzip"],
      [MediaType.DockerLayerZstd, "zstd"],
      [MediaType.DockerLayerForeignGzip, "gzip"],
      ["application/vnd.oci.image.layer.v1.tar+encrypted", undefined],
    ];
    for (const [mt, compression] of cases) {
      expect(isLayerMediaType(mt), mt).toBe(true);
      expect(layerCompression(mt), mt).toBe(compression);
    }
    expect(isLayerMediaType(MediaType.OciConfig)).toBe(false);
    expect(isLayerMediaType("application/vnd.oci.image.layer.v1.tarball")).toBe(false);
    expect(layerCompression(MediaType.OciManifest)).toBeUndefined();
  });

  it("knows non-distributable layers and the declared constants", () => {
    expect(isNonDistributableMediaType(MediaType.DockerLayerForeignGzip)).toBe(true);
    expect(isNonDistributableMediaType(MediaType.OciLayerNonDistributableZstd)).toBe(true);
    expect(isNonDistributableMediaType(MediaType.OciLayerGzip)).toBe(false);
    expect(isKnownMediaType(MediaType.InTotoJson)).toBe(true);
    expect(isKnownMediaType("application/vnd.example+json")).toBe(false);
  });
});
