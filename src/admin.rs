//! The admin listener: readiness and liveness for kubelet probes, statistics for people and
//! Prometheus, the endpoint table, the effective flags, and the controls to fail readiness or
//! start a drain.
//!
//! It runs on its own thread, apart from the workers, with a small monoio runtime (epoll: the
//! control plane is not on the request path) serving up to [`ADMIN_CONNECTIONS_MAX`] connections
//! at once, one request each. Each connection has [`CLIENT_DEADLINE`] for its whole exchange,
//! however slowly its bytes arrive, so a client trickling a request cannot hold the probes up:
//! they are served beside it. When every slot is taken, a new connection takes the slot of the
//! oldest one still reading its request (a probe's request arrives whole in its first packet, a
//! trickler's never does); when none is reading, the new one is closed at once.
//!
//! State-changing requests (`POST /drain`, `/healthcheck/fail`, `/healthcheck/ok`) are refused
//! with 403 when they come from a browser page: such a request carries `Origin`, or (DNS
//! rebinding) a `Host` name that is not `localhost`. A page must not be able to drain the LB.
//!
//! It only reads what the workers and the control plane publish (counters, snapshots); it never
//! touches a worker's state.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::server::ServerView;
use crate::stats::Totals;

/// Admin requests are small; anything larger is refused.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Most header fields in an admin request.
const REQUEST_HEADERS_MAX: usize = 32;
/// A client gets this long for its whole exchange: its request, however it trickles, and the
/// answer. The shipped probes time out after 1 s; a request of theirs takes microseconds.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Admin connections served at once. Admin traffic is a probe every few seconds and a scrape
/// every few more; this is far more than they need, and bounds what a flood can hold.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;

/// Why the process should begin its drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    Signal(i32),
    AdminRequest,
}

/// Process-wide switches the admin page reads and sets.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Set once the drain began: readiness fails from then on.
    pub draining: AtomicBool,
    /// Set by `POST /healthcheck/fail`, cleared by `POST /healthcheck/ok`.
    pub healthcheck_failed: AtomicBool,
}

pub struct AdminServer {
    local_addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl AdminServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Bind the admin listener and serve it on a thread of its own for the life of the process.
pub fn spawn(
    addr: SocketAddr,
    config: Config,
    view: ServerView,
    lifecycle: Arc<Lifecycle>,
    drain: Sender<DrainReason>,
) -> io::Result<AdminServer> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let thread = std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            let admin = Rc::new(Admin {
                config,
                view,
                lifecycle,
                drain,
                slots: Slots::default(),
            });
            let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            match runtime {
                Ok(mut runtime) => {
                    if let Err(e) = runtime.block_on(accept_loop(listener, admin)) {
                        warn!(error = %e, "admin listener stopped");
                    }
                }
                Err(e) => warn!(error = %e, "admin listener could not start its runtime"),
            }
        })?;
    info!(admin = %local_addr, "admin listening");
    Ok(AdminServer {
        local_addr,
        _thread: thread,
    })
}

async fn accept_loop(listener: TcpListener, admin: Rc<Admin>) -> io::Result<()> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: the probes will say so; do not spin.
                warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = admin.slots.take() else {
            debug!("admin connection refused: every slot is busy answering");
            continue;
        };
        let admin = admin.clone();
        monoio::spawn(async move {
            let exchange = monoio::time::timeout(CLIENT_DEADLINE, admin.serve(stream, &slot));
            monoio::select! {
                done = exchange => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "admin request failed"),
                    Err(_) => debug!("admin client too slow: closed at its deadline"),
                },
                _ = slot.evicted.notified() => {
                    debug!("admin connection closed to make room for a newer one");
                }
            }
            admin.slots.release(&slot);
        });
    }
}

/// One admin connection's place among the [`ADMIN_CONNECTIONS_MAX`].
#[derive(Default)]
struct Slot {
    /// Still waiting for the whole request head.
    reading: Cell<bool>,
    evicted: Notify,
}

/// The admin connections being served, oldest first, and what happened to those turned away.
#[derive(Default)]
struct Slots {
    active: RefCell<Vec<Rc<Slot>>>,
    evicted_total: Cell<u64>,
    refused_total: Cell<u64>,
}

