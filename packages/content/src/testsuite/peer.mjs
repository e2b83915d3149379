// The other process of the content suite's cross-process cases. Usage:
//   node [--conditions=@berth/source --import ./ts-register.mjs] peer.mjs <module URL> <export> <root>
// It opens the store `<export>(<root>)` of `<module URL>` (returning a ContentStore, or
// `{ store }`), then answers one JSON request per stdin line with one JSON reply per stdout line.
// Writers stay open between requests, so the parent can observe a lock held by another process,
// and kill this process to observe what a crash leaves behind.
import { createInterface } from "node:readline";

const [moduleUrl, exportName, root] = process.argv.slice(2);
const reply = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const mod = await import(moduleUrl);
const made = await mod[exportName](root);
const store = typeof made?.writer === "function" ? made : made.store;
const writers = new Map();

function writerFor(ref) {
  const w = writers.get(ref);
  if (!w) throw Object.assign(new Error(`peer holds no writer for ${ref}`), { code: "failed-precondition" });
  return w;
}

reply({ ready: true, pid: process.pid });

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === "") continue;
  const req = JSON.parse(line);
  try {
    switch (req.op) {
      case "open": {
        const w = await store.writer({
          ref: req.ref,
          ...(req.total ? { total: req.total } : {}),
          ...(req.expected ? { expected: req.expected } : {}),
        });
        writers.set(req.ref, w);
        const s = await w.status();
        reply({ ok: true, offset: s.offset });
        break;
      }
      case "write": {
        const w = writerFor(req.ref);
        await w.write(Buffer.from(req.data, "base64"));
        reply({ ok: true, offset: (await w.status()).offset });
        break;
      }
      case "close": {
        await writerFor(req.ref).close();
        writers.delete(req.ref);
        reply({ ok: true });
        break;
      }
      case "commit": {
        const w = writerFor(req.ref);
        writers.delete(req.ref);
        reply({ ok: true, digest: await w.commit(req.size ?? 0, req.expected) });
        break;
      }
      case "info": {
        const info = await store.info(req.digest);
        reply({ ok: true, size: info.size, labels: info.labels });
        break;
      }
      default:
        throw new Error(`unknown op ${req.op}`);
    }
  } catch (err) {
    reply({ ok: false, code: err?.code ?? "unknown", message: String(err?.message ?? err) });
  }
}
