#!/usr/bin/env node
// Drives Debian's Chromium (/usr/bin/chromium) headless through playwright-core: opens the test
// page (browser/page.mjs, served by the Rust test from another origin), waits for its report,
// and prints it as JSON lines: one per scenario ({scenario, ok, detail, elapsed_ms, data?}), then
// one {"browser": {...}} line with the browser's version, the protocol of every response from
// the target as Chromium's network stack saw it (DevTools `Network.responseReceived`), the
// page's resource-timing entries, its console and its errors.
//
//   node tests/clients/browser.mjs --url 'http://127.0.0.2:4000/?target=...' --spki PIN \
//        [--disable-http2] [--timeout-ms 60000] [--chromium /usr/bin/chromium]
//
// --spki is base64(SHA-256(SubjectPublicKeyInfo)) of the server's certificate: Chromium accepts
// that one key despite the unknown CA (--ignore-certificate-errors-spki-list, which it honours
// only with an explicit --user-data-dir); every other certificate check stays on.
// --disable-http2 makes Chromium speak HTTP/1.1 over TLS even when the server offers h2.
// Exit status: 0 all passed, 1 any failed, 2 bad arguments, 3 the browser failed to start,
// 4 the page did not report within --timeout-ms.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

function usage(why) {
  process.stderr.write(`browser.mjs: ${why}\n`);
  process.exit(2);
}

let options;
try {
  ({ values: options } = parseArgs({
    options: {
      url: { type: "string" },
      spki: { type: "string" },
      "disable-http2": { type: "boolean", default: false },
      "timeout-ms": { type: "string", default: "60000" },
      chromium: { type: "string", default: "/usr/bin/chromium" },
    },
  }));
} catch (error) {
  usage(error.message);
}
if (!options.url || !options.spki) {
  usage("--url and --spki are required");
}
const timeoutMs = Number(options["timeout-ms"]);
const target = new URL(options.url).searchParams.get("target") ?? "";

const emit = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

// A backstop for a browser that hangs in close(): report, and exit (Chromium exits when the
// DevTools pipe to this process closes).
const watchdog = setTimeout(() => {
  emit({ scenario: "(browser)", ok: false, detail: `no result within ${timeoutMs + 15000} ms`, elapsed_ms: 0 });
  process.exit(4);
}, timeoutMs + 15000);

const userDataDir = mkdtempSync(join(tmpdir(), "ringway-chromium-"));
const args = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  `--ignore-certificate-errors-spki-list=${options.spki}`,
];
if (options["disable-http2"]) {
  args.push("--disable-http2");
}

let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: options.chromium,
    headless: true,
    args,
    timeout: timeoutMs,
  });
} catch (error) {
  emit({ scenario: "(browser)", ok: false, detail: `chromium did not start: ${error.message}`, elapsed_ms: 0 });
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(3);
}

const browser = { version: context.browser()?.version() ?? "", args, protocols: [], resource_timing: [], console: [], page_errors: [] };
let exitCode = 0;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => browser.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => browser.page_errors.push(String(error)));
  const devtools = await context.newCDPSession(page);
  await devtools.send("Network.enable");
  devtools.on("Network.responseReceived", ({ response, type }) => {
    if (response.url.startsWith(target)) {
      browser.protocols.push({ url: response.url, protocol: response.protocol, status: response.status, type });
    }
  });
  browser.version ||= (await devtools.send("Browser.getVersion")).product;
  await page.goto(options.url, { timeout: timeoutMs });
  await page.waitForFunction(() => window.__ringwayReport !== undefined, null, { timeout: timeoutMs, polling: 50 });
  const report = await page.evaluate(() => window.__ringwayReport);
  browser.resource_timing = report.resource_timing ?? [];
  browser.user_agent = report.user_agent;
  for (const result of report.results) {
    emit(result);
    exitCode ||= result.ok ? 0 : 1;
  }
} catch (error) {
  emit({ scenario: "(browser)", ok: false, detail: `page: ${error.message}`, elapsed_ms: 0 });
  exitCode = 4;
} finally {
  emit({ browser });
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.exit(exitCode);
