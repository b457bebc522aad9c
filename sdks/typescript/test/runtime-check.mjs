// Run by test/runtimes.test.mjs under Node, Bun and Deno: the package's
// webhook checks with nothing but the runtime's own Request, Response and
// Web Crypto. Prints "ok", or throws.
import { CHALLENGE_TYPE, handleWebhook, verifyWebhook } from "../dist/esm/index.js";

const fail = (what) => {
  throw new Error(what);
};
const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));

// The Standard Webhooks specification's published example, through a
// whole route: a Request in, a Response out.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const headers = {
  "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
  "webhook-timestamp": "1614265330",
  "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};
const exampleBody = '{"test": 2432232314}';
const verify = (body, key, now = 1614265330) => verifyWebhook({ headers, body }, key, { now });
await verify(exampleBody.replace("2432232314", "2432232315"), secret).then(
  () => fail("a changed body verified"),
  (e) => e.reason === "no_match" || fail(`changed body: ${e.reason}`),
);
// The example's body is no event: verified, then refused as a body.
await verify(exampleBody, secret).then(
  () => fail("the example is no event"),
  (e) => e.reason === "bad_body" || fail(`example: ${e.reason}`),
);

// HMAC over a real event body, signed here with Web Crypto.
const now = Math.floor(Date.now() / 1000);
const raw = crypto.getRandomValues(new Uint8Array(32));
const hmacSecret = `whsec_${b64(raw)}`;
const event = JSON.stringify({ id: "evt_1", type: "patient.created", topics: [], data: { firstName: "Ada" } });
const hmacKey = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
const signed = new TextEncoder().encode(`evt_1.${now}.${event}`);
const hmac = await crypto.subtle.sign("HMAC", hmacKey, signed);
const request = (body, signature) =>
  new Request("http://localhost/api/webhooks", {
    method: "POST",
    headers: { "webhook-id": "evt_1", "webhook-timestamp": String(now), "webhook-signature": signature },
    body,
  });
let seen;
const answer = await handleWebhook(request(event, `v1,${b64(hmac)}`), hmacSecret, (e) => {
  seen = e.type;
});
if (answer.status !== 200 || seen !== "patient.created") fail(`hmac: ${answer.status} ${seen}`);
const forged = await handleWebhook(request(event.replace("Ada", "Eve"), `v1,${b64(hmac)}`), hmacSecret, () => fail("forged"));
if (forged.status !== 401) fail(`forged: ${forged.status}`);

// Ed25519 (v1a) with a key pair made here.
const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
const publicKey = `whpk_${b64(await crypto.subtle.exportKey("raw", pair.publicKey))}`;
const ed = await crypto.subtle.sign({ name: "Ed25519" }, pair.privateKey, signed);
const fromEd = await verifyWebhook(
  { headers: { "webhook-id": "evt_1", "webhook-timestamp": String(now), "webhook-signature": `v1a,${b64(ed)}` }, body: event },
  publicKey,
);
if (fromEd.type !== "patient.created") fail("ed25519");

// A challenge is answered with its challenge.
const challenge = JSON.stringify({ type: CHALLENGE_TYPE, endpointId: "ep_1", challenge: "c4f1" });
const cSig = await crypto.subtle.sign("HMAC", hmacKey, new TextEncoder().encode(`evt_1.${now}.${challenge}`));
const cAnswer = await handleWebhook(request(challenge, `v1,${b64(cSig)}`), hmacSecret, () => fail("handler saw a challenge"));
const cBody = await cAnswer.json();
if (cAnswer.status !== 200 || cBody.challenge !== "c4f1") fail(`challenge: ${JSON.stringify(cBody)}`);

console.log("ok");
