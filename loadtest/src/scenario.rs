//! `scenario scale`: pods that scale under load, and a verdict on how the proxy followed.
//!
//! One run starts the pods and their DNS server ([`crate::pods`]), the proxy under test
//! ([`crate::proxy`]) and the load ([`crate::load`]), then follows the timeline (3 → 6 → 2 pods
//! by default, one step every `step`). Scale-downs go as in Kubernetes: the pods leave DNS at
//! once and shut down gracefully after the termination grace. While a step runs, the DNS
//! server's query counter shows when the proxy first asked again, which is when the change
//! became visible to it. At the end the load's windows and the timeline go to
//! [`crate::checks::evaluate`]; the report, the load's JSON and chart and the verdicts are
//! written to the output directory.
//!
//! Everything started here is owned by a guard that stops it when dropped, in reverse order:
//! load, proxy, pods and DNS. A failed check, an error, a panic or the `interrupted` flag
//! (set on SIGINT/SIGTERM by the caller) all end the run that way.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::backend::BackendConfig;
use crate::checks::{self, CheckParams, Evaluation, Sample, Step};
use crate::load::{self, LoadConfig, Report};
use crate::pods::{self, PodSet, PodSetConfig};
use crate::proxy::{self, ProxyKind, ProxyProcess, ProxySpec};

/// Longest timeline.
pub const STEPS_MAX: usize = 100;
/// Longest step.
pub const STEP_MAX: Duration = Duration::from_secs(3600);
/// How often the timeline loop looks at the DNS counters and the interrupt flag; the
/// resolution of the measured visibility time.
const TICK_MS: u64 = 10;
/// How long the proxy may take to serve its first call.
const PROXY_READY_TIMEOUT_S: u64 = 20;

/// A scenario run. [`ScenarioConfig::new`] gives the defaults of `ringway-load scenario scale`.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub proxy: ProxyKind,
    /// Pod counts, one per step; the first is the starting set.
    pub timeline: Vec<usize>,
    pub step: Duration,
    /// The proxy's DNS refresh interval.
    pub refresh_interval_ms: u64,
    /// Delay each change by a random part of one refresh interval, so the change does not
    /// fall at the same point of the proxy's refresh cycle in every step and every run (a
    /// proxy refreshing on a fixed period from its start would otherwise always see the
    /// change after the same, arbitrary delay).
    pub phase_jitter: bool,
    /// Have the proxy follow the record TTL instead.
    pub respect_ttl: bool,
    /// TTL of the Service's records.
    pub ttl_s: u32,
    /// Time between a pod leaving DNS and its graceful shutdown.
    pub termination_grace_ms: u64,
    pub service: String,
    /// Proxy listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Pods' port; 0 picks a free one.
    pub pod_port: u16,
    /// DNS server address; port 0 picks a free one.
    pub dns_listen: SocketAddr,
    /// Envoy's admin port; 0 picks a free one.
    pub admin_port: u16,
    /// Proxy worker threads.
    pub proxy_workers: usize,
    pub connections: usize,
    pub load_threads: usize,
    /// Calls/s in total; `None` = closed loop.
    pub rate: Option<f64>,
    /// Length of the load's windows, the resolution of the balance measurements.
    pub window: Duration,
    /// Allowed deviation from the fair share, relative (0.10 = 10%).
    pub share_tolerance: f64,
    /// Time after the proxy's DNS query during which calls may still reach a removed pod
    /// (the proxy applying the answer); the pods' latency is added for calls in flight.
    pub removal_slack_ms: u64,
    /// The pods' behaviour (latency, error rate, response size).
    pub backend: BackendConfig,
    pub out_dir: PathBuf,
    /// HTTPS: the proxy serves TLS on a second listener and the load goes there.
    pub tls: Option<ScenarioTls>,
    /// The load over HTTP/2 (h2c, or ALPN h2 with TLS), `streams` calls per connection.
    pub http2: bool,
    pub streams: usize,
}

