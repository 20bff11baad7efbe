//! Per-worker HTTP/2 connections to upstream endpoints, multiplexing many calls each, and which
//! endpoints can take a call right now.
//!
//! Each worker owns its own [`Pool`]: connections are never shared between cores, so nothing
//! here is locked or atomic (the pool is `!Send` and lives in `Rc`s). For each endpoint the pool
//! keeps up to `connections_per_endpoint_max` connections. A call takes a stream slot on the
//! first connection below the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`; when all are full a new
//! connection is opened, and when that bound is reached too the call waits in a bounded queue
//! with a timeout. Connect failures put the endpoint in exponential backoff so a dead pod costs
//! one fast failure, not a connect timeout per call.
//!
//! A connection counts only once the server has spoken: after the TCP connect the pool waits for
//! the server's SETTINGS, for at most `handshake_timeout`, before any call is committed to it. A
//! backend that accepts connections but never answers (a stopped process, a wedged server, the
//! wrong port) then costs one bounded wait and a connect failure, never a hung call.
//!
//! An endpoint is out of this worker's rotation ([`Pool::available`]) while it cannot take a
//! call: while its last connect failed (refused, timed out, or no SETTINGS) and none succeeded
//! since, while another worker found it refusing connects ([`crate::refused`], the shared
//! snapshot), and while passive outlier detection has it ejected (calls failing in a row, or a
//! keepalive PING left unanswered). Housekeeping probes the endpoints left out for being
//! unreachable ([`Pool::housekeeping`]), so one that listens again is back without a call having
//! to risk it.
//!
//! h2 speaks tokio's `AsyncRead`/`AsyncWrite`. By default `monoio-compat` provides them with
//! owned-buffer reads and writes submitted to the worker's own io_uring (or epoll); the
//! `h2-poll-io` cargo feature uses monoio's `poll-io` adapter instead (readiness, then a read
//! or write syscall). compat measured about 6% less proxy CPU per request
//! (docs/benchmarks.md), so it is the default.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
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
use crate::refused::{RefusedSet, RefusedTable, Report, Reporter};
use crate::stats::WorkerStats;

#[cfg(feature = "h2-poll-io")]
type UpstreamIo = monoio::net::tcp::stream_poll::TcpStreamPoll;
#[cfg(not(feature = "h2-poll-io"))]
type UpstreamIo = monoio_compat::TcpStreamCompat;

type H2Connection = h2::client::Connection<UpstreamIo, Bytes>;

/// The stream limit a new connection starts with, which tells whether the server's SETTINGS have
/// arrived. h2 exposes no "SETTINGS received" event, but it documents that the first SETTINGS
/// replace this value with the peer's SETTINGS_MAX_CONCURRENT_STREAMS, or with `usize::MAX` when
/// the peer sets no limit (`Builder::initial_max_send_streams`). The limit is a 32-bit field,
/// so one above `u32::MAX` (and below `usize::MAX`) is a value no SETTINGS frame can leave.
/// No call is committed to a connection before its SETTINGS, so the value itself never limits
/// anything.
const SETTINGS_NOT_RECEIVED: usize = u32::MAX as usize + 1;
const _: () = assert!(
    usize::BITS > u32::BITS,
    "SETTINGS_NOT_RECEIVED needs a usize wider than the SETTINGS field"
);

/// Upstream settings, derived once from the flags.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    /// How long after the TCP connect the server's SETTINGS may take.
    pub handshake_timeout: Duration,
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
/// (or one of whose connections stops answering keepalive PINGs) is taken out of that worker's
/// rotation for `base_ejection × times ejected`, as long as no more than `max_ejection_percent`
/// of the set is out at once.
#[derive(Debug, Clone)]
pub struct OutlierConfig {
    /// Consecutive failures (connect failures, UNAVAILABLE statuses) that eject; 0 = off, which
    /// also turns off the ejection for unanswered PINGs.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// Upper bound on the ejection multiplier, so a flapping endpoint is retried at least every
/// `base_ejection × EJECTION_MULTIPLIER_MAX`.
const EJECTION_MULTIPLIER_MAX: u32 = 10;

/// What a worker's pool shares with the rest of the process: the worker's counters, and the
/// refused endpoints of all workers (read, and reported to). The health checker's pool has none.
#[derive(Debug, Clone)]
pub struct PoolLinks {
    pub stats: Arc<WorkerStats>,
    pub refused: Arc<RefusedTable>,
    pub reporter: Reporter,
}

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
    /// The last connect failed and none succeeded since: out of this worker's rotation.
    pub unreachable: bool,
    /// That failure was a refused connect.
    pub refused: bool,
    pub last_error: Option<String>,
}

