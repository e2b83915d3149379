#!/usr/bin/env node
// Runs the demo: a loopback registry holding a busybox image; berth pulls, lists and runs it.
// The registry is stopped (by its pid, through its handle) whatever happens.
import { spawnSync } from "node:child_process";
import { buildFixtureImages, pushFixtures, startRegistry } from "@berth/testing";

function berth(...args) {
  // Shown as a shell would need it typed: arguments with blanks or specials in single quotes.
  const quote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`);
  console.log(`\n$ npx berth ${args.map(quote).join(" ")}`);
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
  berth(
    "run",
    "--rm",
    refs.single,
    `demo-${process.pid}`,
    "sh",
    "-c",
    'echo "hello from container $(hostname), running as PID $$"; id; cat /proc/1/cgroup | head -3',
  );
} finally {
  await registry.stop();
}
