import { readFileSync } from "node:fs";
import { join } from "node:path";
import { invalidArgument, notFound } from "@berth/errdefs";
import type { CliProcess } from "./runtime-api.js";

/** The `exec` flags that shape the process (runc's names). */
export interface ExecFlags {
  readonly process?: string;
  readonly tty?: boolean;
  readonly cwd?: string;
  readonly env?: readonly string[];
  readonly user?: string;
  readonly additionalGids?: readonly string[];
  readonly cap?: readonly string[];
  readonly noNewPrivs?: boolean;
}

function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw notFound(`${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${what} ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function parseId(value: string, what: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 0xffffffff) {
    throw invalidArgument(`${what} must be a number from 0 to 4294967295, got "${value}"`);
  }
  return Number(value);
}

function checkProcess(p: unknown, from: string): CliProcess {
  if (typeof p !== "object" || p === null || Array.isArray(p))
    throw invalidArgument(`${from}: not an object`);
  const process = p as Partial<CliProcess>;
  if (!Array.isArray(process.args) || process.args.length === 0) {
    throw invalidArgument(`${from}: args must not be empty`);
  }
  if (typeof process.cwd !== "string" || !process.cwd.startsWith("/")) {
    throw invalidArgument(`${from}: cwd must be an absolute path, got ${JSON.stringify(process.cwd)}`);
  }
  if (typeof process.user !== "object" || process.user === null) {
    throw invalidArgument(`${from}: user is missing`);
  }
  return process as CliProcess;
}

/**
 * Builds the process `berth-runc exec` runs, the way runc does: with `-p`, the process.json as is
 * (the other flags are ignored, as runc ignores them); otherwise the bundle's config.json process
 * with `args`, `terminal` from `-t` (off unless given), `--cwd`, `--env` appended, `--user
 * UID[:GID]`, `--additional-gids` appended, `--cap` added to the bounding, effective and
 * permitted sets (and ambient when the spec has inheritable capabilities), `--no-new-privs`.
 *
 * @throws invalid-argument for empty args, a relative cwd, a malformed user or gid, bad JSON.
 * @throws not-found when process.json or the bundle's config.json cannot be read.
 */
export function buildExecProcess(flags: ExecFlags, args: readonly string[], bundle: string): CliProcess {
  if (flags.process !== undefined) {
    return checkProcess(readJson(flags.process, "process file"), `process file ${flags.process}`);
  }
  if (args.length === 0)
    throw invalidArgument("exec args cannot be empty (give a command or -p process.json)");
  const configPath = join(bundle, "config.json");
  const config = readJson(configPath, "bundle config") as { process?: unknown };
  const base = checkProcess(
    { ...(config.process as object), args: ["placeholder"] },
    `process of ${configPath}`,
  );
  const process: CliProcess = structuredClone(base);
  process.args = [...args];
  process.terminal = flags.tty === true;
  if (flags.cwd !== undefined) {
    if (!flags.cwd.startsWith("/"))
      throw invalidArgument(`--cwd must be an absolute path, got "${flags.cwd}"`);
    process.cwd = flags.cwd;
  }
  if (flags.env !== undefined && flags.env.length > 0) process.env = [...(process.env ?? []), ...flags.env];
  if (flags.noNewPrivs !== undefined) process.noNewPrivileges = flags.noNewPrivs;
  if (flags.user !== undefined && flags.user !== "") {
    const [uid, gid, ...rest] = flags.user.split(":");
    if (uid === undefined || rest.length > 0) {
      throw invalidArgument(`--user must be UID[:GID], got "${flags.user}"`);
    }
    process.user = { ...process.user, uid: parseId(uid, "--user uid") };
    if (gid !== undefined) process.user.gid = parseId(gid, "--user gid");
  }
  if (flags.additionalGids !== undefined && flags.additionalGids.length > 0) {
    process.user = {
      ...process.user,
      additionalGids: [
        ...(process.user.additionalGids ?? []),
        ...flags.additionalGids.map((g) => parseId(g, "--additional-gids")),
      ],
    };
  }
  if (flags.cap !== undefined && flags.cap.length > 0) {
    const caps = { ...(process.capabilities ?? {}) };
    for (const raw of flags.cap) {
      const cap = raw.toUpperCase().startsWith("CAP_") ? raw.toUpperCase() : `CAP_${raw.toUpperCase()}`;
      caps.bounding = [...(caps.bounding ?? []), cap];
      caps.effective = [...(caps.effective ?? []), cap];
      caps.permitted = [...(caps.permitted ?? []), cap];
      // Ambient needs the capability inheritable too; runc only adds it when the spec has some.
      if ((caps.inheritable ?? []).length > 0) caps.ambient = [...(caps.ambient ?? []), cap];
    }
    process.capabilities = caps;
  }
  return process;
}
