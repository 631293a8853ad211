// End-to-end test of the feedgate dashboard in a real headless Chromium,
// against a real gateway with its sandbox broker. Started by e2e_test.go
// (go test ./client/web -run TestE2E), which passes:
//
//   FEEDGATE_URL          the gateway, serving the dashboard at /
//   FEEDGATE_SANDBOX_URL  the sandbox broker (control API)
//   FEEDGATE_API_KEY      a plain user's API key
//   FEEDGATE_ADMIN_KEY    an admin's API key (optional: the admin step)
//   FEEDGATE_E2E_OUT      where screenshots go (e.g. out/e2e)
//   CHROMIUM              the browser (default /usr/bin/chromium)
//
// Steps: sign in, connect the sandbox Upstox account "alice" through the real
// redirect chain, load the option chain (ATM row), stream live ticks, revoke
// alice at the sandbox, see the reconnect prompt, check that nothing retries
// in a loop, reconnect with one click and see ticks again; then the admin's
// token-health page. A screenshot per step, desktop and phone width.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = need("FEEDGATE_URL").replace(/\/$/, "");
const sandbox = need("FEEDGATE_SANDBOX_URL").replace(/\/$/, "");
const apiKey = need("FEEDGATE_API_KEY");
const adminKey = process.env.FEEDGATE_ADMIN_KEY ?? "";
const outDir = process.env.FEEDGATE_E2E_OUT || "out/e2e";
const ACCOUNT = "alice";
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`e2e: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

mkdirSync(outDir, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "feedgate-e2e-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: DESKTOP,
  deviceScaleFactor: 1,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
context.setDefaultTimeout(15_000);
const page = context.pages()[0] ?? (await context.newPage());

// Network and console log.
const requests = []; // {at, method, url, path}
const navigations = []; // main-frame URLs, in order
const problems = []; // page errors, CSP violations, console errors
page.on("request", (r) => {
  const u = new URL(r.url());
  requests.push({ at: Date.now(), method: r.method(), url: r.url(), path: u.pathname });
});
page.on("framenavigated", (f) => {
  if (f === page.mainFrame()) navigations.push({ at: Date.now(), url: f.url() });
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error") {
    const text = m.text();
    // A stream the app aborted on purpose can log a network error; those are fine.
    if (/Content Security Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
    else console.log(`  browser console error: ${text}`);
  }
});

const rpc = (method) => requests.filter((r) => r.path.endsWith(`/${method}`));
let shot = 0;
async function screenshot(name, { phone = false, fullPage = false } = {}) {
  const file = join(outDir, `${String(++shot).padStart(2, "0")}-${name}${phone ? "-phone" : ""}.png`);
  if (phone) await page.setViewportSize(PHONE);
  await page.waitForTimeout(250); // let layout and animations settle
  await page.screenshot({ path: file, fullPage });
  if (phone) await page.setViewportSize(DESKTOP);
  log(`screenshot ${file}`);
}
const tid = (id) => page.locator(`[data-testid="${id}"]`);
async function tickCount() {
  return Number((await tid("tick-count").getAttribute("data-count")) ?? "0");
}
async function waitTicks(min, timeout = 20_000) {
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="tick-count"]')?.getAttribute("data-count") ?? 0) >= n,
    min,
    { timeout },
  );
}

// Resolves when the browser is back on the dashboard from a broker login.
function backFromLogin() {
  return page.waitForEvent("framenavigated", {
    predicate: (f) => f === page.mainFrame() && f.url().startsWith(base) && /connected=upstox|login_error=/.test(f.url()),
    timeout: 20_000,
  });
}

let failed = false;
try {
  // 1. Sign in.
  log("sign in");
  await page.goto(`${base}/`);
  await page.waitForURL(/#\/signin/);
  await tid("api-key").waitFor();
  await screenshot("signin");
  await screenshot("signin", { phone: true });
  await tid("api-key").fill(apiKey);
  await tid("sign-in").click();
  await page.waitForURL(/#\/auth/);
  await page.locator('[data-testid="broker-card-upstox"][data-state="disconnected"]').waitFor();
  await page.locator('[data-testid="watch-status"][data-state="live"]').waitFor();
  check(await tid("nav-admin").isHidden(), "the token-health link is hidden for a non-admin key");
  // Demo mode: the sandbox serves both brokers, and the page says so on
  // each broker's card and in the status strip.
  for (const b of ["upstox", "fyers"]) {
    await page.locator(`[data-testid="broker-card-${b}"] [data-testid="sandbox-badge-${b}"]`).waitFor();
    await page.locator(`[data-testid="banner-${b}"] [data-testid="sandbox-badge-${b}"]`).waitFor();
  }
  await screenshot("connections-before");

  // 2a. A callback this browser did not ask for (a forged or CSRF login)
  // attaches nothing and says so on a page of its own.
  log("a callback not started in this browser is refused");
  const cbRes = await page.goto(`${base}/oauth/upstox/callback?code=forged&state=forged`);
  check(cbRes.status() === 403, `the unbound callback answered ${cbRes.status()}, want 403`);
  check(/did not connect any\s+Upstox\s+account/.test(await page.textContent("body")), "the refusal page says nothing was connected");
  await screenshot("login-not-bound");

  // 2a'. A failed login comes back as #/auth?login_error=<code>; the
  // dashboard shows only messages it knows, never text from the URL.
  log("login errors show known messages only");
  await page.goto(`${base}/#/auth?login_error=state_expired&broker=upstox`);
  await tid("auth-login-error").waitFor();
  let errText = await tid("auth-login-error").textContent();
  check(/Upstox login failed/.test(errText) && /longer than 10 minutes/.test(errText), `the known code's message: ${errText}`);
  await page.goto("about:blank");
  await page.goto(`${base}/#/auth?login_error=${encodeURIComponent("Call +91 99999 00000 to unlock your account")}&broker=upstox`);
  await tid("auth-login-error").waitFor();
  errText = await tid("auth-login-error").textContent();
  check(!/99999|unlock/.test(errText) && /could not be completed/.test(errText), `an unknown code shows the generic message, not the URL's text: ${errText}`);
  await page.locator('[data-testid="broker-card-upstox"][data-state="disconnected"]').waitFor();
  await screenshot("login-error");

  // 2b. Connect the sandbox Upstox account through the real redirect chain.
  log(`connect upstox as sandbox account ${ACCOUNT}`);
  await page.locator('[data-testid="broker-card-upstox"] summary').click();
  await tid("sandbox-account-upstox").fill(ACCOUNT);
  const navBefore = navigations.length;
  await Promise.all([backFromLogin(), tid("connect-upstox").click()]);
  await tid("auth-connected").waitFor();
  await page.locator('[data-testid="broker-card-upstox"][data-state="connected"]').waitFor();
  await page.locator('[data-testid="banner-upstox"][data-state="connected"]').waitFor();
  const chain = navigations.slice(navBefore).map((n) => n.url);
  log("redirect chain:", chain.join(" → "));
  const loginCalls = rpc("GetLoginURL");
  check(loginCalls.length === 1, `one GetLoginURL call (got ${loginCalls.length})`);
  const dialog = requests.find((r) => r.url.startsWith(sandbox) && r.at >= loginCalls[0].at);
  check(dialog, "the browser went to the sandbox's login dialog");
  check(new URL(dialog.url).searchParams.get("account") === ACCOUNT, `the dialog URL carries account=${ACCOUNT}: ${dialog.url}`);
  const callback = requests.find((r) => r.path === "/oauth/upstox/callback");
  check(callback && new URL(callback.url).searchParams.get("code"), "the sandbox redirected to the gateway's callback with a code");
  await screenshot("connected");

  // 3. Option chain with the ATM row.
  log("option chain");
  await tid("nav-chain").click();
  await tid("atm-row").waitFor({ timeout: 20_000 });
  const spotText = await tid("chain-spot").textContent();
  const atmStrike = Number(await tid("atm-row").getAttribute("data-strike"));
  const spot = Number((spotText ?? "").replace(/[^0-9.]/g, ""));
  const strikes = await page.locator("#chain-table tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.getAttribute("data-strike"))));
  check(strikes.length > 5, `the chain has strikes (${strikes.length})`);
  const closest = strikes.reduce((a, b) => (Math.abs(b - spot) < Math.abs(a - spot) ? b : a));
  check(atmStrike === closest, `ATM row ${atmStrike} is the strike closest to spot ${spot} (${closest})`);
  const inView = await tid("atm-row").evaluate((row) => {
    const wrap = row.closest(".chain-wrap").getBoundingClientRect();
    const r = row.getBoundingClientRect();
    return r.top >= wrap.top && r.bottom <= wrap.bottom;
  });
  check(inView, "the ATM row is scrolled into view");
  log(`spot ${spot}, ATM ${atmStrike}, ${strikes.length} strikes`);
  await screenshot("option-chain");
  await page.setViewportSize(PHONE);
  await tid("atm-row").evaluate((row) => row.scrollIntoView({ block: "center", inline: "center" }));
  await screenshot("option-chain", { phone: true });
  await page.setViewportSize(DESKTOP);

  // 4. Live ticks for the ATM strikes, picked from the chain.
  log("live ticks");
  await tid("chain-stream-atm").click();
  await page.waitForURL(/#\/ticks\?/);
  await page.locator('[data-testid="feed-state"][data-state="live"]').waitFor({ timeout: 20_000 });
  await waitTicks(10);
  check(await page.locator('h1 [data-testid="sandbox-badge-upstox"]').isVisible(), "the ticks page marks the sandbox's synthetic data");
  const rowsLive = await page.locator("#ticks-body tr").count();
  check(rowsLive >= 5, `tick rows for the ATM strikes (${rowsLive})`);
  // The heartbeat indicator (the test's gateway beats every 2 s).
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="feed-heartbeat"]')?.getAttribute("data-beats") ?? 0) >= 1, null, { timeout: 10_000 });
  await screenshot("live-ticks");
  await screenshot("live-ticks", { phone: true });

  // 5. Revoke alice at the sandbox: the prompt must appear within seconds.
  log(`revoke ${ACCOUNT} at the sandbox`);
  const streamsBefore = rpc("StreamMarketFeed").length;
  const navsBeforeRevoke = navigations.length;
  const revokedAt = Date.now();
  const res = await fetch(`${sandbox}/sandbox/revoke`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ broker: "upstox", account: ACCOUNT }),
  });
  check(res.ok, `sandbox revoke: HTTP ${res.status} ${await res.text()}`);
  await tid("auth-required-prompt").waitFor({ timeout: 10_000 });
  const promptAt = Date.now();
  log(`reconnect prompt after ${promptAt - revokedAt} ms`);
  check(promptAt - revokedAt < 8_000, "the prompt appears within a few seconds");
  const promptText = (await tid("auth-required-upstox").textContent()) ?? "";
  check(/Upstox/.test(await tid("auth-required-prompt").textContent()), "the prompt names the broker");
  check(/revoked/i.test(promptText), `the prompt gives the reason in words: ${promptText}`);
  check(await tid("reconnect-upstox").isVisible(), "a Reconnect Upstox button");
  await page.locator('[data-testid="feed-state"][data-state="auth-required"]').waitFor();
  await screenshot("reconnect-prompt");

  // 6. No loop: over ~3.5 s after the prompt, no new GetOptionChain or
  // StreamMarketFeed request, and no page reload.
  await page.waitForTimeout(3_500);
  const after = requests.filter((r) => r.at > promptAt);
  const streamsAfter = after.filter((r) => r.path.endsWith("/StreamMarketFeed")).length;
  const chainsAfter = after.filter((r) => r.path.endsWith("/GetOptionChain")).length;
  log(`requests in the ${((Date.now() - promptAt) / 1000).toFixed(1)} s after the prompt: ${after.length} (${after.map((r) => r.path).join(", ") || "none"})`);
  check(streamsAfter === 0, `no StreamMarketFeed retried after AUTH_REQUIRED (saw ${streamsAfter})`);
  check(chainsAfter === 0, `no GetOptionChain after AUTH_REQUIRED (saw ${chainsAfter})`);
  check(rpc("StreamMarketFeed").length === streamsBefore, "no new feed stream since the revoke");
  check(after.length <= 2, `no request storm after the prompt (${after.length} requests)`);
  check(navigations.length === navsBeforeRevoke, "no page reload or navigation");
  const countFrozen = await tickCount();
  await page.setViewportSize(PHONE);
  await screenshot("reconnect-prompt", { phone: true });
  await page.setViewportSize(DESKTOP);

  // 7. One click on Reconnect Upstox: the login round trip, back to the
  // live ticks, which stream again.
  log("reconnect upstox");
  await Promise.all([backFromLogin(), tid("reconnect-upstox").click()]);
  await page.waitForURL(/#\/ticks\?/);
  check(requests.some((r) => r.path === "/oauth/upstox/callback" && r.at > promptAt), "the reconnect went through the gateway's callback");
  await tid("auth-required-prompt").waitFor({ state: "detached" }).catch(() => {});
  check(!(await tid("auth-required-prompt").isVisible().catch(() => false)), "the prompt is gone");
  await page.locator('[data-testid="feed-state"][data-state="live"]').waitFor({ timeout: 20_000 });
  await waitTicks(5);
  await page.locator('[data-testid="banner-upstox"][data-state="connected"]').waitFor();
  log(`ticks again (${await tickCount()} since the reconnect; ${countFrozen} before the revoke)`);
  await screenshot("ticks-again");

  // 8. The admin's token-health page.
  if (adminKey) {
    log("admin token health");
    await tid("sign-out").click();
    await page.waitForURL(/#\/signin/);
    await tid("api-key").fill(adminKey);
    await tid("sign-in").click();
    await page.waitForURL(/#\/auth/);
    await tid("nav-admin").waitFor({ state: "visible" });
    await tid("nav-admin").click();
    await tid("connections-table").waitFor();
    await page.locator("#connections-body tr[data-user]").first().waitFor();
    await tid("cache-entries").waitFor();
    await tid("filter-state").selectOption({ label: "Connected" });
    await page.locator("#connections-body tr[data-user]").first().waitFor();
    await tid("validate-all").click();
    await tid("validate-checked").waitFor({ timeout: 20_000 });
    const checked = Number(await tid("validate-checked").textContent());
    check(checked >= 1, `the sweep checked the connected token (${checked})`);
    await screenshot("token-health");
    await screenshot("token-health", { phone: true, fullPage: true });
  }

  check(problems.length === 0, `no page errors or CSP violations:\n${problems.join("\n")}`);
  log("PASS");
} catch (e) {
  failed = true;
  console.error(`e2e FAILED: ${e?.stack ?? e}`);
  console.error(`page: ${page.url()}`);
  console.error("last requests:\n" + requests.slice(-25).map((r) => `  ${new Date(r.at).toISOString()} ${r.method} ${r.url}`).join("\n"));
  if (problems.length) console.error("problems:\n  " + problems.join("\n  "));
  await page.screenshot({ path: join(outDir, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
