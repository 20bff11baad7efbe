// The call scenarios the Connect clients run against the test backend (loadtest/src/backend.rs)
// through ringway, shared by Node (node_client.mjs, @connectrpc/connect-node) and the browser
// page (browser/page.mjs, @connectrpc/connect-web), for both of Connect's protocols that ringway
// serves or will serve: gRPC-Web and Connect.
//
// A scenario gets a context { protocol, env, httpVersion, transport(extra), methodLog } and returns
// a detail string, or throws. `transport(extra)` makes a transport with extra options;
// `methodLog` is an array the caller appends each HTTP request's method to as it goes out (below
// the Connect library, so a GET made by useHttpGet shows as GET). Every call carries a deadline, so a scenario cannot hang; the runner turns the outcome
// into one result object: { scenario, ok, detail, elapsed_ms } (the format of
// tests/clients/grpcio_client.py), plus `data` where a scenario reports facts for the Rust test.

import { create, equals } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { Echo, EchoMessageSchema } from "../gen/test_pb.js";

/** The deadline of every call that does not test deadlines, in milliseconds. */
export const CALL_TIMEOUT_MS = 10_000;
/** The backend's longest stream interval and delay (DELAY_MS_MAX): ten minutes, longer than any run. */
const FOREVER_MS = 600_000;

const text = new TextEncoder();

function message(label, payload = text.encode(label)) {
  return create(EchoMessageSchema, { text: label, payload });
}

function check(condition, what) {
  if (!condition) {
    throw new Error(what);
  }
}

function sameMessage(got, want, what) {
  check(equals(EchoMessageSchema, got, want), `${what}: got ${describe(got)}, want ${describe(want)}`);
}

function describe(m) {
  return JSON.stringify({ text: m.text, payload: Array.from(m.payload) });
}

/** Runs `call`, which must fail; returns its error as a ConnectError. */
async function expectError(call, what) {
  try {
    await call();
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error(`${what}: the call succeeded`);
}

function expectCode(error, code, what) {
  check(
    error.code === code,
    `${what}: code ${Code[error.code]} (${error.code}), want ${Code[code]} (${code}); message ${JSON.stringify(error.rawMessage)}`,
  );
}

/** A client of the Echo service over `ctx.transport(extra)`. */
function client(ctx, extra = {}) {
  return createClient(Echo, ctx.transport({ defaultTimeoutMs: CALL_TIMEOUT_MS, ...extra }));
}

// Every byte value, so a text-mode or header-encoding mistake cannot pass.
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);

