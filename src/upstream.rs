//! Per-worker HTTP/2 connections to upstream endpoints, multiplexing many calls each.
//!
//! Each worker owns its own [`Pool`]: connections are never shared between cores, so nothing
//! here is locked or atomic (the pool is `!Send` and lives in `Rc`s). For each endpoint the pool
//! keeps up to `connections_per_endpoint_max` connections. A call takes a stream slot on the
//! first connection below the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`; when all are full a new
//! connection is opened, and when that bound is reached too the call waits in a bounded queue
//! with a timeout. Connect failures put the endpoint in exponential backoff so a dead pod costs
//! one fast failure, not a connect timeout per call.
//!
//! h2 speaks tokio's `AsyncRead`/`AsyncWrite`. By default `monoio-compat` provides them with
//! owned-buffer reads and writes submitted to the worker's own io_uring (or epoll); the
//! `h2-poll-io` cargo feature uses monoio's `poll-io` adapter instead (readiness, then a read
//! or write syscall). compat measured about 6% less proxy CPU per request
//! (docs/benchmarks.md), so it is the default.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::Request;
use monoio::net::TcpStream;
use tokio::sync::Notify;
use tracing::debug;

use crate::endpoints::EndpointSet;
use crate::error::Error;

#[cfg(feature = "h2-poll-io")]
type UpstreamIo = monoio::net::tcp::stream_poll::TcpStreamPoll;
#[cfg(not(feature = "h2-poll-io"))]
type UpstreamIo = monoio_compat::TcpStreamCompat;

/// Streams assumed available on a connection whose peer has not (yet) advertised
/// SETTINGS_MAX_CONCURRENT_STREAMS. h2 keeps this value when the peer's SETTINGS omit the
/// limit, which RFC 9113 says means unlimited and which is grpc-go's default; 100 would then cap
/// a worker at 100 × connections per endpoint concurrent calls, too few for browsers holding
/// long server streams. A peer that advertises a limit gets exactly its limit.
const INITIAL_STREAMS_ASSUMED: usize = 1000;

/// Upstream settings, derived once from the flags.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub tcp_keepalive: Option<Duration>,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub stream_window_bytes: u32,
    pub connection_window_bytes: u32,
    pub frame_bytes_max: u32,
    pub connections_per_endpoint_max: usize,
    pub pending_calls_max: usize,
    pub pending_timeout: Duration,
    pub reconnect_backoff: Duration,
    pub reconnect_backoff_max: Duration,
    /// How long calls on an endpoint that left the set may run before its connections close.
    pub drain_timeout: Duration,
    pub outlier: OutlierConfig,
}

/// Passive outlier ejection: an endpoint whose calls fail this many times in a row on a worker
/// is taken out of that worker's rotation for `base_ejection × times ejected`, as long as no
/// more than `max_ejection_percent` of the set is out at once.
#[derive(Debug, Clone)]
pub struct OutlierConfig {
    /// Consecutive failures (connect failures, UNAVAILABLE statuses) that eject; 0 = off.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// Upper bound on the ejection multiplier, so a flapping endpoint is retried at least every
/// `base_ejection × EJECTION_MULTIPLIER_MAX`.
const EJECTION_MULTIPLIER_MAX: u32 = 10;

/// What one worker knows about one endpoint, for the admin page.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    pub addr: SocketAddr,
    pub connections: usize,
    pub calls_in_flight: usize,
    pub calls_total: u64,
    pub failures_total: u64,
    pub ejected: bool,
    pub ejections_total: u32,
    pub last_error: Option<String>,
}

/// A started upstream call: the response to await, the request body sink, and the stream slot,
/// which is given back to the pool when the lease is dropped.
pub struct Call {
    pub response: ResponseFuture,
    pub body: SendStream<Bytes>,
    pub lease: Lease,
}

