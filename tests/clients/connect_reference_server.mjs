#!/usr/bin/env node
// A known-good server for the client scripts themselves: connect-node's own server (Connect,
// gRPC-Web and gRPC on one port, HTTPS with HTTP/2 and HTTP/1.1, permissive CORS) implementing the
// subset of the test backend's behaviour (loadtest/src/backend.rs) that src/scenarios.mjs uses.
// When a scenario fails through ringway, running it against this server tells a client-script
// problem from a proxy problem. No Rust test uses it.
//
//   node tests/clients/connect_reference_server.mjs --cert leaf.crt --key leaf.key --listen 127.0.0.1:18443
//
// Prints {"listening": "host:port"} once it serves; runs until killed.
//
// Request headers honoured, as the backend does: x-echo-* (copied to the response headers),
// x-trailer-echo-* (to the trailers), x-delay-ms, x-stream-count, x-stream-interval-ms,
// x-grpc-status with x-grpc-message or x-grpc-message-bin, x-status-details (one
// google.rpc.ErrorInfo{reason, domain: "ringway.test"}). Every response has x-backend: reference.
// Unlike the backend, an error status replaces a unary reply (Connect has no message-then-error),
// and x-trailers-only is ignored (the library decides the framing).

import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { Echo, EchoMessageSchema } from "./gen/test_pb.js";

const { values: options } = parseArgs({
  options: {
    cert: { type: "string" },
    key: { type: "string" },
    listen: { type: "string", default: "127.0.0.1:0" },
  },
});
if (!options.cert || !options.key) {
  process.stderr.write("connect_reference_server.mjs: --cert and --key are required\n");
  process.exit(2);
}
const [host, port] = [options.listen.slice(0, options.listen.lastIndexOf(":")), options.listen.slice(options.listen.lastIndexOf(":") + 1)];

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

/** Metadata echo and the backend's name, as the backend sends them. */
function echoMetadata(ctx) {
  for (const [name, value] of ctx.requestHeader) {
    if (name.startsWith("x-echo-")) {
      ctx.responseHeader.set(name, value);
    }
    if (name.startsWith("x-trailer-echo-")) {
      ctx.responseTrailer.set(name, value);
    }
  }
  ctx.responseHeader.set("x-backend", "reference");
}

/** Throws the status x-grpc-status asks for, if any. */
function requestedStatus(ctx) {
  const code = Number(ctx.requestHeader.get("x-grpc-status") ?? "0");
  if (code === 0) {
    return;
  }
  const encoded = ctx.requestHeader.get("x-grpc-message-bin");
  const message = encoded ? Buffer.from(encoded, "base64").toString("utf8") : (ctx.requestHeader.get("x-grpc-message") ?? "");
  const reason = ctx.requestHeader.get("x-status-details");
  const details = reason ? [{ desc: ErrorInfoSchema, value: { reason, domain: "ringway.test" } }] : [];
  throw new ConnectError(message, code, undefined, details);
}

function routes(router) {
  router.service(Echo, {
    async unary(request, ctx) {
      echoMetadata(ctx);
      await sleep(Number(ctx.requestHeader.get("x-delay-ms") ?? "0"), ctx.signal);
      requestedStatus(ctx);
      return request;
    },
    async *serverStream(request, ctx) {
      echoMetadata(ctx);
      const count = Number(ctx.requestHeader.get("x-stream-count") ?? "3");
      const intervalMs = Number(ctx.requestHeader.get("x-stream-interval-ms") ?? "0");
      for (let i = 0; i < count; i += 1) {
        if (i > 0) {
          await sleep(intervalMs, ctx.signal);
        }
        yield request;
      }
      requestedStatus(ctx);
    },
    // The backend concatenates the messages, which parses as their merge.
    async clientStream(requests, ctx) {
      echoMetadata(ctx);
      const merged = create(EchoMessageSchema);
      let count = 0;
      for await (const request of requests) {
        count += 1;
        merged.text = request.text || merged.text;
        merged.payload = request.payload.length > 0 ? request.payload : merged.payload;
      }
      ctx.responseTrailer.set("x-request-messages", String(count));
      return merged;
    },
    async *bidiStream(requests, ctx) {
      echoMetadata(ctx);
      yield* requests;
    },
  });
}

const handler = connectNodeAdapter({ routes });
const server = http2.createSecureServer(
  { cert: readFileSync(options.cert), key: readFileSync(options.key), allowHTTP1: true },
  (request, response) => {
    response.setHeader("access-control-allow-origin", "*");
    response.setHeader("access-control-expose-headers", "*");
    if (request.method === "OPTIONS") {
      response.setHeader("access-control-allow-methods", "GET, POST");
      response.setHeader("access-control-allow-headers", request.headers["access-control-request-headers"] ?? "*");
      response.setHeader("access-control-max-age", "7200");
      response.writeHead(204);
      response.end();
      return;
    }
    handler(request, response);
  },
);
server.listen(Number(port), host, () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ listening: `${address.address}:${address.port}` })}\n`);
});
