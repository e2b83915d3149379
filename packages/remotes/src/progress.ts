/**
 * One step of a pull or a push, for progress display. `ref` is the image reference for
 * `resolving`/`resolved`, and the content's ingest ref otherwise; `offset`/`total` are bytes.
 *
 * Kinds: `resolving` and `resolved` (the reference), `waiting` (queued for a transfer slot),
 * `downloading` (throttled to one event per 100 ms per blob), `uploading` (push only),
 * `done` (committed or pushed), `exists` (already present, nothing transferred), `mounted`
 * (push only: mounted from another repository), `error` (the transfer failed; the error is
 * thrown by the call).
 */
export interface ProgressEvent {
  readonly kind:
    | "resolving"
    | "resolved"
    | "waiting"
    | "downloading"
    | "uploading"
    | "done"
    | "exists"
    | "mounted"
    | "error";
  readonly ref: string;
  readonly digest?: string;
  readonly mediaType?: string;
  readonly offset: number;
  readonly total: number;
}

/** Minimum interval between two `downloading`/`uploading` events of one blob, in milliseconds. */
export const progressInterval = 100;

/** A counting semaphore: at most `limit` tasks run at once. @internal */
export class Limiter {
  private active = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /** Runs `task` when a slot is free; `onWait` is called first if it must queue. */
  async run<T>(task: () => Promise<T>, onWait?: () => void): Promise<T> {
    if (this.active >= this.limit) {
      onWait?.();
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else {
      this.active++;
    }
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      // The slot passes straight to the next waiter, so `active` stays the same.
      if (next !== undefined) next();
      else this.active--;
    }
  }
}
