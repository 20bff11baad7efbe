//! The load generator: gRPC-Web calls over HTTP/1.1 keep-alive connections, or gRPC-Web or
//! native gRPC calls over HTTP/2 connections carrying many streams each; thread per core on
//! monoio, closed loop or open loop at a fixed rate, with per-pod distribution over time.
//!
//! [`start`] runs the load on its own threads and returns a [`LoadHandle`] at once; the caller
//! reads live [`Snapshot`]s, may [`LoadHandle::stop`] early, and [`LoadHandle::join`]s for the
//! [`Report`]. The `ringway-load run` command and the scale scenario are both thin callers.
//!
//! The data path is four files: this one (configuration and the handle), `worker.rs` (each
//! thread's runtime and call loops, and the HTTP/1.1 IO), `wire.rs` (request bytes and strict
//! response parsing, sans-IO) and `stats.rs` (counters, windows, histogram). The HTTP/2 mode
//! adds `h2.rs` (its IO: shared connections driven by the h2 crate) and `wire_h2.rs` (its
//! request head and response judgement, sans-IO). HTTPS targets add `tls.rs` (the rustls client
//! stream both run over); the Connect protocol adds `wire_connect.rs` (its request and
//! judgement, sans-IO). `report.rs` turns the numbers into a table, JSON and an SVG chart.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

mod h2;
mod report;
pub mod stats;
mod tls;
pub mod wire;
pub mod wire_connect;
pub mod wire_h2;
mod worker;

pub use stats::imbalance;
pub use tls::{read_ca_file, KeyExchange, TlsTarget};
pub use wire::{CallKind, ErrorKind, Mode};
pub use wire_h2::Protocol;

/// Most connections a run may open.
pub const CONNECTIONS_MAX: usize = 100_000;
/// Most worker threads.
pub const THREADS_MAX: usize = 1024;
/// Most concurrent streams per HTTP/2 connection (`--streams`).
pub const STREAMS_MAX: usize = 10_000;
/// Most concurrent calls in total (connections × streams): each is a task with its buffers.
pub const CONCURRENT_CALLS_MAX: usize = 1_000_000;
/// How long in-flight calls may still finish after the run's end or [`LoadHandle::stop`].
pub const STOP_GRACE: Duration = Duration::from_secs(1);
/// Shortest window; shorter ones would make the per-window table mostly noise.
pub const WINDOW_MIN: Duration = Duration::from_millis(10);

/// What to run. [`LoadConfig::default`] is 64 connections on one thread for 10 s, closed loop,
/// unary binary calls of 16 bytes to `/ringway.test.Echo/Unary` on 127.0.0.1:8080.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Address connected to; DNS names are resolved by the caller, once, before the run.
    pub target: SocketAddr,
    /// `Host` header of every request (the target as the user wrote it).
    pub host_header: String,
    pub connections: usize,
    pub threads: usize,
    /// Run length; `None` runs until [`LoadHandle::stop`].
    pub duration: Option<Duration>,
    /// Open loop at this many calls/s in total; `None` is closed loop (each connection sends
    /// its next call as soon as the previous one finishes).
    pub rate: Option<f64>,
    /// gRPC method path, `/package.Service/Method`.
    pub method: String,
    /// Request message size in bytes.
    pub payload_bytes: usize,
    pub mode: Mode,
    pub call: CallKind,
    /// Extra request headers (gRPC metadata) sent with every call.
    pub metadata: Vec<(String, String)>,
    /// Response header (or initial metadata, or trailer) naming the pod that served the call.
    pub backend_header: String,
    /// Length of the per-window distribution buckets.
    pub window: Duration,
    /// Longest time one call may take, connect included, before it counts as `timeout`.
    pub call_timeout: Duration,
    /// Which io driver the threads' monoio runtimes use.
    pub io_driver: IoDriver,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1 keep-alive.
    pub http2: bool,
    /// HTTP/2: concurrent streams per connection, each a closed loop of calls (or its share of
    /// the open-loop rate); 1 with HTTP/1.1.
    pub streams: usize,
    /// gRPC-Web, native gRPC (needs HTTP/2) or Connect.
    pub protocol: Protocol,
    /// HTTPS: TLS to the target (ALPN `h2` with HTTP/2, `http/1.1` otherwise); `None` is
    /// cleartext.
    pub tls: Option<TlsTarget>,
    /// Open a new connection (and TLS handshake) for every call and close it after the
    /// response, to measure what connection setup costs the target.
    pub connection_per_call: bool,
}

/// The io driver of the load threads: io_uring where the kernel allows it, else epoll; or
/// either one forced (tests run both, as monoio's CI does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    #[default]
    Auto,
    Uring,
    Epoll,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: SocketAddr::from(([127, 0, 0, 1], 8080)),
            host_header: "127.0.0.1:8080".to_owned(),
            connections: 64,
            threads: 1,
            duration: Some(Duration::from_secs(10)),
            rate: None,
            method: "/ringway.test.Echo/Unary".to_owned(),
            payload_bytes: 16,
            mode: Mode::Binary,
            call: CallKind::Unary,
            metadata: Vec::new(),
            backend_header: "x-backend".to_owned(),
            window: Duration::from_secs(1),
            call_timeout: Duration::from_secs(10),
            io_driver: IoDriver::Auto,
            http2: false,
            streams: 1,
            protocol: Protocol::GrpcWeb,
            tls: None,
            connection_per_call: false,
        }
    }
}

