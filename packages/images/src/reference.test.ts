import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import { familiarName, familiarString, isTag, parseReference } from "./reference.js";

const dgst = `sha256:${"a".repeat(64)}`;

describe("parseReference", () => {
  it.each([
    ["busybox", "docker.io/library/busybox:latest"],
    ["busybox:1.36", "docker.io/library/busybox:1.36"],
    ["foo/bar", "docker.io/foo/bar:latest"],
    ["index.docker.io/foo", "docker.io/library/foo:latest"],
    ["docker.io/library/busybox:latest", "docker.io/library/busybox:latest"],
    ["localhost/x", "localhost/x:latest"],
    ["localhost:5000/x", "localhost:5000/x:latest"],
    ["127.0.0.1:5000/x:tag", "127.0.0.1:5000/x:tag"],
    ["[::1]:5000/x", "[::1]:5000/x:latest"],
    ["ghcr.io/a/b/c:v1.2_3-rc", "ghcr.io/a/b/c:v1.2_3-rc"],
    [`x@${dgst}`, `docker.io/library/x@${dgst}`],
    [`x:tag@${dgst}`, `docker.io/library/x:tag@${dgst}`],
    ["a__b/c-d/e.f--g:t", "docker.io/a__b/c-d/e.f--g:t"],
    ["Registry.Example.COM/app", "Registry.Example.COM/app:latest"],
  ])("%s → %s", (input, want) => {
    expect(parseReference(input).toString()).toBe(want);
  });

  it("exposes the parts", () => {
    const r = parseReference(`127.0.0.1:5000/team/app:v1@${dgst}`);
    expect(r).toMatchObject({ domain: "127.0.0.1:5000", path: "team/app", tag: "v1", digest: dgst });
    expect(r.name).toBe("127.0.0.1:5000/team/app");
    expect(parseReference(`x@${dgst}`).tag).toBeUndefined();
    expect(JSON.stringify({ r: parseReference("x") })).toBe('{"r":"docker.io/library/x:latest"}');
  });

  it.each([
    ["", "empty reference"],
    ["Foo//bar", "repository name must be lowercase"],
    ["Busybox", "repository name must be lowercase"],
    ["example.com/Foo", "repository name must be lowercase"],
    ["a//b", "empty path component"],
    ["a/", "empty path component"],
    ["x:", "invalid tag"],
    [`x:${"t".repeat(129)}`, "invalid tag"],
    ["x:-t", "invalid tag"],
    ["x@sha256:abc", "invalid digest"],
    [`x@md5:${"a".repeat(32)}`, "invalid digest"],
    ["a.-b/c", "invalid registry host"],
    ["example.com:port/x", "invalid registry host"],
    ["a/b_-c", "invalid repository path component"],
    ["a/.b", "invalid repository path component"],
    ["a".repeat(64).replace(/a/g, "f"), "image ID"],
    [`example.com/${"a".repeat(250)}`, "longer than 255"],
  ])("rejects %j (%s)", (input, reason) => {
    let caught: unknown;
    try {
      parseReference(input);
    } catch (err) {
      caught = err;
    }
    expect(isInvalidArgument(caught)).toBe(true);
    expect((caught as Error).message).toContain(`invalid reference ${JSON.stringify(input)}`);
    expect((caught as Error).message).toContain(reason);
  });
});

describe("familiar names", () => {
  it("shortens Docker Hub names only", () => {
    expect(familiarName(parseReference("busybox"))).toBe("busybox");
    expect(familiarName(parseReference("foo/bar:1"))).toBe("foo/bar");
    expect(familiarName(parseReference("docker.io/library/a/b"))).toBe("library/a/b");
    expect(familiarName(parseReference("localhost:5000/x"))).toBe("localhost:5000/x");
    expect(familiarString(parseReference(`busybox:1@${dgst}`))).toBe(`busybox:1@${dgst}`);
  });

  it("tells tags from references", () => {
    expect(isTag("latest")).toBe(true);
    expect(isTag("v1.0-rc_1")).toBe(true);
    expect(isTag("busybox:latest")).toBe(false);
    expect(isTag("a/b")).toBe(false);
  });
});
