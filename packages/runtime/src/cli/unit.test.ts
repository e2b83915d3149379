import { describe, expect, it } from "vitest";
import { formatListTable, formatTabular, stateDocument } from "./format.js";
import { filterPsOutput } from "./ps.js";
import { parseSignal } from "./signals.js";
import { checkStateSchema } from "./state-schema.js";

describe("formatTabular", () => {
  it("pads like Go's tabwriter with runc's settings (min width 12, padding 3, last column bare)", () => {
    // The line runc 1.1 printed on this machine for one created container.
    const runc = [
      "ID          PID         STATUS      BUNDLE      CREATED                          OWNER",
      "t1          8592        created     /tmp/rcb    2026-11-28T12:04:00.156406786Z   root",
    ];
    const ours = formatListTable([
      {
        ociVersion: "1.0.2-dev",
        id: "t1",
        pid: 8592,
        status: "created",
        bundle: "/tmp/rcb",
        rootfs: "/tmp/rcb/rootfs",
        created: "2026-11-28T12:04:00.156406786Z",
        owner: "root",
      },
    ]);
    expect(ours).toBe(`${runc.join("\n")}\n`);
    expect(formatTabular([["a"]])).toBe("a\n");
  });
});

describe("stateDocument", () => {
  it("reports pid 0 for a stopped container and keeps annotations", () => {
    const doc = stateDocument({
      ociVersion: "1.0.2-dev",
      id: "x",
      status: "stopped",
      pid: 99,
      bundle: "/nonexistent",
      annotations: { a: "b" },
      created: new Date(0),
    });
    expect(doc).toEqual({
      ociVersion: "1.0.2-dev",
      id: "x",
      pid: 0,
      status: "stopped",
      bundle: "/nonexistent",
      rootfs: "",
      created: "1970-01-01T00:00:00.000Z",
      owner: "",
      annotations: { a: "b" },
    });
    expect(checkStateSchema(doc)).toEqual([]);
  });
});

describe("checkStateSchema", () => {
  it("names each violation of the runtime spec's state schema", () => {
    expect(checkStateSchema([])).toEqual(["state is not a JSON object"]);
    expect(checkStateSchema({ id: 1, status: "running", pid: -1, annotations: { k: 2 } })).toEqual([
      "required field ociVersion is missing",
      "id must be a string",
      "required field bundle is missing",
      "pid must be an integer >= 0, got -1",
      "pid is required (> 0) while the container is running",
      'annotations["k"] must be a string',
    ]);
    expect(checkStateSchema({ ociVersion: "1.0", id: "a", status: "created", bundle: "/b" })).toEqual([
      'ociVersion "1.0" is not a SemVer 2.0 version',
      "pid is required (> 0) while the container is created",
    ]);
    expect(checkStateSchema({ ociVersion: "1.0.2-dev", id: "a", status: "creating", bundle: "/b" })).toEqual(
      [],
    );
  });
});

describe("parseSignal", () => {
  it("accepts runc's spellings and rejects others", () => {
    expect(parseSignal("TERM")).toBe(15);
    expect(parseSignal("SIGKILL")).toBe(9);
    expect(parseSignal("hup")).toBe(1);
    expect(parseSignal("34")).toBe(34);
    expect(() => parseSignal("0")).toThrow(/unknown signal "0"/);
    expect(() => parseSignal("SIGNOPE")).toThrow(/unknown signal "SIGNOPE"/);
  });
});

describe("filterPsOutput", () => {
  it("keeps the header and the rows of the given pids, found by the PID column", () => {
    const out = [
      "UID          PID    PPID  C STIME TTY          TIME CMD",
      "root           1       0  0 10:00 ?        00:00:01 /sbin/init",
      "root          42       1  0 10:00 ?        00:00:00 sleep 30",
      "root         420       1  0 10:00 ?        00:00:00 sleep 42",
      "",
    ].join("\n");
    expect(filterPsOutput(out, [42])).toBe(
      "UID          PID    PPID  C STIME TTY          TIME CMD\nroot          42       1  0 10:00 ?        00:00:00 sleep 30\n",
    );
    expect(() => filterPsOutput("COMMAND\nsh\n", [1])).toThrow(/couldn't find PID field/);
  });
});