/// Whether a failed attempt provably reached no upstream at all: the TCP connect was refused or
/// timed out, the server never confirmed the HTTP/2 handshake, or the endpoint was in reconnect
/// backoff after such a failure. Such an attempt loaded no backend, so moving the call to
/// another endpoint is not a retry in the sense of a retry budget (which protects backends from
/// extra load), and the endpoint that failed is out of this worker's rotation already.
pub fn reached_no_upstream(error: &Error) -> bool {
    matches!(error, Error::Connect(_) | Error::ConnectTimeout)
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
    core: Rc<Core>,
}

/// The pool's state, shared with the tasks that drive its connections and probe endpoints.
struct Core {
    config: UpstreamConfig,
    links: Option<PoolLinks>,
    endpoints: RefCell<HashMap<SocketAddr, Rc<EndpointConns>>>,
    /// The endpoint-set generation last reconciled with `endpoints`, and that set's size (the
    /// base of the ejection cap).
    generation: Cell<u64>,
    set_len: Cell<usize>,
    /// Endpoints that left the set while connections to them were open, kept until those
    /// close so an endpoint that returns (a readiness blip) gets its record, and its running
    /// calls, back instead of having them cut by the drain timeout.
    retired: RefCell<HashMap<SocketAddr, Rc<EndpointConns>>>,
    /// Set whenever an endpoint may be out of rotation (a connect failed, an ejection), cleared
    /// by housekeeping once none is. While it is clear, which is nearly always, a pick skips
    /// the per-endpoint lookups.
    exclusions_possible: Cell<bool>,
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
    /// No connect attempt before this instant after a failure. Stays set (in the past) until a
    /// connect succeeds: "the last connect failed".
    backoff_until: Cell<Option<Instant>>,
    /// The failure that started the backoff, repeated to calls refused during it: the cause
    /// is what an operator needs to see, not the backoff.
    backoff_cause: RefCell<Option<(io::ErrorKind, String)>>,
    backoff_next: Cell<Duration>,
    /// A connect was refused, and none succeeded since; reported to the shared table once.
    refused: Cell<bool>,
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
        // The peer's own limit: a connection joins the pool only after its SETTINGS arrived.
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

/// How an attempt to open a connection failed, for the counters and the shared refused table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenFailure {
    /// ECONNREFUSED: nothing listens there.
    Refused,
    /// TCP connected, but no SETTINGS within the handshake timeout.
    Handshake,
    Other,
}

impl Pool {
    /// A pool on its own: no counters, no shared refusals (the health checker's).
    pub fn new(config: UpstreamConfig) -> Self {
        Pool::build(config, None)
    }

    /// A worker's pool: counts into the worker's stats, reads and reports refused endpoints.
    pub fn with_links(config: UpstreamConfig, links: PoolLinks) -> Self {
        Pool::build(config, Some(links))
    }

    fn build(config: UpstreamConfig, links: Option<PoolLinks>) -> Self {
        Pool {
            core: Rc::new(Core {
                config,
                links,
                endpoints: RefCell::new(HashMap::new()),
                generation: Cell::new(0),
                set_len: Cell::new(0),
                retired: RefCell::new(HashMap::new()),
                exclusions_possible: Cell::new(false),
            }),
        }
    }

    /// Bring the pool in line with `set`, once per new generation: endpoints that left it are
    /// retired (no call starts on them any more, calls already running finish, and their
    /// connections then close); endpoints new to this worker are returned, so the caller can
    /// warm a connection to each before calls need one.
    pub fn reconcile(&self, set: &EndpointSet) -> Vec<SocketAddr> {
        let core = &self.core;
        core.retired
            .borrow_mut()
            .retain(|_, endpoint| endpoint.live_connections.get() > 0);
        if core.generation.get() == set.generation {
            return Vec::new();
        }
        core.generation.set(set.generation);
        core.set_len.set(set.endpoints.len());
        let mut endpoints = core.endpoints.borrow_mut();
        let mut retired = core.retired.borrow_mut();
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
                    endpoint.unretire(&core.config);
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
        let endpoint = self.core.endpoint(addr);
        if !endpoint.conns.borrow().is_empty() || endpoint.connecting.get() > 0 {
            return;
        }
        if let Ok(conn) = connect(&self.core, &endpoint).await {
            // `connect` reserved a stream slot for a caller; there is none, so give it back.
            drop(Lease { conn, endpoint });
        }
    }

