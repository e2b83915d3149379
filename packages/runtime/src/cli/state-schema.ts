/**
 * The OCI runtime spec's state schema (schema/state-schema.json with defs.json's `ociVersion` and
 * `annotations`), checked by hand: the schema is small and a JSON-schema engine would be the only
 * dependency it needed.
 */

/** The statuses the state schema allows. runc (and berth-runc) also print `paused`, which it lacks. */
export const OCI_STATE_STATUSES = ["creating", "created", "running", "stopped"] as const;

// defs.json#/definitions/ociVersion is SemVer 2.0 (with pre-release and build parts).
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

/**
 * Checks `doc` against the runtime spec's state schema and the runtime.md rule that `pid` is
 * required while the container is created or running. Returns the violations as sentences naming
 * the field (empty when valid); never throws. Extra properties are allowed, as the spec says.
 * `allowPaused` accepts runc's `paused` status, the one extension runc and berth-runc print.
 */
export function checkStateSchema(doc: unknown, options: { allowPaused?: boolean } = {}): string[] {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return ["state is not a JSON object"];
  const state = doc as Record<string, unknown>;
  const problems: string[] = [];
  for (const field of ["ociVersion", "id", "status", "bundle"]) {
    if (!(field in state)) problems.push(`required field ${field} is missing`);
    else if (typeof state[field] !== "string") problems.push(`${field} must be a string`);
  }
  if (typeof state.ociVersion === "string" && !SEMVER.test(state.ociVersion)) {
    problems.push(`ociVersion "${state.ociVersion}" is not a SemVer 2.0 version`);
  }
  const statuses: readonly string[] = options.allowPaused
    ? [...OCI_STATE_STATUSES, "paused"]
    : OCI_STATE_STATUSES;
  if (typeof state.status === "string" && !statuses.includes(state.status)) {
    problems.push(`status "${state.status}" is not one of ${statuses.join(", ")}`);
  }
  if ("pid" in state && (!Number.isInteger(state.pid) || (state.pid as number) < 0)) {
    problems.push(`pid must be an integer >= 0, got ${JSON.stringify(state.pid)}`);
  }
  if ((state.status === "created" || state.status === "running") && !(Number(state.pid) > 0)) {
    problems.push(`pid is required (> 0) while the container is ${state.status}`);
  }
  if ("annotations" in state) {
    const a = state.annotations;
    if (typeof a !== "object" || a === null || Array.isArray(a))
      problems.push("annotations must be an object");
    else {
      for (const [key, value] of Object.entries(a)) {
        if (key === "") problems.push("annotations has an empty key");
        if (typeof value !== "string") problems.push(`annotations["${key}"] must be a string`);
      }
    }
  }
  return problems;
}
