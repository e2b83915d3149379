import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { readMountInfo } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, describe, expect, it } from "vitest";
import { defaultSpec } from "../spec.js";
import { main } from "./main.js";
import { checkStateSchema } from "./state-schema.js";

// The command line over the real runtime, in-process (the e2e suite runs the built binary).
describe.runIf(requiresRoot("berth-runc over the real runtime (containers)"))(
  "berth-runc with the real runtime",
  () => {
    const dirs: string[] = [];
    const cgroupParents: string[] = [];
    let root = "";

    async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let out = "";
      let err = "";
      stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      const code = await main(["node", "berth-runc", "--root", root, ...args], { io: { stdout, stderr } });
      return { code, stdout: out, stderr: err };
    }

    afterEach(async () => {
      // Force-delete whatever a failed test left, then the cgroup parents, state root and bundles.
      if (existsSync(root)) {
        for (const id of (await cli("list", "-q")).stdout.split("\n").filter((l) => l !== "")) {
          await cli("delete", "-f", id);
        }
      }
      for (const parent of cgroupParents.splice(0)) {
        for (const m of readMountInfo().filter((e) => e.fstype === "cgroup" || e.fstype === "cgroup2")) {
          const dir = join(m.mountPoint, parent);
          if (m.mountPoint.startsWith("/sys/fs/cgroup") && existsSync(dir)) rmdirSync(dir);
        }
      }
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    });

    function bundle(id: string, args: string[]): string {
      const dir = mkdtempSync(join(tmpdir(), "berth-runc-real-"));
      dirs.push(dir);
      root = join(dir, "state");
      const rootfs = join(dir, "bundle", "rootfs");
      for (const d of ["bin", "proc", "sys", "dev", "tmp"]) mkdirSync(join(rootfs, d), { recursive: true });
      copyFileSync("/bin/busybox", join(rootfs, "bin", "busybox"));
      for (const a of ["sh", "sleep", "true"]) symlinkSync("busybox", join(rootfs, "bin", a));
      const parent = `/berth-runc-cli-test-${process.pid}-${id}`;
      cgroupParents.push(parent);
      const spec = defaultSpec();
      const config = {
        ...spec,
        process: { ...spec.process, terminal: false, args },
        linux: { ...spec.linux, cgroupsPath: `${parent}/${id}` },
      };
      writeFileSync(join(dir, "bundle", "config.json"), JSON.stringify(config));
      return join(dir, "bundle");
    }

    it("create, state (schema-valid), list, ps, kill, delete through the command line", async () => {
      const b = bundle("real1", ["sleep", "30"]);
      const pidFile = join(b, "..", "init.pid");
      expect(await cli("create", "-b", b, "--pid-file", pidFile, "real1")).toMatchObject({
        code: 0,
        stderr: "",
      });
      const state = JSON.parse((await cli("state", "real1")).stdout) as Record<string, unknown>;
      expect(checkStateSchema(state)).toEqual([]);
      expect(state).toMatchObject({ id: "real1", status: "created", bundle: b, rootfs: join(b, "rootfs") });
      expect(Number(readFileSync(pidFile, "utf8"))).toBe(state.pid);

      const listed = JSON.parse((await cli("list", "-f", "json")).stdout) as Record<string, unknown>[];
      expect(listed.map((d) => [d.id, d.status, d.owner])).toEqual([["real1", "created", "root"]]);
      expect(JSON.parse((await cli("ps", "-f", "json", "real1")).stdout)).toEqual([state.pid]);

      expect((await cli("start", "real1")).code).toBe(0);
      const running = JSON.parse((await cli("state", "real1")).stdout) as Record<string, unknown>;
      expect(running.status).toBe("running");
      expect(checkStateSchema(running)).toEqual([]);
      expect((await cli("delete", "real1")).code).toBe(1);

      expect((await cli("kill", "real1", "KILL")).code).toBe(0);
      let status = "";
      for (let i = 0; i < 100 && status !== "stopped"; i++) {
        status = String((JSON.parse((await cli("state", "real1")).stdout) as { status: string }).status);
        if (status !== "stopped") await new Promise((r) => setTimeout(r, 50));
      }
      expect(status).toBe("stopped");
      expect((await cli("delete", "real1")).code).toBe(0);
      expect((await cli("list", "-q")).stdout).toBe("");
      expect(await cli("state", "real1")).toMatchObject({ code: 1 });
    });
  },
);