/// A worker's upstream connections, keyed by endpoint.
pub struct Pool {
    config: Rc<UpstreamConfig>,
    endpoints: RefCell<HashMap<SocketAddr, Rc<EndpointConns>>>,
    /// The endpoint-set generation last reconciled with `endpoints`.
    generation: Cell<u64>,
    /// Endpoints that left the set while connections to them were open, kept until those
    /// close so an endpoint that returns (a readiness blip) gets its record, and its running
    /// calls, back instead of having them cut by the drain timeout.
    retired: RefCell<HashMap<SocketAddr, Rc<EndpointConns>>>,
}

struct EndpointConns {
    addr: SocketAddr,
    conns: RefCell<Vec<Rc<Conn>>>,
    connecting: Cell<usize>,
    waiting: Cell<usize>,
    /// Woken when a stream slot frees up or a connection opens or closes.
    changed: Notify,
    /// Set while the endpoint is out of the set: it takes no new calls, and its connections
    /// close when their calls finish or the drain timeout passes, whichever is first.
    retired: Cell<bool>,
    /// Woken when `retired` changes either way.
    retired_changed: Notify,
    /// Connections whose driver task is still running (the `conns` list drops them on retire).
    live_connections: Cell<usize>,
    /// No connect attempt before this instant after a failure.
    backoff_until: Cell<Option<Instant>>,
    /// The failure that started the backoff, repeated to calls refused during it: the cause
    /// is what an operator needs to see, not the backoff.
    backoff_cause: RefCell<Option<(std::io::ErrorKind, String)>>,
    backoff_next: Cell<Duration>,
    calls_in_flight: Cell<usize>,
    calls_total: Cell<u64>,
    failures_total: Cell<u64>,
    consecutive_failures: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
    ejections_total: Cell<u32>,
    last_error: RefCell<Option<String>>,
}

struct Conn {
    send: SendRequest<Bytes>,
    in_flight: Cell<usize>,
    /// Set when the connection ended, or refused a new stream (GOAWAY): it takes no new calls.
    closed: Rc<Cell<bool>>,
}

impl Conn {
    fn has_slot(&self) -> bool {
        // INITIAL_STREAMS_ASSUMED until the peer's SETTINGS arrive, then the peer's own value.
        !self.closed.get() && self.in_flight.get() < self.send.current_max_send_streams()
    }
}

/// A stream slot on one connection; dropping it frees the slot and wakes one waiting call.
pub struct Lease {
    conn: Rc<Conn>,
    endpoint: Rc<EndpointConns>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.in_flight.set(self.conn.in_flight.get() - 1);
        let endpoint = &self.endpoint;
        endpoint
            .calls_in_flight
            .set(endpoint.calls_in_flight.get() - 1);
        self.endpoint.changed.notify_one();
    }
}

impl Pool {
    pub fn new(config: UpstreamConfig) -> Self {
        Pool {
            config: Rc::new(config),
            endpoints: RefCell::new(HashMap::new()),
            generation: Cell::new(0),
            retired: RefCell::new(HashMap::new()),
        }
    }

    /// Bring the pool in line with `set`, once per new generation: endpoints that left it are
    /// retired (no call starts on them any more, calls already running finish, and their
    /// connections then close); endpoints new to this worker are returned, so the caller can
    /// warm a connection to each before calls need one.
    pub fn reconcile(&self, set: &EndpointSet) -> Vec<SocketAddr> {
        self.retired
            .borrow_mut()
            .retain(|_, endpoint| endpoint.live_connections.get() > 0);
        if self.generation.get() == set.generation {
            return Vec::new();
        }
        self.generation.set(set.generation);
        let mut endpoints = self.endpoints.borrow_mut();
        let mut retired = self.retired.borrow_mut();
        endpoints.retain(|addr, endpoint| {
            let keep = set.endpoints.contains(addr);
            if !keep {
                endpoint.retire();
                retired.insert(*addr, endpoint.clone());
            }
            keep
        });
        let mut new = Vec::new();
        for addr in &set.endpoints {
            if endpoints.contains_key(addr) {
                continue;
            }
            match retired.remove(addr) {
                Some(endpoint) => {
                    endpoint.unretire();
                    endpoints.insert(*addr, endpoint);
                }
                None => new.push(*addr),
            }
        }
        new
    }

