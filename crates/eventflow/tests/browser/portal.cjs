// Drives the developer portal in headless Chromium: playwright-core (npm)
// with the system's Chromium (Debian's `chromium`). Run by the Rust test
// `portal::the_portal_works_in_a_real_browser`:
//   node portal.cjs BASE_URL API_KEY HOOK_URL [SCREENSHOT_DIR]
// Prints one JSON line with what it saw; exits non-zero on any failure.
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [base, key, hookUrl, shots] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const shot = async (name) => {
    if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  };

  // Sign in with the API key.
  await page.goto(base + "/portal");
  await page.getByLabel("API key").fill(key);
  await shot("sign-in");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL("**/portal/endpoints");

  // Create an endpoint by ticking event types; the filter is checked as typed.
  await page.getByRole("link", { name: "New endpoint" }).click();
  await page.getByLabel("URL").fill(hookUrl);
  await page.getByLabel("Description").fill("Front desk app");
  await page.getByLabel("all of appointment.*", { exact: true }).check();
  const oneType = page.getByLabel("appointment.updated", { exact: true });
  if (!(await oneType.isChecked())) throw new Error("all of appointment.* did not tick its group");
  await page.getByLabel("patient.created", { exact: true }).check();
  const filter = page.getByLabel("Filter");
  await filter.fill("data.lastName ==");
  await page.getByText("✗", { exact: false }).waitFor();
  await filter.fill("type != 'patient.deleted'");
  await page.getByText("✓ The filter is valid.").waitFor();
  await shot("endpoint-new");
  await page.getByRole("button", { name: "Create endpoint" }).click();
  await page.getByText("Endpoint created.").waitFor();
  const secret1 = (await page.locator("#secret").textContent()).trim();

  // Trigger an event through the API; its delivery and attempt show up.
  const r = await fetch(base + "/v1/patients", {
    method: "POST",
    headers: { authorization: "Bearer " + key, "content-type": "application/json" },
    body: JSON.stringify({ firstName: "Ada", lastName: "Lovelace", phone: "+15551230001" }),
  });
  if (r.status !== 201) throw new Error("creating a patient: " + r.status);
  for (let i = 0; i < 200; i++) {
    await page.reload();
    if ((await page.locator(".delivery .badge.succeeded").count()) > 0) break;
    await page.waitForTimeout(100);
  }
  await page.locator(".delivery summary").first().click();
  const code = (await page.locator(".attempt .code").first().textContent()).trim();
  await shot("endpoint-detail");

  // Rotate the secret.
  await page.getByRole("button", { name: "Rotate secret" }).click();
  await page.getByText("Secret rotated").waitFor();
  const secret2 = (await page.locator("#secret").textContent()).trim();

  // Replay from the start of the log.
  await page.getByLabel("After sequence").fill("0");
  await page.getByRole("button", { name: "Replay" }).click();
  await page.getByText("events queued again").waitFor();
  const replayed = (await page.locator(".notice").textContent()).trim();

  // Edit and delete (the confirmation page; cancelled).
  await page.getByRole("link", { name: "Edit", exact: true }).click();
  await page.getByRole("heading", { name: "Edit endpoint" }).waitFor();
  await shot("endpoint-edit");
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.getByRole("link", { name: "Delete…" }).click();
  await page.getByRole("heading", { name: "Delete endpoint?" }).waitFor();
  await shot("endpoint-delete");
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.getByRole("heading", { name: "Settings" }).waitFor();

  // The other pages.
  await page.getByRole("link", { name: "Endpoints", exact: true }).click();
  await page.locator("td .badge").first().waitFor();
  await shot("endpoints");
  await page.getByRole("link", { name: "Events", exact: true }).click();
  await shot("events");
  await page.getByRole("link", { name: "patient.created" }).first().click();
  await page.getByRole("heading", { name: "Delivered to" }).waitFor();
  await shot("event");
  await page.getByRole("link", { name: "Automations", exact: true }).click();
  await page.getByRole("heading", { name: "Workflows" }).waitFor();
  await shot("automations");

  // Keyboard: the first Tab reaches the skip link; it leads to the content.
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  // A phone-sized screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("link", { name: "Endpoints", exact: true }).click();
  await shot("endpoints-phone");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);

  await browser.close();
  console.log(JSON.stringify({ code, rotated: secret1 !== secret2 && secret2.startsWith("whsec_"), replayed, focused, overflow, errors }));
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