/// The scenario's HTTPS setup: the proxy's certificate and how the load checks it.
#[derive(Clone, Debug)]
pub struct ScenarioTls {
    /// The proxy's PEM certificate chain and key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The load's side: the CA to trust and the name to ask for.
    pub client: load::TlsTarget,
    /// The TLS listener; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl ScenarioConfig {
    pub fn new(proxy: ProxyKind) -> Self {
        ScenarioConfig {
            proxy,
            timeline: vec![3, 6, 2],
            step: Duration::from_secs(10),
            refresh_interval_ms: 1_000,
            phase_jitter: true,
            respect_ttl: false,
            ttl_s: 1,
            termination_grace_ms: 3_000,
            service: pods::SERVICE_DEFAULT.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pod_port: 0,
            dns_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_port: 0,
            proxy_workers: 2,
            connections: 16,
            load_threads: 1,
            rate: Some(2_000.0),
            window: Duration::from_millis(250),
            share_tolerance: 0.10,
            removal_slack_ms: 500,
            backend: BackendConfig::default(),
            out_dir: PathBuf::from("scenario-out"),
            tls: None,
            http2: false,
            streams: 1,
        }
    }

    /// One refresh interval plus one second: when shares must be fair after a change.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms) + Duration::from_secs(1)
    }

    /// [`ScenarioConfig::removal_slack_ms`] plus the pods' latency.
    pub fn removal_slack(&self) -> Duration {
        Duration::from_millis(self.removal_slack_ms + self.backend.latency_ms)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.timeline.is_empty() || self.timeline.len() > STEPS_MAX {
            return Err(format!("the timeline needs 1 to {STEPS_MAX} steps"));
        }
        if self
            .timeline
            .iter()
            .any(|count| *count == 0 || *count > pods::PODS_MAX)
        {
            return Err(format!("every step needs 1 to {} pods", pods::PODS_MAX));
        }
        if self.step.is_zero() || self.step > STEP_MAX {
            return Err(format!("the step must be between 0 and {STEP_MAX:?}"));
        }
        let jitter_max = if self.phase_jitter {
            Duration::from_millis(self.refresh_interval_ms)
        } else {
            Duration::ZERO
        };
        if self.step <= self.settle() + self.window + jitter_max {
            return Err(format!(
                "a step of {:?} leaves nothing to judge: it must exceed the refresh interval \
                 + 1 s + one window, + one more refresh interval with phase jitter ({:?})",
                self.step,
                self.settle() + self.window + jitter_max
            ));
        }
        if !(self.share_tolerance > 0.0 && self.share_tolerance < 1.0) {
            return Err("the share tolerance must be between 0 and 1".into());
        }
        let tls_listen = self.tls.as_ref().map(|tls| tls.listen);
        for addr in [self.listen, self.dns_listen].into_iter().chain(tls_listen) {
            if !addr.ip().is_loopback() {
                return Err(format!("{addr} is not a loopback address"));
            }
        }
        Ok(())
    }
}

/// What a run produced.
pub struct Outcome {
    pub evaluation: Evaluation,
    pub report: Report,
    pub steps: Vec<Step>,
    /// The proxy's command line.
    pub command_line: String,
    pub out_dir: PathBuf,
}

