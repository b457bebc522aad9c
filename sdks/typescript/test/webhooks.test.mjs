// Real deliveries from a real server, checked by the SDK: HMAC and Ed25519,
// both header schemes, rotation, forged, stale and wrong-key requests, and
// interoperability with npm's `standardwebhooks`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import {
  EventFlow,
  WebhookVerificationError,
  challengeResponse,
  handleWebhook,
  hasTopic,
  verifyWebhook,
} from "../dist/esm/index.js";
import { startReceiver, startServer, waitFor } from "./helpers.mjs";

let server;
let client;
const receivers = [];

before(async () => {
  server = await startServer();
  client = new EventFlow({ baseUrl: server.baseUrl, apiKey: server.key });
});

const endpoints = [];

after(async () => {
  // Other test files' servers may share this database: leave no endpoint
  // delivering to a closed port.
  for (const id of endpoints) await client.endpoints.delete(id).catch(() => undefined);
  for (const r of receivers) await r.close();
  await server?.stop();
});

/**
 * An endpoint whose receiver runs the SDK's `handleWebhook` with the
 * endpoint's own key: it answers the verification challenge by itself. The
 * key is known only once the endpoint exists, so it is created disabled and
 * enabled once the receiver has it.
 */
async function verifiedEndpoint(input) {
  const keys = [];
  const receiver = await startReceiver((req) =>
    keys.length ? handleWebhook(req, keys, () => undefined) : new Response("not yet", { status: 503 }),
  );
  receivers.push(receiver);
  const endpoint = await client.endpoints.create({ url: receiver.url, disabled: true, ...input });
  endpoints.push(endpoint.id);
  assert.equal(endpoint.verification, "pending");
  const secret = await client.endpoints.secret(endpoint.id);
  keys.push(secret.secret ?? secret.publicKey);
  await client.endpoints.update(endpoint.id, { disabled: false });
  await waitFor("the endpoint to be verified by handleWebhook's answer", async () => {
    const e = await client.endpoints.get(endpoint.id);
    return e.verification === "verified";
  });
  return { endpoint, receiver, keys };
}

/** The first request the receiver got with an event of `type` about `id`. */
function deliveryOf(receiver, type, id) {
  return waitFor(`a ${type} delivery`, () =>
    receiver.received.find((r) => {
      try {
        const b = JSON.parse(r.body);
        return b.type === type && b.resource?.id === id && r.status === 200;
      } catch {
        return false;
      }
    }),
  );
}

function withoutHeaders(headers, names) {
  const h = new Headers(headers);
  for (const n of names) h.delete(n);
  return h;
}

test("an HMAC endpoint's real deliveries verify, by either header scheme, and come back typed", async () => {
  const { endpoint, receiver, keys } = await verifiedEndpoint({ eventTypes: ["patient.*", "appointment.*"] });
  const challenge = receiver.received.find((r) => JSON.parse(r.body).type === "endpoint.verification");
  assert.ok(challenge, "the challenge reached the receiver");
  assert.equal(challenge.status, 200);
  assert.equal(JSON.parse(challenge.body).endpointId, endpoint.id);

  const patient = await client.patients.create({ firstName: "Ada", lastName: "Lovelace", phone: "+15551234567" });
  const got = await deliveryOf(receiver, "patient.created", patient.id);
  assert.match(got.headers.get("webhook-signature"), /^v1,/);
  assert.match(got.headers.get("x-clinikapi-signature"), /^t=[0-9]+,v1=[0-9a-f]{64}$/);

  const event = await verifyWebhook({ headers: got.headers, body: got.body }, keys[0]);
  assert.equal(event.type, "patient.created");
  assert.equal(event.data.firstName, "Ada");
  assert.equal(event.resource.id, patient.id);

  // Standard Webhooks headers alone, and x-clinikapi-signature alone.
  const sw = await verifyWebhook(
    { headers: withoutHeaders(got.headers, ["x-clinikapi-signature"]), body: got.body },
    keys[0],
  );
  assert.equal(sw.id, event.id);
  const clinik = await verifyWebhook(
    { headers: withoutHeaders(got.headers, ["webhook-id", "webhook-timestamp", "webhook-signature"]), body: got.body },
    keys[0],
  );
  assert.equal(clinik.id, event.id);
  // Headers as a plain object (Express, node:http) and the body as bytes.
  const plain = await verifyWebhook(
    { headers: Object.fromEntries(got.headers), body: new TextEncoder().encode(got.body) },
    keys[0],
  );
  assert.equal(plain.id, event.id);

  // A topic narrows the event.
  const appt = await client.appointments.create({ patientId: patient.id, start: "2030-01-02T10:00:00Z" });
  const booked = await deliveryOf(receiver, "appointment.created", appt.id);
  const e = await verifyWebhook({ headers: booked.headers, body: booked.body }, keys);
  assert.ok(hasTopic(e, "appointment.booked"));
  assert.equal(hasTopic(e, "appointment.cancelled"), false);
});

