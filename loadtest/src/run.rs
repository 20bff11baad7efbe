//! `ringway-load run`: flags to a [`LoadConfig`], live progress on a terminal, the final
//! report, its files, and the balance check's exit code. The load itself is the library's
//! [`ringway_load::load`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ringway_load::load::{
    self, CallKind, IoDriver, KeyExchange, LoadConfig, Mode, Protocol, Snapshot,
};

/// Exit code when `--check-balance` fails (1 is left to errors that stop the run).
pub const EXIT_IMBALANCED: i32 = 3;
/// How often the live progress line is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the main thread looks for Ctrl-C and the end of the run.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Target URL, `http://host[:port]` or `https://host[:port]` (TLS; needs --ca-file); a DNS
    /// name is resolved once, at start.
    #[arg(
        long,
        env = "RINGWAY_LOAD_RUN_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    target: String,
    /// Keep-alive connections, in total (at most 100000); with --http2, each carries --streams
    /// calls at a time.
    #[arg(long, env = "RINGWAY_LOAD_RUN_CONNECTIONS", default_value_t = 64)]
    connections: usize,
    /// Speak HTTP/2 with prior knowledge (h2c, no upgrade) instead of HTTP/1.1.
    #[arg(long, env = "RINGWAY_LOAD_RUN_HTTP2")]
    http2: bool,
    /// With --http2: concurrent streams per connection, each a closed loop of calls (e.g. 8
    /// connections × 8 streams = 64 calls at a time).
    #[arg(long, env = "RINGWAY_LOAD_RUN_STREAMS", default_value_t = 1)]
    streams: usize,
    /// gRPC-Web (HTTP/1.1 or --http2), native gRPC (application/grpc with HTTP/2 trailers;
    /// needs --http2) or Connect unary calls (application/proto, bare message; HTTP/1.1 or
    /// --http2).
    #[arg(long, env = "RINGWAY_LOAD_RUN_PROTOCOL", value_enum, default_value_t = ProtocolArg::GrpcWeb)]
    protocol: ProtocolArg,
    /// Open a new connection (TCP, and TLS for https://) for every call and close it after the
    /// response (close_notify, then FIN): measures connection setup and handshakes.
    #[arg(long, env = "RINGWAY_LOAD_RUN_CONNECTION_PER_CALL")]
    connection_per_call: bool,
    /// https:// targets: PEM file of the certificate authorities to trust (the server's chain
    /// must lead to one) [default: none; required for https://].
    #[arg(long, env = "RINGWAY_LOAD_RUN_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// https:// targets: the server name sent as SNI and required in the certificate; also the
    /// request authority (Host, :authority), with the target's port [default: the target's
    /// host].
    #[arg(long, env = "RINGWAY_LOAD_RUN_SERVER_NAME")]
    server_name: Option<String>,
    /// https:// targets: key exchange groups offered: default (rustls's: X25519MLKEM768,
    /// P-384, X25519, P-256), x25519, p256 or x25519mlkem768 alone.
    #[arg(long, env = "RINGWAY_LOAD_RUN_TLS_KEY_EXCHANGE", value_enum, default_value_t = KeyExchangeArg::Default)]
    tls_key_exchange: KeyExchangeArg,
    /// https:// targets: resume TLS sessions with tickets from earlier connections; without
    /// it every connection makes a full handshake.
    #[arg(long, env = "RINGWAY_LOAD_RUN_TLS_RESUMPTION")]
    tls_resumption: bool,
    /// Threads, each with its own io_uring (or epoll) runtime; 0 = the cores this process may
    /// use, but no more than the connections.
    #[arg(long, env = "RINGWAY_LOAD_RUN_THREADS", default_value_t = 0)]
    threads: usize,
    /// Run length (`10s`, `500ms`, `2m`; a bare number is seconds); `0` runs until Ctrl-C.
    #[arg(long, env = "RINGWAY_LOAD_RUN_DURATION", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Open loop at this total rate, in calls/s, with latency measured from each call's
    /// intended send time [default: closed loop].
    #[arg(long, env = "RINGWAY_LOAD_RUN_RATE")]
    rate: Option<f64>,
    /// gRPC method path [default: /ringway.test.Echo/Unary, or …/ServerStream with
    /// --call server-stream].
    #[arg(long, env = "RINGWAY_LOAD_RUN_METHOD")]
    method: Option<String>,
    /// Request message size, in bytes.
    #[arg(long, env = "RINGWAY_LOAD_RUN_PAYLOAD_BYTES", default_value_t = 16)]
    payload_bytes: usize,
    /// gRPC-Web encoding: binary frames or base64 text (native gRPC is binary only).
    #[arg(long, env = "RINGWAY_LOAD_RUN_MODE", value_enum, default_value_t = ModeArg::Binary)]
    mode: ModeArg,
    /// Call kind: unary (exactly one response message) or server-stream (any number).
    #[arg(long, env = "RINGWAY_LOAD_RUN_CALL", value_enum, default_value_t = CallArg::Unary)]
    call: CallArg,
    /// Request metadata `name=value`, sent with every call; repeat for several (separate with
    /// `;` in the environment variable) [default: none].
    #[arg(long = "metadata", env = "RINGWAY_LOAD_RUN_METADATA", value_delimiter = ';', value_parser = parse_metadata)]
    metadata: Vec<(String, String)>,
    /// Response header (or initial metadata, or trailer) naming the pod that served a call.
    #[arg(
        long,
        env = "RINGWAY_LOAD_RUN_BACKEND_HEADER",
        default_value = "x-backend"
    )]
    backend_header: String,
    /// Length of the per-window distribution table's windows.
    #[arg(long, env = "RINGWAY_LOAD_RUN_WINDOW", default_value = "1s", value_parser = parse_duration)]
    window: Duration,
    /// Longest a call may take, connect included, before it counts as `timeout`.
    #[arg(long, env = "RINGWAY_LOAD_RUN_CALL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    call_timeout: Duration,
    /// Exit with code 3 when the whole run's imbalance (max/min pod share) exceeds this, or
    /// when no response named a pod [default: no check].
    #[arg(long, env = "RINGWAY_LOAD_RUN_CHECK_BALANCE")]
    check_balance: Option<f64>,
    /// Write the report as JSON to this file [default: none].
    #[arg(long, env = "RINGWAY_LOAD_RUN_JSON")]
    json: Option<PathBuf>,
    /// Write an SVG chart of each pod's share over time to this file [default: none].
    #[arg(long, env = "RINGWAY_LOAD_RUN_CHART")]
    chart: Option<PathBuf>,
    /// io driver of the load threads: auto (io_uring if available, else epoll), uring, epoll.
    #[arg(long, env = "RINGWAY_LOAD_RUN_IO_DRIVER", value_enum, default_value_t = DriverArg::Auto)]
    io_driver: DriverArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DriverArg {
    Auto,
    Uring,
    Epoll,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    GrpcWeb,
    Grpc,
    Connect,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyExchangeArg {
    Default,
    X25519,
    P256,
    X25519mlkem768,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Binary,
    Text,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CallArg {
    Unary,
    ServerStream,
}

/// Runs the load and returns the process's exit code.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let config = config(&args)?;
    if let Some(limit) = args.check_balance {
        if !(limit.is_finite() && limit >= 1.0) {
            bail!("--check-balance must be a ratio of at least 1.0");
        }
    }
    raise_open_files_limit(config.connections as u64 + OPEN_FILES_SPARE);
    install_interrupt_handler()?;
    let handle = load::start(config.clone()).context("starting the load")?;
    let progress = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64, BTreeMap::new());
    let mut stopping = false;
    while !handle.is_finished() {
        std::thread::sleep(POLL_INTERVAL);
        if !stopping && INTERRUPTED.load(Ordering::Relaxed) {
            handle.stop();
            stopping = true;
        }
        if progress && last.0.elapsed() >= PROGRESS_INTERVAL {
            last = draw_progress(&handle.snapshot(), last);
        }
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    let report = handle.join();
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        report
            .write_chart_svg(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(limit) = args.check_balance {
        match report.imbalance {
            Some(imbalance) if imbalance <= limit => {
                println!("balance check passed: imbalance {imbalance:.3} <= {limit}");
            }
            Some(imbalance) => {
                println!("balance check FAILED: imbalance {imbalance:.3} > {limit}");
                return Ok(EXIT_IMBALANCED);
            }
            None => {
                println!(
                    "balance check FAILED: no response carried {}",
                    config.backend_header
                );
                return Ok(EXIT_IMBALANCED);
            }
        }
    }
    Ok(0)
}

fn config(args: &RunArgs) -> anyhow::Result<LoadConfig> {
    let url = parse_target(&args.target)?;
    let target = resolve(&url)?;
    let (host_header, tls) = tls_target(args, &url)?;
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(args.connections.max(1));
    let call = match args.call {
        CallArg::Unary => CallKind::Unary,
        CallArg::ServerStream => CallKind::ServerStream,
    };
    let method = args.method.clone().unwrap_or_else(|| match call {
        CallKind::Unary => "/ringway.test.Echo/Unary".to_owned(),
        CallKind::ServerStream => "/ringway.test.Echo/ServerStream".to_owned(),
    });
    let config = LoadConfig {
        target,
        host_header,
        connections: args.connections,
        threads,
        duration: (!args.duration.is_zero()).then_some(args.duration),
        rate: args.rate,
        method,
        payload_bytes: args.payload_bytes,
        mode: match args.mode {
            ModeArg::Binary => Mode::Binary,
            ModeArg::Text => Mode::Text,
        },
        call,
        metadata: args.metadata.clone(),
        backend_header: args.backend_header.clone(),
        window: args.window,
        call_timeout: args.call_timeout,
        io_driver: match args.io_driver {
            DriverArg::Auto => IoDriver::Auto,
            DriverArg::Uring => IoDriver::Uring,
            DriverArg::Epoll => IoDriver::Epoll,
        },
        http2: args.http2,
        streams: args.streams,
        protocol: match args.protocol {
            ProtocolArg::GrpcWeb => Protocol::GrpcWeb,
            ProtocolArg::Grpc => Protocol::Grpc,
            ProtocolArg::Connect => Protocol::Connect,
        },
        tls,
        connection_per_call: args.connection_per_call,
    };
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// A `--target` URL, split.
#[derive(Debug, PartialEq, Eq)]
struct TargetUrl {
    https: bool,
    /// The host as written (an IPv6 literal keeps its brackets).
    host: String,
    /// The port as written, if any.
    port: Option<u16>,
}

impl TargetUrl {
    /// The authority as written: `host[:port]`.
    fn authority(&self, host: &str) -> String {
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }
}

/// `http[s]://host[:port][/]`.
fn parse_target(url: &str) -> anyhow::Result<TargetUrl> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => bail!("--target {url:?}: expected http:// or https://"),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        bail!("--target {url:?}: expected http[s]://host[:port] with no path");
    }
    // A port is digits after the last ':' (an IPv6 literal's colons are inside brackets).
    let split = authority.rsplit_once(':').filter(|(host, port)| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
    });
    let (host, port) = match split {
        Some((host, port)) => {
            let port = port
                .parse()
                .with_context(|| format!("--target {url:?}: port out of range"))?;
            (host, Some(port))
        }
        None => (authority, None),
    };
    if host.is_empty() {
        bail!("--target {url:?}: no host");
    }
    Ok(TargetUrl {
        https,
        host: host.to_owned(),
        port,
    })
}