const scenarios = {
  /** A unary POST echo of a message with non-ASCII text and every byte value. */
  async unary(ctx) {
    const request = message("héllo ✓", ALL_BYTES);
    ctx.methodLog.length = 0;
    const response = await client(ctx).unary(request);
    sameMessage(response, request, "echo");
    check(ctx.methodLog.join() === "POST", `HTTP request methods ${ctx.methodLog}, want POST`);
    return "POST echoed a 256-byte payload and non-ASCII text";
  },

  /** Connect only: the side-effect-free Unary as a GET (useHttpGet), the message in the query. */
  async unary_get(ctx) {
    const request = message("by GET ✓", ALL_BYTES);
    ctx.methodLog.length = 0;
    const response = await client(ctx, { useHttpGet: true }).unary(request);
    sameMessage(response, request, "echo");
    check(ctx.methodLog.join() === "GET", `HTTP request methods ${ctx.methodLog}, want GET`);
    return "GET echoed the message from its query";
  },

  /** Three messages, each the request, then a clean end. */
  async server_streaming(ctx) {
    const request = message("tick");
    const headers = { "x-stream-count": "3", "x-stream-interval-ms": "10" };
    let count = 0;
    for await (const response of client(ctx).serverStream(request, { headers })) {
      sameMessage(response, request, `message ${count}`);
      count += 1;
    }
    check(count === 3, `${count} messages, want 3`);
    return "3 messages then OK";
  },

  /** Three messages up, one down: the backend's concatenation parses as the merge of the three. */
  async client_streaming(ctx) {
    async function* requests() {
      yield create(EchoMessageSchema, { payload: text.encode("first") });
      yield create(EchoMessageSchema, { payload: text.encode("second") });
      yield create(EchoMessageSchema, { text: "third" });
    }
    const trailers = [];
    const response = await client(ctx).clientStream(requests(), {
      onTrailer: (t) => trailers.push(t),
    });
    sameMessage(response, create(EchoMessageSchema, { text: "third", payload: text.encode("second") }), "merge");
    const count = trailers[0]?.get("x-request-messages");
    check(count === "3", `trailer x-request-messages ${count}, want 3`);
    return "3 messages reached the backend, its reply came back";
  },

  /** Ping-pong: each message is sent only after the previous one's echo arrived. */
  async bidi_streaming(ctx) {
    const pings = ["one", "two", "three"].map((label) => message(label));
    const echoes = [];
    let pong = () => {};
    async function* requests() {
      for (const ping of pings) {
        const arrived = new Promise((resolve) => (pong = resolve));
        yield ping;
        await arrived;
      }
    }
    for await (const response of client(ctx).bidiStream(requests())) {
      echoes.push(response);
      pong();
    }
    check(echoes.length === pings.length, `${echoes.length} echoes, want ${pings.length}`);
    echoes.forEach((echo, i) => sameMessage(echo, pings[i], `echo ${i}`));
    return "3 pings, each echoed before the next was sent";
  },

  /** Request metadata (text and -bin) reaches the backend; its headers and trailers come back. */
  async metadata(ctx) {
    const blob = Uint8Array.of(0, 1, 2, 0xfe, 0xff);
    const headers = new Headers({
      "x-echo-greeting": "hello",
      "x-echo-blob-bin": encodeBinaryHeader(blob),
      "x-trailer-echo-note": "bye",
    });
    let responseHeaders;
    let responseTrailers;
    const request = message("metadata");
    const response = await client(ctx).unary(request, {
      headers,
      onHeader: (h) => (responseHeaders = h),
      onTrailer: (t) => (responseTrailers = t),
    });
    sameMessage(response, request, "echo");
    check(responseHeaders?.get("x-echo-greeting") === "hello", `header x-echo-greeting: ${responseHeaders?.get("x-echo-greeting")}`);
    const echoedBlob = responseHeaders?.get("x-echo-blob-bin");
    check(echoedBlob !== null && echoedBlob !== undefined, "header x-echo-blob-bin missing");
    const decoded = decodeBinaryHeader(echoedBlob);
    check(decoded.length === blob.length && decoded.every((b, i) => b === blob[i]), `x-echo-blob-bin decodes to ${Array.from(decoded)}`);
    check(responseHeaders?.get("x-backend") !== null, "header x-backend missing");
    check(responseTrailers?.get("x-trailer-echo-note") === "bye", `trailer x-trailer-echo-note: ${responseTrailers?.get("x-trailer-echo-note")}`);
    return `headers x-echo-greeting, x-echo-blob-bin, x-backend=${responseHeaders.get("x-backend")}; trailer x-trailer-echo-note`;
  },

  /** A status after the reply, with a non-ASCII message and a google.rpc.ErrorInfo detail. */
  async error_details(ctx) {
    return errorWithDetails(ctx, {}, Code.FailedPrecondition);
  },

  /** The same error as a trailers-only reply (status in the response headers). */
  async error_trailers_only(ctx) {
    return errorWithDetails(ctx, { "x-trailers-only": "1" }, Code.NotFound);
  },

  /** A call the backend holds for ten minutes ends DEADLINE_EXCEEDED at its 300 ms deadline. */
  async deadline(ctx) {
    const call = () =>
      client(ctx).unary(message("late"), { headers: { "x-delay-ms": String(FOREVER_MS) }, timeoutMs: 300 });
    const error = await expectError(call, "deadline");
    expectCode(error, Code.DeadlineExceeded, "deadline");
    return "DEADLINE_EXCEEDED";
  },

  /** A stream's first message arrives while the backend waits ten minutes before the second
   *  (so delivery is incremental), then the client cancels it. */
  async cancellation(ctx) {
    const abort = new AbortController();
    const headers = { "x-stream-count": "2", "x-stream-interval-ms": String(FOREVER_MS) };
    const request = message("cancel me");
    let received = 0;
    const error = await expectError(async () => {
      for await (const response of client(ctx).serverStream(request, { headers, signal: abort.signal })) {
        sameMessage(response, request, "first message");
        received += 1;
        abort.abort();
      }
    }, "cancellation");
    check(received === 1, `${received} messages before the cancel, want 1`);
    expectCode(error, Code.Canceled, "cancellation");
    return "first message arrived while the second was ten minutes away; CANCELED after abort";
  },
};

