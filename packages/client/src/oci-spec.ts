import { readFileSync } from "node:fs";
import { join } from "node:path";
import { invalidArgument } from "@berth/errdefs";
import type { ImageConfig } from "@berth/images";
import { defaultSpec, type Spec } from "@berth/runtime";

/** Options of {@link specFromImage}. */
export interface SpecFromImageOptions {
  /** The container's root filesystem (bundle-relative or absolute), already populated. */
  readonly rootfs: string;
  /** Arguments replacing the image's Cmd (the Entrypoint stays), like `docker run IMAGE ARGS`. */
  readonly args?: readonly string[];
  /** Extra `KEY=value` environment entries, overriding the image's. */
  readonly env?: readonly string[];
  readonly hostname?: string;
  readonly readOnly?: boolean;
}

/** Looks `name` up in the rootfs's /etc/passwd or /etc/group; undefined when absent. */
function lookupId(
  rootfs: string,
  file: "passwd" | "group",
  name: string,
): { id: number; gid?: number } | undefined {
  let text: string;
  try {
    text = readFileSync(join(rootfs, "etc", file), "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields[0] === name && fields[2] !== undefined) {
      return {
        id: Number(fields[2]),
        ...(file === "passwd" && fields[3] !== undefined ? { gid: Number(fields[3]) } : {}),
      };
    }
  }
  return undefined;
}

/** Resolves the image's `User` (`uid`, `uid:gid`, `name`, `name:group`) against the rootfs. */
function resolveUser(rootfs: string, user: string | undefined): { uid: number; gid: number } {
  if (user === undefined || user === "") return { uid: 0, gid: 0 };
  const [u = "", g] = user.split(":");
  let uid: number;
  let gid = 0;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    // A numeric user need not exist in /etc/passwd; when it does, its primary group applies.
    let passwd = "";
    try {
      passwd = readFileSync(join(rootfs, "etc", "passwd"), "utf8");
    } catch {
      // No /etc/passwd in the image: keep gid 0.
    }
    const entry = passwd
      .split("\n")
      .map((l) => l.split(":"))
      .find((f) => f[2] === u);
    if (entry?.[3] !== undefined) gid = Number(entry[3]);
  } else {
    const found = lookupId(rootfs, "passwd", u);
    if (found === undefined)
      throw invalidArgument(`image user ${JSON.stringify(u)} is not in the image's /etc/passwd`);
    uid = found.id;
    gid = found.gid ?? 0;
  }
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const found = lookupId(rootfs, "group", g);
      if (found === undefined)
        throw invalidArgument(`image group ${JSON.stringify(g)} is not in the image's /etc/group`);
      gid = found.id;
    }
  }
  return { uid, gid };
}

/**
 * Builds an OCI runtime spec for a container of an image, the way containerd's
 * `oci.WithImageConfig` does: runc's default spec, then the image's Entrypoint + Cmd (or `args`),
 * Env, WorkingDir and User. Throws `invalid-argument` when the image names no command or a user
 * its /etc/passwd does not have.
 */
export function specFromImage(config: ImageConfig, options: SpecFromImageOptions): Spec {
  const base = defaultSpec();
  const run = config.config ?? {};
  const entrypoint = run.Entrypoint ?? [];
  const args = [...entrypoint, ...(options.args && options.args.length > 0 ? options.args : (run.Cmd ?? []))];
  if (args.length === 0) throw invalidArgument("the image has no Entrypoint or Cmd; give the command to run");
  const env = new Map<string, string>();
  for (const entry of [...(base.process?.env ?? []), ...(run.Env ?? []), ...(options.env ?? [])]) {
    const i = entry.indexOf("=");
    env.set(i < 0 ? entry : entry.slice(0, i), entry);
  }
  const { uid, gid } = resolveUser(options.rootfs, run.User);
  return {
    ...base,
    process: {
      ...base.process,
      terminal: false,
      user: { uid, gid },
      args,
      env: [...env.values()],
      cwd: run.WorkingDir || "/",
    } as NonNullable<Spec["process"]>,
    root: { path: options.rootfs, readonly: options.readOnly ?? false },
    ...(options.hostname === undefined ? {} : { hostname: options.hostname }),
  };
}
