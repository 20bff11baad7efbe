//! Upstream discovery: turns `--upstream` targets (IP:port, or name:port for a Kubernetes
//! headless Service) into the endpoint set the workers balance over, and keeps it current.
//!
//! It exists because a headless Service is only a DNS name whose A/AAAA records are the ready
//! pods, and those change on every scale-up, scale-down and rollout. One dedicated control-plane
//! thread resolves each name (glibc's `resolv.conf` rules, see [`resolv_conf`]), re-resolves it on
//! an interval or its TTL, and publishes the union of all targets through
//! [`EndpointDirectory::publish`]. Workers never resolve DNS and never wait on this thread; they
//! read the published snapshot lock-free.
//!
//! Failure semantics, the part Envoy's `strict_dns` users trip over:
//! - a resolver error (timeout, SERVFAIL, REFUSED, network) keeps the target's last good set
//!   (serve stale) for at most `stale_max`, then drops it with an error log;
//! - only an authoritative answer with no addresses (NXDOMAIN for every candidate, or NODATA)
//!   empties the set at once, so calls fail fast with UNAVAILABLE instead of going to old pods;
//! - queries rotate their starting nameserver, so one dead server costs one timeout now and then,
//!   not one on every refresh;
//! - a connect refused by an endpoint in the set (reported by [`crate::refused`]) brings its
//!   target's next resolve forward, to at most one a second per target: a pod that stopped
//!   listening has usually been deleted, so its record is gone before the next scheduled refresh.
//!
//! Layout: [`resolv_conf`] (parser and candidate names), [`message`] (query encoding and reply
//! validation), [`state`] (per-target state, stale bound, refresh delays) are sans-IO;
//! [`resolver`] does the socket work; this file holds the public API and the loop.

pub mod message;
pub mod resolv_conf;
pub mod resolver;
pub mod state;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::rr::RecordType;
use tracing::{debug, error, info, warn};

use crate::endpoints::EndpointDirectory;
use resolv_conf::ResolvConf;
use resolver::{Failure, Resolution, Resolver, ResolverSettings};
use state::{Change, Outcome, RefreshPolicy, TargetState};

/// Most `--upstream` targets; each DNS target is resolved in turn on one thread.
pub const TARGETS_MAX: usize = 256;
/// Most `--dns-server` overrides (resolv.conf allows three; a few more do no harm).
pub const DNS_SERVERS_MAX: usize = 8;
/// Longest accepted duration setting. Far beyond any sensible value, and small enough that adding
/// it to an `Instant` cannot overflow (which would panic).
pub const DURATION_SETTING_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// One `--upstream` entry: a fixed socket address, or a name to resolve and keep resolving.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamTarget {
    Static(SocketAddr),
    /// `host` as given (a trailing dot makes it absolute); every resolved address gets `port`.
    Name {
        host: String,
        port: u16,
    },
}

/// Why an `--upstream` entry was rejected; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetParseError(String);

impl fmt::Display for TargetParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetParseError {}

impl FromStr for UpstreamTarget {
    type Err = TargetParseError;

