import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { isDataLoss, isFailedPrecondition } from "@berth/errdefs";
import { requiresCommand } from "@berth/testing";
import { describe, expect, it } from "vitest";
import { libdeflateAvailable, libdeflateGunzip, libdeflateGzip } from "./deflate.js";
import { createIsalGunzip, isalAvailable } from "./isal.js";
import type { StreamCodec } from "./native-codec.js";
import { createZstdDecoder, createZstdEncoder, zstdAvailable } from "./zstd.js";

const data = Buffer.concat([Buffer.from("native codec ".repeat(50_000)), randomBytes(600_000)]);
// Ends a frame exactly on a full output buffer (4 x 128 KiB with 128 KiB buffers).
const exact = Buffer.alloc(4 * 128 * 1024, 1);

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

async function feed(codec: StreamCodec, input: Uint8Array, chunk: number): Promise<Buffer> {
  const out: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunk)
    out.push(...(await codec.update(input.subarray(i, i + chunk))));
  out.push(...(await codec.finish()));
  return Buffer.concat(out);
}

describe.each(["sync", "async"] as const)("native codecs, %s calls", (mode) => {
  it.runIf(zstdAvailable() && requiresCommand("zstd", "zstd CLI oracle"))(
    "zstd round-trips and matches the CLI",
    async () => {
      for (const input of [data, exact]) {
        const compressed = await feed(createZstdEncoder({ mode, level: 3 }), input, 100_000);
        expect(sha(execFileSync("zstd", ["-dc"], { input: compressed, maxBuffer: 1 << 26 }))).toBe(
          sha(input),
        );
        const decoded = await feed(createZstdDecoder({ mode, bufferSize: 128 << 10 }), compressed, 65_536);
        expect(sha(decoded)).toBe(sha(input));
      }
    },
  );

  it.runIf(isalAvailable())("isa-l gunzip decodes multi-member gzip and rejects a bad CRC", async () => {
    const input = Buffer.concat([gzipSync(data), gzipSync(exact), Buffer.alloc(32)]);
    const decoded = await feed(createIsalGunzip({ mode, bufferSize: 128 << 10 }), input, 50_000);
    expect(sha(decoded)).toBe(sha(Buffer.concat([data, exact])));
    const bad = gzipSync(data);
    bad[bad.length - 5] = (bad[bad.length - 5] ?? 0) ^ 1;
    const err = await feed(createIsalGunzip({ mode }), bad, 1 << 20).catch((e: unknown) => e);
    expect(isDataLoss(err)).toBe(true);
  });
});

describe("codec lifecycle", () => {
  it.runIf(zstdAvailable())("refuses use after close, and close is idempotent", async () => {
    const codec = createZstdDecoder();
    codec.close();
    codec.close();
    const err = await codec.update(Buffer.from("x")).catch((e: unknown) => e);
    expect(isFailedPrecondition(err)).toBe(true);
  });
});

describe.runIf(libdeflateAvailable())("libdeflate", () => {
  it("round-trips whole buffers, multi-member included, and rejects truncation", () => {
    const gz = libdeflateGzip(data, 6);
    expect(sha(gunzipSync(gz))).toBe(sha(data));
    const multi = Buffer.concat([gz, gzipSync(exact)]);
    expect(sha(libdeflateGunzip(multi))).toBe(sha(Buffer.concat([data, exact])));
    let err: unknown;
    try {
      libdeflateGunzip(gz.subarray(0, gz.length - 10));
    } catch (e) {
      err = e;
    }
    expect(isDataLoss(err)).toBe(true);
  });
});
