/**
 * `berth`, a ctr-style command line. The binary is `bin/berth.js`; {@link main} runs it in-process.
 *
 * @packageDocumentation
 */

export { buildProgram, main } from "./main.js";
