import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";

/**
 * The parts of the real host's network that tests must leave as they found them: links (name,
 * flags, mtu), IPv4 and IPv6 routes, the whole nftables ruleset, and IPv4/IPv6 forwarding.
 * Compare a snapshot taken before a suite with one taken after. Needs `ip` and `nft`; throws their
 * errors.
 */
export function hostNetworkSnapshot(): Record<string, unknown> {
  const json = (cmd: string, args: string[]) =>
    JSON.parse(execFileSync(cmd, args, { encoding: "utf8" }) || "null") as unknown;
  return {
    links: (json("ip", ["-j", "link"]) as Array<Record<string, unknown>>).map((l) => [
      l.ifname,
      l.flags,
      l.mtu,
    ]),
    routes: json("ip", ["-j", "route"]),
    routes6: json("ip", ["-j", "-6", "route"]),
    ruleset: json("nft", ["-j", "list", "ruleset"]),
    forwarding: readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8"),
    forwarding6: existsSync("/proc/sys/net/ipv6")
      ? readFileSync("/proc/sys/net/ipv6/conf/all/forwarding", "utf8")
      : "no IPv6",
  };
}

// Replies "hello <peer address>" to every connection, on every address of the namespace.
const SERVER = `require("node:net").createServer((s) => s.end("hello " + s.remoteAddress + "\\n"))
  .listen(+process.argv[1], process.argv[2] || "0.0.0.0", () => console.log("ready"));`;

const CLIENT = `setTimeout(() => { console.error("timeout"); process.exit(2); }, +process.argv[3] || 2000);
let out = "";
require("node:net").connect(+process.argv[2], process.argv[1])
  .on("data", (d) => { out += d; })
  .on("end", () => { process.stdout.write(out); process.exit(0); })
  .on("error", (e) => { console.error(e.code); process.exit(1); });`;

/** A TCP server started by {@link serveTcp}. */
export interface TcpServer {
  readonly child: ChildProcess;
  /** Kills the server (by its pid) and waits for it to end. */
  stop(): Promise<void>;
}

/**
 * Starts a TCP server inside network namespace `netns` (a namespace file) through `nsenter`,
 * listening on `port` on every IPv4 address (or on `address`, `::` for both families), that answers each connection with
 * `hello <peer address>\n` and closes it. Resolves once it listens; rejects if it exits first.
 */
export async function serveTcp(netns: string, port: number, address?: string): Promise<TcpServer> {
  const child = spawn(
    "nsenter",
    [
      `--net=${netns}`,
      process.execPath,
      "-e",
      SERVER,
      String(port),
      ...(address === undefined ? [] : [address]),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGKILL");
    await gone;
  };
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) =>
      reject(new Error(`server in ${netns} on port ${port} exited with ${code}: ${stderr}`)),
    );
  });
  return { child, stop };
}

/**
 * Connects from network namespace `netns` to `address:port` over TCP and returns what the server
 * sent before closing. Throws (with the error code, or "timeout" after `timeoutMs`, default 2000)
 * when the connection fails.
 */
export function tcpFetch(netns: string, address: string, port: number, timeoutMs = 2000): string {
  return execFileSync(
    "nsenter",
    [`--net=${netns}`, process.execPath, "-e", CLIENT, address, String(port), String(timeoutMs)],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
}
