//! One load thread: its own monoio runtime (io_uring, else epoll) driving its share of the
//! connections, each call loop a round of connect → write request → read response → record.
//! Over HTTP/1.1 a call loop owns its connection (the IO is here); over HTTP/2 `--streams` call
//! loops share one connection (the IO is in `h2.rs`). Either runs over TLS for an HTTPS target
//! (`tls.rs`, the handshake in [`connect`]). Request bytes and response judgement come from
//! `wire.rs`, `wire_connect.rs` and `wire_h2.rs`, counting from `stats.rs`.
//!
//! Threads share nothing on the request path: each records into its own tally and histogram
//! and moves the tally into the shared one every [`FLUSH_INTERVAL`].

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};
use tracing::debug;

use super::h2::{H2Connection, H2Slot};
use super::stats::{self, Tally};
use super::tls::{Stream, TlsClient};
use super::wire::{self, ErrorKind, Progress, ResponseParser};
use super::wire_h2::RequestHead;
use super::{lock, wire_connect, IoDriver, LoadConfig, Protocol, Shared, STOP_GRACE};

/// How often a thread moves its counters into the shared tally the snapshot reads.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Wait after a failed connect, doubling per failure up to [`CONNECT_BACKOFF_MAX`], so a dead
/// target is retried steadily rather than in a busy loop.
pub(super) const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Open loop: how late a timer may fire after an idle connection's intended send time without
/// that lateness counting as latency. monoio's timer wheel ticks in milliseconds, so a sleep
/// ends up to one tick late; charging that to the target would add a millisecond to every
/// call of an idle system. Lateness beyond this does count (an overloaded generator shows).
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Longest the end of a run waits for HTTP/2 connections to close (GOAWAY written, peer done).
const H2_CLOSE_GRACE: Duration = Duration::from_millis(200);
/// Initial receive buffer per connection, in bytes; it grows only for lines split across reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What every thread runs, decided once at start.
pub(crate) struct Plan {
    pub config: LoadConfig,
    /// HTTP/1.1: the whole request, head and body.
    pub request: Vec<u8>,
    /// HTTP/2: the request head (`None` over HTTP/1.1) and body.
    pub h2_head: Option<RequestHead>,
    pub h2_body: Vec<u8>,
    /// HTTPS: the rustls client every connection is opened with.
    pub tls: Option<TlsClient>,
    /// Index of the run's last window when the duration is fixed.
    pub last_window: Option<u64>,
}

impl Plan {
    pub fn new(config: &LoadConfig) -> Result<Self, String> {
        let request = match config.protocol {
            Protocol::Connect => wire_connect::encode_request(
                &config.method,
                &config.host_header,
                config.payload_bytes,
                &config.metadata,
            ),
            Protocol::GrpcWeb | Protocol::Grpc => wire::encode_request(
                &config.method,
                &config.host_header,
                config.mode,
                config.payload_bytes,
                &config.metadata,
            ),
        };
        let last_window = config
            .duration
            .map(|duration| stats::window_count(duration, config.window) - 1);
        // `LoadConfig::validate` has built the same head successfully.
        let h2_head = config.http2.then(|| {
            RequestHead::new(
                &config.method,
                &config.host_header,
                config.protocol,
                config.mode,
                &config.metadata,
                config.tls.is_some(),
            )
            .ok()
        });
        let h2_body = match config.protocol {
            Protocol::Connect => wire_connect::encode_body(config.payload_bytes),
            Protocol::GrpcWeb | Protocol::Grpc => {
                wire::encode_body(config.mode, config.payload_bytes).1
            }
        };
        let tls = match &config.tls {
            Some(target) => Some(TlsClient::new(target, config.http2)?),
            None => None,
        };
        Ok(Plan {
            config: config.clone(),
            request,
            h2_head: h2_head.flatten(),
            h2_body,
            tls,
            last_window,
        })
    }
}

/// What a thread hands back when it ends.
pub(crate) struct WorkerResult {
    pub histogram: Histogram<u64>,
    /// When this thread stopped starting calls (deadline or stop), before the drain.
    pub ended_at: Instant,
}

