// The client against a real server: every collection's create, get, update,
// delete and list; idempotency keys; the server's errors as typed errors;
// retries of 429 and 5xx answers.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { once } from "node:events";
import { EventFlow, EventFlowError, COLLECTIONS } from "../dist/esm/index.js";
import { startServer } from "./helpers.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = new EventFlow({ baseUrl: server.baseUrl, apiKey: server.key });
});

after(async () => {
  await server?.stop();
});

/** For each collection: what to create it with (given a patient) and a patch. */
const CASES = {
  patients: () => [{ firstName: "Ada", lastName: "Lovelace" }, { lastName: "King" }, "lastName"],
  practitioners: () => [{ firstName: "Joseph", lastName: "Lister" }, { lastName: "Lister-Bart" }, "lastName"],
  appointments: (p) => [{ patientId: p, start: "2030-01-02T10:00:00Z" }, { reason: "Follow-up" }, "reason"],
  encounters: (p) => [{ patientId: p }, { type: "checkup" }, "type"],
  observations: (p) => [{ patientId: p, code: "8867-4", value: 72, unit: "/min" }, { value: 75 }, "value"],
  prescriptions: (p) => [{ patientId: p, medication: "Amoxicillin 500 mg" }, { dosage: "1 capsule 3 times a day" }, "dosage"],
  consents: (p) => [{ patientId: p }, { scope: "treatment" }, "scope"],
  intakes: (p) => [{ patientId: p }, { form: "new-patient" }, "form"],
  notes: (p) => [{ patientId: p, text: "Seen today." }, { text: "Seen today; well." }, "text"],
  labs: (p) => [{ patientId: p, code: "2345-7" }, { display: "Glucose" }, "display"],
};

test("each of the ten collections: create, get, update with ifMatch, list, delete", async () => {
  assert.deepEqual([...COLLECTIONS].sort(), Object.keys(CASES).sort());
  const patient = await client.patients.create({ firstName: "Owner", lastName: "Of Records" });
  for (const name of COLLECTIONS) {
    const [input, patch, field] = CASES[name](patient.id);
    const collection = client[name];
    const made = await collection.create(input);
    assert.match(made.id, /^[a-z]+_[A-Za-z0-9]+$/, name);
    assert.equal(made.version, 1, name);
    const read = await collection.get(made.id);
    assert.equal(read.id, made.id, name);
    const updated = await collection.update(made.id, patch, { ifMatch: 1 });
    assert.equal(updated.version, 2, name);
    assert.deepEqual(updated[field], patch[field], name);
    // A stale version is a 412 with the server's type.
    await assert.rejects(collection.update(made.id, patch, { ifMatch: 1 }), (e) => {
      assert.ok(e instanceof EventFlowError, name);
      assert.equal(e.status, 412, name);
      assert.equal(e.type, "precondition_failed", name);
      return true;
    });
    const listed = [];
    for await (const r of collection.list({ limit: 500 })) listed.push(r.id);
    assert.ok(listed.includes(made.id), name);
    await collection.delete(made.id);
    await assert.rejects(collection.get(made.id), (e) => e instanceof EventFlowError && e.status === 404 && e.type === "not_found");
  }
});

test("list pages through every record, a page at a time", async () => {
  const made = [];
  for (let i = 0; i < 5; i++) {
    made.push((await client.practitioners.create({ firstName: `P${i}`, lastName: "Pager" })).id);
  }
  const page = await client.practitioners.page({ limit: 2 });
  assert.equal(page.data.length, 2);
  assert.ok(page.nextCursor);
  const all = [];
  for await (const p of client.practitioners.list({ limit: 2 })) all.push(p.id);
  for (const id of made) assert.ok(all.includes(id), id);
  assert.equal(new Set(all).size, all.length, "no record twice");
});

test("an idempotency key makes a repeated create the same record", async () => {
  const key = `booking-${Date.now()}`;
  const a = await client.patients.create({ firstName: "Idem", lastName: "Potent" }, { idempotencyKey: key });
  const b = await client.patients.create({ firstName: "Idem", lastName: "Potent" }, { idempotencyKey: key });
  assert.equal(a.id, b.id);
  // The same key with another body is the server's idempotency_conflict.
  await assert.rejects(
    client.patients.create({ firstName: "Other", lastName: "Body" }, { idempotencyKey: key }),
    (e) => {
      assert.ok(e instanceof EventFlowError);
      assert.equal(e.status, 409);
      assert.equal(e.type, "idempotency_conflict");
      assert.equal(e.field, "Idempotency-Key");
      return true;
    },
  );
});

