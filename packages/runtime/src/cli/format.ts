import { readFileSync, statSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import type { CliContainerState } from "./runtime-api.js";

/**
 * The JSON document `berth-runc state` prints: runc's shape (the OCI state, plus `rootfs`, `created`
 * and `owner`), which is a superset of the runtime spec's state schema.
 */
export interface StateDocument {
  ociVersion: string;
  id: string;
  pid: number;
  status: string;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
}

/** RFC 3339 in UTC, as runc prints `created`; an empty string when unknown. */
export function formatCreated(created: CliContainerState["created"]): string {
  if (created === undefined) return "";
  if (typeof created === "string") return created;
  const date = created instanceof Date ? created : new Date(created);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/**
 * The absolute rootfs path of a bundle, from its config.json's `root.path` (relative paths are
 * relative to the bundle, per the runtime spec); "" when the bundle can no longer be read, since
 * `state` of a container whose bundle was removed must still answer.
 */
export function bundleRootfs(bundle: string): string {
  try {
    const config = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as {
      root?: { path?: unknown };
    };
    const path = config.root?.path;
    if (typeof path !== "string" || path === "") return "";
    return isAbsolute(path) ? path : join(bundle, path);
  } catch {
    return "";
  }
}

/**
 * Builds runc's state document from a runtime state. `pid` is 0 for a stopped container (runc
 * does the same: the old pid may belong to someone else by now). `owner` is filled by `list` only,
 * like runc's.
 */
export function stateDocument(state: CliContainerState, owner = ""): StateDocument {
  const doc: StateDocument = {
    ociVersion: state.ociVersion,
    id: state.id,
    pid: state.status === "stopped" ? 0 : (state.pid ?? 0),
    status: state.status,
    bundle: state.bundle,
    rootfs: state.rootfs ?? bundleRootfs(state.bundle),
    created: formatCreated(state.created),
    owner,
  };
  if (state.annotations !== undefined && Object.keys(state.annotations).length > 0) {
    doc.annotations = { ...state.annotations };
  }
  return doc;
}

/**
 * The user name owning `path` (runc's `list` shows the owner of the container's state
 * directory), from /etc/passwd; `#<uid>` when the uid has no entry; "" when `path` is gone.
 */
export function ownerOf(path: string): string {
  let uid: number;
  try {
    uid = statSync(path).uid;
  } catch {
    return "";
  }
  try {
    for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
      const fields = line.split(":");
      if (fields.length > 2 && Number(fields[2]) === uid && fields[0] !== undefined) return fields[0];
    }
  } catch {
    // No passwd file (a minimal host): fall through to the numeric form.
  }
  return `#${uid}`;
}

/**
 * Lays rows out like Go's tabwriter with runc's settings (minimum cell width 12, padding 3, the
 * last column unpadded): every cell but the last of a row is padded to its column's width.
 */
export function formatTabular(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      if (i === row.length - 1) return;
      widths[i] = Math.max(widths[i] ?? 12, cell.length + 3);
    });
  }
  return rows
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 12))).join(""))
    .map((line) => `${line}\n`)
    .join("");
}

/** `berth-runc list`'s table: ID, PID, STATUS, BUNDLE, CREATED, OWNER, like runc's. */
export function formatListTable(docs: readonly StateDocument[]): string {
  return formatTabular([
    ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
    ...docs.map((d) => [d.id, String(d.pid), d.status, d.bundle, d.created, d.owner]),
  ]);
}
