// A private containerd per measurement (startContainerd from @berth/testing: own root, state,
// socket and TMPDIR, CRI disabled) and `ctr` timed against it. Kept apart from harness.mjs, which
// benchmarks import without having built @berth/testing.
import { startContainerd } from "@berth/testing";
import { procCpuMs, timed } from "./harness.mjs";

/**
 * Starts a containerd under `dir` (untimed), calls `fn(containerd)` and stops it (which removes
 * its root) when `fn` settles; a cleanup of `cleanups` stops it if a signal arrives meanwhile.
 * Resolves or rejects as `fn` does.
 */
export async function withContainerd(cleanups, dir, fn) {
  const containerd = await startContainerd(dir);
  // The finally below does not run when a signal ends the process mid-run; the cleanups do.
  cleanups.track(containerd.stop);
  try {
    return await fn(containerd);
  } finally {
    cleanups.untrack(containerd.stop);
    await containerd.stop();
  }
}

/**
 * Times `ctr --address <containerd> --namespace bench ...argv` with `timed` (its report written
 * in `timeDir`, `options` passed on); resolves with `timed`'s result plus the CPU time the daemon
 * (`daemonCpuMs`) and the process `registryPid` (`registryCpuMs`) used meanwhile.
 */
export async function timedCtr(cleanups, containerd, timeDir, registryPid, argv, options) {
  const daemonBefore = procCpuMs(containerd.pid);
  const registryBefore = procCpuMs(registryPid);
  const r = await timed(
    cleanups,
    timeDir,
    "ctr",
    ["--address", containerd.address, "--namespace", "bench", ...argv],
    options,
  );
  return {
    ...r,
    daemonCpuMs: procCpuMs(containerd.pid) - daemonBefore,
    registryCpuMs: procCpuMs(registryPid) - registryBefore,
  };
}