    /// `10.0.0.1:9000`, `[::1]:9000` or `user-service:8080` (also `user-service.ns.svc.`).
    fn from_str(text: &str) -> Result<UpstreamTarget, TargetParseError> {
        let text = text.trim();
        let err = |message: String| Err(TargetParseError(message));
        if text.is_empty() {
            return err("empty upstream: expected IP:port, [IPv6]:port or name:port".into());
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return err(format!(
                    "upstream {text}: port 0 is not a port to connect to"
                ));
            }
            return Ok(UpstreamTarget::Static(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return err(format!("upstream {text:?} has no port: write {text}:PORT"));
        };
        if host.contains(':') || host.starts_with('[') {
            return err(if resolv_conf::is_ip_literal(text) {
                format!(
                    "upstream {text:?}: an IPv6 endpoint needs brackets and a port: [{text}]:PORT"
                )
            } else if text.parse::<IpAddr>().is_err() && host.parse::<IpAddr>().is_ok() {
                format!("upstream {text:?}: an IPv6 endpoint needs brackets: [{host}]:{port}")
            } else {
                format!("upstream {text:?}: expected IP:port, [IPv6]:port or name:port (no scheme, no path)")
            });
        }
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return err(format!(
                    "upstream {text:?}: port {port:?} is not in 1-65535"
                ))
            }
        };
        let bare = host.strip_suffix('.').unwrap_or(host);
        if !resolv_conf::is_valid_name(bare) {
            return err(format!(
                "upstream {text:?}: {host:?} is not a valid host name (labels of letters, digits, \
                 '-' or '_', at most 63 characters each and 253 in all)"
            ));
        }
        // A name's last label is never all digits; `10.0.0:80` or `300.1.1.1:80` is a mistyped
        // address, and querying DNS for it would only hide the typo.
        if bare
            .rsplit('.')
            .next()
            .is_some_and(|label| label.bytes().all(|b| b.is_ascii_digit()))
        {
            return err(format!(
                "upstream {text:?}: {host:?} is neither an IP address nor a host name"
            ));
        }
        Ok(UpstreamTarget::Name {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamTarget::Static(addr) => write!(f, "{addr}"),
            UpstreamTarget::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The static addresses among `targets`: what the endpoint directory can hold before the first
/// resolution, e.g. `EndpointDirectory::new(static_addresses(&targets))`.
pub fn static_addresses(targets: &[UpstreamTarget]) -> Vec<SocketAddr> {
    targets
        .iter()
        .filter_map(|t| match t {
            UpstreamTarget::Static(addr) => Some(*addr),
            UpstreamTarget::Name { .. } => None,
        })
        .collect()
}

/// Parse one `--dns-server` value: `IP` (port 53) or `IP:port` / `[IPv6]:port`.
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, resolv_conf::DNS_PORT),
            Err(_) => {
                return Err(format!(
                    "DNS server {text:?}: expected IP, IP:port or [IPv6]:port"
                ))
            }
        },
    };
    if addr.port() == 0 {
        return Err(format!("DNS server {text:?}: port 0"));
    }
    Ok(addr)
}

/// Which address records to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DnsFamily {
    /// A records only.
    V4,
    /// AAAA records only.
    V6,
    /// A and AAAA, as getaddrinfo does; works on IPv4-only, IPv6-only and dual-stack clusters.
    #[default]
    All,
}

impl DnsFamily {
    pub fn record_types(self) -> &'static [RecordType] {
        match self {
            DnsFamily::V4 => &[RecordType::A],
            DnsFamily::V6 => &[RecordType::AAAA],
            DnsFamily::All => &[RecordType::A, RecordType::AAAA],
        }
    }
}

/// Everything discovery needs; built by the lead's `Config` from the `--dns-*` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// In the order given; static and DNS targets may be mixed.
    pub targets: Vec<UpstreamTarget>,
    /// Replaces resolv.conf's nameservers when not empty (search and options still apply).
    pub dns_servers: Vec<SocketAddr>,
    pub family: DnsFamily,
    /// Re-resolve interval (Envoy's `dns_refresh_rate`, 5 s).
    pub refresh_interval: Duration,
    /// Re-resolve on the record TTL instead, clamped to [`ttl_min`, `ttl_max`].
    pub respect_ttl: bool,
    pub ttl_min: Duration,
    pub ttl_max: Duration,
    /// Each delay is shortened by a random part of up to this fraction, 0 to 1.
    pub jitter: f64,
    /// Longest time a target's last good set is served while resolution fails.
    pub stale_max: Duration,
    pub resolv_conf: PathBuf,
    /// Per-attempt timeout; `None` = resolv.conf's `timeout:` (glibc default 5 s).
    pub attempt_timeout: Option<Duration>,
    /// Rounds over the nameservers; `None` = resolv.conf's `attempts:` (glibc default 2).
    pub attempts: Option<u32>,
    /// Total time budget for resolving one target (all candidates, types, servers, attempts).
    pub resolve_timeout: Duration,
    /// How long [`spawn`] waits for the first resolution of every target before returning.
    pub startup_timeout: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            targets: Vec::new(),
            dns_servers: Vec::new(),
            family: DnsFamily::All,
            refresh_interval: Duration::from_millis(5000),
            respect_ttl: false,
            ttl_min: Duration::from_secs(1),
            ttl_max: Duration::from_secs(30),
            jitter: 0.1,
            stale_max: Duration::from_secs(300),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            attempt_timeout: None,
            attempts: None,
            resolve_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(5),
        }
    }
}

