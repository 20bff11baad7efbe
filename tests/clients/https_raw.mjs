#!/usr/bin/env node
// One binary gRPC-Web unary call written by hand with Node's built-in `https` module, which
// offers no ALPN: the server must answer it over HTTP/1.1. No client library is involved, so the
// Rust test sees exactly the bytes that came back.
//
//   node tests/clients/https_raw.mjs --target https://127.0.0.1:8443 --ca ca.pem \
//        [--path /test.Echo/Unary] [--message-hex 68656c6c6f] [--header name:value ...]
//
// Prints one JSON line: {"http_version", "alpn", "status", "headers": {...}, "body_hex"}; the
// request body is the message in one gRPC frame. Exit status 0 when a response arrived (whatever
// its status), 1 on a transport error or after 20 s, 2 for bad arguments.

import { readFileSync } from "node:fs";
import { request } from "node:https";
import { parseArgs } from "node:util";

const RUN_TIMEOUT_MS = 20_000;

function usage(why) {
  process.stderr.write(`https_raw.mjs: ${why}\n`);
  process.exit(2);
}

let options;
try {
  ({ values: options } = parseArgs({
    options: {
      target: { type: "string" },
      ca: { type: "string" },
      path: { type: "string", default: "/test.Echo/Unary" },
      "message-hex": { type: "string", default: Buffer.from("hello over https").toString("hex") },
      header: { type: "string", multiple: true, default: [] },
    },
  }));
} catch (error) {
  usage(error.message);
}
if (!options.target || !options.ca) {
  usage("--target and --ca are required");
}

const message = Buffer.from(options["message-hex"], "hex");
const frame = Buffer.alloc(5 + message.length);
frame.writeUInt32BE(message.length, 1);
message.copy(frame, 5);

const headers = {
  "content-type": "application/grpc-web+proto",
  "x-grpc-web": "1",
  "content-length": String(frame.length),
};
for (const header of options.header) {
  const colon = header.indexOf(":");
  if (colon <= 0) {
    usage(`--header ${header}: want name:value`);
  }
  headers[header.slice(0, colon).trim()] = header.slice(colon + 1).trim();
}

const url = new URL(options.path, options.target);
const call = request(url, {
  method: "POST",
  headers,
  ca: readFileSync(options.ca),
  agent: false,
  timeout: RUN_TIMEOUT_MS,
});
call.on("response", (response) => {
  // false when no protocol was negotiated, as Node reports it.
  const alpn = response.socket.alpnProtocol ?? null;
  const chunks = [];
  response.on("data", (chunk) => chunks.push(chunk));
  response.on("end", () => {
    process.stdout.write(
      `${JSON.stringify({
        http_version: response.httpVersion,
        alpn,
        status: response.statusCode,
        headers: response.headers,
        body_hex: Buffer.concat(chunks).toString("hex"),
      })}\n`,
    );
    process.exit(0);
  });
});
call.on("timeout", () => call.destroy(new Error(`no response within ${RUN_TIMEOUT_MS} ms`)));
call.on("error", (error) => {
  process.stderr.write(`https_raw.mjs: ${error.message}\n`);
  process.exit(1);
});
call.end(frame);