    /// This worker's calls in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.core
            .endpoints
            .borrow()
            .get(&addr)
            .map_or(0, |e| e.calls_in_flight.get())
    }

    /// Whether `addr` is ejected at `now` by passive outlier detection on this worker.
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        self.core
            .endpoints
            .borrow()
            .get(&addr)
            .is_some_and(|e| e.ejected_at(now))
    }

    /// Whether any endpoint might be ejected, so pickers can skip the per-endpoint check.
    pub fn any_ejected(&self) -> bool {
        self.core
            .endpoints
            .borrow()
            .values()
            .any(|e| e.ejected_until.get().is_some())
    }

    /// Whether `addr` may take a new call on this worker: not refused on any worker (`refused`,
    /// the shared snapshot, from `RefusedTable::load`), not unreachable here (its last connect
    /// failed and none succeeded since), and not ejected. The balancer's `eligible` is this
    /// and active health. Costs a length check and a flag test while nothing is out.
    pub fn available(&self, addr: SocketAddr, refused: &RefusedSet) -> bool {
        if refused.contains(addr) {
            return false;
        }
        let core = &self.core;
        if !core.exclusions_possible.get() {
            return true;
        }
        core.endpoints
            .borrow()
            .get(&addr)
            .is_none_or(|e| !e.unreachable() && !e.ejected_at(Instant::now()))
    }

    /// Off the request path, on every housekeeping tick of the worker: note when no endpoint is
    /// out of rotation any more, and probe the endpoints of `set` this worker leaves out for
    /// being unreachable (its own failed connects, and refusals other workers reported) once
    /// their reconnect backoff allows. A probe is an ordinary connect whose connection is kept,
    /// so an endpoint that listens again is back in rotation, warm, without a call having had
    /// to try it first; and the `/ready` answer recovers without traffic.
    pub fn housekeeping(&self, set: &EndpointSet) {
        let core = &self.core;
        let now = Instant::now();
        let mut out_of_rotation = false;
        let mut probes = Vec::new();
        for endpoint in core.endpoints.borrow().values() {
            let unreachable = endpoint.unreachable();
            out_of_rotation |= unreachable || endpoint.ejected_at(now);
            if unreachable && endpoint.may_probe(now, &core.config) {
                probes.push(endpoint.clone());
            }
        }
        core.exclusions_possible.set(out_of_rotation);
        if let Some(links) = &core.links {
            for addr in links.refused.load().iter() {
                if !set.endpoints.contains(&addr) || probes.iter().any(|p| p.addr == addr) {
                    continue;
                }
                let endpoint = core.endpoint(addr);
                if endpoint.may_probe(now, &core.config) {
                    probes.push(endpoint);
                }
            }
        }
        for endpoint in probes {
            let core = core.clone();
            monoio::spawn(async move {
                if let Ok(conn) = connect(&core, &endpoint).await {
                    drop(Lease { conn, endpoint });
                }
            });
        }
    }

    /// Record a finished call's outcome for `addr`: `Err` with a reason when it failed in a
    /// way that speaks about the endpoint's health (connect failure, UNAVAILABLE). Ejects the
    /// endpoint after enough consecutive failures, unless `set_len` says too many are out.
    pub fn record_outcome(&self, addr: SocketAddr, outcome: Result<(), String>, set_len: usize) {
        let core = &self.core;
        let endpoints = core.endpoints.borrow();
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
        let threshold = core.config.outlier.consecutive_failures;
        if threshold > 0 && failures >= threshold {
            core.eject(&endpoints, endpoint, set_len, &reason);
        }
        *endpoint.last_error.borrow_mut() = Some(reason);
    }

    /// This worker's view of every endpoint it has talked to.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let now = Instant::now();
        self.core
            .endpoints
            .borrow()
            .values()
            .map(|e| EndpointStats {
                addr: e.addr,
                connections: e.conns.borrow().len(),
                calls_in_flight: e.calls_in_flight.get(),
                calls_total: e.calls_total.get(),
                failures_total: e.failures_total.get(),
                ejected: e.ejected_at(now),
                ejections_total: e.ejections_total.get(),
                unreachable: e.unreachable(),
                refused: e.refused.get(),
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
        let endpoint = self.core.endpoint(addr);
        // Set at the call's first wait; a call that finds a free slot never reads the clock.
        let mut wait_deadline = None;
        loop {
            let conn = match endpoint.reserve() {
                Some(conn) => conn,
                // Boxed: connecting and queueing carry large timer states that a call which
                // finds a free slot, the common case, should not have to make room for.
                None => {
                    let deadline = *wait_deadline
                        .get_or_insert_with(|| Instant::now() + self.core.config.pending_timeout);
                    Box::pin(open_or_wait(&self.core, &endpoint, deadline)).await?
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
}

impl Core {
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
                    refused: Cell::new(false),
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

    fn stats(&self) -> Option<&WorkerStats> {
        self.links.as_ref().map(|links| links.stats.as_ref())
    }

    /// Take `endpoint` (one of `endpoints`) out of rotation for a time that grows with each
    /// ejection, unless it is out already or the cap on ejected endpoints (a share of
    /// `set_len`) is reached.
    fn eject(
        &self,
        endpoints: &HashMap<SocketAddr, Rc<EndpointConns>>,
        endpoint: &EndpointConns,
        set_len: usize,
        reason: &str,
    ) {
        let outlier = &self.config.outlier;
        let now = Instant::now();
        if endpoint.ejected_at(now) {
            return;
        }
        let ejected_now = endpoints.values().filter(|e| e.ejected_at(now)).count();
        // As in Envoy, one endpoint may always be ejected; beyond that, at most the
        // configured share of the set.
        let within_cap = ejected_now == 0
            || (ejected_now + 1) * 100 <= set_len * outlier.max_ejection_percent as usize;
        if !within_cap {
            return;
        }
        let times = (endpoint.ejections_total.get() + 1).min(EJECTION_MULTIPLIER_MAX);
        endpoint
            .ejections_total
            .set(endpoint.ejections_total.get() + 1);
        endpoint
            .ejected_until
            .set(Some(now + outlier.base_ejection * times));
        let failures = endpoint.consecutive_failures.replace(0);
        self.exclusions_possible.set(true);
        tracing::warn!(
            endpoint = %endpoint.addr,
            failures,
            ejection_ms = (outlier.base_ejection * times).as_millis() as u64,
            reason = %reason,
            "endpoint ejected"
        );
    }

    /// A connection to `endpoint` stopped answering PINGs: the endpoint, not only the
    /// connection, is suspect (a stopped process, a wedged server, a dead node), so it is
    /// ejected like one whose calls fail, unless passive ejection is off or it left the set.
    fn keepalive_unanswered(&self, endpoint: &Rc<EndpointConns>) {
        if let Some(stats) = self.stats() {
            stats.upstream_keepalive_timeouts.add(1);
        }
        let reason = "keepalive PING unanswered";
        endpoint
            .failures_total
            .set(endpoint.failures_total.get() + 1);
        *endpoint.last_error.borrow_mut() = Some(reason.into());
        let endpoints = self.endpoints.borrow();
        let in_set = endpoints
            .get(&endpoint.addr)
            .is_some_and(|e| Rc::ptr_eq(e, endpoint));
        if self.config.outlier.consecutive_failures > 0 && in_set {
            self.eject(&endpoints, endpoint, self.set_len.get(), reason);
        }
    }

    fn connect_failed(&self, endpoint: &EndpointConns, failure: OpenFailure, error: &Error) {
        endpoint.note_connect_failure(&self.config, error);
        self.exclusions_possible.set(true);
        debug!(endpoint = %endpoint.addr, error = %error, "upstream connect failed");
        match failure {
            OpenFailure::Refused => {
                let first = !endpoint.refused.replace(true);
                if let Some(links) = &self.links {
                    links.stats.upstream_connects_refused.add(1);
                    if first {
                        links.reporter.report(Report::Refused(endpoint.addr));
                    }
                }
            }
            OpenFailure::Handshake => {
                if let Some(stats) = self.stats() {
                    stats.upstream_handshake_timeouts.add(1);
                }
            }
            OpenFailure::Other => {}
        }
    }

    fn connected(&self, endpoint: &EndpointConns) {
        endpoint.backoff_until.set(None);
        endpoint.backoff_next.set(self.config.reconnect_backoff);
        let was_refused = endpoint.refused.replace(false);
        if let Some(links) = &self.links {
            if was_refused || links.refused.load().contains(endpoint.addr) {
                links.reporter.report(Report::Connected(endpoint.addr));
            }
        }
    }
}

/// No slot is free: open another connection if the bound allows, else wait for a slot.
async fn open_or_wait(
    core: &Rc<Core>,
    endpoint: &Rc<EndpointConns>,
    wait_deadline: Instant,
) -> Result<Rc<Conn>, Error> {
    loop {
        if endpoint.retired.get() {
            return Err(Error::Connect(io::Error::new(
                io::ErrorKind::NotFound,
                "endpoint left the set while the call waited",
            )));
        }
        // One connect at a time per endpoint: calls arriving while it is under way wait for
        // it, since one connection takes many streams. A burst on a cold pool then opens one
        // connection, not one per call. When that connect fails (refused, or no SETTINGS in
        // time), the waiters are woken and fail fast on the backoff, so they move elsewhere.
        let open = endpoint.conns.borrow().len() + endpoint.connecting.get();
        if open < core.config.connections_per_endpoint_max && endpoint.connecting.get() == 0 {
            return connect(core, endpoint).await;
        }
        if endpoint.waiting.get() >= core.config.pending_calls_max {
            return Err(Error::PoolExhausted);
        }
        let waiting = Counted::new(&endpoint.waiting);
        let woken =
            monoio::time::timeout_at(wait_deadline.into(), endpoint.changed.notified()).await;
        drop(waiting);
        if woken.is_err() {
            return Err(Error::PendingTimeout);
        }
        if let Some(conn) = endpoint.reserve() {
            return Ok(conn);
        }
    }
}

/// Open one connection to the endpoint (confirmed by the server's SETTINGS), register it, and
/// reserve a slot on it.
async fn connect(core: &Rc<Core>, endpoint: &Rc<EndpointConns>) -> Result<Rc<Conn>, Error> {
    if let Some(until) = endpoint.backoff_until.get() {
        if Instant::now() < until {
            debug!(endpoint = %endpoint.addr, "endpoint in reconnect backoff");
            let (kind, cause) = endpoint.backoff_cause.borrow().clone().unwrap_or((
                io::ErrorKind::ConnectionRefused,
                "in reconnect backoff after a failed connect".into(),
            ));
            return Err(Error::Connect(io::Error::new(kind, cause)));
        }
    }
    // Whatever happens, even the caller being dropped mid-connect, waiters are woken when this
    // ends: they may then connect themselves or use the new connection.
    let connecting = Counted::waking(&endpoint.connecting, &endpoint.changed);
    let result = open(endpoint.addr, &core.config).await;
    drop(connecting);
    let (send, connection) = match result {
        Ok(pair) => pair,
        Err((failure, e)) => {
            core.connect_failed(endpoint, failure, &e);
            return Err(e);
        }
    };
    core.connected(endpoint);
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
        core.clone(),
    ));
    Ok(conn)
}

/// One unit of a count (connects under way, calls waiting) held across an await. A caller
/// dropped there (its client left, its deadline passed) gives it back, so the endpoint is never
/// left believing a connect is under way that no one runs, which would hold every later call in
/// the queue until its timeout.
struct Counted<'a> {
    count: &'a Cell<usize>,
    /// Woken (all waiters) when the unit is given back.
    wake: Option<&'a Notify>,
}

impl<'a> Counted<'a> {
    fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Counted { count, wake: None }
    }

    fn waking(count: &'a Cell<usize>, wake: &'a Notify) -> Self {
        count.set(count.get() + 1);
        Counted {
            count,
            wake: Some(wake),
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.count.set(self.count.get() - 1);
        if let Some(wake) = self.wake {
            wake.notify_waiters();
        }
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

    fn ejected_at(&self, now: Instant) -> bool {
        self.ejected_until.get().is_some_and(|until| now < until)
    }

    /// The last connect failed and none succeeded since, and no connection is open: nothing
    /// says a call would reach the endpoint. (A failed extra connection beside working ones
    /// leaves the endpoint in rotation.)
    fn unreachable(&self) -> bool {
        self.backoff_until.get().is_some() && self.conns.borrow().is_empty()
    }

    /// Whether housekeeping may open a probe connection now.
    fn may_probe(&self, now: Instant, config: &UpstreamConfig) -> bool {
        !self.retired.get()
            && self.connecting.get() == 0
            && self.backoff_until.get().is_none_or(|until| now >= until)
            && self.conns.borrow().len() < config.connections_per_endpoint_max
    }

    fn note_connect_failure(&self, config: &UpstreamConfig, error: &Error) {
        *self.backoff_cause.borrow_mut() = Some(match error {
            Error::Connect(e) => (e.kind(), e.to_string()),
            Error::ConnectTimeout => (io::ErrorKind::TimedOut, "connect timeout".into()),
            other => (io::ErrorKind::Other, other.to_string()),
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
    /// serving the calls they carry and close when idle; new calls open new connections. What
    /// its connects did before it left says little about what answers there now (often a new
    /// pod on the same address), so it starts reachable.
    fn unretire(&self, config: &UpstreamConfig) {
        debug!(endpoint = %self.addr, "endpoint is back in the set");
        self.retired.set(false);
        self.backoff_until.set(None);
        self.backoff_next.set(config.reconnect_backoff);
        self.refused.set(false);
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

/// TCP connect, the HTTP/2 preface, then the server's SETTINGS: a connection is usable only
/// once the server has spoken.
async fn open(
    addr: SocketAddr,
    config: &UpstreamConfig,
) -> Result<(SendRequest<Bytes>, H2Connection), (OpenFailure, Error)> {
    let other = |e: io::Error| (OpenFailure::Other, Error::Connect(e));
    let stream =
        match monoio::time::timeout(config.connect_timeout, TcpStream::connect_addr(addr)).await {
            Err(_) => return Err((OpenFailure::Other, Error::ConnectTimeout)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err((OpenFailure::Refused, Error::Connect(e)))
            }
            Ok(Err(e)) => return Err(other(e)),
            Ok(Ok(stream)) => stream,
        };
    stream.set_nodelay(true).map_err(other)?;
    if let Some(idle) = config.tcp_keepalive {
        stream
            .set_tcp_keepalive(Some(idle), None, None)
            .map_err(other)?;
    }
    let io = into_upstream_io(stream).map_err(other)?;
    // h2's handshake only queues the client preface and our SETTINGS; it does not wait for the
    // server, hence `confirm`.
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(config.stream_window_bytes)
        .initial_connection_window_size(config.connection_window_bytes)
        .max_frame_size(config.frame_bytes_max)
        .initial_max_send_streams(SETTINGS_NOT_RECEIVED)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| other(io::Error::other(e)))?;
    confirm(&send, &mut connection, config.handshake_timeout).await?;
    Ok((send, connection))
}

/// Drive the new connection until the server's SETTINGS have been applied (h2 applies them in
/// the same poll that reads them, after queueing our ACK), for at most `timeout`.
async fn confirm(
    send: &SendRequest<Bytes>,
    connection: &mut H2Connection,
    timeout: Duration,
) -> Result<(), (OpenFailure, Error)> {
    let settings = poll_fn(|cx| {
        if let Poll::Ready(ended) = Pin::new(&mut *connection).poll(cx) {
            return Poll::Ready(Err(ended.err()));
        }
        if send.current_max_send_streams() == SETTINGS_NOT_RECEIVED {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    });
    match monoio::time::timeout(timeout, settings).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            let why = error.map_or_else(|| "closed".to_string(), |e| e.to_string());
            Err((
                OpenFailure::Other,
                Error::Connect(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the upstream ended the connection before its HTTP/2 SETTINGS: {why}"),
                )),
            ))
        }
        Err(_) => Err((
            OpenFailure::Handshake,
            Error::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no HTTP/2 SETTINGS from the upstream within {} ms",
                    timeout.as_millis()
                ),
            )),
        )),
    }
}

#[cfg(feature = "h2-poll-io")]
fn into_upstream_io(stream: TcpStream) -> io::Result<UpstreamIo> {
    stream.try_into_poll_io().map_err(|(e, _)| e)
}

#[cfg(not(feature = "h2-poll-io"))]
fn into_upstream_io(stream: TcpStream) -> io::Result<UpstreamIo> {
    Ok(monoio_compat::TcpStreamCompat::new(stream))
}

/// How a connection's driver ended.
enum Ended {
    /// The connection closed (GOAWAY and idle, or the peer closed it) or failed.
    Closed(Result<(), h2::Error>),
    /// Sending a keepalive PING failed (the connection is already broken).
    PingFailed(h2::Error),
    /// A keepalive PING got no answer in time.
    PingUnanswered,
    /// The endpoint left the set and its drain timeout passed.
    Drained,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed(Ok(())) => f.write_str("closed"),
            Ended::Closed(Err(e)) => write!(f, "{e}"),
            Ended::PingFailed(e) => write!(f, "keepalive ping failed: {e}"),
            Ended::PingUnanswered => f.write_str("keepalive ping unanswered"),
            Ended::Drained => f.write_str("endpoint left the set and the drain timeout passed"),
        }
    }
}

