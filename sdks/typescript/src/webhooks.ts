// Receiving webhooks: signature checks (Standard Webhooks `v1` and `v1a`,
// and `x-clinikapi-signature`), the typed event, and the answer to an
// endpoint verification challenge. Web Crypto only.
import type { WebhookEvent } from "./generated.js";

/** How far a signature's timestamp may be from now, by default: 5 minutes. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** The `type` of an endpoint verification challenge's body. */
export const CHALLENGE_TYPE = "endpoint.verification";

/**
 * What the server posts a new endpoint (or one whose URL changed) before it
 * sends it patient data. Answer it `200` with `{"challenge": "<the same>"}`
 * ({@link challengeResponse} does).
 */
export interface VerificationChallenge {
  type: typeof CHALLENGE_TYPE;
  endpointId: string;
  challenge: string;
}

/** A verified body: an event, or a verification challenge. */
export type WebhookPayload = WebhookEvent | VerificationChallenge;

/** Request headers in any of the shapes frameworks hand them over. */
export type HeadersLike =
  | Headers
  | Record<string, string | string[] | undefined>
  | Iterable<readonly [string, string]>;

/** The parts of a request a signature covers. */
export interface WebhookRequest {
  headers: HeadersLike;
  /** The raw body, exactly as received (not re-serialised JSON). */
  body: string | Uint8Array | ArrayBuffer;
}

export interface VerifyOptions {
  /** How far the timestamp may be from now, in seconds (default 300). */
  toleranceSeconds?: number;
  /** "Now", in Unix seconds (default: the clock). */
  now?: number;
}

/** Why a request was not accepted as one the server sent. */
export type VerificationFailure =
  | "missing_headers"
  | "bad_timestamp"
  | "outside_tolerance"
  | "no_match"
  | "bad_body"
  /** The key passed to verify with is no key (not `whsec_…`/`whpk_…`, or missing): the caller's mistake. */
  | "bad_secret"
  /** `toleranceSeconds` or `now` is not a finite number: the caller's mistake. */
  | "bad_options";

/** A request that is not a genuine, fresh delivery: answer it 401. */
export class WebhookVerificationError extends Error {
  readonly reason: VerificationFailure;
  constructor(reason: VerificationFailure, message: string) {
    super(message);
    this.name = "WebhookVerificationError";
    this.reason = reason;
  }
}

/**
 * A key to check signatures with: an HMAC endpoint's secret (`whsec_…`) or
 * an Ed25519 endpoint's public key (`whpk_…`). Pass several while a secret
 * rotates; one matching signature is enough.
 */
export type WebhookSecret = string;

const encoder = new TextEncoder();

async function subtle(): Promise<SubtleCrypto> {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.subtle) return c.subtle;
  // Node 18 has Web Crypto without the global. The module's name is kept
  // from bundlers: runtimes with the global (Edge, Workers) never load it.
  const name = "node:crypto";
  const node = (await import(/* webpackIgnore: true */ /* @vite-ignore */ name)) as { webcrypto: Crypto };
  return node.webcrypto.subtle;
}

