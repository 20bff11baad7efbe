//! A real HTTP/2 gRPC backend for tests, benchmarks and the scale harness.
//!
//! It is built directly on `h2::server` over tokio TCP rather than on tonic because ringway's
//! tests need to control individual frames: when headers go out, when a stream is reset and
//! with which code, whether trailers exist at all. Messages are opaque bytes inside gRPC
//! length-prefixed frames (1-byte flag, 4-byte big-endian length); no protobuf is involved.
//!
//! A backend binds synchronously in [`Backend::start`], so its address is known and the kernel
//! queues connections as soon as that returns, then serves on its own thread(s) with its own
//! tokio runtime. The [`BackendHandle`] reports counters, the last request's headers, and can
//! send GOAWAY, crash the pod ([`BackendHandle::kill`]) or shut it down gracefully.
//!
//! # Behaviour per call
//!
//! Requests must be `POST` with `content-type: application/grpc…`; anything else is answered
//! `415` with a text body, as real gRPC servers do. How the request body is read depends on the
//! method:
//! - unary, server streaming, health and unknown methods read the whole body before answering
//!   (with flow-control capacity released as it arrives, so large uploads work); a body above
//!   [`BackendConfig::request_body_bytes_max`] is answered trailers-only `grpc-status: 8`
//!   (RESOURCE_EXHAUSTED) followed by `RST_STREAM(NO_ERROR)`, and a body that is not a sequence
//!   of complete gRPC frames `grpc-status: 13` (INTERNAL);
//! - `/ClientStream` and `/BidiStream` take each message as soon as its last byte arrives,
//!   counting it in [`BackendStats::messages_received`] at once; the same limit applies to the
//!   sum of a client stream's messages and to each bidirectional message (8, then
//!   `RST_STREAM(NO_ERROR)`); a stream that ends inside a message gets 13;
//! - with `x-reply-before-body` the body is not read before the complete reply.
//!
//! Every response carries `x-backend: <name>` in its (first) HEADERS frame.
//!
//! | Request                                   | Behaviour                                                                 |
//! |-------------------------------------------|---------------------------------------------------------------------------|
//! | `:path` = `/grpc.health.v1.Health/Check`  | `HealthCheckResponse{status: SERVING}` (bytes `08 01`), `grpc-status: 0`   |
//! | `:path` ends `/Unary` (any service)       | echo the request body (same frames), then `grpc-status: 0`                 |
//! | `:path` ends `/ServerStream`              | `x-stream-count` messages (default 3), each flushed as its own DATA frame; each is the first request message (or empty) |
//! | `:path` ends `/ClientStream`              | after the client's END_STREAM: one message, the concatenation of the request messages' payloads in order (an empty message for none), then trailers `grpc-status: 0`, `x-request-messages: N` (messages received) and `x-request-bytes: B` (their payload bytes) |
//! | `:path` ends `/BidiStream`                | response headers at once (after any delay); each request message echoed as its own DATA frame as soon as it has arrived (so a client can wait for each echo before sending the next); trailers `grpc-status: 0` after the client's END_STREAM |
//! | any other `:path`                         | trailers-only `grpc-status: 12` (UNIMPLEMENTED)                           |
//! | `x-response-bytes: N`                     | reply with N-byte messages (pattern `i % 251`) instead of the echo (every echo of a BidiStream, the one message of a ClientStream) |
//! | `x-stream-count: N`                       | ServerStream: number of messages (default 3)                              |
//! | `x-stream-interval-ms: N`                 | ServerStream: delay between messages (default 0)                          |
//! | `x-grpc-status: N`, `x-grpc-message: s`   | end with that status/message after the reply; the message may be any UTF-8 (raw bytes in the header), sent percent-encoded as the gRPC spec says (`ü` → `%C3%BC`) |
//! | `x-grpc-message-bin: b64`                 | the message as base64 of UTF-8 (padded or not), for clients that send only ASCII metadata (grpcio sends `-bin` metadata this way); wins over `x-grpc-message` |
//! | `x-status-details: REASON`                | also send `grpc-status-details-bin`: unpadded base64 of [`status_details`] (a `google.rpc.Status` with the call's code and message and one `google.rpc.ErrorInfo{reason: REASON, domain: "ringway.test"}` detail) |
//! | `x-trailers-only: 1`                      | one HEADERS frame: `:status 200`, content-type, `grpc-status` (from `x-grpc-status`, default 0), `grpc-message`, `grpc-status-details-bin`, END_STREAM |
//! | `x-echo-*: v`                             | copied unchanged into the response headers (`-bin` values untouched)      |
//! | `x-trailer-echo-*: v`                     | copied unchanged, same name, into the trailers                            |
//! | `x-delay-ms: N`                           | wait N ms before the response headers (overrides [`BackendConfig::latency_ms`]); ClientStream waits after the client's END_STREAM |
//! | `grpc-timeout: T`                         | the call's deadline, counted from the arrival of its headers ([`parse_grpc_timeout`]; a malformed value is answered 3). Recorded only (see [`BackendHandle::last_request_headers`]): the work goes on past it, so a proxy's own deadline handling and its cancel are what a test sees |
//! | `x-enforce-deadline: 1`                   | honour `grpc-timeout` as a gRPC server does: work still running at the deadline (delays, stream intervals, waiting for request messages) ends with `grpc-status: 4` DEADLINE_EXCEEDED, trailers-only if no headers were sent yet, else as trailers; counted in [`BackendStats::deadlines_exceeded`] |
//! | `x-reply-before-body: 1`                  | the complete reply (headers, messages, trailers with END_STREAM) without reading the request body: `x-response-bytes` (default 0) bytes per message, one message (ServerStream: `x-stream-count`; health and unknown methods reply as usual). Then every handle is dropped and h2 (0.4.20) sends `RST_STREAM(NO_ERROR)` after the queued response, as RFC 9113 §8.1 asks of a server that does not want the rest of the request; the client has the whole response, and its further DATA fails |
//! | `x-reply-before-body: drain`              | the same early reply, then the request body is read and discarded to the client's END_STREAM: the stream closes without any reset |
//! | `x-http-status: N`                        | non-gRPC reply: `:status N`, `content-type: text/plain`, short body, no `grpc-status` |
//! | `x-reset: before-headers`                 | `RST_STREAM` instead of any response                                      |
//! | `x-reset: after-headers`                  | response headers, then `RST_STREAM`                                       |
//! | `x-reset: after-data`                     | headers and all messages, then `RST_STREAM` instead of trailers           |
//! | `x-reset-code: N`                         | the reset's error code (default 2 INTERNAL_ERROR; 7 REFUSED_STREAM, 8 CANCEL, 11 ENHANCE_YOUR_CALM) |
//!
//! Precedence, after the delay: `x-http-status`, then `x-reset: before-headers`, then the
//! configured error rate (trailers-only `grpc-status: 14` UNAVAILABLE), then `x-trailers-only`,
//! then the method. Unparseable values of these headers (and of `grpc-timeout`) are answered
//! trailers-only `grpc-status: 3` (INVALID_ARGUMENT) with a message naming the header: after
//! the body for the methods that read it whole, at once for the streaming ones.
//!
//! While waiting (delays, stream intervals, flow control, request messages) the backend
//! watches for `RST_STREAM` from the client; a call the client resets or abandons is counted in
//! [`BackendStats::cancelled_by_client`] instead of [`BackendStats::calls_finished`].

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::debug;

/// Largest request body read by default; larger bodies are refused (see the module doc).
pub const REQUEST_BODY_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Largest message `x-response-bytes` may ask for.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest `x-stream-count`.
pub const STREAM_COUNT_MAX: u64 = 1_000_000;
/// Longest `x-delay-ms` or `x-stream-interval-ms`: ten minutes.
pub const DELAY_MS_MAX: u64 = 600_000;
/// How long the backend gives queued HEADERS/DATA to reach the socket before an
/// `x-reset: after-*` reset; h2 drops a stream's still-queued frames when it is reset.
const FLUSH_BEFORE_RESET_MS: u64 = 20;
/// The serialized `grpc.health.v1.HealthCheckResponse { status: SERVING }` in a gRPC frame.
const HEALTH_SERVING_FRAME: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];
const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
const GRPC_FRAME_HEADER_BYTES: usize = 5;