/// Run one connection's HTTP/2 state machine (and its PING keepalive) until it ends, then take
/// it out of the pool; an unanswered PING ejects the endpoint.
async fn drive_connection(
    mut connection: H2Connection,
    endpoint: Rc<EndpointConns>,
    closed: Rc<Cell<bool>>,
    core: Rc<Core>,
) {
    let config = &core.config;
    let keepalive = connection.ping_pong().zip(config.keepalive_interval);
    let run = async {
        match keepalive {
            Some((ping_pong, interval)) => monoio::select! {
                result = &mut connection => Ended::Closed(result),
                missed = keep_alive(ping_pong, interval, config.keepalive_timeout) => missed,
            },
            None => Ended::Closed((&mut connection).await),
        }
    };
    let drained = endpoint.drained(config.drain_timeout);
    let ended = monoio::select! {
        ended = run => ended,
        _ = drained => Ended::Drained,
    };
    if !matches!(ended, Ended::Closed(Ok(()))) {
        debug!(endpoint = %endpoint.addr, error = %ended, "upstream connection ended");
    }
    if matches!(ended, Ended::PingUnanswered) {
        core.keepalive_unanswered(&endpoint);
    }
    closed.set(true);
    endpoint
        .live_connections
        .set(endpoint.live_connections.get() - 1);
    endpoint.remove_closed();
    endpoint.changed.notify_waiters();
}

