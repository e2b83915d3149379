// capabilities.ts and not spec.ts: spec.ts pulls in @berth/sys, which `features` has no use for.
import { CAPABILITIES } from "../capabilities.js";

/**
 * The document `berth-runc features` prints: runc's `features` JSON (runtime-spec
 * features-linux.md), stating what this runtime implements. Keep it truthful: containerd reads it
 * to decide, for example, whether recursive read-only mounts may be asked for.
 */

/** The OCI runtime-spec versions berth-runc accepts in a config.json (`ociVersion`). */
export const OCI_VERSION_MIN = "1.0.0";
/** The newest runtime-spec version berth-runc knows; `spec` writes this one, like runc 1.1. */
export const OCI_VERSION_MAX = "1.0.2-dev";

/** The shape of `berth-runc features`' output. */
export interface Features {
  ociVersionMin: string;
  ociVersionMax: string;
  hooks: string[];
  mountOptions: string[];
  linux: {
    namespaces: string[];
    capabilities: string[];
    cgroup: { v1: boolean; v2: boolean; systemd: boolean; systemdUser: boolean };
    seccomp: { enabled: boolean; actions: string[]; operators: string[]; archs: string[] };
    apparmor: { enabled: boolean };
    selinux: { enabled: boolean };
  };
  annotations: Record<string, string>;
}

// The mount options @berth/sys's parseMountOptions maps to flags or propagation (anything else
// goes to the filesystem as data, as with runc), sorted like runc's list.
const MOUNT_OPTIONS = [
  "async",
  "atime",
  "bind",
  "defaults",
  "dev",
  "diratime",
  "dirsync",
  "exec",
  "lazytime",
  "mand",
  "noatime",
  "nodev",
  "nodiratime",
  "noexec",
  "nomand",
  "norelatime",
  "nostrictatime",
  "nosuid",
  "nosymfollow",
  "private",
  "rbind",
  "relatime",
  "remount",
  "ro",
  "rprivate",
  "rshared",
  "rslave",
  "runbindable",
  "rw",
  "shared",
  "silent",
  "slave",
  "strictatime",
  "suid",
  "sync",
  "unbindable",
];

/** The features document of this build of berth-runc. A fresh object each call. */
export function features(version: string): Features {
  return {
    ociVersionMin: OCI_VERSION_MIN,
    ociVersionMax: OCI_VERSION_MAX,
    hooks: ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
    mountOptions: [...MOUNT_OPTIONS],
    linux: {
      // No user namespaces: berth runs containers as root on the host's ids (see the README).
      namespaces: ["cgroup", "ipc", "mount", "network", "pid", "uts"],
      capabilities: Object.entries(CAPABILITIES)
        .sort((a, b) => a[1] - b[1])
        .map(([name]) => name),
      cgroup: { v1: true, v2: true, systemd: false, systemdUser: false },
      seccomp: {
        enabled: true,
        actions: [
          "SCMP_ACT_ALLOW",
          "SCMP_ACT_ERRNO",
          "SCMP_ACT_KILL",
          "SCMP_ACT_KILL_PROCESS",
          "SCMP_ACT_KILL_THREAD",
          "SCMP_ACT_LOG",
          "SCMP_ACT_TRACE",
          "SCMP_ACT_TRAP",
        ],
        operators: [
          "SCMP_CMP_EQ",
          "SCMP_CMP_GE",
          "SCMP_CMP_GT",
          "SCMP_CMP_LE",
          "SCMP_CMP_LT",
          "SCMP_CMP_MASKED_EQ",
          "SCMP_CMP_NE",
        ],
        archs: ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
      },
      // AppArmor profiles and SELinux labels in a spec are ignored, so neither is claimed.
      apparmor: { enabled: false },
      selinux: { enabled: false },
    },
    annotations: { "io.berth.runtime.version": version },
  };
}
