#!/usr/bin/env node
// @connectrpc/connect-node against ringway (or any server of the test backend's Echo service):
// runs the named scenarios of src/scenarios.mjs over the gRPC-Web or the Connect protocol, over
// HTTPS (HTTP/2 or HTTP/1.1) or cleartext, and prints one JSON result per scenario and line.
//
//   node tests/clients/node_client.mjs --protocol grpc-web --target https://127.0.0.1:8443 \
//        --ca ca.pem --http 2 unary metadata
//   node tests/clients/node_client.mjs --protocol connect --target http://127.0.0.1:8080 --http 1.1
//   node tests/clients/node_client.mjs --list --protocol connect --http 2
//
// Options: --protocol grpc-web|connect (required); --target URL (required unless --list);
// --http 2|1.1 [2]; --ca FILE, a PEM bundle trusted instead of the system's (for https);
// --json, Connect's JSON codec instead of proto; --run-timeout-ms N [60000], after which the
// process reports the unfinished scenario and exits. No scenario names: every applicable one.
// Exit status: 0 all passed, 1 any failed, 2 bad arguments.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { subscribe } from "node:diagnostics_channel";
import { Http2SessionManager, createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { SCENARIOS, applicable, runScenario } from "./src/scenarios.mjs";

function usage(why) {
  process.stderr.write(`node_client.mjs: ${why}\n`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      protocol: { type: "string" },
      target: { type: "string" },
      http: { type: "string", default: "2" },
      ca: { type: "string" },
      json: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
      "run-timeout-ms": { type: "string", default: "60000" },
    },
  });
} catch (error) {
  usage(error.message);
}
const { values: options, positionals } = parsed;
const protocol = options.protocol;
const httpVersion = options.http;
if (protocol !== "grpc-web" && protocol !== "connect") {
  usage("--protocol must be grpc-web or connect");
}
if (httpVersion !== "2" && httpVersion !== "1.1") {
  usage("--http must be 2 or 1.1");
}
const where = { protocol, env: "node", httpVersion };
if (options.list) {
  for (const name of SCENARIOS.filter((n) => applicable(n, where))) {
    process.stdout.write(`${name}\n`);
  }
  process.exit(0);
}
if (!options.target) {
  usage("--target URL is required");
}
const unknown = positionals.filter((n) => !SCENARIOS.includes(n));
if (unknown.length > 0) {
  usage(`unknown scenarios ${unknown.join(", ")}; known: ${SCENARIOS.join(", ")}`);
}
let ca;
if (options.ca) {
  try {
    ca = readFileSync(options.ca);
  } catch (error) {
    usage(`--ca: ${error.message}`);
  }
}
const names = positionals.length > 0 ? positionals : SCENARIOS.filter((n) => applicable(n, where));

// The HTTP method of every request as it goes out: HTTP/1.1 requests through Node's diagnostics
// channel, HTTP/2 streams through the session manager.
const methodLog = [];
subscribe("http.client.request.start", ({ request }) => methodLog.push(request.method));
class RecordingSessionManager extends Http2SessionManager {
  request(method, path, headers, requestOptions) {
    methodLog.push(method);
    return super.request(method, path, headers, requestOptions);
  }
}

// Each call gets a fresh transport: a new connection (HTTP/2 session, or no keep-alive agent for
// HTTP/1.1), so one scenario's cancellation cannot leave state for the next.
function transport(extra) {
  const nodeOptions = ca ? { ca } : {};
  const common = { baseUrl: options.target, httpVersion, useBinaryFormat: !options.json, ...extra };
  if (httpVersion === "2") {
    common.sessionManager = new RecordingSessionManager(options.target, {}, nodeOptions);
  } else {
    // Node's https offers no ALPN, so the server picks HTTP/1.1.
    common.nodeOptions = { ...nodeOptions, agent: false };
  }
  return protocol === "grpc-web" ? createGrpcWebTransport(common) : createConnectTransport(common);
}

let current = "(none)";
const watchdog = setTimeout(() => {
  process.stdout.write(
    `${JSON.stringify({ scenario: current, ok: false, detail: `run timeout (${options["run-timeout-ms"]} ms)`, elapsed_ms: 0 })}\n`,
  );
  process.exit(1);
}, Number(options["run-timeout-ms"]));

let failed = 0;
for (const name of names) {
  current = name;
  const result = await runScenario(name, { ...where, transport, methodLog });
  failed += result.ok ? 0 : 1;
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
clearTimeout(watchdog);
// HTTP/2 sessions idle out on their own; exit now rather than wait for them.
process.exit(failed === 0 ? 0 : 1);
