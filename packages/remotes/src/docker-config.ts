import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { invalidArgument } from "@berth/errdefs";
import type { Credentials, CredentialsFunction } from "./auth.js";

/** The default Docker config path: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function defaultDockerConfigPath(): string {
  const dir = process.env.DOCKER_CONFIG;
  return dir !== undefined && dir !== ""
    ? join(dir, "config.json")
    : join(homedir(), ".docker", "config.json");
}

/**
 * Returns a {@link CredentialsFunction} over the `auths` of a Docker config file. Each entry may
 * hold `auth` (base64 of `user:password`), `username`/`password`, or `identitytoken`. Keys may be
 * a host (`127.0.0.1:5000`) or a URL (`https://host/v1/`); Docker Hub's keys
 * (`https://index.docker.io/v1/`, `docker.io`, …) all answer for `docker.io` and
 * `registry-1.docker.io`. The file is read once, at the first lookup: a missing file means
 * anonymous access (`undefined`); invalid JSON or a malformed `auth` makes lookups throw
 * `invalid-argument` naming the file. Credential helpers (`credsStore`, `credHelpers`) are not run.
 */
export function loadDockerCredentials(path: string = defaultDockerConfigPath()): CredentialsFunction {
  let table: Promise<Map<string, Credentials>> | undefined;
  return async (host: string) => {
    table ??= readTable(path);
    const creds = await table;
    return creds.get(normalizeKey(host));
  };
}

async function readTable(path: string): Promise<Map<string, Credentials>> {
  const table = new Map<string, Credentials>();
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return table;
    throw err;
  }
  let config: { auths?: Record<string, Record<string, unknown>> };
  try {
    config = JSON.parse(text) as typeof config;
  } catch (err) {
    throw invalidArgument(`docker config ${path} is not valid JSON`, { cause: err });
  }
  // Docker writes the legacy URL key for Docker Hub; the first entry for a host wins, but an
  // exact key beats an alias that normalizes to the same host.
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    const creds = entryCredentials(entry, key, path);
    const normalized = normalizeKey(key);
    if (creds !== undefined && (!table.has(normalized) || normalized === key)) table.set(normalized, creds);
  }
  return table;
}

function normalizeKey(key: string): string {
  let k = key.trim().toLowerCase();
  if (k.includes("://")) {
    try {
      k = new URL(k).host;
    } catch {
      // Keep the key as written; it can still match literally.
    }
  }
  k = k.replace(/\/.*$/, "");
  // Docker Hub is known under several names: the legacy index URL, the index host, the reference
  // domain and the API host.
  return k === "index.docker.io" || k === "registry-1.docker.io" ? "docker.io" : k;
}

function entryCredentials(
  entry: Record<string, unknown>,
  key: string,
  path: string,
): Credentials | undefined {
  if (typeof entry.identitytoken === "string" && entry.identitytoken !== "") {
    return { identityToken: entry.identitytoken };
  }
  if (typeof entry.auth === "string" && entry.auth !== "") {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0)
      throw invalidArgument(`docker config ${path}: auth of ${key} is not base64 of user:password`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry.username === "string" && typeof entry.password === "string") {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}
