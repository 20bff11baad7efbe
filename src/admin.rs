//! The admin listener: readiness and liveness for kubelet probes, statistics for people and
//! Prometheus, the endpoint table, the effective flags, and the controls to fail readiness or
//! start a drain.
//!
//! It runs on its own thread with blocking sockets, one request per connection, one connection
//! at a time, each bounded by a short timeout: admin traffic is a probe every few seconds and a
//! scrape every few more, and a simple loop is easier to trust than another runtime. It only
//! reads what the workers and the control plane publish (counters, snapshots); it never touches
//! a worker's state.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::Config;
use crate::server::ServerView;
use crate::stats::Totals;

/// Admin requests are small; anything larger is refused.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

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
    let local_addr = listener.local_addr()?;
    let admin = Admin {
        config,
        view,
        lifecycle,
        drain,
    };
    let thread = std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = admin.serve(stream) {
                            debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "admin accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    info!(admin = %local_addr, "admin listening");
    Ok(AdminServer {
        local_addr,
        _thread: thread,
    })
}

struct Admin {
    config: Config,
    view: ServerView,
    lifecycle: Arc<Lifecycle>,
    drain: Sender<DrainReason>,
}

/// An admin answer: status, content type, body.
struct Answer(u16, &'static str, String);

impl Admin {
    fn serve(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let answer = match read_request(&mut stream)? {
            Some((method, path)) => self.route(&method, &path),
            None => Answer(400, "text/plain", "bad request\n".into()),
        };
        let Answer(status, content_type, body) = answer;
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            crate::http1::reason_phrase(status),
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())
    }

    fn route(&self, method: &str, path: &str) -> Answer {
        let path = path.split('?').next().unwrap_or(path);
        let mutating = matches!(path, "/healthcheck/fail" | "/healthcheck/ok" | "/drain");
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

    /// Ready unless draining, failed by request, or without any usable endpoint.
    fn ready(&self) -> Answer {
        let not_ready = |why: &str| Answer(503, "text/plain", format!("not ready: {why}\n"));
        if self.lifecycle.draining.load(Ordering::Relaxed) {
            return not_ready("draining");
        }
        if self.lifecycle.healthcheck_failed.load(Ordering::Relaxed) {
            return not_ready("failed by POST /healthcheck/fail");
        }
        let set = self.view.directory.snapshot();
        let unhealthy = self.view.health.unhealthy();
        if !set.endpoints.iter().any(|e| !unhealthy.contains(e)) {
            return not_ready("no usable upstream endpoint");
        }
        Answer(200, "text/plain", "ready\n".into())
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
        let _ = writeln!(out, "upstream.connections_active: {connections}");
        let _ = writeln!(out, "upstream.failures: {failures}");
        let _ = writeln!(out, "upstream.ejections: {ejections}");
        if let Some(status) = self.view.discovery.as_ref().map(|d| d.load()) {
            for target in &status.targets {
                let _ = writeln!(
                    out,
                    "dns.{}: addresses={} consecutive_failures={} stale={} last_error={:?}",
                    target.target,
                    target.addresses.len(),
                    target.consecutive_failures,
                    target.stale,
                    target.last_error
                );
            }
        }
        out
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
        let mut out = String::new();
        let _ = writeln!(out, "generation {}", set.generation);
        for addr in &set.endpoints {
            let health = if unhealthy.contains(addr) {
                "unhealthy"
            } else {
                "healthy"
            };
            let _ = writeln!(out, "{addr} state=active health={health}");
            for (worker, stats) in self.view.endpoint_stats.iter().enumerate() {
                if let Some(e) = stats.load().iter().find(|e| e.addr == *addr) {
                    let _ = writeln!(
                        out,
                        "  worker={worker} ejected={} in_flight={} calls={} failures={} connections={} ejections={} last_error={:?}",
                        e.ejected, e.calls_in_flight, e.calls_total, e.failures_total, e.connections, e.ejections_total, e.last_error
                    );
                }
            }
        }
        out
    }
}

/// Read one request head; `None` when it is not a well-formed HTTP/1.x request.
fn read_request(stream: &mut TcpStream) -> io::Result<Option<(String, String)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > REQUEST_BYTES_MAX {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => Ok(request
            .method
            .zip(request.path)
            .map(|(m, p)| (m.to_owned(), p.to_owned()))),
        _ => Ok(None),
    }
}
