// Module hooks for the crash test's child process: plain `node` cannot run berth's TypeScript
// sources, so `.ts` files are transpiled on load (types erased, nothing checked) with the
// workspace's `typescript`, and the `./x.js` specifiers in those sources fall back to `./x.ts`.
// Registered with `node --import <data: URL calling module.register(this file)>`.

let typescript;

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const parent = context.parentURL ?? "";
    if (err?.code !== "ERR_MODULE_NOT_FOUND" || !parent.endsWith(".ts") || !/^\.\.?\//.test(specifier))
      throw err;
    return nextResolve(specifier.replace(/\.js$/, ".ts"), context);
  }
}

export async function load(url, context, nextLoad) {
  if (!(url.startsWith("file:") && url.endsWith(".ts"))) return nextLoad(url, context);
  typescript ??= (await import("typescript")).default;
  const { readFile } = await import("node:fs/promises");
  const { outputText } = typescript.transpileModule(await readFile(new URL(url), "utf8"), {
    fileName: new URL(url).pathname,
    compilerOptions: {
      module: typescript.ModuleKind.ESNext,
      target: typescript.ScriptTarget.ES2022,
      verbatimModuleSyntax: true,
    },
  });
  return { format: "module", source: outputText, shortCircuit: true };
}
