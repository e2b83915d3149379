import { describe, expect, it } from "vitest";
import { chainIds } from "./chain-id.js";

describe("chainIds", () => {
  it("follows the image spec", () => {
    const a = `sha256:${"a".repeat(64)}`;
    const b = `sha256:${"b".repeat(64)}`;
    const [first, second] = chainIds([a, b]);
    expect(first).toBe(a);
    // printf '%s %s' sha256:aaa… sha256:bbb… | sha256sum
    expect(second).toBe("sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
    expect(chainIds([])).toEqual([]);
    expect(() => chainIds(["nope"])).toThrow(/diff_ids\[0\]/);
  });
});
