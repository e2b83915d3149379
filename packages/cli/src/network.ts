import { join } from "node:path";
import {
  type BridgeDriver,
  createNetworkManager,
  exportBridgeConflist,
  formatPortMapping,
  type NetworkManager,
  NetworkModeKind,
} from "@berth/network";
import type { Command } from "commander";
import { formatTable } from "./format.js";

/**
 * Adds `berth network create|ls|inspect|rm` to `program`, over the bridge driver whose state lives
 * in `<root>/network` (`root()` is read when a command runs, after option parsing).
 */
export function addNetworkCommands(program: Command, root: () => string, out: (s: string) => void): void {
  const manager = (): NetworkManager => createNetworkManager({ stateDir: join(root(), "network") });
  const driver = (): BridgeDriver => manager().bridge;
  const network = program.command("network").alias("networks").description("manage bridge networks");

  network
    .command("create")
    .description("create a bridge network (the bridge itself appears when a container first connects)")
    .argument("<name>")
    .option("--subnet <cidr>", "IPv4 subnet (default: the next free /24 from 10.4.0.0/24)")
    .option("--gateway <ip>", "gateway address on the bridge (default: the subnet's first address)")
    .option("--subnet6 <cidr>", "also an IPv6 subnet (dual-stack), e.g. fd00:b0::/64")
    .option("--gateway6 <ip>", "IPv6 gateway on the bridge (default: the IPv6 subnet's first address)")
    .action(
      async (
        name: string,
        opts: { subnet?: string; gateway?: string; subnet6?: string; gateway6?: string },
      ) => {
        const n = await driver().createNetwork({
          name,
          ...(opts.subnet === undefined ? {} : { subnet: opts.subnet }),
          ...(opts.gateway === undefined ? {} : { gateway: opts.gateway }),
          ...(opts.subnet6 === undefined ? {} : { subnet6: opts.subnet6 }),
          ...(opts.gateway6 === undefined ? {} : { gateway6: opts.gateway6 }),
        });
        out(n.name);
      },
    );

  network
    .command("ls")
    .alias("list")
    .description("list networks")
    .action(async () => {
      const all = await driver().listNetworks();
      out(
        formatTable(
          ["NAME", "BRIDGE", "SUBNET", "GATEWAY", "SUBNET6"],
          all.map((n) => [n.name, n.bridge, n.subnet, n.gateway, n.subnet6 ?? ""]),
        ),
      );
    });

  network
    .command("inspect")
    .description("print networks as JSON, with the containers connected to them")
    .argument("<names...>")
    .action(async (names: string[]) => {
      const m = manager();
      const attached = (await m.list()).filter((c) => c.mode.kind === NetworkModeKind.Bridge);
      const records = [];
      for (const name of names) {
        const record = await m.bridge.inspectNetwork(name);
        const containers = attached
          .filter((c) => c.mode.kind === NetworkModeKind.Bridge && c.mode.network === name)
          .map((c) => ({
            id: c.containerId,
            addresses: c.addresses,
            ...(c.mac === undefined ? {} : { mac: c.mac }),
            ports: c.ports.map(formatPortMapping),
          }));
        records.push({ ...record, containers });
      }
      out(JSON.stringify(records, null, 2));
    });

  network
    .command("conflist")
    .description(
      "print a network as an equivalent CNI 1.0.0 conflist (bridge, host-local, portmap, firewall)",
    )
    .argument("<name>")
    .option("--no-firewall", "leave out the firewall plugin")
    .option("--ipam-dir <dir>", "host-local's dataDir (default: its own, /var/lib/cni/networks)")
    .action(async (name: string, opts: { firewall: boolean; ipamDir?: string }) => {
      const n = await driver().inspectNetwork(name);
      const list = exportBridgeConflist(
        {
          name: n.name,
          bridge: n.bridge,
          ipv4: { subnet: n.subnet, gateway: n.gateway },
          ...(n.subnet6 === undefined
            ? {}
            : { ipv6: { subnet: n.subnet6, ...(n.gateway6 === undefined ? {} : { gateway: n.gateway6 }) } }),
        },
        { firewall: opts.firewall, ...(opts.ipamDir === undefined ? {} : { ipamDataDir: opts.ipamDir }) },
      );
      out(JSON.stringify(list, null, 2));
    });

  network
    .command("rm")
    .alias("remove")
    .description("remove networks (refused while containers are connected)")
    .argument("<names...>")
    .action(async (names: string[]) => {
      const d = driver();
      for (const name of names) {
        await d.removeNetwork(name);
        out(name);
      }
    });
}
