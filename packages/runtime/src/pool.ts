/**
 * A warm pool of pre-spawned container inits. Starting Node is most of the time a container
 * start costs (tens of ms); an init spawned ahead of time in a fresh PID namespace and blocked
 * reading its control socket for the config has not done anything that depends on the spec yet
 * (the other namespaces, cgroups, rootfs all come after the config), so any create that wants a
 * new PID namespace and the runtime's own stdio can use it.
 *
 * @internal
 */
import { invalidArgument } from "@berth/errdefs";

/** Options of the runtime's init pool (`createRuntime({ root, pool })`). */
export interface PoolOptions {
  /** How many idle inits to keep ready, 1 to 64. */
  readonly size: number;
}

/** How the pool makes, checks and ends its members. */
export interface PoolFactory<T> {
  /** Spawns one member synchronously (it must not keep the event loop alive while idle). */
  spawn(): T;
  /** Whether an idle member can still be handed out (its process has not exited). */
  alive(member: T): boolean;
  /** Kills an idle member by its pid and resolves once it has exited. */
  destroy(member: T): Promise<void>;
}

/**
 * Keeps `size` idle members, refilled in the background one per event-loop turn so that a
 * refill never delays the create that took a member. Not safe for use after {@link InitPool.close}.
 */
export class InitPool<T> {
  private readonly idle: T[] = [];
  private refilling = false;
  private closed = false;
  /** The error of the last failed background spawn; refilling stops until the next take. */
  private failure: unknown;

  constructor(
    private readonly options: PoolOptions,
    private readonly factory: PoolFactory<T>,
  ) {
    if (!Number.isInteger(options.size) || options.size < 1 || options.size > 64)
      throw invalidArgument(`init pool size must be an integer from 1 to 64, not ${options.size}`);
  }

  /** How many idle members are ready now. */
  get ready(): number {
    return this.idle.length;
  }

  /** Starts filling the pool in the background. */
  fill(): void {
    this.scheduleRefill();
  }

  /**
   * An idle live member, or undefined when none is ready (the caller spawns one itself). The
   * caller owns the member from now on. Schedules a refill either way; dead members are dropped.
   */
  take(): T | undefined {
    this.failure = undefined;
    let member = this.idle.shift();
    while (member !== undefined && !this.factory.alive(member)) {
      void this.factory.destroy(member).catch(() => undefined);
      member = this.idle.shift();
    }
    this.scheduleRefill();
    return member;
  }

  /** Kills every idle member (by pid) and stops refilling; resolves once they have exited. */
  async close(): Promise<void> {
    this.closed = true;
    const members = this.idle.splice(0);
    await Promise.all(members.map((m) => this.factory.destroy(m)));
  }

  private scheduleRefill(): void {
    if (this.refilling || this.closed) return;
    this.refilling = true;
    const step = () => {
      if (this.closed || this.failure !== undefined || this.idle.length >= this.options.size) {
        this.refilling = false;
        return;
      }
      try {
        this.idle.push(this.factory.spawn());
      } catch (err) {
        // A create spawning on its own will meet the same error and report it.
        this.failure = err;
      }
      setImmediate(step).unref();
    };
    setImmediate(step).unref();
  }
}
