import { execFile, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A private containerd daemon; see {@link startContainerd}. */
export interface ContainerdHandle {
  readonly address: string;
  readonly pid: number | undefined;
  /** The daemon's root directory. */
  readonly root: string;
  /** Where its content store keeps blobs. */
  readonly contentDir: string;
  /** Where its overlayfs snapshotter keeps snapshots. */
  readonly snapshotsDir: string;
  /** Runs `ctr --address <socket> <args>` and resolves with its stdout. */
  ctr(...args: string[]): Promise<string>;
  /** Stops the daemon (idempotent); see {@link startContainerd}. */
  stop(): Promise<void>;
}

/** Mount points at or below `dir`, deepest first, from /proc/self/mountinfo. */
function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const points: string[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const point = field.replace(/\\([0-7]{3})/g, (_, o: string) =>
      String.fromCharCode(Number.parseInt(o, 8)),
    );
    if (point === dir || point.startsWith(prefix)) points.push(point);
  }
  return points.sort((a, b) => b.length - a.length);
}

/**
 * Starts Debian's containerd under a new temp directory in `parent`, sharing nothing with a
 * containerd the host may run: its own root, state and sockets, the CRI plugin disabled (it wants
 * CNI config), and TMPDIR/XDG_RUNTIME_DIR inside that directory so the applier's temporary mounts
 * land there too. Resolves once `ctr version` answers. `stop()` sends SIGTERM to that pid only
 * (SIGKILL after 5 s), detaches anything still mounted under the directory and removes it.
 */
export async function startContainerd(parent: string = tmpdir()): Promise<ContainerdHandle> {
  const dir = mkdtempSync(join(parent, "berth-containerd-"));
  const address = join(dir, "containerd.sock");
  const config = join(dir, "config.toml");
  writeFileSync(
    config,
    [
      "version = 2",
      `root = "${join(dir, "root")}"`,
      `state = "${join(dir, "state")}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      "[grpc]",
      `  address = "${address}"`,
      "[ttrpc]",
      `  address = "${address}.ttrpc"`,
      "[debug]",
      `  address = "${address}.debug"`,
      "[metrics]",
      '  address = ""',
    ].join("\n"),
  );
  const tmp = join(dir, "tmp");
  mkdirSync(tmp);
  const child = spawn("containerd", ["--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, TMPDIR: tmp, XDG_RUNTIME_DIR: tmp },
  });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      const pid = child.pid;
      if (child.exitCode === null && child.signalCode === null && pid !== undefined) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        process.kill(pid, "SIGTERM");
        const timer = setTimeout(() => child.exitCode === null && process.kill(pid, "SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
      for (const point of mountsUnder(dir)) {
        if (spawnSync("umount", [point], { stdio: "ignore" }).status !== 0) {
          spawnSync("umount", ["-l", point], { stdio: "ignore" });
        }
      }
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopped;
  };
  const ctr = async (...args: string[]) => (await run("ctr", ["--address", address, ...args])).stdout;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (existsSync(address)) {
      try {
        await ctr("version");
        break;
      } catch {
        // The socket exists before the services are registered; try again.
      }
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`containerd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    pid: child.pid,
    root: join(dir, "root"),
    contentDir: join(dir, "root", "io.containerd.content.v1.content"),
    snapshotsDir: join(dir, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots"),
    ctr,
    stop,
  };
}
