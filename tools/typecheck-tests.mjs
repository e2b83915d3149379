#!/usr/bin/env node
// Type-checks test files, which the build excludes: every packages/*/tsconfig.test.json and e2e/.
// Runs the checks in parallel (two at a time, for the 2-core CI machine) and fails if any fails.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const projects = readdirSync(join(root, "packages"))
  .map((name) => join("packages", name, "tsconfig.test.json"))
  .filter((path) => existsSync(join(root, path)));
projects.push(join("e2e", "tsconfig.json"));

const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
let failed = 0;
async function check(project) {
  const child = spawn(process.execPath, [tsc, "--noEmit", "-p", project], { cwd: root, stdio: "inherit" });
  const code = await new Promise((resolve) => child.on("close", resolve));
  if (code !== 0) {
    failed++;
    console.error(`typecheck failed: ${project}`);
  }
}
const queue = [...projects];
await Promise.all(
  [0, 1].map(async () => {
    for (let p = queue.shift(); p !== undefined; p = queue.shift()) await check(p);
  }),
);
if (failed > 0) process.exit(1);
console.log(`test type-check: ${projects.length} projects clean`);