/// State the call loops of one thread share (single-threaded: `Rc`, `Cell`, `RefCell`).
pub(super) struct Local {
    pub plan: Arc<Plan>,
    shared: Arc<Shared>,
    started: Instant,
    deadline: Option<Instant>,
    /// This thread's own copy of the request, so no reference count is shared across threads.
    request: Bytes,
    /// Likewise for the HTTP/2 request body.
    pub h2_body: Bytes,
    stopping: Cell<bool>,
    in_flight: Cell<u64>,
    pub tally: RefCell<Tally>,
    histogram: RefCell<Histogram<u64>>,
}

impl Local {
    fn should_stop(&self, now: Instant) -> bool {
        self.stopping.get()
            || self.shared.stop.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|deadline| now >= deadline)
    }

    fn window(&self, now: Instant) -> u64 {
        stats::window_index(
            now - self.started,
            self.plan.config.window,
            self.plan.last_window,
        )
    }

    fn flush(&self) {
        let mut shared = lock(&self.shared.tally);
        self.tally.borrow_mut().merge_into(&mut shared);
    }
}

/// Thread entry: builds the runtime, says so on `ready`, runs the thread's connections.
pub(crate) fn run(
    index: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    started: Instant,
    ready: Sender<io::Result<()>>,
) -> WorkerResult {
    let deadline = plan.config.duration.map(|duration| started + duration);
    let local = Rc::new(Local {
        request: Bytes::copy_from_slice(&plan.request),
        h2_body: Bytes::copy_from_slice(&plan.h2_body),
        plan,
        shared,
        started,
        deadline,
        stopping: Cell::new(false),
        in_flight: Cell::new(0),
        tally: RefCell::new(Tally::default()),
        histogram: RefCell::new(stats::latency_histogram()),
    });
    // Each arm builds its own runtime type; the thread's future is the same.
    let result = match local.plan.config.io_driver {
        IoDriver::Auto => RuntimeBuilder::<FusionDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| {
                let _ = ready.send(Ok(()));
                runtime.block_on(thread_main(index, local.clone()))
            }),
        IoDriver::Uring => RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| {
                let _ = ready.send(Ok(()));
                runtime.block_on(thread_main(index, local.clone()))
            }),
        IoDriver::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| {
                let _ = ready.send(Ok(()));
                runtime.block_on(thread_main(index, local.clone()))
            }),
    };
    result.unwrap_or_else(|error| {
        let _ = ready.send(Err(error));
        WorkerResult {
            histogram: stats::latency_histogram(),
            ended_at: Instant::now(),
        }
    })
}

