//! What one DNS target's endpoints are after each resolve, and when to resolve it next.
//!
//! Sans-IO: outcomes and instants in, address changes and delays out, so the serve-stale bound,
//! the TTL clamp and the failure back-off are unit-tested without a clock or a socket. The rules:
//! addresses change only on a successful answer; a failure keeps the last good set for at most
//! `stale_max`, counted from the first failure of the current run of failures (the moment the
//! data became overdue), then drops it; an authoritative "no such name / no addresses" empties it
//! at once.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// Shortest delay between two resolves of one target, whatever the TTL, jitter or flags say, so
/// that a TTL of zero cannot make the control plane spin.
pub const DELAY_MIN: Duration = Duration::from_millis(10);
/// First retry after a failure; each further failure doubles it, up to the refresh interval.
/// Quick first retries shorten the time spent serving stale data after a single lost packet.
pub const FAILURE_RETRY_FIRST: Duration = Duration::from_millis(250);

/// Shortest time between two resolves of one target when the earlier one was asked for by a
/// refused connect ([`early_refresh_at`]): a scale-down refuses many connects at once, and one
/// query soon after it tells everything a burst of them would.
pub const EARLY_REFRESH_SPACING_MIN: Duration = Duration::from_millis(1000);

/// When a target should be re-resolved after one of its endpoints refused a connect at `now`:
/// at once, or `EARLY_REFRESH_SPACING_MIN` after the last resolve began (`last_resolve`),
/// whichever is later. `None` when the resolve already due (`due`) comes no later than that,
/// so a burst of refusals moves the next resolve at most once.
pub fn early_refresh_at(
    now: Instant,
    last_resolve: Option<Instant>,
    due: Instant,
) -> Option<Instant> {
    let at = last_resolve.map_or(now, |last| (last + EARLY_REFRESH_SPACING_MIN).max(now));
    (at < due).then_some(at)
}

/// How often to refresh, and how long stale data may be served.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshPolicy {
    pub refresh_interval: Duration,
    pub respect_ttl: bool,
    pub ttl_min: Duration,
    pub ttl_max: Duration,
    /// Each delay is shortened by a random part of up to this fraction (0 to 1), so replicas and
    /// targets spread their queries, and a TTL is never overstayed.
    pub jitter: f64,
    pub stale_max: Duration,
}

/// How a resolve of one target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Addresses {
        ips: Vec<IpAddr>,
        ttl_s: u32,
    },
    /// Authoritatively no addresses (NXDOMAIN or NODATA for every candidate).
    Empty {
        negative_ttl_s: Option<u32>,
    },
    /// A resolver error (timeout, SERVFAIL, REFUSED, network): nothing is known.
    Failed {
        error: String,
    },
}

/// Addresses that entered and left a target's set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// One DNS target's state, owned by the discovery thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetState {
    /// Sorted and deduplicated.
    pub addresses: Vec<IpAddr>,
    /// Bumped each time `addresses` changes.
    pub generation: u64,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Start of the current run of failures; `None` while the last resolve succeeded.
    pub failing_since: Option<Instant>,
}

impl TargetState {
    /// Apply a resolve outcome observed at `now` (`wall` for the status page). Call
    /// [`TargetState::next_delay`] after this, so the back-off counts this failure.
    pub fn apply(&mut self, outcome: &Outcome, now: Instant, wall: SystemTime) -> Change {
        match outcome {
            Outcome::Addresses { ips, .. } => {
                let mut ips = ips.clone();
                ips.sort_unstable();
                ips.dedup();
                self.succeeded(wall);
                self.replace(ips)
            }
            Outcome::Empty { .. } => {
                self.succeeded(wall);
                self.replace(Vec::new())
            }
            Outcome::Failed { error } => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = Some(error.clone());
                self.failing_since.get_or_insert(now);
                Change::default()
            }
        }
    }

    /// When the addresses kept through failures must be dropped, if that is pending.
    pub fn stale_deadline(&self, stale_max: Duration) -> Option<Instant> {
        match self.failing_since {
            // An unrepresentable deadline is one that never comes.
            Some(since) if !self.addresses.is_empty() => since.checked_add(stale_max),
            _ => None,
        }
    }

    /// Whether the addresses are being served although resolution is failing.
    pub fn is_stale(&self) -> bool {
        self.failing_since.is_some() && !self.addresses.is_empty()
    }

    /// Drop the addresses if they have been served stale for `stale_max`; the change, if any.
    pub fn expire_stale(&mut self, now: Instant, stale_max: Duration) -> Change {
        match self.stale_deadline(stale_max) {
            Some(deadline) if now >= deadline => self.replace(Vec::new()),
            _ => Change::default(),
        }
    }

    /// The delay before the next resolve, after `outcome`. `random` is uniform in [0, 1).
    pub fn next_delay(&self, outcome: &Outcome, policy: &RefreshPolicy, random: f64) -> Duration {
        let base = match outcome {
            Outcome::Addresses { ttl_s, .. } => policy.ttl_delay(Some(*ttl_s)),
            Outcome::Empty { negative_ttl_s } => policy.ttl_delay(*negative_ttl_s),
            Outcome::Failed { .. } => policy.failure_delay(self.consecutive_failures),
        };
        policy.jittered(base, random)
    }

    fn succeeded(&mut self, wall: SystemTime) {
        self.last_success = Some(wall);
        self.consecutive_failures = 0;
        self.failing_since = None;
    }

    fn replace(&mut self, addresses: Vec<IpAddr>) -> Change {
        let change = Change {
            added: difference(&addresses, &self.addresses),
            removed: difference(&self.addresses, &addresses),
        };
        if !change.is_empty() {
            self.addresses = addresses;
            self.generation += 1;
        }
        change
    }
}

