import { invalidArgument } from "@berth/errdefs";
import { tryParseIp } from "../ipam/ip.js";
import { type PortMapping, PortProtocol } from "../nat/nat.js";

function port(text: string, what: string, spec: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw invalidArgument(
      `published port ${JSON.stringify(spec)}: ${what} ${JSON.stringify(text)} is not 1-65535`,
    );
  }
  return Number(text);
}

/**
 * Parses a published port the way `docker run -p` / `nerdctl run -p` write it:
 * `HOSTPORT:CONTAINERPORT`, `HOSTIP:HOSTPORT:CONTAINERPORT` or `[IPV6]:HOSTPORT:CONTAINERPORT`,
 * each optionally followed by `/tcp` (the default) or `/udp`. Throws `invalid-argument` naming the
 * text for anything else (a missing host port, a port range, a bad address or protocol).
 */
export function parsePortMapping(spec: string): PortMapping {
  let rest = spec;
  let protocol: PortMapping["protocol"] = PortProtocol.TCP;
  const slash = rest.lastIndexOf("/");
  if (slash >= 0) {
    const proto = rest.slice(slash + 1);
    if (proto !== PortProtocol.TCP && proto !== PortProtocol.UDP) {
      throw invalidArgument(
        `published port ${JSON.stringify(spec)}: protocol ${JSON.stringify(proto)} is not tcp or udp`,
      );
    }
    protocol = proto;
    rest = rest.slice(0, slash);
  }
  let hostIP: string | undefined;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]:");
    if (close < 0)
      throw invalidArgument(`published port ${JSON.stringify(spec)}: unterminated [IPv6 address]`);
    hostIP = rest.slice(1, close);
    rest = rest.slice(close + 2);
  }
  const parts = rest.split(":");
  if (parts.length === 3 && hostIP === undefined) {
    hostIP = parts.shift();
  }
  if (parts.length !== 2) {
    throw invalidArgument(
      `published port ${JSON.stringify(spec)}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`,
    );
  }
  if (hostIP !== undefined && tryParseIp(hostIP) === undefined) {
    throw invalidArgument(
      `published port ${JSON.stringify(spec)}: host IP ${JSON.stringify(hostIP)} is not an IP address`,
    );
  }
  const [host = "", container = ""] = parts;
  return {
    protocol,
    hostPort: port(host, "host port", spec),
    containerPort: port(container, "container port", spec),
    ...(hostIP === undefined ? {} : { hostIP }),
  };
}

/** The text form of a mapping, as {@link parsePortMapping} reads it (`127.0.0.1:8080:80/tcp`). */
export function formatPortMapping(p: PortMapping): string {
  const ip =
    p.hostIP === undefined ? "" : tryParseIp(p.hostIP)?.family === 6 ? `[${p.hostIP}]:` : `${p.hostIP}:`;
  return `${ip}${p.hostPort}:${p.containerPort}/${p.protocol}`;
}
