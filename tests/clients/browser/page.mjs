// The page tests/browser.rs loads in headless Chromium, from an origin other than ringway's:
// @connectrpc/connect-web's gRPC-Web or Connect transport (fetch) calling ringway cross-origin.
// Bundled by bundle.mjs with esbuild. Its parameters come from the query string:
//
//   target     ringway's base URL, e.g. https://127.0.0.1:8443
//   protocol   grpc-web | connect
//   scenarios  comma-separated: those of src/scenarios.mjs, and concurrent_streams (streams.mjs)
//   streams    concurrent_streams: how many [12]
//   release    concurrent_streams: 1 to free a connection when stalled (HTTP/1.1) [0]
//   quiet_ms   concurrent_streams with release: the stall that triggers a release [3000]
//   deadline_ms  concurrent_streams: how long to wait for every first message [20000]
//
// When done it sets window.__ringwayReport = { results: [...], resource_timing: [...] }, which
// browser.mjs prints.

import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { runScenario } from "../src/scenarios.mjs";
import { concurrentStreams } from "./streams.mjs";

const params = new URL(location.href).searchParams;
const target = params.get("target");
const protocol = params.get("protocol") ?? "grpc-web";
const names = (params.get("scenarios") ?? "").split(",").filter((n) => n !== "");
const number = (name, fallback) => Number(params.get(name) ?? fallback);

// The HTTP method of every call as it goes to fetch (CORS preflights are the browser's own).
const methodLog = [];
function recordingFetch(input, init) {
  methodLog.push(init?.method ?? "GET");
  return globalThis.fetch(input, init);
}

function transport(extra) {
  const options = { baseUrl: target, useBinaryFormat: true, fetch: recordingFetch, ...extra };
  return protocol === "connect" ? createConnectTransport(options) : createGrpcWebTransport(options);
}

const pageScenarios = {
  concurrent_streams: async (ctx) => {
    const data = await concurrentStreams(ctx, {
      streams: number("streams", 12),
      release: params.get("release") === "1",
      quietMs: number("quiet_ms", 3000),
      deadlineMs: number("deadline_ms", 20000),
    });
    return { detail: `${data.firsts} of ${data.streams} streams got their first message`, data };
  },
};

async function main() {
  const results = [];
  if (!target || (protocol !== "grpc-web" && protocol !== "connect")) {
    results.push({ scenario: "(page)", ok: false, detail: `bad query: ${location.search}`, elapsed_ms: 0 });
  }
  for (const name of results.length === 0 ? names : []) {
    results.push(await runScenario(name, { protocol, env: "browser", transport, methodLog }, pageScenarios));
  }
  // Every finished call to ringway, with the protocol the browser used for it. Aborted calls
  // leave no entry.
  const resourceTiming = performance
    .getEntriesByType("resource")
    .filter((entry) => entry.name.startsWith(target))
    .map((entry) => ({ name: entry.name, next_hop_protocol: entry.nextHopProtocol }));
  return { results, resource_timing: resourceTiming, user_agent: navigator.userAgent };
}

main().then(
  (report) => (window.__ringwayReport = report),
  (error) => (window.__ringwayReport = { results: [{ scenario: "(page)", ok: false, detail: String(error?.stack ?? error), elapsed_ms: 0 }] }),
);