test("the server's errors arrive typed: status, type, field", async () => {
  await assert.rejects(client.appointments.create({ patientId: "pat_nope", start: "tomorrow" }), (e) => {
    assert.ok(e instanceof EventFlowError);
    assert.equal(e.status, 422);
    assert.equal(e.type, "validation_error");
    assert.equal(e.field, "start");
    assert.match(e.message, /start/);
    return true;
  });
  const stranger = new EventFlow({ baseUrl: server.baseUrl, apiKey: "efk_not-a-key-of-this-server-0123456789ab" });
  await assert.rejects(stranger.patients.page(), (e) => e.status === 401 && e.type === "authentication_error");
  await assert.rejects(client.events.get("evt_nope"), (e) => e.status === 404 && e.type === "not_found");
  // No server at all: a network_error, after the retries.
  const nowhere = new EventFlow({ baseUrl: "http://127.0.0.1:9", apiKey: server.key, maxRetries: 1, retryDelayMs: 1 });
  await assert.rejects(nowhere.patients.page(), (e) => e instanceof EventFlowError && e.type === "network_error" && e.status === 0);
});

/**
 * A proxy in front of the server that answers the first `failures`
 * requests itself with `status` (and Retry-After when given), then passes
 * requests through. With `forwardFirst`, the first request does reach the
 * server, and its answer is replaced by `status` (an answer lost on the
 * way back).
 */
