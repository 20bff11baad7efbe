//! `ringway-load pods`: the pod set of [`ringway_load::pods`] behind a command line, controlled
//! from stdin until SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use ringway_load::backend::BackendConfig;
use ringway_load::pods::{self, PodSet, PodSetConfig};

#[derive(Args, Debug)]
pub struct PodsArgs {
    /// Pods to start with.
    #[arg(long, env = "RINGWAY_LOAD_PODS_COUNT", default_value_t = 3)]
    count: usize,
    /// The headless Service's fully qualified name, answered with the live pods' addresses.
    #[arg(long, env = "RINGWAY_LOAD_PODS_SERVICE", default_value = pods::SERVICE_DEFAULT)]
    service: String,
    /// Port every pod listens on (each on its own 127.0.0.x); 0 = a free port.
    #[arg(long, env = "RINGWAY_LOAD_PODS_PORT", default_value_t = 0)]
    port: u16,
    /// Address of the DNS server (UDP and TCP); port 0 = a free port.
    #[arg(
        long,
        env = "RINGWAY_LOAD_PODS_DNS_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    dns_listen: SocketAddr,
    /// TTL of the Service's address records, in seconds.
    #[arg(long, env = "RINGWAY_LOAD_PODS_TTL_S", default_value_t = 5)]
    ttl_s: u32,
    /// Time a scaled-down pod keeps serving after leaving DNS before its graceful shutdown,
    /// in milliseconds (Kubernetes: the preStop sleep).
    #[arg(
        long,
        env = "RINGWAY_LOAD_PODS_TERMINATION_GRACE_MS",
        default_value_t = 5_000
    )]
    termination_grace_ms: u64,
    /// Where to write the resolv.conf a proxy should use (Kubernetes-like search list and
    /// ndots:5, nameserver 127.0.0.1; pass the DNS port with the proxy's own flag).
    #[arg(
        long,
        env = "RINGWAY_LOAD_PODS_RESOLV_CONF",
        default_value = "/tmp/ringway-load-pods.resolv.conf"
    )]
    resolv_conf: std::path::PathBuf,
    #[command(flatten)]
    knobs: PodKnobs,
}

/// How every pod answers; streaming is per call (`/ServerStream` with `x-stream-count` and
/// `x-stream-interval-ms` request headers, see the backend's documentation).
#[derive(Args, Debug, Clone)]
pub struct PodKnobs {
    /// Latency added before every pod's response headers, in milliseconds.
    #[arg(long, env = "RINGWAY_LOAD_PODS_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of calls each pod answers grpc-status 14 UNAVAILABLE (0.0 to 1.0).
    #[arg(long, env = "RINGWAY_LOAD_PODS_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Response message size in bytes [default: echo the request].
    #[arg(long, env = "RINGWAY_LOAD_PODS_RESPONSE_BYTES")]
    response_bytes: Option<usize>,
    /// Tokio worker threads per pod.
    #[arg(long, env = "RINGWAY_LOAD_PODS_THREADS", default_value_t = 1)]
    pod_threads: usize,
}

impl PodKnobs {
    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig {
            latency_ms: self.latency_ms,
            error_rate: self.error_rate,
            response_bytes: self.response_bytes,
            threads: self.pod_threads,
            ..BackendConfig::default()
        }
    }
}

pub fn run(args: PodsArgs) -> anyhow::Result<()> {
    let mut config = PodSetConfig::new(&args.service);
    config.port = args.port;
    config.dns_listen = args.dns_listen;
    config.ttl_s = args.ttl_s;
    config.termination_grace_ms = args.termination_grace_ms;
    config.backend = args.knobs.backend_config();
    let mut set = PodSet::start(config, args.count).context("starting the pods")?;
    let dns = set.dns_addr();
    std::fs::write(
        &args.resolv_conf,
        pods::resolv_conf(&args.service, dns.ip()),
    )
    .with_context(|| format!("writing {}", args.resolv_conf.display()))?;
    let short_name = args.service.split('.').next().unwrap_or(&args.service);
    println!("{}", pods::status_text(&set));
    println!(
        "point a proxy at it, e.g.:\n  ringway --listen 127.0.0.1:8080 --upstream {short_name}:{} \
         --dns-server {dns} --resolv-conf {} --dns-refresh-interval-ms 1000",
        set.port(),
        args.resolv_conf.display()
    );
    println!("{}", pods::COMMANDS_HELP);
    let lines = stdin_lines();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut lines = lines;
        loop {
            let line = tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                line = lines.recv() => line,
            };
            // End of input (e.g. run in the background): keep serving until a signal.
            let Some(line) = line else {
                std::future::pending::<()>().await;
                continue;
            };
            match pods::parse_command(&line) {
                Ok(Some(pods::Command::Quit)) => break,
                Ok(Some(command)) => println!("{}", apply(&mut set, command)),
                Ok(None) => {}
                Err(message) => println!("{message}"),
            }
        }
        anyhow::Ok(())
    })?;
    println!("stopping the pods and the DNS server");
    drop(set);
    Ok(())
}

fn apply(set: &mut PodSet, command: pods::Command) -> String {
    use pods::Command;
    let change = match command {
        Command::Scale(count) => set.scale(count),
        Command::Kill(name) => set.kill(&name),
        Command::Ttl(ttl_s) => {
            return match set.set_ttl(ttl_s) {
                Ok(()) => format!("TTL of {} is now {ttl_s} s", set.service()),
                Err(e) => format!("error: {e}"),
            }
        }
        Command::Status => return pods::status_text(set),
        Command::Help | Command::Quit => return pods::COMMANDS_HELP.to_owned(),
    };
    match change {
        Ok(change) => format!(
            "added [{}] removed [{}]; DNS answers [{}]",
            change.added.join(", "),
            change.removed.join(", "),
            set.live_names().join(", ")
        ),
        Err(e) => format!("error: {e}"),
    }
}

/// Reads stdin on its own thread, one line per message, so the control loop can also wait
/// for signals. The channel closes at end of input.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if sender.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if spawned.is_err() {
        tracing::warn!("no stdin thread: the pods cannot be controlled");
    }
    receiver
}
