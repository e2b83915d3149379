import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SystemError } from "@berth/sys";

/** @internal Converts a Node fs error into the one SystemError shape; rethrows anything else. */
export function toSystemError(err: unknown, syscall: string, path: string, hint?: string): unknown {
  if (err instanceof Error && typeof (err as NodeJS.ErrnoException).errno === "number") {
    const errno = Math.abs((err as NodeJS.ErrnoException).errno ?? 0);
    return new SystemError({ syscall, errno, path, ...(hint === undefined ? {} : { hint }) });
  }
  return err;
}

/** @internal The errno name of a SystemError or Node fs error, if it is one. */
export function errnoOf(err: unknown): string | undefined {
  if (err instanceof SystemError) return err.errnoName;
  if (err instanceof Error && typeof (err as NodeJS.ErrnoException).code === "string") {
    return (err as NodeJS.ErrnoException).code;
  }
  return undefined;
}

/**
 * @internal Writes one value to a cgroup file. cgroupfs takes one value per write(2), so each call
 * is one write; errors name the file and the value.
 */
export function writeCgroupFile(dir: string, file: string, value: string): void {
  const path = join(dir, file);
  try {
    // "r+" rather than "w": cgroup files exist or the controller is missing; never create them.
    writeFileSync(path, value, { flag: "r+" });
  } catch (err) {
    throw toSystemError(err, "write", path, `writing "${value}"`);
  }
}

/** @internal Reads a cgroup file, trimmed; undefined when it does not exist. */
export function readCgroupFile(dir: string, file: string): string | undefined {
  const path = join(dir, file);
  try {
    return readFileSync(path, "utf8").trim();
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    throw toSystemError(err, "read", path);
  }
}

/** @internal Reads a cgroup file holding one number (`max` → undefined). */
export function readCgroupNumber(dir: string, file: string): number | undefined {
  const text = readCgroupFile(dir, file);
  if (text === undefined || text === "" || text === "max") return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** @internal Parses a flat-keyed file (`key value` per line: memory.events, cpu.stat, memory.oom_control). */
export function readKeyedFile(dir: string, file: string): Map<string, number> {
  const result = new Map<string, number>();
  for (const line of (readCgroupFile(dir, file) ?? "").split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) result.set(key, Number(value));
  }
  return result;
}

/**
 * @internal `mkdir -p`, reporting failures as SystemError. Retried once on ENOENT: a concurrent
 * destroy may remove an empty shared parent (the default `/berth`) between the creation of the
 * parent and of the child.
 */
export function mkdirCgroup(path: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(path, { recursive: true, mode: 0o755 });
      return;
    } catch (err) {
      if (attempt < 2 && (err as { code?: string }).code === "ENOENT") continue;
      throw toSystemError(err, "mkdir", path);
    }
  }
}

/** @internal Whether `file` exists in `dir`. */
export function cgroupFileExists(dir: string, file: string): boolean {
  return existsSync(join(dir, file));
}