async fn thread_main(index: usize, local: Rc<Local>) -> WorkerResult {
    let config = &local.plan.config;
    let slots = config.concurrent_calls();
    let mut h2_connections = Vec::new();
    for connection in (index..config.connections).step_by(config.threads) {
        if !config.http2 {
            let caller = Caller::Http1(Conn::new(config));
            monoio::spawn(call_loop(connection, slots, caller, local.clone()));
            continue;
        }
        let shared_connection = H2Connection::new();
        h2_connections.push(shared_connection.clone());
        for stream in 0..config.streams {
            // Slots of one connection are `connections` apart, so the open loop's consecutive
            // calls go to different connections.
            let slot = stream * config.connections + connection;
            let caller = Caller::Http2(H2Slot::new(shared_connection.clone()));
            monoio::spawn(call_loop(slot, slots, caller, local.clone()));
        }
    }
    let ended_at = loop {
        let now = Instant::now();
        if local.should_stop(now) {
            break local.deadline.map_or(now, |deadline| deadline.min(now));
        }
        let mut wake = now + FLUSH_INTERVAL;
        if let Some(deadline) = local.deadline {
            wake = wake.min(deadline);
        }
        monoio::time::sleep_until(wake.into()).await;
        local.flush();
    };
    local.stopping.set(true);
    let grace_end = Instant::now() + STOP_GRACE;
    while local.in_flight.get() > 0 && Instant::now() < grace_end {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // Calls still running are abandoned with the runtime; each still gets its one outcome.
    let unfinished = local.in_flight.get();
    if unfinished > 0 {
        let window = local.window(Instant::now());
        let mut tally = local.tally.borrow_mut();
        for _ in 0..unfinished {
            tally.record(window, Some(&ErrorKind::Unfinished.name()), None);
        }
        local.in_flight.set(0);
    }
    close_h2(&h2_connections).await;
    local.flush();
    let histogram = local.histogram.replace(stats::latency_histogram());
    WorkerResult {
        histogram,
        ended_at,
    }
}

/// Closes the thread's HTTP/2 connections and gives them [`H2_CLOSE_GRACE`] to finish: the
/// resets of calls that timed out at the end of the run and the GOAWAY still have to be
/// written, and the runtime stops polling them once this thread returns.
async fn close_h2(connections: &[Rc<H2Connection>]) {
    for connection in connections {
        connection.close();
    }
    let close_end = Instant::now() + H2_CLOSE_GRACE;
    while connections.iter().any(|c| c.is_open()) && Instant::now() < close_end {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One connection's state between calls.
struct Conn {
    stream: Option<Stream>,
    read_buffer: Vec<u8>,
    parser: ResponseParser,
    scratch: Vec<u8>,
    /// The last call's pod name, reused across calls so naming a pod allocates nothing.
    pod: String,
    connect_backoff: Duration,
}

impl Conn {
    fn new(config: &LoadConfig) -> Conn {
        Conn {
            stream: None,
            read_buffer: Vec::with_capacity(READ_BUFFER_BYTES),
            parser: ResponseParser::new(&config.backend_header),
            scratch: Vec::new(),
            pod: String::new(),
            connect_backoff: CONNECT_BACKOFF_MIN,
        }
    }
}

/// How one call loop reaches the target: over its own HTTP/1.1 connection, or as one stream
/// slot of a shared HTTP/2 connection.
// One per call loop, moved once into its task: the size difference costs nothing, a box would
// add an indirection to every call.
#[allow(clippy::large_enum_variant)]
enum Caller {
    Http1(Conn),
    Http2(H2Slot),
}

impl Caller {
    async fn call(&mut self, local: &Local) -> Attempt {
        match self {
            Caller::Http1(conn) => call(conn, local).await,
            Caller::Http2(slot) => slot.call(local).await,
        }
    }

    /// The last call's pod, when its [`Attempt::named_pod`] says there is one.
    fn pod(&self) -> &str {
        match self {
            Caller::Http1(conn) => &conn.pod,
            Caller::Http2(slot) => &slot.pod,
        }
    }

    /// The call timed out mid-way: an HTTP/1.1 connection is mid-response and cannot carry
    /// another call; an HTTP/2 stream was reset (CANCEL) when its future was dropped, and the
    /// connection goes on.
    fn abandon_call(&mut self) {
        if let Caller::Http1(conn) = self {
            conn.stream = None;
        }
    }

    /// Wait after a failed connect, doubling per failure.
    fn next_connect_backoff(&mut self) -> Duration {
        let backoff = match self {
            Caller::Http1(conn) => &mut conn.connect_backoff,
            Caller::Http2(slot) => &mut slot.connect_backoff,
        };
        let wait = *backoff;
        *backoff = (wait * 2).min(CONNECT_BACKOFF_MAX);
        wait
    }
}

/// Copies `pod` into the connection's buffer; says whether there was one.
pub(super) fn keep_pod(buffer: &mut String, pod: Option<&str>) -> bool {
    buffer.clear();
    match pod {
        Some(pod) => {
            buffer.push_str(pod);
            true
        }
        None => false,
    }
}

/// What a call attempt came to, before accounting; the pod's name, when `named_pod`, is in
/// [`Caller::pod`].
pub(super) struct Attempt {
    pub result: Result<(), ErrorKind>,
    pub named_pod: bool,
}

impl Attempt {
    pub fn failed(kind: ErrorKind) -> Attempt {
        Attempt {
            result: Err(kind),
            named_pod: false,
        }
    }
}

/// One call loop: the next call when it is due (at once in a closed loop; at its slot's turn
/// of the open-loop schedule), its one outcome recorded, again until the run ends. `slot` of
/// `slots` is this loop's place in the schedule.
async fn call_loop(slot: usize, slots: usize, mut caller: Caller, local: Rc<Local>) {
    let config = &local.plan.config;
    let mut call_number: u64 = 0;
    loop {
        // When the call is due, and the time its latency is measured from.
        let measured_from = match config.rate {
            None => {
                let now = Instant::now();
                if local.should_stop(now) {
                    return;
                }
                now
            }
            Some(rate) => {
                let offset = stats::intended_send_offset(slot, call_number, slots, rate);
                let intended = local.started + offset;
                if local.deadline.is_some_and(|deadline| intended >= deadline) {
                    return;
                }
                let mut slept = false;
                if intended > Instant::now() {
                    monoio::time::sleep_until(intended.into()).await;
                    slept = true;
                }
                // A call due before the deadline is sent even if the timer woke after it (a
                // loaded machine); only an explicit stop cancels it.
                if local.shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                // Coordinated omission: latency counts from the intended send time, so a call
                // delayed by a slow previous one is charged for the wait. When the connection
                // was idle and only the timer fired late, up to TIMER_SLACK of that is forgiven.
                if slept {
                    now.min(intended + TIMER_SLACK)
                } else {
                    intended
                }
            }
        };
        call_number += 1;
        local.in_flight.set(local.in_flight.get() + 1);
        let call_deadline = Instant::now() + config.call_timeout;
        let attempt =
            match monoio::time::timeout_at(call_deadline.into(), caller.call(&local)).await {
                Ok(attempt) => attempt,
                Err(_) => {
                    caller.abandon_call();
                    Attempt::failed(ErrorKind::Timeout)
                }
            };
        local.in_flight.set(local.in_flight.get() - 1);
        let finished = Instant::now();
        let window = local.window(finished);
        let error = attempt.result.err();
        if error.is_none() {
            stats::record_latency(&mut local.histogram.borrow_mut(), finished - measured_from);
        }
        let error_name = error.map(|kind| kind.name());
        local.tally.borrow_mut().record(
            window,
            error_name.as_deref(),
            attempt.named_pod.then_some(caller.pod()),
        );
        if matches!(error, Some(ErrorKind::Connect | ErrorKind::Tls)) {
            monoio::time::sleep(caller.next_connect_backoff()).await;
        }
    }
}

/// One call: connect if needed, send, read and judge the response. A reused connection the
/// server closed while idle (EOF before any response byte) is reopened and the request sent
/// once more, as browsers do; that is the only retry.
async fn call(conn: &mut Conn, local: &Local) -> Attempt {
    for attempt in 0..2 {
        let reused = conn.stream.is_some();
        if !reused {
            match connect(local).await {
                Ok(stream) => {
                    conn.stream = Some(stream);
                    conn.read_buffer.clear();
                    conn.connect_backoff = CONNECT_BACKOFF_MIN;
                }
                Err(kind) => return Attempt::failed(kind),
            }
        }
        match exchange(conn, local).await {
            Exchange::Complete { keep_alive } => {
                let config = &local.plan.config;
                if config.connection_per_call {
                    // The client ends the connection, as a client making one call would; the
                    // close is part of the call, so its cost to the target is measured too.
                    if let Some(mut stream) = conn.stream.take() {
                        stream.close().await;
                    }
                } else if !keep_alive {
                    conn.stream = None;
                }
                return judge_http1(conn, config);
            }
            Exchange::ClosedIdle if reused && attempt == 0 => {
                conn.stream = None;
            }
            Exchange::ClosedIdle => {
                conn.stream = None;
                return Attempt::failed(ErrorKind::Io);
            }
            Exchange::Failed(kind) => {
                conn.stream = None;
                return Attempt {
                    result: Err(kind),
                    named_pod: keep_pod(&mut conn.pod, conn.parser.head().pod.as_deref()),
                };
            }
        }
    }
    // Both attempts ended in ClosedIdle on a fresh connection, which returns above.
    Attempt::failed(ErrorKind::Io)
}

/// The judgement of a complete HTTP/1.1 response, by protocol.
fn judge_http1(conn: &mut Conn, config: &LoadConfig) -> Attempt {
    let head = conn.parser.head();
    if config.protocol == Protocol::Connect {
        let result = wire_connect::judge(head.status, head.content_type, conn.parser.body());
        return Attempt {
            result,
            named_pod: keep_pod(&mut conn.pod, head.pod.as_deref()),
        };
    }
    let verdict = wire::judge(
        head,
        conn.parser.body(),
        config.mode,
        config.call,
        &config.backend_header,
        &mut conn.scratch,
    );
    Attempt {
        result: verdict.result,
        named_pod: keep_pod(&mut conn.pod, verdict.pod),
    }
}

/// A new connection to the target: TCP, then the TLS handshake for an HTTPS target.
pub(super) async fn connect(local: &Local) -> Result<Stream, ErrorKind> {
    let target = local.plan.config.target;
    let tcp = match connect_tcp(target).await {
        Ok(tcp) => tcp,
        Err(error) => {
            debug!(%target, %error, "connect failed");
            return Err(ErrorKind::Connect);
        }
    };
    local.tally.borrow_mut().connects += 1;
    let Some(tls) = &local.plan.tls else {
        return Ok(Stream::Plain(tcp));
    };
    match tls.connect(tcp).await {
        Ok(stream) => {
            let negotiated = stream.negotiated();
            let mut tally = local.tally.borrow_mut();
            tally.tls_handshakes += 1;
            tally.tls_resumed += u64::from(negotiated.resumed);
            stats::increment(&mut tally.tls_negotiated, &negotiated.summary);
            Ok(Stream::Tls(Box::new(stream)))
        }
        Err(error) => {
            debug!(%target, %error, "TLS handshake failed");
            Err(ErrorKind::Tls)
        }
    }
}

async fn connect_tcp(target: std::net::SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_addr(target).await?;
    // Requests are one write each; Nagle would only delay them.
    stream.set_nodelay(true)?;
    Ok(stream)
}

enum Exchange {
    Complete {
        keep_alive: bool,
    },
    /// The peer closed (or reset) before sending any byte of the response.
    ClosedIdle,
    Failed(ErrorKind),
}

/// Writes the request and reads one response into the parser.
async fn exchange(conn: &mut Conn, local: &Local) -> Exchange {
    let Some(stream) = conn.stream.as_mut() else {
        return Exchange::Failed(ErrorKind::Io);
    };
    let (written, _) = stream.write_all(local.request.clone()).await;
    if written.is_err() {
        return Exchange::ClosedIdle;
    }
    local.tally.borrow_mut().calls_sent += 1;
    conn.parser.reset();
    let mut received_any = !conn.read_buffer.is_empty();
    loop {
        if !conn.read_buffer.is_empty() {
            match conn.parser.feed(&conn.read_buffer) {
                Ok(Progress::Done { consumed }) => {
                    conn.read_buffer.drain(..consumed);
                    let keep_alive = conn.parser.head().keep_alive;
                    return Exchange::Complete { keep_alive };
                }
                Ok(Progress::NeedMore { consumed }) => {
                    conn.read_buffer.drain(..consumed);
                }
                Err(kind) => return Exchange::Failed(kind),
            }
        }
        if conn.read_buffer.len() == conn.read_buffer.capacity() {
            // Only an incomplete head or chunk line stays buffered; the parser bounds both.
            conn.read_buffer.reserve(READ_BUFFER_BYTES);
        }
        let buffer = std::mem::take(&mut conn.read_buffer);
        let (len, capacity) = (buffer.len(), buffer.capacity());
        let (read, slice) = stream.read(buffer.slice_mut(len..capacity)).await;
        conn.read_buffer = slice.into_inner();
        match read {
            Ok(0) => {
                if !received_any {
                    return Exchange::ClosedIdle;
                }
                return match conn.parser.feed_eof() {
                    Ok(()) => Exchange::Complete { keep_alive: false },
                    Err(kind) => Exchange::Failed(kind),
                };
            }
            Ok(_) => received_any = true,
            Err(error) if !received_any => {
                debug!(%error, "read failed before the response");
                return Exchange::ClosedIdle;
            }
            Err(error) => {
                debug!(%error, "read failed");
                return Exchange::Failed(ErrorKind::Io);
            }
        }
    }
}
