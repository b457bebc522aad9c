// The event log through the client: a page, a long poll, and a stream that
// resumes by itself across a server restart, missing and repeating nothing.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { EventFlow } from "../dist/esm/index.js";
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

/** The last sequence so far (other test files' servers may have written to the same database). */
async function end() {
  let after = 0;
  for (;;) {
    const page = await client.events.list({ after, limit: 1000 });
    if (page.data.length === 0) return after;
    after = page.nextAfter;
  }
}

test("events.list pages by sequence, and a long poll returns the moment an event commits", async () => {
  const from = await end();
  const p = await client.patients.create({ firstName: "Poll", lastName: "One" });
  const page = await client.events.list({ after: from, types: ["patient.*"] });
  const mine = page.data.find((e) => e.resource.id === p.id);
  assert.equal(mine.type, "patient.created");
  assert.ok(page.nextAfter >= mine.sequence);
  const waiting = client.events.list({ after: page.nextAfter, wait: 30 });
  const q = await client.patients.create({ firstName: "Poll", lastName: "Two" });
  const next = await waiting;
  assert.equal(next.data[0].resource.id, q.id);
});

test("the stream resumes after a server restart: every event once, in order", async () => {
  const controller = new AbortController();
  const start = await end();
  const disconnects = [];
  const stream = client.events
    .stream({
      after: start,
      types: ["patient.*"],
      signal: controller.signal,
      reconnectDelayMs: 50,
      onDisconnect: (why) => disconnects.push(why),
    })
    [Symbol.asyncIterator]();
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await client.patients.create({ firstName: "Stream", lastName: `Before${i}` })).id);
  const seen = [];
  for (let i = 0; i < 3; i++) seen.push((await stream.next()).value);
  assert.deepEqual(seen.map((e) => e.resource.id), ids);

  await server.restart();
  for (let i = 0; i < 3; i++) ids.push((await client.patients.create({ firstName: "Stream", lastName: `After${i}` })).id);
  for (let i = 0; i < 3; i++) seen.push((await stream.next()).value);
  assert.deepEqual(seen.map((e) => e.resource.id), ids, "nothing missed, nothing repeated");
  assert.ok(disconnects.length >= 1, "the restart was a disconnection");
  const sequences = seen.map((e) => e.sequence);
  assert.deepEqual([...sequences].sort((a, b) => a - b), sequences, "in sequence order");
  controller.abort();
  assert.equal((await stream.next()).done, true, "aborting ends the stream");
});

test("a stream that cannot connect gives up after maxReconnects, with the reason", async () => {
  const nowhere = new EventFlow({ baseUrl: "http://127.0.0.1:9", apiKey: server.key });
  let told = 0;
  await assert.rejects(
    (async () => {
      for await (const e of nowhere.events.stream({ maxReconnects: 2, reconnectDelayMs: 10, onDisconnect: () => (told += 1) })) void e;
    })(),
    (e) => e.type === "network_error",
  );
  assert.equal(told, 3);
});

test("stream options that are no numbers are refused before anything is sent", async () => {
  for (const options of [{ reconnectDelayMs: Number.NaN }, { reconnectDelayMs: -1 }, { maxReconnects: -1 }, { maxReconnects: 1.5 }]) {
    await assert.rejects(
      (async () => {
        for await (const e of client.events.stream(options)) void e;
      })(),
      TypeError,
      JSON.stringify(options),
    );
  }
});

test("a stream the server refuses throws its error", async () => {
  const stranger = new EventFlow({ baseUrl: server.baseUrl, apiKey: "efk_not-a-key-of-this-server-0123456789ab" });
  await assert.rejects(
    (async () => {
      for await (const e of stranger.events.stream()) void e;
    })(),
    (e) => e.status === 401 && e.type === "authentication_error",
  );
});