/// How a backend listens and behaves. Build with [`BackendConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Address to bind, e.g. `127.0.0.2:0` (port 0 picks a free port; see
    /// [`BackendHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Reported in every response as `x-backend: <name>`.
    pub name: String,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`; `None` leaves it unlimited. Streams above the
    /// limit are refused by h2 with `RST_STREAM(REFUSED_STREAM)`.
    pub max_concurrent_streams: Option<u32>,
    /// Tokio worker threads; 1 (or 0) runs a current-thread runtime on one thread.
    pub threads: usize,
    /// HTTP/2 initial stream window we advertise. The default (4 MiB) lets a 1 MiB message
    /// arrive without waiting for WINDOW_UPDATEs.
    pub initial_stream_window_bytes: u32,
    /// HTTP/2 connection window we advertise (default 16 MiB).
    pub initial_connection_window_bytes: u32,
    /// Latency added before the response headers of every call without `x-delay-ms`.
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of calls answered trailers-only `grpc-status: 14` (UNAVAILABLE).
    /// Deterministic: with 0.1, exactly every tenth call fails.
    pub error_rate: f64,
    /// Response message size for calls without `x-response-bytes`; `None` echoes.
    pub response_bytes: Option<usize>,
    /// Request bodies above this are refused with `grpc-status: 8`.
    pub request_body_bytes_max: usize,
    /// How long [`BackendHandle::shutdown`] (and Drop) waits for in-flight calls.
    pub shutdown_grace_ms: u64,
}

impl BackendConfig {
    /// A config with the given address and name and defaults for everything else.
    pub fn new(listen: SocketAddr, name: impl Into<String>) -> Self {
        BackendConfig {
            listen,
            name: name.into(),
            max_concurrent_streams: None,
            threads: 1,
            initial_stream_window_bytes: 4 * 1024 * 1024,
            initial_connection_window_bytes: 16 * 1024 * 1024,
            latency_ms: 0,
            error_rate: 0.0,
            response_bytes: None,
            request_body_bytes_max: REQUEST_BODY_BYTES_MAX_DEFAULT,
            shutdown_grace_ms: 2_000,
        }
    }
}

impl Default for BackendConfig {
    /// `127.0.0.1:0`, named `backend`.
    fn default() -> Self {
        BackendConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "backend")
    }
}

/// A snapshot of a backend's counters.
///
/// Every started call ends as exactly one of finished or cancelled, except calls cut short by
/// [`BackendHandle::kill`], which count as neither; so
/// `calls_started == calls_finished + cancelled_by_client + in_flight` until a kill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Streams accepted by the backend (any path, any outcome).
    pub calls_started: u64,
    /// Calls the backend ended itself: full response, deliberate reset, or error status.
    pub calls_finished: u64,
    /// Calls being handled right now.
    pub in_flight: u64,
    /// Calls the client ended first: `RST_STREAM` received, or the stream/connection gone
    /// before the backend finished.
    pub cancelled_by_client: u64,
    /// Calls the backend ended with DEADLINE_EXCEEDED because their `grpc-timeout` passed and
    /// `x-enforce-deadline: 1` asked for it (a subset of `calls_finished`). A client usually
    /// cancels at its own deadline first, which counts as `cancelled_by_client` instead.
    pub deadlines_exceeded: u64,
    /// gRPC request messages received, every method; streaming methods count each one as
    /// soon as it is complete, so a test can tell a message reached the backend before the
    /// client ended its stream.
    pub messages_received: u64,
    /// TCP connections accepted since start.
    pub connections_accepted: u64,
    /// TCP connections open right now.
    pub connections_open: u64,
}

/// The full header list of one request, pseudo-headers first (`:method`, `:scheme`,
/// `:authority`, `:path`, those present), then regular headers in h2's order. Names are
/// lowercase, values are the raw bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    fields: Vec<(String, Vec<u8>)>,
}

impl RequestHeaders {
    /// The first value of `name` as text; `None` if absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of `name` as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order, as lossy text.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Whether `name` is present at all.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// All names in order (repeated names appear once per value).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(n, _)| n)
    }

    /// All `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    fn from_parts(parts: &http::request::Parts) -> Self {
        let mut fields = Vec::with_capacity(parts.headers.len() + 4);
        fields.push((
            ":method".to_owned(),
            parts.method.as_str().as_bytes().to_vec(),
        ));
        if let Some(scheme) = parts.uri.scheme_str() {
            fields.push((":scheme".to_owned(), scheme.as_bytes().to_vec()));
        }
        if let Some(authority) = parts.uri.authority() {
            fields.push((
                ":authority".to_owned(),
                authority.as_str().as_bytes().to_vec(),
            ));
        }
        if let Some(path) = parts.uri.path_and_query() {
            fields.push((":path".to_owned(), path.as_str().as_bytes().to_vec()));
        }
        for (name, value) in &parts.headers {
            fields.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
        }
        RequestHeaders { fields }
    }
}

/// Entry point: see [`Backend::start`].
pub struct Backend;

impl Backend {
    /// Binds `config.listen` now, then serves on a new thread with its own tokio runtime
    /// until the handle is shut down, killed or dropped.
    pub fn start(config: BackendConfig) -> io::Result<BackendHandle> {
        let listener = bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let runtime = build_runtime(config.threads)?;
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
            last_request_headers: Mutex::new(None),
        });
        let (control_tx, control_rx) = watch::channel(Control::default());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{}", shared.config.name))
            .spawn(move || {
                runtime.block_on(serve(listener, thread_shared, control_rx));
                // Dropping the runtime drops every remaining task, closing their sockets.
                drop(runtime);
            })?;
        Ok(BackendHandle {
            local_addr,
            shared,
            control: control_tx,
            thread: Mutex::new(Some(thread)),
        })
    }
}

/// Controls a running backend. Dropping it shuts the backend down gracefully (bounded by
/// [`BackendConfig::shutdown_grace_ms`]).
pub struct BackendHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackendHandle {
    /// The bound address (with the real port when `listen` used port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The name sent as `x-backend`.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BackendStats {
        self.shared.counters.snapshot()
    }

    /// The most recent request's full header list, or `None` before the first request.
    pub fn last_request_headers(&self) -> Option<RequestHeaders> {
        lock(&self.shared.last_request_headers).clone()
    }

    /// Polls the counters every 5 ms until `done` holds or `timeout` passes; returns the last
    /// snapshot either way. Needs a tokio timer (any tokio runtime).
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        done: impl Fn(&BackendStats) -> bool,
    ) -> BackendStats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) || Instant::now() >= deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a graceful GOAWAY on every open connection: in-flight calls complete, new
    /// streams on those connections are refused after about one round trip, and each
    /// connection closes once idle. The listener keeps accepting new connections.
    pub fn goaway(&self) {
        self.control.send_modify(|c| c.goaway_generation += 1);
    }

    /// Simulates a pod crash: closes the listener and every connection at once, without
    /// GOAWAY, abandoning in-flight calls. Returns once everything is closed. Idempotent.
    pub fn kill(&self) {
        self.stop(Stop::Kill);
    }

    /// Graceful shutdown: stop accepting, GOAWAY every connection, wait for in-flight calls
    /// (at most [`BackendConfig::shutdown_grace_ms`]), then close everything. Idempotent.
    pub fn shutdown(&self) {
        self.stop(Stop::Graceful);
    }

    fn stop(&self, stop: Stop) {
        self.control.send_modify(|c| {
            if c.stop != Stop::Kill {
                c.stop = stop;
            }
        });
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            // A panic in the serving thread already printed its message; nothing to add.
            let _ = thread.join();
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the handle asks of the serving thread, published through a `watch` channel.
#[derive(Clone, Copy, Debug, Default)]
struct Control {
    goaway_generation: u64,
    stop: Stop,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stop {
    #[default]
    Running,
    Graceful,
    Kill,
}

struct Shared {
    config: BackendConfig,
    counters: Counters,
    last_request_headers: Mutex<Option<RequestHeaders>>,
}

#[derive(Default)]
struct Counters {
    calls_started: AtomicU64,
    calls_finished: AtomicU64,
    in_flight: AtomicU64,
    cancelled_by_client: AtomicU64,
    deadlines_exceeded: AtomicU64,
    messages_received: AtomicU64,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> BackendStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BackendStats {
            calls_started: get(&self.calls_started),
            calls_finished: get(&self.calls_finished),
            in_flight: get(&self.in_flight),
            cancelled_by_client: get(&self.cancelled_by_client),
            deadlines_exceeded: get(&self.deadlines_exceeded),
            messages_received: get(&self.messages_received),
            connections_accepted: get(&self.connections_accepted),
            connections_open: get(&self.connections_open),
        }
    }
}

/// Locks a mutex, ignoring poisoning: the guarded values are plain data that a panicking
/// holder cannot leave half-written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    // A deep backlog so a thousand connections arriving at once are queued, not refused.
    const LISTEN_BACKLOG: i32 = 4096;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn build_runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// The accept loop; returns when the handle asks to stop (after the grace period for a
/// graceful stop).
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut control: watch::Receiver<Control>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            debug!(%error, "backend: listener registration failed");
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => {
                    connections.spawn(serve_connection(socket, shared.clone(), control.clone()));
                }
                Err(error) => {
                    // Usually EMFILE; back off instead of spinning.
                    debug!(%error, "backend: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = control.changed() => {
                let stop = if changed.is_err() { Stop::Kill } else { control.borrow().stop };
                match stop {
                    Stop::Running => {}
                    Stop::Graceful => break,
                    Stop::Kill => return,
                }
            }
        }
    }
    drop(listener);
    drain(&mut connections, &shared, &mut control).await;
}

