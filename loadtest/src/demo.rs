//! `ringway demo`: the README's first command. Three pods, their DNS server and a proxy on
//! 127.0.0.1:8080; a short load shows the per-pod distribution, a scale to five shows the
//! rebalancing second by second, then it serves until Ctrl-C and says how to call it.
//!
//! The orchestration lives here, in ringway-load, and the proxy is the caller's: `ringway demo`
//! passes a closure that starts ringway's own `Server` in-process (this crate must not depend
//! on ringway). Whatever the closure returns is held until the end and dropped first, so a
//! `Server` (whose Drop stops it) needs no extra stop call.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::load::{self, LoadConfig};
use crate::pods::{self, PodSet, PodSetConfig};
use crate::proxy;
use crate::stop;

/// Width of the distribution bars, in characters.
const BAR_WIDTH_MAX: usize = 40;
/// How long the proxy may take to serve its first call.
const PROXY_READY_TIMEOUT_S: u64 = 10;

/// What the demo runs. [`DemoConfig::default`] is the README's.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Where the proxy serves gRPC-Web.
    pub listen: SocketAddr,
    pub pods_start: usize,
    pub pods_scaled: usize,
    pub service: String,
    /// The proxy's DNS refresh interval; the DNS TTL is set to match.
    pub refresh_interval_ms: u64,
    /// Length of the first load, before scaling.
    pub load_before: Duration,
    /// Length of the load after scaling, shown per second.
    pub load_after: Duration,
    /// Calls per second of both loads.
    pub rate: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pods_start: 3,
            pods_scaled: 5,
            service: pods::SERVICE_DEFAULT.to_owned(),
            refresh_interval_ms: 1_000,
            load_before: Duration::from_secs(3),
            load_after: Duration::from_secs(4),
            rate: 500.0,
        }
    }
}

/// What the proxy is asked to do: serve on `listen`, balance over `upstream` (the Service's
/// short name and port, resolved with `resolv_conf`'s search list) using the DNS server
/// `dns`, re-resolving every `refresh_interval_ms`.
#[derive(Clone, Debug)]
pub struct ProxyRequest {
    pub listen: SocketAddr,
    pub upstream: String,
    pub dns: SocketAddr,
    pub resolv_conf: PathBuf,
    pub refresh_interval_ms: u64,
}

impl ProxyRequest {
    /// The request as ringway flags.
    pub fn ringway_args(&self) -> Vec<String> {
        vec![
            "--listen".into(),
            self.listen.to_string(),
            "--upstream".into(),
            self.upstream.clone(),
            "--dns-server".into(),
            self.dns.to_string(),
            "--resolv-conf".into(),
            self.resolv_conf.display().to_string(),
            "--dns-refresh-interval-ms".into(),
            self.refresh_interval_ms.to_string(),
        ]
    }
}

