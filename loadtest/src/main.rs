//! The `ringway-load` command line: one subcommand per role (`backend`, `dns` and the load
//! generator `run`; the pod harness and scenarios slot in as further subcommands).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringway_load::backend::{Backend, BackendConfig};
use ringway_load::dns::{DnsServer, DnsServerConfig};

mod cmd_pods;
mod cmd_scenario;
mod run;

#[derive(Parser, Debug)]
#[command(
    name = "ringway-load",
    version,
    about = "Test backends and load for ringway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP/2 gRPC test backend until SIGINT or SIGTERM.
    Backend(BackendArgs),
    /// Serve authoritative DNS over UDP and TCP on one port until SIGINT or SIGTERM.
    Dns(DnsArgs),
    /// Run a headless Service on loopback: N backend pods (pod-N on 127.0.0.(N+1), one port)
    /// and a DNS server answering the Service name with the live pods; scale them from stdin
    /// (`scale 5`, `kill pod-2`, `ttl 1`, `status`, `quit`) until SIGINT or SIGTERM.
    Pods(cmd_pods::PodsArgs),
    /// Scenarios against a proxy under test: `scenario scale` scales pods under load and
    /// checks the balance, the removed pods and failed calls.
    #[command(subcommand)]
    Scenario(cmd_scenario::ScenarioCommand),
    /// Load a gRPC-Web target over HTTP/1.1 and report throughput, latency, errors and the
    /// distribution of calls over backend pods.
    Run(run::RunArgs),
}

#[derive(Args, Debug)]
struct BackendArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "RINGWAY_LOAD_BACKEND_LISTEN",
        default_value = "127.0.0.1:9001"
    )]
    listen: SocketAddr,
    /// Name reported in every response as `x-backend`.
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_NAME", default_value = "pod-1")]
    name: String,
    /// Tokio worker threads (1 = a single current-thread runtime).
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_THREADS", default_value_t = 1)]
    threads: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection [default: unlimited].
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_MAX_CONCURRENT_STREAMS")]
    max_concurrent_streams: Option<u32>,
    /// Latency added before the response headers of every call, in milliseconds.
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of calls answered grpc-status 14 UNAVAILABLE (0.0 to 1.0).
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Response message size in bytes for every call [default: echo the request].
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_RESPONSE_BYTES")]
    response_bytes: Option<usize>,
    /// HTTP/2 initial stream window advertised to clients, in bytes.
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_STREAM_WINDOW_BYTES", default_value_t = 4 << 20)]
    stream_window_bytes: u32,
    /// HTTP/2 connection window advertised to clients, in bytes.
    #[arg(long, env = "RINGWAY_LOAD_BACKEND_CONNECTION_WINDOW_BYTES", default_value_t = 16 << 20)]
    connection_window_bytes: u32,
    /// How long shutdown waits for in-flight calls, in milliseconds.
    #[arg(
        long,
        env = "RINGWAY_LOAD_BACKEND_SHUTDOWN_GRACE_MS",
        default_value_t = 2_000
    )]
    shutdown_grace_ms: u64,
}

impl BackendArgs {
    fn config(self) -> BackendConfig {
        let mut config = BackendConfig::new(self.listen, self.name);
        config.threads = self.threads;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.latency_ms = self.latency_ms;
        config.error_rate = self.error_rate;
        config.response_bytes = self.response_bytes;
        config.initial_stream_window_bytes = self.stream_window_bytes;
        config.initial_connection_window_bytes = self.connection_window_bytes;
        config.shutdown_grace_ms = self.shutdown_grace_ms;
        config
    }
}

