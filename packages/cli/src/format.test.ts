import { describe, expect, it } from "vitest";
import { formatAge, formatBytes, formatLabels, formatTable } from "./format.js";

describe("format", () => {
  it("formats sizes like ctr", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1024)).toBe("1.0 KiB");
    expect(formatBytes(2.5 * 1024 * 1024)).toBe("2.5 MiB");
  });

  it("formats ages", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    expect(formatAge(new Date("2025-12-31T23:59:30Z"), now)).toBe("30 seconds");
    expect(formatAge(new Date("2025-12-31T22:00:00Z"), now)).toBe("2 hours");
  });

  it("formats labels and tables", () => {
    expect(formatLabels({})).toBe("-");
    expect(formatLabels({ b: "2", a: "1" })).toBe("a=1,b=2");
    expect(
      formatTable(
        ["REF", "SIZE"],
        [
          ["x", "1 B"],
          ["longer-name", "2 B"],
        ],
      ),
    ).toBe("REF           SIZE\nx             1 B\nlonger-name   2 B");
  });
});
