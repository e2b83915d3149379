#!/usr/bin/env node
// Scaffolds packages/<name> with the workspace's package.json, tsconfig and index conventions.
// Usage: node tools/new-package.mjs <name> <layer> "<description>" [dep ...]
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [name, layer, description, ...deps] = process.argv.slice(2);
if (!name || !layer || !description) {
  console.error('usage: new-package.mjs <name> <layer> "<description>" [dep ...]');
  process.exit(2);
}
const dir = join("packages", name);
if (existsSync(dir)) {
  console.error(`${dir} exists`);
  process.exit(1);
}
mkdirSync(join(dir, "src"), { recursive: true });
const pkg = {
  name: `@berth/${name}`,
  version: "0.1.0",
  description,
  license: "Apache-2.0",
  type: "module",
  engines: { node: ">=20.11" },
  files: ["dist", "src", "!**/*.test.ts"],
  exports: {
    ".": { "@berth/source": "./src/index.ts", types: "./dist/index.d.ts", default: "./dist/index.js" },
    "./internal/*": null,
  },
  scripts: { build: "tsc -b" },
  dependencies: Object.fromEntries(deps.map((d) => [`@berth/${d}`, "0.1.0"])),
  nx: { tags: [`layer:${layer}`] },
};
writeFileSync(join(dir, "package.json"), `${JSON.stringify(pkg, null, 2)}\n`);
const tsconfig = {
  extends: "../../tsconfig.base.json",
  compilerOptions: { rootDir: "src", outDir: "dist", types: ["node"] },
  include: ["src/**/*.ts"],
  exclude: ["src/**/*.test.ts"],
  references: deps.map((d) => ({ path: `../${d}` })),
};
writeFileSync(join(dir, "tsconfig.json"), `${JSON.stringify(tsconfig, null, 2)}\n`);
writeFileSync(
  join(dir, "src", "index.ts"),
  `/**\n * ${description}\n *\n * @packageDocumentation\n */\n\nexport {};\n`,
);
writeFileSync(join(dir, "README.md"), `# @berth/${name}\n\n${description}\n`);
console.log(`created ${dir}`);
