import { type Digest, isDigest } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";

// containerd's identifiers package: alphanumerics separated by single '.', '_' or '-'.
const identifierRe = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const maxIdentifierLength = 76;
// containerd's labels package: key and value together may not exceed 4 KiB.
const maxLabelSize = 4096;

/**
 * Checks a namespace name or another identifier (lease IDs) against containerd's rules: at most 76
 * characters, alphanumeric components joined by single `.`, `_` or `-`. Throws `invalid-argument`
 * naming `what` and the offending value.
 */
export function validateIdentifier(what: string, id: string): void {
  if (id === "") throw invalidArgument(`${what} must not be empty`);
  if (id.length > maxIdentifierLength) {
    throw invalidArgument(`${what} ${JSON.stringify(id)}: longer than ${maxIdentifierLength} characters`);
  }
  if (!identifierRe.test(id)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(id)}: must match ${identifierRe.source} (alphanumerics joined by single '.', '_' or '-')`,
    );
  }
}

/** Checks that a namespace name is valid; throws `invalid-argument` otherwise. */
export function validateNamespace(name: string): void {
  validateIdentifier("namespace", name);
}

/** Throws `invalid-argument` unless `digest` is a well-formed sha256 or sha512 digest. */
export function validateDigest(what: string, digest: Digest): void {
  if (!isDigest(digest)) {
    throw invalidArgument(`${what} ${JSON.stringify(digest)}: not a valid sha256 or sha512 digest`);
  }
}

/** Throws `invalid-argument` for an empty label key or a key+value over 4096 bytes. @internal */
export function validateLabels(what: string, labels: Readonly<Record<string, string>>): void {
  for (const [key, value] of Object.entries(labels)) {
    if (key === "") throw invalidArgument(`${what}: label key must not be empty`);
    if (typeof value !== "string") {
      throw invalidArgument(`${what}: label ${JSON.stringify(key)} must have a string value`);
    }
    const size = Buffer.byteLength(key) + Buffer.byteLength(value);
    if (size > maxLabelSize) {
      throw invalidArgument(
        `${what}: label ${JSON.stringify(key)}: key and value are ${size} bytes, more than the maximum ${maxLabelSize}`,
      );
    }
  }
}

/**
 * Applies a labels update the containerd way. Without fieldpaths the labels are replaced; with
 * `labels` they are replaced as well; with `labels.<key>` only that key changes. An empty value
 * deletes the label. Other fieldpaths are left to the caller (returned in `rest`). @internal
 */
export function applyLabelUpdate(
  current: Readonly<Record<string, string>>,
  next: Readonly<Record<string, string>>,
  fieldpaths: readonly string[] | undefined,
): { labels: Record<string, string>; rest: string[] } {
  const rest: string[] = [];
  let labels: Record<string, string>;
  if (fieldpaths === undefined || fieldpaths.length === 0) {
    labels = { ...next };
  } else {
    labels = { ...current };
    for (const path of fieldpaths) {
      if (path === "labels") {
        labels = { ...next };
      } else if (path.startsWith("labels.")) {
        const key = path.slice("labels.".length);
        const value = next[key];
        if (value === undefined || value === "") delete labels[key];
        else labels[key] = value;
      } else {
        rest.push(path);
      }
    }
  }
  for (const [key, value] of Object.entries(labels)) if (value === "") delete labels[key];
  return { labels, rest };
}
