import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { run } from "./exec.js";
import { FIXTURE_NAMES } from "./fixtures.js";
import { sharedRegistry } from "./shared.js";

describe("sharedRegistry", () => {
  test("serves every fixture pushed by the global setup, digests unchanged", async () => {
    const shared = sharedRegistry();
    expect(shared.host).toMatch(/^127\.0\.0\.1:\d+$/);
    const res = await fetch(`${shared.url}/v2/`);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    for (const name of FIXTURE_NAMES) {
      const fixture = shared.fixtures[name];
      expect(shared.refs[name]).toBe(
        `${shared.host}/fixtures/${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}:latest`,
      );
      const { stdout } = await run("skopeo", [
        "inspect",
        "--raw",
        "--tls-verify=false",
        `docker://${shared.refs[name]}`,
      ]);
      const digest = `sha256:${createHash("sha256").update(stdout).digest("hex")}`;
      expect(digest, name).toBe(fixture.indexDigest ?? fixture.manifestDigest);
    }
  });
});
