/**
 * The container's root filesystem, set up by the init on its main thread inside its own mount
 * namespace. Everything here is synchronous on purpose: libuv's worker threads stayed in the
 * runtime's mount namespace (unshare(CLONE_NEWNS) changes only the calling thread), so an async
 * fs call would act on the host's tree.
 *
 * @internal
 */
import {
  closeSync,
  constants,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join } from "node:path";
import { invalidArgument } from "@berth/errdefs";
import {
  chroot,
  MountFlag,
  makedev,
  mknod,
  mount,
  PropagationFlags,
  parseMountOptions,
  pivotRoot,
  readMountInfo,
  unmount,
} from "@berth/sys";
import { secureJoin } from "./secure-join.js";
import type { LinuxDevice, Spec, SpecMount } from "./spec.js";

const F = MountFlag;
const { S_IFCHR, S_IFBLK, S_IFIFO } = constants;

/** The devices every container gets (runtime-spec "Default Devices"). */
export const DEFAULT_DEVICES: readonly LinuxDevice[] = [
  { path: "/dev/null", type: "c", major: 1, minor: 3, fileMode: 0o666, uid: 0, gid: 0 },
  { path: "/dev/zero", type: "c", major: 1, minor: 5, fileMode: 0o666, uid: 0, gid: 0 },
  { path: "/dev/full", type: "c", major: 1, minor: 7, fileMode: 0o666, uid: 0, gid: 0 },
  { path: "/dev/random", type: "c", major: 1, minor: 8, fileMode: 0o666, uid: 0, gid: 0 },
  { path: "/dev/urandom", type: "c", major: 1, minor: 9, fileMode: 0o666, uid: 0, gid: 0 },
  { path: "/dev/tty", type: "c", major: 5, minor: 0, fileMode: 0o666, uid: 0, gid: 0 },
];

/** Input of {@link setupRootfs}. */
export interface RootfsOptions {
  readonly spec: Spec;
  /** Absolute rootfs path on the host. */
  readonly rootfs: string;
  /** Absolute bundle path, for relative bind sources. */
  readonly bundle: string;
  readonly noPivot: boolean;
  /** The init's cgroups (`/proc/self/cgroup` read before a cgroup namespace), for cgroup mounts. */
  readonly ownCgroups: ReadonlyMap<string, string>;
  /**
   * Called once the spec's mounts and /dev are in place and before the root switch, with the
   * rootfs as cwd (where runc runs the prestart, createRuntime and createContainer hooks).
   */
  readonly beforeRootSwitch?: () => void;
}

function ensureDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o755 });
}

function ensureFile(path: string): void {
  ensureDir(dirname(path));
  closeSync(openSync(path, constants.O_CREAT | constants.O_WRONLY | constants.O_NOFOLLOW, 0o644));
}

function isBind(m: SpecMount, flags: number): boolean {
  return m.type === "bind" || (flags & F.BIND) !== 0;
}

// The flags a bind mount can only take on a second, MS_REMOUNT call.
const REMOUNT_FLAGS =
  F.RDONLY | F.NOSUID | F.NODEV | F.NOEXEC | F.NOATIME | F.NODIRATIME | F.RELATIME | F.STRICTATIME;

function mountBind(m: SpecMount, dest: string, bundle: string, flags: number, data: string[]): void {
  const raw = m.source ?? "";
  if (raw === "") throw invalidArgument(`mount on ${m.destination}: a bind mount needs a source`);
  const source = isAbsolute(raw) ? raw : join(bundle, raw);
  const st = statSync(source);
  if (st.isDirectory()) ensureDir(dest);
  else if (!existsSync(dest)) ensureFile(dest);
  mount(source, dest, null, F.BIND | (flags & F.REC), data.length > 0 ? data.join(",") : null);
  if ((flags & REMOUNT_FLAGS) !== 0)
    mount(null, dest, null, F.BIND | F.REMOUNT | (flags & REMOUNT_FLAGS), null);
}

