//! The endpoint set and how a worker picks from it.
//!
//! The control plane owns an [`EndpointDirectory`] and publishes whole, immutable
//! [`EndpointSet`] snapshots into it (an `Arc` swapped atomically, as pingora-load-balancing's
//! `ArcSwap` selector does). Workers read the current snapshot without locks and never see a
//! half-updated list; a snapshot's `generation` tells a worker when the set changed so it can
//! retire per-endpoint state it keeps for removed endpoints. Today the set comes from the static
//! `--upstream` list; DNS discovery publishes through the same [`EndpointDirectory::publish`].

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// One immutable version of the upstream endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSet {
    /// Increases by one with each published set.
    pub generation: u64,
    /// Deduplicated, in a stable order so round robin is fair across snapshots.
    pub endpoints: Vec<SocketAddr>,
}

/// The shared, atomically swapped pointer to the current [`EndpointSet`].
#[derive(Debug)]
pub struct EndpointDirectory {
    current: ArcSwap<EndpointSet>,
}

impl EndpointDirectory {
    pub fn new(endpoints: Vec<SocketAddr>) -> Self {
        EndpointDirectory {
            current: ArcSwap::from_pointee(EndpointSet {
                generation: 1,
                endpoints: normalise(endpoints),
            }),
        }
    }

    /// Publish a new set; a no-op (same generation) when the membership did not change.
    pub fn publish(&self, endpoints: Vec<SocketAddr>) -> u64 {
        let endpoints = normalise(endpoints);
        let current = self.current.load();
        if current.endpoints == endpoints {
            return current.generation;
        }
        let generation = current.generation + 1;
        // Only the control plane publishes, so load-then-store cannot lose an update.
        self.current.store(Arc::new(EndpointSet {
            generation,
            endpoints,
        }));
        generation
    }

    /// The current snapshot, for the request path: a guard that does not touch the shared
    /// reference count (arc-swap's thread-local debt slots), so cores reading it on every call
    /// do not bounce one cache line between them. Hold it only briefly, never across a wait.
    pub fn current(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for readers off the request path that keep it.
    pub fn snapshot(&self) -> Arc<EndpointSet> {
        self.current.load_full()
    }
}

fn normalise(mut endpoints: Vec<SocketAddr>) -> Vec<SocketAddr> {
    endpoints.sort_unstable();
    endpoints.dedup();
    endpoints
}

/// How a worker chooses an endpoint for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LbPolicy {
    /// Each endpoint in turn; each worker starts at its own offset.
    RoundRobin,
    /// Power of two choices: of two random endpoints, the one with fewer calls in flight on
    /// this worker.
    LeastRequest,
    /// Uniformly at random.
    Random,
}

/// What to do when no endpoint is eligible (all failed health checks or are ejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AllUnhealthy {
    /// Fail the call at once with UNAVAILABLE.
    Fail,
    /// Ignore health and spread calls over every endpoint (Envoy's panic mode), on the theory
    /// that health checks are more likely wrong than every backend at once.
    Spread,
}

/// Most endpoints one call remembers having tried. A call moves on after a failure that
/// proves its request was not processed; `--retry-attempts-max` is capped below this (see
/// `Config::validate`), and a call that failed to reach this many endpoints stops trying.
/// 8 addresses are 256 bytes of the call's state, on the stack, never allocated.
pub const TRIED_ENDPOINTS_MAX: usize = 8;

/// The endpoints a call has tried, in order, so that a retry goes to one it has not.
///
/// A fixed array rather than a `Vec`: a call is the hot path and must not allocate, and
/// `TRIED_ENDPOINTS_MAX` bounds how many endpoints a call may try anyway.
#[derive(Debug, Clone, Copy)]
pub struct Tried {
    addrs: [SocketAddr; TRIED_ENDPOINTS_MAX],
    len: usize,
}

impl Tried {
    pub const fn new() -> Self {
        Tried {
            addrs: [SocketAddr::V4(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::UNSPECIFIED,
                0,
            )); TRIED_ENDPOINTS_MAX],
            len: 0,
        }
    }

    /// Remember `addr` (once); false when it is not remembered because the set is full.
    pub fn push(&mut self, addr: SocketAddr) -> bool {
        if self.contains(addr) {
            return true;
        }
        if self.is_full() {
            return false;
        }
        self.addrs[self.len] = addr;
        self.len += 1;
        true
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.as_slice().contains(&addr)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == TRIED_ENDPOINTS_MAX
    }

    /// Whether `set` has an endpoint this call has not tried.
    pub fn leaves_untried(&self, set: &EndpointSet) -> bool {
        set.endpoints.iter().any(|addr| !self.contains(*addr))
    }

    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len]
    }
}

impl Default for Tried {
    fn default() -> Self {
        Tried::new()
    }
}