impl Slots {
    /// A slot for a new connection: a free one, else the one of the oldest connection still
    /// reading its request (which is closed), else none.
    fn take(&self) -> Option<Rc<Slot>> {
        let mut active = self.active.borrow_mut();
        if active.len() >= ADMIN_CONNECTIONS_MAX {
            let Some(oldest_reading) = active.iter().position(|s| s.reading.get()) else {
                self.refused_total.set(self.refused_total.get() + 1);
                return None;
            };
            let evicted = active.remove(oldest_reading);
            // A stored permit: the connection's task sees it even if it is not waiting yet.
            evicted.evicted.notify_one();
            self.evicted_total.set(self.evicted_total.get() + 1);
        }
        let slot = Rc::new(Slot {
            reading: Cell::new(true),
            evicted: Notify::new(),
        });
        active.push(slot.clone());
        Some(slot)
    }

    fn release(&self, slot: &Rc<Slot>) {
        self.active.borrow_mut().retain(|s| !Rc::ptr_eq(s, slot));
    }
}

struct Admin {
    config: Config,
    view: ServerView,
    lifecycle: Arc<Lifecycle>,
    drain: Sender<DrainReason>,
    slots: Slots,
}

/// An admin answer: status, content type, body.
struct Answer(u16, &'static str, String);

/// The parts of an admin request the answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdminRequest {
    method: String,
    path: String,
    origin: Option<String>,
    host: Option<String>,
}

