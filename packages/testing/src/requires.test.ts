import { afterEach, describe, expect, test, vi } from "vitest";
import { findCommand, requiresCommand, requiresRoot } from "./requires.js";

describe("requiresRoot / requiresCommand", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  test("requiresRoot is true exactly when running as uid 0", () => {
    expect(requiresRoot("a root-only test")).toBe(process.getuid?.() === 0);
  });

  test("finds installed commands by name and by absolute path", () => {
    expect(findCommand("skopeo")).toBe("/usr/bin/skopeo");
    expect(findCommand("/usr/bin/skopeo")).toBe("/usr/bin/skopeo");
    expect(requiresCommand("skopeo", "a skopeo oracle")).toBe(true);
  });

  test("a missing command skips with one printed reason per what", () => {
    const lines: string[] = [];
    vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    const missing = "berth-no-such-command-4f1c";
    expect(findCommand(missing)).toBeUndefined();
    expect(requiresCommand(missing, "the missing oracle")).toBe(false);
    expect(requiresCommand(missing, "the missing oracle")).toBe(false);
    expect(requiresCommand(missing, "another test")).toBe(false);
    expect(lines).toEqual([
      `skipping the missing oracle: needs ${missing} (not found in PATH)\n`,
      `skipping another test: needs ${missing} (not found in PATH)\n`,
    ]);
  });
});