/// Runs the scenario; returns its outcome whether or not the checks passed (see
/// [`Evaluation::passed`]). Errors are failures to run at all, and an interrupt.
pub fn run(config: &ScenarioConfig, interrupted: &AtomicBool) -> anyhow::Result<Outcome> {
    config.validate().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.out_dir)
        .with_context(|| format!("creating {}", config.out_dir.display()))?;
    let out_dir = config.out_dir.canonicalize()?;

    let mut pods = PodSet::start(pod_set_config(config), config.timeline[0])
        .context("starting the pods and their DNS server")?;
    let resolv_conf = out_dir.join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        pods::resolv_conf(&config.service, pods.dns_addr().ip()),
    )?;
    let spec = proxy_spec(config, &pods, resolv_conf)?;
    say(&format!(
        "{} pods of {} on port {}, DNS on {}; starting {} on {}",
        config.timeline[0],
        config.service,
        spec.pod_port,
        spec.dns,
        config.proxy.label(),
        spec.listen
    ));
    let mut proxy = ProxyProcess::spawn(&config.proxy, &spec, &out_dir)?;
    say(&format!("proxy: {}", proxy.command_line));
    proxy.wait_ready(spec.listen, Duration::from_secs(PROXY_READY_TIMEOUT_S))?;

    let total = config.step * config.timeline.len() as u32;
    let target = spec.tls.as_ref().map_or(spec.listen, |tls| tls.listen);
    let load = load::start(load_config(config, target, total)).context("starting the load")?;
    // The load's clock: its windows start at zero when `start` was called.
    let base = Instant::now() - load.snapshot().elapsed;
    let steps = follow_timeline(config, &mut pods, &load, base, interrupted)?;
    load.stop();
    let report = load.join();
    drop(proxy);
    drop(pods);

    let samples = samples(&report, config.window);
    let params = CheckParams {
        settle: config.settle(),
        share_tolerance: config.share_tolerance,
        removal_slack: config.removal_slack(),
    };
    let evaluation = checks::evaluate(&samples, &steps, &params);
    let outcome = Outcome {
        evaluation,
        report,
        steps,
        command_line: spec_command_line(config, &spec),
        out_dir,
    };
    write_outputs(config, &outcome)?;
    Ok(outcome)
}

fn spec_command_line(config: &ScenarioConfig, spec: &ProxySpec) -> String {
    match &config.proxy {
        ProxyKind::Ringway { bin } => {
            format!("{} {}", bin.display(), proxy::ringway_args(spec).join(" "))
        }
        ProxyKind::Envoy { bin } => format!(
            "{} -c envoy.yaml --concurrency {}",
            bin.display(),
            spec.workers
        ),
        ProxyKind::Cmd { template } => proxy::expand_template(template, spec),
    }
}

fn pod_set_config(config: &ScenarioConfig) -> PodSetConfig {
    let mut pods = PodSetConfig::new(&config.service);
    pods.port = config.pod_port;
    pods.dns_listen = config.dns_listen;
    pods.ttl_s = config.ttl_s;
    pods.termination_grace_ms = config.termination_grace_ms;
    pods.backend = config.backend.clone();
    pods
}

fn proxy_spec(
    config: &ScenarioConfig,
    pods: &PodSet,
    resolv_conf: PathBuf,
) -> anyhow::Result<ProxySpec> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let listen = match config.listen.port() {
        0 => SocketAddr::new(config.listen.ip(), proxy::free_port(config.listen.ip())?),
        _ => config.listen,
    };
    let admin_port = match config.admin_port {
        0 => proxy::free_port(loopback)?,
        port => port,
    };
    let tls = match &config.tls {
        None => None,
        Some(tls) => Some(proxy::ProxyTls {
            listen: match tls.listen.port() {
                0 => SocketAddr::new(tls.listen.ip(), proxy::free_port(tls.listen.ip())?),
                _ => tls.listen,
            },
            cert_file: tls
                .cert_file
                .canonicalize()
                .with_context(|| format!("the certificate file {}", tls.cert_file.display()))?,
            key_file: tls
                .key_file
                .canonicalize()
                .with_context(|| format!("the key file {}", tls.key_file.display()))?,
        }),
    };
    Ok(ProxySpec {
        tls,
        listen,
        service: config.service.clone(),
        pod_port: pods.port(),
        dns: pods.dns_addr(),
        resolv_conf,
        refresh_interval_ms: config.refresh_interval_ms,
        respect_ttl: config.respect_ttl,
        workers: config.proxy_workers,
        admin_port,
    })
}