/// Waits until every connection has closed, or the grace period ends, or a kill arrives. h2's
/// graceful shutdown closes a connection by itself once its GOAWAY handshake (GOAWAY, PING, the
/// final GOAWAY with the last stream id) is done and its streams have ended.
///
/// A client that never answers the PING (its task is not being polled) would hold the drain for
/// the whole grace period, so once no call is in flight the drain also ends after
/// [`UNANSWERED_HANDSHAKE`]. That is far longer than a live client takes to answer, even a debug
/// build on a loaded machine: closing earlier (it was 10 ms) reset streams a busy client had sent
/// before it read the GOAWAY, which it could not tell from processed ones, so a proxy in front
/// failed them instead of retrying (seen once in tests/scaling.rs's rolling update).
async fn drain(
    connections: &mut JoinSet<()>,
    shared: &Shared,
    control: &mut watch::Receiver<Control>,
) {
    const UNANSWERED_HANDSHAKE: Duration = Duration::from_millis(250);
    let started = Instant::now();
    let grace = Duration::from_millis(shared.config.shutdown_grace_ms);
    while !connections.is_empty() && started.elapsed() < grace {
        let idle = shared.counters.in_flight.load(Ordering::Relaxed) == 0;
        if idle && started.elapsed() >= UNANSWERED_HANDSHAKE {
            return;
        }
        tokio::select! {
            _ = connections.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            changed = control.changed() => {
                if changed.is_err() || control.borrow().stop == Stop::Kill {
                    return;
                }
            }
        }
    }
}

/// Decrements `connections_open` however the connection task ends (including being dropped
/// by a kill).
struct ConnectionGuard<'a>(&'a Counters);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    shared: Arc<Shared>,
    mut control: watch::Receiver<Control>,
) {
    let counters = &shared.counters;
    counters
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let _guard = ConnectionGuard(counters);
    // Small gRPC frames must not wait for Nagle.
    let _ = socket.set_nodelay(true);

    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(shared.config.initial_stream_window_bytes)
        .initial_connection_window_size(shared.config.initial_connection_window_bytes);
    if let Some(max) = shared.config.max_concurrent_streams {
        builder.max_concurrent_streams(max);
    }
    let mut connection = tokio::select! {
        handshake = builder.handshake::<_, Bytes>(socket) => match handshake {
            Ok(connection) => connection,
            Err(error) => {
                debug!(%error, "backend: h2 handshake failed");
                return;
            }
        },
        _ = control.wait_for(|c| c.stop == Stop::Kill) => return,
    };

    let initial = *control.borrow_and_update();
    let mut goaway_seen = initial.goaway_generation;
    if initial.stop != Stop::Running {
        connection.graceful_shutdown();
    }
    let mut control_open = true;
    loop {
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    tokio::spawn(handle_call(request, respond, shared.clone()));
                }
                Some(Err(error)) => {
                    debug!(%error, "backend: connection error");
                    return;
                }
                None => return,
            },
            changed = control.changed(), if control_open => {
                if changed.is_err() {
                    control_open = false;
                    continue;
                }
                let now = *control.borrow_and_update();
                if now.stop == Stop::Kill {
                    return;
                }
                if now.stop == Stop::Graceful || now.goaway_generation != goaway_seen {
                    goaway_seen = now.goaway_generation;
                    connection.graceful_shutdown();
                }
            }
        }
    }
}

/// The client went away first (reset the stream, or the connection died).
#[derive(Debug)]
struct Cancelled;

/// Counts a call as started on creation, and as finished, cancelled or (when dropped by a
/// kill) neither on drop.
struct CallGuard<'a> {
    counters: &'a Counters,
    outcome: Option<Result<(), Cancelled>>,
}

impl<'a> CallGuard<'a> {
    /// Returns the guard and the call's index (0-based, in order of arrival).
    fn start(counters: &'a Counters) -> (Self, u64) {
        let index = counters.calls_started.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = CallGuard {
            counters,
            outcome: None,
        };
        (guard, index)
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        match self.outcome {
            Some(Ok(())) => self.counters.calls_finished.fetch_add(1, Ordering::Relaxed),
            Some(Err(Cancelled)) => self
                .counters
                .cancelled_by_client
                .fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle_call(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    shared: Arc<Shared>,
) {
    let (mut guard, index) = CallGuard::start(&shared.counters);
    guard.outcome = Some(run_call(request, respond, &shared, index).await);
}

/// Checks the request, plans the call, and runs it, within its `grpc-timeout` when asked to
/// enforce it. The deadline counts from the arrival of the request headers, as a gRPC
/// server's does.
async fn run_call(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: &Shared,
    index: u64,
) -> Result<(), Cancelled> {
    let arrived = Instant::now();
    let config = &shared.config;
    let (parts, body) = request.into_parts();
    *lock(&shared.last_request_headers) = Some(RequestHeaders::from_parts(&parts));

    if !is_grpc_request(&parts.method, &parts.headers) {
        let text = "invalid gRPC request: expected POST with content-type application/grpc\n";
        let status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return send_plain(&mut respond, status, text, &config.name);
    }
    let response_content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/grpc"));
    let reply = Reply {
        name: &config.name,
        content_type: response_content_type,
    };
    let path = parts.uri.path();
    let plan = CallPlan::from_request(path, &parts.headers, config, index);
    let deadline = match &plan {
        Ok(plan) if plan.enforce_deadline => plan
            .timeout
            .and_then(|timeout| arrived.checked_add(timeout)),
        _ => None,
    };
    let mut out = Out {
        respond,
        stream: None,
        ended: false,
    };
    let call = serve_call(path, plan, body, &mut out, &reply, shared);
    let Some(deadline) = deadline else {
        return call.await;
    };
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(result) => result,
        // The call's work outlived its deadline: end it as a gRPC server does, with
        // DEADLINE_EXCEEDED (trailers-only if nothing was sent yet, else as trailers).
        Err(_) if out.ended => Ok(()),
        Err(_) => {
            shared
                .counters
                .deadlines_exceeded
                .fetch_add(1, Ordering::Relaxed);
            let status = Status::new(4, "deadline exceeded");
            out.finish(&reply, &status, HeaderMap::new())
        }
    }
}

/// Routes a call by how it reads its request: not at all before replying (an early reply),
/// message by message (client and bidirectional streaming), or whole before answering
/// (every other method).
async fn serve_call(
    path: &str,
    plan: Result<CallPlan, String>,
    mut body: RecvStream,
    out: &mut Out,
    reply: &Reply<'_>,
    shared: &Shared,
) -> Result<(), Cancelled> {
    let plan = match plan {
        Ok(plan) => plan,
        Err(message) => {
            // A streaming client may wait for a reply before it ends its stream, so streaming
            // methods are answered at once; the others after their body, as before any call.
            if !is_streaming_path(path) {
                let bytes_max = shared.config.request_body_bytes_max;
                if let Err(BodyError::Cancelled) = read_body(&mut body, bytes_max).await {
                    return Err(Cancelled);
                }
            }
            return out.trailers_only(reply, &Status::new(3, message), &HeaderMap::new());
        }
    };
    if plan.reply_before_body.is_some() {
        return reply_before_body(plan, body, out, reply).await;
    }
    match plan.kind {
        CallKind::ClientStream => client_stream(plan, body, out, reply, shared).await,
        CallKind::BidiStream => bidi_stream(plan, body, out, reply, shared).await,
        _ => whole_body(plan, body, out, reply, shared).await,
    }
}

/// Unary, server streaming, health and unknown methods: the whole body first, then the reply.
async fn whole_body(
    plan: CallPlan,
    mut body: RecvStream,
    out: &mut Out,
    reply: &Reply<'_>,
    shared: &Shared,
) -> Result<(), Cancelled> {
    let bytes_max = shared.config.request_body_bytes_max;
    let request_body = match read_body(&mut body, bytes_max).await {
        Ok(request_body) => request_body,
        Err(BodyError::Cancelled) => return Err(Cancelled),
        Err(BodyError::TooLarge) => return refuse_too_large(out, reply, bytes_max).await,
    };
    drop(body);
    let messages = match split_frames(&request_body) {
        Ok(messages) => messages,
        Err(message) => {
            return out.trailers_only(reply, &Status::new(13, message), &HeaderMap::new())
        }
    };
    shared
        .counters
        .messages_received
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    sleep_unless_reset(plan.delay, |cx| out.respond.poll_reset(cx)).await?;
    execute(plan, request_body, messages, out, reply).await
}

/// `/ClientStream`: takes each request message as it arrives (counted in
/// [`BackendStats::messages_received`] at once), then answers after the client's END_STREAM.
async fn client_stream(
    plan: CallPlan,
    mut body: RecvStream,
    out: &mut Out,
    reply: &Reply<'_>,
    shared: &Shared,
) -> Result<(), Cancelled> {
    let bytes_max = shared.config.request_body_bytes_max;
    let mut reader = MessageReader::new(bytes_max);
    let mut messages = Vec::new();
    let mut total_bytes = 0usize;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| Cancelled)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        reader.push(&chunk);
        loop {
            let message = match reader.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(TooLarge) => return refuse_too_large(out, reply, bytes_max).await,
            };
            total_bytes += message.len();
            if total_bytes > bytes_max {
                return refuse_too_large(out, reply, bytes_max).await;
            }
            shared
                .counters
                .messages_received
                .fetch_add(1, Ordering::Relaxed);
            messages.push(message);
        }
    }
    if let Err(message) = reader.finish() {
        return out.trailers_only(reply, &Status::new(13, message), &HeaderMap::new());
    }
    drop(body);
    sleep_unless_reset(plan.delay, |cx| out.respond.poll_reset(cx)).await?;
    execute(plan, Bytes::new(), messages, out, reply).await
}

