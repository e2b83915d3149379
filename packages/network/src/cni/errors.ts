import { BerthError, type ErrorCode } from "@berth/errdefs";
import { CniErrorCode } from "./types.js";

// How the well-known CNI error codes map onto berth codes; everything else (including the
// plugin-specific codes 100+) is "unknown" and keeps its number in `cniCode`.
const codeMap: Readonly<Record<number, ErrorCode>> = {
  [CniErrorCode.IncompatibleVersion]: "failed-precondition",
  [CniErrorCode.UnsupportedField]: "invalid-argument",
  [CniErrorCode.ContainerUnknown]: "not-found",
  [CniErrorCode.InvalidEnvironment]: "invalid-argument",
  [CniErrorCode.IoFailure]: "internal",
  [CniErrorCode.DecodeFailure]: "invalid-argument",
  [CniErrorCode.InvalidNetworkConfig]: "invalid-argument",
  [CniErrorCode.TryAgainLater]: "unavailable",
};

/** What a {@link CniPluginError} carries besides its message. */
export interface CniPluginErrorDetails {
  /** The plugin type (binary name), e.g. `bridge`. */
  readonly plugin: string;
  /** The CNI command that failed. */
  readonly command: string;
  /** The network (conflist `name`), when the failure happened while running a list. */
  readonly network?: string;
  /** The CNI error code from the plugin's error JSON; undefined when it printed none. */
  readonly cniCode?: number;
  /** The `msg` of the plugin's error JSON, or its stderr when it printed no JSON. */
  readonly msg: string;
  /** The `details` of the plugin's error JSON, if any. */
  readonly details?: string;
  /** The plugin's exit status (a number) or the signal that ended it. */
  readonly exit: number | string;
}

/**
 * A CNI plugin failed: it exited non-zero (printing the spec's error JSON, or not), was killed, or
 * printed something that is not a valid result. The berth `code` follows the CNI code (3 →
 * `not-found`, 11 → `unavailable`, 1 → `failed-precondition`, 2/4/6/7 → `invalid-argument`, 5 →
 * `internal`, others → `unknown`); the message names the plugin, the network, the command, the CNI
 * code and the plugin's `msg` and `details`.
 */
export class CniPluginError extends BerthError {
  readonly plugin: string;
  readonly command: string;
  readonly network: string | undefined;
  readonly cniCode: number | undefined;
  readonly msg: string;
  readonly details: string | undefined;
  readonly exit: number | string;

  constructor(info: CniPluginErrorDetails, options?: { cause?: unknown }) {
    const where = info.network === undefined ? "" : ` for network ${info.network}`;
    const code = info.cniCode === undefined ? "" : ` (CNI code ${info.cniCode})`;
    const details = info.details ? `: ${info.details}` : "";
    super(
      info.cniCode === undefined ? "unknown" : (codeMap[info.cniCode] ?? "unknown"),
      `CNI plugin ${info.plugin} ${info.command}${where} failed${code}: ${info.msg}${details}`,
      options,
    );
    this.name = "CniPluginError";
    this.plugin = info.plugin;
    this.command = info.command;
    this.network = info.network;
    this.cniCode = info.cniCode;
    this.msg = info.msg;
    this.details = info.details;
    this.exit = info.exit;
  }
}