/// The first address the target's host resolves to (once, now).
fn resolve(url: &TargetUrl) -> anyhow::Result<SocketAddr> {
    let with_port = format!("{}:{}", url.host, url.port_or_default());
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolved to no address"))
}

/// The request authority and, for https://, the TLS settings: the CA file's certificates and
/// the server name (`--server-name`, else the target's host without IPv6 brackets).
fn tls_target(
    args: &RunArgs,
    url: &TargetUrl,
) -> anyhow::Result<(String, Option<load::TlsTarget>)> {
    if !url.https {
        if args.ca_file.is_some() || args.server_name.is_some() {
            bail!("--ca-file and --server-name are for https:// targets");
        }
        return Ok((url.authority(&url.host), None));
    }
    let Some(ca_file) = &args.ca_file else {
        bail!("https:// targets need --ca-file (the PEM of the CA that signed the server's certificate)");
    };
    let ca_certificates = load::read_ca_file(ca_file).map_err(anyhow::Error::msg)?;
    let server_name = match &args.server_name {
        Some(name) => name.clone(),
        None => url
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    };
    let authority = match &args.server_name {
        Some(name) => url.authority(name),
        None => url.authority(&url.host),
    };
    let key_exchange = match args.tls_key_exchange {
        KeyExchangeArg::Default => KeyExchange::Default,
        KeyExchangeArg::X25519 => KeyExchange::X25519,
        KeyExchangeArg::P256 => KeyExchange::P256,
        KeyExchangeArg::X25519mlkem768 => KeyExchange::X25519Mlkem768,
    };
    let tls = load::TlsTarget {
        ca_certificates,
        server_name,
        key_exchange,
        resumption: args.tls_resumption,
    };
    Ok((authority, Some(tls)))
}

