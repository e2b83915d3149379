import { invalidArgument } from "@berth/errdefs";

/** What a registry endpoint may be used for (containerd's `HostCapabilities`). */
export const HostCapability = {
  /** Fetch manifests and blobs by digest. */
  Pull: "pull",
  /** Resolve a tag to a digest. */
  Resolve: "resolve",
  /** Upload blobs and manifests. */
  Push: "push",
} as const;

/** One of the values of {@link HostCapability}. */
export type HostCapability = (typeof HostCapability)[keyof typeof HostCapability];

/**
 * One endpoint that serves a registry's API (containerd's `RegistryHost`). The endpoints of a
 * registry are tried in order; mirrors come before the upstream.
 */
export interface HostConfig {
  /** `host[:port]` of the endpoint, used in URLs and to key auth state. */
  readonly host: string;
  readonly scheme: "http" | "https";
  /** API root, normally `/v2`. */
  readonly path: string;
  readonly capabilities: readonly HostCapability[];
  /** True for a mirror: requests add `?ns=<upstream host>` as containerd does. */
  readonly mirror?: boolean;
  /** Extra headers sent with every request to this endpoint. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** True for the hosts that containerd talks plain HTTP to by default. */
export function isLoopbackHost(host: string): boolean {
  const name = hostname(host);
  return name === "localhost" || name === "127.0.0.1" || name === "[::1]" || name === "::1";
}

function hostname(host: string): string {
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    return end < 0 ? host : host.slice(0, end + 1);
  }
  const colon = host.indexOf(":");
  return colon < 0 ? host : host.slice(0, colon);
}

/** Maps a reference's domain to the host that serves its API (`docker.io` → `registry-1.docker.io`). */
export function apiHost(domain: string): string {
  return domain === "docker.io" || domain === "index.docker.io" ? "registry-1.docker.io" : domain;
}

/** Options of {@link defaultHosts}. */
export interface DefaultHostsOptions {
  readonly plainHttp?: boolean;
  readonly insecureHosts?: readonly string[];
  readonly mirrors?: Readonly<Record<string, readonly string[]>>;
}

const allCapabilities: readonly HostCapability[] = ["pull", "resolve", "push"];

/**
 * The endpoints for a reference domain built from simple options: each mirror configured for the
 * domain (pull and resolve only), then the upstream (every capability). A mirror is
 * `host[:port]` or a `http(s)://host[:port][/path]` URL. Plain HTTP is used when forced, for
 * loopback hosts and for insecure hosts. Throws `invalid-argument` for an unusable mirror.
 */
export function defaultHosts(domain: string, options: DefaultHostsOptions = {}): HostConfig[] {
  const insecure = new Set(options.insecureHosts ?? []);
  const schemeOf = (host: string): "http" | "https" =>
    options.plainHttp === true || isLoopbackHost(host) || insecure.has(host) ? "http" : "https";
  const hosts: HostConfig[] = [];
  for (const mirror of options.mirrors?.[domain] ?? []) {
    hosts.push({ ...parseEndpoint(mirror, schemeOf), capabilities: ["pull", "resolve"], mirror: true });
  }
  const upstream = apiHost(domain);
  hosts.push({ host: upstream, scheme: schemeOf(upstream), path: "/v2", capabilities: allCapabilities });
  return hosts;
}

function parseEndpoint(
  endpoint: string,
  schemeOf: (host: string) => "http" | "https",
): { host: string; scheme: "http" | "https"; path: string } {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch (err) {
      throw invalidArgument(`mirror endpoint ${endpoint} is not a valid URL`, { cause: err });
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw invalidArgument(`mirror endpoint ${endpoint} must be an http or https URL`);
    }
    const base = url.pathname.replace(/\/+$/, "");
    return {
      host: url.host,
      scheme: url.protocol === "http:" ? "http" : "https",
      path: base.endsWith("/v2") ? base : `${base}/v2`,
    };
  }
  if (endpoint.includes("/"))
    throw invalidArgument(`mirror endpoint ${endpoint} must be host[:port] or a URL`);
  return { host: endpoint, scheme: schemeOf(endpoint), path: "/v2" };
}
