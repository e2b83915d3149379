import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { isInvalidArgument } from "@berth/errdefs";
import { requiresRoot } from "@berth/testing";
import { afterEach, describe, expect, it } from "vitest";
import { applyLayer } from "./apply.js";
import { compareTrees, snapshotTree } from "./apply-tree-compare.js";
import { hostileLayers, populateJail } from "./hostile-layers.js";

const jails: string[] = [];

afterEach(() => {
  for (const jail of jails.splice(0)) rmSync(jail, { recursive: true, force: true });
});

function newJail(): { jail: string; root: string } {
  // realpath: the corpus's absolute targets must name the jail as the kernel resolves it.
  const jail = realpathSync(mkdtempSync(join(tmpdir(), "berth-jail-")));
  jails.push(jail);
  return { jail, root: populateJail(jail) };
}

/** The jail's tree without the root, with times: what must never change. */
function outsideRoot(jail: string) {
  return snapshotTree(jail, { exclude: ["root"], mtimes: true });
}

const isRoot = requiresRoot("hostile layers that chown, mknod or set trusted.* xattrs");
const corpus = hostileLayers("/jail-placeholder");

describe("hostile layers", () => {
  it("has at least 20 cases, with unique names", () => {
    expect(corpus.length).toBeGreaterThanOrEqual(20);
    expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length);
  });

  for (const [index, { name, needsRoot }] of corpus.entries()) {
    it.runIf(!needsRoot || isRoot)(
      `${name}: rejected or contained, nothing outside the root changes`,
      async () => {
        const { jail, root } = newJail();
        const hostile = hostileLayers(jail)[index];
        if (hostile === undefined) throw new Error("corpus changed size");
        const before = outsideRoot(jail);
        const layers = hostile.layers;
        for (const [i, layer] of layers.entries()) {
          const apply = applyLayer(root, Readable.from([layer]), { whiteouts: hostile.whiteouts ?? "oci" });
          if (i < layers.length - 1 || hostile.outcome === "contain") {
            await apply;
          } else {
            const err = await apply.then(
              () => undefined,
              (e: unknown) => e,
            );
            expect(isInvalidArgument(err), `expected invalid-argument, got ${String(err)}`).toBe(true);
            // The error names the entry or the archive offset it came from.
            expect(String(err)).toMatch(/layer entry|tar|offset/);
          }
        }
        expect(compareTrees(before, outsideRoot(jail))).toEqual([]);
        if (hostile.outcome === "contain") expect(hostile.verify?.(root)).toBeUndefined();
      },
    );
  }
});
