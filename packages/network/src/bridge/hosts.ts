import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tryParseIp } from "../ipam/ip.js";

/**
 * Resolvers used when the host has only loopback ones (systemd-resolved's 127.0.0.53, a local
 * dnsmasq): those addresses mean the container's own loopback inside its namespace, where nothing
 * listens. Docker falls back the same way, to public resolvers.
 */
export const DEFAULT_NAMESERVERS = ["8.8.8.8", "8.8.4.4"] as const;

/** Options of {@link writeHostsAndResolv}. */
export interface HostsAndResolvOptions {
  readonly hostname: string;
  /** The container's address, mapped to `hostname` in /etc/hosts. */
  readonly ip: string;
  /** The container's IPv6 address on a dual-stack network, also mapped to `hostname`. */
  readonly ip6?: string;
  /** The host's resolv.conf to derive from (default `/etc/resolv.conf`); a missing file means no resolvers. */
  readonly hostResolvConf?: string;
}

/** 127.0.0.0/8 or ::1, however written. */
const isLoopback = (text: string) => {
  const ip = tryParseIp(text);
  return ip === undefined ? false : ip.family === 4 ? ip.value >> 24n === 127n : ip.value === 1n;
};

/**
 * The container's resolv.conf from the host's: `search`, `domain` and `options` lines are kept,
 * loopback nameservers dropped, and {@link DEFAULT_NAMESERVERS} used when none is left.
 */
export function containerResolvConf(hostResolvConf: string): string {
  const keep: string[] = [];
  const servers: string[] = [];
  for (const raw of hostResolvConf.split("\n")) {
    const line = raw.trim();
    const [key, value] = line.split(/\s+/, 2);
    if (key === "nameserver" && value !== undefined) {
      if (!isLoopback(value)) servers.push(value);
    } else if (key === "search" || key === "domain" || key === "options") {
      keep.push(line);
    }
  }
  const ns = servers.length > 0 ? servers : [...DEFAULT_NAMESERVERS];
  return `${[...ns.map((s) => `nameserver ${s}`), ...keep].join("\n")}\n`;
}

/** A container's /etc/hosts: localhost, then `hostname` at each of its addresses. */
export function hostsFile(hostname: string, addresses: readonly string[]): string {
  return [
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    ...addresses.map((a) => `${a}\t${hostname}`),
    "",
  ].join("\n");
}

/**
 * The host's resolv.conf (default `/etc/resolv.conf`); empty when it does not exist. Throws the
 * other `fs` errors.
 */
export function readHostResolvConf(path = "/etc/resolv.conf"): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw err;
  }
}

/**
 * Writes `hosts` and `resolv.conf` for a container into `dir` (created when missing), for the
 * runtime to bind-mount onto /etc/hosts and /etc/resolv.conf. Throws the `fs` errors of reading
 * the host's resolv.conf (other than ENOENT) and of writing.
 */
export function writeHostsAndResolv(dir: string, options: HostsAndResolvOptions): void {
  mkdirSync(dir, { recursive: true });
  const addresses = options.ip6 === undefined ? [options.ip] : [options.ip, options.ip6];
  writeFileSync(join(dir, "hosts"), hostsFile(options.hostname, addresses), { mode: 0o644 });
  const host = readHostResolvConf(options.hostResolvConf);
  writeFileSync(join(dir, "resolv.conf"), containerResolvConf(host), { mode: 0o644 });
}