// On a cgroup v1 or hybrid host, a `cgroup` mount becomes a tmpfs holding, for each hierarchy,
// a bind of the container's own cgroup directory (what runc does without a cgroup namespace), so
// the container sees its limits and not the host's tree. On a pure v2 host it is a cgroup2 mount.
function mountCgroups(dest: string, flags: number, own: ReadonlyMap<string, string>): void {
  const hierarchies = readMountInfo().filter((e) => e.fstype === "cgroup" || e.fstype === "cgroup2");
  const onlyV2 = hierarchies.length > 0 && hierarchies.every((e) => e.fstype === "cgroup2");
  ensureDir(dest);
  if (onlyV2) {
    mount("cgroup2", dest, "cgroup2", flags & ~F.RDONLY, null);
    if (flags & F.RDONLY) mount(null, dest, null, F.REMOUNT | F.BIND | flags, null);
    return;
  }
  mount("tmpfs", dest, "tmpfs", F.NOSUID | F.NODEV | F.NOEXEC, "mode=755");
  // In the host's mount order, v1 hierarchies only: runc 1.1 leaves out the hybrid layout's
  // cgroup2 tracking mount, and the comparison suite holds us to runc.
  for (const h of hierarchies) {
    if (h.fstype !== "cgroup" || !h.mountPoint.startsWith("/sys/fs/cgroup/")) continue;
    const superOptions = h.superOptions.split(",");
    const entry = [...own].find(
      ([key]) => key !== "" && key.split(",").every((c) => superOptions.includes(c)),
    );
    if (entry === undefined) continue;
    const target = join(dest, basename(h.mountPoint));
    ensureDir(target);
    mount(join(h.mountPoint, entry[1]), target, null, F.BIND, null);
    mount(null, target, null, F.BIND | F.REMOUNT | (flags & REMOUNT_FLAGS), null);
  }
  // Co-mounted controllers (cpu,cpuacct) get the same symlinks the host has (cpu -> cpu,cpuacct).
  for (const entry of readdirSync("/sys/fs/cgroup", { withFileTypes: true })) {
    if (!entry.isSymbolicLink()) continue;
    const target = readlinkSync(join("/sys/fs/cgroup", entry.name));
    if (existsSync(join(dest, target)) && !existsSync(join(dest, entry.name)))
      symlinkSync(target, join(dest, entry.name));
  }
}

function mountOne(m: SpecMount, rootfs: string, opts: RootfsOptions): void {
  const dest = secureJoin(rootfs, m.destination);
  const { flags, propagation, data } = parseMountOptions(m.options ?? []);
  if (isBind(m, flags)) {
    mountBind(m, dest, opts.bundle, flags, data);
  } else if (m.type === "cgroup") {
    mountCgroups(dest, flags, opts.ownCgroups);
  } else {
    // /proc must land on a real directory; secureJoin already refused symlinks out of the root,
    // and a file where a directory belongs fails in mkdir (EEXIST), which names the path.
    if (!existsSync(dest)) ensureDir(dest);
    else if (!lstatSync(dest).isDirectory())
      throw invalidArgument(`mount ${m.type} on ${m.destination}: ${dest} is not a directory`);
    mount(m.source ?? m.type ?? "none", dest, m.type ?? null, flags, data.length > 0 ? data.join(",") : null);
  }
  if (propagation !== 0) mount(null, dest, null, propagation, null);
}

function createDevice(rootfs: string, d: LinuxDevice): void {
  const dest = secureJoin(rootfs, d.path);
  ensureDir(dirname(dest));
  if (existsSync(dest)) return;
  const kind = d.type === "b" ? S_IFBLK : d.type === "p" ? S_IFIFO : S_IFCHR;
  const mode = (d.fileMode ?? 0o666) & 0o7777;
  try {
    mknod(dest, kind | mode, makedev(d.major ?? 0, d.minor ?? 0));
  } catch {
    // Without CAP_MKNOD (user namespaces) runc binds the host's node instead; so do we.
    ensureFile(dest);
    mount(d.path, dest, null, F.BIND, null);
    return;
  }
  // lchown: the node was just created by us, but never follow a name we did not make.
  if (d.uid !== undefined || d.gid !== undefined) lchownSync(dest, d.uid ?? 0, d.gid ?? 0);
}

