// The REST API client: the ten collections, events (poll and a resuming
// Server-Sent Events stream) and endpoints, over the Fetch API.
import type {
  Collections,
  Delivery,
  Endpoint,
  EndpointInput,
  ErrorKind,
  EventType,
  Topic,
  WebhookEvent,
} from "./generated.js";

/** What went wrong, as the server said it: its `error.type`, `field`, status. */
export class EventFlowError extends Error {
  /** The HTTP status (0 when no answer came). */
  readonly status: number;
  /** The server's machine-readable kind (`validation_error`, `not_found`, …). */
  readonly type: ErrorKind | "network_error";
  /** The field, header or query parameter at fault, when the server named one. */
  readonly field: string | undefined;
  /** For a failed batch: the failing operation's index. */
  readonly index: number | undefined;
  /** The `Retry-After` the server asked for, in seconds. */
  readonly retryAfter: number | undefined;
  constructor(init: {
    status: number;
    type: ErrorKind | "network_error";
    message: string;
    field?: string | undefined;
    index?: number | undefined;
    retryAfter?: number | undefined;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "EventFlowError";
    this.status = init.status;
    this.type = init.type;
    this.field = init.field;
    this.index = init.index;
    this.retryAfter = init.retryAfter;
  }
}

export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:7700`. */
  baseUrl: string;
  /** An API key (`efk_…`). */
  apiKey: string;
  /** For an organisation's key: act as this member clinic (`Eventflow-Clinic`). */
  clinic?: string;
  /** Retries of a request answered 429 or 5xx, or not answered (default 3: four attempts at most). */
  maxRetries?: number;
  /** The first backoff, in milliseconds (default 200; doubles, with jitter, capped at 10 s). */
  retryDelayMs?: number;
  /** A `fetch` of your own (default: the global one). */
  fetch?: typeof fetch;
}

export interface CreateOptions {
  /** Honoured for 24 h: the same key and body returns the first answer again. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface UpdateOptions {
  /** Refuse (412 `precondition_failed`) unless the record is at this version. */
  ifMatch?: number;
  signal?: AbortSignal;
}

export interface GetOptions {
  /** Related records to embed (`include=`), e.g. `["patients"]`. */
  include?: string[];
  signal?: AbortSignal;
}

export interface ListOptions {
  patientId?: string;
  status?: string;
  /** Patients only: by medical record number. */
  mrn?: string;
  /** RFC 3339: records changed since. */
  updatedSince?: string;
  /** Page size (at most 500). */
  limit?: number;
  /** Start from this page (a `nextCursor`). */
  cursor?: string;
  signal?: AbortSignal;
}

/** One page of a list. */
export interface Page<T> {
  data: T[];
  nextCursor?: string | null;
}

export interface EventsListOptions {
  /** Events after this sequence (default 0: from the start). */
  after?: number;
  /** Types, globs (`appointment.*`) and topics. */
  types?: Array<EventType | Topic | (string & {})>;
  resourceType?: string;
  resourceId?: string;
  /** At most 1000. */
  limit?: number;
  /** Long poll: wait up to this many seconds (≤ 60) for the first event. */
  wait?: number;
  signal?: AbortSignal;
}

export interface EventsPage {
  data: WebhookEvent[];
  nextAfter: number;
}

export interface StreamOptions {
  /** Events after this sequence (default 0: from the start of the retained log). */
  after?: number;
  types?: Array<EventType | Topic | (string & {})>;
  /** Stops the stream. */
  signal?: AbortSignal;
  /** How long to wait before reconnecting after a dropped connection, ms (default 500, at least 10, doubling to 10 s). */
  reconnectDelayMs?: number;
  /**
   * Reconnections in a row, without an event in between, before the stream
   * gives up and throws the last failure (default: never give up).
   */
  maxReconnects?: number;
  /** Told why each connection ended, before the stream reconnects. */
  onDisconnect?: (reason: unknown) => void;
}

/** No byte for this long (the server sends a keep-alive every 15 s): the connection is dead. */
const STREAM_IDLE_MS = 45_000;

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

type Query = Record<string, string | number | undefined | string[]>;

function queryString(q: Query): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    p.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

let idCounter = 0;
/** A random key for a write that retries on its own. */
function randomKey(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.randomUUID) return `sdk-${c.randomUUID()}`;
  idCounter += 1;
  return `sdk-${Date.now().toString(36)}-${idCounter}-${Math.random().toString(36).slice(2)}`;
}

interface RequestInit2 {
  method: string;
  path: string;
  query?: Query;
  body?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal | undefined;
  /** Whether sending it twice is harmless (GET, DELETE, a write with an idempotency key). */
  retryable: boolean;
  /** A DELETE: a 404 after a retry means an earlier attempt deleted it. */
  deleting?: boolean;
}

/** The HTTP core every resource goes through. */
class Transport {
  readonly baseUrl: string;
  // Truly private (#): the key never shows when a client is printed or
  // serialised.
  readonly #apiKey: string;
  readonly #clinic: string | undefined;
  readonly #maxRetries: number;
  readonly #retryDelayMs: number;
  readonly fetch: typeof fetch;

  constructor(o: ClientOptions) {
    if (!o.baseUrl) throw new TypeError("baseUrl is required");
    if (!o.apiKey) throw new TypeError("apiKey is required");
    this.baseUrl = o.baseUrl.replace(/\/+$/, "");
    this.#apiKey = o.apiKey;
    this.#clinic = o.clinic;
    const retries = o.maxRetries ?? 3;
    const delay = o.retryDelayMs ?? 200;
    if (!Number.isFinite(retries) || !Number.isFinite(delay)) {
      throw new TypeError("maxRetries and retryDelayMs must be finite numbers");
    }
    this.#maxRetries = Math.max(0, Math.floor(retries));
    this.#retryDelayMs = Math.max(0, delay);
    this.fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { authorization: `Bearer ${this.#apiKey}`, ...extra };
    if (this.#clinic) h["eventflow-clinic"] = this.#clinic;
    return h;
  }

  backoff(attempt: number, retryAfter: number | undefined): number {
    if (retryAfter !== undefined) return Math.min(retryAfter * 1000, 60_000);
    const base = Math.min(this.#retryDelayMs * 2 ** attempt, 10_000);
    return base / 2 + Math.random() * (base / 2);
  }

  async request<T>(r: RequestInit2): Promise<{ status: number; body: T; headers: Headers }> {
    const url = `${this.baseUrl}${r.path}${queryString(r.query ?? {})}`;
    const headers = this.headers(r.headers);
    let payload: string | undefined;
    if (r.body !== undefined) {
      payload = JSON.stringify(r.body);
      headers["content-type"] = r.contentType ?? "application/json";
    }
    // Whether an earlier attempt may have been applied: no answer came, or
    // a 5xx other than 503 (a 429 or 503 did nothing).
    let mayHaveApplied = false;
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await this.fetch(url, {
          method: r.method,
          headers,
          ...(payload === undefined ? {} : { body: payload }),
          ...(r.signal ? { signal: r.signal } : {}),
        });
      } catch (cause) {
        if (r.signal?.aborted) throw cause;
        if (r.retryable && attempt < this.#maxRetries) {
          mayHaveApplied = true;
          await sleep(this.backoff(attempt, undefined), r.signal);
          continue;
        }
        throw new EventFlowError({
          status: 0,
          type: "network_error",
          message: `no answer from ${this.baseUrl}: ${(cause as Error)?.message ?? cause}`,
          cause,
        });
      }
      if (response.ok) {
        const text = await response.text();
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch (cause) {
          throw new EventFlowError({
            status: response.status,
            type: "internal_error",
            message: `the answer from ${this.baseUrl} is not JSON`,
            cause,
          });
        }
        return { status: response.status, body: body as T, headers: response.headers };
      }
      if (r.deleting && response.status === 404 && mayHaveApplied) {
        // An earlier attempt deleted it; its answer was lost.
        await response.body?.cancel();
        return { status: 204, body: undefined as T, headers: response.headers };
      }
      const error = await errorOf(response);
      const again =
        (response.status === 429 || response.status >= 500) &&
        (r.retryable || response.status === 429 || response.status === 503) &&
        attempt < this.#maxRetries;
      if (!again) throw error;
      if (response.status >= 500 && response.status !== 503) mayHaveApplied = true;
      await sleep(this.backoff(attempt, error.retryAfter), r.signal);
    }
  }
}