impl DiscoveryConfig {
    /// Reject settings that would make the loop spin, never resolve, or grow without bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("at least one upstream target is needed".into());
        }
        if self.targets.len() > TARGETS_MAX {
            return Err(format!("at most {TARGETS_MAX} upstream targets"));
        }
        if self.dns_servers.len() > DNS_SERVERS_MAX {
            return Err(format!("at most {DNS_SERVERS_MAX} DNS servers"));
        }
        if self.refresh_interval < state::DELAY_MIN {
            return Err(format!(
                "DNS refresh interval must be at least {} ms",
                state::DELAY_MIN.as_millis()
            ));
        }
        if self.ttl_min > self.ttl_max {
            return Err("DNS TTL minimum is above the maximum".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("DNS jitter must be a fraction from 0 to 1".into());
        }
        if self.resolve_timeout.is_zero() || self.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err("DNS timeouts must be above zero".into());
        }
        let durations = [
            self.refresh_interval,
            self.ttl_min,
            self.ttl_max,
            self.stale_max,
            self.resolve_timeout,
            self.startup_timeout,
            self.attempt_timeout.unwrap_or_default(),
        ];
        if durations.iter().any(|d| *d > DURATION_SETTING_MAX) {
            return Err("DNS durations must be at most 365 days".into());
        }
        if self
            .attempts
            .is_some_and(|n| n == 0 || n > resolv_conf::ATTEMPTS_MAX)
        {
            return Err(format!(
                "DNS attempts must be 1 to {}",
                resolv_conf::ATTEMPTS_MAX
            ));
        }
        Ok(())
    }

    fn policy(&self) -> RefreshPolicy {
        RefreshPolicy {
            refresh_interval: self.refresh_interval,
            respect_ttl: self.respect_ttl,
            ttl_min: self.ttl_min,
            ttl_max: self.ttl_max,
            jitter: self.jitter,
            stale_max: self.stale_max,
        }
    }
}

/// One target as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub target: UpstreamTarget,
    /// What this target contributes to the endpoint set now.
    pub addresses: Vec<SocketAddr>,
    /// Bumped on each change of `addresses` (0 for a static target).
    pub generation: u64,
    /// The candidate name that last answered with addresses, e.g. `api.default.svc.cluster.local.`.
    pub resolved_name: Option<String>,
    /// Wall-clock time of the last successful resolution (addresses or an authoritative empty).
    pub last_success: Option<SystemTime>,
    /// The last resolver error, kept after recovery so a flapping target is visible.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Serving the last good set while resolution fails.
    pub stale: bool,
    /// Resolves brought forward because an endpoint of this target refused a connect.
    pub early_refreshes: u64,
}

/// Discovery as the admin page shows it: one immutable snapshot, replaced after each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryStatus {
    /// The [`EndpointDirectory`] generation last published.
    pub endpoints_generation: u64,
    pub targets: Vec<TargetStatus>,
}

/// A cloneable, lock-free reader of the latest [`DiscoveryStatus`].
#[derive(Debug, Clone)]
pub struct StatusReader(Arc<ArcSwap<DiscoveryStatus>>);

impl StatusReader {
    pub fn load(&self) -> Arc<DiscoveryStatus> {
        self.0.load_full()
    }
}

/// The running discovery thread. Dropping it (or [`DiscoveryHandle::shutdown`]) stops the thread
/// and joins it; an in-flight query is abandoned within about 100 ms.
#[derive(Debug)]
pub struct DiscoveryHandle {
    status: StatusReader,
    cancel: Arc<AtomicBool>,
    wake: Option<mpsc::Sender<Wake>>,
    thread: Option<JoinHandle<()>>,
}

/// What wakes the discovery thread before its next refresh is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Stop,
    /// A connect to this endpoint was refused: re-resolve its target early.
    Refused(SocketAddr),
}

/// Asks the discovery thread for early re-resolves; held by the control plane's refusal
/// tracker ([`crate::refused`]). Sending never waits.
#[derive(Debug, Clone)]
pub struct RefreshRequester(mpsc::Sender<Wake>);

