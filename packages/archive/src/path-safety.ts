import { lstatSync, mkdirSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { invalidArgument } from "@berth/errdefs";

/**
 * Linux gives up after 40 symlinks in one lookup (`MAXSYMLINKS`); resolving inside a root follows
 * the same limit, so a symlink loop ends in an error rather than a hang.
 */
const MAX_SYMLINKS = 40;

/**
 * Splits a layer entry's name into its components, the way containerd treats names: leading `/`
 * and `./` are dropped (an absolute name is taken relative to the root: `/etc/passwd` is
 * `etc/passwd`), empty and `.` components vanish, and a name that is only `/` or `.` is the root
 * itself (an empty array).
 *
 * Throws `invalid-argument` naming the entry for a name with a NUL byte (the kernel would see a
 * shorter name than the archive claims) and for any `..` component. containerd lexically clamps
 * `..` at the root instead; no layer writer emits `..`, GNU tar refuses such members too, and an
 * error tells the user the layer is hostile rather than quietly writing somewhere else.
 */
export function cleanLayerPath(name: string): string[] {
  if (name.includes("\0"))
    throw invalidArgument(`layer entry ${JSON.stringify(name)}: name contains a NUL byte`);
  const parts: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      throw invalidArgument(`layer entry ${JSON.stringify(name)}: name has a ".." component`);
    }
    parts.push(part);
  }
  return parts;
}

/**
 * Resolves `path` inside `root` as if `root` were `/` (like `openat2(RESOLVE_IN_ROOT)` or
 * filepath-securejoin): every component is looked up with `lstat`, symlinks are followed with
 * absolute targets taken relative to `root` and `..` clamped at `root`, so the result is always
 * `root` or a path below it. Components that do not exist are appended as they are. With
 * `followFinal: false` a final symlink is returned itself rather than followed.
 *
 * The result is only safe to use while nobody else changes the tree under `root` (the caller owns
 * it, as an unpacking snapshot is owned by its unpacker). Throws `invalid-argument` after more than
 * 40 symlinks, and any `lstat`/`readlink` error other than ENOENT as the system error.
 */
export function resolveInRoot(root: string, path: string, options: { followFinal?: boolean } = {}): string {
  const stack = splitReversed(path);
  const resolved: string[] = [];
  let links = 0;
  let missing = false;
  while (stack.length > 0) {
    const part = stack.pop() as string;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    if (missing || (stack.length === 0 && options.followFinal === false)) {
      resolved.push(part);
      continue;
    }
    const st = lstatOrUndefined(join(root, ...resolved, part));
    if (st?.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS)
        throw invalidArgument(`resolving ${JSON.stringify(path)} in ${root}: too many symlinks`);
      const target = readlinkSync(join(root, ...resolved, part));
      if (target.startsWith("/")) resolved.length = 0;
      stack.push(...splitReversed(target));
      continue;
    }
    if (st === undefined) missing = true;
    resolved.push(part);
  }
  return join(root, ...resolved);
}

/**
 * Finds (and creates) directories of one root for an applier, never leaving the root: each
 * component of a parent path is looked up with `lstat`; a symlink met on the way is followed
 * *inside* the root (absolute targets start at the root, `..` stops at it), so a symlink planted by
 * an earlier layer or earlier in the same layer can redirect an entry only to another place under
 * the root — what containerd (`fs.RootPath`) and umoci (securejoin) do. Missing directories are
 * created with mode 0755, as containerd's `mkparent` does.
 *
 * Results are cached by archive path; the applier calls {@link DirResolver.invalidate} whenever it
 * removes a directory or a symlink, the only changes that can alter what a cached path resolves to.
 *
 * @internal
 */
export class DirResolver {
  readonly #root: string;
  readonly #cache = new Map<string, string>();

  /** `root` must be an absolute, symlink-free path (a `realpath`) of an existing directory. */
  constructor(root: string) {
    this.#root = root;
  }

  /** Forgets every cached resolution. */
  invalidate(): void {
    this.#cache.clear();
  }

  /**
   * The absolute real path of the directory named by `components` (from {@link cleanLayerPath}).
   * With `create`, missing directories are made; without, a missing one gives undefined.
   * Throws `invalid-argument` naming `entry` when a component is neither a directory nor a symlink,
   * or when symlinks loop.
   */
  dir(components: readonly string[], entry: string, create: boolean): string | undefined {
    if (components.length === 0) return this.#root;
    const key = components.join("/");
    const cached = this.#cache.get(key);
    if (cached !== undefined) return cached;
    const parent = this.dir(components.slice(0, -1), entry, create);
    if (parent === undefined) return undefined;
    const real = this.#walk(parent, [components[components.length - 1] as string], entry, create);
    if (real !== undefined) this.#cache.set(key, real);
    return real;
  }

  /** Walks `parts` from the real directory `from`, following symlinks inside the root. */
  #walk(from: string, parts: readonly string[], entry: string, create: boolean): string | undefined {
    const resolved = from === this.#root ? [] : from.slice(this.#root.length + 1).split("/");
    const stack = [...parts].reverse();
    let links = 0;
    while (stack.length > 0) {
      const part = stack.pop() as string;
      if (part === "" || part === ".") continue;
      if (part === "..") {
        resolved.pop();
        continue;
      }
      const abs = join(this.#root, ...resolved, part);
      const st = lstatOrUndefined(abs);
      if (st === undefined) {
        if (!create) return undefined;
        mkdirSync(abs, 0o755);
      } else if (st.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS) {
          throw invalidArgument(`layer entry ${JSON.stringify(entry)}: too many symlinks in its parent path`);
        }
        const target = readlinkSync(abs);
        if (target.startsWith("/")) resolved.length = 0;
        stack.push(...splitReversed(target));
        continue;
      } else if (!st.isDirectory()) {
        throw invalidArgument(
          `layer entry ${JSON.stringify(entry)}: /${[...resolved, part].join("/")} is not a directory`,
        );
      }
      resolved.push(part);
    }
    return join(this.#root, ...resolved);
  }
}

/**
 * Throws `invalid-argument` unless `path` is `root` or lies below it. Every write of the applier
 * passes through this as a last line of defence: the resolvers above already guarantee it.
 *
 * @internal
 */
export function assertInRoot(root: string, path: string, entry: string): void {
  if (path !== root && !path.startsWith(`${root}/`)) {
    throw invalidArgument(
      `layer entry ${JSON.stringify(entry)} resolves to ${path}, outside the root ${root}`,
    );
  }
}

/**
 * `lstat` that returns undefined for a missing path (ENOENT, or ENOTDIR when a component is a
 * file); other errors are thrown.
 *
 * @internal
 */
export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    // No exception (and stack trace) for the common "not there yet" case.
    return lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw err;
  }
}

function splitReversed(path: string): string[] {
  return path
    .split("/")
    .filter((p) => p !== "" && p !== ".")
    .reverse();
}
