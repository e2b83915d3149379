import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable, type Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gzipSync } from "node:zlib";
import { isDataLoss, isInvalidArgument } from "@berth/errdefs";
import { isalAvailable } from "@berth/sys";
import { buildFixtureImages, type Fixtures, requiresCommand } from "@berth/testing";
import { beforeAll, describe, expect, it } from "vitest";
import {
  Compression,
  compressionOfMediaType,
  compressStream,
  type DecompressOptions,
  decompressStream,
  detectCompression,
} from "./compression.js";

/** Runs `input`, cut into `chunk`-byte pieces, through `transform` and collects the output. */
async function run(transform: Transform, input: Uint8Array, chunk = 64 << 10): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunk) pieces.push(Buffer.from(input.subarray(i, i + chunk)));
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(pieces),
    transform,
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

/** Byte equality by digest: vitest's deep equality walks buffers element by element, slowly. */
function expectSame(actual: Uint8Array, expected: Uint8Array): void {
  const digest = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
  expect({ length: actual.length, sha256: digest(actual) }).toEqual({
    length: expected.length,
    sha256: digest(expected),
  });
}

function cli(cmd: string, args: string[], input: Uint8Array): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 1 << 30 });
}

// Compressible and incompressible parts, larger than every native buffer, and an exact multiple
// of 128 KiB, which once tripped the end-of-frame logic when a frame ended on a full buffer.
const sample = Buffer.concat([Buffer.from("berth layer data ".repeat(40_000)), randomBytes(1 << 20)]);
const blockSized = Buffer.alloc(8 * 128 * 1024, 7);

const gzipEngines: DecompressOptions[] = [{ gzipEngine: "zlib" }];
if (isalAvailable()) gzipEngines.push({ gzipEngine: "isal" });
const hasZstd = requiresCommand("zstd", "zstd CLI oracle");
const hasGzip = requiresCommand("gzip", "gzip CLI oracle");

describe("detectCompression", () => {
  it("recognises gzip, zstd (and skippable zstd frames) and plain tar", () => {
    expect(detectCompression(gzipSync("x"))).toBe(Compression.Gzip);
    expect(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0]))).toBe(Compression.Zstd);
    expect(detectCompression(Buffer.from([0x50, 0x2a, 0x4d, 0x18, 0]))).toBe(Compression.Zstd);
    expect(detectCompression(Buffer.from("bin/\0\0\0"))).toBe(Compression.None);
    expect(detectCompression(Buffer.from([0x1f]))).toBe(Compression.None);
  });

  it("maps layer media types and rejects others", () => {
    expect(compressionOfMediaType("application/vnd.oci.image.layer.v1.tar+gzip")).toBe("gzip");
    expect(compressionOfMediaType("application/vnd.oci.image.layer.v1.tar+zstd")).toBe("zstd");
    expect(compressionOfMediaType("application/vnd.oci.image.layer.v1.tar")).toBe("none");
    expect(compressionOfMediaType("application/vnd.docker.image.rootfs.diff.tar.gzip")).toBe("gzip");
    expect(() => compressionOfMediaType("application/vnd.oci.image.config.v1+json")).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
  });

  it("rejects unknown kinds and levels", () => {
    expect(() => decompressStream("lz4" as Compression)).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
    let err: unknown;
    try {
      compressStream("gzip", { level: 12 });
    } catch (e) {
      err = e;
    }
    expect(isInvalidArgument(err)).toBe(true);
  });
});

describe.each(gzipEngines)("gzip decompression with %o", (options) => {
  it("round-trips what compressStream writes, in any chunking", async () => {
    const compressed = await run(compressStream("gzip"), sample);
    expectSame(await run(decompressStream("gzip", options), compressed), sample);
    const small = sample.subarray(0, 3000);
    expectSame(await run(decompressStream("gzip", options), gzipSync(small), 1), small);
    expectSame(await run(decompressStream("gzip", options), gzipSync(blockSized)), blockSized);
  });

  it("decodes multi-member gzip as one stream, as gzip -dc does", async () => {
    const input = Buffer.concat([gzipSync(sample), gzipSync("second member\n"), gzipSync(blockSized)]);
    const out = await run(decompressStream("gzip", options), input);
    expectSame(out, Buffer.concat([sample, Buffer.from("second member\n"), blockSized]));
    if (hasGzip) expectSame(out, cli("gzip", ["-dc"], input));
  });

  it("fails with data-loss on corrupt, truncated and empty input", async () => {
    const good = gzipSync(sample);
    const corrupt = Buffer.from(good);
    corrupt[good.length - 6] = (corrupt[good.length - 6] ?? 0) ^ 0xff; // in the CRC32 trailer
    const garbled = Buffer.from(good);
    for (let i = 2000; i < 2100; i++) garbled[i] = 0xaa;
    for (const bad of [corrupt, garbled, good.subarray(0, good.length >> 1), Buffer.alloc(0)]) {
      const err = await run(decompressStream("gzip", options), bad).catch((e: unknown) => e);
      expect(isDataLoss(err), String(err)).toBe(true);
    }
  });
});

describe.runIf(hasZstd)("zstd", () => {
  it("round-trips, and the zstd CLI reads what compressStream writes", async () => {
    for (const data of [sample, blockSized, Buffer.from("tiny")]) {
      const compressed = await run(compressStream("zstd", { level: 5 }), data);
      expect(detectCompression(compressed)).toBe("zstd");
      expectSame(cli("zstd", ["-dc"], compressed), data);
      expectSame(await run(decompressStream("zstd"), compressed, 4097), data);
    }
  });

  it("decodes concatenated frames and frames cut at every boundary, as zstd -dc does", async () => {
    const input = Buffer.concat([cli("zstd", ["-c", "-q"], sample), cli("zstd", ["-c", "-q"], blockSized)]);
    const expected = cli("zstd", ["-dc"], input);
    expectSame(expected, Buffer.concat([sample, blockSized]));
    expectSame(await run(decompressStream("zstd"), input), expected);
    expectSame(await run(decompressStream("zstd"), input, 10_000), expected);
  });

  it("fails with data-loss on corrupt, truncated and empty input", async () => {
    const good = cli("zstd", ["-c", "-q"], sample);
    const corrupt = Buffer.from(good);
    for (let i = 3000; i < 3100; i++) corrupt[i] = 0x55;
    for (const bad of [
      corrupt,
      good.subarray(0, good.length - 3),
      Buffer.alloc(0),
      Buffer.from("not zstd at all"),
    ]) {
      const err = await run(decompressStream("zstd"), bad).catch((e: unknown) => e);
      expect(isDataLoss(err), String(err)).toBe(true);
    }
  });
});

describe("fixture layers", () => {
  let fixtures: Fixtures;
  beforeAll(async () => {
    fixtures = await buildFixtureImages();
  });

  it("decompress to exactly what gzip -dc and zstd -dc give", async () => {
    for (const fixture of [fixtures.multiLayer, fixtures.zstd]) {
      for (const [i, digest] of fixture.layerDigests.entries()) {
        const blob = readFileSync(join(fixture.layoutDir, "blobs", "sha256", digest.slice("sha256:".length)));
        const kind = compressionOfMediaType(fixture.layerMediaTypes[i] ?? "");
        expect(detectCompression(blob)).toBe(kind);
        if (kind === "none") continue;
        const oracle = kind === "gzip" ? cli("gzip", ["-dc"], blob) : cli("zstd", ["-dc"], blob);
        for (const options of kind === "gzip" ? gzipEngines : [{}]) {
          expectSame(await run(decompressStream(kind, options), blob), oracle);
        }
      }
    }
  });
});
