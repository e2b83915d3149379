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

/** Options of {@link runNftables}, {@link openNftables} and {@link NftablesContext.run}. */
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
 * An open libnftables context (`struct nft_ctx` and its netlink socket), made by
 * {@link openNftables}. It runs any number of command buffers; the caller owns it and frees it
 * with {@link NftablesContext.close}. A context that is never closed keeps its socket, and with
 * it its network namespace, until the process exits.
 *
 * The socket is opened by {@link openNftables} in the network namespace of the calling thread at
 * that moment and stays bound to it: every {@link NftablesContext.run} programs that namespace,
 * wherever the calling thread is by then. Run it only while the thread is in that namespace all
 * the same: libnftables resolves interface names (`iif`, `oif`) with a netlink socket of its own
 * that it opens per command, in the thread's current namespace.
 *
 * Runs stay correct when other processes change the ruleset between them: libnftables keeps a
 * cache of the ruleset in the context, but every run first asks the kernel for the ruleset's
 * generation (one `NFT_MSG_GETGEN` round trip) and refetches what the command needs unless the
 * cache holds all of it at the current generation; the run after a `list` always refetches
 * (nftables 1.0.6 src/cache.c, `nft_cache_update`). Every commit that changes anything, this
 * context's own included, moves the generation, so a cache is only reused when nothing changed.
 * (The comparison uses the generation's low 16 bits: it would be fooled only by exactly a
 * multiple of 65536 commits of others between two runs.)
 *
 * Why keep one open: the kernel frees the objects a transaction deletes (rules, set elements)
 * after an RCU grace period, and closing an nftables netlink socket waits for that pending work
 * (`nft_rcv_nl_event` → `nf_tables_trans_destroy_flush_work`): ~14 ms for a context closed right
 * after a deletion, nothing for one that stays open.
 */
export interface NftablesContext {
  /**
   * Runs `commands` (nft syntax, or a libnftables-json(5) document starting with `{`) and returns
   * what they printed: a JSON document for list commands unless `json` is false, empty for
   * changes. Several commands separated by `;` or newlines form one transaction: all apply or
   * none does. `options` override those given to {@link openNftables} for this run.
   *
   * Throws a `BerthError` whose message carries nft's own error text and the failing command:
   * `not-found` (no such table, chain or rule), `already-exists`, `permission-denied` (no
   * CAP_NET_ADMIN), `failed-precondition` (object still in use, or the context is closed),
   * `invalid-argument` (syntax), or `internal`. The context stays usable after a failed run.
   */
  run(commands: string, options?: NftablesRunOptions): string;
  /**
   * Frees the context and closes its netlink socket. Idempotent. It may block for up to an RCU
   * grace period (~14 ms) when a deletion was committed shortly before, see {@link NftablesContext}.
   */
  close(): void;
}

/**
 * Opens a libnftables context whose netlink socket lives in the calling thread's current network
 * namespace (see {@link NftablesContext} for the namespace binding, caching and cost). `options`
 * are the defaults of its runs. The caller must {@link NftablesContext.close} it.
 *
 * Throws `not-implemented` when libnftables is not installed, `resource-exhausted` when
 * libnftables cannot allocate the context.
 */
export function openNftables(options: NftablesRunOptions = {}): NftablesContext {
  const lib = loadNftables();
  const ctx = lib.ctxNew(NFT_CTX_DEFAULT);
  if (ctx === null) throw new BerthError(ErrorCode.ResourceExhausted, "nft_ctx_new failed (out of memory)");
  // Without buffering, libnftables prints to the process's stdout and stderr.
  lib.bufferOutput(ctx);
  lib.bufferError(ctx);
  return new Context(lib, ctx, options);
}

class Context implements NftablesContext {
  readonly #lib: Nftables;
  readonly #defaults: NftablesRunOptions;
  /** The `struct nft_ctx *`; null once closed. */
  #ctx: unknown;

  constructor(lib: Nftables, ctx: unknown, defaults: NftablesRunOptions) {
    this.#lib = lib;
    this.#ctx = ctx;
    this.#defaults = defaults;
  }

  run(commands: string, options: NftablesRunOptions = {}): string {
    const lib = this.#lib;
    const ctx = this.#ctx;
    if (ctx === null) {
      throw new BerthError(
        ErrorCode.FailedPrecondition,
        `nft: the libnftables context is closed (running: ${abbreviate(commands)})`,
      );
    }
    let flags = 0;
    if (options.json ?? this.#defaults.json ?? true) flags |= NftOutputFlag.JSON;
    if (options.handles ?? this.#defaults.handles ?? true) flags |= NftOutputFlag.HANDLE;
    lib.outputSetFlags(ctx, flags);
    const rc = lib.runCmdFromBuffer(ctx, commands) as number;
    // Both buffers are read after every run, whatever happened: reading one hands back its text
    // and rewinds it, and anything left unread (a warning on success, partial output before an
    // error) would otherwise be prepended to what the next run prints.
    const output = (lib.getOutputBuffer(ctx) as string | null) ?? "";
    const errors = ((lib.getErrorBuffer(ctx) as string | null) ?? "").trim();
    if (rc !== 0) {
      const firstLine = errors.split("\n")[0] ?? "";
      const code = errorCodes.find(([phrase]) => errors.includes(phrase))?.[1] ?? ErrorCode.Internal;
      throw new BerthError(
        code,
        `nft: ${firstLine || `failed with status ${rc}`} (running: ${abbreviate(commands)})${
          errors.includes("\n") ? `\n${errors}` : ""
        }`,
      );
    }
    return output;
  }

  close(): void {
    const ctx = this.#ctx;
    if (ctx === null) return;
    this.#ctx = null;
    this.#lib.ctxFree(ctx);
  }
}

/**
 * Runs `commands` through a context of its own: {@link openNftables}, {@link NftablesContext.run},
 * {@link NftablesContext.close}; same output and errors as `run`, plus `not-implemented` when
 * libnftables is not installed.
 *
 * The context lives only for the call, so it programs the network namespace of the calling
 * thread at the time of the call; a caller that moves the thread with `setns` around this call
 * programs that namespace. Creating a context costs well under a millisecond, but when the
 * commands delete anything, the close waits ~14 ms for the kernel (see {@link NftablesContext});
 * a caller that deletes often keeps a context open instead.
 */
export function runNftables(commands: string, options: NftablesRunOptions = {}): string {
  const context = openNftables(options);
  try {
    return context.run(commands);
  } finally {
    context.close();
  }
}

function abbreviate(commands: string): string {
  const flat = commands.replace(/\s+/g, " ").trim();
  return flat.length > 300 ? `${flat.slice(0, 300)}…` : flat;
}
