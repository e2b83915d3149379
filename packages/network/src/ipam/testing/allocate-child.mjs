// Child process of the IPAM concurrency test (ipam.test.ts): allocates `count` addresses at once
// in one network, for containers `<prefix>-0` … `<prefix>-<count-1>`, and prints them as JSON.
// Run with `node --conditions=@berth/source --import @berth/content/testsuite/ts-register.mjs`
// so that the TypeScript sources load without a build.
// Usage: allocate-child.mjs <root> <network> <subnet> <prefix> <count>
import { createIpam } from "../ipam.ts";

const [root, network, subnet, prefix, count] = process.argv.slice(2);
const ipam = createIpam(root);
const ids = Array.from({ length: Number(count) }, (_, i) => `${prefix}-${i}`);
const results = await Promise.all(
  ids.map((id) => ipam.allocate({ name: network, ranges: [{ subnet }] }, id)),
);
process.stdout.write(
  JSON.stringify(ids.map((id, i) => ({ containerId: id, address: results[i][0].address }))),
);
