import { constants } from "node:os";
import { invalidArgument } from "@berth/errdefs";

/**
 * Parses a signal the way runc's `kill` does: a number ("9"), a name with or without the SIG
 * prefix ("KILL", "SIGKILL"), case-insensitive. Returns the signal number.
 *
 * @throws invalid-argument `unknown signal "X"` for anything else, or a number outside 1..64.
 */
export function parseSignal(raw: string): number {
  if (/^\d+$/.test(raw)) {
    const n = Number(raw);
    // Linux has signals 1..64 (32 and 33 are glibc's, but the kernel accepts them).
    if (n >= 1 && n <= 64) return n;
    throw invalidArgument(`unknown signal "${raw}": signal numbers are 1 to 64`);
  }
  const upper = raw.toUpperCase();
  const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
  const table = constants.signals as Readonly<Record<string, number>>;
  const n = table[name];
  if (n === undefined) throw invalidArgument(`unknown signal "${raw}"`);
  return n;
}