impl RefreshPolicy {
    /// The refresh interval, or with `respect_ttl` the record TTL clamped to
    /// [`ttl_min`, `ttl_max`] (the interval when the answer carried no TTL).
    pub fn ttl_delay(&self, ttl_s: Option<u32>) -> Duration {
        match ttl_s {
            Some(ttl_s) if self.respect_ttl => Duration::from_secs(u64::from(ttl_s))
                .clamp(self.ttl_min, self.ttl_max.max(self.ttl_min)),
            _ => self.refresh_interval,
        }
    }

    /// Back-off after `failures` consecutive failures: [`FAILURE_RETRY_FIRST`], doubling, capped at
    /// the refresh interval.
    pub fn failure_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        (FAILURE_RETRY_FIRST * (1 << doublings)).min(self.refresh_interval)
    }

    /// `base` shortened by up to `jitter` of itself, never below [`DELAY_MIN`].
    pub fn jittered(&self, base: Duration, random: f64) -> Duration {
        // `mul_f64` panics on NaN, so a non-finite jitter counts as none.
        let cut = self.jitter * random;
        let cut = if cut.is_finite() {
            cut.clamp(0.0, 1.0)
        } else {
            0.0
        };
        base.mul_f64(1.0 - cut).max(DELAY_MIN)
    }
}

