import { createHash } from "node:crypto";
import { isInvalidArgument, isNotImplemented } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import { type TarHeader, TarReader } from "./tar-reader.js";
import { encodeTar } from "./tar-writer.js";

async function* chunks(data: Buffer, size = 700): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function readAll(data: Buffer, chunkSize?: number) {
  const seen: Buffer[] = [];
  const reader = new TarReader(chunks(data, chunkSize), (c) => seen.push(Buffer.from(c)));
  const entries: { header: TarHeader; content: string }[] = [];
  for (let h = await reader.next(); h !== undefined; h = await reader.next()) {
    const parts: Buffer[] = [];
    for await (const c of reader.body()) parts.push(Buffer.from(c));
    entries.push({ header: h, content: Buffer.concat(parts).toString("utf8") });
  }
  await reader.drain();
  return { entries, seen: Buffer.concat(seen) };
}

/** A raw GNU-format header (magic "ustar  \0"), for the GNU long-name path. */
function gnuHeader(name: string, flag: string, size: number): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0, 100, "latin1");
  block.write("0000644\0", 100, 8, "latin1");
  block.write("0000000\0", 108, 8, "latin1");
  block.write("0000000\0", 116, 8, "latin1");
  block.write(`${size.toString(8).padStart(11, "0")}\0`, 124, 12, "latin1");
  block.write("00000000000\0", 136, 12, "latin1");
  block.write(flag, 156, 1, "latin1");
  block.write("ustar  \0", 257, 8, "latin1");
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
  return block;
}

function padded(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

describe("TarReader", () => {
  it("reads ustar and PAX entries, long names, binary xattr values and content split across chunks", async () => {
    const longName = `${"d".repeat(120)}/${"f".repeat(90)}`;
    const capability = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0xfe, 0x80, 0x00, 0, 0, 0, 0]);
    const big = "x".repeat(5000);
    const data = encodeTar([
      { name: "dir", type: "directory", mode: 0o1777, uid: 7, gid: 8 },
      {
        name: "dir/file",
        type: "file",
        content: big,
        mode: 0o4755,
        xattrs: { "security.capability": capability },
      },
      { name: longName, type: "file", content: "long\n" },
      { name: "dir/link", type: "symlink", linkname: `/${"t".repeat(150)}` },
      { name: "dir/hard", type: "link", linkname: "dir/file" },
      { name: "dev", type: "char-device", devmajor: 1, devminor: 3 },
      { name: "fifo", type: "fifo", mtime: 1234 },
      { name: "naïve-ünïcode", type: "file", content: "u\n", pax: { mtime: "1700000000.5" } },
    ]);
    const { entries, seen } = await readAll(data, 333);
    expect(seen.equals(data)).toBe(true);
    expect(entries.map((e) => [e.header.name, e.header.type])).toEqual([
      ["dir", "directory"],
      ["dir/file", "file"],
      [longName, "file"],
      ["dir/link", "symlink"],
      ["dir/hard", "link"],
      ["dev", "char-device"],
      ["fifo", "fifo"],
      ["naïve-ünïcode", "file"],
    ]);
    const [d, f, l, s, h, dev, fifo, u] = entries.map((e) => e.header) as TarHeader[];
    expect(d).toMatchObject({ mode: 0o1777, uid: 7, gid: 8 });
    expect(f?.mode).toBe(0o4755);
    expect(entries[1]?.content).toBe(big);
    expect(f?.xattrs.get("security.capability")?.equals(capability)).toBe(true);
    expect(entries[2]?.content).toBe("long\n");
    expect(l?.size).toBe(5);
    expect(s?.linkname).toBe(`/${"t".repeat(150)}`);
    expect(h?.linkname).toBe("dir/file");
    expect(dev).toMatchObject({ devmajor: 1, devminor: 3, size: 0 });
    expect(fifo?.mtime).toBe(1234);
    expect(u?.mtime).toBe(1700000000.5);
  });

  it("reads GNU long names and skips content it is not asked for", async () => {
    const name = `gnu/${"n".repeat(200)}`;
    const data = Buffer.concat([
      gnuHeader("././@LongLink", "L", name.length + 1),
      padded(Buffer.from(`${name}\0`)),
      gnuHeader("truncated", "0", 3),
      padded(Buffer.from("abc")),
      gnuHeader("second", "0", 2),
      padded(Buffer.from("de")),
      Buffer.alloc(1024),
    ]);
    const reader = new TarReader(chunks(data), () => {});
    expect((await reader.next())?.name).toBe(name);
    // The content of the first entry is skipped without reading its body.
    const second = await reader.next();
    expect(second?.name).toBe("second");
    const parts: Buffer[] = [];
    for await (const c of reader.body()) parts.push(Buffer.from(c));
    expect(Buffer.concat(parts).toString()).toBe("de");
    expect(await reader.next()).toBeUndefined();
  });

  it("passes every byte to onChunk, including data after the end marker", async () => {
    const data = Buffer.concat([
      encodeTar([{ name: "a", type: "file", content: "a" }]),
      Buffer.alloc(4096, 7),
    ]);
    const { seen } = await readAll(data);
    expect(createHash("sha256").update(seen).digest("hex")).toBe(
      createHash("sha256").update(data).digest("hex"),
    );
  });

  it("accepts an archive that ends without the zero blocks", async () => {
    const data = encodeTar([{ name: "a", type: "file", content: "a" }]);
    const { entries } = await readAll(data.subarray(0, data.length - 1024));
    expect(entries.map((e) => e.header.name)).toEqual(["a"]);
  });

  it("rejects truncated archives, bad checksums, NUL in PAX paths, sparse files and unknown types", async () => {
    const good = encodeTar([{ name: "a", type: "file", content: "x".repeat(1000) }]);
    const failures: [Buffer, (err: unknown) => boolean][] = [];
    failures.push([good.subarray(0, 700), isInvalidArgument]);
    const corrupt = Buffer.from(good);
    corrupt[10] = 0x41;
    failures.push([corrupt, isInvalidArgument]);
    failures.push([encodeTar([{ name: "a", type: "file", pax: { path: "a\0b" } }]), isInvalidArgument]);
    failures.push([
      encodeTar([{ name: "a", type: "file", pax: { "GNU.sparse.major": "1" } }]),
      isNotImplemented,
    ]);
    const unknown = gnuHeader("weird", "Z", 0);
    failures.push([Buffer.concat([unknown, Buffer.alloc(1024)]), isInvalidArgument]);
    failures.push([Buffer.from("not a tar at all, just text".padEnd(600, "!")), isInvalidArgument]);
    for (const [data, guard] of failures) {
      const err = await readAll(data).catch((e: unknown) => e);
      expect(guard(err), String(err)).toBe(true);
    }
  });
});