    /// Open a connection to `addr` ahead of its first call, if it has none and none is being
    /// opened. Failures only count towards the endpoint's backoff.
    pub async fn warm(&self, addr: SocketAddr) {
        let endpoint = self.endpoint(addr);
        if !endpoint.conns.borrow().is_empty() || endpoint.connecting.get() > 0 {
            return;
        }
        if let Ok(conn) = self.connect(&endpoint).await {
            // `connect` reserved a stream slot for a caller; there is none, so give it back.
            drop(Lease { conn, endpoint });
        }
    }

    /// This worker's calls in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.endpoints
            .borrow()
            .get(&addr)
            .map_or(0, |e| e.calls_in_flight.get())
    }

    /// Whether `addr` is ejected at `now` by passive outlier detection on this worker.
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        self.endpoints
            .borrow()
            .get(&addr)
            .and_then(|e| e.ejected_until.get())
            .is_some_and(|until| now < until)
    }

    /// Whether any endpoint might be ejected, so pickers can skip the per-endpoint check.
    pub fn any_ejected(&self) -> bool {
        self.endpoints
            .borrow()
            .values()
            .any(|e| e.ejected_until.get().is_some())
    }

    /// Record a finished call's outcome for `addr`: `Err` with a reason when it failed in a
    /// way that speaks about the endpoint's health (connect failure, UNAVAILABLE). Ejects the
    /// endpoint after enough consecutive failures, unless `set_len` says too many are out.
    pub fn record_outcome(&self, addr: SocketAddr, outcome: Result<(), String>, set_len: usize) {
        let endpoints = self.endpoints.borrow();
        let Some(endpoint) = endpoints.get(&addr) else {
            return;
        };
        endpoint.calls_total.set(endpoint.calls_total.get() + 1);
        let reason = match outcome {
            Ok(()) => {
                endpoint.consecutive_failures.set(0);
                return;
            }
            Err(reason) => reason,
        };
        endpoint
            .failures_total
            .set(endpoint.failures_total.get() + 1);
        let failures = endpoint.consecutive_failures.get() + 1;
        endpoint.consecutive_failures.set(failures);
        let outlier = &self.config.outlier;
        let now = Instant::now();
        let already_out = endpoint
            .ejected_until
            .get()
            .is_some_and(|until| now < until);
        if outlier.consecutive_failures > 0
            && failures >= outlier.consecutive_failures
            && !already_out
        {
            let ejected_now = endpoints
                .values()
                .filter(|e| e.ejected_until.get().is_some_and(|until| now < until))
                .count();
            // As in Envoy, one endpoint may always be ejected; beyond that, at most the
            // configured share of the set.
            let within_cap = ejected_now == 0
                || (ejected_now + 1) * 100 <= set_len * outlier.max_ejection_percent as usize;
            if within_cap {
                let times = (endpoint.ejections_total.get() + 1).min(EJECTION_MULTIPLIER_MAX);
                endpoint
                    .ejections_total
                    .set(endpoint.ejections_total.get() + 1);
                endpoint
                    .ejected_until
                    .set(Some(now + outlier.base_ejection * times));
                endpoint.consecutive_failures.set(0);
                tracing::warn!(endpoint = %addr, failures, ejection_ms = (outlier.base_ejection * times).as_millis() as u64, reason = %reason, "endpoint ejected");
            }
        }
        *endpoint.last_error.borrow_mut() = Some(reason);
    }

    /// This worker's view of every endpoint it has talked to.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let now = Instant::now();
        self.endpoints
            .borrow()
            .values()
            .map(|e| EndpointStats {
                addr: e.addr,
                connections: e.conns.borrow().len(),
                calls_in_flight: e.calls_in_flight.get(),
                calls_total: e.calls_total.get(),
                failures_total: e.failures_total.get(),
                ejected: e.ejected_until.get().is_some_and(|until| now < until),
                ejections_total: e.ejections_total.get(),
                last_error: e.last_error.borrow().clone(),
            })
            .collect()
    }

    /// Start a call on `addr`: take a stream slot (connecting or waiting as needed, within the
    /// bounds) and send the request head. `request` is called again only if a connection
    /// refused the stream before anything was sent.
    pub async fn start_call(
        &self,
        addr: SocketAddr,
        request: impl Fn() -> Request<()>,
        end_of_stream: bool,
    ) -> Result<Call, Error> {
        let endpoint = self.endpoint(addr);
        // Set at the call's first wait; a call that finds a free slot never reads the clock.
        let mut wait_deadline = None;
        loop {
            let conn = match endpoint.reserve() {
                Some(conn) => conn,
                // Boxed: connecting and queueing carry large timer states that a call which
                // finds a free slot, the common case, should not have to make room for.
                None => {
                    let deadline = *wait_deadline
                        .get_or_insert_with(|| Instant::now() + self.config.pending_timeout);
                    Box::pin(self.open_or_wait(&endpoint, deadline)).await?
                }
            };
            let lease = Lease {
                conn: conn.clone(),
                endpoint: endpoint.clone(),
            };
            let mut send = conn.send.clone();
            match send.send_request(request(), end_of_stream) {
                Ok((response, body)) => {
                    return Ok(Call {
                        response,
                        body,
                        lease,
                    })
                }
                Err(e) => {
                    // send_request only queues the stream: on error nothing reached the wire,
                    // so the call may go to another connection.
                    debug!(endpoint = %addr, error = %e, "upstream connection refused a new stream");
                    conn.closed.set(true);
                }
            }
        }
    }

    fn endpoint(&self, addr: SocketAddr) -> Rc<EndpointConns> {
        self.endpoints
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| {
                Rc::new(EndpointConns {
                    addr,
                    conns: RefCell::new(Vec::new()),
                    connecting: Cell::new(0),
                    waiting: Cell::new(0),
                    changed: Notify::new(),
                    retired: Cell::new(false),
                    retired_changed: Notify::new(),
                    live_connections: Cell::new(0),
                    backoff_until: Cell::new(None),
                    backoff_cause: RefCell::new(None),
                    backoff_next: Cell::new(self.config.reconnect_backoff),
                    calls_in_flight: Cell::new(0),
                    calls_total: Cell::new(0),
                    failures_total: Cell::new(0),
                    consecutive_failures: Cell::new(0),
                    ejected_until: Cell::new(None),
                    ejections_total: Cell::new(0),
                    last_error: RefCell::new(None),
                })
            })
            .clone()
    }

    /// No slot is free: open another connection if the bound allows, else wait for a slot.
    async fn open_or_wait(
        &self,
        endpoint: &Rc<EndpointConns>,
        wait_deadline: Instant,
    ) -> Result<Rc<Conn>, Error> {
        loop {
            if endpoint.retired.get() {
                return Err(Error::Connect(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "endpoint left the set while the call waited",
                )));
            }
            // One connect at a time per endpoint: calls arriving while it is under way wait for
            // it, since one connection takes many streams. A burst on a cold pool then opens one
            // connection, not one per call.
            let open = endpoint.conns.borrow().len() + endpoint.connecting.get();
            if open < self.config.connections_per_endpoint_max && endpoint.connecting.get() == 0 {
                return self.connect(endpoint).await;
            }
            if endpoint.waiting.get() >= self.config.pending_calls_max {
                return Err(Error::PoolExhausted);
            }
            endpoint.waiting.set(endpoint.waiting.get() + 1);
            let woken =
                monoio::time::timeout_at(wait_deadline.into(), endpoint.changed.notified()).await;
            endpoint.waiting.set(endpoint.waiting.get() - 1);
            if woken.is_err() {
                return Err(Error::PendingTimeout);
            }
            if let Some(conn) = endpoint.reserve() {
                return Ok(conn);
            }
        }
    }

    /// Open one connection to the endpoint, register it, and reserve a slot on it.
    async fn connect(&self, endpoint: &Rc<EndpointConns>) -> Result<Rc<Conn>, Error> {
        if let Some(until) = endpoint.backoff_until.get() {
            if Instant::now() < until {
                debug!(endpoint = %endpoint.addr, "endpoint in reconnect backoff");
                let (kind, cause) = endpoint.backoff_cause.borrow().clone().unwrap_or((
                    std::io::ErrorKind::ConnectionRefused,
                    "in reconnect backoff after a failed connect".into(),
                ));
                return Err(Error::Connect(std::io::Error::new(kind, cause)));
            }
        }
        endpoint.connecting.set(endpoint.connecting.get() + 1);
        let result = connect(endpoint.addr, &self.config).await;
        endpoint.connecting.set(endpoint.connecting.get() - 1);
        // Whatever happened, waiters may now connect themselves or use the new connection.
        endpoint.changed.notify_waiters();
        let (send, connection) = match result {
            Ok(pair) => pair,
            Err(e) => {
                endpoint.note_connect_failure(&self.config, &e);
                debug!(endpoint = %endpoint.addr, error = %e, "upstream connect failed");
                return Err(e);
            }
        };
        endpoint.backoff_until.set(None);
        endpoint.backoff_next.set(self.config.reconnect_backoff);
        let closed = Rc::new(Cell::new(false));
        let conn = Rc::new(Conn {
            send,
            in_flight: Cell::new(1),
            closed: closed.clone(),
        });
        endpoint
            .calls_in_flight
            .set(endpoint.calls_in_flight.get() + 1);
        endpoint.conns.borrow_mut().push(conn.clone());
        endpoint
            .live_connections
            .set(endpoint.live_connections.get() + 1);
        monoio::spawn(drive_connection(
            connection,
            endpoint.clone(),
            closed,
            self.config.clone(),
        ));
        Ok(conn)
    }
}