impl RefreshRequester {
    /// `addr` refused a connect: resolve the targets it came from again, soon.
    pub fn endpoint_refused(&self, addr: SocketAddr) {
        let _ = self.0.send(Wake::Refused(addr));
    }
}

impl DiscoveryHandle {
    pub fn status(&self) -> Arc<DiscoveryStatus> {
        self.status.load()
    }

    /// A reader the admin page can keep after the handle moved elsewhere.
    pub fn status_reader(&self) -> StatusReader {
        self.status.clone()
    }

    /// A way to ask for early re-resolves; `None` when every target is static (no thread).
    pub fn refresh_requester(&self) -> Option<RefreshRequester> {
        self.wake.clone().map(RefreshRequester)
    }

    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        // An explicit message, since requesters may still hold senders of the same channel.
        if let Some(wake) = self.wake.take() {
            let _ = wake.send(Wake::Stop);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                error!("discovery thread panicked");
            }
        }
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Start discovery for `config.targets`, publishing into `directory`.
///
/// Static targets are published as they are. DNS targets are resolved once before this returns,
/// for at most `config.startup_timeout`, so that the proxy does not start with an empty set when
/// DNS works; resolution then continues in the background on the `ringway-discovery` thread.
pub fn spawn(
    config: DiscoveryConfig,
    directory: Arc<EndpointDirectory>,
) -> io::Result<DiscoveryHandle> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let mut control = Control::new(&config, directory, cancel.clone());
    let status = StatusReader(control.status.clone());
    if !control.has_dns_targets() {
        control.publish(None);
        return Ok(DiscoveryHandle {
            status,
            cancel,
            wake: None,
            thread: None,
        });
    }
    let (wake_tx, wake_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("ringway-discovery".into())
        .spawn(move || control.run(&wake_rx, &ready_tx))?;
    let handle = DiscoveryHandle {
        status,
        cancel,
        wake: Some(wake_tx),
        thread: Some(thread),
    };
    if ready_rx.recv_timeout(config.startup_timeout).is_err() {
        warn!(
            startup_timeout_ms = config.startup_timeout.as_millis() as u64,
            "first DNS resolution still running; starting with the endpoints known so far"
        );
    }
    Ok(handle)
}

/// A random 64-bit value for query ids, the rotation start and jitter.
///
/// std's `RandomState` is keyed from the OS random source, and SipHash is a keyed PRF, so hashing
/// a counter yields values an off-path attacker cannot predict; this avoids a `rand` dependency
/// for the few values discovery needs.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Uniform in [0, 1).
fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A DNS target and its state on the discovery thread.
#[derive(Debug)]
struct DnsTarget {
    host: String,
    port: u16,
    state: TargetState,
    resolved_name: Option<String>,
    due: Instant,
    /// When the last resolve began, which spaces early re-resolves.
    last_resolve: Option<Instant>,
    early_refreshes: u64,
}

#[derive(Debug)]
enum Entry {
    Static(SocketAddr),
    Dns(DnsTarget),
}

/// The discovery thread's state. Owned by that thread alone; others see only what it publishes
/// into the directory and the status snapshot.
struct Control {
    entries: Vec<Entry>,
    policy: RefreshPolicy,
    family: DnsFamily,
    dns_servers: Vec<SocketAddr>,
    attempt_timeout: Option<Duration>,
    attempts: Option<u32>,
    resolve_timeout: Duration,
    resolv_conf: ResolvConfSource,
    resolver: Resolver,
    directory: Arc<EndpointDirectory>,
    status: Arc<ArcSwap<DiscoveryStatus>>,
    cancel: Arc<AtomicBool>,
}

