import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import { type FieldAdaptor, labelField, matchFilters, parseFilter, parseFilters } from "./filters.js";

/** An image-like object, as the metadata package will match them. */
function image(name: string, labels: Record<string, string>): FieldAdaptor {
  return ([head, ...rest]) => {
    if (head === "name" && rest.length === 0) return name;
    if (head === "target" && rest.length === 1 && rest[0] === "mediatype")
      return "application/vnd.oci.image.index.v1+json";
    if (head === "labels") return labelField(labels, rest);
    return undefined;
  };
}

describe("parseFilter", () => {
  it("parses selectors, operators, quoted fields and values", () => {
    const f = parseFilter(
      `labels."containerd.io/gc.root", name~=/^docker\\.io/ ,size!="0",digest==sha256:ab`,
    );
    expect(f.selectors.map((s) => [s.fieldpath, s.operator, s.value])).toEqual([
      [["labels", "containerd.io/gc.root"], "present", ""],
      [["name"], "~=", "^docker\\.io"],
      [["size"], "!=", "0"],
      [["digest"], "==", "sha256:ab"],
    ]);
    expect(parseFilter('a=="x\\"y\\u00e9\\n"').selectors[0]?.value).toBe('x"yé\n');
    expect(parseFilter("a~=|a/b|").selectors[0]?.value).toBe("a/b");
    expect(parseFilter("a!~=x").selectors[0]?.operator).toBe("!~=");
    expect(parseFilter("").selectors).toEqual([]);
    expect(parseFilter("labels.my-key").selectors[0]?.fieldpath).toEqual(["labels", "my-key"]);
  });

  it.each([
    ["name==", /expected a value/],
    ["name=x", /expected an operator/],
    ["name==a b", /expected "," or the end/],
    [",name", /unexpected ","/],
    ["name,", /expected a field name/],
    ['labels."open', /unterminated/],
    ["name~=(", /bad regular expression/],
    ["1abc", /unexpected "1"/],
    ['a=="\\q"', /unknown escape/],
  ])("rejects %j with invalid-argument", (input, message) => {
    let err: unknown;
    try {
      parseFilter(input);
    } catch (e) {
      err = e;
    }
    expect(isInvalidArgument(err)).toBe(true);
    expect(String((err as Error).message)).toMatch(message);
    expect(String((err as Error).message)).toContain(JSON.stringify(input));
  });
});

describe("matchFilters", () => {
  const busybox = image("docker.io/library/busybox:latest", { "containerd.io/gc.root": "x", env: "prod" });
  const alpine = image("docker.io/library/alpine:3", {});

  it("matches everything without filters", () => {
    expect(matchFilters([], alpine)).toBe(true);
    expect(matchFilters([""], alpine)).toBe(true);
  });

  it("ANDs selectors within a filter and ORs filters", () => {
    const f = parseFilters(["name~=busybox,labels.env==prod", "name==docker.io/library/alpine:3"]);
    expect(matchFilters(f, busybox)).toBe(true);
    expect(matchFilters(f, alpine)).toBe(true);
    expect(matchFilters(parseFilters(["name~=busybox,labels.env==dev"]), busybox)).toBe(false);
  });

  it("follows containerd for missing fields: presence and == fail, != succeeds", () => {
    expect(matchFilters(["labels.env"], alpine)).toBe(false);
    expect(matchFilters(["labels.env==prod"], alpine)).toBe(false);
    expect(matchFilters(["labels.env!=prod"], alpine)).toBe(true);
    expect(matchFilters(["labels.env!=prod"], busybox)).toBe(false);
    expect(matchFilters(["unknown"], busybox)).toBe(false);
  });

  it("joins the rest of a label path with dots, quoted or not", () => {
    expect(matchFilters(['labels."containerd.io/gc.root"'], busybox)).toBe(true);
    // Unquoted, "/" is not a field character, so the key must be quoted.
    expect(() => parseFilter("labels.containerd.io/gc.root")).toThrow(/found "\/"/);
    expect(matchFilters(["labels.a.b==c"], image("x", { "a.b": "c" }))).toBe(true);
    expect(matchFilters(["target.mediatype~=index"], busybox)).toBe(true);
    expect(matchFilters(["name!~=^docker"], busybox)).toBe(false);
    expect(matchFilters(["name!~=^quay"], busybox)).toBe(true);
  });

  it("throws invalid-argument for malformed string filters", () => {
    expect(() => matchFilters(["name=="], busybox)).toThrow(/invalid filter/);
  });
});