impl EndpointConns {
    /// Take a slot on the first open connection that has one, packing calls onto as few
    /// connections as the peer allows.
    fn reserve(&self) -> Option<Rc<Conn>> {
        let conns = self.conns.borrow();
        let conn = conns.iter().find(|c| c.has_slot())?;
        conn.in_flight.set(conn.in_flight.get() + 1);
        self.calls_in_flight.set(self.calls_in_flight.get() + 1);
        Some(conn.clone())
    }

    fn note_connect_failure(&self, config: &UpstreamConfig, error: &Error) {
        *self.backoff_cause.borrow_mut() = Some(match error {
            Error::Connect(e) => (e.kind(), e.to_string()),
            Error::ConnectTimeout => (std::io::ErrorKind::TimedOut, "connect timeout".into()),
            other => (std::io::ErrorKind::Other, other.to_string()),
        });
        let delay = self.backoff_next.get();
        self.backoff_until.set(Some(Instant::now() + delay));
        self.backoff_next
            .set((delay * 2).min(config.reconnect_backoff_max));
    }

    fn retire(&self) {
        debug!(endpoint = %self.addr, "endpoint left the set; draining its connections");
        // Dropping the pool's handles lets h2 close each connection (GOAWAY) as soon as its last
        // call ends; the drain timer in `drive_connection` bounds calls that never end.
        self.conns.borrow_mut().clear();
        self.retired.set(true);
        self.retired_changed.notify_waiters();
        // Calls queued for a slot here must go elsewhere, not open a connection to it.
        self.changed.notify_waiters();
    }

