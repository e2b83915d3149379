#!/usr/bin/env node
// Enforces the layering of ARCHITECTURE.md from the nx project tags ("layer:<name>" in each
// package.json's "nx.tags"): a package may import only packages of its own layer or of a lower one,
// only through their package name (no deep "@berth/x/src/..." paths), only packages it declares
// as dependencies, and the resulting graph must be acyclic. Exits 1 listing every violation.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const LAYERS = [
  "base",
  "storage",
  "images",
  "snapshots",
  "runtime",
  "services",
  "daemon",
  "clients",
  "tools",
];
const root = new URL("..", import.meta.url).pathname;
const packagesDir = join(root, "packages");

const packages = new Map();
for (const dir of readdirSync(packagesDir)) {
  const manifest = join(packagesDir, dir, "package.json");
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(manifest, "utf8"));
  } catch {
    continue;
  }
  const layerTag = (pkg.nx?.tags ?? []).find((t) => t.startsWith("layer:"));
  packages.set(pkg.name, { dir: join(packagesDir, dir), pkg, layer: layerTag?.slice("layer:".length) });
}

const problems = [];
const edges = new Map();

function* sourceFiles(dir) {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) yield* sourceFiles(path);
    else if (/\.(ts|mts|js|mjs)$/.test(entry)) yield path;
  }
}

const importRe = /(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

for (const [name, info] of packages) {
  const rank = LAYERS.indexOf(info.layer);
  if (rank < 0) problems.push(`${name}: missing or unknown layer tag (one of ${LAYERS.join(", ")})`);
  const declared = new Set([
    ...Object.keys(info.pkg.dependencies ?? {}),
    ...Object.keys(info.pkg.devDependencies ?? {}),
    ...Object.keys(info.pkg.peerDependencies ?? {}),
  ]);
  edges.set(name, new Set());
  let srcDir;
  try {
    srcDir = join(info.dir, "src");
    statSync(srcDir);
  } catch {
    continue;
  }
  for (const file of sourceFiles(srcDir)) {
    const text = readFileSync(file, "utf8");
    const isTest = /\.test\.ts$/.test(file) || file.includes(`${join("src", "testsuite")}`);
    for (const m of text.matchAll(importRe)) {
      const spec = m[1] ?? m[2];
      const where = relative(root, file);
      if (spec === "." || spec.endsWith("/index.js") || spec === "./index.js") {
        if (!isTest && spec.startsWith(".")) problems.push(`${where}: imports its own barrel (${spec})`);
      }
      if (!spec.startsWith("@berth/")) continue;
      const [scope, base, ...rest] = spec.split("/");
      const target = `${scope}/${base}`;
      const sub = rest.join("/");
      if (sub.startsWith("src") || sub.startsWith("dist") || sub.startsWith("internal")) {
        problems.push(`${where}: deep import ${spec}; import the package by name`);
      }
      const dep = packages.get(target);
      if (!dep) {
        problems.push(`${where}: imports unknown package ${target}`);
        continue;
      }
      if (target === name) {
        problems.push(`${where}: imports its own package by name (${spec})`);
        continue;
      }
      if (!declared.has(target)) problems.push(`${where}: imports ${target}, which ${name} does not declare`);
      if (LAYERS.indexOf(dep.layer) > rank) {
        problems.push(
          `${where}: ${name} (layer ${info.layer}) imports ${target} (higher layer ${dep.layer})`,
        );
      }
      edges.get(name).add(target);
    }
  }
}

// Cycle check over the package graph (depth-first, three colours).
const colour = new Map();
function visit(node, stack) {
  colour.set(node, "grey");
  for (const next of edges.get(node) ?? []) {
    if (colour.get(next) === "grey") problems.push(`import cycle: ${[...stack, node, next].join(" -> ")}`);
    else if (!colour.has(next)) visit(next, [...stack, node]);
  }
  colour.set(node, "black");
}
for (const node of edges.keys()) if (!colour.has(node)) visit(node, []);

if (problems.length > 0) {
  console.error(`module boundaries: ${problems.length} problem(s)`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`module boundaries: ${packages.size} packages, layering and declared dependencies hold`);
