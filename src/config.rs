//! Command-line flags: every knob of the proxy, each with a default, a unit in its name where it
//! has one, a help line and a `RINGWAY_*` environment variable so a Kubernetes manifest can set it.
//!
//! `Config` is parsed once at start-up and then only read; the request path sees the derived,
//! pre-validated structures ([`crate::cors::CorsPolicy`], [`crate::upstream::UpstreamConfig`],
//! [`DownstreamLimits`]) rather than these raw values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};

use crate::access_log;
use crate::cors::{AllowOrigin, CorsPolicy};
use crate::discovery::{self, DiscoveryConfig, DnsFamily, UpstreamTarget};
use crate::endpoints::{AllUnhealthy, LbPolicy};
use crate::health::{HealthCheckKind, HealthConfig};
use crate::http1::HeadLimits;
use crate::upstream::{OutlierConfig, UpstreamConfig};

/// Which io driver each worker's monoio runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoDriver {
    /// io_uring when the kernel and the seccomp profile allow it, else epoll (logged once).
    Auto,
    /// io_uring only: start-up fails if it cannot be set up.
    Uring,
    /// epoll only.
    Epoll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// ringway: a thread-per-core gRPC-Web load balancer.
///
/// Browsers speak gRPC-Web over HTTP/1.1 to ringway; ringway speaks gRPC over HTTP/2 to the
/// upstream endpoints and balances every request.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringway",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    /// Run something other than the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    // --- process model ---
    /// Address the cleartext data-plane listener binds (HTTP/1.1, and HTTP/2 with prior
    /// knowledge), once per worker with SO_REUSEPORT; `off` disables it (with --tls-listen).
    #[arg(long, env = "RINGWAY_LISTEN", default_value = "0.0.0.0:8080", value_parser = parse_optional_listen)]
    pub listen: OptionalListen,

    /// Upstream targets, comma-separated: IP:port, [IPv6]:port, or name:port (resolved by DNS and
    /// kept current; for a Kubernetes headless Service, the Service name).
    #[arg(
        long,
        env = "RINGWAY_UPSTREAM",
        default_value = "127.0.0.1:9000",
        value_delimiter = ','
    )]
    pub upstream: Vec<UpstreamTarget>,

    /// Worker threads, one monoio runtime each; 0 = the cores this process may use (cgroup
    /// CPU quota and affinity mask included).
    #[arg(long, env = "RINGWAY_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Pin worker N to the Nth core this process may use.
    #[arg(long, env = "RINGWAY_PIN_CORES", default_value_t = false)]
    pub pin_cores: bool,

    /// io driver: auto (io_uring, falling back to epoll with one log line), uring, or epoll.
    #[arg(long, env = "RINGWAY_IO_DRIVER", value_enum, default_value_t = IoDriver::Auto)]
    pub io_driver: IoDriver,

    /// io_uring submission queue entries per worker (ring size).
    #[arg(long, env = "RINGWAY_URING_ENTRIES", default_value_t = 1024)]
    pub uring_entries: u32,

    /// Listen backlog per worker socket.
    #[arg(long, env = "RINGWAY_BACKLOG", default_value_t = 1024)]
    pub backlog: i32,

    // --- TLS ---
    /// Address the TLS (HTTPS) listener binds, once per worker with SO_REUSEPORT, next to
    /// --listen; `off` disables it. ALPN h2 and http/1.1; no ALPN gets HTTP/1.1.
    #[arg(long, env = "RINGWAY_TLS_LISTEN", default_value = "off", value_parser = parse_optional_listen)]
    pub tls_listen: OptionalListen,

    /// PEM certificate chain, leaf first (a kubernetes.io/tls Secret's tls.crt). Re-read when
    /// it changes.
    #[arg(
        long,
        env = "RINGWAY_TLS_CERT_FILE",
        default_value = "/etc/ringway/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// PEM private key, RSA or ECDSA, in PKCS#8, SEC1 or PKCS#1 (the Secret's tls.key).
    #[arg(
        long,
        env = "RINGWAY_TLS_KEY_FILE",
        default_value = "/etc/ringway/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// Time from accept to the end of the TLS handshake; a client that has not finished by
    /// then (silent, or trickling bytes) is closed.
    #[arg(
        long,
        env = "RINGWAY_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub tls_handshake_timeout_ms: u64,

    /// Hand the TLS record layer to the kernel (kTLS) after each handshake; where the kernel
    /// cannot (no tls module, a cipher it does not offload), connections stay in userspace
    /// rustls, logged once and counted.
    #[arg(long, env = "RINGWAY_TLS_KTLS", default_value_t = false)]
    pub tls_ktls: bool,

    /// How often the certificate and key files are checked for a change (metadata only: inode,
    /// mtime, size, symlink targets).
    #[arg(long, env = "RINGWAY_TLS_RELOAD_INTERVAL_MS", default_value_t = 5_000)]
    pub tls_reload_interval_ms: u64,

    // --- downstream HTTP/1.1 limits ---
    /// Largest request head (request line plus headers) accepted; larger gets 431.
    #[arg(long, env = "RINGWAY_HEADER_BYTES_MAX", default_value_t = 32 * 1024)]
    pub header_bytes_max: usize,

    /// Most header fields in a request; more gets 431.
    #[arg(long, env = "RINGWAY_HEADER_COUNT_MAX", default_value_t = 100)]
    pub header_count_max: usize,

    /// Largest request body accepted (as sent on the wire); larger gets 413.
    #[arg(long, env = "RINGWAY_BODY_BYTES_MAX", default_value_t = 8 * 1024 * 1024)]
    pub body_bytes_max: u64,

    /// Time allowed to receive a whole request head, and between body reads, once its first
    /// byte arrived (slowloris defence); expiry gets 408. Enforced within 250 ms after it.
    #[arg(long, env = "RINGWAY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Time allowed to receive a whole request body, from its head (0 = no limit): a body
    /// trickled a byte at a time is bounded however often bytes arrive. Client-streaming calls
    /// that send for longer need it raised (or 0). Expiry gets 408, or DEADLINE_EXCEEDED once
    /// the call is under way.
    #[arg(
        long,
        env = "RINGWAY_REQUEST_BODY_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub request_body_timeout_ms: u64,

    /// How long an idle keep-alive connection is kept open waiting for its next request, and
    /// how long a client may stop reading its response. Enforced within 250 ms after it.
    #[arg(long, env = "RINGWAY_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Initial read buffer per downstream connection; it grows up to the head or body need.
    /// 1 KiB, like nginx's client_header_buffer_size: request heads and small bodies are slices
    /// of it, so it lives as long as the call. A larger head grows it (one more read, and a copy
    /// of what was read so far).
    #[arg(long, env = "RINGWAY_READ_BUFFER_BYTES", default_value_t = 1024)]
    pub read_buffer_bytes: usize,

    /// Path answered locally with 200 for load-balancer health checks (GET or HEAD).
    #[arg(long, env = "RINGWAY_HEALTH_PATH", default_value = "/healthz")]
    pub health_path: String,

    // --- downstream HTTP/2 (clients speaking h2c with prior knowledge, or h2 over TLS) ---
    /// Streams a client may have open at once on one HTTP/2 connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with RST_STREAM(REFUSED_STREAM).
    #[arg(long, env = "RINGWAY_HTTP2_STREAMS_MAX", default_value_t = 1000)]
    pub http2_streams_max: u32,

    /// Largest request header list a client may send on HTTP/2 (SETTINGS_MAX_HEADER_LIST_SIZE,
    /// in RFC 9113's decoded size); larger gets 431 and RST_STREAM(REFUSED_STREAM).
    #[arg(long, env = "RINGWAY_HTTP2_HEADER_LIST_BYTES_MAX", default_value_t = 64 * 1024)]
    pub http2_header_list_bytes_max: u32,

    /// HTTP/2 stream window advertised to clients: how much of one request body a client may
    /// send before ringway has forwarded it.
    #[arg(long, env = "RINGWAY_HTTP2_STREAM_WINDOW_BYTES", default_value_t = 256 * 1024)]
    pub http2_stream_window_bytes: u32,

    /// HTTP/2 connection window advertised to clients: how much of all its request bodies one
    /// connection may send ahead. Bounds the memory one client connection can make ringway hold.
    #[arg(long, env = "RINGWAY_HTTP2_CONNECTION_WINDOW_BYTES", default_value_t = 1024 * 1024)]
    pub http2_connection_window_bytes: u32,

    /// SETTINGS_MAX_FRAME_SIZE advertised to clients.
    #[arg(long, env = "RINGWAY_HTTP2_FRAME_BYTES_MAX", default_value_t = 16 * 1024)]
    pub http2_frame_bytes_max: u32,

    /// A client HTTP/2 connection with no stream open for this long is closed with GOAWAY;
    /// open streams, however long-lived, are never cut by it. Enforced within 250 ms after it.
    #[arg(long, env = "RINGWAY_HTTP2_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    pub http2_idle_timeout_ms: u64,

    /// Interval of PINGs to each HTTP/2 client, so a client that vanished without closing is
    /// noticed and its streams cancelled; 0 = off.
    #[arg(
        long,
        env = "RINGWAY_HTTP2_KEEPALIVE_INTERVAL_MS",
        default_value_t = 60_000
    )]
    pub http2_keepalive_interval_ms: u64,

    /// A PING to a client unanswered for this long closes its connection.
    #[arg(
        long,
        env = "RINGWAY_HTTP2_KEEPALIVE_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub http2_keepalive_timeout_ms: u64,

    // --- Connect ---
    /// Method paths a Connect unary GET may call, comma-separated: exact paths
    /// (`/pkg.Service/Method`), prefixes ending in `/` (`/pkg.Service/`), or `*`; empty = none.
    /// A GET needs no CORS preflight, so any web page can send one: allow only methods without
    /// side effects (connect-go's NO_SIDE_EFFECTS), which a proxy cannot tell on its own.
    #[arg(
        long,
        env = "RINGWAY_CONNECT_GET_ALLOW",
        default_value = "",
        value_delimiter = ','
    )]
    pub connect_get_allow: Vec<String>,

    // --- gRPC ---
    /// Time an upstream has to send a call's response headers once the call was sent to it;
    /// 0 = no limit (the default). Expiry ends the call with UNAVAILABLE and counts against the
    /// endpoint for outlier ejection: it catches a backend that accepts streams and then never
    /// answers (wedged, or stopped). Applies to every call, so set it above the slowest unary
    /// method and only where server streams send their headers at once.
    #[arg(long, env = "RINGWAY_RESPONSE_HEADERS_TIMEOUT_MS", default_value_t = 0)]
    pub response_headers_timeout_ms: u64,

    /// Cap on a call's grpc-timeout; 0 = no cap (Envoy's max_grpc_timeout: 0s). No timeout is
    /// applied to calls that do not ask for one, so long server streams are never cut.
    #[arg(long, env = "RINGWAY_GRPC_TIMEOUT_MAX_MS", default_value_t = 0)]
    pub grpc_timeout_max_ms: u64,

    // --- CORS ---
    /// Allowed origins, comma-separated; `*` allows any.
    #[arg(
        long,
        env = "RINGWAY_CORS_ALLOW_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,

    /// Send `Access-Control-Allow-Credentials: true` (the origin is then echoed, never `*`).
    #[arg(long, env = "RINGWAY_CORS_ALLOW_CREDENTIALS", default_value_t = false)]
    pub cors_allow_credentials: bool,

    /// `Access-Control-Allow-Methods` for preflights.
    #[arg(
        long,
        env = "RINGWAY_CORS_ALLOW_METHODS",
        default_value = "GET, PUT, DELETE, POST, OPTIONS"
    )]
    pub cors_allow_methods: String,

    /// `Access-Control-Allow-Headers` for preflights; empty = echo the preflight's
    /// `Access-Control-Request-Headers`, so custom metadata works without hand-tuning.
    #[arg(long, env = "RINGWAY_CORS_ALLOW_HEADERS", default_value = "")]
    pub cors_allow_headers: String,

    /// `Access-Control-Expose-Headers` base list; each response also exposes its own custom
    /// metadata names.
    #[arg(
        long,
        env = "RINGWAY_CORS_EXPOSE_HEADERS",
        default_value = "grpc-status,grpc-message"
    )]
    pub cors_expose_headers: String,

    /// `Access-Control-Max-Age` for preflights.
    #[arg(long, env = "RINGWAY_CORS_MAX_AGE_S", default_value_t = 1_728_000)]
    pub cors_max_age_s: u64,

    // --- upstream HTTP/2 ---
    /// TCP connect timeout to an upstream endpoint.
    #[arg(long, env = "RINGWAY_CONNECT_TIMEOUT_MS", default_value_t = 250)]
    pub connect_timeout_ms: u64,

    /// Time after an upstream TCP connect for the server's HTTP/2 SETTINGS; no call is sent on
    /// the connection before they arrive. Without them the connect counts as failed and calls
    /// go to another endpoint: a backend that accepts connections but never answers (stopped,
    /// wedged) costs this once, not a hung call.
    #[arg(
        long,
        env = "RINGWAY_UPSTREAM_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 250
    )]
    pub upstream_handshake_timeout_ms: u64,

    /// TCP keepalive idle time on upstream connections; 0 = off.
    #[arg(long, env = "RINGWAY_UPSTREAM_TCP_KEEPALIVE_S", default_value_t = 300)]
    pub upstream_tcp_keepalive_s: u64,

    /// Interval of HTTP/2 PINGs on each upstream connection; 0 = off.
    #[arg(
        long,
        env = "RINGWAY_H2_KEEPALIVE_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub h2_keepalive_interval_ms: u64,

    /// A PING unanswered for this long closes the upstream connection and ejects its endpoint
    /// (as --outlier-* says; not when --outlier-consecutive-failures is 0).
    #[arg(
        long,
        env = "RINGWAY_H2_KEEPALIVE_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub h2_keepalive_timeout_ms: u64,

    /// HTTP/2 initial stream window advertised to upstreams.
    #[arg(long, env = "RINGWAY_H2_STREAM_WINDOW_BYTES", default_value_t = 1024 * 1024)]
    pub h2_stream_window_bytes: u32,

    /// HTTP/2 connection window advertised to upstreams.
    #[arg(long, env = "RINGWAY_H2_CONNECTION_WINDOW_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub h2_connection_window_bytes: u32,

    /// HTTP/2 SETTINGS_MAX_FRAME_SIZE advertised to upstreams.
    #[arg(long, env = "RINGWAY_H2_FRAME_BYTES_MAX", default_value_t = 16 * 1024)]
    pub h2_frame_bytes_max: u32,

    /// Upstream HTTP/2 connections per worker per endpoint; another is opened when the open
    /// ones reach the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
    #[arg(
        long,
        env = "RINGWAY_H2_CONNECTIONS_PER_ENDPOINT_MAX",
        default_value_t = 4
    )]
    pub h2_connections_per_endpoint_max: usize,

    /// Calls that may wait per worker per endpoint when every connection is full; more get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "RINGWAY_PENDING_CALLS_MAX", default_value_t = 1024)]
    pub pending_calls_max: usize,

    /// How long a call may wait for a stream slot before it fails with UNAVAILABLE.
    #[arg(long, env = "RINGWAY_PENDING_TIMEOUT_MS", default_value_t = 1_000)]
    pub pending_timeout_ms: u64,

    /// First delay before reconnecting to an endpoint after a failed connect or GOAWAY; doubles
    /// on each failure.
    #[arg(long, env = "RINGWAY_RECONNECT_BACKOFF_MS", default_value_t = 100)]
    pub reconnect_backoff_ms: u64,

    /// Upper bound of the reconnect backoff.
    #[arg(
        long,
        env = "RINGWAY_RECONNECT_BACKOFF_MAX_MS",
        default_value_t = 5_000
    )]
    pub reconnect_backoff_max_ms: u64,

    // --- DNS discovery (for name:port upstream targets) ---
    /// DNS servers (IP or IP:port), replacing /etc/resolv.conf's nameservers; empty = resolv.conf's.
    #[arg(long, env = "RINGWAY_DNS_SERVER", value_delimiter = ',', value_parser = discovery::parse_dns_server)]
    pub dns_server: Vec<SocketAddr>,

    /// Address records to ask for: v4 (A), v6 (AAAA) or all (both).
    #[arg(long, env = "RINGWAY_DNS_FAMILY", value_enum, default_value_t = DnsFamily::All)]
    pub dns_family: DnsFamily,

    /// Re-resolve interval for DNS targets (Envoy's dns_refresh_rate).
    #[arg(long, env = "RINGWAY_DNS_REFRESH_INTERVAL_MS", default_value_t = 5000)]
    pub dns_refresh_interval_ms: u64,

    /// Re-resolve on the record TTL instead, clamped to the TTL bounds.
    #[arg(long, env = "RINGWAY_DNS_RESPECT_TTL", default_value_t = false)]
    pub dns_respect_ttl: bool,

    /// Shortest TTL-driven refresh.
    #[arg(long, env = "RINGWAY_DNS_TTL_MIN_S", default_value_t = 1)]
    pub dns_ttl_min_s: u64,

    /// Longest TTL-driven refresh.
    #[arg(long, env = "RINGWAY_DNS_TTL_MAX_S", default_value_t = 30)]
    pub dns_ttl_max_s: u64,

    /// Shorten each refresh delay by a random amount up to this percentage, so many proxies do
    /// not query in step.
    #[arg(long, env = "RINGWAY_DNS_JITTER_PERCENT", default_value_t = 10)]
    pub dns_jitter_percent: u8,

    /// Serve a target's last good endpoints for at most this long while DNS fails.
    #[arg(long, env = "RINGWAY_DNS_STALE_MAX_S", default_value_t = 300)]
    pub dns_stale_max_s: u64,

    /// Per-attempt DNS timeout; 0 = resolv.conf's timeout (glibc default 5 s).
    #[arg(long, env = "RINGWAY_DNS_TIMEOUT_MS", default_value_t = 0)]
    pub dns_timeout_ms: u64,

    /// Rounds over the nameservers; 0 = resolv.conf's attempts (glibc default 2).
    #[arg(long, env = "RINGWAY_DNS_ATTEMPTS", default_value_t = 0)]
    pub dns_attempts: u32,

    /// Total time budget to resolve one target.
    #[arg(long, env = "RINGWAY_DNS_RESOLVE_TIMEOUT_MS", default_value_t = 10_000)]
    pub dns_resolve_timeout_ms: u64,

    /// How long start-up waits for the first resolution of all targets.
    #[arg(long, env = "RINGWAY_DNS_STARTUP_TIMEOUT_MS", default_value_t = 5000)]
    pub dns_startup_timeout_ms: u64,

    /// Resolver configuration file (nameservers, search, ndots).
    #[arg(long, env = "RINGWAY_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// How each worker picks an endpoint per call.
    #[arg(long, env = "RINGWAY_LB", value_enum, default_value_t = LbPolicy::RoundRobin)]
    pub lb: LbPolicy,

    /// When every endpoint failed health checks or is ejected: fail calls with UNAVAILABLE, or
    /// spread them over all endpoints anyway (Envoy's panic mode).
    #[arg(long, env = "RINGWAY_ALL_UNHEALTHY", value_enum, default_value_t = AllUnhealthy::Spread)]
    pub all_unhealthy: AllUnhealthy,

    /// Consecutive failed calls (connect failures, UNAVAILABLE in headers or trailers) after
    /// which a worker ejects an endpoint; 0 = no passive ejection.
    #[arg(
        long,
        env = "RINGWAY_OUTLIER_CONSECUTIVE_FAILURES",
        default_value_t = 5
    )]
    pub outlier_consecutive_failures: u32,

    /// First ejection time; it grows with each ejection of the same endpoint (up to 10×).
    #[arg(
        long,
        env = "RINGWAY_OUTLIER_BASE_EJECTION_MS",
        default_value_t = 30_000
    )]
    pub outlier_base_ejection_ms: u64,

    /// Most of the set ejected at once (one endpoint may always be ejected).
    #[arg(
        long,
        env = "RINGWAY_OUTLIER_MAX_EJECTION_PERCENT",
        default_value_t = 50
    )]
    pub outlier_max_ejection_percent: u32,

    /// Active health checks: off, tcp (connect), or grpc (grpc.health.v1.Health/Check).
    #[arg(long, env = "RINGWAY_HEALTH_CHECK", value_enum, default_value_t = HealthCheckKind::Off)]
    pub health_check: HealthCheckKind,

    /// Interval between active health checks of each endpoint.
    #[arg(
        long,
        env = "RINGWAY_HEALTH_CHECK_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub health_check_interval_ms: u64,

    /// A check not answered within this time fails.
    #[arg(long, env = "RINGWAY_HEALTH_CHECK_TIMEOUT_MS", default_value_t = 5_000)]
    pub health_check_timeout_ms: u64,

    /// Consecutive failed checks that mark an endpoint unhealthy.
    #[arg(
        long,
        env = "RINGWAY_HEALTH_CHECK_UNHEALTHY_THRESHOLD",
        default_value_t = 2
    )]
    pub health_check_unhealthy_threshold: u32,

    /// Consecutive passed checks that mark an unhealthy endpoint healthy again.
    #[arg(
        long,
        env = "RINGWAY_HEALTH_CHECK_HEALTHY_THRESHOLD",
        default_value_t = 2
    )]
    pub health_check_healthy_threshold: u32,

    /// Service name sent in grpc health checks; empty = the server's overall health.
    #[arg(long, env = "RINGWAY_HEALTH_CHECK_SERVICE", default_value = "")]
    pub health_check_service: String,

    /// Retries per call of a call an upstream provably did not process (REFUSED_STREAM, refused
    /// by GOAWAY), on an endpoint the call has not tried when there is one; at most 7. A call
    /// that reached no upstream (connect refused or timed out, no HTTP/2 SETTINGS) moves on to
    /// an untried endpoint without counting against this or the budget.
    #[arg(long, env = "RINGWAY_RETRY_ATTEMPTS_MAX", default_value_t = 1)]
    pub retry_attempts_max: u32,

    /// Retries in flight per worker as a share of calls in flight (at least 3 are allowed).
    #[arg(long, env = "RINGWAY_RETRY_BUDGET_PERCENT", default_value_t = 20)]
    pub retry_budget_percent: u32,

    /// Open a connection to each new endpoint on every worker as soon as it joins the set,
    /// before calls need it.
    #[arg(long, env = "RINGWAY_WARM_CONNECTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub warm_connections: bool,

    /// How long calls on an endpoint that left the set (a pod scaled away) may keep running
    /// before its connections are closed; calls still running then end with UNAVAILABLE.
    #[arg(
        long,
        env = "RINGWAY_ENDPOINT_DRAIN_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub endpoint_drain_timeout_ms: u64,

    // --- operations ---
    /// Admin listener (readiness, liveness, stats, endpoint table, drain); `off` disables it.
    /// Keep it off the public Service: it can fail readiness and start a drain.
    #[arg(long, env = "RINGWAY_ADMIN", default_value = "127.0.0.1:9901", value_parser = parse_admin)]
    pub admin: Admin,

    /// /ready answers 503 while no upstream endpoint can take a call (the set is empty, or every
    /// endpoint failed health checks, refused connects, is unreachable or ejected), so the pod
    /// leaves the Service; false keeps /ready about the process alone.
    #[arg(long, env = "RINGWAY_READY_REQUIRES_UPSTREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub ready_requires_upstream: bool,

    /// After SIGTERM (or POST /drain), readiness fails and ringway keeps serving this long, so
    /// the load balancer in front stops sending before ringway stops accepting.
    #[arg(long, env = "RINGWAY_DRAIN_DELAY_MS", default_value_t = 5_000)]
    pub drain_delay_ms: u64,

    /// Then ringway stops accepting, tells keep-alive clients `Connection: close`, and lets
    /// calls in flight finish for at most this long before it exits.
    #[arg(long, env = "RINGWAY_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,

    // --- logs ---
    /// Access log: `off`, `stdout`, or a file path (appended). Written through per-worker
    /// buffers by a thread of its own; lines are dropped and counted rather than slow a call.
    #[arg(long, env = "RINGWAY_ACCESS_LOG", default_value = "off")]
    pub access_log: access_log::Target,

    /// Access log line format.
    #[arg(long, env = "RINGWAY_ACCESS_LOG_FORMAT", value_enum, default_value_t = access_log::Format::Text)]
    pub access_log_format: access_log::Format,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ringway=debug`.
    #[arg(long, env = "RINGWAY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "RINGWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The subcommands; without one, `ringway` runs the proxy.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Run the demo: pods, their DNS server, ringway and a load on this machine.
    ///
    /// Three pods, their DNS server and ringway on this machine, a short load, a scale to five,
    /// then serving until Ctrl-C. Needs the `demo` build feature (the default; production
    /// images build without it).
    Demo(DemoArgs),
}

/// `ringway demo`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address ringway serves gRPC-Web on.
    #[arg(long, env = "RINGWAY_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Pods to start with.
    #[arg(long, env = "RINGWAY_DEMO_PODS", default_value_t = 3)]
    pub pods: usize,
    /// Pods to scale to.
    #[arg(long, env = "RINGWAY_DEMO_SCALE_TO", default_value_t = 5)]
    pub scale_to: usize,
    /// ringway's worker threads.
    #[arg(long, env = "RINGWAY_DEMO_WORKERS", default_value_t = 2)]
    pub workers: usize,
}

/// The admin listener's address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Off,
    Listen(SocketAddr),
}

fn parse_admin(value: &str) -> Result<Admin, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(Admin::Off);
    }
    value
        .parse()
        .map(Admin::Listen)
        .map_err(|_| format!("{value:?} is neither IP:port nor off"))
}

/// A listener address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalListen(pub Option<SocketAddr>);

fn parse_optional_listen(value: &str) -> Result<OptionalListen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(OptionalListen(None));
    }
    value
        .parse()
        .map(|addr| OptionalListen(Some(addr)))
        .map_err(|_| format!("{value:?} is neither IP:port nor off"))
}

/// Downstream limits, derived once from the flags.
#[derive(Debug, Clone)]
pub struct DownstreamLimits {
    pub head: HeadLimits,
    pub body_bytes_max: u64,
    pub header_read_timeout: Duration,
    /// The whole request body's deadline, from its head.
    pub request_body_timeout: Option<Duration>,
    /// How long an upstream has to send a call's response headers.
    pub response_headers_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    pub read_buffer_bytes: usize,
    pub grpc_timeout_max: Option<Duration>,
    pub health_path: Bytes,
    pub http2: Http2Settings,
    /// Paths (or prefixes ending in `/`, or `*`) a Connect GET may call.
    pub connect_get_allow: Vec<Bytes>,
}

impl DownstreamLimits {
    /// When a request body that started at `body_started` must be whole.
    pub fn body_deadline(&self, body_started: Instant) -> Option<Instant> {
        self.request_body_timeout
            .map(|timeout| body_started + timeout)
    }

    /// When a body read that starts waiting `now` times out: the time allowed between reads, or
    /// the whole body's deadline when that comes first.
    pub fn body_read_deadline(&self, now: Instant, body_deadline: Option<Instant>) -> Instant {
        let read = now + self.header_read_timeout;
        body_deadline.map_or(read, |whole| whole.min(read))
    }

    /// Whether a Connect unary GET may call `path` (without its query).
    pub fn connect_get_allowed(&self, path: &[u8]) -> bool {
        self.connect_get_allow.iter().any(|allowed| {
            &allowed[..] == b"*"
                || &allowed[..] == path
                || (allowed.ends_with(b"/") && path.starts_with(allowed))
        })
    }
}

/// The HTTP/2 server's settings for client connections, derived once from the flags.
#[derive(Debug, Clone)]
pub struct Http2Settings {
    pub streams_max: u32,
    pub header_list_bytes_max: u32,
    pub stream_window_bytes: u32,
    pub connection_window_bytes: u32,
    pub frame_bytes_max: u32,
    pub idle_timeout: Duration,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Config {
    /// Parse flags from a list of arguments (the first being the program name), as `main` does.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    /// Check relations between flags that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.0.is_none() && self.tls_listen.0.is_none() {
            return Err("--listen and --tls-listen are both off: nothing to serve".into());
        }
        if self.upstream.is_empty() {
            return Err("--upstream needs at least one endpoint".into());
        }
        if self.header_count_max == 0 || self.header_bytes_max < 64 {
            return Err("--header-count-max must be > 0 and --header-bytes-max >= 64".into());
        }
        if self.h2_connections_per_endpoint_max == 0 {
            return Err("--h2-connections-per-endpoint-max must be > 0".into());
        }
        if self.h2_stream_window_bytes < 65_535 || self.h2_connection_window_bytes < 65_535 {
            return Err("HTTP/2 windows must be at least 65535 bytes".into());
        }
        if !(16_384..=16_777_215).contains(&self.h2_frame_bytes_max) {
            return Err("--h2-frame-bytes-max must be within 16384..=16777215 (RFC 9113)".into());
        }
        if !(16_384..=16_777_215).contains(&self.http2_frame_bytes_max) {
            return Err(
                "--http2-frame-bytes-max must be within 16384..=16777215 (RFC 9113)".into(),
            );
        }
        if self.http2_stream_window_bytes < 65_535 || self.http2_connection_window_bytes < 65_535 {
            return Err("HTTP/2 windows must be at least 65535 bytes".into());
        }
        if self.http2_streams_max == 0 || self.http2_header_list_bytes_max < 1024 {
            return Err(
                "--http2-streams-max must be > 0 and --http2-header-list-bytes-max >= 1024".into(),
            );
        }
        if self.read_buffer_bytes < 512 {
            return Err("--read-buffer-bytes must be at least 512".into());
        }
        if !self.health_path.starts_with('/') {
            return Err("--health-path must start with /".into());
        }
        if self.retry_attempts_max as usize >= crate::endpoints::TRIED_ENDPOINTS_MAX {
            return Err(format!(
                "--retry-attempts-max must be below {} (the endpoints one call can remember)",
                crate::endpoints::TRIED_ENDPOINTS_MAX
            ));
        }
        if self.dns_jitter_percent > 100 {
            return Err("--dns-jitter-percent must be within 0..=100".into());
        }
        if self.resolves_names() {
            self.discovery_config().validate()?;
        }
        if self.tls_listen.0.is_some() {
            if self.tls_handshake_timeout_ms == 0 {
                return Err("--tls-handshake-timeout-ms must be > 0".into());
            }
            if self.tls_reload_interval_ms == 0 {
                return Err("--tls-reload-interval-ms must be > 0".into());
            }
        }
        Ok(())
    }

    /// Workers to start: the flag, or the cores this process may use.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        // available_parallelism honours the affinity mask and the cgroup CPU quota.
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Whether any upstream target is a name, so DNS discovery must run.
    pub fn resolves_names(&self) -> bool {
        self.upstream
            .iter()
            .any(|t| matches!(t, UpstreamTarget::Name { .. }))
    }

    pub fn discovery_config(&self) -> DiscoveryConfig {
        let ms = Duration::from_millis;
        DiscoveryConfig {
            targets: self.upstream.clone(),
            dns_servers: self.dns_server.clone(),
            family: self.dns_family,
            refresh_interval: ms(self.dns_refresh_interval_ms),
            respect_ttl: self.dns_respect_ttl,
            ttl_min: Duration::from_secs(self.dns_ttl_min_s),
            ttl_max: Duration::from_secs(self.dns_ttl_max_s),
            jitter: f64::from(self.dns_jitter_percent) / 100.0,
            stale_max: Duration::from_secs(self.dns_stale_max_s),
            resolv_conf: self.resolv_conf.clone(),
            attempt_timeout: (self.dns_timeout_ms > 0).then(|| ms(self.dns_timeout_ms)),
            attempts: (self.dns_attempts > 0).then_some(self.dns_attempts),
            resolve_timeout: ms(self.dns_resolve_timeout_ms),
            startup_timeout: ms(self.dns_startup_timeout_ms),
        }
    }

    pub fn downstream_limits(&self) -> DownstreamLimits {
        DownstreamLimits {
            head: HeadLimits {
                header_bytes_max: self.header_bytes_max,
                header_count_max: self.header_count_max,
            },
            body_bytes_max: self.body_bytes_max,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            request_body_timeout: (self.request_body_timeout_ms > 0)
                .then(|| Duration::from_millis(self.request_body_timeout_ms)),
            response_headers_timeout: (self.response_headers_timeout_ms > 0)
                .then(|| Duration::from_millis(self.response_headers_timeout_ms)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            read_buffer_bytes: self.read_buffer_bytes,
            grpc_timeout_max: (self.grpc_timeout_max_ms > 0)
                .then(|| Duration::from_millis(self.grpc_timeout_max_ms)),
            health_path: Bytes::from(self.health_path.clone()),
            connect_get_allow: self
                .connect_get_allow
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(|p| Bytes::from(p.to_owned()))
                .collect(),
            http2: Http2Settings {
                streams_max: self.http2_streams_max,
                header_list_bytes_max: self.http2_header_list_bytes_max,
                stream_window_bytes: self.http2_stream_window_bytes,
                connection_window_bytes: self.http2_connection_window_bytes,
                frame_bytes_max: self.http2_frame_bytes_max,
                idle_timeout: Duration::from_millis(self.http2_idle_timeout_ms),
                keepalive_interval: (self.http2_keepalive_interval_ms > 0)
                    .then(|| Duration::from_millis(self.http2_keepalive_interval_ms)),
                keepalive_timeout: Duration::from_millis(self.http2_keepalive_timeout_ms),
            },
        }
    }

    pub fn health_config(&self) -> HealthConfig {
        HealthConfig {
            kind: self.health_check,
            interval: Duration::from_millis(self.health_check_interval_ms),
            timeout: Duration::from_millis(self.health_check_timeout_ms),
            unhealthy_threshold: self.health_check_unhealthy_threshold.max(1),
            healthy_threshold: self.health_check_healthy_threshold.max(1),
            service: self.health_check_service.clone(),
        }
    }

    pub fn cors_policy(&self) -> CorsPolicy {
        let any = self.cors_allow_origins.iter().any(|o| o.trim() == "*");
        let allow_origin = if any {
            AllowOrigin::Any
        } else {
            AllowOrigin::List(
                self.cors_allow_origins
                    .iter()
                    .map(|o| o.trim())
                    .filter(|o| !o.is_empty())
                    .map(|o| Bytes::from(o.to_owned()))
                    .collect(),
            )
        };
        let allow_headers = self.cors_allow_headers.trim();
        CorsPolicy {
            allow_origin,
            allow_credentials: self.cors_allow_credentials,
            allow_methods: Bytes::from(self.cors_allow_methods.clone()),
            allow_headers: (!allow_headers.is_empty())
                .then(|| Bytes::from(allow_headers.to_owned())),
            expose_headers: Bytes::from(self.cors_expose_headers.clone()),
            max_age_s: self.cors_max_age_s,
        }
    }

    pub fn upstream_config(&self) -> UpstreamConfig {
        let ms = Duration::from_millis;
        UpstreamConfig {
            connect_timeout: ms(self.connect_timeout_ms),
            handshake_timeout: ms(self.upstream_handshake_timeout_ms),
            tcp_keepalive: (self.upstream_tcp_keepalive_s > 0)
                .then(|| Duration::from_secs(self.upstream_tcp_keepalive_s)),
            keepalive_interval: (self.h2_keepalive_interval_ms > 0)
                .then(|| ms(self.h2_keepalive_interval_ms)),
            keepalive_timeout: ms(self.h2_keepalive_timeout_ms),
            stream_window_bytes: self.h2_stream_window_bytes,
            connection_window_bytes: self.h2_connection_window_bytes,
            frame_bytes_max: self.h2_frame_bytes_max,
            connections_per_endpoint_max: self.h2_connections_per_endpoint_max,
            pending_calls_max: self.pending_calls_max,
            pending_timeout: ms(self.pending_timeout_ms),
            reconnect_backoff: ms(self.reconnect_backoff_ms),
            reconnect_backoff_max: ms(self.reconnect_backoff_max_ms.max(self.reconnect_backoff_ms)),
            drain_timeout: ms(self.endpoint_drain_timeout_ms),
            outlier: OutlierConfig {
                consecutive_failures: self.outlier_consecutive_failures,
                base_ejection: ms(self.outlier_base_ejection_ms),
                max_ejection_percent: self.outlier_max_ejection_percent.min(100),
            },
        }
    }
}
