#!/usr/bin/env node
// Runs the demo: a loopback registry holding a busybox image, then berth pulls and lists it.
// The registry is stopped (by its pid, through its handle) whatever happens.
import { spawnSync } from "node:child_process";
import { buildFixtureImages, pushFixtures, startRegistry } from "@berth/testing";

function berth(...args) {
  console.log(`\n$ npx berth ${args.join(" ")}`);
  const result = spawnSync("npx", ["--no-install", "berth", ...args], { stdio: "inherit" });
  if (result.status !== 0) throw new Error(`berth ${args[0]} ${args[1]} exited with ${result.status}`);
}

const fixtures = await buildFixtureImages();
const registry = await startRegistry();
try {
  const refs = await pushFixtures(registry, fixtures, ["single"]);
  console.log(`registry on ${registry.url} serves ${refs.single}`);
  berth("images", "pull", "--plain-http", refs.single);
  berth("images", "ls");
} finally {
  await registry.stop();
}