fn load_config(config: &ScenarioConfig, target: SocketAddr, total: Duration) -> LoadConfig {
    LoadConfig {
        target,
        host_header: target.to_string(),
        connections: config.connections,
        threads: config.load_threads,
        // A bound in case the timeline loop never stops it; it normally does at `total`.
        duration: Some(total + Duration::from_secs(5)),
        rate: config.rate,
        window: config.window,
        tls: config.tls.as_ref().map(|tls| tls.client.clone()),
        http2: config.http2,
        streams: config.streams,
        ..LoadConfig::default()
    }
}

/// Applies each step at its time and watches for the proxy's next DNS query.
fn follow_timeline(
    config: &ScenarioConfig,
    pods: &mut PodSet,
    load: &load::LoadHandle,
    base: Instant,
    interrupted: &AtomicBool,
) -> anyhow::Result<Vec<Step>> {
    let clock = |instant: Instant| instant.saturating_duration_since(base);
    let mut steps: Vec<Step> = Vec::with_capacity(config.timeline.len());
    for (index, count) in config.timeline.iter().enumerate() {
        let mut removed_before = BTreeMap::new();
        let step_end = config.step * (index as u32 + 1);
        let mut step = if index == 0 {
            Step {
                live: pods.live_names(),
                ..Step::default()
            }
        } else {
            let jitter = match config.phase_jitter {
                true => Duration::from_millis(random_below(config.refresh_interval_ms)),
                false => Duration::ZERO,
            };
            sleep_until(base + config.step * index as u32 + jitter, interrupted)?;
            let queries_before = pods.dns().stats().queries_for(pods.service()).total();
            let change = pods.scale(*count)?;
            let at = clock(change.published_at.unwrap_or_else(Instant::now));
            if let Some(previous) = steps.last_mut() {
                previous.end = at;
            }
            let mut step = Step {
                at,
                live: pods.live_names(),
                removed: change.removed,
                ..Step::default()
            };
            let visible = watch_for_query(pods, queries_before, base + step_end, interrupted)?;
            step.visible_at = visible.map(clock);
            // From the removal's visibility (plus slack) on, what the removed pods receive.
            let counted_from = visible.map(|visible| visible + config.removal_slack());
            if let Some(from) = counted_from.filter(|from| *from < base + step_end) {
                sleep_until(from, interrupted)?;
                removed_before = calls_started(pods, &step.removed);
            }
            step
        };
        sleep_until(base + step_end, interrupted)?;
        step.end = step_end;
        if !removed_before.is_empty() {
            let after = calls_started(pods, &step.removed);
            step.removed_pod_calls = Some(
                after
                    .iter()
                    .map(|(pod, calls)| {
                        let before = removed_before.get(pod).copied().unwrap_or(*calls);
                        (pod.clone(), calls.saturating_sub(before))
                    })
                    .collect(),
            );
        }
        let snapshot = load.snapshot();
        say(&format!(
            "step {index}: {} pods from {}{}; {} calls ok, {} failed so far",
            step.live.len(),
            checks::secs(step.at),
            step.visible_at
                .map(|visible| format!(
                    ", proxy asked DNS after {}",
                    checks::secs(visible.saturating_sub(step.at))
                ))
                .unwrap_or_default(),
            snapshot.calls_ok,
            snapshot.errors
        ));
        steps.push(step);
    }
    Ok(steps)
}

/// A random number below `bound` (0 for 0), from the standard library's randomly keyed hasher.
fn random_below(bound: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish().checked_rem(bound).unwrap_or(0)
}

/// Calls each named pod has received so far.
fn calls_started(pods: &PodSet, names: &[String]) -> BTreeMap<String, u64> {
    names
        .iter()
        .filter_map(|name| Some((name.clone(), pods.stats_of(name)?.calls_started)))
        .collect()
}

/// Polls the DNS counter until the Service is asked again; returns when, or `None` if not
/// before `deadline`. Keeps polling only until the first query.
fn watch_for_query(
    pods: &PodSet,
    queries_before: u64,
    deadline: Instant,
    interrupted: &AtomicBool,
) -> anyhow::Result<Option<Instant>> {
    while Instant::now() < deadline {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if pods.dns().stats().queries_for(pods.service()).total() > queries_before {
            return Ok(Some(Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(TICK_MS));
    }
    Ok(None)
}

fn sleep_until(deadline: Instant, interrupted: &AtomicBool) -> anyhow::Result<()> {
    loop {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(TICK_MS)));
    }
}