impl Admin {
    async fn serve(&self, mut stream: TcpStream, slot: &Slot) -> io::Result<()> {
        let request = read_request(&mut stream).await?;
        slot.reading.set(false);
        let answer = match request {
            Some(request) => self.answer(&request),
            None => Answer(400, "text/plain", "bad request\n".into()),
        };
        let Answer(status, content_type, body) = answer;
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            crate::http1::reason_phrase(status),
            body.len()
        );
        out.push_str(&body);
        let (written, _) = stream.write_all(out.into_bytes()).await;
        written.map(drop)
    }

    fn answer(&self, request: &AdminRequest) -> Answer {
        let path = request.path.split('?').next().unwrap_or(&request.path);
        if is_mutation(path)
            && request.method == "POST"
            && !mutation_allowed(request.origin.as_deref(), request.host.as_deref())
        {
            warn!(
                path,
                origin = request.origin.as_deref().unwrap_or(""),
                host = request.host.as_deref().unwrap_or(""),
                "admin request from a browser refused"
            );
            return Answer(
                403,
                "text/plain",
                "refused: state-changing admin requests are not taken from browsers (an Origin \
                 header, or a Host that is neither an IP address nor localhost)\n"
                    .into(),
            );
        }
        self.route(&request.method, path)
    }

    fn route(&self, method: &str, path: &str) -> Answer {
        let mutating = is_mutation(path);
        match (method, path) {
            ("POST", "/healthcheck/fail") => {
                self.lifecycle
                    .healthcheck_failed
                    .store(true, Ordering::Relaxed);
                info!("readiness failed by admin request");
                Answer(200, "text/plain", "OK\n".into())
            }
            ("POST", "/healthcheck/ok") => {
                self.lifecycle
                    .healthcheck_failed
                    .store(false, Ordering::Relaxed);
                info!("readiness restored by admin request");
                Answer(200, "text/plain", "OK\n".into())
            }
            ("POST", "/drain") => {
                let _ = self.drain.send(DrainReason::AdminRequest);
                Answer(202, "text/plain", "draining\n".into())
            }
            (_, _) if mutating => Answer(405, "text/plain", "use POST\n".into()),
            ("GET" | "HEAD", "/live") => Answer(200, "text/plain", "live\n".into()),
            ("GET" | "HEAD", "/ready") => self.ready(),
            ("GET", "/stats") => Answer(200, "text/plain", self.stats_text()),
            ("GET", "/stats/prometheus") => {
                Answer(200, "text/plain; version=0.0.4", self.stats_prometheus())
            }
            ("GET", "/clusters") => Answer(200, "text/plain", self.clusters()),
            ("GET", "/config") => Answer(200, "text/plain", format!("{:#?}\n", self.config)),
            ("GET" | "HEAD", _) => Answer(
                404,
                "text/plain",
                "endpoints: /ready /live /stats /stats/prometheus /clusters /config, \
                 POST /healthcheck/fail /healthcheck/ok /drain\n"
                    .into(),
            ),
            _ => Answer(405, "text/plain", "method not allowed\n".into()),
        }
    }

    /// Ready unless draining, failed by request, or (with `--ready-requires-upstream`) without
    /// any endpoint that can take a call.
    fn ready(&self) -> Answer {
        let not_ready = |why: &str| Answer(503, "text/plain", format!("not ready: {why}\n"));
        if self.lifecycle.draining.load(Ordering::Relaxed) {
            return not_ready("draining");
        }
        if self.lifecycle.healthcheck_failed.load(Ordering::Relaxed) {
            return not_ready("failed by POST /healthcheck/fail");
        }
        if self.config.ready_requires_upstream {
            if let Some(why) = self.no_endpoint_can_take_a_call() {
                return not_ready(&why);
            }
        }
        Answer(200, "text/plain", "ready\n".into())
    }

    /// Why no endpoint can take a call, or `None` when one can: one in the set that passes
    /// active health checks, that no worker found refusing connects, and that some worker has
    /// neither unreachable nor ejected (a worker that never called it counts as able to).
    /// The workers' views are republished about every second; refusals at once.
    fn no_endpoint_can_take_a_call(&self) -> Option<String> {
        let set = self.view.directory.snapshot();
        if set.endpoints.is_empty() {
            return Some("no upstream endpoint (the set is empty)".into());
        }
        let unhealthy = self.view.health.unhealthy();
        let refused = self.view.refused.load();
        let workers: Vec<_> = self.view.endpoint_stats.iter().map(|w| w.load()).collect();
        let usable = set.endpoints.iter().any(|addr| {
            !unhealthy.contains(addr)
                && !refused.contains(*addr)
                && workers.iter().any(|worker| {
                    worker
                        .iter()
                        .find(|e| e.addr == *addr)
                        .is_none_or(|e| !e.ejected && !e.unreachable)
                })
        });
        (!usable).then(|| {
            format!(
                "no upstream endpoint can take a call ({} in the set; each failed health checks, \
                 refused connects, is unreachable or ejected)",
                set.endpoints.len()
            )
        })
    }

    fn totals(&self) -> Totals {
        let mut totals = Totals::sum(self.view.worker_stats.iter().map(|s| s.as_ref()));
        totals.access_log_lines_dropped = self
            .view
            .access_log
            .as_ref()
            .map_or(0, |sink| sink.lost_lines());
        totals
    }

    /// The certificate's counters (process-wide, kept by the reloader), with `--tls-listen`:
    /// name, help, value.
    fn tls_certificate_counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let Some(tls) = &self.view.tls else {
            return Vec::new();
        };
        let stats = tls.stats();
        vec![
            (
                "certificate_reloads",
                "New certificates loaded after their files changed.",
                stats.reloads.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "certificate_reload_failures",
                "Certificate file changes that could not be loaded (the previous certificate stays).",
                stats.reload_failures.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "sni_unmatched",
                "Handshakes naming (SNI) a host the certificate does not cover.",
                tls.sni_unmatched(),
            ),
        ]
    }

    fn stats_text(&self) -> String {
        let mut out = String::new();
        self.totals().render_text(&mut out);
        let set = self.view.directory.snapshot();
        let _ = writeln!(out, "endpoints.generation: {}", set.generation);
        let _ = writeln!(out, "endpoints.count: {}", set.endpoints.len());
        let _ = writeln!(
            out,
            "endpoints.unhealthy: {}",
            self.view.health.unhealthy().len()
        );
        let (ejected, connections, failures, ejections) = self.endpoint_sums();
        let _ = writeln!(out, "endpoints.ejected: {ejected}");
        let _ = writeln!(out, "endpoints.refused: {}", self.view.refused.load().len());
        let _ = writeln!(
            out,
            "endpoints.unreachable: {}",
            self.unreachable_endpoints()
        );
        let _ = writeln!(out, "upstream.connections_active: {connections}");
        let _ = writeln!(out, "upstream.failures: {failures}");
        let _ = writeln!(out, "upstream.ejections: {ejections}");
        if let Some(status) = self.view.discovery.as_ref().map(|d| d.load()) {
            for target in &status.targets {
                let _ = writeln!(
                    out,
                    "dns.{}: addresses={} consecutive_failures={} stale={} early_refreshes={} last_error={:?}",
                    target.target,
                    target.addresses.len(),
                    target.consecutive_failures,
                    target.stale,
                    target.early_refreshes,
                    target.last_error
                );
            }
        }
        for (name, _, value) in self.tls_certificate_counters() {
            let _ = writeln!(out, "tls.{name}: {value}");
        }
        let _ = writeln!(
            out,
            "admin.connections_evicted: {}",
            self.slots.evicted_total.get()
        );
        let _ = writeln!(
            out,
            "admin.connections_refused: {}",
            self.slots.refused_total.get()
        );
        out
    }

    /// Endpoints some worker has out of rotation because its last connect failed.
    fn unreachable_endpoints(&self) -> usize {
        let mut unreachable = std::collections::HashSet::new();
        for worker in &self.view.endpoint_stats {
            for e in worker.load().iter().filter(|e| e.unreachable) {
                unreachable.insert(e.addr);
            }
        }
        unreachable.len()
    }

    /// (ejected on some worker, upstream connections, failed calls, ejections) over workers.
    fn endpoint_sums(&self) -> (usize, usize, u64, u64) {
        let mut ejected = std::collections::HashSet::new();
        let (mut connections, mut failures, mut ejections) = (0, 0, 0);
        for worker in &self.view.endpoint_stats {
            for e in worker.load().iter() {
                if e.ejected {
                    ejected.insert(e.addr);
                }
                connections += e.connections;
                failures += e.failures_total;
                ejections += u64::from(e.ejections_total);
            }
        }
        (ejected.len(), connections, failures, ejections)
    }

    fn stats_prometheus(&self) -> String {
        let mut out = String::new();
        self.totals().render_prometheus(&mut out);
        let set = self.view.directory.snapshot();
        let unhealthy = self.view.health.unhealthy();
        let _ = writeln!(out, "# HELP ringway_endpoints Upstream endpoints in the current set.\n# TYPE ringway_endpoints gauge\nringway_endpoints {}", set.endpoints.len());
        let _ = writeln!(out, "# HELP ringway_endpoints_refused Endpoints some worker found refusing connects (out of every worker's rotation).\n# TYPE ringway_endpoints_refused gauge\nringway_endpoints_refused {}", self.view.refused.load().len());
        for (name, help, value) in self.tls_certificate_counters() {
            let _ = writeln!(out, "# HELP ringway_tls_{name}_total {help}\n# TYPE ringway_tls_{name}_total counter\nringway_tls_{name}_total {value}");
        }
        let _ = writeln!(out, "# HELP ringway_admin_connections_evicted_total Admin connections closed to make room for a newer one (all slots busy).\n# TYPE ringway_admin_connections_evicted_total counter\nringway_admin_connections_evicted_total {}", self.slots.evicted_total.get());
        let _ = writeln!(out, "# HELP ringway_admin_connections_refused_total Admin connections closed at once (all slots busy answering).\n# TYPE ringway_admin_connections_refused_total counter\nringway_admin_connections_refused_total {}", self.slots.refused_total.get());
        let _ = writeln!(out, "# HELP ringway_endpoint_healthy 1 when the endpoint passes active health checks (or checks are off).\n# TYPE ringway_endpoint_healthy gauge");
        for e in &set.endpoints {
            let _ = writeln!(
                out,
                "ringway_endpoint_healthy{{endpoint=\"{e}\"}} {}",
                u8::from(!unhealthy.contains(e))
            );
        }
        let _ = writeln!(out, "# HELP ringway_endpoint_calls_total Calls per endpoint and worker, as last published by the worker.\n# TYPE ringway_endpoint_calls_total counter");
        let mut per_worker = String::new();
        for (worker, stats) in self.view.endpoint_stats.iter().enumerate() {
            for e in stats.load().iter() {
                let _ = writeln!(
                    out,
                    "ringway_endpoint_calls_total{{endpoint=\"{}\",worker=\"{worker}\"}} {}",
                    e.addr, e.calls_total
                );
                let _ = writeln!(
                    per_worker,
                    "ringway_endpoint_failures_total{{endpoint=\"{}\",worker=\"{worker}\"}} {}",
                    e.addr, e.failures_total
                );
                let _ = writeln!(
                    per_worker,
                    "ringway_endpoint_in_flight{{endpoint=\"{}\",worker=\"{worker}\"}} {}",
                    e.addr, e.calls_in_flight
                );
                let _ = writeln!(per_worker, "ringway_endpoint_upstream_connections{{endpoint=\"{}\",worker=\"{worker}\"}} {}", e.addr, e.connections);
                let _ = writeln!(
                    per_worker,
                    "ringway_endpoint_ejected{{endpoint=\"{}\",worker=\"{worker}\"}} {}",
                    e.addr,
                    u8::from(e.ejected)
                );
                let _ = writeln!(
                    per_worker,
                    "ringway_endpoint_ejections_total{{endpoint=\"{}\",worker=\"{worker}\"}} {}",
                    e.addr, e.ejections_total
                );
                let _ = writeln!(
                    per_worker,
                    "ringway_endpoint_unreachable{{endpoint=\"{}\",worker=\"{worker}\"}} {}",
                    e.addr,
                    u8::from(e.unreachable)
                );
            }
        }
        // Prometheus wants each family's samples together, after its HELP/TYPE lines.
        for (family, kind, help) in [
            (
                "ringway_endpoint_failures_total",
                "counter",
                "Failed calls (connect failures, UNAVAILABLE) per endpoint and worker.",
            ),
            (
                "ringway_endpoint_in_flight",
                "gauge",
                "Calls in flight per endpoint and worker.",
            ),
            (
                "ringway_endpoint_upstream_connections",
                "gauge",
                "HTTP/2 connections per endpoint and worker.",
            ),
            (
                "ringway_endpoint_ejected",
                "gauge",
                "1 while the worker has the endpoint ejected.",
            ),
            (
                "ringway_endpoint_ejections_total",
                "counter",
                "Ejections per endpoint and worker.",
            ),
            (
                "ringway_endpoint_unreachable",
                "gauge",
                "1 while the worker's last connect to the endpoint failed (refused, timed out, no HTTP/2 SETTINGS).",
            ),
        ] {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            for line in per_worker
                .lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
            {
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(status) = self.view.discovery.as_ref().map(|d| d.load()) {
            let _ = writeln!(out, "# HELP ringway_dns_consecutive_failures Failed resolutions in a row per target.\n# TYPE ringway_dns_consecutive_failures gauge");
            for t in &status.targets {
                let _ = writeln!(
                    out,
                    "ringway_dns_consecutive_failures{{target=\"{}\"}} {}",
                    t.target, t.consecutive_failures
                );
            }
            let _ = writeln!(out, "# HELP ringway_dns_early_refreshes_total Resolves brought forward because an endpoint of the target refused a connect.\n# TYPE ringway_dns_early_refreshes_total counter");
            for t in &status.targets {
                let _ = writeln!(
                    out,
                    "ringway_dns_early_refreshes_total{{target=\"{}\"}} {}",
                    t.target, t.early_refreshes
                );
            }
            let _ = writeln!(out, "# HELP ringway_dns_stale 1 while a target serves its last good set because DNS fails.\n# TYPE ringway_dns_stale gauge");
            for t in &status.targets {
                let _ = writeln!(
                    out,
                    "ringway_dns_stale{{target=\"{}\"}} {}",
                    t.target,
                    u8::from(t.stale)
                );
            }
        }
        out
    }

    /// Each endpoint: state, health, and per worker in-flight, totals and last error.
    fn clusters(&self) -> String {
        let set = self.view.directory.snapshot();
        let unhealthy = self.view.health.unhealthy();
        let refused = self.view.refused.load();
        let mut out = String::new();
        let _ = writeln!(out, "generation {}", set.generation);
        for addr in &set.endpoints {
            let health = if unhealthy.contains(addr) {
                "unhealthy"
            } else {
                "healthy"
            };
            let refused = refused.contains(*addr);
            let _ = writeln!(out, "{addr} state=active health={health} refused={refused}");
            for (worker, stats) in self.view.endpoint_stats.iter().enumerate() {
                if let Some(e) = stats.load().iter().find(|e| e.addr == *addr) {
                    let _ = writeln!(
                        out,
                        "  worker={worker} ejected={} unreachable={} in_flight={} calls={} failures={} connections={} ejections={} last_error={:?}",
                        e.ejected, e.unreachable, e.calls_in_flight, e.calls_total, e.failures_total, e.connections, e.ejections_total, e.last_error
                    );
                }
            }
        }
        out
    }
}

/// Whether `path` is a state-changing endpoint.
fn is_mutation(path: &str) -> bool {
    matches!(path, "/healthcheck/fail" | "/healthcheck/ok" | "/drain")
}

/// Whether a state-changing request may be taken: it does not come from a browser page.
///
/// Browsers send `Origin` with every POST, cross-site or not, and a tool (curl, a script, the
/// kubelet) sends none. A page could also reach the port through DNS rebinding (its own name,
/// re-pointed at the pod's address), which `Origin` would not reveal since the page is then
/// same-origin; its `Host` is then that name. So the host must be an IP address (any: a page
/// reaching the port by address has that address as its origin and is caught by `Origin`) or
/// `localhost` (`kubectl port-forward`). A request without `Host` (HTTP/1.0) is no browser's.
fn mutation_allowed(origin: Option<&str>, host: Option<&str>) -> bool {
    if origin.is_some() {
        return false;
    }
    let Some(host) = host else {
        return true;
    };
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => ip,
            Some((ip, port)) if port.strip_prefix(':').is_some_and(is_port) => ip,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// A port number's digits: 1 to 5 of them.
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// Read one request head; `None` when it is not a well-formed HTTP/1.x request (or too large).
async fn read_request(stream: &mut TcpStream) -> io::Result<Option<AdminRequest>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = Vec::with_capacity(1024);
    loop {
        if head.len() > REQUEST_BYTES_MAX {
            return Ok(None);
        }
        chunk.clear();
        let (read, returned) = stream.read(chunk).await;
        chunk = returned;
        if read? == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(parse_request(&head));
        }
    }
}

