import cliProgress from "cli-progress";
import { formatBytes } from "./format.js";

/** The progress event shape emitted by `@berth/remotes` pulls and pushes. */
export interface TransferEvent {
  readonly kind: string;
  readonly ref: string;
  readonly digest?: string;
  readonly mediaType?: string;
  readonly offset: number;
  readonly total: number;
}

/** Short ctr-like label for a blob: `layer-sha256:0123456789ab`. */
function labelOf(event: TransferEvent): string {
  const mt = event.mediaType ?? "";
  const kind = /index|manifest\.list/.test(mt)
    ? "index"
    : /manifest/.test(mt)
      ? "manifest"
      : /config|container\.image/.test(mt)
        ? "config"
        : /layer|rootfs/.test(mt)
          ? "layer"
          : "blob";
  const digest = event.digest ?? event.ref;
  return `${kind}-${digest.slice(0, 19)}`;
}

/** True for the kinds that end a blob's transfer successfully. */
function settled(kind: string): boolean {
  return kind === "done" || kind === "exists" || kind === "mounted";
}

/** Consumes transfer events and renders them: bars on a terminal, one line per finished blob otherwise. */
export interface ProgressRenderer {
  readonly onEvent: (event: TransferEvent) => void;
  /** Stops rendering and prints the summary line. */
  finish(ok: boolean): void;
}

/**
 * Creates a renderer writing to `stream`. On a TTY each blob gets a bar (cli-progress); elsewhere,
 * so logs stay readable, each blob prints one line when it is done or found to exist already.
 */
export function createProgressRenderer(stream: NodeJS.WriteStream, verb: string): ProgressRenderer {
  const started = Date.now();
  let bytes = 0;
  const finished = new Set<string>();
  const tty = Boolean(stream.isTTY);
  const multibar = tty
    ? new cliProgress.MultiBar(
        {
          stream,
          format: "{label} | {bar} | {status} {done}/{size}",
          barsize: 30,
          hideCursor: true,
          clearOnComplete: false,
          fps: 10,
          autopadding: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const bars = new Map<string, cliProgress.SingleBar>();

  const payload = (e: TransferEvent, status: string) => ({
    label: labelOf(e).padEnd(28),
    status: status.padEnd(11),
    done: formatBytes(e.offset),
    size: formatBytes(e.total),
  });

  return {
    onEvent(e) {
      const key = e.digest ?? e.ref;
      if (e.kind === "done" && !finished.has(key)) bytes += Math.max(0, e.total);
      if (multibar) {
        if (e.kind === "resolving" || e.kind === "resolved") return;
        let bar = bars.get(key);
        if (!bar) {
          bar = multibar.create(Math.max(1, e.total), 0, payload(e, e.kind));
          bars.set(key, bar);
        }
        const value = settled(e.kind) ? Math.max(1, e.total) : e.offset;
        bar.setTotal(Math.max(1, e.total));
        bar.update(value, payload({ ...e, offset: value }, e.kind));
      } else if ((settled(e.kind) || e.kind === "error") && !finished.has(key)) {
        stream.write(`${labelOf(e)}: ${e.kind} (${formatBytes(e.total)})\n`);
      } else if (e.kind === "resolved") {
        stream.write(`${e.ref}: resolved\n`);
      }
      if (settled(e.kind)) finished.add(key);
    },
    finish(ok) {
      multibar?.stop();
      const seconds = (Date.now() - started) / 1000;
      const rate = seconds > 0 ? bytes / seconds : 0;
      stream.write(
        `${ok ? "" : "failed, "}elapsed: ${seconds.toFixed(1)} s\ttotal: ${formatBytes(bytes)}\t(${formatBytes(rate)}/s) ${verb}\n`,
      );
    },
  };
}
