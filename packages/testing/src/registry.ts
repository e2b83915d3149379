import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, tail } from "./exec.js";
import { startTokenServer, type TokenServer } from "./token-server.js";

/** How a test registry authenticates clients. */
export type RegistryAuth = "none" | "basic" | "token";

/** Options for {@link startRegistry}. */
export interface RegistryOptions {
  /** Default `"none"`: anyone may pull, push and delete. */
  readonly auth?: RegistryAuth;
  /**
   * The filesystem storage root. Default: a fresh temp directory removed by `stop()`. A directory
   * given here belongs to the caller and is left in place.
   */
  readonly storageDir?: string;
}

/** The token server of a `"token"` registry. */
export interface TokenServerHandle {
  /** The token endpoint (the registry's `realm`), `http://127.0.0.1:PORT/token`. */
  readonly url: string;
  /** How many requests reached the token endpoint so far, accepted or rejected. */
  requests(): number;
}

/** A running loopback registry; see {@link startRegistry}. */
export interface RegistryHandle {
  /** `127.0.0.1:PORT`, the registry part of image references. */
  readonly host: string;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** The accepted user name, for `"basic"` and `"token"` registries. */
  readonly username?: string;
  /** The accepted password, for `"basic"` and `"token"` registries. */
  readonly password?: string;
  /** The token server, for `"token"` registries. */
  readonly tokenServer?: TokenServerHandle;
  /** The registry process id. */
  readonly pid: number;
  /** The storage root in use. */
  readonly storageDir: string;
  /**
   * Stops the registry process (only that pid: SIGTERM, SIGKILL after 5 s), closes the token
   * server and removes the temp directories this handle created. Idempotent; never rejects.
   */
  stop(): Promise<void>;
}

const REGISTRY_BIN = "/usr/bin/docker-registry";
/** The `service` and `iss` a token registry and its token server agree on. */
const TOKEN_SERVICE = "berth-test-registry";
const TOKEN_ISSUER = "berth-test-token-issuer";
const READY_TIMEOUT_MS = 20_000;

// Registries still running when this process exits (a crashed test file, a forgotten stop()) are
// killed then so they do not outlive the test run. Only pids this module spawned are listed; the
// exit hook is installed on first use, so importing this module has no side effect.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const running of live) running.kill("SIGKILL");
    });
  }
  live.add(child);
}

/**
 * Starts Debian's docker distribution registry (`/usr/bin/docker-registry serve <config>`) on a
 * free 127.0.0.1 port with filesystem storage and deletes enabled, and resolves once `GET /v2/`
 * answers. `auth: "basic"` protects it with an htpasswd (bcrypt) file made by `htpasswd -B`;
 * `auth: "token"` configures distribution's token auth and starts a token server in this process
 * (see the README). The caller must `stop()` the handle, also on failure (`afterAll`).
 *
 * Rejects with an `Error` naming the step that failed when a tool is missing
 * (`docker-registry`, `htpasswd`, `openssl`), the process exits early (its stderr is quoted) or
 * does not answer within 20 s; whatever was started is cleaned up first.
 */
export async function startRegistry(options: RegistryOptions = {}): Promise<RegistryHandle> {
  const auth = options.auth ?? "none";
  const workDir = await mkdtemp(join(tmpdir(), "berth-registry-"));
  let tokenServer: TokenServer | undefined;
  try {
    const storageDir = options.storageDir ?? join(workDir, "storage");
    await mkdir(storageDir, { recursive: true });
    const credentials =
      auth === "none" ? undefined : { username: "berth", password: randomBytes(12).toString("hex") };

    let authConfig = "";
    if (auth === "basic" && credentials !== undefined) {
      const htpasswd = join(workDir, "htpasswd");
      // -B: bcrypt, the only hash distribution's htpasswd backend accepts; -i: password on stdin.
      const { stdout } = await run("htpasswd", ["-niB", credentials.username], {
        input: credentials.password,
      });
      await writeFile(htpasswd, stdout);
      authConfig = ["auth:", "  htpasswd:", "    realm: berth-test", `    path: ${htpasswd}`].join("\n");
    } else if (auth === "token" && credentials !== undefined) {
      tokenServer = await startTokenServer({
        dir: workDir,
        service: TOKEN_SERVICE,
        issuer: TOKEN_ISSUER,
        ...credentials,
      });
      authConfig = [
        "auth:",
        "  token:",
        `    realm: ${tokenServer.realm}`,
        `    service: ${TOKEN_SERVICE}`,
        `    issuer: ${TOKEN_ISSUER}`,
        `    rootcertbundle: ${tokenServer.certPath}`,
      ].join("\n");
    }

    // The free port is found by binding port 0 and closing it, so another process may take it
    // before the registry binds: an early exit with "address already in use" is retried.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const configPath = join(workDir, "config.yml");
      await writeFile(configPath, registryConfig(port, storageDir, authConfig));
      try {
        const child = await spawnRegistry(configPath, port);
        const token = tokenServer;
        let stopped: Promise<void> | undefined;
        return {
          host: `127.0.0.1:${port}`,
          url: `http://127.0.0.1:${port}`,
          ...credentials,
          ...(token === undefined
            ? {}
            : { tokenServer: { url: token.realm, requests: () => token.requests() } }),
          pid: child.pid ?? -1,
          storageDir,
          stop: () => {
            stopped ??= (async () => {
              await terminate(child);
              await token?.close();
              await rm(workDir, { recursive: true, force: true });
            })();
            return stopped;
          },
        };
      } catch (err) {
        if (attempt < 3 && err instanceof Error && /address already in use/.test(err.message)) continue;
        throw err;
      }
    }
  } catch (err) {
    await tokenServer?.close();
    await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}

function registryConfig(port: number, storageDir: string, authConfig: string): string {
  return `${[
    "version: 0.1",
    "log:",
    "  level: warn",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${storageDir}`,
    "  delete:",
    "    enabled: true",
    // The upload purger would otherwise start a background walk of the storage root.
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    // A fixed secret silences the "No HTTP secret provided" warning; it only signs upload state.
    "  secret: berth-test-registry-secret",
    authConfig,
  ].join("\n")}\n`;
}

async function spawnRegistry(configPath: string, port: number): Promise<ChildProcess> {
  const child = spawn(REGISTRY_BIN, ["serve", configPath], { stdio: ["ignore", "ignore", "pipe"] });
  track(child);
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    // Keep the tail only: a registry that lives for a whole test run may log a lot.
    stderr = (stderr + chunk).slice(-16_384);
  });
  const exited = new Promise<string>((resolve) => {
    child.once("error", (err) => resolve(err.message));
    child.once("exit", (code, signal) =>
      resolve(signal === null ? `exit status ${code}` : `signal ${signal}`),
    );
  });
  exited.then(() => live.delete(child));

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const outcome = await Promise.race([
      exited.then((status) => ({ status })),
      probe(port).then((ok) => ({ ok })),
    ]);
    if ("status" in outcome) {
      throw new Error(
        `${REGISTRY_BIN} serve ${configPath} on port ${port}: ${outcome.status}: ${tail(stderr)}`,
      );
    }
    if (outcome.ok) return child;
    if (Date.now() > deadline) {
      await terminate(child);
      throw new Error(
        `${REGISTRY_BIN} on port ${port}: GET /v2/ did not answer within ${READY_TIMEOUT_MS} ms`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** True once the registry answers `GET /v2/` at all (200, or 401 when auth is on). */
async function probe(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/v2/`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status === 200 || res.status === 401;
  } catch {
    return false;
  }
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
