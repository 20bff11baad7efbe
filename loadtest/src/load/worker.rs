//! One load thread: its own monoio runtime (io_uring, else epoll) driving its share of the
//! connections, each a loop of connect → write request → read response → record. This is the
//! only file with IO; request bytes and response judgement come from `wire.rs`, counting from
//! `stats.rs`.
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

use super::stats::{self, Tally};
use super::wire::{self, ErrorKind, Progress, ResponseParser};
use super::{lock, IoDriver, LoadConfig, Shared, STOP_GRACE};

/// How often a thread moves its counters into the shared tally the snapshot reads.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Wait after a failed connect, doubling per failure up to [`CONNECT_BACKOFF_MAX`], so a dead
/// target is retried steadily rather than in a busy loop.
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Open loop: how late a timer may fire after an idle connection's intended send time without
/// that lateness counting as latency. monoio's timer wheel ticks in milliseconds, so a sleep
/// ends up to one tick late; charging that to the target would add a millisecond to every
/// call of an idle system. Lateness beyond this does count (an overloaded generator shows).
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Initial receive buffer per connection, in bytes; it grows only for lines split across reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What every thread runs, decided once at start.
pub(crate) struct Plan {
    pub config: LoadConfig,
    pub request: Vec<u8>,
    /// Index of the run's last window when the duration is fixed.
    pub last_window: Option<u64>,
}

impl Plan {
    pub fn new(config: &LoadConfig) -> Self {
        let request = wire::encode_request(
            &config.method,
            &config.host_header,
            config.mode,
            config.payload_bytes,
            &config.metadata,
        );
        let last_window = config
            .duration
            .map(|duration| stats::window_count(duration, config.window) - 1);
        Plan {
            config: config.clone(),
            request,
            last_window,
        }
    }
}

/// What a thread hands back when it ends.
pub(crate) struct WorkerResult {
    pub histogram: Histogram<u64>,
    /// When this thread stopped starting calls (deadline or stop), before the drain.
    pub ended_at: Instant,
}

/// State the connection tasks of one thread share (single-threaded: `Rc`, `Cell`, `RefCell`).
struct Local {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    started: Instant,
    deadline: Option<Instant>,
    /// This thread's own copy of the request, so no reference count is shared across threads.
    request: Bytes,
    stopping: Cell<bool>,
    in_flight: Cell<u64>,
    tally: RefCell<Tally>,
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
    for connection in (index..config.connections).step_by(config.threads) {
        monoio::spawn(connection_loop(connection, local.clone()));
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
    local.flush();
    let histogram = local.histogram.replace(stats::latency_histogram());
    WorkerResult {
        histogram,
        ended_at,
    }
}

/// One connection's state between calls.
struct Conn {
    stream: Option<TcpStream>,
    read_buffer: Vec<u8>,
    parser: ResponseParser,
    scratch: Vec<u8>,
    /// The last call's pod name, reused across calls so naming a pod allocates nothing.
    pod: String,
    connect_backoff: Duration,
}

/// Copies `pod` into the connection's buffer; says whether there was one.
fn keep_pod(buffer: &mut String, pod: Option<&str>) -> bool {
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
/// [`Conn::pod`].
struct Attempt {
    result: Result<(), ErrorKind>,
    named_pod: bool,
}

impl Attempt {
    fn failed(kind: ErrorKind) -> Attempt {
        Attempt {
            result: Err(kind),
            named_pod: false,
        }
    }
}

async fn connection_loop(connection: usize, local: Rc<Local>) {
    let config = &local.plan.config;
    let mut conn = Conn {
        stream: None,
        read_buffer: Vec::with_capacity(READ_BUFFER_BYTES),
        parser: ResponseParser::new(&config.backend_header),
        scratch: Vec::new(),
        pod: String::new(),
        connect_backoff: CONNECT_BACKOFF_MIN,
    };
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
                let offset =
                    stats::intended_send_offset(connection, call_number, config.connections, rate);
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
            match monoio::time::timeout_at(call_deadline.into(), call(&mut conn, &local)).await {
                Ok(attempt) => attempt,
                Err(_) => {
                    // The connection is mid-response; it cannot carry another call.
                    conn.stream = None;
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
            attempt.named_pod.then_some(conn.pod.as_str()),
        );
        if error == Some(ErrorKind::Connect) {
            let backoff = conn.connect_backoff;
            conn.connect_backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
            monoio::time::sleep(backoff).await;
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
                Err(error) => {
                    debug!(target = %local.plan.config.target, %error, "connect failed");
                    return Attempt::failed(ErrorKind::Connect);
                }
            }
        }
        match exchange(conn, local).await {
            Exchange::Complete { keep_alive } => {
                if !keep_alive {
                    conn.stream = None;
                }
                let config = &local.plan.config;
                let verdict = wire::judge(
                    conn.parser.head(),
                    conn.parser.body(),
                    config.mode,
                    config.call,
                    &config.backend_header,
                    &mut conn.scratch,
                );
                return Attempt {
                    result: verdict.result,
                    named_pod: keep_pod(&mut conn.pod, verdict.pod),
                };
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

async fn connect(local: &Local) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_addr(local.plan.config.target).await?;
    // Requests are one write each; Nagle would only delay them.
    stream.set_nodelay(true)?;
    local.tally.borrow_mut().connects += 1;
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
