import { createPrivateKey, type KeyObject, randomUUID, sign, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { run } from "./exec.js";

/** One `access` entry of a registry bearer token (distribution's token spec, "Requesting a Token"). */
interface ResourceActions {
  readonly type: string;
  readonly name: string;
  readonly actions: string[];
}

/** A running token server for a token-auth registry. @internal */
export interface TokenServer {
  /** The realm the registry sends clients to, `http://127.0.0.1:PORT/token`. */
  readonly realm: string;
  /** PEM file of the self-signed certificate the registry trusts (its `rootcertbundle`). */
  readonly certPath: string;
  /** How many requests reached the token endpoint, accepted or not. */
  requests(): number;
  /** Closes the listener and every open connection. */
  close(): Promise<void>;
}

/** What the token server checks and puts into the tokens it issues. @internal */
export interface TokenServerOptions {
  /** Directory the key and certificate are written to; the caller removes it. */
  readonly dir: string;
  readonly service: string;
  readonly issuer: string;
  readonly username: string;
  readonly password: string;
}

/** Lifetime of the issued tokens. The registry allows 60 s of clock skew on top. */
const TOKEN_TTL_SECONDS = 300;

/**
 * Starts a Docker-token-auth server on 127.0.0.1 (an ephemeral port) that issues RS256 JWTs to
 * clients presenting the given basic credentials, granting exactly the scopes they request.
 *
 * The signing key's self-signed certificate, made with the `openssl` CLI, is written to
 * `certPath` for the registry's `rootcertbundle`; every token carries it in the JWT `x5c` header,
 * which is how docker distribution finds and verifies the signing key (it checks the chain
 * against the bundle, then the signature with the leaf's key). Serves both the GET flow
 * (`?service=&scope=` with basic auth) and the OAuth2 password grant (POST form). Rejects with an
 * `Error` when `openssl` fails or the port cannot be bound.
 *
 * @internal
 */
export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const keyPath = join(options.dir, "token-key.pem");
  const certPath = join(options.dir, "token-cert.pem");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    keyPath,
    "-out",
    certPath,
    "-subj",
    `/CN=${options.issuer}`,
    "-days",
    "7",
  ]);
  const key = createPrivateKey(await readFile(keyPath));
  const certDer = new X509Certificate(await readFile(certPath)).raw.toString("base64");

  let requests = 0;
  const issue = (subject: string, scopes: readonly string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer] };
    const claims = {
      iss: options.issuer,
      sub: subject,
      aud: options.service,
      exp: now + TOKEN_TTL_SECONDS,
      nbf: now,
      iat: now,
      jti: randomUUID(),
      access: scopes.flatMap(parseScope),
    };
    return signJwt(header, claims, key);
  };

  const server = createServer((req, res) => {
    requests++;
    handle(req, res).catch((err: unknown) => {
      reply(res, 500, { errors: [{ code: "UNKNOWN", message: String(err) }] });
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (url.pathname !== "/token") {
      reply(res, 404, { errors: [{ code: "NOT_FOUND", message: `no such endpoint ${url.pathname}` }] });
      return;
    }
    let username: string | undefined;
    let password: string | undefined;
    let params = url.searchParams;
    if (req.method === "POST") {
      // OAuth2 password grant (distribution's docs/spec/auth/oauth.md): credentials in the form.
      params = new URLSearchParams(await readBody(req));
      if (params.get("grant_type") !== "password") {
        reply(res, 400, { error: "unsupported_grant_type" });
        return;
      }
      username = params.get("username") ?? undefined;
      password = params.get("password") ?? undefined;
    } else {
      [username, password] = basicCredentials(req.headers.authorization);
    }
    if (params.get("service") !== options.service) {
      reply(res, 400, { error: "invalid_request", detail: `unknown service ${params.get("service")}` });
      return;
    }
    if (username !== options.username || password !== options.password) {
      res.setHeader("WWW-Authenticate", 'Basic realm="berth test token server"');
      reply(res, 401, { errors: [{ code: "UNAUTHORIZED", message: "bad or missing credentials" }] });
      return;
    }
    // Several `scope` parameters may be given, each a space-separated list.
    const scopes = params.getAll("scope").flatMap((s) => s.split(" ").filter((x) => x !== ""));
    const token = issue(username, scopes);
    reply(res, 200, {
      token,
      access_token: token,
      expires_in: TOKEN_TTL_SECONDS,
      issued_at: new Date().toISOString(),
    });
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    certPath,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** `type:name:actions` → access entry; the name may itself contain colons (a registry port). */
function parseScope(scope: string): ResourceActions[] {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first < 0 || last === first) return [];
  return [
    {
      type: scope.slice(0, first),
      name: scope.slice(first + 1, last),
      actions: scope
        .slice(last + 1)
        .split(",")
        .filter((a) => a !== ""),
    },
  ];
}

function basicCredentials(header: string | undefined): [string | undefined, string | undefined] {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? "");
  if (match?.[1] === undefined) return [undefined, undefined];
  const decoded = Buffer.from(match[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? [decoded, undefined] : [decoded.slice(0, colon), decoded.slice(colon + 1)];
}

function signJwt(header: object, claims: object, key: KeyObject): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signingInput = `${encode(header)}.${encode(claims)}`;
  // RS256 = RSASSA-PKCS1-v1_5 with SHA-256, node's default padding for RSA keys.
  const signature = sign("sha256", Buffer.from(signingInput), key).toString("base64url");
  return `${signingInput}.${signature}`;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function reply(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}