function setupDev(rootfs: string, spec: Spec): void {
  const dev = join(rootfs, "dev");
  const devMounted = (spec.mounts ?? []).some((m) => m.destination.replace(/\/+$/, "") === "/dev");
  if (!devMounted) {
    ensureDir(dev);
    mount("tmpfs", dev, "tmpfs", F.NOSUID | F.STRICTATIME, "mode=755,size=65536k");
  }
  for (const d of [...DEFAULT_DEVICES, ...(spec.linux?.devices ?? [])]) createDevice(rootfs, d);
  const links: [string, string][] = [
    ["/proc/self/fd", "fd"],
    ["/proc/self/fd/0", "stdin"],
    ["/proc/self/fd/1", "stdout"],
    ["/proc/self/fd/2", "stderr"],
  ];
  if (existsSync("/proc/kcore")) links.push(["/proc/kcore", "core"]);
  if (existsSync(join(dev, "pts", "ptmx"))) links.push(["pts/ptmx", "ptmx"]);
  for (const [target, name] of links) {
    const path = join(dev, name);
    let present = true;
    try {
      lstatSync(path);
    } catch {
      present = false;
    }
    if (!present) symlinkSync(target, path);
  }
}

function enterRoot(rootfs: string, noPivot: boolean): void {
  if (noPivot) {
    process.chdir(rootfs);
    mount(rootfs, "/", null, F.MOVE, null);
    chroot(".");
    process.chdir("/");
    return;
  }
  // pivot_root(".", ".") stacks the old root on top of the new one, so no directory has to be
  // created in a possibly read-only rootfs. We then reach the old root through a /proc magic link
  // to an fd opened before (Node has no fchdir), make it a slave so the unmount stays here, and
  // detach it.
  const oldRoot = openSync("/", constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    process.chdir(rootfs);
    pivotRoot(".", ".");
    let detached = false;
    try {
      process.chdir(`/proc/self/fd/${oldRoot}`);
      mount(null, ".", null, F.SLAVE | F.REC, null);
      unmount(".", { detach: true });
      detached = true;
    } finally {
      process.chdir("/");
    }
    if (!detached) throw invalidArgument("pivot_root: could not detach the old root");
  } finally {
    closeSync(oldRoot);
  }
}

function maskPath(path: string): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return; // Nothing there to hide.
  }
  if (st.isDirectory()) mount("tmpfs", path, "tmpfs", F.RDONLY, null);
  else mount("/dev/null", path, null, F.BIND, null);
}

function readonlyPath(path: string): void {
  if (!existsSync(path)) return;
  mount(path, path, null, F.BIND | F.REC, null);
  mount(null, path, null, F.BIND | F.REMOUNT | F.RDONLY | F.REC, null);
}

/**
 * Sets up the root filesystem and enters it: root propagation, the rootfs bind, the spec's
 * mounts in order (destinations resolved inside the rootfs), /dev, pivot_root (or MS_MOVE and
 * chroot), sysctls, masked and read-only paths, the read-only root. Throws the failing call's
 * {@link SystemError} or `invalid-argument`; the init reports it and exits, and the mount
 * namespace dies with it, so nothing needs undoing.
 */
export function setupRootfs(opts: RootfsOptions): void {
  const { spec, rootfs } = opts;
  // Default rslave like runc: host mounts still reach the container, nothing flows back.
  const rootProp = PropagationFlags[spec.linux?.rootfsPropagation ?? "rslave"] ?? F.SLAVE | F.REC;
  mount(null, "/", null, rootProp, null);
  // pivot_root refuses a shared new root or a shared parent of it.
  if ((rootProp & F.SHARED) !== 0) mount(null, "/", null, F.PRIVATE, null);
  mount(rootfs, rootfs, null, F.BIND | F.REC, null);
  if ((rootProp & F.SHARED) !== 0) mount(null, rootfs, null, F.PRIVATE, null);
  for (const m of spec.mounts ?? []) mountOne(m, rootfs, opts);
  setupDev(rootfs, spec);
  if (opts.beforeRootSwitch) {
    process.chdir(rootfs);
    opts.beforeRootSwitch();
  }
  enterRoot(rootfs, opts.noPivot);
  // After the root switch, "/" is the container's; /proc is the fresh one mounted above.
  for (const [key, value] of Object.entries(spec.linux?.sysctl ?? {})) {
    writeFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, value);
  }
  for (const p of spec.linux?.readonlyPaths ?? []) readonlyPath(p);
  for (const p of spec.linux?.maskedPaths ?? []) maskPath(p);
  if (spec.root?.readonly) mount(null, "/", null, F.BIND | F.REMOUNT | F.RDONLY, null);
}
