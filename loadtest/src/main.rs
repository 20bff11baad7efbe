//! The `ringway-load` command line: one subcommand per role (`backend` today; the load
//! generator, the pod harness and scenarios slot in as further subcommands).

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringway_load::backend::{Backend, BackendConfig};

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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Backend(args) => run_backend(args),
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
