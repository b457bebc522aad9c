// The package itself: both builds load with the same exports, it has no
// runtime dependencies, the generated types are fresh, and the typings
// catch misspelt event types and fields at compile time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esm from "../dist/esm/index.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const tsc = require.resolve("typescript/bin/tsc");

test("the ES module and CommonJS builds load, with the same exports", () => {
  const cjs = require("../dist/cjs/index.js");
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  for (const name of ["EventFlow", "EventFlowError", "verifyWebhook", "handleWebhook", "challengeResponse", "hasTopic"]) {
    assert.equal(typeof esm[name], "function", name);
  }
  // By name, through the package's exports map: `require` takes the
  // CommonJS build, `import` the ES module build.
  const dir = mkdtempSync(join(tmpdir(), "eventflow-sdk-pkg-"));
  try {
    mkdirSync(join(dir, "node_modules", "@eventflow"), { recursive: true });
    symlinkSync(root, join(dir, "node_modules", "@eventflow", "sdk"), "dir");
    const run = (code, type) =>
      spawnSync(process.execPath, ["--input-type", type, "-e", code], { cwd: dir, encoding: "utf8" });
    const viaRequire = run("console.log(require.resolve('@eventflow/sdk'), typeof require('@eventflow/sdk').verifyWebhook)", "commonjs");
    assert.match(viaRequire.stdout, /dist\/cjs\/index\.js function/, viaRequire.stderr);
    const viaImport = run("const m = await import('@eventflow/sdk'); console.log(import.meta.resolve('@eventflow/sdk'), typeof m.EventFlow)", "module");
    assert.match(viaImport.stdout, /dist\/esm\/index\.js function/, viaImport.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the package has no runtime dependencies", () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  // Nothing in the build imports a module but its own files (and node:crypto
  // on Node 18, only when the Web Crypto global is missing).
  for (const file of ["index.js", "client.js", "webhooks.js", "generated.js", "topics.js"]) {
    const text = readFileSync(join(root, "dist", "esm", file), "utf8");
    for (const m of text.matchAll(/from\s+"([^"]+)"|import\(\s*"([^"]+)"/g)) {
      const spec = m[1] ?? m[2];
      assert.ok(spec.startsWith("./") || spec === "node:crypto", `${file} imports ${spec}`);
    }
  }
});

test("without the Web Crypto global (Node 18), verification takes node:crypto's", () => {
  // The Standard Webhooks specification's published example.
  const code = `
    Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true });
    const { verifyWebhook } = await import(${JSON.stringify(join(root, "dist", "esm", "index.js"))});
    const headers = {
      "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
      "webhook-timestamp": "1614265330",
      "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    };
    const body = '{"test": 2432232314}';
    const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    await verifyWebhook({ headers, body: body.replace("2432232314", '"x"') }, secret, { now: 1614265330 })
      .then(() => { throw new Error("a changed body verified"); }, () => {});
    try { await verifyWebhook({ headers, body }, secret, { now: 1614265330 }); } catch (e) { if (e.reason !== "bad_body") throw e; }
    console.log(typeof globalThis.crypto, "verified");
  `;
  const r = spawnSync(process.execPath, ["--input-type", "module", "-e", code], { encoding: "utf8" });
  assert.equal(r.stdout.trim(), "undefined verified", r.stderr);
});

test("npm pack ships the builds, the README and package.json only", () => {
  const packed = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: root, encoding: "utf8" });
  assert.equal(packed.status, 0, packed.stderr);
  const [info] = JSON.parse(packed.stdout);
  const files = info.files.map((f) => f.path).sort();
  for (const f of files) assert.match(f, /^(dist\/(esm|cjs)\/[a-z]+\.(js|d\.ts)|dist\/cjs\/package\.json|README\.md|package\.json)$/, f);
  for (const f of ["dist/esm/index.js", "dist/esm/index.d.ts", "dist/cjs/index.js", "dist/cjs/index.d.ts", "README.md"]) {
    assert.ok(files.includes(f), f);
  }
  assert.ok(info.size < 100_000, `packed size ${info.size}`);
});

test("src/generated.ts is what the server's schemas make, and a change to them makes it stale", () => {
  execFileSync(process.execPath, [join(root, "scripts", "generate.mjs"), "--check"], { cwd: root });
  const doc = JSON.parse(readFileSync(join(root, "..", "..", "docs", "openapi.json"), "utf8"));
  delete doc.webhooks["lab.deleted"];
  const dir = mkdtempSync(join(tmpdir(), "eventflow-sdk-gen-"));
  try {
    writeFileSync(join(dir, "openapi.json"), JSON.stringify(doc));
    const stale = spawnSync(process.execPath, [join(root, "scripts", "generate.mjs"), "--check", "--from", join(dir, "openapi.json")], {
      cwd: root,
      encoding: "utf8",
    });
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /stale/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the typings refuse a misspelt event type, field, topic or collection", () => {
  const typesDir = join(root, "test", "types");
  // Every `@ts-expect-error` meets its error: the file compiles.
  const ok = spawnSync(process.execPath, [tsc, "-p", join(typesDir, "tsconfig.json")], { encoding: "utf8" });
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  // Without the markers, the compiler names each mistake.
  const source = readFileSync(join(typesDir, "misspelt.ts"), "utf8").replace(/\/\/ @ts-expect-error.*\n/g, "\n");
  const dir = mkdtempSync(join(tmpdir(), "eventflow-sdk-types-"));
  const stripped = join(dir, "misspelt.ts");
  const config = join(dir, "tsconfig.json");
  writeFileSync(stripped, source);
  const base = JSON.parse(readFileSync(join(typesDir, "tsconfig.json"), "utf8"));
  base.compilerOptions.paths = { "@eventflow/sdk": [join(root, "dist", "esm", "index.d.ts")] };
  base.files = [stripped];
  writeFileSync(config, JSON.stringify(base));
  try {
    const bad = spawnSync(process.execPath, [tsc, "-p", config], { encoding: "utf8" });
    assert.notEqual(bad.status, 0);
    const out = bad.stdout;
    assert.match(out, /'"appointment\.craeted"' is not comparable/);
    assert.match(out, /firstNmae/);
    assert.match(out, /"appointment\.canceled"/);
    assert.match(out, /strat/);
    assert.match(out, /lastName/);
    assert.match(out, /appointmnets/);
    assert.equal((out.match(/error TS/g) ?? []).length, 6, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