async function errorOf(response: Response): Promise<EventFlowError> {
  const retry = response.headers.get("retry-after");
  const retryAfter = retry !== null && /^[0-9]+$/.test(retry.trim()) ? Number(retry) : undefined;
  let detail: { type?: ErrorKind; message?: string; field?: string | null; index?: number | null } = {};
  try {
    const body = (await response.json()) as { error?: typeof detail };
    detail = body?.error ?? {};
  } catch {
    // Not our JSON (a proxy's page): the status says enough.
  }
  return new EventFlowError({
    status: response.status,
    type: detail.type ?? (response.status >= 500 ? "internal_error" : "invalid_request"),
    message: detail.message ?? `HTTP ${response.status}`,
    field: detail.field ?? undefined,
    index: detail.index ?? undefined,
    retryAfter,
  });
}

/** One collection of records: create, get, update, delete, list. */
export class Collection<Rec, Input, Patch> {
  constructor(
    private readonly t: Transport,
    /** The path segment, e.g. `appointments`. */
    readonly name: string,
  ) {}

  /** Creates a record (201). */
  async create(input: Input, options: CreateOptions = {}): Promise<Rec> {
    // A create retried on its own carries a key of its own, so a retry
    // after a lost answer is not a second record.
    const key = options.idempotencyKey ?? randomKey();
    const r = await this.t.request<Rec>({
      method: "POST",
      path: `/v1/${this.name}`,
      body: input,
      headers: { "idempotency-key": key },
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  /** Reads a record; a missing one is an {@link EventFlowError} with status 404. */
  async get(id: string, options: GetOptions = {}): Promise<Rec> {
    const r = await this.t.request<Rec>({
      method: "GET",
      path: `/v1/${this.name}/${encodeURIComponent(id)}`,
      query: { include: options.include },
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  /** Applies a JSON merge patch (`null` removes a field); `ifMatch` guards the version. */
  async update(id: string, patch: Patch, options: UpdateOptions = {}): Promise<Rec> {
    const headers: Record<string, string> = {};
    if (options.ifMatch !== undefined) headers["if-match"] = `"${options.ifMatch}"`;
    const r = await this.t.request<Rec>({
      method: "PATCH",
      path: `/v1/${this.name}/${encodeURIComponent(id)}`,
      body: patch,
      contentType: "application/merge-patch+json",
      headers,
      signal: options.signal,
      // A merge patch applied twice gives the same record; with ifMatch
      // the second is a 412 rather than a silent change.
      retryable: options.ifMatch === undefined,
    });
    return r.body;
  }

  /** Deletes a record. */
  async delete(id: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.t.request<undefined>({
      method: "DELETE",
      path: `/v1/${this.name}/${encodeURIComponent(id)}`,
      signal: options.signal,
      retryable: true,
      deleting: true,
    });
  }

  /** One page of records. */
  async page(options: ListOptions = {}): Promise<Page<Rec>> {
    const { signal, ...q } = options;
    const r = await this.t.request<Page<Rec>>({
      method: "GET",
      path: `/v1/${this.name}`,
      query: q,
      signal,
      retryable: true,
    });
    return r.body;
  }

  /** Every record matching, page after page: `for await (const p of client.patients.list())`. */
  async *list(options: ListOptions = {}): AsyncGenerator<Rec, void, undefined> {
    let cursor = options.cursor;
    for (;;) {
      const page = await this.page({ ...options, ...(cursor === undefined ? {} : { cursor }) });
      yield* page.data;
      if (!page.nextCursor) return;
      cursor = page.nextCursor;
    }
  }
}

/** The event log: poll, long poll and a stream that resumes by itself. */
export class Events {
  constructor(private readonly t: Transport) {}

  /** One page of events after `after` (a long poll with `wait`). */
  async list(options: EventsListOptions = {}): Promise<EventsPage> {
    const { signal, ...q } = options;
    const r = await this.t.request<EventsPage>({
      method: "GET",
      path: "/v1/events",
      query: { ...q, after: q.after ?? 0 },
      signal,
      retryable: true,
    });
    return r.body;
  }

  /** One event by id. */
  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<WebhookEvent> {
    const r = await this.t.request<WebhookEvent>({
      method: "GET",
      path: `/v1/events/${encodeURIComponent(id)}`,
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  /**
   * The events as they are written, over Server-Sent Events. A dropped
   * connection (a restarted server, a proxy's timeout, 45 s without even a
   * keep-alive) is reopened after the last event received: nothing is
   * missed, nothing repeated. Ends when `signal` aborts or the loop breaks.
   * Throws the server's refusal (a bad key, a bad filter), an event that is
   * not JSON, and, after `maxReconnects` failures in a row, the last one.
   */
  async *stream(options: StreamOptions = {}): AsyncGenerator<WebhookEvent, void, undefined> {
    // The stream's `id:` is the event's number in the log this key reads
    // (its network's for an organisation's key): resume after it.
    let after = options.after;
    const delayOption = options.reconnectDelayMs ?? 500;
    if (!Number.isFinite(delayOption) || delayOption < 0) {
      throw new TypeError("reconnectDelayMs must be a finite number, not negative");
    }
    if (options.maxReconnects !== undefined && !(Number.isInteger(options.maxReconnects) && options.maxReconnects >= 0)) {
      throw new TypeError("maxReconnects must be a whole number, not negative");
    }
    const first = Math.max(10, delayOption);
    let delay = first;
    let failures = 0;
    const outer = options.signal;
    while (!outer?.aborted) {
      const connection = new AbortController();
      const stop = () => connection.abort(outer?.reason);
      outer?.addEventListener("abort", stop, { once: true });
      let idle: ReturnType<typeof setTimeout> | undefined;
      const alive = () => {
        if (idle !== undefined) clearTimeout(idle);
        idle = setTimeout(() => connection.abort(new Error("no data for 45 s")), STREAM_IDLE_MS);
      };
      let reason: unknown;
      try {
        alive();
        const response = await this.t.fetch(
          `${this.t.baseUrl}/v1/events/stream${queryString({ after, types: options.types })}`,
          { headers: this.t.headers({ accept: "text/event-stream" }), signal: connection.signal },
        );
        if (!response.ok) {
          const error = await errorOf(response);
          if (outer?.aborted) return;
          if (response.status !== 429 && response.status < 500) throw new Refused(error);
          reason = error;
        } else if (response.body) {
          for await (const message of sseMessages(response.body, alive)) {
            if (message.data === undefined) continue;
            let event: WebhookEvent;
            try {
              event = JSON.parse(message.data) as WebhookEvent;
            } catch (cause) {
              throw new Refused(
                new EventFlowError({ status: 200, type: "internal_error", message: "a streamed event is not JSON", cause }),
              );
            }
            if (message.id !== undefined && /^[0-9]+$/.test(message.id)) after = Number(message.id);
            delay = first;
            failures = 0;
            // The time the caller takes with the event is not the
            // connection's silence.
            if (idle !== undefined) clearTimeout(idle);
            yield event;
            alive();
          }
          reason = new Error("the server ended the stream");
        }
      } catch (e) {
        if (e instanceof Refused) throw e.error;
        reason = e;
      } finally {
        if (idle !== undefined) clearTimeout(idle);
        outer?.removeEventListener("abort", stop);
      }
      if (outer?.aborted) return;
      failures += 1;
      options.onDisconnect?.(reason);
      if (options.maxReconnects !== undefined && failures > options.maxReconnects) {
        throw reason instanceof EventFlowError
          ? reason
          : new EventFlowError({
              status: 0,
              type: "network_error",
              message: `the stream from ${this.t.baseUrl} failed ${failures} times in a row`,
              cause: reason,
            });
      }
      try {
        await sleep(delay, outer);
      } catch {
        return;
      }
      delay = Math.min(delay * 2, 10_000);
    }
  }
}

/** An answer that ends a stream rather than a reason to reconnect. */
class Refused {
  constructor(readonly error: EventFlowError) {}
}

/** Parses a Server-Sent Events body into messages; `progress` is called on every chunk. */
async function* sseMessages(
  body: ReadableStream<Uint8Array>,
  progress: () => void,
): AsyncGenerator<{ id?: string; data?: string }, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let id: string | undefined;
  let data: string[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      progress();
      buffer += decoder.decode(value, { stream: true });
      for (;;) {
        const nl = buffer.search(/\r\n|\r|\n/);
        if (nl < 0) break;
        // A "\r" last in the buffer may be half of a "\r\n" split across
        // chunks: wait for the next one.
        if (buffer[nl] === "\r" && nl === buffer.length - 1) break;
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) {
            yield { ...(id === undefined ? {} : { id }), data: data.join("\n") };
          }
          data = [];
          id = undefined;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => undefined);
  }
}

/** Webhook endpoints: where events are delivered. */
export class Endpoints {
  constructor(private readonly t: Transport) {}

  /**
   * Creates an endpoint. Not retried after an answer that may have come
   * after the endpoint was made (a 5xx, a lost answer): that would make a
   * second endpoint; a 429 or 503 (nothing done) is retried.
   */
  async create(input: EndpointInput & { url: string }, options: { signal?: AbortSignal } = {}): Promise<Endpoint> {
    const r = await this.t.request<Endpoint>({
      method: "POST",
      path: "/v1/endpoints",
      body: input,
      signal: options.signal,
      retryable: false,
    });
    return r.body;
  }

  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<Endpoint> {
    const r = await this.t.request<Endpoint>({
      method: "GET",
      path: `/v1/endpoints/${encodeURIComponent(id)}`,
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  async update(id: string, patch: Partial<EndpointInput>, options: { signal?: AbortSignal } = {}): Promise<Endpoint> {
    const r = await this.t.request<Endpoint>({
      method: "PATCH",
      path: `/v1/endpoints/${encodeURIComponent(id)}`,
      body: patch,
      contentType: "application/merge-patch+json",
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  async delete(id: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.t.request<undefined>({
      method: "DELETE",
      path: `/v1/endpoints/${encodeURIComponent(id)}`,
      signal: options.signal,
      retryable: true,
      deleting: true,
    });
  }

  async list(options: { signal?: AbortSignal } = {}): Promise<Endpoint[]> {
    const r = await this.t.request<{ data: Endpoint[] }>({
      method: "GET",
      path: "/v1/endpoints",
      signal: options.signal,
      retryable: true,
    });
    return r.body.data;
  }

  /** The keys its deliveries are signed with: `whsec_…` (HMAC) or `whpk_…` (Ed25519). */
  async secret(id: string, options: { signal?: AbortSignal } = {}): Promise<EndpointSecret> {
    const r = await this.t.request<EndpointSecret>({
      method: "GET",
      path: `/v1/endpoints/${encodeURIComponent(id)}/secret`,
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  /** Makes a new secret; the old one keeps signing beside it for 24 h. */
  async rotateSecret(id: string, options: { signal?: AbortSignal } = {}): Promise<EndpointSecret> {
    const r = await this.t.request<EndpointSecret>({
      method: "POST",
      path: `/v1/endpoints/${encodeURIComponent(id)}/secret/rotate`,
      signal: options.signal,
      retryable: false,
    });
    return r.body;
  }

  /** Sends a new verification challenge now. */
  async verify(id: string, options: { signal?: AbortSignal } = {}): Promise<Endpoint> {
    const r = await this.t.request<Endpoint>({
      method: "POST",
      path: `/v1/endpoints/${encodeURIComponent(id)}/verify`,
      signal: options.signal,
      retryable: true,
    });
    return r.body;
  }

  /** A page of its deliveries, newest first. */
  async deliveries(
    id: string,
    options: { status?: "pending" | "succeeded" | "failed"; limit?: number; cursor?: string; signal?: AbortSignal } = {},
  ): Promise<Page<Delivery>> {
    const { signal, ...q } = options;
    const r = await this.t.request<Page<Delivery>>({
      method: "GET",
      path: `/v1/endpoints/${encodeURIComponent(id)}/deliveries`,
      query: q,
      signal,
      retryable: true,
    });
    return r.body;
  }
}

/** What `GET /v1/endpoints/{id}/secret` returns. */
export interface EndpointSecret {
  /** The HMAC secret (`whsec_…`) of an HMAC endpoint. */
  secret?: string;
  /** The public key (`whpk_…`) of an Ed25519 endpoint. */
  publicKey?: string;
  /** While a rotation lasts: the previous keys, still signing, with when they stop. */
  previous?: Array<{ secret?: string; publicKey?: string; expiresAt?: string; [more: string]: unknown }>;
  [more: string]: unknown;
}

type CollectionsOf = {
  readonly [K in keyof Collections]: Collection<
    Collections[K]["record"],
    Collections[K]["input"],
    Collections[K]["patch"]
  >;
};

/**
 * The API client.
 *
 * ```ts
 * const eventflow = new EventFlow({ baseUrl: "http://127.0.0.1:7700", apiKey: process.env.EVENTFLOW_API_KEY! });
 * const patient = await eventflow.patients.create({ firstName: "Ada", lastName: "Lovelace" });
 * await eventflow.appointments.create({ patientId: patient.id, start: "2026-12-01T10:00:00Z" });
 * for await (const event of eventflow.events.stream({ after: 0 })) console.log(event.type);
 * ```
 */
export interface EventFlow extends CollectionsOf {}
export class EventFlow {
  readonly events: Events;
  readonly endpoints: Endpoints;

  constructor(options: ClientOptions) {
    const t = new Transport(options);
    this.events = new Events(t);
    this.endpoints = new Endpoints(t);
    for (const name of COLLECTION_NAMES) {
      (this as unknown as Record<string, unknown>)[name] = new Collection(t, name);
    }
  }
}

import { COLLECTIONS as COLLECTION_NAMES } from "./generated.js";
