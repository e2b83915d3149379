// Module hooks that let a plain `node` child process run berth's TypeScript sources without a
// build step, for the cross-process cases of the content suite: `.ts` files are transpiled (types
// erased, nothing type-checked) with the workspace's `typescript`, and the `./x.js` specifiers the
// sources use resolve to `./x.ts` when no `.js` file exists. Registered by ts-register.mjs.

import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

let ts;

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const fromTs = context.parentURL?.startsWith("file:") && context.parentURL.endsWith(".ts");
    if (
      err?.code === "ERR_MODULE_NOT_FOUND" &&
      fromTs &&
      specifier.startsWith(".") &&
      specifier.endsWith(".js")
    ) {
      return nextResolve(`${specifier.slice(0, -3)}.ts`, context);
    }
    throw err;
  }
}

// Transpiled output is cached on disk, keyed by the source's hash, because loading and warming
// up the TypeScript compiler costs seconds per child process, and tests start several children.
const cacheDir = join(tmpdir(), `berth-ts-hooks-${process.getuid?.() ?? "user"}`);

export async function load(url, context, nextLoad) {
  if (!url.startsWith("file:") || !url.endsWith(".ts")) return nextLoad(url, context);
  const source = await readFile(new URL(url), "utf8");
  const key = createHash("sha256").update(`v1\0${url}\0${source}`).digest("hex");
  const cached = join(cacheDir, `${key}.js`);
  try {
    return { format: "module", source: await readFile(cached, "utf8"), shortCircuit: true };
  } catch {
    // Not cached yet: transpile below.
  }
  ts ??= (await import("typescript")).default;
  const out = ts.transpileModule(source, {
    fileName: fileURLToPath(url),
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      verbatimModuleSyntax: true,
      sourceMap: false,
      inlineSourceMap: true,
    },
  });
  try {
    await mkdir(cacheDir, { recursive: true, mode: 0o700 });
    const tmp = `${cached}.${process.pid}.tmp`;
    await writeFile(tmp, out.outputText, { mode: 0o600 });
    await rename(tmp, cached);
  } catch {
    // The cache is an optimisation only.
  }
  return { format: "module", source: out.outputText, shortCircuit: true };
}