/// The load's windows as the checks' samples.
pub fn samples(report: &Report, window: Duration) -> Vec<Sample> {
    report
        .windows
        .iter()
        .map(|w| Sample {
            start: w.start,
            end: w.start + window,
            calls_ok: w.calls_ok,
            errors: w.errors,
            per_pod: w.per_pod.clone(),
        })
        .collect()
}

#[derive(Serialize)]
struct ScenarioJson<'a> {
    proxy: &'a str,
    command: &'a str,
    timeline: &'a [usize],
    step_s: f64,
    refresh_interval_ms: u64,
    phase_jitter: bool,
    respect_ttl: bool,
    ttl_s: u32,
    termination_grace_ms: u64,
    settle_s: f64,
    share_tolerance: f64,
    removal_slack_s: f64,
    passed: bool,
    calls_ok: u64,
    errors: u64,
    errors_by_kind: &'a std::collections::BTreeMap<String, u64>,
    steps: Vec<StepJson>,
    verdicts: Vec<VerdictJson>,
}

#[derive(Serialize)]
struct StepJson {
    step: usize,
    pods: Vec<String>,
    removed: Vec<String>,
    at_s: f64,
    end_s: f64,
    dns_query_after_s: Option<f64>,
    fair_after_s: Option<f64>,
    calls_ok: u64,
    errors: u64,
    calls_to_removed_after_visible: u64,
    shares: std::collections::BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct VerdictJson {
    check: &'static str,
    step: usize,
    passed: bool,
    detail: String,
}

/// Writes `report.txt` (table and verdicts), `scenario.json` (timeline, metrics, verdicts),
/// `load.json` and `chart.svg` (the load's report).
fn write_outputs(config: &ScenarioConfig, outcome: &Outcome) -> anyhow::Result<()> {
    let dir = &outcome.out_dir;
    outcome.report.write_json(dir.join("load.json"))?;
    outcome.report.write_chart_svg(dir.join("chart.svg"))?;
    let steps = outcome
        .steps
        .iter()
        .zip(&outcome.evaluation.steps)
        .enumerate()
        .map(|(index, (step, metrics))| StepJson {
            step: index,
            pods: step.live.clone(),
            removed: step.removed.clone(),
            at_s: step.at.as_secs_f64(),
            end_s: step.end.as_secs_f64(),
            dns_query_after_s: metrics.visible_after.map(|d| d.as_secs_f64()),
            fair_after_s: metrics.fair_after.map(|d| d.as_secs_f64()),
            calls_ok: metrics.calls_ok,
            errors: metrics.errors,
            calls_to_removed_after_visible: metrics.calls_to_removed_after_visible,
            shares: metrics.shares.clone(),
        })
        .collect();
    let json = ScenarioJson {
        proxy: config.proxy.label(),
        command: &outcome.command_line,
        timeline: &config.timeline,
        step_s: config.step.as_secs_f64(),
        refresh_interval_ms: config.refresh_interval_ms,
        phase_jitter: config.phase_jitter,
        respect_ttl: config.respect_ttl,
        ttl_s: config.ttl_s,
        termination_grace_ms: config.termination_grace_ms,
        settle_s: config.settle().as_secs_f64(),
        share_tolerance: config.share_tolerance,
        removal_slack_s: config.removal_slack().as_secs_f64(),
        passed: outcome.evaluation.passed(),
        calls_ok: outcome.report.calls_ok,
        errors: outcome.report.errors,
        errors_by_kind: &outcome.report.errors_by_kind,
        steps,
        verdicts: outcome
            .evaluation
            .verdicts
            .iter()
            .map(|v| VerdictJson {
                check: v.check.name(),
                step: v.step,
                passed: v.passed,
                detail: v.detail.clone(),
            })
            .collect(),
    };
    std::fs::write(
        dir.join("scenario.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join("report.txt"), summary(config, outcome))?;
    Ok(())
}

/// The human report: per-step metrics, verdicts, and the load's table.
pub fn summary(config: &ScenarioConfig, outcome: &Outcome) -> String {
    let mut text = format!(
        "scenario scale: {} with timeline {:?}, {} per step, DNS refresh {} ms{}, TTL {} s\n\
         proxy: {}\n\n",
        config.proxy.label(),
        config.timeline,
        checks::secs(config.step),
        config.refresh_interval_ms,
        if config.respect_ttl {
            " (respecting TTL)"
        } else {
            ""
        },
        config.ttl_s,
        outcome.command_line
    );
    text.push_str(
        "step  pods  change at  DNS asked after  fair after  calls ok  failed  to removed\n",
    );
    for (step, metrics) in outcome.steps.iter().zip(&outcome.evaluation.steps) {
        let optional = |d: Option<Duration>| d.map(checks::secs).unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "{:>4}  {:>4}  {:>9}  {:>15}  {:>10}  {:>8}  {:>6}  {:>10}\n",
            metrics.step,
            step.live.len(),
            checks::secs(step.at),
            optional(metrics.visible_after),
            optional(metrics.fair_after),
            metrics.calls_ok,
            metrics.errors,
            metrics.calls_to_removed_after_visible
        ));
    }
    text.push('\n');
    for verdict in &outcome.evaluation.verdicts {
        text.push_str(&format!("{verdict}\n"));
    }
    text.push_str(&format!(
        "\n{}\n\n{}",
        if outcome.evaluation.passed() {
            "PASSED".to_owned()
        } else {
            let failed: Vec<String> = outcome
                .evaluation
                .failures()
                .map(|v| format!("{} (step {})", v.check, v.step))
                .collect();
            format!("FAILED: {}", failed.join(", "))
        },
        outcome.report.table()
    ));
    text
}

/// Parses `3,6,2`.
pub fn parse_timeline(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|count| {
            count
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{count:?} is not a pod count (e.g. 3,6,2)"))
        })
        .collect()
}

