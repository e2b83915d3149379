import { createReadStream, createWriteStream, renameSync, rmSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { Readable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import { type Client, createClient, type UnpackEvent } from "@berth/client";
import { errorCode, errorMessage, invalidArgument, notImplemented } from "@berth/errdefs";
import { Command, Option } from "commander";
import { formatAge, formatBytes, formatLabels, formatTable } from "./format.js";
import { addNetworkCommands } from "./network.js";
import { createProgressRenderer } from "./progress.js";
import { addSnapshotCommands } from "./snapshots.js";

/**
 * Commander collector for an option that may be given several times (`--platform a --platform
 * b`), like ctr's string-slice flags. A variadic option (`<x...>`) would also swallow the
 * arguments that follow it.
 */
const repeatable = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Options every command inherits from the top level. */
interface GlobalOptions {
  readonly address?: string;
  readonly namespace: string;
  readonly root: string;
  readonly state: string;
  readonly debug?: boolean;
}

/** Options shared by the commands that talk to a registry. */
interface RegistryOptions {
  readonly plainHttp?: boolean;
  readonly skipVerify?: boolean;
  readonly user?: string;
  readonly platform?: string[];
  readonly allPlatforms?: boolean;
}

function credentialsOf(user: string | undefined): { username: string; password: string } | undefined {
  if (user === undefined) return undefined;
  const i = user.indexOf(":");
  if (i <= 0) throw invalidArgument(`--user must be USERNAME:PASSWORD, got "${user}"`);
  return { username: user.slice(0, i), password: user.slice(i + 1) };
}

function credentialsOption(user: string | undefined): {
  credentials?: { username: string; password: string };
} {
  const credentials = credentialsOf(user);
  return credentials === undefined ? {} : { credentials };
}

function registryFlags(cmd: Command): Command {
  return cmd
    .option("--plain-http", "talk to the registry over HTTP (loopback hosts use HTTP by default)")
    .option("--skip-verify", "skip TLS certificate verification")
    .option("-u, --user <user:password>", "registry credentials (otherwise ~/.docker/config.json)")
    .option(
      "--platform <platform>",
      "platform to use, like linux/arm64/v8 (default: this host); repeatable",
      repeatable,
    )
    .option("--all-platforms", "use every platform of a multi-platform image");
}

function platformsOf(opts: RegistryOptions): { platforms?: string[]; allPlatforms?: boolean } {
  return {
    ...(opts.platform === undefined ? {} : { platforms: opts.platform }),
    ...(opts.allPlatforms ? { allPlatforms: true } : {}),
  };
}

/** Prints unpack progress, one line per layer. */
function unpackPrinter(stream: NodeJS.WritableStream): (event: UnpackEvent) => void {
  return (e) => {
    if (e.kind === "applying") return;
    stream.write(
      `layer ${e.layer + 1} ${e.descriptor.digest.slice(0, 19)}: ${e.kind === "exists" ? "exists" : "unpacked"}\n`,
    );
  };
}

/** Builds the `berth` command tree. Exported for tests, which run commands in-process. */
export function buildProgram(
  io: { stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream },
  status: { exitCode: number } = { exitCode: 0 },
): Command {
  const program = new Command("berth")
    .description("berth: a containerd-class container system — ctr-style command line")
    .addOption(
      new Option("-a, --address <path>", "address of berthd's gRPC socket (omit for embedded mode)").env(
        "BERTH_ADDRESS",
      ),
    )
    .addOption(
      new Option("-n, --namespace <name>", "namespace to use")
        .env("BERTH_NAMESPACE")
        .default(process.env.CONTAINERD_NAMESPACE ?? "default"),
    )
    .addOption(
      new Option("--root <dir>", "root directory (embedded mode)")
        .env("BERTH_ROOT")
        .default("/var/lib/berth"),
    )
    .addOption(
      new Option("--state <dir>", "state directory (embedded mode)").env("BERTH_STATE").default("/run/berth"),
    )
    .option("--debug", "print stack traces of errors")
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .exitOverride()
    .enablePositionalOptions()
    .showHelpAfterError();

  let client: Client | undefined;
  const open = async (): Promise<Client> => {
    const g = program.opts<GlobalOptions>();
    client ??= await createClient({
      root: g.root,
      state: g.state,
      namespace: g.namespace,
      ...(g.address === undefined ? {} : { address: g.address }),
    });
    return client;
  };
  program.hook("postAction", async () => {
    await client?.close();
    client = undefined;
  });
  const out = (s: string) => io.stdout.write(s.endsWith("\n") ? s : `${s}\n`);

  const images = program.command("images").alias("image").alias("i").description("manage images");

  registryFlags(images.command("pull").description("pull an image from a registry").argument("<ref>"))
    .option("-q, --quiet", "print only the image digest")
    .option("--skip-unpack", "fetch only; do not unpack the layers into a snapshotter")
    .option("--snapshotter <name>", "snapshotter to unpack into", "overlayfs")
    .action(
      async (
        ref: string,
        opts: RegistryOptions & { quiet?: boolean; skipUnpack?: boolean; snapshotter: string },
      ) => {
        const c = await open();
        const progress = opts.quiet ? undefined : createProgressRenderer(io.stderr, "pulled");
        let ok = false;
        try {
          const unpack = opts.skipUnpack
            ? undefined
            : {
                snapshotter: opts.snapshotter,
                ...(opts.quiet || io.stderr.isTTY ? {} : { onEvent: unpackPrinter(io.stderr) }),
              };
          const image = await c.pull(ref, {
            ...platformsOf(opts),
            plainHttp: Boolean(opts.plainHttp),
            skipVerify: Boolean(opts.skipVerify),
            ...credentialsOption(opts.user),
            ...(progress ? { onProgress: progress.onEvent } : {}),
            ...(unpack ? { unpack } : {}),
          });
          ok = true;
          progress?.finish(true);
          if (unpack && !opts.quiet) io.stderr.write(`unpacked ${image.name} into ${opts.snapshotter}\n`);
          out(opts.quiet ? image.target.digest : `${image.name}\t${image.target.digest}`);
        } finally {
          if (!ok) progress?.finish(false);
        }
      },
    );

  registryFlags(
    images
      .command("push")
      .description("push an image to a registry")
      .argument("<remote>", "where to push, e.g. 127.0.0.1:5000/app:1")
      .argument("[local]", "local image to push (default: the same name as remote)"),
  ).action(async (remote: string, local: string | undefined, opts: RegistryOptions) => {
    const c = await open();
    const progress = createProgressRenderer(io.stderr, "pushed");
    let ok = false;
    try {
      await c.push(remote, {
        ...(local === undefined ? {} : { local }),
        ...platformsOf(opts),
        plainHttp: Boolean(opts.plainHttp),
        skipVerify: Boolean(opts.skipVerify),
        ...credentialsOption(opts.user),
        onProgress: progress.onEvent,
      });
      ok = true;
      progress.finish(true);
    } finally {
      if (!ok) progress.finish(false);
    }
  });

  images
    .command("ls")
    .alias("list")
    .description("list images")
    .argument("[filters...]", "containerd-style filters, e.g. name~=busybox")
    .option("-q, --quiet", "print only the image names")
    .action(async (filters: string[], opts: { quiet?: boolean }) => {
      const c = await open();
      const list = await c.listImages(filters);
      if (opts.quiet) {
        for (const image of list) out(image.name);
        return;
      }
      const rows: string[][] = [];
      for (const image of list) {
        const summary = await c.imageSummary(image);
        rows.push([
          image.name,
          image.target.mediaType,
          image.target.digest,
          summary.complete ? formatBytes(summary.size) : `${formatBytes(summary.size)} (incomplete)`,
          summary.platforms.join(",") || "-",
          formatLabels(image.labels),
        ]);
      }
      out(formatTable(["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"], rows));
    });

  images
    .command("rm")
    .alias("remove")
    .alias("delete")
    .description("remove images and collect the content only they used")
    .argument("<ref...>")
    .option("--sync", "collect garbage before returning (always so in embedded mode)")
    .action(async (refs: string[]) => {
      const c = await open();
      let failed = 0;
      for (const ref of refs) {
        try {
          await c.deleteImage(ref, { sync: true });
          out(ref);
        } catch (err) {
          failed++;
          io.stderr.write(`berth: image ${ref}: ${errorMessage(err)}\n`);
        }
      }
      if (failed > 0) throw Object.assign(new Error(`${failed} image(s) not removed`), { reported: true });
    });

  images
    .command("tag")
    .description("create a new name for an existing image")
    .argument("<source>")
    .argument("<target...>")
    .option("--force", "replace an existing image of the target name")
    .action(async (source: string, targets: string[], opts: { force?: boolean }) => {
      const c = await open();
      for (const target of targets) {
        const image = await c.tagImage(source, target, { force: Boolean(opts.force) });
        out(image.name);
      }
    });

  images
    .command("import")
    .description(
      "import images from an OCI layout or docker save archive (tar file, directory, or - for stdin)",
    )
    .argument("<source>")
    .option("--base-name <name>", "base name for images whose archive names only a tag")
    .option("--platform <platform>", "platform to keep the image complete for; repeatable", repeatable)
    .option("--all-platforms", "import content for every platform")
    .option("--digests", "also create an image named <base>@<digest> for each manifest")
    .action(
      async (
        source: string,
        opts: { baseName?: string; platform?: string[]; allPlatforms?: boolean; digests?: boolean },
      ) => {
        const c = await open();
        const { statSync } = await import("node:fs");
        const input =
          source === "-"
            ? (Readable.from(process.stdin) as Readable)
            : statSync(source).isDirectory()
              ? { dir: source }
              : createReadStream(source);
        const imported = await c.importImages(input, {
          ...(opts.baseName === undefined ? {} : { baseName: opts.baseName }),
          ...platformsOf(opts),
          digests: Boolean(opts.digests),
        });
        for (const image of imported) out(`${image.name}\t${image.target.digest}`);
      },
    );

  images
    .command("export")
    .description(
      "export images as an OCI image layout tar with Docker's manifest.json for docker load (- for stdout)",
    )
    .argument("<out>")
    .argument("<ref...>")
    .option("--platform <platform>", "platform to export; repeatable", repeatable)
    .option("--all-platforms", "export every platform")
    .option("--skip-docker-manifest", "leave out Docker's manifest.json (ctr: --skip-manifest-json)")
    .action(
      async (file: string, refs: string[], opts: RegistryOptions & { skipDockerManifest?: boolean }) => {
        const options = {
          ...platformsOf(opts),
          ...(opts.skipDockerManifest ? { skipDockerManifest: true } : {}),
        };
        const c = await open();
        if (file === "-") {
          await c.exportImages(io.stdout, refs, options);
          return;
        }
        // Write beside the target and rename on success, so a failed export leaves no partial archive.
        const partial = `${file}.partial-${process.pid}`;
        const sink = createWriteStream(partial, { mode: 0o644 });
        let ok = false;
        try {
          await c.exportImages(sink, refs, options);
          ok = true;
        } finally {
          sink.end();
          await finished(sink).catch(() => undefined);
          if (ok) renameSync(partial, file);
          else rmSync(partial, { force: true });
        }
      },
    );

  images
    .command("inspect")
    .description("print an image's record, manifest and config as JSON")
    .argument("<ref>")
    .option("--platform <platform>", "platform to resolve (default: this host)")
    .action(async (ref: string, opts: { platform?: string }) => {
      const c = await open();
      const details = await c.inspectImage(
        ref,
        opts.platform === undefined ? {} : { platform: opts.platform },
      );
      out(JSON.stringify(details, null, 2));
    });

  images
    .command("unpack")
    .description("unpack an image's layers into a snapshotter")
    .argument("<ref>")
    .option("--snapshotter <name>", "snapshotter to unpack into", "overlayfs")
    .option("--platform <platform>", "platform to unpack (default: this host)")
    .action(async (ref: string, opts: { snapshotter: string; platform?: string }) => {
      const c = await open();
      const result = await c.unpack(ref, {
        snapshotter: opts.snapshotter,
        ...(opts.platform === undefined ? {} : { platform: opts.platform }),
        onEvent: unpackPrinter(io.stderr),
      });
      out(result.chainId);
    });

  images
    .command("mount")
    .description("mount an image's root filesystem (an active snapshot keyed by the target path)")
    .argument("<ref>")
    .argument("<target>")
    .option("--snapshotter <name>", "snapshotter to use", "overlayfs")
    .option("--rw", "mount read-write (an active snapshot) instead of a read-only view")
    .action(async (ref: string, target: string, opts: { snapshotter: string; rw?: boolean }) => {
      const c = await open();
      const abs = resolvePath(target);
      await c.mountImage(ref, abs, { snapshotter: opts.snapshotter, readOnly: !opts.rw });
      out(abs);
    });

  images
    .command("unmount")
    .alias("umount")
    .description("unmount a target mounted by `images mount`")
    .argument("<target>")
    .option("--snapshotter <name>", "snapshotter to use", "overlayfs")
    .option("--rm", "also remove the snapshot")
    .action(async (target: string, opts: { snapshotter: string; rm?: boolean }) => {
      const c = await open();
      const abs = resolvePath(target);
      await c.unmountImage(abs, { snapshotter: opts.snapshotter, removeSnapshot: Boolean(opts.rm) });
      out(abs);
    });

  addSnapshotCommands(program, open, out);
  addNetworkCommands(
    program,
    () => {
      const g = program.opts<GlobalOptions>();
      // The network commands use the stores directly, like embedded mode; say so rather than
      // silently ignoring a daemon address.
      if (g.address !== undefined) {
        throw notImplemented(
          `cannot manage networks through berthd at ${g.address}: the daemon is not part of this release yet; omit --address to use embedded mode`,
        );
      }
      return g.root;
    },
    out,
  );

  program
    .command("run")
    .description("run a container from a pulled image and wait for it (embedded mode; like ctr run)")
    // Everything after the container id belongs to the container's command, dashes included.
    .passThroughOptions()
    .argument("<image>")
    .argument("<id>", "container id")
    .argument("[args...]", "command and arguments (default: the image's Entrypoint and Cmd)")
    .option("--rm", "remove the container's snapshot when it exits")
    .option("--snapshotter <name>", "snapshotter to use", "overlayfs")
    .option("--env <KEY=VALUE>", "an extra environment variable; repeatable", repeatable)
    .option("--read-only", "mount the root filesystem read-only")
    .option(
      "--network <mode>",
      "none (default, like ctr: only lo), bridge, a network's name, host, container:<id>, ns:<path>, cni:<name>",
    )
    .option(
      "-p, --publish <port>",
      "publish a container port on the host, [ip:]hostPort:containerPort[/udp]; repeatable (implies --network bridge when no network is given)",
      repeatable,
    )
    .action(
      async (
        image: string,
        id: string,
        args: string[],
        opts: {
          rm?: boolean;
          snapshotter: string;
          env?: string[];
          readOnly?: boolean;
          network?: string;
          publish?: string[];
        },
      ) => {
        const c = await open();
        status.exitCode = await c.run(image, id, {
          snapshotter: opts.snapshotter,
          rm: Boolean(opts.rm),
          ...(args.length > 0 ? { args } : {}),
          ...(opts.env === undefined ? {} : { env: opts.env }),
          ...(opts.readOnly ? { readOnly: true } : {}),
          ...(opts.network === undefined ? {} : { network: opts.network }),
          ...(opts.publish === undefined ? {} : { ports: opts.publish }),
        });
      },
    );

  program
    .command("commit")
    .description("commit the changes of an active snapshot (a container's root filesystem) as a new image")
    .argument("<key>", "active snapshot key (for `images mount --rw`, the mount target)")
    .argument("<image>", "name of the new image")
    .option("--base <image>", "image the snapshot was made from (default: recorded on the snapshot)")
    .option("--snapshotter <name>", "snapshotter holding the snapshot", "overlayfs")
    .option("-m, --message <text>", "comment for the new history entry")
    .option("--compression <kind>", "layer compression: gzip, zstd or none", "gzip")
    .action(
      async (
        key: string,
        name: string,
        opts: { base?: string; snapshotter: string; message?: string; compression: string },
      ) => {
        if (!["gzip", "zstd", "none"].includes(opts.compression)) {
          throw invalidArgument(
            `--compression must be gzip, zstd or none, not ${JSON.stringify(opts.compression)}`,
          );
        }
        const c = await open();
        const existing = await c.snapshotter(opts.snapshotter);
        // A target path given for `images mount` is the snapshot key in its absolute form.
        const snapshotKey = await existing
          .stat(key)
          .then(() => key)
          .catch(() => resolvePath(key));
        const image = await c.commit(snapshotKey, name, {
          snapshotter: opts.snapshotter,
          compression: opts.compression as "gzip" | "zstd" | "none",
          ...(opts.base === undefined ? {} : { base: opts.base }),
          ...(opts.message === undefined ? {} : { comment: opts.message }),
        });
        out(`${image.name}\t${image.target.digest}`);
      },
    );

  const content = program.command("content").description("manage content (blobs)");
  content
    .command("ls")
    .alias("list")
    .description("list blobs")
    .argument("[filters...]", 'containerd-style filters, e.g. labels."containerd.io/gc.root"')
    .option("-q, --quiet", "print only the digests")
    .action(async (filters: string[], opts: { quiet?: boolean }) => {
      const c = await open();
      const rows: string[][] = [];
      await c.content.walk((info) => {
        rows.push([
          info.digest,
          formatBytes(info.size),
          formatAge(info.createdAt),
          formatLabels(info.labels),
        ]);
      }, filters);
      if (opts.quiet) for (const row of rows) out(row[0] ?? "");
      else out(formatTable(["DIGEST", "SIZE", "AGE", "LABELS"], rows));
    });

  content
    .command("get")
    .description("write a blob to stdout")
    .argument("<digest>")
    .action(async (digest: string) => {
      const c = await open();
      const reader = await c.content.readerAt(digest);
      try {
        await pipeline(reader.stream(), io.stdout, { end: false });
      } finally {
        await reader.close();
      }
    });

  content
    .command("rm")
    .alias("delete")
    .description("remove blobs from this namespace")
    .argument("<digest...>")
    .action(async (digests: string[]) => {
      const c = await open();
      for (const digest of digests) {
        await c.content.delete(digest);
        out(digest);
      }
      // Embedded mode has no daemon to collect later: blobs no namespace records go now.
      await c.garbageCollect();
    });

  return program;
}

/**
 * Runs `berth` with `argv` (as in `process.argv`) and returns the exit code: 0 on success, 1 on an
 * error (printed as `berth: <message>`), 2 on a usage error.
 */
export async function main(
  argv: readonly string[],
  io: { stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream } = {
    stdout: process.stdout,
    stderr: process.stderr,
  },
): Promise<number> {
  const status = { exitCode: 0 };
  const program = buildProgram(io, status);
  try {
    await program.parseAsync([...argv]);
    return status.exitCode;
  } catch (err) {
    const commanderCode = (err as { code?: unknown }).code;
    if (typeof commanderCode === "string" && commanderCode.startsWith("commander.")) {
      return commanderCode === "commander.helpDisplayed" || commanderCode === "commander.version" ? 0 : 2;
    }
    if (!(err as { reported?: boolean }).reported) {
      const debug = program.opts<GlobalOptions>().debug;
      io.stderr.write(`berth: ${errorMessage(err)}${debug ? "" : ` [${errorCode(err)}]`}\n`);
      if (debug && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
    }
    return 1;
  }
}
