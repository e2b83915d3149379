import { unauthenticated } from "@berth/errdefs";
import type { Dispatcher } from "undici";
import { request } from "undici";

/** Registry credentials: a user name and password, or an identity (refresh) token. */
export type Credentials =
  | { readonly username: string; readonly password: string }
  | { readonly identityToken: string };

/**
 * Looks up credentials for a registry API host (`host[:port]`, e.g. `registry-1.docker.io` or
 * `127.0.0.1:5000`). Returns `undefined` for anonymous access.
 */
export type CredentialsFunction = (host: string) => Promise<Credentials | undefined>;

/** One parsed `WWW-Authenticate` challenge. @internal */
export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/**
 * Parses a `WWW-Authenticate` header value (RFC 7235) into its challenges, e.g.
 * `Bearer realm="https://auth/token",service="registry",scope="repository:a:pull"`. Unparseable
 * input yields the challenges parsed before it. @internal
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = () => {
    const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i));
    if (!m) return "";
    i += m[0].length;
    return m[0];
  };
  while (i < s.length) {
    skipWs();
    while (s[i] === ",") {
      i++;
      skipWs();
    }
    const scheme = token();
    if (scheme === "") break;
    const params: Record<string, string> = {};
    for (;;) {
      skipWs();
      const save = i;
      const key = token();
      skipWs();
      if (key === "" || s[i] !== "=") {
        // Not a parameter: the start of the next challenge (or the end).
        i = save;
        break;
      }
      i++;
      skipWs();
      let value = "";
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else {
        // Unquoted values should be tokens, but registries send URLs unquoted too: take
        // everything up to the next comma or space.
        value = /^[^,\s]*/.exec(s.slice(i))?.[0] ?? "";
        i += value.length;
      }
      params[key.toLowerCase()] = value;
      skipWs();
      if (s[i] === ",") i++;
    }
    out.push({ scheme: scheme.toLowerCase(), params });
  }
  return out;
}

interface CachedToken {
  readonly value: Promise<{ token: string; expiresAt: number }>;
}

/** Options of {@link Authorizer}. @internal */
export interface AuthorizerOptions {
  readonly credentials?: CredentialsFunction | undefined;
  readonly dispatcher?: Dispatcher | undefined;
  readonly userAgent: string;
}

/**
 * Per-resolver authentication state, like containerd's `dockerAuthorizer`: the last challenge of
 * each host, and bearer tokens cached per host and scope set until they expire.
 * @internal
 */
export class Authorizer {
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();

  constructor(private readonly options: AuthorizerOptions) {}

  /**
   * The `Authorization` header value for a request to `host` needing `scopes`, or undefined when
   * the host has not asked for authentication (yet). Throws `unauthenticated` when the token
   * endpoint fails or credentials are missing for basic auth.
   */
  async authorization(host: string, scopes: readonly string[]): Promise<string | undefined> {
    const challenge = this.challenges.get(host);
    if (challenge === undefined) return undefined;
    if (challenge.scheme === "basic") {
      const creds = await this.options.credentials?.(host);
      if (creds === undefined || !("username" in creds)) {
        throw unauthenticated(`registry ${host} requires basic authentication and no credentials were given`);
      }
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    }
    // Scopes are computed per request (repository and action); the challenge's own scope names
    // whatever the last refused request wanted, so it is not merged in.
    const all = [...new Set(scopes)].sort();
    const key = tokenKey(host, scopes);
    let cached = this.tokens.get(key);
    if (cached !== undefined) {
      const settled = await cached.value.catch(() => undefined);
      // Refresh a few seconds early so a token does not expire in flight.
      if (settled === undefined || settled.expiresAt - 5_000 <= Date.now()) {
        if (this.tokens.get(key) === cached) this.tokens.delete(key);
        cached = undefined;
      }
    }
    if (cached === undefined) {
      cached = { value: this.fetchToken(host, challenge, all) };
      this.tokens.set(key, cached);
      // A failed fetch must not stay cached; the caller sees the error through `value`.
      cached.value.catch(() => {
        if (this.tokens.get(key) === cached) this.tokens.delete(key);
      });
    }
    return `Bearer ${(await cached.value).token}`;
  }

