import { isDigest } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";

/**
 * A normalized image reference: `docker.io/library/busybox:latest`,
 * `127.0.0.1:5000/team/app:1.0@sha256:…`. Produced only by {@link parseReference}.
 */
export interface Reference {
  /** Registry host, with port when given: `docker.io`, `localhost:5000`, `[::1]:5000`. */
  readonly domain: string;
  /** Repository path inside the registry: `library/busybox`. Always lowercase. */
  readonly path: string;
  readonly tag?: string;
  readonly digest?: string;
  /** `domain/path`. */
  readonly name: string;
  /** The full normalized string: `name[:tag][@digest]`. */
  toString(): string;
}

/** The registry that names without a domain refer to. */
export const DefaultDomain = "docker.io";
const legacyDefaultDomain = "index.docker.io";
const officialRepoPrefix = "library/";
/** Longest `domain/path` accepted, as in distribution/reference. */
export const NameTotalLengthMax = 255;

const domainComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const domainRe = new RegExp(
  `^(?:${domainComponent}(?:\\.${domainComponent})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const pathComponentRe = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagRe = /^[\w][\w.-]{0,127}$/;
const anchoredHexRe = /^[a-f0-9]{64}$/;

class ParsedReference implements Reference {
  readonly domain: string;
  readonly path: string;
  readonly tag?: string;
  readonly digest?: string;

  constructor(domain: string, path: string, tag: string | undefined, digest: string | undefined) {
    this.domain = domain;
    this.path = path;
    if (tag !== undefined) this.tag = tag;
    if (digest !== undefined) this.digest = digest;
  }

  get name(): string {
    return `${this.domain}/${this.path}`;
  }

  toString(): string {
    return `${this.name}${this.tag === undefined ? "" : `:${this.tag}`}${this.digest === undefined ? "" : `@${this.digest}`}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

function fail(input: string, reason: string): never {
  throw invalidArgument(`invalid reference ${JSON.stringify(input)}: ${reason}`);
}

/**
 * Splits `domain/remainder` the way Docker does: the first component is a registry host when it
 * contains a `.` or a `:` or is `localhost`; otherwise the whole string is a Docker Hub repository
 * (and a single-component one lives under `library/`).
 */
function splitDomain(name: string): [string, string] {
  const slash = name.indexOf("/");
  const first = slash === -1 ? "" : name.slice(0, slash);
  if (slash === -1 || (!/[.:]/.test(first) && first !== "localhost")) {
    // An uppercase first component is treated as a Hub namespace too, so that "Foo/bar" fails as
    // "must be lowercase" instead of being sent to a host named Foo.
    return [DefaultDomain, slash === -1 ? `${officialRepoPrefix}${name}` : name];
  }
  const domain = first === legacyDefaultDomain ? DefaultDomain : first;
  let rest = name.slice(slash + 1);
  if (domain === DefaultDomain && !rest.includes("/")) rest = `${officialRepoPrefix}${rest}`;
  return [domain, rest];
}

/**
 * Parses and normalizes an image reference like docker and containerd do:
 * `busybox` → `docker.io/library/busybox:latest`, `foo/bar` → `docker.io/foo/bar:latest`,
 * `localhost:5000/x`, `[::1]:5000/x:tag`, `x@sha256:…`, `x:tag@sha256:…` (both are kept). A
 * reference with neither tag nor digest gets the tag `latest`. Throws `invalid-argument` saying
 * what is wrong: empty, a 64-hex image ID, an uppercase or malformed repository path, a bad domain,
 * tag or digest, or a name longer than 255 characters.
 */
export function parseReference(s: string): Reference {
  if (s === "") fail(s, "empty reference");
  if (anchoredHexRe.test(s))
    fail(s, "a 64-character hexadecimal string is an image ID, not a repository name");
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest))
      fail(s, `invalid digest ${JSON.stringify(digest)} (want sha256:<64 hex> or sha512:<128 hex>)`);
  }
  const [domain, remainder] = splitDomain(rest);
  let path = remainder;
  let tag: string | undefined;
  // A ':' after the domain split can only introduce the tag.
  const colon = remainder.lastIndexOf(":");
  if (colon !== -1) {
    tag = remainder.slice(colon + 1);
    path = remainder.slice(0, colon);
    if (!tagRe.test(tag))
      fail(s, `invalid tag ${JSON.stringify(tag)} (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})`);
  }
  if (!domainRe.test(domain)) fail(s, `invalid registry host ${JSON.stringify(domain)}`);
  if (path === "") fail(s, "missing repository name");
  if (path !== path.toLowerCase()) fail(s, "repository name must be lowercase");
  for (const component of path.split("/")) {
    if (component === "") fail(s, "repository name has an empty path component");
    if (!pathComponentRe.test(component)) {
      fail(
        s,
        `invalid repository path component ${JSON.stringify(component)} (lowercase letters, digits and single . _ __ or - separators)`,
      );
    }
  }
  const name = `${domain}/${path}`;
  if (name.length > NameTotalLengthMax)
    fail(s, `repository name is longer than ${NameTotalLengthMax} characters`);
  if (tag === undefined && digest === undefined) tag = "latest";
  return new ParsedReference(domain, path, tag, digest);
}

/**
 * True when `s` is only a tag (`latest`, `1.2-alpine`), as in an OCI layout's
 * `org.opencontainers.image.ref.name`.
 */
export function isTag(s: string): boolean {
  return tagRe.test(s);
}

/**
 * The short name Docker shows: `docker.io/library/busybox` → `busybox`, `docker.io/foo/bar` →
 * `foo/bar`; other registries keep their domain. Tag and digest are not included (see
 * {@link familiarString}).
 */
export function familiarName(ref: Reference): string {
  if (ref.domain !== DefaultDomain) return ref.name;
  const rest = ref.path.startsWith(officialRepoPrefix) ? ref.path.slice(officialRepoPrefix.length) : ref.path;
  return rest.includes("/") ? ref.path : rest;
}

/** {@link familiarName} with the tag and digest: `busybox:latest`. */
export function familiarString(ref: Reference): string {
  return `${familiarName(ref)}${ref.tag === undefined ? "" : `:${ref.tag}`}${ref.digest === undefined ? "" : `@${ref.digest}`}`;
}
