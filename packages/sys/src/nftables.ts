/**
 * libnftables (the library behind the `nft` command, Debian package libnftables1) through koffi,
 * loaded lazily. berth programs its own nftables table with it rather than encoding nf_tables
 * netlink bytecode by hand; see packages/network/README.md for why.
 */
import { BerthError, ErrorCode } from "@berth/errdefs";
import { optionalLibrary } from "./libc.js";
import type { NativeFunction } from "./native-codec.js";

const LIBRARY = "libnftables.so.1";

interface Nftables {
  readonly ctxNew: NativeFunction;
  readonly ctxFree: NativeFunction;
  readonly outputSetFlags: NativeFunction;
  readonly bufferOutput: NativeFunction;
  readonly bufferError: NativeFunction;
  readonly runCmdFromBuffer: NativeFunction;
  readonly getOutputBuffer: NativeFunction;
  readonly getErrorBuffer: NativeFunction;
}

/** libnftables.h `NFT_CTX_DEFAULT`: a context that loads no include paths beyond the defaults. */
const NFT_CTX_DEFAULT = 0;

/** The `NFT_CTX_OUTPUT_*` flags of libnftables.h that berth uses. */
export const NftOutputFlag = {
  /** Print rule, chain and set handles (needed to delete a rule). */
  HANDLE: 1 << 3,
  /** Print listings as libnftables-json(5) instead of nft syntax. */
  JSON: 1 << 4,
} as const;

/**
 * Loads libnftables on first call. Throws `not-implemented` naming the library and the Debian
 * package when it is missing.
 *
 * @internal
 */
export const loadNftables: () => Nftables = optionalLibrary(LIBRARY, "libnftables1", (lib) => {
  // `struct nft_ctx *` stays an opaque `void *`. The buffer getters return strings owned by the
  // context, valid until the next command or nft_ctx_free: koffi copies them into JS strings.
  return {
    ctxNew: lib.func("void *nft_ctx_new(uint32_t flags)"),
    ctxFree: lib.func("void nft_ctx_free(void *ctx)"),
    outputSetFlags: lib.func("void nft_ctx_output_set_flags(void *ctx, unsigned int flags)"),
    bufferOutput: lib.func("int nft_ctx_buffer_output(void *ctx)"),
    bufferError: lib.func("int nft_ctx_buffer_error(void *ctx)"),
    runCmdFromBuffer: lib.func("int nft_run_cmd_from_buffer(void *ctx, const char *buf)"),
    getOutputBuffer: lib.func("const char *nft_ctx_get_output_buffer(void *ctx)"),
    getErrorBuffer: lib.func("const char *nft_ctx_get_error_buffer(void *ctx)"),
  };
});

/** Whether libnftables can be loaded here. Never throws. */
export function nftablesAvailable(): boolean {
  try {
    loadNftables();
    return true;
  } catch {
    return false;
  }
}

/** Options of {@link runNftables}. */
export interface NftablesRunOptions {
  /** Print listings as libnftables-json(5) (default true). */
  readonly json?: boolean;
  /** Include handles in listings (default true). */
  readonly handles?: boolean;
}

// libnftables reports failures only as text ("Error: Could not process rule: No such file or
// directory"); the strerror() phrase is the one stable part, so it decides the error code.
const errorCodes: ReadonlyArray<readonly [string, ErrorCode]> = [
  ["No such file or directory", ErrorCode.NotFound],
  ["File exists", ErrorCode.AlreadyExists],
  ["Operation not permitted", ErrorCode.PermissionDenied],
  ["Device or resource busy", ErrorCode.FailedPrecondition],
  ["Cannot allocate memory", ErrorCode.ResourceExhausted],
  ["syntax error", ErrorCode.InvalidArgument],
  ["Error: Could not resolve", ErrorCode.InvalidArgument],
];

/**
 * Runs `commands` (nft syntax, or a libnftables-json(5) document starting with `{`) through a
 * fresh libnftables context and returns what it printed (a JSON document for list commands unless
 * `json` is false; empty for changes). Several commands separated by `;` or newlines form one
 * transaction: all apply or none does.
 *
 * The context is created and freed inside the call, so its netlink socket lives in the network
 * namespace of the calling thread at the time of the call; a caller that moves the main thread
 * with `setns` around this call programs that namespace. Creating a context costs well under a
 * millisecond.
 *
 * Throws a `BerthError` whose message carries nft's own error text and the failing command:
 * `not-found` (no such table, chain or rule), `already-exists`, `permission-denied` (no
 * CAP_NET_ADMIN), `failed-precondition` (object still in use), `invalid-argument` (syntax), or
 * `internal`; `not-implemented` when libnftables is not installed.
 */
export function runNftables(commands: string, options: NftablesRunOptions = {}): string {
  const lib = loadNftables();
  const ctx = lib.ctxNew(NFT_CTX_DEFAULT);
  if (ctx === null) throw new BerthError(ErrorCode.ResourceExhausted, "nft_ctx_new failed (out of memory)");
  try {
    let flags = 0;
    if (options.json ?? true) flags |= NftOutputFlag.JSON;
    if (options.handles ?? true) flags |= NftOutputFlag.HANDLE;
    lib.outputSetFlags(ctx, flags);
    // Without buffering, libnftables prints to the process's stdout and stderr.
    lib.bufferOutput(ctx);
    lib.bufferError(ctx);
    const rc = lib.runCmdFromBuffer(ctx, commands) as number;
    if (rc !== 0) {
      const text = ((lib.getErrorBuffer(ctx) as string | null) ?? "").trim();
      const firstLine = text.split("\n")[0] ?? "";
      const code = errorCodes.find(([phrase]) => text.includes(phrase))?.[1] ?? ErrorCode.Internal;
      throw new BerthError(
        code,
        `nft: ${firstLine || `failed with status ${rc}`} (running: ${abbreviate(commands)})${
          text.includes("\n") ? `\n${text}` : ""
        }`,
      );
    }
    return (lib.getOutputBuffer(ctx) as string | null) ?? "";
  } finally {
    lib.ctxFree(ctx);
  }
}

function abbreviate(commands: string): string {
  const flat = commands.replace(/\s+/g, " ").trim();
  return flat.length > 300 ? `${flat.slice(0, 300)}…` : flat;
}