async function errorWithDetails(ctx, extraHeaders, code) {
  const status = String(code);
  const headers = {
    "x-grpc-status": status,
    "x-grpc-message-bin": base64(text.encode("not yet: ü ✓")),
    "x-status-details": "TEST_REASON",
    ...extraHeaders,
  };
  const error = await expectError(() => client(ctx).unary(message("fail"), { headers }), "error");
  expectCode(error, code, "error");
  check(error.rawMessage === "not yet: ü ✓", `message ${JSON.stringify(error.rawMessage)}`);
  const details = error.findDetails(ErrorInfoSchema);
  check(details.length === 1, `${details.length} ErrorInfo details (of ${error.details.length}), want 1`);
  check(details[0].reason === "TEST_REASON", `detail reason ${details[0].reason}`);
  check(details[0].domain === "ringway.test", `detail domain ${details[0].domain}`);
  check(error.metadata.get("x-backend") !== null, "x-backend missing from the error's metadata");
  return `${Code[code]}, message "not yet: ü ✓", ErrorInfo{TEST_REASON, ringway.test}`;
}

function base64(bytes) {
  let binary = "";
  for (const b of bytes) {
    binary += String.fromCharCode(b);
  }
  return btoa(binary);
}

/** Which scenarios apply where: GET is a Connect feature; the browser's fetch cannot stream a
 *  request body, so client and bidi streaming run only in Node over HTTP/2. */
export function applicable(name, { protocol, env, httpVersion }) {
  switch (name) {
    case "unary_get":
      return protocol === "connect";
    case "client_streaming":
    case "bidi_streaming":
      return env === "node" && httpVersion === "2";
    default:
      return true;
  }
}

/** Every scenario name, in run order. */
export const SCENARIOS = Object.keys(scenarios);

/** Runs one scenario (of this module, or of `extra`: name → async (ctx) => detail); never
 *  throws. A scenario may return { detail, data } (and attach `data` to its error) to report
 *  facts for the caller to judge. */
export async function runScenario(name, ctx, extra = {}) {
  const started = performance.now();
  const result = (ok, detail, data) => ({
    scenario: name,
    ok,
    detail,
    elapsed_ms: Math.round((performance.now() - started) * 10) / 10,
    ...(data === undefined ? {} : { data }),
  });
  const scenario = extra[name] ?? scenarios[name];
  if (scenario === undefined) {
    return result(false, `unknown scenario; known: ${[...SCENARIOS, ...Object.keys(extra)].join(", ")}`);
  }
  try {
    const outcome = await scenario(ctx);
    return typeof outcome === "string" ? result(true, outcome) : result(true, outcome.detail, outcome.data);
  } catch (error) {
    const detail = error instanceof ConnectError ? `${error.name}: ${error.message}` : String(error?.stack ?? error);
    return result(false, detail, error?.data);
  }
}