impl Control {
    fn new(
        config: &DiscoveryConfig,
        directory: Arc<EndpointDirectory>,
        cancel: Arc<AtomicBool>,
    ) -> Control {
        let now = Instant::now();
        let entries = config
            .targets
            .iter()
            .map(|target| match target {
                UpstreamTarget::Static(addr) => Entry::Static(*addr),
                UpstreamTarget::Name { host, port } => Entry::Dns(DnsTarget {
                    host: host.clone(),
                    port: *port,
                    state: TargetState::default(),
                    resolved_name: None,
                    due: now,
                    last_resolve: None,
                    early_refreshes: 0,
                }),
            })
            .collect();
        let control = Control {
            entries,
            policy: config.policy(),
            family: config.family,
            dns_servers: config.dns_servers.clone(),
            attempt_timeout: config.attempt_timeout,
            attempts: config.attempts,
            resolve_timeout: config.resolve_timeout,
            resolv_conf: ResolvConfSource::new(&config.resolv_conf),
            resolver: Resolver::new(),
            status: Arc::new(ArcSwap::from_pointee(DiscoveryStatus {
                endpoints_generation: directory.snapshot().generation,
                targets: Vec::new(),
            })),
            directory,
            cancel,
        };
        control.update_status();
        info!(
            targets = ?config.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            dns_servers = ?config.dns_servers,
            family = ?config.family,
            refresh_interval_ms = config.refresh_interval.as_millis() as u64,
            respect_ttl = config.respect_ttl,
            stale_max_ms = config.stale_max.as_millis() as u64,
            "upstream discovery configured (an empty dns_servers list means resolv.conf's)"
        );
        control
    }

