import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  BerthError,
  canceled,
  ErrorCode,
  invalidArgument,
  notFound,
  permissionDenied,
  unauthenticated,
  unavailable,
} from "@berth/errdefs";
import type { Dispatcher } from "undici";
import { request } from "undici";
import type { Authorizer } from "./auth.js";

/** The HTTP methods the registry API uses. @internal */
export type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

/** One request to a registry endpoint. @internal */
export interface RegistryRequest {
  readonly method: Method;
  readonly url: URL;
  readonly headers?: Readonly<Record<string, string>>;
  /** A body; a function is called once per attempt so that retries resend it whole. */
  readonly body?: Uint8Array | (() => Readable | Promise<Readable>);
  /** Token scopes the request needs (`repository:<repo>:pull`). */
  readonly scopes: readonly string[];
  readonly signal?: AbortSignal | undefined;
}

/** A response whose status the caller decides about. The body must be consumed or dumped. @internal */
export interface RegistryResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Dispatcher.ResponseData["body"];
  /** The URL that answered, after redirects. */
  readonly url: URL;
}

/** Options of {@link RegistryClient}. @internal */
export interface RegistryClientOptions {
  readonly authorizer: Authorizer;
  readonly dispatcher?: Dispatcher | undefined;
  readonly userAgent: string;
  readonly retries: number;
  readonly retryDelay: number;
}

const redirectStatuses = new Set([301, 302, 303, 307, 308]);
const maxRedirects = 10;
// Error codes of a connection that broke under a request; connection refused is not among them:
// the endpoint is down, and the next endpoint (a mirror's upstream) is a better bet than waiting.
const retryableNetworkCodes = new Set([
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
]);

/** Reads one header as a single string (the first value when repeated). @internal */
export function header(res: RegistryResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Sends registry requests with authentication (a 401 is answered once with fresh credentials),
 * retries with exponential backoff and jitter (5xx, 429, broken connections), and redirects
 * followed by hand so that `Authorization` never leaves the registry's origin.
 * @internal
 */
export class RegistryClient {
  constructor(private readonly options: RegistryClientOptions) {}

  /** Sends a request; throws only for transport failures that survived the retries. */
  async send(req: RegistryRequest): Promise<RegistryResponse> {
    const origin = req.url.origin;
    const host = req.url.host;
    let authRetried = false;
    for (let attempt = 0; ; attempt++) {
      const authorization = await this.options.authorizer.authorization(host, req.scopes);
      let res: RegistryResponse;
      try {
        res = await this.follow(req, origin, authorization);
      } catch (err) {
        if (req.signal?.aborted) throw canceled(`${req.method} ${req.url.href} was canceled`, { cause: err });
        if (attempt < this.options.retries && isRetryableNetworkError(err)) {
          await this.backoff(attempt, undefined, req.signal);
          continue;
        }
        throw unavailable(`${req.method} ${redact(req.url)}: ${describe(err)}`, { cause: err });
      }
      if (res.status === 401 && !authRetried) {
        const challenge = header(res, "www-authenticate");
        if (await this.options.authorizer.handleUnauthorized(host, req.scopes, challenge, authorization)) {
          await res.body.dump();
          authRetried = true;
          attempt--;
          continue;
        }
      }
      if ((res.status >= 500 || res.status === 429) && attempt < this.options.retries) {
        await res.body.dump();
        await this.backoff(attempt, header(res, "retry-after"), req.signal);
        continue;
      }
      return res;
    }
  }

  private async follow(req: RegistryRequest, origin: string, authorization: string | undefined) {
    let url = req.url;
    let method = req.method;
    let body = req.body;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { "user-agent": this.options.userAgent, ...req.headers };
      // Blob storage behind a redirect (S3, a CDN) must not see the registry's credentials.
      if (authorization !== undefined && url.origin === origin) headers.authorization = authorization;
      const payload = typeof body === "function" ? await body() : body;
      const res = await request(url, {
        method,
        headers,
        ...(payload === undefined ? {} : { body: payload }),
        ...(req.signal === undefined ? {} : { signal: req.signal }),
        ...(this.options.dispatcher === undefined ? {} : { dispatcher: this.options.dispatcher }),
      });
      const location = res.headers.location;
      if (redirectStatuses.has(res.statusCode) && typeof location === "string" && hop < maxRedirects) {
        await res.body.dump();
        url = new URL(location, url);
        if (res.statusCode === 303) {
          method = method === "HEAD" ? "HEAD" : "GET";
          body = undefined;
        }
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, url };
    }
  }

  private async backoff(attempt: number, retryAfter: string | undefined, signal: AbortSignal | undefined) {
    const base = this.options.retryDelay * 2 ** attempt;
    // Full jitter between half and one and a half times the base keeps clients from synchronizing.
    let delay = base * (0.5 + Math.random());
    const seconds = retryAfter === undefined ? Number.NaN : Number(retryAfter);
    if (Number.isFinite(seconds) && seconds >= 0) delay = Math.max(delay, Math.min(seconds * 1000, 30_000));
    try {
      await sleep(Math.min(delay, 30_000), undefined, signal === undefined ? undefined : { signal });
    } catch (err) {
      throw canceled("canceled while waiting to retry", { cause: err });
    }
  }
}

function isRetryableNetworkError(err: unknown): boolean {
  for (let e: unknown = err; typeof e === "object" && e !== null; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && retryableNetworkCodes.has(code)) return true;
    if (e === (e as { cause?: unknown }).cause) break;
  }
  return false;
}

function describe(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 3; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    parts.push(typeof code === "string" ? `${e.message} (${code})` : e.message);
  }
  return parts.length > 0 ? parts.join(": ") : String(err);
}

/** The URL without query string, for messages (upload URLs carry session state). @internal */
export function redact(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/**
 * Turns an unexpected response into an error, reading (a bounded part of) the registry's error
 * body for the message: 404 → `not-found`, 401 → `unauthenticated`, 403 → `permission-denied`,
 * 429 and 5xx → `unavailable`, other 4xx → `invalid-argument`. `what` names the operation and
 * object. @internal
 */
export async function statusError(res: RegistryResponse, what: string): Promise<BerthError> {
  let detail = "";
  try {
    const text = await readLimited(res.body, 4096);
    detail = registryErrorText(text);
  } catch {
    // The status alone is informative enough.
  }
  const message = `${what}: HTTP ${res.status}${detail === "" ? "" : ` (${detail})`}`;
  if (res.status === 404) return notFound(message);
  if (res.status === 401) return unauthenticated(message);
  if (res.status === 403) return permissionDenied(message);
  if (res.status === 429 || res.status >= 500) return unavailable(message);
  if (res.status === 416) return new BerthError(ErrorCode.OutOfRange, message);
  return invalidArgument(message);
}

function registryErrorText(text: string): string {
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    if (Array.isArray(parsed.errors) && parsed.errors.length > 0) {
      return parsed.errors.map((e) => [e.code, e.message].filter(Boolean).join(": ")).join("; ");
    }
  } catch {
    // Not the distribution spec's error JSON.
  }
  return text.trim().slice(0, 200);
}

/** Reads at most `limit` bytes of a body as text and drops the rest. @internal */
async function readLimited(body: RegistryResponse["body"], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    if (n < limit) chunks.push(buf.subarray(0, limit - n));
    n += buf.length;
    if (n >= limit) break;
  }
  body.destroy();
  return Buffer.concat(chunks).toString("utf8");
}
