import { lstatSync, mkdirSync, readFileSync, type Stats, writeFileSync } from "node:fs";
import { join } from "node:path";
import { listXattrs } from "@berth/sys";
import { fileTypeOf } from "./apply-tree-compare.js";
import { encodeTar, type TarWriteEntry } from "./tar-writer.js";

/**
 * One hostile layer case for {@link hostileLayers}: layers to apply in order onto `<jail>/root`,
 * all but the last ordinary (they plant symlinks and files), and what must happen with the last.
 */
export interface HostileLayer {
  readonly name: string;
  /** Uncompressed tars, applied in order. */
  readonly layers: readonly Buffer[];
  /**
   * `reject`: applying the last layer throws `invalid-argument`. `contain`: it succeeds and every
   * entry landed inside the root. Either way nothing outside the root changes.
   */
  readonly outcome: "reject" | "contain";
  /** Default `oci`. */
  readonly whiteouts?: "oci" | "overlay";
  /** Needs root (device nodes, foreign owners, trusted.* xattrs). */
  readonly needsRoot?: boolean;
  /** For `contain`: what is wrong inside the root afterwards, or undefined when all is well. */
  readonly verify?: (root: string) => string | undefined;
}

/** The file {@link populateJail} puts next to the root; hostile layers try to change it. */
export const JAIL_SENTINEL = "sentinel";

/**
 * Creates the jail {@link hostileLayers} expects: `<jail>/root/` (empty, the apply target),
 * `<jail>/sentinel`, and `<jail>/outside/` holding `file` and `sub/`. Returns the root.
 */
export function populateJail(jail: string): string {
  const root = join(jail, "root");
  mkdirSync(root, { recursive: true });
  writeFileSync(join(jail, JAIL_SENTINEL), "do not touch\n", { mode: 0o600 });
  mkdirSync(join(jail, "outside", "sub"), { recursive: true });
  writeFileSync(join(jail, "outside", "file"), "outside\n", { mode: 0o644 });
  return root;
}

function tar(...entries: TarWriteEntry[]): Buffer {
  return encodeTar(entries);
}

function file(name: string, content = "pwned\n", extra: Partial<TarWriteEntry> = {}): TarWriteEntry {
  return { name, type: "file", content, ...extra };
}

