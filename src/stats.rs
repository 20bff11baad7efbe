//! Counters: one set per worker, written only by that worker, summed when read.
//!
//! Each counter is an atomic written with `Relaxed` ordering by exactly one thread, its worker:
//! an uncontended store to a cache line no other core writes, which costs about as much as a
//! plain add. The admin thread reads all workers' sets and adds them up; a reading is a
//! consistent-enough sum, never a lock on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::frame_watch::{Flood, Sent};
use crate::status::Code;

/// Upper bounds of the call-duration histogram buckets, in microseconds (Prometheus `le`).
pub const DURATION_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// HTTP statuses ringway answers locally, one counter each.
pub const LOCAL_HTTP_STATUSES: [u16; 9] = [400, 403, 405, 408, 413, 415, 417, 431, 501];

/// HTTP/2 error codes 0..=13 (RFC 9113 §7), counted by name; higher ones are counted as 13.
const H2_REASONS: usize = 14;

/// The names of the HTTP/2 error codes, for the counters.
pub const H2_REASON_NAMES: [&str; H2_REASONS] = [
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
];

/// The grpc-status values 0..=16; anything else is counted as UNKNOWN.
const GRPC_CODES: usize = 17;

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub connections_accepted: Counter,
    /// accept(2) failures: out of descriptors (EMFILE, ENFILE) or memory. The connections wait
    /// in the kernel's queue meanwhile.
    pub accept_failures: Counter,
    pub connections_active: Counter,
    pub requests: Counter,
    pub preflights: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub retries: Counter,
    /// Client connections that spoke HTTP/2, and the streams they opened.
    pub http2_connections: Counter,
    pub http2_streams: Counter,
    /// HTTP/2 connections closed with GOAWAY(ENHANCE_YOUR_CALM) for a flood, by kind.
    http2_floods: [Counter; Flood::ALL.len()],
    /// HTTP/2 connections that ended in a protocol error (h2's own GOAWAY or the client's).
    pub http2_protocol_errors: Counter,
    /// TLS handshakes and their outcomes (with `--tls-listen`).
    pub tls: TlsStats,
    /// RST_STREAM and GOAWAY frames sent to clients, by error code (RFC 9113 §7; 0..=13).
    http2_resets_sent: [Counter; H2_REASONS],
    http2_goaways_sent: [Counter; H2_REASONS],
    /// Upstream connects refused (ECONNREFUSED: nothing listens on the endpoint's port).
    pub upstream_connects_refused: Counter,
    /// Upstream connections whose server sent no HTTP/2 SETTINGS within the handshake timeout.
    pub upstream_handshake_timeouts: Counter,
    /// Upstream connections closed because a keepalive PING went unanswered.
    pub upstream_keepalive_timeouts: Counter,
    calls_by_status: [Counter; GRPC_CODES],
    local_http: [Counter; LOCAL_HTTP_STATUSES.len()],
    duration_buckets: [Counter; DURATION_BUCKETS_US.len()],
    duration_count: Counter,
    duration_sum_us: Counter,
}

/// A single-writer counter: `add`/`sub` only from the owning worker.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        // Single writer: a relaxed load and store cannot lose an update and need no lock
        // prefix, unlike fetch_add.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl WorkerStats {
    /// A finished gRPC call: its final grpc-status and how long it took.
    pub fn call_finished(&self, status: u32, duration: Duration) {
        let index = if (status as usize) < GRPC_CODES {
            status as usize
        } else {
            Code::Unknown as usize
        };
        self.calls_by_status[index].add(1);
        let us = duration.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(bucket) = DURATION_BUCKETS_US.iter().position(|le| us <= *le) {
            self.duration_buckets[bucket].add(1);
        }
        self.duration_count.add(1);
        self.duration_sum_us.add(us);
    }

    /// An HTTP/2 connection closed for a flood of `kind`.
    pub fn http2_flood(&self, kind: Flood) {
        let index = Flood::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        self.http2_floods[index].add(1);
    }

    /// A RST_STREAM or GOAWAY sent to a client.
    pub fn http2_sent(&self, sent: Sent) {
        let (counters, code) = match sent {
            Sent::Reset(code) => (&self.http2_resets_sent, code),
            Sent::GoAway(code) => (&self.http2_goaways_sent, code),
        };
        counters[(code as usize).min(H2_REASONS - 1)].add(1);
    }

    /// A CORS preflight answered: counted as a preflight when allowed, and under its status
    /// (403) when refused.
    pub fn preflight(&self, status: u16) {
        match status {
            200..=299 => self.preflights.add(1),
            _ => self.local_http(status),
        }
    }

    /// A request answered locally with an HTTP error status.
    pub fn local_http(&self, status: u16) {
        if let Some(i) = LOCAL_HTTP_STATUSES.iter().position(|s| *s == status) {
            self.local_http[i].add(1);
        }
    }
}