test("an Ed25519 endpoint's deliveries verify with its whpk_ public key", async () => {
  const { receiver, keys } = await verifiedEndpoint({ signing: "ed25519", eventTypes: ["patient.*"] });
  assert.match(keys[0], /^whpk_/);
  const patient = await client.patients.create({ firstName: "Grace", lastName: "Hopper" });
  const got = await deliveryOf(receiver, "patient.created", patient.id);
  assert.match(got.headers.get("webhook-signature"), /^v1a,/);
  assert.equal(got.headers.get("x-clinikapi-signature"), null);
  const event = await verifyWebhook({ headers: got.headers, body: got.body }, keys[0]);
  assert.equal(event.data.lastName, "Hopper");
  // A forged body fails the Ed25519 check too.
  await assert.rejects(
    verifyWebhook({ headers: got.headers, body: got.body.replace("Hopper", "Hoppen") }, keys[0]),
    (e) => e instanceof WebhookVerificationError && e.reason === "no_match",
  );
});

test("forged, stale, wrong-key and unsigned requests are refused, and handleWebhook answers them 401", async () => {
  const { receiver, keys } = await verifiedEndpoint({ eventTypes: ["patient.*"] });
  const patient = await client.patients.create({ firstName: "Mary", lastName: "Seacole" });
  const got = await deliveryOf(receiver, "patient.created", patient.id);
  const ts = Number(got.headers.get("webhook-timestamp"));
  const refused = (reason) => (e) => {
    assert.ok(e instanceof WebhookVerificationError, String(e));
    assert.equal(e.reason, reason);
    return true;
  };

  const forged = got.body.replace("Seacole", "Nightingale");
  await assert.rejects(verifyWebhook({ headers: got.headers, body: forged }, keys[0]), refused("no_match"));
  await assert.rejects(
    verifyWebhook(
      { headers: withoutHeaders(got.headers, ["webhook-signature"]), body: forged },
      keys[0],
    ),
    refused("no_match"),
  );
  // Stale: more than the tolerance after it was signed (or before).
  await assert.rejects(
    verifyWebhook({ headers: got.headers, body: got.body }, keys[0], { now: ts + 301 }),
    refused("outside_tolerance"),
  );
  await assert.rejects(
    verifyWebhook({ headers: got.headers, body: got.body }, keys[0], { now: ts - 301 }),
    refused("outside_tolerance"),
  );
  await verifyWebhook({ headers: got.headers, body: got.body }, keys[0], { now: ts + 3_000, toleranceSeconds: 3_600 });
  // Another endpoint's secret.
  await assert.rejects(
    verifyWebhook({ headers: got.headers, body: got.body }, "whsec_" + Buffer.alloc(32, 7).toString("base64")),
    refused("no_match"),
  );
  // No signature headers at all; a timestamp that is no number.
  await assert.rejects(verifyWebhook({ headers: {}, body: got.body }, keys[0]), refused("missing_headers"));
  const badTs = new Headers(got.headers);
  badTs.set("webhook-timestamp", "soon");
  await assert.rejects(verifyWebhook({ headers: badTs, body: got.body }, keys[0]), refused("bad_timestamp"));
  // A key that is no key is the caller's mistake, not the request's.
  await assert.rejects(verifyWebhook({ headers: got.headers, body: got.body }, "hunter2"), refused("bad_secret"));

  const forgedRequest = new Request("http://x/api/webhooks", { method: "POST", headers: got.headers, body: forged });
  let called = false;
  const answer = await handleWebhook(forgedRequest, keys, () => {
    called = true;
  });
  assert.equal(answer.status, 401);
  assert.equal(called, false, "the handler never sees a forged event");
});

test("during a secret rotation both secrets sign, and either one verifies", async () => {
  const { endpoint, receiver, keys } = await verifiedEndpoint({ eventTypes: ["patient.*"] });
  const rotated = await client.endpoints.rotateSecret(endpoint.id);
  const fresh = rotated.secret;
  assert.match(fresh, /^whsec_/);
  assert.notEqual(fresh, keys[0]);
  keys.push(fresh);
  const patient = await client.patients.create({ firstName: "Rosalind", lastName: "Franklin" });
  const got = await deliveryOf(receiver, "patient.created", patient.id);
  assert.equal(got.headers.get("webhook-signature").split(" ").length, 2);
  for (const key of [keys[0], fresh, [fresh, keys[0]]]) {
    const e = await verifyWebhook({ headers: got.headers, body: got.body }, key);
    assert.equal(e.resource.id, patient.id);
    const c = await verifyWebhook(
      { headers: withoutHeaders(got.headers, ["webhook-signature"]), body: got.body },
      key,
    );
    assert.equal(c.resource.id, patient.id);
  }
});