/// Runs the demo until SIGINT or SIGTERM. `start_proxy` starts the proxy and returns a guard
/// that stops it when dropped.
pub fn run<P>(
    config: DemoConfig,
    start_proxy: impl FnOnce(&ProxyRequest) -> io::Result<P>,
) -> anyhow::Result<()> {
    let interrupted = stop::interrupt_flag();
    let work_dir = std::env::temp_dir().join(format!("ringway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let _remove_work_dir = RemoveOnDrop(work_dir.clone());

    let mut pod_config = PodSetConfig::new(&config.service);
    pod_config.ttl_s = (config.refresh_interval_ms / 1000).max(1) as u32;
    pod_config.termination_grace_ms = 2 * config.refresh_interval_ms + 1_000;
    let mut pods = PodSet::start(pod_config, config.pods_start).context("starting the pods")?;
    let resolv_conf = work_dir.join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        pods::resolv_conf(&config.service, pods.dns_addr().ip()),
    )?;
    let short_name = config.service.split('.').next().unwrap_or(&config.service);
    let request = ProxyRequest {
        listen: config.listen,
        upstream: format!("{short_name}:{}", pods.port()),
        dns: pods.dns_addr(),
        resolv_conf,
        refresh_interval_ms: config.refresh_interval_ms,
    };
    println!(
        "ringway demo: {} pods of the headless Service {} (one port, {}), its DNS server on {}",
        config.pods_start,
        config.service,
        pods.port(),
        request.dns
    );
    for pod in pods.live() {
        println!("  {:<6} {}", pod.name, pod.addr());
    }
    let proxy_guard = start_proxy(&request)
        .with_context(|| format!("starting the proxy on {}", config.listen))?;
    wait_ready(config.listen)?;
    println!(
        "\nproxy on {} → --upstream {} (re-resolved every {} ms)\n",
        config.listen, request.upstream, config.refresh_interval_ms
    );

    println!(
        "{} s of load at {} calls/s:",
        config.load_before.as_secs_f64(),
        config.rate
    );
    let before = run_load(&config, config.load_before, config.load_before)?;
    print!("{}", bars(&before.per_pod));
    if stop::wait(&interrupted, Some(Duration::ZERO)) {
        return Ok(());
    }

    let change = pods.scale(config.pods_scaled)?;
    println!(
        "\nscaled to {} pods (+{}): DNS answers them now; per second of load:",
        config.pods_scaled,
        change.added.join(", +")
    );
    let after = run_load(&config, config.load_after, Duration::from_secs(1))?;
    for window in &after.windows {
        println!(
            "  {:>4.1}s  {}",
            window.start.as_secs_f64(),
            shares_line(&window.per_pod)
        );
    }
    println!("over the whole {} s:", config.load_after.as_secs_f64());
    print!("{}", bars(&after.per_pod));
    if after.errors + before.errors > 0 {
        println!(
            "failed calls: {} before, {} after scaling",
            before.errors, after.errors
        );
    }

    print!("{}", how_to_call(config.listen));
    println!("serving until Ctrl-C");
    stop::wait(&interrupted, None);
    println!("stopping");
    drop(proxy_guard);
    drop(pods);
    Ok(())
}

fn wait_ready(listen: SocketAddr) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(PROXY_READY_TIMEOUT_S);
    loop {
        match proxy::probe(listen, Duration::from_secs(1)) {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                anyhow::bail!("the proxy on {listen} did not answer a gRPC-Web call: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn run_load(
    config: &DemoConfig,
    duration: Duration,
    window: Duration,
) -> anyhow::Result<load::Report> {
    let load = load::start(LoadConfig {
        target: config.listen,
        host_header: config.listen.to_string(),
        connections: 8,
        threads: 1,
        duration: Some(duration),
        rate: Some(config.rate),
        window,
        ..LoadConfig::default()
    })
    .context("starting the load")?;
    Ok(load.join())
}

/// One bar per pod: `pod-1  ██████████  33.3%  (500)`.
pub fn bars(per_pod: &BTreeMap<String, u64>) -> String {
    let total: u64 = per_pod.values().sum();
    let mut text = String::new();
    for (pod, count) in per_pod {
        let share = if total == 0 {
            0.0
        } else {
            *count as f64 / total as f64
        };
        let width = (share * BAR_WIDTH_MAX as f64).round() as usize;
        text.push_str(&format!(
            "  {pod:<6} {:<width_max$} {:>5.1}%  ({count})\n",
            "█".repeat(width),
            share * 100.0,
            width_max = BAR_WIDTH_MAX
        ));
    }
    text
}

/// `pod-1 20% pod-2 20% …` for one window.
pub fn shares_line(per_pod: &BTreeMap<String, u64>) -> String {
    let total: u64 = per_pod.values().sum();
    per_pod
        .iter()
        .map(|(pod, count)| {
            format!(
                "{pod} {:>3.0}%",
                *count as f64 * 100.0 / total.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// The curl lines that call the demo like a browser would, and show which pod answered.
pub fn how_to_call(listen: SocketAddr) -> String {
    format!(
        "\ncall it like a browser would (a unary call whose message is `abc`):\n\
         \n  printf '\\x00\\x00\\x00\\x00\\x03abc' > /tmp/msg.bin\
         \n  curl -sS --http1.1 -X POST http://{listen}/demo.Echo/Unary \\\
         \n    -H 'content-type: application/grpc-web+proto' -H 'x-grpc-web: 1' \\\
         \n    --data-binary @/tmp/msg.bin -D - -o - | xxd\n\
         \nthe x-backend header names the pod that answered; repeat it to see the rotation.\n"
    )
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_shares_show_each_pod() {
        let per_pod = BTreeMap::from([("pod-1".to_owned(), 3), ("pod-2".to_owned(), 1)]);
        let text = bars(&per_pod);
        assert!(
            text.contains("pod-1  ██████████████████████████████"),
            "{text}"
        );
        assert!(text.contains(" 75.0%  (3)"), "{text}");
        assert!(text.contains(" 25.0%  (1)"), "{text}");
        assert_eq!(shares_line(&per_pod), "pod-1  75%  pod-2  25%");
        assert_eq!(bars(&BTreeMap::new()), "");
        let idle = BTreeMap::from([("pod-1".to_owned(), 0)]);
        assert!(bars(&idle).contains("0.0%"));
    }

    #[test]
    fn the_curl_lines_name_the_listen_address() {
        let text = how_to_call("127.0.0.1:8080".parse().unwrap());
        assert!(text.contains("curl -sS --http1.1 -X POST http://127.0.0.1:8080/demo.Echo/Unary"));
        assert!(text.contains("printf '\\x00\\x00\\x00\\x00\\x03abc'"));
    }

    #[test]
    fn the_request_becomes_ringway_flags() {
        let request = ProxyRequest {
            listen: "127.0.0.1:8080".parse().unwrap(),
            upstream: "user-service:4000".into(),
            dns: "127.0.0.1:5353".parse().unwrap(),
            resolv_conf: "/tmp/r".into(),
            refresh_interval_ms: 1000,
        };
        assert_eq!(
            request.ringway_args().join(" "),
            "--listen 127.0.0.1:8080 --upstream user-service:4000 --dns-server 127.0.0.1:5353 \
             --resolv-conf /tmp/r --dns-refresh-interval-ms 1000"
        );
    }
}