/// How many counters [`TlsStats::each`] lists.
pub const TLS_COUNTERS: usize = 15;

/// One worker's TLS counters (single writer: its worker), for the main stats set.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Full handshakes completed.
    pub handshakes_full: Counter,
    /// Handshakes completed by resuming a session (ticket or session ID).
    pub handshakes_resumed: Counter,
    /// Completed handshakes by ALPN result.
    pub alpn_h2: Counter,
    pub alpn_http1: Counter,
    /// Completed handshakes that negotiated TLS 1.2 (the rest are 1.3).
    pub handshakes_tls12: Counter,
    /// Handshakes cut by `--tls-handshake-timeout-ms` (silent or slow clients).
    pub handshake_timeouts: Counter,
    /// First bytes that were not a TLS handshake record.
    pub handshakes_not_tls: Counter,
    /// Plain HTTP requests sent to the TLS port (answered 400).
    pub handshakes_plain_http: Counter,
    /// Clients with nothing in common with the server: TLS versions (a TLS 1.0-only client),
    /// cipher suites, key exchange groups, ALPN protocols.
    pub handshakes_incompatible: Counter,
    /// Handshakes the client aborted with an alert (it did not trust the certificate, or the
    /// certificate does not cover the name it asked for).
    pub handshakes_peer_alert: Counter,
    /// Clients that closed or reset the connection mid-handshake.
    pub handshakes_closed: Counter,
    /// Other TLS failures (malformed or out-of-order messages, bad records).
    pub handshakes_failed_other: Counter,
    /// Connections whose record layer went to the kernel.
    pub ktls_connections: Counter,
    /// Connections that asked for kTLS and stayed in userspace (no kernel support, a cipher
    /// the kernel does not offload).
    pub ktls_fallbacks: Counter,
    /// Connections lost because the kernel refused the secrets after rustls gave them up.
    pub ktls_failures: Counter,
}