function fromBase64(s: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  try {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

function fromHex(s: string): Uint8Array<ArrayBuffer> | null {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return null;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function bytesOf(body: WebhookRequest["body"]): Uint8Array<ArrayBuffer> {
  if (typeof body === "string") return encoder.encode(body) as Uint8Array<ArrayBuffer>;
  if (body instanceof Uint8Array) return new Uint8Array(body);
  return new Uint8Array(body);
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Case-insensitive header lookup over any {@link HeadersLike}. */
function headerGetter(headers: HeadersLike): (name: string) => string | undefined {
  if (typeof Headers !== "undefined" && headers instanceof Headers) {
    return (name) => headers.get(name)?.trim() ?? undefined;
  }
  if (headers === null || typeof headers !== "object") {
    throw new WebhookVerificationError("missing_headers", "no request headers given");
  }
  const map = new Map<string, string>();
  const entries: Iterable<readonly [string, unknown]> =
    Symbol.iterator in headers
      ? (headers as Iterable<readonly [string, string]>)
      : Object.entries(headers as Record<string, unknown>);
  for (const [k, v] of entries) {
    if (v === undefined || v === null) continue;
    const value = Array.isArray(v) ? v.join(", ") : String(v);
    const key = String(k).toLowerCase();
    const before = map.get(key);
    map.set(key, before === undefined ? value : `${before}, ${value}`);
  }
  return (name) => map.get(name)?.trim();
}

/** At most this many signatures of a header are checked (a rotation has two or three). */
const MAX_SIGNATURES = 10;

type Key =
  | { kind: "hmac"; key: CryptoKey }
  | { kind: "ed25519"; key: CryptoKey };

async function importKeys(secrets: WebhookSecret | readonly WebhookSecret[]): Promise<Key[]> {
  const list: readonly unknown[] = typeof secrets === "string" ? [secrets] : Array.isArray(secrets) ? secrets : [];
  if (list.length === 0 || list.some((s) => typeof s !== "string")) {
    // Most often an environment variable that is not set.
    throw new WebhookVerificationError("bad_secret", "no secret given to verify with (whsec_… or whpk_…)");
  }
  const s = await subtle();
  const keys: Key[] = [];
  for (const secret of list as readonly string[]) {
    if (secret.startsWith("whsec_")) {
      const raw = fromBase64(secret.slice(6));
      if (!raw || raw.length === 0 || raw.length > 64) {
        throw new WebhookVerificationError("bad_secret", "a webhook secret is whsec_ and the base64 of 1 to 64 bytes");
      }
      keys.push({
        kind: "hmac",
        key: await s.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]),
      });
    } else if (secret.startsWith("whpk_")) {
      const raw = fromBase64(secret.slice(5));
      if (!raw || raw.length !== 32) {
        throw new WebhookVerificationError("bad_secret", "an Ed25519 public key is whpk_ and the base64 of 32 bytes");
      }
      let key: CryptoKey;
      try {
        key = await s.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
      } catch {
        throw new WebhookVerificationError("bad_secret", "an Ed25519 public key is whpk_ and the base64 of 32 bytes");
      }
      keys.push({ kind: "ed25519", key });
    } else {
      throw new WebhookVerificationError(
        "bad_secret",
        "a key to verify with is an endpoint's secret (whsec_…) or public key (whpk_…)",
      );
    }
  }
  return keys;
}

function checkTimestamp(text: string, options: VerifyOptions): number {
  if (!/^\+?[0-9]{1,15}$/.test(text)) {
    throw new WebhookVerificationError("bad_timestamp", "the timestamp is not a number of seconds");
  }
  const ts = Number(text);
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  // A tolerance or a "now" that is no number (an unset variable read with
  // Number()) must not make every timestamp acceptable.
  if (!Number.isFinite(now) || !Number.isFinite(tolerance) || tolerance < 0) {
    throw new WebhookVerificationError("bad_options", "toleranceSeconds and now must be finite numbers, the tolerance not negative");
  }
  if (!(Math.abs(now - ts) <= tolerance)) {
    throw new WebhookVerificationError(
      "outside_tolerance",
      "the timestamp is outside the tolerance (replayed or clock skew)",
    );
  }
  return ts;
}

/**
 * Checks that a request is a delivery the server signed with one of
 * `secrets`, recently, and returns its body as a typed event (or a
 * verification challenge). Standard Webhooks headers (`webhook-id`,
 * `webhook-timestamp`, `webhook-signature` with `v1` and `v1a`) are checked
 * first; without them, `x-clinikapi-signature`. Signatures are compared by
 * Web Crypto's `verify`, in constant time. Throws
 * {@link WebhookVerificationError}.
 */
export async function verifyWebhook(
  request: WebhookRequest,
  secrets: WebhookSecret | readonly WebhookSecret[],
  options: VerifyOptions = {},
): Promise<WebhookPayload> {
  const get = headerGetter(request.headers);
  const body = bytesOf(request.body);
  const keys = await importKeys(secrets);
  const s = await subtle();
  const id = get("webhook-id");
  const timestamp = get("webhook-timestamp");
  const signatures = get("webhook-signature");
  let verified = false;
  if (id !== undefined && timestamp !== undefined && signatures !== undefined) {
    const ts = checkTimestamp(timestamp, options);
    const signed = concat(encoder.encode(`${id}.${ts}.`), body);
    // Space-separated; a header repeated (or joined by a proxy) adds ", ".
    const tokens = signatures
      .split(/\s+/)
      .map((t) => t.replace(/,+$/, ""))
      .filter((t) => t.length > 0)
      .slice(0, MAX_SIGNATURES);
    outer: for (const sig of tokens) {
      const comma = sig.indexOf(",");
      if (comma < 0) continue;
      const version = sig.slice(0, comma);
      const raw = fromBase64(sig.slice(comma + 1));
      if (!raw) continue;
      for (const k of keys) {
        if (version === "v1" && k.kind === "hmac") {
          if (await s.verify("HMAC", k.key, raw, signed)) {
            verified = true;
            break outer;
          }
        } else if (version === "v1a" && k.kind === "ed25519" && raw.length === 64) {
          if (await s.verify({ name: "Ed25519" }, k.key, raw, signed)) {
            verified = true;
            break outer;
          }
        }
      }
    }
  } else {
    const header = get("x-clinikapi-signature");
    if (header === undefined) {
      throw new WebhookVerificationError(
        "missing_headers",
        "no signature headers: expected webhook-id, webhook-timestamp and webhook-signature, or x-clinikapi-signature",
      );
    }
    let t: string | undefined;
    const sigs: string[] = [];
    for (const part of header.split(",")) {
      const eq = part.indexOf("=");
      if (eq < 0) continue;
      const [name, value] = [part.slice(0, eq).trim(), part.slice(eq + 1).trim()];
      if (name === "t") t = value;
      else if (name === "v1") sigs.push(value);
    }
    if (t === undefined) {
      throw new WebhookVerificationError("missing_headers", "x-clinikapi-signature has no t=");
    }
    const ts = checkTimestamp(t, options);
    const signed = concat(encoder.encode(`${ts}.`), body);
    outer: for (const sig of sigs.slice(0, MAX_SIGNATURES)) {
      const raw = fromHex(sig);
      if (!raw) continue;
      for (const k of keys) {
        if (k.kind === "hmac" && (await s.verify("HMAC", k.key, raw, signed))) {
          verified = true;
          break outer;
        }
      }
    }
  }
  if (!verified) {
    throw new WebhookVerificationError("no_match", "no signature matches a key of this endpoint");
  }
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new WebhookVerificationError("bad_body", "the body is not JSON");
  }
  if (typeof payload !== "object" || payload === null || typeof (payload as { type?: unknown }).type !== "string") {
    throw new WebhookVerificationError("bad_body", "the body is not an event");
  }
  return payload as WebhookPayload;
}

/** Whether a verified body is an endpoint verification challenge. */
export function isChallenge(payload: WebhookPayload): payload is VerificationChallenge {
  return payload.type === CHALLENGE_TYPE && typeof (payload as VerificationChallenge).challenge === "string";
}

/**
 * The answer to a verification challenge (`200 {"challenge": "…"}`), or
 * `null` when the payload is an event.
 */
export function challengeResponse(payload: WebhookPayload): Response | null {
  if (!isChallenge(payload)) return null;
  return new Response(JSON.stringify({ challenge: payload.challenge }), {
    status: 200,
    headers: { "content-type": "application/json" },
  });
}

/**
 * A whole webhook route on the Fetch API's `Request` and `Response`
 * (Next.js route handlers, Workers, Deno, Bun): verifies the request
 * (`401` if it is not genuine), answers a verification challenge by itself,
 * and otherwise calls `handler` with the typed event. The handler's
 * `Response` is returned; without one, `200 {"received": true}`.
 *
 * ```ts
 * export async function POST(req: Request) {
 *   return handleWebhook(req, process.env.WEBHOOK_SECRET!, async (event) => {
 *     if (event.type === "appointment.created") await confirm(event.data);
 *   });
 * }
 * ```
 */
export async function handleWebhook(
  request: Request,
  secrets: WebhookSecret | readonly WebhookSecret[],
  handler: (event: WebhookEvent) => Promise<Response | void> | Response | void,
  options: VerifyOptions = {},
): Promise<Response> {
  const body = new Uint8Array(await request.arrayBuffer());
  let payload: WebhookPayload;
  try {
    payload = await verifyWebhook({ headers: request.headers, body }, secrets, options);
  } catch (e) {
    // A mistake of the caller's (no secret configured) is thrown, not
    // answered 401: the server would retry, and you want to know.
    if (e instanceof WebhookVerificationError && e.reason !== "bad_secret" && e.reason !== "bad_options") {
      return new Response(JSON.stringify({ error: "invalid signature" }), {
        status: 401,
        headers: { "content-type": "application/json" },
      });
    }
    throw e;
  }
  const answer = challengeResponse(payload);
  if (answer) return answer;
  if (payload.type === CHALLENGE_TYPE) {
    return new Response(JSON.stringify({ error: "malformed challenge" }), {
      status: 400,
      headers: { "content-type": "application/json" },
    });
  }
  const response = await handler(payload as WebhookEvent);
  return (
    response ??
    new Response(JSON.stringify({ received: true }), {
      status: 200,
      headers: { "content-type": "application/json" },
    })
  );
}