/// Elements of sorted `a` not in sorted `b`.
fn difference(a: &[IpAddr], b: &[IpAddr]) -> Vec<IpAddr> {
    a.iter()
        .filter(|ip| b.binary_search(ip).is_err())
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn policy() -> RefreshPolicy {
        RefreshPolicy {
            refresh_interval: Duration::from_secs(5),
            respect_ttl: false,
            ttl_min: Duration::from_secs(1),
            ttl_max: Duration::from_secs(60),
            jitter: 0.0,
            stale_max: Duration::from_secs(30),
        }
    }

    fn addresses(ips: &[u8]) -> Outcome {
        Outcome::Addresses {
            ips: ips.iter().map(|i| ip(*i)).collect(),
            ttl_s: 5,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            error: "a. A via 10.0.0.53:53: timed out".into(),
        }
    }

    #[test]
    fn changes_are_reported_and_bump_generation() {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut state = TargetState::default();
        let change = state.apply(&addresses(&[3, 1, 1]), t0, wall);
        assert_eq!(change.added, [ip(1), ip(3)]);
        assert_eq!(state.generation, 1);
        let change = state.apply(&addresses(&[1, 3]), t0, wall);
        assert!(change.is_empty());
        assert_eq!(state.generation, 1);
        let change = state.apply(&addresses(&[1, 2]), t0, wall);
        assert_eq!(
            change,
            Change {
                added: vec![ip(2)],
                removed: vec![ip(3)]
            }
        );
        assert_eq!(state.generation, 2);
        assert_eq!(state.last_success, Some(wall));
    }

    #[test]
    fn failure_keeps_the_set_until_stale_max_then_drops_it() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let stale_max = policy().stale_max;
        let mut state = TargetState::default();
        state.apply(&addresses(&[1, 2]), t0, wall);

        let t1 = t0 + Duration::from_secs(100);
        assert!(state.apply(&failed(), t1, wall).is_empty());
        assert_eq!(state.addresses, [ip(1), ip(2)]);
        assert!(state.is_stale());
        assert_eq!(state.consecutive_failures, 1);
        // Counted from the first failure, not from the last success 100 s earlier.
        assert_eq!(state.stale_deadline(stale_max), Some(t1 + stale_max));
        state.apply(&failed(), t1 + Duration::from_secs(10), wall);
        assert_eq!(state.stale_deadline(stale_max), Some(t1 + stale_max));
        assert!(state
            .expire_stale(t1 + stale_max - Duration::from_millis(1), stale_max)
            .is_empty());

        let change = state.expire_stale(t1 + stale_max, stale_max);
        assert_eq!(change.removed, [ip(1), ip(2)]);
        assert!(state.addresses.is_empty());
        assert_eq!(state.stale_deadline(stale_max), None);
        assert_eq!(state.consecutive_failures, 2);

        // Recovery resets the failure run.
        let change = state.apply(&addresses(&[2]), t1 + stale_max, wall);
        assert_eq!(change.added, [ip(2)]);
        assert_eq!((state.consecutive_failures, state.failing_since), (0, None));
        assert!(!state.is_stale());
        assert!(state.last_error.is_some(), "the last error stays visible");
    }

    #[test]
    fn authoritative_empty_clears_at_once() {
        let t0 = Instant::now();
        let mut state = TargetState::default();
        state.apply(&addresses(&[1]), t0, SystemTime::now());
        state.apply(&failed(), t0, SystemTime::now());
        let change = state.apply(
            &Outcome::Empty {
                negative_ttl_s: Some(5),
            },
            t0,
            SystemTime::now(),
        );
        assert_eq!(change.removed, [ip(1)]);
        assert!(state.addresses.is_empty());
        assert_eq!(state.consecutive_failures, 0);
    }

    #[test]
    fn ttl_is_ignored_unless_respected_then_clamped() {
        let mut p = policy();
        assert_eq!(p.ttl_delay(Some(0)), Duration::from_secs(5));
        p.respect_ttl = true;
        assert_eq!(p.ttl_delay(Some(0)), Duration::from_secs(1));
        assert_eq!(p.ttl_delay(Some(30)), Duration::from_secs(30));
        assert_eq!(p.ttl_delay(Some(u32::MAX)), Duration::from_secs(60));
        assert_eq!(p.ttl_delay(None), Duration::from_secs(5));
        // A misordered pair must not panic (Duration::clamp asserts min <= max).
        p.ttl_max = Duration::ZERO;
        assert_eq!(p.ttl_delay(Some(30)), Duration::from_secs(1));
    }

    #[test]
    fn failure_backoff_doubles_up_to_the_interval() {
        let p = policy();
        let delays: Vec<_> = (1..=7).map(|n| p.failure_delay(n).as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(p.failure_delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(p.failure_delay(0), Duration::from_millis(250));
    }

    #[test]
    fn jitter_only_shortens_and_has_a_floor() {
        let mut p = policy();
        p.jitter = 0.2;
        let base = Duration::from_secs(10);
        assert_eq!(p.jittered(base, 0.0), base);
        assert_eq!(p.jittered(base, 0.5), Duration::from_secs(9));
        assert_eq!(
            p.jittered(base, 0.999_999),
            base.mul_f64(0.8 + 0.2 * 0.000_001)
        );
        p.jitter = 1.0;
        assert_eq!(p.jittered(base, 1.0), DELAY_MIN);
        p.jitter = f64::NAN;
        assert_eq!(p.jittered(base, f64::NAN), base);
        p.jitter = f64::INFINITY;
        assert_eq!(p.jittered(base, 0.5), base);
    }

    #[test]
    fn next_delay_picks_by_outcome() {
        let mut p = policy();
        p.respect_ttl = true;
        let mut state = TargetState::default();
        let t0 = Instant::now();
        let ok = addresses(&[1]);
        assert_eq!(state.next_delay(&ok, &p, 0.0), Duration::from_secs(5));
        let empty = Outcome::Empty {
            negative_ttl_s: Some(30),
        };
        assert_eq!(state.next_delay(&empty, &p, 0.0), Duration::from_secs(30));
        state.apply(&failed(), t0, SystemTime::now());
        state.apply(&failed(), t0, SystemTime::now());
        assert_eq!(
            state.next_delay(&failed(), &p, 0.0),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn refusals_move_the_next_resolve_earlier_at_most_to_the_spacing() {
        let now = Instant::now();
        let due = now + Duration::from_secs(5);
        assert_eq!(early_refresh_at(now, None, due), Some(now));
        let long_ago = now - Duration::from_secs(3);
        assert_eq!(early_refresh_at(now, Some(long_ago), due), Some(now));
        let just_now = now - Duration::from_millis(200);
        assert_eq!(
            early_refresh_at(now, Some(just_now), due),
            Some(just_now + EARLY_REFRESH_SPACING_MIN)
        );
        // Already due sooner (the first refusal of the burst moved it): nothing to do.
        assert_eq!(early_refresh_at(now, Some(just_now), now), None);
        assert_eq!(
            early_refresh_at(now, Some(just_now), just_now + EARLY_REFRESH_SPACING_MIN),
            None
        );
    }
}