    fn has_dns_targets(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Dns(_)))
    }

    fn run(mut self, wake: &mpsc::Receiver<Wake>, ready: &mpsc::SyncSender<()>) {
        self.refresh_due(Instant::now());
        // Publish even when no target changed, so the directory holds exactly the union of the
        // targets (static ones included) from the first round on.
        self.publish(None);
        let _ = ready.try_send(());
        loop {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            match wake.recv_timeout(wait) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(Wake::Refused(addr)) => self.endpoint_refused(addr, Instant::now()),
                // A stop message or the handle gone: either way, stop.
                Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            self.expire_stale(now);
            self.refresh_due(now);
        }
    }

    /// The earliest instant something is due: a refresh or a stale set's expiry.
    fn next_wake(&self) -> Instant {
        let stale_max = self.policy.stale_max;
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Dns(t) => Some(
                    t.state
                        .stale_deadline(stale_max)
                        .map_or(t.due, |d| d.min(t.due)),
                ),
                Entry::Static(_) => None,
            })
            .min()
            .unwrap_or_else(|| Instant::now() + self.policy.refresh_interval)
    }

    /// Bring forward the next resolve of every DNS target that `addr` came from.
    fn endpoint_refused(&mut self, addr: SocketAddr, now: Instant) {
        for entry in &mut self.entries {
            let Entry::Dns(target) = entry else {
                continue;
            };
            if target.port != addr.port() || !target.state.addresses.contains(&addr.ip()) {
                continue;
            }
            if let Some(at) = state::early_refresh_at(now, target.last_resolve, target.due) {
                debug!(host = %target.host, endpoint = %addr, "endpoint refused a connect; re-resolving early");
                target.due = at;
                target.early_refreshes += 1;
            }
        }
    }

    fn refresh_due(&mut self, now: Instant) {
        for index in 0..self.entries.len() {
            let due = matches!(&self.entries[index], Entry::Dns(t) if t.due <= now);
            if due && !self.cancel.load(Ordering::Relaxed) {
                self.refresh(index);
            }
        }
    }

    /// Resolve one DNS target, apply the outcome, publish if its addresses changed.
    fn refresh(&mut self, index: usize) {
        let Entry::Dns(target) = &self.entries[index] else {
            return;
        };
        let conf = self.resolv_conf.current();
        let settings = ResolverSettings {
            nameservers: if self.dns_servers.is_empty() {
                conf.nameservers.clone()
            } else {
                self.dns_servers.clone()
            },
            attempt_timeout: self
                .attempt_timeout
                .unwrap_or(Duration::from_secs(u64::from(conf.timeout_s))),
            attempts: self.attempts.unwrap_or(conf.attempts),
        };
        let candidates = resolv_conf::candidates(&target.host, conf);
        let started = Instant::now();
        let deadline = started + self.resolve_timeout;
        let result = self.resolver.resolve(
            &candidates,
            self.family.record_types(),
            &settings,
            deadline,
            &self.cancel,
        );
        let Entry::Dns(target) = &mut self.entries[index] else {
            return;
        };
        target.last_resolve = Some(started);
        let outcome = match result {
            Ok(Resolution::Addresses { name, ips, ttl_s }) => {
                debug!(host = %target.host, %name, addresses = ips.len(), ttl_s, "resolved");
                target.resolved_name = Some(name);
                Outcome::Addresses { ips, ttl_s }
            }
            Ok(Resolution::Empty { negative_ttl_s }) => {
                debug!(host = %target.host, ?candidates, "no addresses for any candidate");
                Outcome::Empty { negative_ttl_s }
            }
            Err(e) if e.reason == Failure::Cancelled => return,
            Err(e) => {
                warn!(
                    target = %format_args!("{}:{}", target.host, target.port),
                    nameserver = %e.server.map_or_else(|| "none".into(), |s| s.to_string()),
                    error = %e,
                    consecutive_failures = target.state.consecutive_failures + 1,
                    serving_stale = target.state.addresses.len(),
                    "DNS resolution failed; the last good endpoints stay until stale_max"
                );
                Outcome::Failed {
                    error: e.to_string(),
                }
            }
        };
        let now = Instant::now();
        let change = target.state.apply(&outcome, now, SystemTime::now());
        target.due = now
            + target
                .state
                .next_delay(&outcome, &self.policy, random_unit());
        if change.is_empty() {
            self.update_status();
        } else {
            self.publish(Some((index, change)));
        }
    }

    /// Drop the sets that have been served stale for longer than `stale_max`.
    fn expire_stale(&mut self, now: Instant) {
        for index in 0..self.entries.len() {
            let Entry::Dns(target) = &mut self.entries[index] else {
                continue;
            };
            let change = target.state.expire_stale(now, self.policy.stale_max);
            if change.is_empty() {
                continue;
            }
            error!(
                target = %format_args!("{}:{}", target.host, target.port),
                stale_max_ms = self.policy.stale_max.as_millis() as u64,
                last_error = target.state.last_error.as_deref().unwrap_or(""),
                removed = ?change.removed,
                "DNS has failed for longer than stale_max: dropping this target's endpoints"
            );
            self.publish(Some((index, change)));
        }
    }

    /// Publish the union of every target's addresses; log `change` (of entry `index`) with the
    /// generation it produced.
    fn publish(&mut self, change: Option<(usize, Change)>) {
        let union: Vec<SocketAddr> = self.entries.iter().flat_map(entry_addresses).collect();
        let generation = self.directory.publish(union);
        if let Some((index, change)) = change {
            if let Entry::Dns(target) = &self.entries[index] {
                info!(
                    target = %format_args!("{}:{}", target.host, target.port),
                    added = ?change.added,
                    removed = ?change.removed,
                    target_addresses = target.state.addresses.len(),
                    endpoints = self.directory.snapshot().endpoints.len(),
                    generation,
                    "upstream membership changed"
                );
            }
        }
        self.update_status();
    }

    fn update_status(&self) {
        let targets = self
            .entries
            .iter()
            .map(|entry| match entry {
                Entry::Static(addr) => TargetStatus {
                    target: UpstreamTarget::Static(*addr),
                    addresses: vec![*addr],
                    generation: 0,
                    resolved_name: None,
                    last_success: None,
                    last_error: None,
                    consecutive_failures: 0,
                    stale: false,
                    early_refreshes: 0,
                },
                Entry::Dns(t) => TargetStatus {
                    target: UpstreamTarget::Name {
                        host: t.host.clone(),
                        port: t.port,
                    },
                    addresses: entry_addresses(entry).collect(),
                    generation: t.state.generation,
                    resolved_name: t.resolved_name.clone(),
                    last_success: t.state.last_success,
                    last_error: t.state.last_error.clone(),
                    consecutive_failures: t.state.consecutive_failures,
                    stale: t.state.is_stale(),
                    early_refreshes: t.early_refreshes,
                },
            })
            .collect();
        self.status.store(Arc::new(DiscoveryStatus {
            endpoints_generation: self.directory.snapshot().generation,
            targets,
        }));
    }
}

fn entry_addresses(entry: &Entry) -> Box<dyn Iterator<Item = SocketAddr> + '_> {
    match entry {
        Entry::Static(addr) => Box::new(std::iter::once(*addr)),
        Entry::Dns(t) => Box::new(
            t.state
                .addresses
                .iter()
                .map(move |ip| SocketAddr::new(*ip, t.port)),
        ),
    }
}