impl TlsStats {
    /// Every counter with its name, for the stats and Prometheus pages.
    pub fn each(&self) -> [(&'static str, u64); TLS_COUNTERS] {
        [
            ("tls_handshakes_full", self.handshakes_full.get()),
            ("tls_handshakes_resumed", self.handshakes_resumed.get()),
            ("tls_alpn_h2", self.alpn_h2.get()),
            ("tls_alpn_http1", self.alpn_http1.get()),
            ("tls_handshakes_tls12", self.handshakes_tls12.get()),
            ("tls_handshake_timeouts", self.handshake_timeouts.get()),
            ("tls_handshakes_not_tls", self.handshakes_not_tls.get()),
            (
                "tls_handshakes_plain_http",
                self.handshakes_plain_http.get(),
            ),
            (
                "tls_handshakes_incompatible",
                self.handshakes_incompatible.get(),
            ),
            (
                "tls_handshakes_peer_alert",
                self.handshakes_peer_alert.get(),
            ),
            ("tls_handshakes_closed", self.handshakes_closed.get()),
            (
                "tls_handshakes_failed_other",
                self.handshakes_failed_other.get(),
            ),
            ("tls_ktls_connections", self.ktls_connections.get()),
            ("tls_ktls_fallbacks", self.ktls_fallbacks.get()),
            ("tls_ktls_failures", self.ktls_failures.get()),
        ]
    }
}

/// All workers' counters added up.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub connections_accepted: u64,
    pub accept_failures: u64,
    pub connections_active: u64,
    pub requests: u64,
    pub preflights: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub retries: u64,
    pub http2_connections: u64,
    pub http2_streams: u64,
    pub http2_floods: [u64; Flood::ALL.len()],
    pub http2_protocol_errors: u64,
    pub http2_resets_sent: [u64; H2_REASONS],
    pub http2_goaways_sent: [u64; H2_REASONS],
    /// The TLS counters by name, in [`TlsStats::each`]'s order.
    pub tls: [(&'static str, u64); TLS_COUNTERS],
    pub upstream_connects_refused: u64,
    pub upstream_handshake_timeouts: u64,
    pub upstream_keepalive_timeouts: u64,
    pub calls_by_status: [u64; GRPC_CODES],
    pub local_http: [u64; LOCAL_HTTP_STATUSES.len()],
    /// Per bucket, not cumulative.
    pub duration_buckets: [u64; DURATION_BUCKETS_US.len()],
    pub duration_count: u64,
    pub duration_sum_us: u64,
    /// Access-log lines dropped because the writer fell behind (process-wide, not per worker).
    pub access_log_lines_dropped: u64,
}

impl Totals {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Totals {
        let mut t = Totals::default();
        for w in workers {
            t.connections_accepted += w.connections_accepted.get();
            t.accept_failures += w.accept_failures.get();
            t.connections_active += w.connections_active.get();
            t.requests += w.requests.get();
            t.preflights += w.preflights.get();
            t.bytes_received += w.bytes_received.get();
            t.bytes_sent += w.bytes_sent.get();
            t.retries += w.retries.get();
            t.http2_connections += w.http2_connections.get();
            t.http2_streams += w.http2_streams.get();
            add_all(&mut t.http2_floods, &w.http2_floods);
            t.http2_protocol_errors += w.http2_protocol_errors.get();
            add_all(&mut t.http2_resets_sent, &w.http2_resets_sent);
            add_all(&mut t.http2_goaways_sent, &w.http2_goaways_sent);
            for (total, (name, n)) in t.tls.iter_mut().zip(w.tls.each()) {
                *total = (name, total.1 + n);
            }
            t.upstream_connects_refused += w.upstream_connects_refused.get();
            t.upstream_handshake_timeouts += w.upstream_handshake_timeouts.get();
            t.upstream_keepalive_timeouts += w.upstream_keepalive_timeouts.get();
            add_all(&mut t.calls_by_status, &w.calls_by_status);
            add_all(&mut t.local_http, &w.local_http);
            add_all(&mut t.duration_buckets, &w.duration_buckets);
            t.duration_count += w.duration_count.get();
            t.duration_sum_us += w.duration_sum_us.get();
        }
        t
    }

    pub fn calls(&self) -> u64 {
        self.calls_by_status.iter().sum()
    }

    /// Readable text, one `name: value` per line.
    pub fn render_text(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "downstream.connections_accepted: {}",
            self.connections_accepted
        );
        let _ = writeln!(out, "downstream.accept_failures: {}", self.accept_failures);
        let _ = writeln!(
            out,
            "downstream.connections_active: {}",
            self.connections_active
        );
        let _ = writeln!(out, "downstream.requests: {}", self.requests);
        let _ = writeln!(out, "downstream.preflights: {}", self.preflights);
        let _ = writeln!(out, "downstream.bytes_received: {}", self.bytes_received);
        let _ = writeln!(out, "downstream.bytes_sent: {}", self.bytes_sent);
        for (status, n) in LOCAL_HTTP_STATUSES.iter().zip(self.local_http) {
            let _ = writeln!(out, "downstream.local_http_{status}: {n}");
        }
        let _ = writeln!(
            out,
            "downstream.http2.connections: {}",
            self.http2_connections
        );
        let _ = writeln!(out, "downstream.http2.streams: {}", self.http2_streams);
        for (kind, n) in Flood::ALL.iter().zip(self.http2_floods) {
            let _ = writeln!(out, "downstream.http2.floods.{}: {n}", kind.name());
        }
        let _ = writeln!(
            out,
            "downstream.http2.protocol_errors: {}",
            self.http2_protocol_errors
        );
        for (name, n) in H2_REASON_NAMES.iter().zip(self.http2_resets_sent) {
            let _ = writeln!(out, "downstream.http2.resets_sent.{name}: {n}");
        }
        for (name, n) in H2_REASON_NAMES.iter().zip(self.http2_goaways_sent) {
            let _ = writeln!(out, "downstream.http2.goaways_sent.{name}: {n}");
        }
        for (name, n) in self.tls {
            let _ = writeln!(out, "downstream.{name}: {n}");
        }
        let _ = writeln!(out, "calls.total: {}", self.calls());
        for (code, n) in self.calls_by_status.iter().enumerate() {
            let name = Code::from_u32(code as u32).map_or("UNKNOWN", Code::name);
            let _ = writeln!(out, "calls.grpc_status.{name}: {n}");
        }
        let _ = writeln!(out, "calls.retries: {}", self.retries);
        let _ = writeln!(
            out,
            "upstream.connects_refused: {}",
            self.upstream_connects_refused
        );
        let _ = writeln!(
            out,
            "upstream.handshake_timeouts: {}",
            self.upstream_handshake_timeouts
        );
        let _ = writeln!(
            out,
            "upstream.keepalive_timeouts: {}",
            self.upstream_keepalive_timeouts
        );
        let mean_us = self
            .duration_sum_us
            .checked_div(self.duration_count)
            .unwrap_or(0);
        let _ = writeln!(out, "calls.duration_mean_us: {mean_us}");
        let _ = writeln!(
            out,
            "access_log.lines_dropped: {}",
            self.access_log_lines_dropped
        );
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "ringway_downstream_connections_accepted_total",
            "counter",
            "Downstream connections accepted.",
            self.connections_accepted,
        );
        metric(
            "ringway_downstream_accept_failures_total",
            "counter",
            "accept(2) failures: out of file descriptors or memory (connections wait in the kernel queue).",
            self.accept_failures,
        );
        metric(
            "ringway_downstream_connections_active",
            "gauge",
            "Downstream connections open.",
            self.connections_active,
        );
        metric(
            "ringway_downstream_requests_total",
            "counter",
            "Requests read (HTTP/1.1 requests and HTTP/2 streams).",
            self.requests,
        );
        metric(
            "ringway_downstream_preflights_total",
            "counter",
            "CORS preflights answered.",
            self.preflights,
        );
        metric(
            "ringway_downstream_received_bytes_total",
            "counter",
            "Bytes read from clients.",
            self.bytes_received,
        );
        metric(
            "ringway_downstream_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
            self.bytes_sent,
        );
        metric(
            "ringway_downstream_http2_connections_total",
            "counter",
            "Client connections that spoke HTTP/2.",
            self.http2_connections,
        );
        metric(
            "ringway_downstream_http2_streams_total",
            "counter",
            "HTTP/2 streams opened by clients.",
            self.http2_streams,
        );
        metric(
            "ringway_downstream_http2_protocol_errors_total",
            "counter",
            "Client HTTP/2 connections that ended in a protocol error.",
            self.http2_protocol_errors,
        );
        metric(
            "ringway_call_retries_total",
            "counter",
            "Calls retried because the upstream did not process them.",
            self.retries,
        );
        metric(
            "ringway_upstream_connects_refused_total",
            "counter",
            "Upstream connects refused: nothing listens on the endpoint's port.",
            self.upstream_connects_refused,
        );
        metric(
            "ringway_upstream_handshake_timeouts_total",
            "counter",
            "Upstream connections whose server sent no HTTP/2 SETTINGS in time.",
            self.upstream_handshake_timeouts,
        );
        metric(
            "ringway_upstream_keepalive_timeouts_total",
            "counter",
            "Upstream connections closed because a keepalive PING went unanswered.",
            self.upstream_keepalive_timeouts,
        );
        metric(
            "ringway_access_log_lines_dropped_total",
            "counter",
            "Access-log lines dropped because the log writer fell behind.",
            self.access_log_lines_dropped,
        );
        let _ = writeln!(out, "# HELP ringway_downstream_local_responses_total Requests refused locally, by HTTP status.\n# TYPE ringway_downstream_local_responses_total counter");
        for (status, n) in LOCAL_HTTP_STATUSES.iter().zip(self.local_http) {
            let _ = writeln!(
                out,
                "ringway_downstream_local_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP ringway_downstream_http2_floods_total Client HTTP/2 connections closed with GOAWAY(ENHANCE_YOUR_CALM) for a flood, by kind.\n# TYPE ringway_downstream_http2_floods_total counter");
        for (kind, n) in Flood::ALL.iter().zip(self.http2_floods) {
            let _ = writeln!(
                out,
                "ringway_downstream_http2_floods_total{{kind=\"{}\"}} {n}",
                kind.name()
            );
        }
        for (metric, help, counts) in [
            (
                "ringway_downstream_http2_resets_sent_total",
                "RST_STREAM frames sent to clients, by error code.",
                &self.http2_resets_sent,
            ),
            (
                "ringway_downstream_http2_goaways_sent_total",
                "GOAWAY frames sent to clients, by error code.",
                &self.http2_goaways_sent,
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (name, n) in H2_REASON_NAMES.iter().zip(counts) {
                let _ = writeln!(out, "{metric}{{reason=\"{name}\"}} {n}");
            }
        }
        for (name, n) in self.tls {
            let metric = format!("ringway_downstream_{name}_total");
            let _ = writeln!(
                out,
                "# HELP {metric} TLS: {}.\n# TYPE {metric} counter\n{metric} {n}",
                name.trim_start_matches("tls_").replace('_', " ")
            );
        }
        let _ = writeln!(out, "# HELP ringway_calls_total gRPC calls finished, by grpc-status.\n# TYPE ringway_calls_total counter");
        for (code, n) in self.calls_by_status.iter().enumerate() {
            let name = Code::from_u32(code as u32).map_or("UNKNOWN", Code::name);
            let _ = writeln!(out, "ringway_calls_total{{grpc_status=\"{name}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP ringway_call_duration_seconds gRPC call duration, head read to last byte written.\n# TYPE ringway_call_duration_seconds histogram");
        let mut cumulative = 0;
        for (le_us, n) in DURATION_BUCKETS_US.iter().zip(self.duration_buckets) {
            cumulative += n;
            let le = *le_us as f64 / 1e6;
            let _ = writeln!(
                out,
                "ringway_call_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "ringway_call_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.duration_count
        );
        let _ = writeln!(
            out,
            "ringway_call_duration_seconds_sum {}",
            self.duration_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "ringway_call_duration_seconds_count {}",
            self.duration_count
        );
    }
}

fn add_all<const N: usize>(into: &mut [u64; N], from: &[Counter; N]) {
    for (total, counter) in into.iter_mut().zip(from) {
        *total += counter.get();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_workers_and_buckets_durations() {
        let (a, b) = (WorkerStats::default(), WorkerStats::default());
        a.requests.add(3);
        b.requests.add(4);
        a.connections_active.add(2);
        a.connections_active.sub(1);
        a.call_finished(0, Duration::from_micros(300));
        b.call_finished(14, Duration::from_secs(100));
        b.call_finished(99, Duration::from_millis(1));
        a.local_http(431);
        a.local_http(299);
        a.preflight(204);
        a.preflight(403);
        let t = Totals::sum([&a, &b]);
        assert_eq!((t.requests, t.connections_active, t.calls()), (7, 1, 3));
        assert_eq!(t.calls_by_status[0], 1);
        assert_eq!(t.calls_by_status[14], 1);
        assert_eq!(t.calls_by_status[Code::Unknown as usize], 1);
        assert_eq!(t.duration_buckets[1], 1, "300 µs lands in le=500µs");
        assert_eq!(
            t.duration_buckets.iter().sum::<u64>(),
            2,
            "100 s is above the last bucket"
        );
        assert_eq!(t.duration_count, 3);
        assert_eq!(
            t.local_http.iter().sum::<u64>(),
            2,
            "431 and the refused preflight"
        );
        assert_eq!(t.preflights, 1, "the allowed preflight");
    }

    #[test]
    fn prometheus_histogram_is_cumulative_and_complete() {
        let w = WorkerStats::default();
        w.call_finished(0, Duration::from_micros(100));
        w.call_finished(0, Duration::from_millis(2));
        let mut out = String::new();
        Totals::sum([&w]).render_prometheus(&mut out);
        assert!(out.contains("ringway_call_duration_seconds_bucket{le=\"0.00025\"} 1\n"));
        assert!(out.contains("ringway_call_duration_seconds_bucket{le=\"0.0025\"} 2\n"));
        assert!(out.contains("ringway_call_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("ringway_calls_total{grpc_status=\"OK\"} 2\n"));
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