    /// The endpoint is back in the set: its draining connections are no longer cut. They keep
    /// serving the calls they carry and close when idle; new calls open new connections.
    fn unretire(&self) {
        debug!(endpoint = %self.addr, "endpoint is back in the set");
        self.retired.set(false);
        self.retired_changed.notify_waiters();
    }

    /// Wait until the endpoint has been out of the set for `drain_timeout` without a break.
    async fn drained(&self, drain_timeout: Duration) {
        loop {
            while !self.retired.get() {
                self.retired_changed.notified().await;
            }
            let timed_out = monoio::select! {
                _ = monoio::time::sleep(drain_timeout) => true,
                _ = self.retired_changed.notified() => false,
            };
            if timed_out && self.retired.get() {
                return;
            }
        }
    }

    fn remove_closed(&self) {
        self.conns.borrow_mut().retain(|c| !c.closed.get());
    }
}

async fn connect(
    addr: SocketAddr,
    config: &UpstreamConfig,
) -> Result<
    (
        SendRequest<Bytes>,
        h2::client::Connection<UpstreamIo, Bytes>,
    ),
    Error,
> {
    let stream = monoio::time::timeout(config.connect_timeout, TcpStream::connect_addr(addr))
        .await
        .map_err(|_| Error::ConnectTimeout)?
        .map_err(Error::Connect)?;
    stream.set_nodelay(true).map_err(Error::Connect)?;
    if let Some(idle) = config.tcp_keepalive {
        stream
            .set_tcp_keepalive(Some(idle), None, None)
            .map_err(Error::Connect)?;
    }
    let io = into_upstream_io(stream)?;
    h2::client::Builder::new()
        .initial_window_size(config.stream_window_bytes)
        .initial_connection_window_size(config.connection_window_bytes)
        .max_frame_size(config.frame_bytes_max)
        .initial_max_send_streams(INITIAL_STREAMS_ASSUMED)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| Error::Connect(std::io::Error::other(e)))
}

