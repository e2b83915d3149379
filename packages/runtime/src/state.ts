import { existsSync, readdirSync, readFileSync, readlinkSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { invalidArgument, notFound } from "@berth/errdefs";
import { type FileLock, lockFile } from "@berth/sys";

/** A container's status, as the OCI runtime spec's state names it. */
export const ContainerStatus = {
  Creating: "creating",
  Created: "created",
  Running: "running",
  Stopped: "stopped",
  Paused: "paused",
} as const;
/** A container's status. */
export type ContainerStatus = (typeof ContainerStatus)[keyof typeof ContainerStatus];

/** The OCI state of a container (runtime-spec `state`), plus when it was created. */
export interface ContainerState {
  readonly ociVersion: string;
  readonly id: string;
  readonly status: ContainerStatus;
  /** The init's pid in the runtime's pid namespace; 0 once stopped (like runc). */
  readonly pid: number;
  /** The absolute bundle path. */
  readonly bundle: string;
  readonly annotations?: Readonly<Record<string, string>>;
  /** RFC 3339 creation time. */
  readonly created: string;
  /** The absolute rootfs path. */
  readonly rootfs: string;
  /** The user the container's process runs as, like runc's `owner` (empty when root). */
  readonly owner: string;
}

/**
 * What berth records in `<root>/<id>/state.json`: enough to find and check the container's init
 * again from a different process (berth-runc runs once per command).
 *
 * @internal
 */
export interface StateRecord {
  readonly version: 1;
  readonly id: string;
  readonly bundle: string;
  readonly rootfs: string;
  readonly created: string;
  readonly annotations?: Readonly<Record<string, string>>;
  /** The init's pid in the runtime's pid namespace; 0 before the init exists. */
  pid: number;
  /** Field 22 of /proc/<pid>/stat (start time in clock ticks), to tell a reused pid apart. */
  initStartTime: number;
  /** The cgroup directories by controller (the cgroup manager's `paths`), as runc keeps them. */
  cgroupPaths?: Readonly<Record<string, string>>;
  /** Whether the root was set up with MS_MOVE + chroot instead of pivot_root. */
  noPivot: boolean;
  /** Set by pause, cleared by resume. */
  paused: boolean;
  /** The namespaces the container was configured with, for exec (`path` means joined). */
  namespaces: readonly { readonly type: string; readonly path?: string }[];
  /** The config.json the container was created from (validated), for exec and delete. */
  readonly config: unknown;
}

/** The runc-compatible file names inside a container's state directory. */
export const StateFile = {
  State: "state.json",
  ExecFifo: "exec.fifo",
  Lock: "state.lock",
} as const;

const validId = /^[\w+\-.]+$/;

/** Throws `invalid-argument` unless `id` is a container id runc would accept. */
export function checkContainerId(id: string): void {
  if (!validId.test(id) || id === "." || id === "..")
    throw invalidArgument(`container id ${JSON.stringify(id)} is invalid: use letters, digits, _ + - and .`);
}

/** The state directory of container `id` under `root`. */
export function stateDir(root: string, id: string): string {
  checkContainerId(id);
  return join(root, id);
}

/** Reads a container's record; throws `not-found` when the container does not exist. */
export function readState(root: string, id: string): StateRecord {
  const file = join(stateDir(root, id), StateFile.State);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT")
      throw notFound(`container ${id} does not exist (no ${file})`, { cause });
    throw cause;
  }
  return JSON.parse(text) as StateRecord;
}

/** Writes a container's record atomically (temp file + rename). */
export function writeState(root: string, record: StateRecord): void {
  const dir = stateDir(root, record.id);
  const tmp = join(dir, `.${StateFile.State}.${process.pid}`);
  writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
  renameSync(tmp, join(dir, StateFile.State));
}

/** Lists the ids of containers that have a state file under `root` (none if root is missing). */
export function listIds(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && validId.test(e.name) && existsSync(join(root, e.name, StateFile.State)))
    .map((e) => e.name)
    .sort();
}

/**
 * Takes the container's exclusive lock (`flock` on `<root>/<id>/state.lock`), waiting for another
 * berth process that holds it. The caller releases it. Throws `not-found` when the container's
 * state dir does not exist.
 */
export async function lockContainer(root: string, id: string): Promise<FileLock> {
  const dir = stateDir(root, id);
  if (!existsSync(dir)) throw notFound(`container ${id} does not exist (no ${dir})`);
  return lockFile(join(dir, StateFile.Lock));
}

/** What /proc/<pid>/stat says about a process, or undefined when there is no such process. */
export interface ProcStat {
  /** The state letter: R, S, D, Z (zombie), T, X ... */
  readonly state: string;
  /** Start time after boot in clock ticks (field 22). */
  readonly startTime: number;
}

/** Reads `/proc/<pid>/stat`; undefined when the process does not exist. */
export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: split after its last ")".
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: rest[0] ?? "", startTime: Number(rest[19]) };
}

/**
 * Whether the record's init still runs: the pid exists, is not a zombie, and started at the
 * recorded time (so a reused pid does not count).
 */
export function initAlive(record: StateRecord): boolean {
  if (record.pid <= 0) return false;
  const stat = readProcStat(record.pid);
  if (stat === undefined || stat.state === "Z" || stat.state === "X") return false;
  return stat.startTime === record.initStartTime;
}

/** The namespace inode link of a process (`pid:[4026531836]`), undefined if gone. */
export function namespaceLink(pid: number | "self", type: string): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/${type}`);
  } catch {
    return undefined;
  }
}