impl LoadConfig {
    /// Rejects settings outside the generator's limits, with a message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return Err(format!("connections must be 1..={CONNECTIONS_MAX}"));
        }
        if self.threads == 0 || self.threads > THREADS_MAX {
            return Err(format!("threads must be 1..={THREADS_MAX}"));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("rate must be a positive number of calls/s".into());
            }
        }
        if self.window < WINDOW_MIN {
            return Err(format!("window must be at least {WINDOW_MIN:?}"));
        }
        if self.call_timeout.is_zero() {
            return Err("call timeout must be positive".into());
        }
        if self.payload_bytes > u32::MAX as usize / 2 {
            return Err("payload is too large".into());
        }
        if !self.method.starts_with('/') || self.method.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "method {:?} is not a path like /pkg.Service/Method",
                self.method
            ));
        }
        if self.host_header.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err("host header has control characters".into());
        }
        if self.backend_header.is_empty() {
            return Err("backend header must be named".into());
        }
        for (name, value) in &self.metadata {
            wire::check_metadata(name, value)?;
        }
        if self.protocol == Protocol::Connect {
            if self.mode == Mode::Text {
                return Err("Connect has no text mode (that is gRPC-Web's)".into());
            }
            if self.call != CallKind::Unary {
                return Err("the Connect mode makes unary calls only".into());
            }
        }
        if let Some(tls) = &self.tls {
            tls::TlsClient::new(tls, self.http2)?;
        }
        self.validate_http2()
    }

    fn validate_http2(&self) -> Result<(), String> {
        if !self.http2 {
            if self.streams != 1 {
                return Err("streams (concurrent calls per connection) need HTTP/2".into());
            }
            if self.protocol == Protocol::Grpc {
                return Err("native gRPC needs HTTP/2".into());
            }
            return Ok(());
        }
        if self.streams == 0 || self.streams > STREAMS_MAX {
            return Err(format!("streams must be 1..={STREAMS_MAX}"));
        }
        if self.connection_per_call && self.streams != 1 {
            return Err(
                "a connection per call carries one stream: use --connections for concurrency"
                    .into(),
            );
        }
        if self.connections.saturating_mul(self.streams) > CONCURRENT_CALLS_MAX {
            return Err(format!(
                "connections × streams must be at most {CONCURRENT_CALLS_MAX}"
            ));
        }
        if self.protocol == Protocol::Grpc && self.mode == Mode::Text {
            return Err("native gRPC has no text mode (that is gRPC-Web's)".into());
        }
        wire_h2::RequestHead::new(
            &self.method,
            &self.host_header,
            self.protocol,
            self.mode,
            &self.metadata,
            self.tls.is_some(),
        )
        .map(|_| ())
    }

    /// Concurrent calls: one per connection over HTTP/1.1, `streams` per connection over HTTP/2.
    pub fn concurrent_calls(&self) -> usize {
        self.connections * self.streams
    }
}

/// Live view of a run: totals so far and the windows completed so far.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    #[serde(rename = "elapsed_s", serialize_with = "report::secs")]
    pub elapsed: Duration,
    pub calls_ok: u64,
    pub errors: u64,
    pub per_pod: BTreeMap<String, u64>,
    pub windows: Vec<Window>,
}

/// One time window of the run: calls that finished in it, by outcome and pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Start, from the run's start.
    #[serde(rename = "start_s", serialize_with = "report::secs")]
    pub start: Duration,
    pub calls_ok: u64,
    pub errors: u64,
    pub per_pod: BTreeMap<String, u64>,
}

/// The settings a report was made with, so a JSON file stands on its own.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigSummary {
    pub target: String,
    pub host_header: String,
    pub connections: usize,
    pub threads: usize,
    pub method: String,
    pub payload_bytes: usize,
    pub mode: Mode,
    pub call: CallKind,
    pub metadata: Vec<(String, String)>,
    pub backend_header: String,
    pub window_s: f64,
    pub call_timeout_s: f64,
    pub io_driver: IoDriver,
    pub http2: bool,
    pub streams: usize,
    pub protocol: Protocol,
    /// HTTPS: the server name (SNI and certificate check); `None` over cleartext.
    pub tls_server_name: Option<String>,
    pub tls_key_exchange: Option<KeyExchange>,
    pub tls_resumption: bool,
    pub connection_per_call: bool,
}