function dir(name: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry {
  return { name, type: "directory", ...extra };
}

function symlink(name: string, linkname: string): TarWriteEntry {
  return { name, type: "symlink", linkname };
}

function hardlink(name: string, linkname: string): TarWriteEntry {
  return { name, type: "link", linkname };
}

function lstatIn(root: string, rel: string): Stats | undefined {
  try {
    return lstatSync(join(root, rel));
  } catch {
    return undefined;
  }
}

/** A verify function: `rel` exists in the root with the given type (and content for files). */
function expectIn(rel: string, type: "file" | "directory" | "symlink" | "char-device", content?: string) {
  return (root: string): string | undefined => {
    const st = lstatIn(root, rel);
    if (st === undefined) return `${rel} is missing in the root`;
    const actual = fileTypeOf(st);
    if (actual !== type) return `${rel} is a ${actual}, expected a ${type}`;
    if (content !== undefined && readFileSync(join(root, rel), "utf8") !== content) {
      return `${rel} does not hold ${JSON.stringify(content)}`;
    }
    return undefined;
  };
}

function all(...checks: ((root: string) => string | undefined)[]) {
  return (root: string): string | undefined => {
    for (const check of checks) {
      const problem = check(root);
      if (problem !== undefined) return problem;
    }
    return undefined;
  };
}

/**
 * A corpus of hostile layers (the path-safety list of the layers issue: absolute and relative
 * symlink escapes, writes through symlinks, hard links out of the root, chmod/chown/utimes through
 * symlinks, bad whiteouts, a directory replaced by a symlink and written into, NUL, `..` and
 * absolute names) for the jail made by {@link populateJail}: absolute targets point at the jail's
 * own files, never at the host's, so a broken applier damages only the jail.
 */
export function hostileLayers(jail: string): HostileLayer[] {
  const sentinel = join(jail, JAIL_SENTINEL);
  const outside = join(jail, "outside");
  // The jail's path as seen from inside the root (absolute targets are re-rooted there).
  const rerooted = jail.replace(/^\/+/, "");
  return [
    {
      name: "absolute symlink escape, then write through it",
      layers: [tar(symlink("evil", outside), file("evil/pwned"))],
      outcome: "contain",
      verify: expectIn(`${rerooted}/outside/pwned`, "file", "pwned\n"),
    },
    {
      name: "relative symlink escape, then write through it",
      layers: [tar(symlink("evil", "../outside"), file("evil/pwned"))],
      outcome: "contain",
      verify: all(expectIn("evil", "symlink"), expectIn("outside/pwned", "file")),
    },
    {
      name: "deep relative escape from a subdirectory",
      layers: [
        tar(
          dir("a"),
          dir("a/b"),
          symlink("a/b/evil", "../../../../../../../../outside"),
          file("a/b/evil/pwned"),
        ),
      ],
      outcome: "contain",
      verify: expectIn("outside/pwned", "file"),
    },
    {
      name: "symlink planted by an earlier layer, written through by a later one",
      layers: [tar(symlink("lib", "../outside")), tar(file("lib/pwned"), file("lib/file", "overwritten\n"))],
      outcome: "contain",
      verify: all(expectIn("outside/pwned", "file"), expectIn("outside/file", "file", "overwritten\n")),
    },
    {
      name: "symlink chain climbing out",
      layers: [
        tar(symlink("a", "b"), symlink("b", "c/../.."), dir("c"), file("a/outside/file", "chained\n")),
      ],
      outcome: "contain",
      verify: expectIn("outside/file", "file", "chained\n"),
    },
    {
      name: "symlink to a file outside, then a file at the same path",
      layers: [tar(symlink("evil", sentinel)), tar(file("evil", "replaced\n", { mode: 0o666 }))],
      outcome: "contain",
      verify: expectIn("evil", "file", "replaced\n"),
    },
    {
      name: "symlink with a /.. target",
      layers: [tar(symlink("evil", "/../../.."), file("evil/outside/file", "clamped\n"))],
      outcome: "contain",
      verify: expectIn("outside/file", "file", "clamped\n"),
    },
    {
      name: "PAX linkpath and path: symlink escape written through",
      layers: [
        tar(
          { name: "x", type: "symlink", pax: { linkpath: `${outside}/./` } },
          { name: "y", type: "file", content: "pax\n", pax: { path: "x/pax-pwned" } },
        ),
      ],
      outcome: "contain",
      verify: expectIn(`${rerooted}/outside/pax-pwned`, "file", "pax\n"),
    },
    {
      name: "directory replaced by a symlink, then written into",
      layers: [tar(dir("d"), file("d/f"), symlink("d", outside), file("d/pwned"))],
      outcome: "contain",
      verify: all(expectIn("d", "symlink"), expectIn(`${rerooted}/outside/pwned`, "file")),
    },
    {
      name: "directory times set after the directory became a symlink out",
      layers: [tar(dir("d", { mtime: 1 }), dir("d/sub", { mtime: 1 }), symlink("d", outside))],
      outcome: "contain",
      verify: expectIn("d", "symlink"),
    },
    {
      name: "chmod through a symlink: a directory entry over a symlink to a file outside",
      layers: [tar(symlink("s", sentinel)), tar(dir("s", { mode: 0o777 }))],
      outcome: "contain",
      verify: expectIn("s", "directory"),
    },
    {
      name: "chown through a symlink: a directory entry over a symlink to a directory outside",
      layers: [tar(symlink("d", "../outside")), tar(dir("d", { uid: 4321, gid: 4321, mode: 0o700 }))],
      outcome: "contain",
      needsRoot: true,
      verify: expectIn("d", "directory"),
    },
    {
      name: "root entry as a symlink",
      layers: [tar(symlink("./", outside))],
      outcome: "reject",
    },
    {
      name: "hard link to a relative path outside",
      layers: [tar(hardlink("h", "../sentinel"))],
      outcome: "reject",
    },
    {
      name: "hard link to an absolute path outside",
      layers: [tar(hardlink("h", sentinel))],
      outcome: "reject",
    },
    {
      name: "hard link through a symlinked directory outside",
      layers: [tar(symlink("d", jail), hardlink("h", "d/sentinel"))],
      outcome: "reject",
    },
    {
      name: "hard link to a symlink pointing outside, then a write to it",
      layers: [tar(symlink("s", sentinel), hardlink("h", "s"), file("h", "through the link?\n"))],
      outcome: "contain",
      verify: all(expectIn("s", "symlink"), expectIn("h", "file", "through the link?\n")),
    },
    {
      name: "hard link to a directory",
      layers: [tar(dir("d"), hardlink("h", "d"))],
      outcome: "reject",
    },
    {
      name: "whiteout with ..",
      layers: [tar(dir("a"), file("a/.wh.."))],
      outcome: "reject",
    },
    {
      name: "whiteout .wh... at the top",
      layers: [tar(file(".wh..."))],
      outcome: "reject",
    },
    {
      name: "bare .wh.",
      layers: [tar(dir("a"), file("a/.wh."))],
      outcome: "reject",
    },
    {
      name: "whiteout through a symlink to a directory outside",
      layers: [tar(symlink("s", outside)), tar(file("s/.wh.file"), file("s/.wh.sub"))],
      outcome: "contain",
    },
    {
      name: "whiteout through a relative symlink climbing out",
      layers: [tar(symlink("s", "../outside")), tar(file("s/.wh.file"))],
      outcome: "contain",
    },
    {
      name: "opaque directory through a symlink outside",
      layers: [tar(symlink("s", "../outside")), tar(file("s/.wh..wh..opq"))],
      outcome: "contain",
    },
    {
      name: "overlay whiteout through a symlink outside",
      layers: [tar(symlink("s", outside)), tar(file("s/.wh.file"))],
      whiteouts: "overlay",
      needsRoot: true,
      outcome: "contain",
      verify: expectIn(`${rerooted}/outside/file`, "char-device"),
    },
    {
      name: "overlay opaque marker through a symlink climbing out",
      layers: [tar(symlink("s", "../../outside")), tar(file("s/.wh..wh..opq"))],
      whiteouts: "overlay",
      needsRoot: true,
      outcome: "contain",
      verify: expectIn("outside", "directory"),
    },
    {
      name: "name with a NUL byte (PAX path)",
      layers: [tar({ name: "x", type: "file", content: "nul\n", pax: { path: "ok\0/../../sentinel" } })],
      outcome: "reject",
    },
    {
      name: "name with a .. component",
      layers: [tar(file("../sentinel", "escaped\n"))],
      outcome: "reject",
    },
    {
      name: "name climbing out through a subdirectory",
      layers: [tar(dir("a"), file("a/../../outside/file", "escaped\n"))],
      outcome: "reject",
    },
    {
      name: "absolute name (the leading / is stripped)",
      layers: [tar(file(`${jail}/sentinel`, "absolute\n"))],
      outcome: "contain",
      verify: expectIn(`${rerooted}/sentinel`, "file", "absolute\n"),
    },
    {
      name: "absolute name with ..",
      layers: [tar(file("/../sentinel", "escaped\n"))],
      outcome: "reject",
    },
    {
      name: "symlink loop in a parent",
      layers: [tar(symlink("a", "b"), symlink("b", "a"), file("a/x"))],
      outcome: "reject",
    },
    {
      name: "file used as a directory",
      layers: [tar(file("f"), file("f/x"))],
      outcome: "reject",
    },
    {
      name: "overlay xattrs from the archive are dropped",
      layers: [
        tar(
          dir("d", { xattrs: { "trusted.overlay.opaque": "y", "trusted.overlay.redirect": "/outside" } }),
          file("d/f"),
        ),
      ],
      whiteouts: "overlay",
      needsRoot: true,
      outcome: "contain",
      verify: all(expectIn("d/f", "file"), (root) => {
        const forged = listXattrs(join(root, "d")).filter((x) => x.startsWith("trusted.overlay."));
        return forged.length === 0 ? undefined : `d carries ${forged.join(", ")} from the archive`;
      }),
    },
  ];
}
