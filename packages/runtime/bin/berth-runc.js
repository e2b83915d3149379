#!/usr/bin/env node
// Entry point of the `berth-runc` command. It runs the compiled output; `npm run build` (part of
// the README's set-up) produces it.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("berth-runc: not built yet; run `npm run build` in the repository root first\n");
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv);