async function flakyProxy(status, failures, retryAfter, forwardFirst = false) {
  let seen = 0;
  const proxy = createServer(async (req, res) => {
    seen += 1;
    const chunks = [];
    for await (const c of req) chunks.push(c);
    if (forwardFirst && seen === 1) {
      const headers = { ...req.headers };
      delete headers.host;
      delete headers["content-length"];
      await fetch(`${server.baseUrl}${req.url}`, { method: req.method, headers, body: Buffer.concat(chunks) });
    }
    if (seen <= failures) {
      const headers = { "content-type": "application/json" };
      if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter);
      res.writeHead(status, headers);
      res.end(JSON.stringify({ error: { type: status === 429 ? "rate_limited" : "unavailable", message: "try again" } }));
      return;
    }
    const headers = { ...req.headers };
    delete headers.host;
    delete headers["content-length"];
    const r = await fetch(`${server.baseUrl}${req.url}`, {
      method: req.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "application/json" });
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  proxy.listen(0, "127.0.0.1");
  await once(proxy, "listening");
  return { url: `http://127.0.0.1:${proxy.address().port}`, seen: () => seen, close: () => new Promise((r) => proxy.close(r)) };
}

test("429 and 5xx answers are retried with backoff, and a create retried is still one record", async () => {
  for (const [status, retryAfter] of [[503, undefined], [429, 0], [500, undefined]]) {
    const proxy = await flakyProxy(status, 2, retryAfter);
    const c = new EventFlow({ baseUrl: proxy.url, apiKey: server.key, retryDelayMs: 5 });
    const made = await c.patients.create({ firstName: "Retry", lastName: String(status) });
    assert.equal(proxy.seen(), 3, `${status}: two refused, the third through`);
    assert.equal((await client.patients.get(made.id)).lastName, String(status));
    await proxy.close();
  }
  // The first attempt reached the server and made the record, but its
  // answer was lost: the retry (the same idempotency key) is that record,
  // not a second one.
  const lost = await flakyProxy(502, 1, undefined, true);
  const c2 = new EventFlow({ baseUrl: lost.url, apiKey: server.key, retryDelayMs: 5 });
  const once = await c2.patients.create({ firstName: "Lost", lastName: "Answer" });
  assert.equal(lost.seen(), 2);
  await lost.close();
  const named = [];
  for await (const p of client.patients.list({ limit: 500 })) if (p.lastName === "Answer") named.push(p.id);
  assert.deepEqual(named, [once.id], "one record");
  // A DELETE whose answer was lost: the retry's 404 is its success.
  const gone = await client.patients.create({ firstName: "Gone", lastName: "Twice" });
  const lostDelete = await flakyProxy(502, 1, undefined, true);
  await new EventFlow({ baseUrl: lostDelete.url, apiKey: server.key, retryDelayMs: 5 }).patients.delete(gone.id);
  assert.equal(lostDelete.seen(), 2);
  await lostDelete.close();
  await assert.rejects(client.patients.get(gone.id), (e) => e.status === 404);
  // A 429 did nothing: a 404 after it is a 404 (the record never was).
  const limited = await flakyProxy(429, 1, 0);
  await assert.rejects(
    new EventFlow({ baseUrl: limited.url, apiKey: server.key, retryDelayMs: 5 }).patients.delete("pat_neverwas"),
    (e) => e.status === 404 && e.type === "not_found",
  );
  assert.equal(limited.seen(), 2);
  await limited.close();
  // An endpoint's create is not retried after a 5xx: that could make two.
  const noRetry = await flakyProxy(502, 1);
  await assert.rejects(
    new EventFlow({ baseUrl: noRetry.url, apiKey: server.key, retryDelayMs: 5 }).endpoints.create({ url: "http://127.0.0.1:9/x" }),
    (e) => e.status === 502,
  );
  assert.equal(noRetry.seen(), 1);
  await noRetry.close();

  // Past maxRetries the last answer is the error.
  const proxy = await flakyProxy(503, 10);
  const c = new EventFlow({ baseUrl: proxy.url, apiKey: server.key, retryDelayMs: 1, maxRetries: 2 });
  await assert.rejects(c.patients.page(), (e) => e.status === 503 && e.type === "unavailable");
  assert.equal(proxy.seen(), 3);
  await proxy.close();
});

test("an organisation's key acts as the member clinic it names", async () => {
  const orgKey = server.cli("orgs", "create", `network-${Date.now()}`);
  assert.match(orgKey, /^efk_/);
  const org = new EventFlow({ baseUrl: server.baseUrl, apiKey: orgKey });
  const made = async (name) => {
    const r = await fetch(`${server.baseUrl}/v1/clinics`, {
      method: "POST",
      headers: { authorization: `Bearer ${orgKey}`, "content-type": "application/json" },
      body: JSON.stringify({ name }),
    });
    assert.equal(r.status, 201);
    return (await r.json()).id;
  };
  const north = await made(`north-${Date.now()}`);
  const south = await made(`south-${Date.now()}`);
  const asNorth = new EventFlow({ baseUrl: server.baseUrl, apiKey: orgKey, clinic: north });
  const asSouth = new EventFlow({ baseUrl: server.baseUrl, apiKey: orgKey, clinic: south });
  const p = await asNorth.patients.create({ firstName: "North", lastName: "Member" });
  assert.equal((await asNorth.patients.get(p.id)).id, p.id);
  await assert.rejects(asSouth.patients.get(p.id), (e) => e.status === 404);
  // Without a clinic an organisation key cannot write a record.
  await assert.rejects(org.patients.create({ firstName: "No", lastName: "Clinic" }), (e) => e.status === 422);
});

test("the client never shows its API key when printed or serialised", async () => {
  const { inspect } = await import("node:util");
  const c = new EventFlow({ baseUrl: server.baseUrl, apiKey: server.key });
  assert.ok(!inspect(c, { depth: 10, showHidden: true }).includes(server.key));
  assert.ok(!JSON.stringify(c).includes(server.key));
});

test("endpoints: create, get, update, list, delete", async () => {
  const ep = await client.endpoints.create({ url: "http://127.0.0.1:9/hooks", payload: "thin", eventTypes: ["patient.*"] });
  assert.match(ep.id, /^ep_/);
  assert.equal((await client.endpoints.get(ep.id)).payload, "thin");
  const changed = await client.endpoints.update(ep.id, { description: "billing" });
  assert.equal(changed.description, "billing");
  assert.ok((await client.endpoints.list()).some((e) => e.id === ep.id));
  await client.endpoints.delete(ep.id);
  await assert.rejects(client.endpoints.get(ep.id), (e) => e.status === 404);
  await assert.rejects(client.endpoints.create({ url: "ftp://nope" }), (e) => e.status === 422 && e.field === "url");
});