/// Parses `10s`, `2.5s`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        (text, 1000.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms)"))?;
    let ms = value * unit_ms;
    if !(ms.is_finite() && ms >= 0.0 && ms <= STEP_MAX.as_millis() as f64) {
        return Err(format!("{text:?} is out of range (0 to {STEP_MAX:?})"));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "[scenario] {line}");
}

/// The output directory's default: `scenario-out/<proxy>`.
pub fn default_out_dir(proxy: &ProxyKind) -> PathBuf {
    Path::new("scenario-out").join(proxy.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_and_durations_parse_and_garbage_is_refused() {
        assert_eq!(parse_timeline("3,6,2"), Ok(vec![3, 6, 2]));
        assert_eq!(parse_timeline(" 1 "), Ok(vec![1]));
        assert!(parse_timeline("3,,2").is_err());
        assert!(parse_timeline("3,-1").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "s", "-1s", "1e30s", "NaNs", "inf", "10 minutes"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_that_cannot_be_judged_are_refused() {
        let ok = ScenarioConfig::new(ProxyKind::Cmd {
            template: "true".into(),
        });
        assert_eq!(ok.validate(), Ok(()));
        let mut short = ok.clone();
        short.step = Duration::from_secs(2);
        assert!(short
            .validate()
            .unwrap_err()
            .contains("leaves nothing to judge"));
        let mut empty = ok.clone();
        empty.timeline = vec![3, 0];
        assert!(empty.validate().is_err());
        let mut remote = ok.clone();
        remote.listen = "10.0.0.1:80".parse().unwrap();
        assert!(remote.validate().unwrap_err().contains("loopback"));
        let mut tolerance = ok;
        tolerance.share_tolerance = f64::NAN;
        assert!(tolerance.validate().is_err());
    }
}
