/**
 * OCI runtime-spec executor: namespaces, rootfs, mounts, devices, cgroups, capabilities, seccomp, rlimits, hooks, console, exec; and berth-runc.
 *
 * @packageDocumentation
 */

export type { PoolOptions } from "./pool.js";
// --- container core (RB) ---
export type {
  CreateOptions,
  ExecOptions,
  RunOptions,
  Runtime,
  RuntimeOptions,
  StdioSpec,
} from "./runtime.js";
export { createRuntime } from "./runtime.js";
export { secureJoin } from "./secure-join.js";
export type {
  ConsoleSize,
  DefaultSpecOptions,
  Hook,
  Hooks,
  Linux,
  LinuxBlockIO,
  LinuxCapabilities,
  LinuxCPU,
  LinuxDevice,
  LinuxDeviceCgroup,
  LinuxHugepageLimit,
  LinuxIDMapping,
  LinuxMemory,
  LinuxNamespace,
  LinuxNetwork,
  LinuxPids,
  LinuxResources,
  LinuxSeccomp,
  LinuxSyscall,
  LinuxThrottleDevice,
  LinuxWeightDevice,
  POSIXRlimit,
  Process,
  Root,
  Spec,
  SpecMount,
  User,
} from "./spec.js";
export { defaultSpec, NamespaceType, validateProcess, validateSpec } from "./spec.js";
export type { ContainerState } from "./state.js";
export { ContainerStatus, checkContainerId } from "./state.js";

// --- end container core ---

// --- capabilities + seccomp (RD) ---
export type { CapabilityMasks, CapabilityName } from "./capabilities.js";
export {
  CAP_LAST_KNOWN,
  CAPABILITIES,
  capabilityMask,
  capabilityNames,
  formatCapabilityMask,
  lastCapability,
  parseCapabilities,
} from "./capabilities.js";
export type { CompileSeccompOptions, SeccompArch } from "./seccomp/compile.js";
export { compileSeccomp, seccompFilterFlags, syscallNumber } from "./seccomp/compile.js";
export { AuditArch, SeccompFlag, SeccompRet } from "./seccomp/constants.js";
// --- end capabilities + seccomp ---

// --- cgroups (RC) ---
export type { CgroupWrite } from "./cgroups/convert.js";
export {
  convertBlkioWeightToIoWeight,
  convertCpuSharesToWeight,
  convertMemorySwapToV2,
  planV2Writes,
} from "./cgroups/convert.js";
export type { CgroupManager, CgroupManagerOptions, CgroupStats } from "./cgroups/manager.js";
export { createCgroupManager, DEFAULT_CGROUP_PARENT } from "./cgroups/manager.js";
export type { CgroupMode } from "./cgroups/mounts.js";
export { cgroupVersion } from "./cgroups/mounts.js";
// --- end cgroups ---
// --- berth-runc CLI (RE) ---
export type { Features } from "./cli/features.js";
export { features, OCI_VERSION_MAX, OCI_VERSION_MIN } from "./cli/features.js";
export type { StateDocument } from "./cli/format.js";
export type { CliIo, MainOptions } from "./cli/main.js";
export { DEFAULT_ROOT as BERTH_RUNC_DEFAULT_ROOT, main as berthRuncMain } from "./cli/main.js";
export type {
  CliContainerState,
  CliCreateOptions,
  CliExecOptions,
  CliProcess,
  CliRuntime,
} from "./cli/runtime-api.js";
export { checkStateSchema, OCI_STATE_STATUSES } from "./cli/state-schema.js";
// --- end berth-runc CLI ---

// --- console (receiving end of --console-socket) ---

export type { ConsoleSocket } from "./console.js";
export { listenConsoleSocket } from "./console.js";