  /**
   * Records a 401 response's challenge and forgets the token that was refused (`sent`: expired
   * early, revoked, or too narrow), so the next {@link authorization} fetches a fresh one.
   * Returns false when the response carried no usable challenge, so a retry cannot help.
   */
  async handleUnauthorized(
    host: string,
    scopes: readonly string[],
    header: string | undefined,
    sent: string | undefined,
  ): Promise<boolean> {
    const challenges = header === undefined ? [] : parseChallenges(header);
    const chosen =
      challenges.find((c) => c.scheme === "bearer") ?? challenges.find((c) => c.scheme === "basic");
    if (chosen === undefined) return false;
    this.challenges.set(host, chosen);
    const key = tokenKey(host, scopes);
    const cached = this.tokens.get(key);
    if (sent !== undefined && cached !== undefined) {
      // Drop the token only if it is the one that was refused: concurrent requests that failed
      // with it must not throw away a fresh token another of them already fetched.
      const current = await cached.value.catch(() => undefined);
      if (current === undefined || sent === `Bearer ${current.token}`) {
        if (this.tokens.get(key) === cached) this.tokens.delete(key);
      }
    }
    return true;
  }

  private async fetchToken(
    host: string,
    challenge: Challenge,
    scopes: readonly string[],
  ): Promise<{ token: string; expiresAt: number }> {
    const realm = challenge.params.realm;
    let url: URL;
    try {
      if (realm === undefined || realm === "") throw new Error("no realm");
      url = new URL(realm);
    } catch (err) {
      throw unauthenticated(
        `registry ${host} asked for a bearer token from realm ${JSON.stringify(realm ?? "")}, which is not an http(s) URL`,
        { cause: err },
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw unauthenticated(
        `registry ${host} asked for a bearer token from realm ${JSON.stringify(realm)}, which is not an http(s) URL`,
      );
    }
    const service = challenge.params.service;
    const creds = await this.options.credentials?.(host);
    const headers: Record<string, string> = {
      "user-agent": this.options.userAgent,
      accept: "application/json",
    };
    let method: "GET" | "POST" = "GET";
    let body: string | undefined;
    if (creds !== undefined && "identityToken" in creds) {
      // Identity tokens are OAuth2 refresh tokens (the Docker token spec's POST form).
      method = "POST";
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: creds.identityToken });
      form.set("client_id", "berth");
      if (service !== undefined) form.set("service", service);
      if (scopes.length > 0) form.set("scope", scopes.join(" "));
      body = form.toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    } else {
      if (service !== undefined) url.searchParams.set("service", service);
      for (const scope of scopes) url.searchParams.append("scope", scope);
      if (creds !== undefined) {
        headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
      }
    }
    const started = Date.now();
    let status: number;
    let text: string;
    try {
      const res = await request(url, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        ...(this.options.dispatcher === undefined ? {} : { dispatcher: this.options.dispatcher }),
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      throw unauthenticated(`fetching a token for ${host} from realm ${realm} failed: ${String(err)}`, {
        cause: err,
      });
    }
    if (status !== 200) {
      throw unauthenticated(
        `token realm ${realm} refused a token for ${host} (scope ${scopes.join(" ") || "none"}): HTTP ${status} ${text.slice(0, 200)}`,
      );
    }
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch (err) {
      throw unauthenticated(`token realm ${realm} answered with invalid JSON for ${host}`, { cause: err });
    }
    const token =
      typeof parsed.token === "string" && parsed.token !== ""
        ? parsed.token
        : typeof parsed.access_token === "string"
          ? parsed.access_token
          : "";
    if (token === "") throw unauthenticated(`token realm ${realm} answered without a token for ${host}`);
    // The token spec's default lifetime is 60 seconds when expires_in is missing.
    const expiresIn = typeof parsed.expires_in === "number" && parsed.expires_in > 0 ? parsed.expires_in : 60;
    return { token, expiresAt: started + expiresIn * 1000 };
  }
}

function tokenKey(host: string, scopes: readonly string[]): string {
  return `${host}\n${[...new Set(scopes)].sort().join(" ")}`;
}