/// Send a PING every `interval`; return when one fails or is not answered within `timeout`.
async fn keep_alive(mut ping_pong: h2::PingPong, interval: Duration, timeout: Duration) -> Ended {
    loop {
        monoio::time::sleep(interval).await;
        match monoio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return Ended::PingFailed(e),
            Err(_) => return Ended::PingUnanswered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> UpstreamConfig {
        let ms = Duration::from_millis;
        UpstreamConfig {
            connect_timeout: ms(1000),
            // Far longer than the caller waits: the caller is dropped mid-handshake.
            handshake_timeout: ms(60_000),
            tcp_keepalive: None,
            keepalive_interval: None,
            keepalive_timeout: ms(1000),
            stream_window_bytes: 65_535,
            connection_window_bytes: 65_535,
            frame_bytes_max: 16_384,
            connections_per_endpoint_max: 1,
            pending_calls_max: 8,
            pending_timeout: ms(60_000),
            reconnect_backoff: ms(100),
            reconnect_backoff_max: ms(1000),
            drain_timeout: ms(1000),
            outlier: OutlierConfig {
                consecutive_failures: 5,
                base_ejection: ms(1000),
                max_ejection_percent: 50,
            },
        }
    }

    fn request() -> Request<()> {
        Request::post("http://test/x").body(()).unwrap()
    }

    /// A caller dropped while its connect waits for the server's SETTINGS (its client left)
    /// gives back its place: the endpoint does not believe a connect is still under way, and
    /// a call queued behind it is woken to try for itself.
    #[test]
    fn a_caller_dropped_mid_connect_leaves_no_connect_behind() {
        // Accepts and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        runtime.block_on(async {
            let pool = Rc::new(Pool::new(config()));
            let connecting = || pool.core.endpoint(addr).connecting.get();
            let queued = {
                let pool = pool.clone();
                monoio::spawn(async move {
                    // Waits behind the first caller's connect (one connection at most).
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    let call = monoio::time::timeout(
                        Duration::from_millis(200),
                        pool.start_call(addr, request, true),
                    );
                    call.await.is_ok()
                })
            };
            let first = monoio::time::timeout(
                Duration::from_millis(50),
                pool.start_call(addr, request, true),
            )
            .await;
            assert!(first.is_err(), "the silent server cannot complete a call");
            // The queued caller was woken when the first one gave up, and connects itself,
            // then gives up too when its own timeout drops it.
            let _ = queued.await;
            assert_eq!(connecting(), 0);
            assert_eq!(pool.core.endpoint(addr).waiting.get(), 0);
        });
        drop(silent);
    }
}