/// resolv.conf, re-read when its modification time changes (as glibc 2.26+ does), plus the
/// `LOCALDOMAIN` and `RES_OPTIONS` environment overrides glibc honours, read once at start.
struct ResolvConfSource {
    path: PathBuf,
    modified: Option<SystemTime>,
    loaded: bool,
    conf: ResolvConf,
    local_domain: Option<String>,
    res_options: Option<String>,
}

impl ResolvConfSource {
    fn new(path: &Path) -> ResolvConfSource {
        ResolvConfSource {
            path: path.to_path_buf(),
            modified: None,
            loaded: false,
            conf: ResolvConf::default(),
            local_domain: std::env::var("LOCALDOMAIN").ok(),
            res_options: std::env::var("RES_OPTIONS").ok(),
        }
    }

    fn current(&mut self) -> &ResolvConf {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if self.loaded && modified == self.modified {
            return &self.conf;
        }
        self.loaded = true;
        self.modified = modified;
        let mut conf = match read_bounded(&self.path) {
            Ok(bytes) => ResolvConf::parse(&bytes),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read resolv.conf; using glibc defaults");
                ResolvConf::default()
            }
        };
        if let Some(domains) = &self.local_domain {
            conf.set_search(domains);
        }
        if let Some(options) = &self.res_options {
            conf.apply_options(options);
        }
        info!(
            path = %self.path.display(),
            nameservers = ?conf.nameservers,
            search = ?conf.search,
            ndots = conf.ndots,
            timeout_s = conf.timeout_s,
            attempts = conf.attempts,
            "resolv.conf loaded"
        );
        self.conf = conf;
        &self.conf
    }
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(resolv_conf::FILE_BYTES_MAX as u64)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UpstreamTarget, String> {
        text.parse::<UpstreamTarget>().map_err(|e| e.to_string())
    }

    fn name(host: &str, port: u16) -> UpstreamTarget {
        UpstreamTarget::Name {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn targets_static_and_names() {
        assert_eq!(
            parse("127.0.0.1:9001"),
            Ok(UpstreamTarget::Static("127.0.0.1:9001".parse().unwrap()))
        );
        assert_eq!(
            parse(" [::1]:9000 "),
            Ok(UpstreamTarget::Static("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(parse("user-service:8080"), Ok(name("user-service", 8080)));
        assert_eq!(
            parse("api.prod.svc.cluster.local.:50051"),
            Ok(name("api.prod.svc.cluster.local.", 50051))
        );
        assert_eq!(
            parse("user-service:8080").unwrap().to_string(),
            "user-service:8080"
        );
        assert_eq!(parse("[::1]:9000").unwrap().to_string(), "[::1]:9000");
    }

    #[test]
    fn target_errors_say_what_to_write() {
        let cases = [
            ("", "empty upstream"),
            ("user-service", "has no port: write user-service:PORT"),
            ("10.0.0.1", "has no port: write 10.0.0.1:PORT"),
            ("::1", "needs brackets and a port: [::1]:PORT"),
            ("2001:db8::1:9000", "needs brackets and a port"),
            ("fe80::1%eth0:53", "expected IP:port"),
            ("http://api:80", "no scheme"),
            ("[::1]", "expected IP:port"),
            ("api:0", "port \"0\" is not in 1-65535"),
            ("127.0.0.1:0", "port 0"),
            ("api:65536", "not in 1-65535"),
            ("api:http", "not in 1-65535"),
            ("api:", "not in 1-65535"),
            (":80", "not a valid host name"),
            ("a..b:80", "not a valid host name"),
            ("a b:80", "not a valid host name"),
            ("10.0.0:80", "neither an IP address nor a host name"),
            ("300.1.1.1:80", "neither an IP address nor a host name"),
        ];
        for (input, expected) in cases {
            match parse(input) {
                Err(message) => assert!(message.contains(expected), "{input:?}: {message}"),
                Ok(target) => panic!("{input:?} parsed as {target:?}"),
            }
        }
        let long = format!("{}:80", "a".repeat(64));
        assert!(parse(&long).is_err());
    }

    /// The flags as the lead's `Config` would declare them: clap must take these types as they are.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9000")]
        upstream: Vec<UpstreamTarget>,
        #[arg(long, value_delimiter = ',', value_parser = parse_dns_server)]
        dns_server: Vec<SocketAddr>,
        #[arg(long, value_enum, default_value_t = DnsFamily::All)]
        dns_family: DnsFamily,
    }

    #[test]
    fn clap_takes_the_types_as_flags() {
        use clap::Parser;
        let flags = Flags::try_parse_from([
            "ringway",
            "--upstream",
            "user-service:8080,127.0.0.1:9001,[::1]:9000",
            "--dns-server",
            "10.96.0.10,127.0.0.1:5353",
            "--dns-family",
            "v4",
        ])
        .unwrap();
        assert_eq!(flags.upstream[0], name("user-service", 8080));
        assert_eq!(flags.upstream.len(), 3);
        assert_eq!(flags.dns_server[0], "10.96.0.10:53".parse().unwrap());
        assert_eq!(flags.dns_family, DnsFamily::V4);
        let defaults = Flags::try_parse_from(["ringway"]).unwrap();
        assert!(defaults.dns_server.is_empty());
        assert_eq!(defaults.dns_family, DnsFamily::All);
        let error = Flags::try_parse_from(["ringway", "--upstream", "api"]).unwrap_err();
        assert!(
            error.to_string().contains("has no port: write api:PORT"),
            "{error}"
        );
    }

    #[test]
    fn dns_server_values() {
        assert_eq!(
            parse_dns_server("10.96.0.10"),
            Ok("10.96.0.10:53".parse().unwrap())
        );
        assert_eq!(
            parse_dns_server("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_dns_server("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_dns_server("[::1]:5353"),
            Ok("[::1]:5353".parse().unwrap())
        );
        assert!(parse_dns_server("dns.example").is_err());
        assert!(parse_dns_server("10.0.0.1:0").is_err());
        assert!(parse_dns_server("").is_err());
    }

    #[test]
    fn config_validation() {
        let ok = DiscoveryConfig {
            targets: vec![name("api", 80)],
            ..DiscoveryConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            DiscoveryConfig {
                targets: vec![],
                ..ok.clone()
            },
            DiscoveryConfig {
                refresh_interval: Duration::ZERO,
                ..ok.clone()
            },
            DiscoveryConfig {
                ttl_min: Duration::from_secs(10),
                ttl_max: Duration::from_secs(1),
                ..ok.clone()
            },
            DiscoveryConfig {
                jitter: f64::NAN,
                ..ok.clone()
            },
            DiscoveryConfig {
                jitter: 1.5,
                ..ok.clone()
            },
            DiscoveryConfig {
                attempts: Some(0),
                ..ok.clone()
            },
            DiscoveryConfig {
                attempt_timeout: Some(Duration::ZERO),
                ..ok.clone()
            },
            DiscoveryConfig {
                stale_max: Duration::from_millis(u64::MAX),
                ..ok.clone()
            },
            DiscoveryConfig {
                dns_servers: vec!["10.0.0.1:53".parse().unwrap(); DNS_SERVERS_MAX + 1],
                ..ok.clone()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn static_only_publishes_without_a_thread() {
        let directory = Arc::new(EndpointDirectory::new(vec![]));
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: SocketAddr = "[::1]:9000".parse().unwrap();
        let config = DiscoveryConfig {
            targets: vec![UpstreamTarget::Static(a), UpstreamTarget::Static(b)],
            ..DiscoveryConfig::default()
        };
        assert_eq!(static_addresses(&config.targets), [a, b]);
        let handle = spawn(config, directory.clone()).unwrap();
        assert_eq!(directory.snapshot().endpoints, vec![a, b]);
        let status = handle.status();
        assert_eq!(status.targets.len(), 2);
        assert_eq!(status.endpoints_generation, directory.snapshot().generation);
        handle.shutdown();
    }

    #[test]
    fn random_values_differ_and_unit_is_in_range() {
        let values: std::collections::HashSet<u64> = (0..1000).map(|_| random_u64()).collect();
        assert_eq!(values.len(), 1000);
        assert!((0..1000)
            .map(|_| random_unit())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
