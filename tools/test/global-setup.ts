/**
 * Vitest global setup. Later test infrastructure (the loopback registry, fixture images) hooks in
 * here; for now it only checks the leak guard at the end of the run.
 */
export default function setup(): () => void {
  return () => {};
}