/// A worker's endpoint picker. Picks never allocate: they walk the snapshot's list and skip
/// ineligible endpoints.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    all_unhealthy: AllUnhealthy,
    next: Cell<usize>,
    rng: Cell<u64>,
}

impl Balancer {
    pub fn new(policy: LbPolicy, all_unhealthy: AllUnhealthy, worker_index: usize) -> Self {
        // Each worker starts at its own offset so that cores do not march through the
        // endpoints in step and hit the same one at the same moment.
        let seed = 0x9E37_79B9_7F4A_7C15u64
            ^ (worker_index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Balancer {
            policy,
            all_unhealthy,
            next: Cell::new(worker_index),
            rng: Cell::new(seed | 1),
        }
    }

    /// Pick an endpoint of `set` for which `eligible` holds; `in_flight` gives this worker's
    /// calls in flight per endpoint (least-request only). Endpoints in `tried` (those this call
    /// already tried) are skipped while any other eligible endpoint qualifies; when only tried
    /// ones do, a tried one is picked again (a stream refused on one connection may succeed on a
    /// fresh one). When none is eligible, the all-unhealthy policy decides, still preferring an
    /// untried endpoint.
    pub fn pick(
        &self,
        set: &EndpointSet,
        tried: &Tried,
        eligible: impl Fn(SocketAddr) -> bool,
        in_flight: impl Fn(SocketAddr) -> usize,
    ) -> Option<SocketAddr> {
        let untried = |addr: SocketAddr| !tried.contains(addr);
        let candidate = |addr: SocketAddr| untried(addr) && eligible(addr);
        if let Some(addr) = self.pick_where(set, &candidate, &in_flight) {
            return Some(addr);
        }
        if !tried.is_empty() {
            if let Some(addr) = self.pick_where(set, &|addr| eligible(addr), &in_flight) {
                return Some(addr);
            }
        }
        match self.all_unhealthy {
            AllUnhealthy::Fail => None,
            AllUnhealthy::Spread => self
                .pick_where(set, &untried, &in_flight)
                .or_else(|| self.pick_where(set, &|_| true, &in_flight)),
        }
    }

    fn pick_where(
        &self,
        set: &EndpointSet,
        candidate: &dyn Fn(SocketAddr) -> bool,
        in_flight: &dyn Fn(SocketAddr) -> usize,
    ) -> Option<SocketAddr> {
        let n = set.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = match self.policy {
            LbPolicy::RoundRobin => {
                let start = self.next.get();
                self.next.set(start.wrapping_add(1));
                start
            }
            LbPolicy::Random | LbPolicy::LeastRequest => self.random_below(n),
        };
        let first = (0..n)
            .map(|i| set.endpoints[(start + i) % n])
            .find(|addr| candidate(*addr))?;
        if self.policy != LbPolicy::LeastRequest || n == 1 {
            return Some(first);
        }
        let offset = self.random_below(n);
        let second = (0..n)
            .map(|i| set.endpoints[(offset + i) % n])
            .find(|addr| candidate(*addr))
            .unwrap_or(first);
        Some(if in_flight(second) < in_flight(first) {
            second
        } else {
            first
        })
    }

    /// xorshift64*: a worker-local generator, enough for spreading load and free of locks.
    fn random_below(&self, n: usize) -> usize {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 9000))
    }

    #[test]
    fn publish_bumps_generation_only_on_change() {
        let dir = EndpointDirectory::new(vec![addr(2), addr(3)]);
        assert_eq!(dir.snapshot().generation, 1);
        assert_eq!(dir.publish(vec![addr(3), addr(2), addr(2)]), 1);
        assert_eq!(dir.publish(vec![addr(4)]), 2);
        assert_eq!(dir.snapshot().endpoints, vec![addr(4)]);
    }

    fn tried(last: &[u8]) -> Tried {
        let mut tried = Tried::new();
        for l in last {
            assert!(tried.push(addr(*l)));
        }
        tried
    }

    fn set(last: &[u8]) -> EndpointSet {
        EndpointSet {
            generation: 1,
            endpoints: last.iter().map(|l| addr(*l)).collect(),
        }
    }

    fn counts(balancer: &Balancer, set: &EndpointSet, calls: usize) -> Vec<usize> {
        let mut counts = vec![0; set.endpoints.len()];
        for _ in 0..calls {
            let a = balancer.pick(set, &Tried::new(), |_| true, |_| 0).unwrap();
            counts[set.endpoints.iter().position(|e| *e == a).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_even_and_offset_per_worker() {
        let set = set(&[2, 3, 4]);
        let w0 = Balancer::new(LbPolicy::RoundRobin, AllUnhealthy::Fail, 0);
        let w1 = Balancer::new(LbPolicy::RoundRobin, AllUnhealthy::Fail, 1);
        let first = |b: &Balancer| b.pick(&set, &Tried::new(), |_| true, |_| 0);
        assert_ne!(first(&w0), first(&w1));
        assert_eq!(counts(&w0, &set, 300), [100, 100, 100]);
    }

    #[test]
    fn random_and_least_request_spread_roughly_evenly() {
        let set = set(&[2, 3, 4, 5]);
        for policy in [LbPolicy::Random, LbPolicy::LeastRequest] {
            let balancer = Balancer::new(policy, AllUnhealthy::Fail, 0);
            for count in counts(&balancer, &set, 40_000) {
                assert!((8_000..12_000).contains(&count), "{policy:?}: {count}");
            }
        }
    }

    #[test]
    fn least_request_prefers_the_idler_endpoint() {
        let set = set(&[2, 3]);
        let balancer = Balancer::new(LbPolicy::LeastRequest, AllUnhealthy::Fail, 0);
        let busy = addr(2);
        let picks = (0..1000)
            .filter(|_| {
                balancer.pick(
                    &set,
                    &Tried::new(),
                    |_| true,
                    |a| usize::from(a == busy) * 10,
                ) == Some(busy)
            })
            .count();
        // Busy is chosen only when both random choices land on it: about a quarter of picks.
        assert!(picks < 400, "{picks}");
    }

    #[test]
    fn ineligible_endpoints_are_skipped_and_all_unhealthy_policy_applies() {
        let set = set(&[2, 3, 4]);
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            let fail = Balancer::new(policy, AllUnhealthy::Fail, 0);
            for _ in 0..50 {
                assert_eq!(
                    fail.pick(&set, &Tried::new(), |a| a == addr(3), |_| 0),
                    Some(addr(3))
                );
            }
            assert_eq!(fail.pick(&set, &Tried::new(), |_| false, |_| 0), None);
            let spread = Balancer::new(policy, AllUnhealthy::Spread, 0);
            assert!(spread.pick(&set, &Tried::new(), |_| false, |_| 0).is_some());
        }
    }

    #[test]
    fn avoid_is_skipped_unless_it_is_the_only_choice() {
        let balancer = Balancer::new(LbPolicy::RoundRobin, AllUnhealthy::Fail, 0);
        for _ in 0..10 {
            assert_eq!(
                balancer.pick(&set(&[2, 3]), &tried(&[2]), |_| true, |_| 0),
                Some(addr(3))
            );
        }
        assert_eq!(
            balancer.pick(&set(&[2]), &tried(&[2]), |_| true, |_| 0),
            Some(addr(2))
        );
        assert_eq!(
            balancer.pick(&set(&[]), &Tried::new(), |_| true, |_| 0),
            None
        );
    }

    #[test]
    fn every_tried_endpoint_is_skipped_while_an_untried_one_qualifies() {
        let set = set(&[2, 3, 4, 5]);
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            for all_unhealthy in [AllUnhealthy::Fail, AllUnhealthy::Spread] {
                let balancer = Balancer::new(policy, all_unhealthy, 0);
                for _ in 0..50 {
                    let picked = balancer.pick(&set, &tried(&[2, 3, 5]), |_| true, |_| 0);
                    assert_eq!(picked, Some(addr(4)), "{policy:?}");
                }
                // 4 is untried but not eligible: a tried eligible one is better than nothing.
                let picked = balancer.pick(&set, &tried(&[2, 3, 5]), |a| a != addr(4), |_| 0);
                assert!(
                    picked.is_some_and(|a| a != addr(4)),
                    "{policy:?}: {picked:?}"
                );
                // Nothing eligible: the policy decides, preferring the untried endpoint.
                let picked = balancer.pick(&set, &tried(&[2, 3, 5]), |_| false, |_| 0);
                match all_unhealthy {
                    AllUnhealthy::Fail => assert_eq!(picked, None),
                    AllUnhealthy::Spread => assert_eq!(picked, Some(addr(4))),
                }
            }
        }
    }

    #[test]
    fn tried_is_bounded_and_remembers_each_address_once() {
        let mut tried = Tried::new();
        assert!(tried.is_empty() && !tried.leaves_untried(&set(&[])));
        assert!(tried.leaves_untried(&set(&[2])));
        assert!(tried.push(addr(2)) && tried.push(addr(2)));
        assert_eq!(tried.as_slice(), [addr(2)]);
        assert!(!tried.leaves_untried(&set(&[2])));
        for last in 3..3 + TRIED_ENDPOINTS_MAX as u8 - 1 {
            assert!(tried.push(addr(last)));
        }
        assert!(tried.is_full());
        assert!(!tried.push(addr(200)), "a full set remembers nothing more");
        assert!(!tried.contains(addr(200)));
        assert_eq!(tried.len(), TRIED_ENDPOINTS_MAX);
        let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000));
        assert!(!tried.contains(v6));
    }
}