#[cfg(feature = "h2-poll-io")]
fn into_upstream_io(stream: TcpStream) -> Result<UpstreamIo, Error> {
    stream
        .try_into_poll_io()
        .map_err(|(e, _)| Error::Connect(e))
}

#[cfg(not(feature = "h2-poll-io"))]
fn into_upstream_io(stream: TcpStream) -> Result<UpstreamIo, Error> {
    Ok(monoio_compat::TcpStreamCompat::new(stream))
}

/// Run one connection's HTTP/2 state machine (and its PING keepalive) until it ends, then take
/// it out of the pool.
async fn drive_connection(
    mut connection: h2::client::Connection<UpstreamIo, Bytes>,
    endpoint: Rc<EndpointConns>,
    closed: Rc<Cell<bool>>,
    config: Rc<UpstreamConfig>,
) {
    let keepalive = connection.ping_pong().zip(config.keepalive_interval);
    let run = async {
        match keepalive {
            Some((ping_pong, interval)) => monoio::select! {
                result = &mut connection => result.map_err(|e| e.to_string()),
                reason = keep_alive(ping_pong, interval, config.keepalive_timeout) => Err(reason),
            },
            None => (&mut connection).await.map_err(|e| e.to_string()),
        }
    };
    let drained = endpoint.drained(config.drain_timeout);
    let outcome = monoio::select! {
        outcome = run => outcome,
        _ = drained => Err("endpoint left the set and the drain timeout passed".to_string()),
    };
    if let Err(reason) = outcome {
        debug!(endpoint = %endpoint.addr, error = %reason, "upstream connection ended");
    }
    closed.set(true);
    endpoint
        .live_connections
        .set(endpoint.live_connections.get() - 1);
    endpoint.remove_closed();
    endpoint.changed.notify_waiters();
}

/// Send a PING every `interval`; return when one is not answered within `timeout`.
async fn keep_alive(mut ping_pong: h2::PingPong, interval: Duration, timeout: Duration) -> String {
    loop {
        monoio::time::sleep(interval).await;
        match monoio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return format!("keepalive ping failed: {e}"),
            Err(_) => return "keepalive ping unanswered".to_string(),
        }
    }
}
