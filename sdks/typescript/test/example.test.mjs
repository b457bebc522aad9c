// examples/nextjs-receiver's route handler, compiled with the TypeScript
// compiler against this package and served as the webhook receiver of a
// real server: it answers the verification challenge, takes the deliveries,
// and refuses a forged one.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { EventFlow } from "../dist/esm/index.js";
import { startReceiver, startServer, waitFor } from "./helpers.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const example = join(root, "..", "..", "examples", "nextjs-receiver");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

let server;
let client;
let out;
const routeJs = () => join(out, "build", "app", "api", "webhooks", "route.js");

before(async () => {
  server = await startServer();
  client = new EventFlow({ baseUrl: server.baseUrl, apiKey: server.key });
  // Compile the example as Next.js would type-check it (strict), to ES
  // modules that import this package by its name.
  out = mkdtempSync(join(tmpdir(), "eventflow-nextjs-"));
  mkdirSync(join(out, "node_modules", "@eventflow"), { recursive: true });
  symlinkSync(root, join(out, "node_modules", "@eventflow", "sdk"), "dir");
  writeFileSync(join(out, "package.json"), '{"type":"module"}');
  // What @types/node gives a Next.js project, as far as the route uses it.
  writeFileSync(join(out, "node.d.ts"), "declare const process: { env: Record<string, string | undefined> };\n");
  writeFileSync(
    join(out, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        lib: ["ES2022", "DOM"],
        module: "ES2022",
        moduleResolution: "Bundler",
        strict: true,
        types: [],
        rootDir: example,
        outDir: join(out, "build"),
        paths: { "@eventflow/sdk": [join(root, "dist", "esm", "index.d.ts")] },
      },
      files: [join(out, "node.d.ts"), join(example, "app", "api", "webhooks", "route.ts"), join(example, "lib", "handlers.ts")],
    }),
  );
  const built = spawnSync(process.execPath, [tsc, "-p", join(out, "tsconfig.json")], { encoding: "utf8" });
  assert.equal(built.status, 0, built.stdout + built.stderr);
  // Node resolves relative imports with their extension; Next.js's bundler
  // does not need one. Name the compiled files as Node expects.
  const compiled = readFileSync(routeJs(), "utf8");
  writeFileSync(routeJs(), compiled.replace('"../../../lib/handlers"', '"../../../lib/handlers.js"'));
});

after(async () => {
  await server?.stop();
  if (out) rmSync(out, { recursive: true, force: true });
});

test("the Next.js route handler verifies itself, takes deliveries and refuses a forgery", async () => {
  const route = await import(pathToFileURL(routeJs()).href);
  const receiver = await startReceiver((req) => route.POST(req));
  try {
    const endpoint = await client.endpoints.create({ url: receiver.url, disabled: true });
    process.env.WEBHOOK_SECRET = (await client.endpoints.secret(endpoint.id)).secret;
    await client.endpoints.update(endpoint.id, { disabled: false });
    await waitFor("the route to answer the challenge", async () => (await client.endpoints.get(endpoint.id)).verification === "verified");

    const patient = await client.patients.create({ firstName: "Next", lastName: "Route", phone: "+15551230000" });
    const appt = await client.appointments.create({ patientId: patient.id, start: "2030-03-04T09:00:00Z" });
    const answered = await waitFor("both deliveries answered", () => {
      const events = receiver.received.filter((r) => r.status === 200 && JSON.parse(r.body).type !== "endpoint.verification");
      return events.length >= 2 ? events : undefined;
    });
    // Delivered concurrently: in any order.
    assert.deepEqual(answered.map((r) => JSON.parse(r.body).resource.id).sort(), [patient.id, appt.id].sort());
    const deliveries = await waitFor("the server to record both as succeeded", async () => {
      const d = (await client.endpoints.deliveries(endpoint.id)).data;
      return d.filter((x) => x.status === "succeeded").length >= 2 ? d : undefined;
    });
    assert.ok(deliveries.every((d) => d.status === "succeeded"));

    const real = answered[0];
    const forged = new Request("http://localhost/api/webhooks", {
      method: "POST",
      headers: real.headers,
      body: real.body.replace("Route", "Forged"),
    });
    const refused = await route.POST(forged);
    assert.equal(refused.status, 401);
    await client.endpoints.delete(endpoint.id);
  } finally {
    await receiver.close();
  }
});