/// The method, path, `Origin` and `Host` of a whole request head.
fn parse_request(head: &[u8]) -> Option<AdminRequest> {
    let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    Some(AdminRequest {
        method: request.method?.to_owned(),
        path: request.path?.to_owned(),
        origin: header("origin"),
        host: header("host"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_may_not_change_state() {
        // Tools: no Origin, and a Host that is an address or localhost (or none at all).
        for host in [
            None,
            Some("127.0.0.1:9901"),
            Some("10.4.2.17:9901"),
            Some("10.4.2.17"),
            Some("localhost:19901"),
            Some("LOCALHOST"),
            Some("[::1]:9901"),
            Some("[fe80::1]"),
        ] {
            assert!(mutation_allowed(None, host), "{host:?}");
        }
        // Any Origin is a browser, whatever the Host.
        for origin in ["http://127.0.0.1:9901", "null", ""] {
            assert!(!mutation_allowed(Some(origin), Some("127.0.0.1:9901")));
        }
        // A name other than localhost: DNS rebinding, or simply not how the admin is reached.
        for host in [
            "evil.example",
            "evil.example:9901",
            "ringway-admin.monitoring.svc:9901",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9901",
            "[::1",
            "[::1]x",
            "127.0.0.1:99999999",
            "127.0.0.1:",
            "127.0.0.1:port",
            "",
        ] {
            assert!(!mutation_allowed(None, Some(host)), "{host:?}");
        }
    }

    #[test]
    fn requests_parse_with_their_origin_and_host() {
        let request = parse_request(
            b"POST /drain?x=1 HTTP/1.1\r\nHost: localhost:9901\r\nOrigin: http://a.example\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            request,
            AdminRequest {
                method: "POST".into(),
                path: "/drain?x=1".into(),
                origin: Some("http://a.example".into()),
                host: Some("localhost:9901".into()),
            }
        );
        assert_eq!(
            parse_request(b"GET /ready HTTP/1.0\r\n\r\n").unwrap().host,
            None
        );
        assert_eq!(parse_request(b"GET /ready\r\n\r\n"), None);
        assert_eq!(parse_request(b"\x00\x01\r\n\r\n"), None);
        let many: String = (0..REQUEST_HEADERS_MAX + 1)
            .map(|i| format!("x-{i}: y\r\n"))
            .collect();
        assert_eq!(
            parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            None
        );
    }

    #[test]
    fn a_full_house_evicts_the_oldest_reader_or_refuses() {
        let slots = Slots::default();
        let taken: Vec<_> = (0..ADMIN_CONNECTIONS_MAX)
            .map(|_| slots.take().unwrap())
            .collect();
        // All read: the next one takes the oldest reader's place.
        taken[0].reading.set(false);
        let newest = slots.take().unwrap();
        assert_eq!(slots.evicted_total.get(), 1);
        assert_eq!(slots.active.borrow().len(), ADMIN_CONNECTIONS_MAX);
        assert!(!slots
            .active
            .borrow()
            .iter()
            .any(|s| Rc::ptr_eq(s, &taken[1])));
        assert!(slots
            .active
            .borrow()
            .iter()
            .any(|s| Rc::ptr_eq(s, &taken[0])));
        // Nobody reading any more: refused.
        for slot in slots.active.borrow().iter() {
            slot.reading.set(false);
        }
        assert!(slots.take().is_none());
        assert_eq!(slots.refused_total.get(), 1);
        slots.release(&newest);
        assert!(slots.take().is_some(), "a released slot is free again");
    }
}