/// `/BidiStream`: the response headers at once (after the delay), then each request message
/// echoed as its own DATA frame as soon as it is complete, then the trailers after the
/// client's END_STREAM.
async fn bidi_stream(
    plan: CallPlan,
    mut body: RecvStream,
    out: &mut Out,
    reply: &Reply<'_>,
    shared: &Shared,
) -> Result<(), Cancelled> {
    sleep_unless_reset(plan.delay, |cx| out.respond.poll_reset(cx)).await?;
    if !open(&plan, out, reply).await? {
        return Ok(());
    }
    let bytes_max = shared.config.request_body_bytes_max;
    let mut reader = MessageReader::new(bytes_max);
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| Cancelled)?;
        reader.push(&chunk);
        loop {
            let message = match reader.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(TooLarge) => {
                    let message = format!("request message exceeds {bytes_max} bytes");
                    out.finish(reply, &Status::new(8, message), HeaderMap::new())?;
                    return out.flush_then_reset(Reason::NO_ERROR).await;
                }
            };
            shared
                .counters
                .messages_received
                .fetch_add(1, Ordering::Relaxed);
            let echo = match plan.response_bytes {
                Some(bytes) => pattern_frame(bytes),
                None => frame(message),
            };
            send_all(out.stream()?, echo).await?;
        }
        // Window is given back only once the echoes are sent: a client that does not read its
        // echoes is held back by flow control instead of growing h2's send buffer here.
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Err(message) = reader.finish() {
        return out.finish(reply, &Status::new(13, message), HeaderMap::new());
    }
    close(&plan, out, reply, HeaderMap::new()).await
}

/// `x-reply-before-body`: the complete response (headers, messages, trailers with END_STREAM)
/// without reading the request body. Then either every handle is dropped, and h2 0.4 sends
/// `RST_STREAM(NO_ERROR)` after the queued response (RFC 9113 §8.1: the client may stop
/// sending), or (`drain`) the request body is read to its end and the stream closes cleanly.
async fn reply_before_body(
    mut plan: CallPlan,
    mut body: RecvStream,
    out: &mut Out,
    reply: &Reply<'_>,
) -> Result<(), Cancelled> {
    // No request message to echo: the reply carries pattern messages instead.
    plan.response_bytes.get_or_insert(0);
    let drain = plan.reply_before_body == Some(EarlyReply::Drain);
    sleep_unless_reset(plan.delay, |cx| out.respond.poll_reset(cx)).await?;
    execute(plan, Bytes::new(), Vec::new(), out, reply).await?;
    if drain {
        // The response is complete; whatever the client does with its side now (finish,
        // reset, vanish) does not change this call's outcome.
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
        }
    }
    Ok(())
}

async fn refuse_too_large(
    out: &mut Out,
    reply: &Reply<'_>,
    bytes_max: usize,
) -> Result<(), Cancelled> {
    let status = Status::new(8, format!("request body exceeds {bytes_max} bytes"));
    out.trailers_only(reply, &status, &HeaderMap::new())?;
    // The client may still be uploading: ask it to stop without error (RFC 9113 8.1).
    out.flush_then_reset(Reason::NO_ERROR).await
}

/// Carries out a parsed plan once the request has been read and the delay has passed:
/// `request_body` is the whole body (unary echo), `messages` its messages.
async fn execute(
    plan: CallPlan,
    request_body: Bytes,
    messages: Vec<Bytes>,
    out: &mut Out,
    reply: &Reply<'_>,
) -> Result<(), Cancelled> {
    if !open(&plan, out, reply).await? {
        return Ok(());
    }
    let stream = out.stream()?;
    let mut extra = HeaderMap::new();
    match plan.kind {
        CallKind::Health => send_all(stream, Bytes::from_static(HEALTH_SERVING_FRAME)).await?,
        CallKind::Unary => {
            let body = match plan.response_bytes {
                Some(bytes) => pattern_frame(bytes),
                None => request_body,
            };
            send_all(stream, body).await?;
        }
        CallKind::ServerStream { count, interval } => {
            let message = match plan.response_bytes {
                Some(bytes) => pattern_frame(bytes),
                None => frame(messages.first().cloned().unwrap_or_default()),
            };
            for i in 0..count {
                if i > 0 {
                    sleep_unless_reset(interval, |cx| stream.poll_reset(cx)).await?;
                }
                send_all(stream, message.clone()).await?;
            }
        }
        CallKind::ClientStream | CallKind::BidiStream => {
            let body = match plan.response_bytes {
                Some(bytes) => pattern_frame(bytes),
                None => frame(messages.concat().into()),
            };
            send_all(stream, body).await?;
            let bytes: usize = messages.iter().map(Bytes::len).sum();
            extra.insert(X_REQUEST_MESSAGES, HeaderValue::from(messages.len()));
            extra.insert(X_REQUEST_BYTES, HeaderValue::from(bytes));
        }
        CallKind::Unimplemented => {}
    }
    close(&plan, out, reply, extra).await
}

