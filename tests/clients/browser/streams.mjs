// Many server streams open at once from one page: the case a browser's HTTP/1.1 connection limit
// (six per origin in Chromium) cannot serve and HTTP/2 can. Reports facts in the order they
// happened; the Rust test (tests/browser.rs) judges them: counts and orders, never durations.
//
// Each stream asks the backend for two messages ten minutes apart, so after its first message it
// stays open until the page cancels it: "open" is structural, not a race against a timer.
//
// Without `release`, the page waits (up to `deadlineMs`) until every stream has its first message,
// then cancels them all. With `release` (for HTTP/1.1): once no stream got its first message for
// `quietMs` (the browser is holding the rest back), the oldest open stream that has one is
// cancelled, freeing its connection; as soon as a waiting stream then gets its first message the
// next is released, and so on until every stream has had its first message.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Echo, EchoMessageSchema } from "../gen/test_pb.js";

const POLL_MS = 20;
/** The backend's longest stream interval (DELAY_MS_MAX): the second message never comes. */
const FOREVER_MS = 600_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The same call once, to completion, so the CORS preflight for these headers is cached and
 *  the streams go out without one (and a resource-timing entry records the protocol). */
async function warmUp(echo, headers, timeoutMs) {
  const request = create(EchoMessageSchema, { text: "warm-up" });
  let count = 0;
  for await (const _ of echo.serverStream(request, { headers: { ...headers, "x-stream-count": "1" }, timeoutMs })) {
    count += 1;
  }
  if (count !== 1) {
    throw new Error(`warm-up stream: ${count} messages, want 1`);
  }
}

export async function concurrentStreams(ctx, { streams, release, quietMs, deadlineMs }) {
  const echo = createClient(Echo, ctx.transport({}));
  const headers = { "x-stream-count": "2", "x-stream-interval-ms": String(FOREVER_MS) };
  // The calls' own deadline is past the page's, so only the page ends them.
  const timeoutMs = deadlineMs + 30_000;
  await warmUp(echo, headers, timeoutMs);

  const events = [];
  const state = Array.from({ length: streams }, () => ({
    first: false,
    ended: false,
    abort: new AbortController(),
  }));
  const open = () => state.filter((s) => !s.ended).length;
  // A released stream no longer counts: the page cancelled it, whenever its end is reported.
  const openWithFirst = () => state.filter((s) => s.first && !s.ended && !s.released).length;
  let lastFirstAt = performance.now();

  const runs = state.map(async (s, i) => {
    const request = create(EchoMessageSchema, { text: `stream ${i}` });
    try {
      for await (const response of echo.serverStream(request, { headers, signal: s.abort.signal, timeoutMs })) {
        if (!s.first) {
          s.first = true;
          lastFirstAt = performance.now();
          events.push({
            event: "first",
            stream: i,
            echoed: response.text === request.text,
            open: open(),
            open_with_first: openWithFirst(),
          });
        }
      }
      s.outcome = "OK";
    } catch (error) {
      s.outcome = Code[ConnectError.from(error).code];
    }
    s.ended = true;
    events.push({ event: "end", stream: i, outcome: s.outcome, open: open() });
  });

  const deadline = performance.now() + deadlineMs;
  const firstCount = () => state.filter((s) => s.first).length;
  // The first-message count at the last release; null before the first one.
  let firstsAtRelease = null;
  while (firstCount() < streams && performance.now() < deadline) {
    await sleep(POLL_MS);
    if (!release || firstCount() === streams) {
      continue;
    }
    const handedOver = firstsAtRelease !== null && firstCount() > firstsAtRelease;
    const stalled = performance.now() - lastFirstAt >= quietMs;
    const victim = state.findIndex((s) => s.first && !s.ended && !s.released);
    if ((handedOver || stalled) && victim >= 0) {
      state[victim].released = true;
      firstsAtRelease = firstCount();
      lastFirstAt = performance.now();
      events.push({ event: "release", stream: victim, stalled, firsts: firstsAtRelease, open_with_first: openWithFirst() });
      state[victim].abort.abort();
    }
  }
  const firsts = state.filter((s) => s.first).length;
  events.push({ event: "cancel_all", open: open(), open_with_first: openWithFirst() });
  for (const s of state) {
    s.abort.abort();
  }
  await Promise.all(runs);
  const data = { streams, firsts, events, outcomes: state.map((s) => s.outcome) };
  if (firsts !== streams) {
    const error = new Error(`${firsts} of ${streams} streams got their first message`);
    error.data = data;
    throw error;
  }
  return data;
}
