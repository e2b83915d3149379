import type { Client } from "@berth/client";
import { Labels } from "@berth/content";
import type { Info, Snapshotter } from "@berth/snapshots";
import { mountAll } from "@berth/sys";
import type { Command } from "commander";
import { formatBytes, formatTable } from "./format.js";

/**
 * Adds `berth snapshots ...` (ctr's `snapshots` commands) to `program`: ls, tree, info, prepare,
 * view, mounts, commit, rm, usage, label. `--snapshotter` picks the snapshotter (default overlayfs).
 */
export function addSnapshotCommands(
  program: Command,
  open: () => Promise<Client>,
  out: (s: string) => void,
): void {
  const snapshots = program
    .command("snapshots")
    .alias("snapshot")
    .description("manage snapshots")
    .option("--snapshotter <name>", "snapshotter to use", "overlayfs");
  const use = async (): Promise<Snapshotter> => {
    const c = await open();
    return c.snapshotter(snapshots.opts<{ snapshotter: string }>().snapshotter);
  };
  const all = async (s: Snapshotter, filters?: readonly string[]): Promise<Info[]> => {
    const infos: Info[] = [];
    await s.walk((info) => {
      infos.push(info);
    }, filters);
    return infos.sort((a, b) => a.name.localeCompare(b.name));
  };

  snapshots
    .command("ls")
    .alias("list")
    .description("list snapshots")
    .argument("[filters...]")
    .action(async (filters: string[]) => {
      const infos = await all(await use(), filters);
      out(
        formatTable(
          ["KEY", "PARENT", "KIND"],
          infos.map((i) => [i.name, i.parent ?? "", i.kind]),
        ),
      );
    });

  snapshots
    .command("tree")
    .description("show snapshots as a tree of parents and children")
    .action(async () => {
      const infos = await all(await use());
      const children = new Map<string | undefined, Info[]>();
      for (const info of infos) {
        const list = children.get(info.parent) ?? [];
        list.push(info);
        children.set(info.parent, list);
      }
      const lines: string[] = [];
      const print = (parent: string | undefined, depth: number) => {
        for (const child of children.get(parent) ?? []) {
          lines.push(`${"  ".repeat(depth)}\\_ ${child.name}`);
          print(child.name, depth + 1);
        }
      };
      print(undefined, 0);
      out(lines.join("\n"));
    });

  snapshots
    .command("info")
    .description("print a snapshot's info as JSON")
    .argument("<key>")
    .action(async (key: string) => {
      out(JSON.stringify(await (await use()).stat(key), null, 2));
    });

  const printMounts = (target: string, mounts: Awaited<ReturnType<Snapshotter["mounts"]>>) => {
    for (const m of mounts) {
      const options = m.options.length > 0 ? ` -o ${m.options.join(",")}` : "";
      out(`mount -t ${m.type} ${m.source} ${target}${options}`);
    }
  };

  for (const kind of ["prepare", "view"] as const) {
    snapshots
      .command(kind)
      .description(kind === "prepare" ? "create an active snapshot" : "create a read-only view")
      .argument("<key>")
      .argument("[parent]")
      .option("--target <dir>", "mount the snapshot at this directory")
      .option("--label <key=value...>", "labels to set")
      .action(
        async (key: string, parent: string | undefined, opts: { target?: string; label?: string[] }) => {
          const s = await use();
          // Like ctr, snapshots made by hand are garbage-collection roots until removed.
          const labels = {
            [Labels.GcRoot]: new Date().toISOString(),
            ...Object.fromEntries(
              (opts.label ?? []).map((l) => [l.split("=")[0], l.slice(l.indexOf("=") + 1)]),
            ),
          };
          const mounts = await s[kind](key, parent, { labels });
          if (opts.target !== undefined) mountAll(mounts, opts.target);
          else printMounts("<target>", mounts);
        },
      );
  }

  snapshots
    .command("mounts")
    .description("print the mount commands for a snapshot")
    .argument("<target>")
    .argument("<key>")
    .action(async (target: string, key: string) => {
      printMounts(target, await (await use()).mounts(key));
    });

  snapshots
    .command("commit")
    .description("commit an active snapshot under a name")
    .argument("<name>")
    .argument("<key>")
    .action(async (name: string, key: string) => {
      await (await use()).commit(name, key);
      out(name);
    });

  snapshots
    .command("rm")
    .alias("remove")
    .alias("delete")
    .description("remove snapshots")
    .argument("<key...>")
    .action(async (keys: string[]) => {
      const s = await use();
      for (const key of keys) {
        await s.remove(key);
        out(key);
      }
    });

  snapshots
    .command("usage")
    .description("disk usage of snapshots")
    .argument("[key...]")
    .action(async (keys: string[]) => {
      const s = await use();
      const names = keys.length > 0 ? keys : (await all(s)).map((i) => i.name);
      const rows: string[][] = [];
      for (const name of names) {
        const usage = await s.usage(name);
        rows.push([name, formatBytes(usage.size), String(usage.inodes)]);
      }
      out(formatTable(["KEY", "SIZE", "INODES"], rows));
    });

  snapshots
    .command("label")
    .description("set or clear (empty value) labels of a snapshot")
    .argument("<key>")
    .argument("<label=value...>")
    .action(async (key: string, pairs: string[]) => {
      const s = await use();
      const labels: Record<string, string> = {};
      for (const pair of pairs) {
        const i = pair.indexOf("=");
        labels[i < 0 ? pair : pair.slice(0, i)] = i < 0 ? "" : pair.slice(i + 1);
      }
      const info = await s.update(
        { name: key, labels },
        Object.keys(labels).map((k) => `labels.${k}`),
      );
      out(JSON.stringify(info.labels));
    });
}
