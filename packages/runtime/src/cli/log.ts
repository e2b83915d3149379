import { appendFileSync } from "node:fs";

/** The log formats of runc's `--log-format`. */
export const LogFormat = { text: "text", json: "json" } as const;
/** One of {@link LogFormat}. */
export type LogFormat = (typeof LogFormat)[keyof typeof LogFormat];

/** Log levels the CLI writes; `debug` only with `--debug`. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** Where a log line goes: appended to a file, or written to a stream (stderr). */
export type LogSink = { readonly file: string } | { readonly stream: NodeJS.WritableStream };

/**
 * A line logger with runc's two formats. `text` to a stream prints `berth-runc: <msg>` (the way a
 * user reads an error); `text` to a file prints logrus-style `time="…" level=… msg="…"` lines like
 * runc's log file; `json` prints `{"level":"…","msg":"…","time":"…"}`, one object a line, the format
 * containerd's shim parses from runc's `--log` file.
 */
export class Logger {
  readonly #sink: LogSink;
  readonly #format: LogFormat;
  readonly #debug: boolean;

  constructor(sink: LogSink, format: LogFormat, debug: boolean) {
    this.#sink = sink;
    this.#format = format;
    this.#debug = debug;
  }

  /** Whether the log goes to a file (so errors must also reach stderr, as runc's fatal() does). */
  get toFile(): boolean {
    return "file" in this.#sink;
  }

  /** Writes one line at `level`; debug lines are dropped unless `--debug` was given. Never throws. */
  log(level: LogLevel, msg: string): void {
    if (level === "debug" && !this.#debug) return;
    const time = new Date().toISOString();
    let line: string;
    if (this.#format === "json") line = `${JSON.stringify({ level, msg, time })}\n`;
    else if ("file" in this.#sink) line = `time="${time}" level=${level} msg=${JSON.stringify(msg)}\n`;
    else line = `berth-runc: ${msg}\n`;
    try {
      if ("file" in this.#sink) appendFileSync(this.#sink.file, line);
      else this.#sink.stream.write(line);
    } catch {
      // A log that cannot be written must not turn a result into a different failure.
    }
  }
}