/// Latency percentiles of successful calls, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub config: ConfigSummary,
    /// Measured run time: from start to the deadline or stop (the drain of in-flight calls
    /// after it is not included; their outcomes are).
    #[serde(rename = "duration_s", serialize_with = "report::secs")]
    pub duration: Duration,
    pub calls_ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Calls finished per second, any outcome except `connect` (no request was sent).
    pub requests_per_s: f64,
    /// The open-loop rate asked for; `None` in a closed loop.
    pub target_rate: Option<f64>,
    /// Calls sent per second.
    pub achieved_rate: f64,
    /// TCP connections made, the first one of each connection included (with HTTP/2, each
    /// carries `streams` calls at a time).
    pub connects: u64,
    /// HTTPS: handshakes completed, and how many of them resumed a session.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    /// HTTPS: completed handshakes by what they agreed on (version, key exchange group,
    /// cipher suite, ALPN), e.g. `TLSv1_3 X25519 TLS13_AES_128_GCM_SHA256 h2`.
    pub tls_negotiated: BTreeMap<String, u64>,
    pub latency_us: Percentiles,
    pub per_pod: BTreeMap<String, u64>,
    pub windows: Vec<Window>,
    /// Max/min share over the whole run (see [`imbalance`]).
    pub imbalance: Option<f64>,
}

/// What every worker thread shares with the handle: a stop flag and the tallies they flush.
pub(crate) struct Shared {
    pub stop: AtomicBool,
    pub tally: Mutex<stats::Tally>,
}

/// A running load. Dropping it without [`LoadHandle::join`] stops the run and waits for it.
pub struct LoadHandle {
    config: LoadConfig,
    started: Instant,
    stopped_at: Mutex<Option<Instant>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<worker::WorkerResult>>,
}

/// Starts the run on `config.threads` threads and returns once they are running.
pub fn start(config: LoadConfig) -> io::Result<LoadHandle> {
    config
        .validate()
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        tally: Mutex::new(stats::Tally::default()),
    });
    let plan = Arc::new(
        worker::Plan::new(&config)
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?,
    );
    let started = Instant::now();
    let mut threads = Vec::with_capacity(config.threads);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for index in 0..config.threads {
        let plan = plan.clone();
        let thread_shared = shared.clone();
        let ready = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("load-{index}"))
            .spawn(move || worker::run(index, plan, thread_shared, started, ready));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
        }
    }
    drop(ready_tx);
    // Each thread reports once its runtime is built (or failed to build).
    for _ in 0..config.threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
            Err(_) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(io::Error::other("a load thread exited before starting"));
            }
        }
    }
    Ok(LoadHandle {
        config,
        started,
        stopped_at: Mutex::new(None),
        shared,
        threads,
    })
}

impl LoadHandle {
    /// Totals so far and the windows completed so far (threads flush every 100 ms, so the
    /// totals lag by about that, and a window is listed once that lag has passed after its end).
    pub fn snapshot(&self) -> Snapshot {
        let elapsed = self.started.elapsed();
        // A window is complete once its end is older than the threads' flush lag (twice the
        // interval, for a thread that is late to its tick); before that its counts still grow.
        let settled = elapsed.saturating_sub(worker::FLUSH_INTERVAL * 2);
        let completed = (settled.as_nanos() / self.config.window.as_nanos()) as u64;
        let completed = match self.config.duration {
            Some(duration) => completed.min(stats::window_count(duration, self.config.window)),
            None => completed,
        };
        let tally = lock(&self.shared.tally);
        Snapshot {
            elapsed,
            calls_ok: tally.calls_ok,
            errors: tally.errors,
            per_pod: tally.per_pod.clone(),
            windows: windows(&tally, completed, self.config.window),
        }
    }

    /// Asks the run to stop: no new calls; in-flight calls get at most [`STOP_GRACE`].
    pub fn stop(&self) {
        let mut stopped_at = lock(&self.stopped_at);
        if stopped_at.is_none() {
            *stopped_at = Some(Instant::now());
        }
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Whether every thread has finished (the duration passed, or stop and its grace).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|thread| thread.is_finished())
    }

    /// Waits for the end of the run and reports it.
    pub fn join(mut self) -> Report {
        let mut histogram = stats::latency_histogram();
        let mut ended_at: Option<Instant> = None;
        for thread in std::mem::take(&mut self.threads) {
            // A worker only panics on a bug; its counters are lost but the others still count.
            if let Ok(result) = thread.join() {
                // Both histograms have the same bounds, so adding cannot fail.
                let _ = histogram.add(&result.histogram);
                ended_at = ended_at.max(Some(result.ended_at));
            }
        }
        let stopped_at = *lock(&self.stopped_at);
        let end = [stopped_at, ended_at].into_iter().flatten().min();
        let duration = end.map_or(self.started.elapsed(), |end| end - self.started);
        let tally = lock(&self.shared.tally);
        report::build(&self.config, duration, &tally, &histogram)
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.stop.store(true, Ordering::Relaxed);
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

/// Windows `0..count` of a tally as the public type.
pub(crate) fn windows(tally: &stats::Tally, count: u64, window: Duration) -> Vec<Window> {
    tally
        .windows_upto(count)
        .into_iter()
        .map(|(index, counts)| Window {
            start: window.saturating_mul(index.min(u32::MAX as u64) as u32),
            calls_ok: counts.calls_ok,
            errors: counts.errors,
            per_pod: counts.per_pod,
        })
        .collect()
}

/// Locks a mutex, ignoring poisoning: the tallies stay consistent per field even if a thread
/// panicked mid-flush, and losing the report over it would be worse.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