/// Sends what comes before any message: one of the plan's early ends (a plain HTTP reply, a
/// reset before the headers, a trailers-only reply) or the response headers, then the reset
/// after the headers if asked. Returns whether messages may follow. Precedence: `x-http-status`,
/// `x-reset: before-headers`, the error rate, `x-trailers-only`, an unknown method.
async fn open(plan: &CallPlan, out: &mut Out, reply: &Reply<'_>) -> Result<bool, Cancelled> {
    if let Some(status) = plan.http_status {
        let text = format!("backend {}: HTTP {}\n", reply.name, status.as_u16());
        send_plain(&mut out.respond, status, &text, reply.name)?;
        out.ended = true;
        return Ok(false);
    }
    if let Some((ResetPoint::BeforeHeaders, reason)) = plan.reset {
        out.respond.send_reset(reason);
        out.ended = true;
        return Ok(false);
    }
    let trailers_only = match &plan.kind {
        _ if plan.fail_unavailable => Some(Status::new(14, "backend error rate")),
        _ if plan.trailers_only => Some(plan.status.clone()),
        CallKind::Unimplemented => Some(Status::new(12, "unknown method")),
        _ => None,
    };
    if let Some(status) = trailers_only {
        // One HEADERS frame stands for both headers and trailers: it carries both echoes.
        let mut echoes = plan.echo_headers.clone();
        echoes.extend(plan.echo_trailers.clone());
        out.trailers_only(reply, &status, &echoes)?;
        return Ok(false);
    }
    out.headers(reply, &plan.echo_headers)?;
    if let Some((ResetPoint::AfterHeaders, reason)) = plan.reset {
        out.flush_then_reset(reason).await?;
        return Ok(false);
    }
    Ok(true)
}

/// Ends a call whose messages were sent: the reset after the data if asked, else the trailers
/// with the plan's status, the `x-trailer-echo-*` metadata and `extra`.
async fn close(
    plan: &CallPlan,
    out: &mut Out,
    reply: &Reply<'_>,
    extra: HeaderMap,
) -> Result<(), Cancelled> {
    if let Some((ResetPoint::AfterData, reason)) = plan.reset {
        return out.flush_then_reset(reason).await;
    }
    let mut trailers = plan.echo_trailers.clone();
    trailers.extend(extra);
    out.finish(reply, &plan.status, trailers)
}

/// A gRPC status to end a call with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Status {
    code: u32,
    /// Any Unicode; percent-encoded on the wire.
    message: String,
    /// `x-status-details`: the `ErrorInfo.reason` of a `grpc-status-details-bin` to send.
    details_reason: Option<String>,
}

impl Status {
    fn new(code: u32, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details_reason: None,
        }
    }
}

/// The response side of one call: the `SendResponse`, and the stream once the headers are out.
/// It lives outside the call's future so that a deadline which cuts that future short can still
/// end the call in the right form.
struct Out {
    respond: SendResponse<Bytes>,
    stream: Option<SendStream<Bytes>>,
    /// Whether END_STREAM or a reset has been sent.
    ended: bool,
}

impl Out {
    fn headers(&mut self, reply: &Reply<'_>, echo: &HeaderMap) -> Result<(), Cancelled> {
        let stream = self
            .respond
            .send_response(reply.response(echo), false)
            .map_err(|_| Cancelled)?;
        self.stream = Some(stream);
        Ok(())
    }

    /// The stream of a call whose headers were sent.
    fn stream(&mut self) -> Result<&mut SendStream<Bytes>, Cancelled> {
        // `open` sends the headers before any caller asks; without them there is no stream to
        // write to, which is the same as a stream that is gone.
        self.stream.as_mut().ok_or(Cancelled)
    }

    fn trailers_only(
        &mut self,
        reply: &Reply<'_>,
        status: &Status,
        extra: &HeaderMap,
    ) -> Result<(), Cancelled> {
        let mut response = reply.response(extra);
        response
            .headers_mut()
            .extend(grpc_trailers(status, HeaderMap::new()));
        let stream = self
            .respond
            .send_response(response, true)
            .map_err(|_| Cancelled)?;
        self.stream = Some(stream);
        self.ended = true;
        Ok(())
    }

    /// Ends the call with `status`: as trailers after the headers, or trailers-only if no
    /// headers went out yet.
    fn finish(
        &mut self,
        reply: &Reply<'_>,
        status: &Status,
        extra: HeaderMap,
    ) -> Result<(), Cancelled> {
        let Some(stream) = self.stream.as_mut() else {
            return self.trailers_only(reply, status, &extra);
        };
        self.ended = true;
        stream
            .send_trailers(grpc_trailers(status, extra))
            .map_err(|_| Cancelled)
    }

    /// Resets after giving queued frames time to reach the socket: h2 discards a stream's
    /// still-queued frames when it is reset (except for NO_ERROR), which would turn
    /// "after-data" into "before-headers".
    async fn flush_then_reset(&mut self, reason: Reason) -> Result<(), Cancelled> {
        let pause = Duration::from_millis(FLUSH_BEFORE_RESET_MS);
        self.ended = true;
        match self.stream.as_mut() {
            Some(stream) => {
                sleep_unless_reset(pause, |cx| stream.poll_reset(cx)).await?;
                stream.send_reset(reason);
            }
            None => self.respond.send_reset(reason),
        }
        Ok(())
    }
}

/// Response pieces shared by every gRPC reply of one call.
struct Reply<'a> {
    name: &'a str,
    content_type: HeaderValue,
}

impl Reply<'_> {
    fn response(&self, extra: &HeaderMap) -> Response<()> {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        headers.insert(X_BACKEND, backend_header(self.name));
        for (name, value) in extra {
            headers.append(name, value.clone());
        }
        response
    }
}

const X_BACKEND: HeaderName = HeaderName::from_static("x-backend");
const X_REQUEST_MESSAGES: HeaderName = HeaderName::from_static("x-request-messages");
const X_REQUEST_BYTES: HeaderName = HeaderName::from_static("x-request-bytes");
const GRPC_STATUS_DETAILS_BIN: HeaderName = HeaderName::from_static("grpc-status-details-bin");

fn backend_header(name: &str) -> HeaderValue {
    HeaderValue::from_str(name).unwrap_or_else(|_| HeaderValue::from_static("invalid-name"))
}

fn send_plain(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    text: &str,
    name: &str,
) -> Result<(), Cancelled> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(X_BACKEND, backend_header(name));
    let mut stream = respond
        .send_response(response, false)
        .map_err(|_| Cancelled)?;
    stream
        .send_data(Bytes::copy_from_slice(text.as_bytes()), true)
        .map_err(|_| Cancelled)
}

/// Sends `data` respecting the client's flow-control window, so a slow reader slows the
/// backend instead of growing h2's buffer, and a reset while waiting is noticed.
async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), Cancelled> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let mut capacity = stream.capacity();
        if capacity == 0 {
            capacity = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(capacity)) => capacity,
                _ => return Err(Cancelled),
            };
        }
        let chunk = data.split_to(capacity.min(data.len()));
        stream.send_data(chunk, false).map_err(|_| Cancelled)?;
    }
    Ok(())
}

/// Sleeps for `duration` unless the client resets the stream first.
async fn sleep_unless_reset(
    duration: Duration,
    mut poll_reset: impl FnMut(
        &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Reason, h2::Error>>,
) -> Result<(), Cancelled> {
    if duration.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = poll_fn(&mut poll_reset) => Err(Cancelled),
    }
}

enum BodyError {
    Cancelled,
    TooLarge,
}

/// Reads the whole request body, releasing flow-control capacity as data arrives.
async fn read_body(body: &mut RecvStream, bytes_max: usize) -> Result<Bytes, BodyError> {
    // Most requests arrive in one DATA frame: keep that chunk without copying.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| BodyError::Cancelled)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let total = first.as_ref().map_or(0, Bytes::len) + rest.len() + chunk.len();
        if total > bytes_max {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(earlier) => {
                rest.extend_from_slice(&earlier);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// A request message announced a length above the limit.
#[derive(Debug, PartialEq, Eq)]
struct TooLarge;

/// Cuts gRPC messages out of a request body as its DATA frames arrive, wherever the frames
/// split them, so the streaming methods can act on each message as soon as it is complete.
/// Sans-IO: bytes in, messages out.
struct MessageReader {
    buffer: BytesMut,
    message_bytes_max: usize,
}

impl MessageReader {
    fn new(message_bytes_max: usize) -> Self {
        MessageReader {
            buffer: BytesMut::new(),
            message_bytes_max,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete message's payload; `None` until one is complete. A length prefix
    /// above the limit is an error at once, before its bytes arrive.
    fn next_message(&mut self) -> Result<Option<Bytes>, TooLarge> {
        let Some(header) = self.buffer.get(..GRPC_FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if length > self.message_bytes_max {
            return Err(TooLarge);
        }
        if self.buffer.len() < GRPC_FRAME_HEADER_BYTES + length {
            return Ok(None);
        }
        let mut message = self.buffer.split_to(GRPC_FRAME_HEADER_BYTES + length);
        Ok(Some(message.split_off(GRPC_FRAME_HEADER_BYTES).freeze()))
    }

    /// At the end of the stream: an error naming the leftover if a message was cut short.
    fn finish(&self) -> Result<(), String> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "truncated gRPC message: {} bytes left at the end of the stream",
                self.buffer.len()
            ))
        }
    }
}

fn is_grpc_request(method: &Method, headers: &HeaderMap) -> bool {
    let grpc_content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v == "application/grpc"
                || v.starts_with("application/grpc+")
                || v.starts_with("application/grpc;")
        });
    method == Method::POST && grpc_content_type
}