test("signatures interoperate with npm's standardwebhooks, both ways", async () => {
  const { receiver, keys } = await verifiedEndpoint({ eventTypes: ["patient.*"] });
  const patient = await client.patients.create({ firstName: "Alan", lastName: "Turing" });
  const got = await deliveryOf(receiver, "patient.created", patient.id);
  // The server's delivery passes the reference library.
  const wh = new Webhook(keys[0]);
  const verified = wh.verify(got.body, Object.fromEntries(got.headers));
  assert.equal(verified.resource.id, patient.id);
  assert.throws(() => wh.verify(got.body.replace("Turing", "Turin"), Object.fromEntries(got.headers)));
  // And what the reference library signs, the SDK accepts.
  const body = JSON.stringify({ id: "evt_1", type: "patient.deleted", data: {} });
  const at = new Date();
  const signature = wh.sign("msg_1", at, body);
  const headers = {
    "webhook-id": "msg_1",
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": signature,
  };
  const e = await verifyWebhook({ headers, body }, keys[0]);
  assert.equal(e.type, "patient.deleted");
});

test("a verification challenge is answered with its challenge, and nothing else is", async () => {
  const challenge = { type: "endpoint.verification", endpointId: "ep_1", challenge: "c4f1" };
  const answer = challengeResponse(challenge);
  assert.equal(answer.status, 200);
  assert.deepEqual(await answer.json(), { challenge: "c4f1" });
  assert.equal(challengeResponse({ type: "patient.created", topics: [] }), null);
  // A signed challenge without a string challenge never reaches the handler.
  const secret = "whsec_" + Buffer.alloc(32, 3).toString("base64");
  const body = JSON.stringify({ type: "endpoint.verification", endpointId: "ep_1", challenge: 7 });
  const at = new Date();
  const req = new Request("http://x/", {
    method: "POST",
    headers: {
      "webhook-id": "msg_1",
      "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
      "webhook-signature": new Webhook(secret).sign("msg_1", at, body),
    },
    body,
  });
  let called = false;
  const res = await handleWebhook(req, secret, () => {
    called = true;
  });
  assert.equal(res.status, 400);
  assert.equal(called, false);
});

test("header shapes: Headers, objects, arrays, Maps, repeated headers; options and keys that are no keys", async () => {
  const secret = "whsec_" + Buffer.alloc(32, 5).toString("base64");
  const other = "whsec_" + Buffer.alloc(32, 6).toString("base64");
  const wh = new Webhook(secret);
  const body = JSON.stringify({ id: "evt_9", type: "patient.created", topics: [] });
  const at = new Date();
  const ts = String(Math.floor(at.getTime() / 1000));
  const good = wh.sign("msg_9", at, body);
  const bad = new Webhook(other).sign("msg_9", at, body);
  const base = { "Webhook-Id": "msg_9", "Webhook-Timestamp": ts };
  const ok = async (headers) => assert.equal((await verifyWebhook({ headers, body }, secret)).id, "evt_9");
  await ok({ ...base, "Webhook-Signature": good });
  await ok(new Map(Object.entries({ ...base, "Webhook-Signature": good })));
  await ok(Object.entries({ ...base, "Webhook-Signature": good }));
  // The header sent twice: node:http gives an array, a proxy may join them with ", ".
  await ok({ ...base, "webhook-signature": [bad, good] });
  await ok({ ...base, "webhook-signature": `${good}, ${bad}` });
  await ok(new Headers([...Object.entries(base), ["webhook-signature", bad], ["webhook-signature", good]]));
  await assert.rejects(
    verifyWebhook({ headers: { ...base, "webhook-signature": `${bad} ${bad}` }, body }, secret),
    (e) => e.reason === "no_match",
  );
  // A tolerance or a clock that is no number is the caller's mistake, never "any time will do".
  for (const options of [{ toleranceSeconds: Number(undefined) }, { now: Number.NaN }, { toleranceSeconds: -1 }, { toleranceSeconds: Infinity }]) {
    await assert.rejects(
      verifyWebhook({ headers: { ...base, "webhook-signature": good }, body }, secret, options),
      (e) => e instanceof WebhookVerificationError && e.reason === "bad_options",
      JSON.stringify(options),
    );
  }
  // A secret that is not set (an environment variable missing) or is no key.
  for (const key of [undefined, [undefined], [], "", "whsec_!!", "whpk_" + Buffer.alloc(31).toString("base64")]) {
    await assert.rejects(
      verifyWebhook({ headers: { ...base, "webhook-signature": good }, body }, key),
      (e) => e instanceof WebhookVerificationError && e.reason === "bad_secret",
      String(key),
    );
  }
  // No headers at all.
  await assert.rejects(verifyWebhook({ headers: null, body }, secret), (e) => e.reason === "missing_headers");
});