/// Durations as `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit (use ms, s, m or h)")),
    };
    // A year is far beyond any load run and keeps every Instant addition safe.
    if !(0.0..=365.0 * 86400.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_metadata(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
    load::wire::check_metadata(&name, &value)?;
    Ok((name, value))
}

/// File descriptors wanted beyond one per connection (stdio, io_uring rings, output files).
const OPEN_FILES_SPARE: u64 = 64;

/// Raises the soft open-files limit towards `wanted` (up to the hard limit), so 10 000
/// connections do not fail as `connect` errors (EMFILE) under the usual soft limit of 1024.
fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    if limit.rlim_cur < wanted {
        eprintln!(
            "warning: open files limited to {} (hard limit); some of the connections will fail \
             as `connect` errors; raise it with ulimit -n",
            limit.rlim_cur
        );
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C (or SIGTERM) stops the run early and still prints the report; a second one kills.
fn install_interrupt_handler() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut terminate), Ok(mut interrupt)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                for _ in 0..2 {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                    if INTERRUPTED.swap(true, Ordering::Relaxed) {
                        std::process::exit(130);
                    }
                }
            })
        })?;
    Ok(())
}

/// Redraws the one-line progress: rate and pod shares since the last line, totals so far.
fn draw_progress(
    snapshot: &Snapshot,
    (at, calls_before, pods_before): (Instant, u64, BTreeMap<String, u64>),
) -> (Instant, u64, BTreeMap<String, u64>) {
    let now = Instant::now();
    let calls = snapshot.calls_ok + snapshot.errors;
    let rate = (calls - calls_before.min(calls)) as f64 / (now - at).as_secs_f64().max(1e-9);
    let recent: BTreeMap<&str, u64> = snapshot
        .per_pod
        .iter()
        .map(|(pod, n)| {
            (
                pod.as_str(),
                n - pods_before.get(pod).copied().unwrap_or(0).min(*n),
            )
        })
        .collect();
    let recent_total: u64 = recent.values().sum();
    let mut line = format!(
        "{:>6.1}s  {:>10.0} calls/s  ok {}  errors {}",
        snapshot.elapsed.as_secs_f64(),
        rate,
        snapshot.calls_ok,
        snapshot.errors
    );
    for (pod, n) in recent.iter().take(12) {
        let share = if recent_total == 0 {
            0.0
        } else {
            100.0 * *n as f64 / recent_total as f64
        };
        line.push_str(&format!("  {pod} {share:.1}%"));
    }
    if recent.len() > 12 {
        line.push_str(&format!("  (+{} pods)", recent.len() - 12));
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{line}");
    let _ = stderr.flush();
    (now, calls, snapshot.per_pod.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e9h").is_err());
    }

    fn resolve_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
        let url = parse_target(url)?;
        Ok((resolve(&url)?, url.authority(&url.host)))
    }

    #[test]
    fn targets() {
        let (addr, host) = resolve_target("http://127.0.0.1:19080").unwrap();
        assert_eq!(
            (addr.to_string(), host.as_str()),
            ("127.0.0.1:19080".into(), "127.0.0.1:19080")
        );
        let (addr, host) = resolve_target("http://127.0.0.1/").unwrap();
        assert_eq!((addr.port(), host.as_str()), (80, "127.0.0.1"));
        let (addr, _) = resolve_target("http://[::1]:8080").unwrap();
        assert_eq!(addr.to_string(), "[::1]:8080");
        let (addr, _) = resolve_target("http://localhost:9").unwrap();
        assert_eq!(addr.port(), 9);
        let (addr, host) = resolve_target("https://127.0.0.1").unwrap();
        assert_eq!((addr.port(), host.as_str()), (443, "127.0.0.1"));
        let url = parse_target("https://[::1]:8443/").unwrap();
        assert_eq!(
            (url.https, url.host.as_str(), url.port),
            (true, "[::1]", Some(8443))
        );
        assert!(resolve_target("ftp://example.com").is_err());
        assert!(resolve_target("http://h:1/path").is_err());
        assert!(resolve_target("http://").is_err());
        assert!(resolve_target("https://:443").is_err());
        assert!(resolve_target("http://h:99999").is_err());
    }

    #[test]
    fn metadata() {
        assert_eq!(
            parse_metadata("X-Tenant=a=b"),
            Ok(("x-tenant".into(), "a=b".into()))
        );
        assert!(parse_metadata("novalue").is_err());
        assert!(parse_metadata("host=x").is_err());
    }
}