/// Whether `path` names a method that reads its request message by message.
fn is_streaming_path(path: &str) -> bool {
    path.ends_with("/ClientStream") || path.ends_with("/BidiStream")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResetPoint {
    BeforeHeaders,
    AfterHeaders,
    AfterData,
}

/// `x-reply-before-body`: what happens to the unread request side after the early reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EarlyReply {
    /// `1`: drop it; h2 sends `RST_STREAM(NO_ERROR)` after the response.
    Reset,
    /// `drain`: read it to the client's END_STREAM; no reset.
    Drain,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CallKind {
    Health,
    Unary,
    ServerStream { count: u64, interval: Duration },
    ClientStream,
    BidiStream,
    Unimplemented,
}

/// Everything a call will do, decided from its path and metadata before any IO.
#[derive(Clone, Debug)]
struct CallPlan {
    kind: CallKind,
    delay: Duration,
    http_status: Option<StatusCode>,
    reset: Option<(ResetPoint, Reason)>,
    fail_unavailable: bool,
    trailers_only: bool,
    /// The status the call ends with (`x-grpc-status`, `x-grpc-message[-bin]`,
    /// `x-status-details`).
    status: Status,
    response_bytes: Option<usize>,
    echo_headers: HeaderMap,
    echo_trailers: HeaderMap,
    reply_before_body: Option<EarlyReply>,
    /// `grpc-timeout`.
    timeout: Option<Duration>,
    /// `x-enforce-deadline: 1`: end the call with DEADLINE_EXCEEDED when `timeout` passes.
    enforce_deadline: bool,
}

impl CallPlan {
    /// `index` is the call's arrival number, used to apply the error rate exactly.
    fn from_request(
        path: &str,
        headers: &HeaderMap,
        config: &BackendConfig,
        index: u64,
    ) -> Result<CallPlan, String> {
        let kind = if path == HEALTH_CHECK_PATH {
            CallKind::Health
        } else if path.ends_with("/Unary") {
            CallKind::Unary
        } else if path.ends_with("/ServerStream") {
            CallKind::ServerStream {
                count: number(headers, "x-stream-count", STREAM_COUNT_MAX)?.unwrap_or(3),
                interval: millis(headers, "x-stream-interval-ms")?.unwrap_or_default(),
            }
        } else if path.ends_with("/ClientStream") {
            CallKind::ClientStream
        } else if path.ends_with("/BidiStream") {
            CallKind::BidiStream
        } else {
            CallKind::Unimplemented
        };
        let delay = millis(headers, "x-delay-ms")?
            .unwrap_or(Duration::from_millis(config.latency_ms.min(DELAY_MS_MAX)));
        let http_status = match number(headers, "x-http-status", 599)? {
            Some(code) if code >= 200 => StatusCode::from_u16(code as u16).ok(),
            Some(_) => return Err("x-http-status must be 200..=599".to_owned()),
            None => None,
        };
        let response_bytes = number(headers, "x-response-bytes", RESPONSE_BYTES_MAX as u64)?
            .map(|n| n as usize)
            .or(config.response_bytes.map(|n| n.min(RESPONSE_BYTES_MAX)));
        let (echo_headers, echo_trailers) = echo_metadata(headers);
        Ok(CallPlan {
            fail_unavailable: kind != CallKind::Health && fails(config.error_rate, index),
            kind,
            delay,
            http_status,
            reset: reset(headers)?,
            trailers_only: text(headers, "x-trailers-only") == Some("1"),
            status: Status {
                code: number(headers, "x-grpc-status", 16)?.unwrap_or(0) as u32,
                message: grpc_message(headers)?,
                details_reason: details_reason(headers)?,
            },
            response_bytes,
            echo_headers,
            echo_trailers,
            reply_before_body: reply_before_body_mode(headers)?,
            enforce_deadline: match headers.get("x-enforce-deadline").map(HeaderValue::as_bytes) {
                None => false,
                Some(b"1") => true,
                Some(_) => return Err("x-enforce-deadline must be 1".into()),
            },
            timeout: match headers.get("grpc-timeout") {
                None => None,
                Some(value) => {
                    Some(parse_grpc_timeout(value.as_bytes()).ok_or(
                        "grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n)",
                    )?)
                }
            },
        })
    }
}

/// Whether call number `index` falls in the failing fraction `rate`: exactly
/// `floor(n * rate)` of the first `n` calls fail, spread evenly.
fn fails(rate: f64, index: u64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let rate = rate.min(1.0);
    ((index + 1) as f64 * rate).floor() > (index as f64 * rate).floor()
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn number(headers: &HeaderMap, name: &str, max: u64) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match parsed {
        Some(n) if n <= max => Ok(Some(n)),
        _ => Err(format!("{name} must be an integer in 0..={max}")),
    }
}

fn millis(headers: &HeaderMap, name: &str) -> Result<Option<Duration>, String> {
    Ok(number(headers, name, DELAY_MS_MAX)?.map(Duration::from_millis))
}

fn reset(headers: &HeaderMap) -> Result<Option<(ResetPoint, Reason)>, String> {
    let point = match text(headers, "x-reset") {
        None => return Ok(None),
        Some("before-headers") => ResetPoint::BeforeHeaders,
        Some("after-headers") => ResetPoint::AfterHeaders,
        Some("after-data") => ResetPoint::AfterData,
        Some(_) => return Err("x-reset must be before-headers|after-headers|after-data".into()),
    };
    let code = number(headers, "x-reset-code", 0xd)?.unwrap_or(2) as u32;
    Ok(Some((point, Reason::from(code))))
}

fn reply_before_body_mode(headers: &HeaderMap) -> Result<Option<EarlyReply>, String> {
    match headers
        .get("x-reply-before-body")
        .map(HeaderValue::as_bytes)
    {
        None => Ok(None),
        Some(b"1") => Ok(Some(EarlyReply::Reset)),
        Some(b"drain") => Ok(Some(EarlyReply::Drain)),
        Some(_) => Err("x-reply-before-body must be 1 or drain".into()),
    }
}

/// The status message asked for: `x-grpc-message-bin` (base64 of UTF-8, padded or not, as
/// binary metadata is sent by gRPC clients that cannot put non-ASCII in a header), else
/// `x-grpc-message` taken as raw UTF-8 bytes.
fn grpc_message(headers: &HeaderMap) -> Result<String, String> {
    if let Some(value) = headers.get("x-grpc-message-bin") {
        let bytes = BASE64_ANY_PADDING
            .decode(value.as_bytes())
            .map_err(|_| "x-grpc-message-bin must be base64")?;
        return String::from_utf8(bytes)
            .map_err(|_| "x-grpc-message-bin must be base64 of UTF-8 text".to_owned());
    }
    match headers.get("x-grpc-message") {
        None => Ok(String::new()),
        Some(value) => String::from_utf8(value.as_bytes().to_vec())
            .map_err(|_| "x-grpc-message must be UTF-8".to_owned()),
    }
}

fn details_reason(headers: &HeaderMap) -> Result<Option<String>, String> {
    match headers.get("x-status-details") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(reason) if !reason.is_empty() => Ok(Some(reason.to_owned())),
            _ => Err("x-status-details must be a non-empty ASCII reason".into()),
        },
    }
}

