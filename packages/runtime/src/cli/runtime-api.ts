/**
 * The slice of the runtime that `berth-runc` drives, stated structurally so the command line can
 * be tested against any implementation of it (the real one from `createRuntime`, or a recorder in
 * the argument-parsing tests) and so a change to the runtime's API shows up here as a type error.
 */

/** A container's state as the runtime reports it: the OCI state plus the creation time. */
export interface CliContainerState {
  readonly ociVersion: string;
  readonly id: string;
  readonly status: string;
  readonly pid?: number | undefined;
  readonly bundle: string;
  readonly annotations?: Readonly<Record<string, string>> | undefined;
  /** When the container was created: an RFC 3339 string, a Date or milliseconds since the epoch. */
  readonly created?: string | Date | number | undefined;
  /** The absolute rootfs path, when the runtime records it (otherwise read from config.json). */
  readonly rootfs?: string | undefined;
}

/** Options of `create` (and the create half of `run`), named like runc's flags. */
export interface CliCreateOptions {
  pidFile?: string;
  consoleSocket?: string;
  noPivot?: boolean;
  preserveFds?: number;
}

/** Options of `exec`, named like runc's flags. */
export interface CliExecOptions {
  pidFile?: string;
  consoleSocket?: string;
  detach?: boolean;
  preserveFds?: number;
}

/**
 * The OCI `process` object `exec` runs; only the fields the command line fills in are named, the
 * rest (rlimits, apparmorProfile, ...) pass through at run time from the bundle's config.json.
 */
export interface CliProcess {
  terminal?: boolean;
  user: { uid: number; gid: number; umask?: number; additionalGids?: number[] };
  args: string[];
  env?: string[];
  cwd: string;
  capabilities?: {
    bounding?: string[];
    effective?: string[];
    inheritable?: string[];
    permitted?: string[];
    ambient?: string[];
  };
  noNewPrivileges?: boolean;
}

/** What `berth-runc` needs from a runtime; `createRuntime({ root })` returns one. */
export interface CliRuntime {
  create(id: string, bundle: string, options: CliCreateOptions): Promise<CliContainerState>;
  start(id: string): Promise<unknown>;
  run(id: string, bundle: string, options: CliCreateOptions): Promise<number>;
  state(id: string): CliContainerState | Promise<CliContainerState>;
  kill(id: string, signal: number, options: { all?: boolean }): unknown;
  delete(id: string, options: { force?: boolean }): unknown;
  list(): readonly CliContainerState[] | Promise<readonly CliContainerState[]>;
  ps(id: string): readonly number[] | Promise<readonly number[]>;
  pause(id: string): unknown;
  resume(id: string): unknown;
  exec(id: string, process: CliProcess, options: CliExecOptions): Promise<number>;
}
