// What the tests share: a real Event Flow server in its own process, a
// webhook receiver on node:http that hands each request to a Fetch API
// handler, and a bounded wait.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";

export const KEY = "efk_sdk-test-key-0123456789abcdefghijklmnop";

/**
 * Waits until `check` returns something other than undefined/false/null,
 * polling every 20 ms, at most `ms`. `what` may be a function, called for
 * the message only when the wait fails.
 */
export async function waitFor(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "function" ? what() : what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function freePort() {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * `eventflow serve` on a free port, with a fresh data directory and, when
 * EVENTFLOW_SDK_TEST_DATABASE_URL is set, that PostgreSQL database. `restart()`
 * stops it and starts it again on the same port and data.
 */
export async function startServer() {
  const bin = process.env.EVENTFLOW_BIN;
  if (!bin) throw new Error("EVENTFLOW_BIN must name the eventflow binary");
  const dir = mkdtempSync(join(tmpdir(), "eventflow-sdk-"));
  const port = await freePort();
  const database = process.env.EVENTFLOW_SDK_TEST_DATABASE_URL || "";
  const baseUrl = `http://127.0.0.1:${port}`;
  let child;
  let output = "";
  const up = async () => {
    const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dir];
    if (database) args.push("--database", database);
    const env = { ...process.env, EVENTFLOW_BOOTSTRAP_API_KEY: KEY };
    delete env.EVENTFLOW_DATABASE_URL;
    child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    await waitFor(
      () => `the server to answer /readyz; it said: ${output.slice(-2000)}`,
      async () => {
        try {
          return (await fetch(`${baseUrl}/readyz`)).ok;
        } catch {
          return false;
        }
      },
      30_000,
    );
  };
  const down = async () => {
    if (!child || child.exitCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    await exited;
  };
  await up();
  return {
    baseUrl,
    key: KEY,
    /** Runs `eventflow ARGS` on this server's data; returns its standard output. */
    cli: (...args) => {
      const full = [...args, "--data-dir", dir];
      if (database) full.push("--database", database);
      const r = spawnSync(bin, full, { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`eventflow ${args.join(" ")}: ${r.stderr}`);
      return r.stdout.trim();
    },
    restart: async () => {
      await down();
      await up();
    },
    stop: async () => {
      await down();
      rmSync(dir, { recursive: true, force: true });
    },
    output: () => output,
  };
}

/**
 * A webhook receiver: every request (method, headers, raw body) is kept, and
 * answered by `handler(request: Request) => Response`, which the test can
 * swap.
 */
export async function startReceiver(handler) {
  const received = [];
  const state = { handler };
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
    }
    const request = new Request(`http://127.0.0.1${req.url}`, {
      method: req.method,
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });
    const entry = { headers, body: body.toString("utf8"), status: 0 };
    received.push(entry);
    let response;
    try {
      response = await state.handler(request);
    } catch (e) {
      response = new Response(String(e), { status: 500 });
    }
    entry.status = response.status;
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}/api/webhooks`,
    received,
    setHandler: (h) => (state.handler = h),
    close: () => new Promise((r) => server.close(r)),
  };
}