/// Base64 as gRPC binary metadata allows it: the standard alphabet, padded or not.
const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Parses a `grpc-timeout` value (gRPC over HTTP/2: 1 to 8 ASCII digits, then `H`ours,
/// `M`inutes, `S`econds, `m`illiseconds, `u` microseconds or `n`anoseconds).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: the value and every product below fit in a u64.
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Splits the request's `x-echo-*` headers (for the response headers) from its
/// `x-trailer-echo-*` headers (for the trailers); names and values are kept unchanged.
fn echo_metadata(headers: &HeaderMap) -> (HeaderMap, HeaderMap) {
    let mut echo_headers = HeaderMap::new();
    let mut echo_trailers = HeaderMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-echo-") {
            echo_headers.append(name.clone(), value.clone());
        } else if name.as_str().starts_with("x-trailer-echo-") {
            echo_trailers.append(name.clone(), value.clone());
        }
    }
    (echo_headers, echo_trailers)
}

/// `grpc-status`, `grpc-message` (when not empty, percent-encoded), `grpc-status-details-bin`
/// (when the status asks for details) and `extra`.
fn grpc_trailers(status: &Status, mut extra: HeaderMap) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status.code));
    if !status.message.is_empty() {
        // percent_encode only emits visible ASCII, which is always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&status.message)) {
            trailers.insert("grpc-message", value);
        }
    }
    if let Some(reason) = &status.details_reason {
        let details = status_details(status.code, &status.message, reason);
        // Base64 is visible ASCII, always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&STANDARD_NO_PAD.encode(details)) {
            trailers.insert(GRPC_STATUS_DETAILS_BIN, value);
        }
    }
    for (name, values) in extra.drain() {
        if let Some(name) = name {
            trailers.append(name, values);
        }
    }
    trailers
}

/// The `type_url` of the one detail in [`status_details`].
pub const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
/// The `ErrorInfo.domain` of the one detail in [`status_details`].
pub const ERROR_INFO_DOMAIN: &str = "ringway.test";

/// The serialized `google.rpc.Status { code, message, details: [Any { type_url:
/// ERROR_INFO_TYPE_URL, value: ErrorInfo { reason, domain: ERROR_INFO_DOMAIN } }] }` that
/// `x-status-details: reason` sends (base64, unpadded) as `grpc-status-details-bin`. Encoded
/// by hand in the protobuf wire format, so neither side needs generated code: proto3 leaves
/// out fields at their default (code 0, empty message).
pub fn status_details(code: u32, message: &str, reason: &str) -> Vec<u8> {
    let mut error_info = Vec::new();
    proto_bytes(&mut error_info, 1, reason.as_bytes());
    proto_bytes(&mut error_info, 2, ERROR_INFO_DOMAIN.as_bytes());
    let mut any = Vec::new();
    proto_bytes(&mut any, 1, ERROR_INFO_TYPE_URL.as_bytes());
    proto_bytes(&mut any, 2, &error_info);
    let mut status = Vec::new();
    if code != 0 {
        proto_varint(&mut status, 1 << 3); // field 1, wire type 0 (varint)
        proto_varint(&mut status, code as u64);
    }
    if !message.is_empty() {
        proto_bytes(&mut status, 2, message.as_bytes());
    }
    proto_bytes(&mut status, 3, &any);
    status
}

/// A length-delimited field (wire type 2): tag, length, bytes.
fn proto_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    proto_varint(out, field << 3 | 2);
    proto_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn proto_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Percent-encodes a grpc-message as the gRPC HTTP/2 spec requires: every byte outside
