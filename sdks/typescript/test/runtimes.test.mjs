// The package on the runtimes it is made for, beyond Node: Bun and Deno
// (installed from npm as development dependencies) run test/runtime-check.mjs,
// webhook checks on their own Request, Response and Web Crypto.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = join(root, "test", "runtime-check.mjs");
const bin = (name) => join(root, "node_modules", ".bin", name);

for (const [runtime, command, args] of [
  ["Node", process.execPath, [check]],
  ["Bun", bin("bun"), ["run", check]],
  ["Deno", bin("deno"), ["run", "--no-prompt", check]],
]) {
  test(`${runtime} verifies webhooks and answers challenges with the package`, () => {
    const r = spawnSync(command, args, {
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    });
    assert.equal(r.error, undefined, `${runtime} runs`);
    assert.equal(r.stdout.trim(), "ok", `${runtime}: ${r.stderr}`);
  });
}
