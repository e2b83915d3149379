// A private containerd daemon for the comparison, in the same way as the e2e tests start one (not
// imported from e2e: benchmarks stand alone): its own root, state and sockets under a fresh temp
// directory, the CRI plugin disabled, stopped by its pid. Its temporary mounts (the applier mounts
// a layer's first snapshot on a temp dir) go to a directory of its own too, via TMPDIR and
// XDG_RUNTIME_DIR, so that stop() can find and detach anything left mounted before removing it.
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { unmountUnder } from "./harness.mjs";

const run = promisify(execFile);

/**
 * Starts containerd under a new temp directory in `parent` and resolves once `ctr version`
 * answers. The handle's `stop()` sends SIGTERM to that pid only (SIGKILL after 5 s), detaches
 * anything still mounted under the directory and removes it; it is idempotent. `root` is the
 * daemon's root (content in `contentDir`, overlay snapshots in `snapshotsDir`).
 */
export async function startContainerd(parent) {
  const dir = mkdtempSync(join(parent, "containerd-"));
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
  child.stderr.on("data", (d) => {
    log = (log + d).slice(-4000);
  });
  let stopped;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        process.kill(child.pid, "SIGTERM");
        const timer = setTimeout(() => child.exitCode === null && process.kill(child.pid, "SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopped;
  };
  const ctr = async (...args) => (await run("ctr", ["--address", address, ...args])).stdout;
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