/// visible ASCII 0x20–0x7E, and `%` itself, becomes `%XX`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Frames `message` as one uncompressed gRPC message.
pub fn frame(message: Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(GRPC_FRAME_HEADER_BYTES + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
    out.freeze()
}

/// One framed message of `bytes` bytes whose byte `i` is `i % 251`, so truncation or
/// reordering shows up in a comparison.
pub fn pattern_frame(bytes: usize) -> Bytes {
    frame(pattern_message(bytes))
}

/// The payload of [`pattern_frame`].
pub fn pattern_message(bytes: usize) -> Bytes {
    (0..bytes).map(|i| (i % 251) as u8).collect()
}

/// Splits a body into the payloads of its gRPC frames; errors if a frame is incomplete.
pub fn split_frames(body: &Bytes) -> Result<Vec<Bytes>, String> {
    let mut messages = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let header_end = at + GRPC_FRAME_HEADER_BYTES;
        if header_end > body.len() {
            return Err(format!("truncated gRPC frame header at byte {at}"));
        }
        let mut length = [0u8; 4];
        length.copy_from_slice(&body[at + 1..header_end]);
        let end = header_end.saturating_add(u32::from_be_bytes(length) as usize);
        if end > body.len() {
            return Err(format!("truncated gRPC message at byte {at}"));
        }
        messages.push(body.slice(header_end..end));
        at = end;
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    fn plan(path: &str, pairs: &[(&'static str, &'static str)]) -> Result<CallPlan, String> {
        CallPlan::from_request(path, &headers(pairs), &BackendConfig::default(), 0)
    }

    #[test]
    fn kind_follows_the_method_name_of_any_service() {
        assert_eq!(plan("/a.B/Unary", &[]).unwrap().kind, CallKind::Unary);
        assert_eq!(plan("/x/Unary", &[]).unwrap().kind, CallKind::Unary);
        assert_eq!(
            plan("/a.B/Other", &[]).unwrap().kind,
            CallKind::Unimplemented
        );
        assert_eq!(
            plan("/a.B/UnaryX", &[]).unwrap().kind,
            CallKind::Unimplemented
        );
        assert_eq!(plan(HEALTH_CHECK_PATH, &[]).unwrap().kind, CallKind::Health);
        let stream = plan(
            "/a.B/ServerStream",
            &[("x-stream-count", "7"), ("x-stream-interval-ms", "15")],
        );
        assert_eq!(
            stream.unwrap().kind,
            CallKind::ServerStream {
                count: 7,
                interval: Duration::from_millis(15)
            }
        );
    }

    #[test]
    fn hostile_metadata_is_rejected_with_the_header_name() {
        for (name, value) in [
            ("x-stream-count", "-1"),
            ("x-stream-count", "99999999999"),
            ("x-delay-ms", "1e3"),
            ("x-http-status", "99"),
            ("x-http-status", "600"),
            ("x-grpc-status", "17"),
            ("x-reset", "sometimes"),
            ("x-reset-code", "14"),
            ("x-response-bytes", "99999999999"),
            ("grpc-timeout", "1x"),
            ("x-grpc-message-bin", "%%%"),
        ] {
            let error = plan(
                "/a.B/ServerStream",
                &[(name, value), ("x-reset", "after-data")],
            )
            .expect_err(name);
            assert!(error.contains(name) || name == "x-reset", "{name}: {error}");
        }
    }

    #[test]
    fn reset_code_defaults_to_internal_error() {
        let p = plan("/a.B/Unary", &[("x-reset", "after-headers")]).unwrap();
        assert_eq!(
            p.reset,
            Some((ResetPoint::AfterHeaders, Reason::INTERNAL_ERROR))
        );
        let p = plan(
            "/a.B/Unary",
            &[("x-reset", "before-headers"), ("x-reset-code", "7")],
        )
        .unwrap();
        assert_eq!(
            p.reset,
            Some((ResetPoint::BeforeHeaders, Reason::REFUSED_STREAM))
        );
    }

    #[test]
    fn echo_metadata_keeps_names_and_binary_values() {
        let mut h = headers(&[
            ("x-echo-a", "1"),
            ("x-trailer-echo-b", "2"),
            ("x-other", "3"),
        ]);
        h.append("x-echo-c-bin", HeaderValue::from_static("AAEC"));
        let (head, trail) = echo_metadata(&h);
        assert_eq!(head.len(), 2);
        assert_eq!(head["x-echo-c-bin"], "AAEC");
        assert_eq!(trail.len(), 1);
        assert_eq!(trail["x-trailer-echo-b"], "2");
    }

    #[test]
    fn error_rate_fails_an_exact_evenly_spread_fraction() {
        let failed: Vec<u64> = (0..100).filter(|&i| fails(0.1, i)).collect();
        assert_eq!(failed, vec![9, 19, 29, 39, 49, 59, 69, 79, 89, 99]);
        assert_eq!((0..1000).filter(|&i| fails(0.25, i)).count(), 250);
        assert!((0..100).all(|i| !fails(0.0, i)));
        assert!((0..100).all(|i| fails(1.0, i)));
        assert!((0..100).all(|i| fails(7.0, i)));
    }

    #[test]
    fn percent_encoding_follows_the_grpc_spec() {
        assert_eq!(percent_encode("plain text"), "plain text");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("a\nb"), "a%0Ab");
        assert_eq!(percent_encode("ü"), "%C3%BC");
    }

    #[test]
    fn frames_split_and_truncation_is_an_error() {
        let body: Bytes = [frame(Bytes::from_static(b"ab")), frame(Bytes::new())]
            .concat()
            .into();
        let messages = split_frames(&body).unwrap();
        assert_eq!(messages, vec![Bytes::from_static(b"ab"), Bytes::new()]);
        assert!(split_frames(&Bytes::new()).unwrap().is_empty());
        assert!(split_frames(&Bytes::from_static(&[0, 0, 0])).is_err());
        assert!(split_frames(&Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert!(split_frames(&Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff])).is_err());
    }

    #[test]
    fn streaming_kinds_and_their_early_errors() {
        assert_eq!(
            plan("/a.B/ClientStream", &[]).unwrap().kind,
            CallKind::ClientStream
        );
        assert_eq!(
            plan("/a.B/BidiStream", &[]).unwrap().kind,
            CallKind::BidiStream
        );
        assert!(is_streaming_path("/a.B/ClientStream"));
        assert!(is_streaming_path("/x/BidiStream"));
        assert!(!is_streaming_path("/a.B/Unary"));
        assert!(!is_streaming_path("/a.B/BidiStreamX"));
    }

    #[test]
    fn reply_before_body_modes() {
        let mode = |v: &'static str| plan("/a.B/Unary", &[("x-reply-before-body", v)]);
        assert_eq!(
            mode("1").unwrap().reply_before_body,
            Some(EarlyReply::Reset)
        );
        assert_eq!(
            mode("drain").unwrap().reply_before_body,
            Some(EarlyReply::Drain)
        );
        assert!(plan("/a.B/Unary", &[]).unwrap().reply_before_body.is_none());
        for bad in ["0", "yes", "", "DRAIN"] {
            let error = mode(bad).expect_err(bad);
            assert!(error.contains("x-reply-before-body"), "{error}");
        }
    }

    #[test]
    fn grpc_timeout_units_and_hostile_values() {
        let t = |v: &str| parse_grpc_timeout(v.as_bytes());
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(t("0m"), Some(Duration::ZERO));
        for bad in [
            "",
            "m",
            "10",
            "123456789m",
            "1.5S",
            "-1S",
            "1s",
            "1 S",
            " 1S",
            "1SS",
            "1\u{e9}",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(parse_grpc_timeout(&[b'1', 0xff]), None);
        let p = plan("/a.B/Unary", &[("grpc-timeout", "150m")]).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_millis(150)));
        assert!(!p.enforce_deadline, "recorded, not enforced, unless asked");
        let p = plan("/a.B/Unary", &[("x-enforce-deadline", "1")]).unwrap();
        assert!(p.enforce_deadline);
        let error = plan("/a.B/Unary", &[("x-enforce-deadline", "yes")]).unwrap_err();
        assert!(error.contains("x-enforce-deadline"), "{error}");
        let error = plan("/a.B/Unary", &[("grpc-timeout", "soon")]).unwrap_err();
        assert!(error.contains("grpc-timeout"), "{error}");
    }

    #[test]
    fn status_message_from_raw_utf8_or_base64() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-grpc-message",
            HeaderValue::from_bytes("caf\u{e9} \u{2603}".as_bytes()).unwrap(),
        );
        assert_eq!(grpc_message(&h).unwrap(), "caf\u{e9} \u{2603}");
        // -bin wins, padded or not.
        for encoded in ["w7xiZXI=", "w7xiZXI"] {
            h.insert("x-grpc-message-bin", HeaderValue::from_static(encoded));
            assert_eq!(grpc_message(&h).unwrap(), "\u{fc}ber");
        }
        h.insert("x-grpc-message-bin", HeaderValue::from_static("!!!"));
        assert!(grpc_message(&h).unwrap_err().contains("base64"));
        h.insert("x-grpc-message-bin", HeaderValue::from_static("/w")); // 0xff
        assert!(grpc_message(&h).unwrap_err().contains("UTF-8"));
        let mut h = HeaderMap::new();
        h.insert("x-grpc-message", HeaderValue::from_bytes(&[0xc3]).unwrap());
        assert!(grpc_message(&h).unwrap_err().contains("x-grpc-message"));
        assert_eq!(grpc_message(&HeaderMap::new()).unwrap(), "");
        let error = plan("/a.B/Unary", &[("x-status-details", "")]).unwrap_err();
        assert!(error.contains("x-status-details"), "{error}");
    }

    #[test]
    fn status_details_are_a_hand_encoded_google_rpc_status() {
        let error_info = [&[0x0a, 1, b'R', 0x12, 12][..], b"ringway.test"].concat();
        let any = [
            &[0x0a, 40][..],
            b"type.googleapis.com/google.rpc.ErrorInfo",
            &[0x12, error_info.len() as u8],
            &error_info,
        ]
        .concat();
        let expected = [
            &[0x08, 5, 0x12, 2, b'n', b'f', 0x1a, any.len() as u8][..],
            &any,
        ]
        .concat();
        assert_eq!(status_details(5, "nf", "R"), expected);
        // proto3 leaves out a zero code and an empty message.
        assert_eq!(status_details(0, "", "R")[0], 0x1a);
        let mut varint = Vec::new();
        proto_varint(&mut varint, 300);
        assert_eq!(varint, [0xac, 0x02]);

        let status = Status {
            code: 9,
            message: "n\u{e4}".into(),
            details_reason: Some("QUOTA".into()),
        };
        let trailers = grpc_trailers(&status, HeaderMap::new());
        assert_eq!(trailers["grpc-status"], "9");
        assert_eq!(trailers["grpc-message"], "n%C3%A4");
        let details = STANDARD_NO_PAD
            .decode(trailers["grpc-status-details-bin"].as_bytes())
            .unwrap();
        assert_eq!(details, status_details(9, "n\u{e4}", "QUOTA"));
    }

    #[test]
    fn message_reader_cuts_messages_wherever_frames_split_them() {
        let body: Bytes = [
            frame(Bytes::from_static(b"one")),
            frame(Bytes::new()),
            frame(pattern_message(300)),
        ]
        .concat()
        .into();
        for step in [1, 2, 4, 5, 6, 7, 300, body.len()] {
            let mut reader = MessageReader::new(1000);
            let mut messages = Vec::new();
            for piece in body.chunks(step) {
                reader.push(piece);
                while let Some(message) = reader.next_message().unwrap() {
                    messages.push(message);
                }
            }
            assert_eq!(
                messages,
                [
                    Bytes::from_static(b"one"),
                    Bytes::new(),
                    pattern_message(300)
                ],
                "step {step}"
            );
            assert_eq!(reader.finish(), Ok(()));
        }
    }

    #[test]
    fn message_reader_refuses_oversized_and_truncated_messages() {
        let mut reader = MessageReader::new(10);
        // The length prefix alone is enough to refuse: no waiting for 4 GiB.
        reader.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(reader.next_message(), Err(TooLarge));
        let mut reader = MessageReader::new(10);
        reader.push(&frame(pattern_message(11)));
        assert_eq!(reader.next_message(), Err(TooLarge));
        let mut reader = MessageReader::new(10);
        reader.push(&[0, 0, 0]);
        assert_eq!(reader.next_message(), Ok(None));
        assert!(reader.finish().unwrap_err().contains("3 bytes left"));
        let mut reader = MessageReader::new(10);
        reader.push(&[0, 0, 0, 0, 4, b'a']);
        assert_eq!(reader.next_message(), Ok(None));
        assert!(reader.finish().is_err());
    }

    #[test]
    fn grpc_requests_need_post_and_a_grpc_content_type() {
        let ct = |v: &'static str| headers(&[("content-type", v)]);
        assert!(is_grpc_request(&Method::POST, &ct("application/grpc")));
        assert!(is_grpc_request(
            &Method::POST,
            &ct("application/grpc+proto")
        ));
        assert!(!is_grpc_request(&Method::GET, &ct("application/grpc")));
        assert!(!is_grpc_request(&Method::POST, &ct("application/grpc-web")));
        assert!(!is_grpc_request(&Method::POST, &ct("text/plain")));
        assert!(!is_grpc_request(&Method::POST, &HeaderMap::new()));
    }
}