#[derive(Args, Debug)]
struct DnsArgs {
    /// Address to listen on, for both UDP and TCP.
    #[arg(
        long,
        env = "RINGWAY_LOAD_DNS_LISTEN",
        default_value = "127.0.0.1:5353"
    )]
    listen: SocketAddr,
    /// Zone served authoritatively; repeat or separate with commas for several. Names
    /// outside every zone are answered REFUSED.
    #[arg(
        long = "zone",
        env = "RINGWAY_LOAD_DNS_ZONE",
        default_value = "cluster.local",
        value_delimiter = ','
    )]
    zones: Vec<String>,
    /// A name and its addresses, `NAME=IP[,IP…]` (IPv4 and IPv6 mixed); repeat for several
    /// names (separate them with `;` in the environment variable) [default: none].
    #[arg(
        long = "record",
        env = "RINGWAY_LOAD_DNS_RECORD",
        value_delimiter = ';',
        value_parser = parse_record
    )]
    records: Vec<(String, Vec<IpAddr>)>,
    /// TTL of address records, in seconds.
    #[arg(long, env = "RINGWAY_LOAD_DNS_TTL_S", default_value_t = 5)]
    ttl_s: u32,
    /// TTL of NXDOMAIN and NODATA answers (the SOA's TTL and minimum), in seconds.
    #[arg(long, env = "RINGWAY_LOAD_DNS_NEGATIVE_TTL_S", default_value_t = 5)]
    negative_ttl_s: u32,
    /// Largest UDP response to a query without EDNS, in bytes; larger answers are truncated
    /// (TC) so the client retries over TCP.
    #[arg(
        long,
        env = "RINGWAY_LOAD_DNS_UDP_PAYLOAD_BYTES_MAX",
        default_value_t = ringway_load::dns::UDP_PAYLOAD_BYTES_MAX_DEFAULT
    )]
    udp_payload_bytes_max: u16,
    /// Largest UDP response to a query with EDNS, in bytes, whatever the client advertises.
    #[arg(
        long,
        env = "RINGWAY_LOAD_DNS_EDNS_PAYLOAD_BYTES_MAX",
        default_value_t = ringway_load::dns::EDNS_PAYLOAD_BYTES_MAX_DEFAULT
    )]
    edns_payload_bytes_max: u16,
    /// TCP connections served at once; more are closed at accept.
    #[arg(
        long,
        env = "RINGWAY_LOAD_DNS_TCP_CONNECTIONS_MAX",
        default_value_t = ringway_load::dns::TCP_CONNECTIONS_MAX_DEFAULT
    )]
    tcp_connections_max: usize,
    /// Idle time after which a TCP connection is closed, in milliseconds.
    #[arg(
        long,
        env = "RINGWAY_LOAD_DNS_TCP_IDLE_TIMEOUT_MS",
        default_value_t = ringway_load::dns::TCP_IDLE_TIMEOUT_MS_DEFAULT
    )]
    tcp_idle_timeout_ms: u64,
}

impl DnsArgs {
    fn config(&self) -> DnsServerConfig {
        let mut config = DnsServerConfig::new(self.listen, &[]);
        config.zones = self.zones.clone();
        config.ttl_s = self.ttl_s;
        config.negative_ttl_s = self.negative_ttl_s;
        config.udp_payload_bytes_max = self.udp_payload_bytes_max;
        config.edns_payload_bytes_max = self.edns_payload_bytes_max;
        config.tcp_connections_max = self.tcp_connections_max;
        config.tcp_idle_timeout_ms = self.tcp_idle_timeout_ms;
        config
    }
}

/// Parses `NAME=IP[,IP…]`; `NAME=` alone is a name with no addresses (NODATA).
fn parse_record(text: &str) -> Result<(String, Vec<IpAddr>), String> {
    let (name, addrs) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=IP[,IP…]"))?;
    let addrs = addrs
        .split(',')
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .map(|addr| {
            addr.parse()
                .map_err(|_| format!("{addr:?} is not an IP address"))
        })
        .collect::<Result<Vec<IpAddr>, String>>()?;
    Ok((name.trim().to_owned(), addrs))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Backend(args) => run_backend(args),
        Command::Dns(args) => run_dns(args),
        Command::Pods(args) => cmd_pods::run(args),
        Command::Scenario(command) => {
            let code = cmd_scenario::run(command)?;
            std::process::exit(code)
        }
        Command::Run(args) => {
            let code = run::run(args)?;
            std::process::exit(code)
        }
    }
}

fn run_backend(args: BackendArgs) -> anyhow::Result<()> {
    let listen = args.listen;
    let backend = Backend::start(args.config()).with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %backend.local_addr(), name = backend.name(), "backend serving");
    wait_for_signal()?;
    tracing::info!(stats = ?backend.stats(), "backend shutting down");
    backend.shutdown();
    Ok(())
}

fn run_dns(args: DnsArgs) -> anyhow::Result<()> {
    let server = DnsServer::start(args.config())
        .with_context(|| format!("starting DNS server on {}", args.listen))?;
    for (name, addrs) in args.records {
        server
            .set_addrs(&name, addrs.clone())
            .with_context(|| format!("record {name}"))?;
        tracing::info!(%name, ?addrs, "record");
    }
    tracing::info!(addr = %server.local_addr(), zones = ?args.zones, "DNS server serving");
    wait_for_signal()?;
    tracing::info!(stats = ?server.stats(), "DNS server shutting down");
    server.shutdown();
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    })
}
