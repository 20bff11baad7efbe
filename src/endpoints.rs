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

    /// The current snapshot. Lock-free: arc-swap's load is a few atomic operations.
    pub fn snapshot(&self) -> Arc<EndpointSet> {
        self.current.load_full()
    }
}

fn normalise(mut endpoints: Vec<SocketAddr>) -> Vec<SocketAddr> {
    endpoints.sort_unstable();
    endpoints.dedup();
    endpoints
}

/// A worker's round-robin picker. Each worker starts at its own offset so that cores do not
/// march through the endpoints in step and hit the same one at the same moment.
#[derive(Debug)]
pub struct RoundRobin {
    next: Cell<usize>,
}

impl RoundRobin {
    pub fn new(worker_index: usize) -> Self {
        RoundRobin {
            next: Cell::new(worker_index),
        }
    }

    /// The next endpoint of `set`, or `None` when it is empty.
    pub fn pick(&self, set: &EndpointSet) -> Option<SocketAddr> {
        if set.endpoints.is_empty() {
            return None;
        }
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        Some(set.endpoints[n % set.endpoints.len()])
    }

    /// The endpoint after `skip` in `set`'s order, for retrying an unstarted call elsewhere.
    pub fn pick_other(&self, set: &EndpointSet, skip: SocketAddr) -> Option<SocketAddr> {
        (0..set.endpoints.len())
            .filter_map(|_| self.pick(set))
            .find(|addr| *addr != skip)
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

    #[test]
    fn round_robin_is_even_and_offset_per_worker() {
        let set = EndpointSet {
            generation: 1,
            endpoints: vec![addr(2), addr(3), addr(4)],
        };
        let w0 = RoundRobin::new(0);
        let w1 = RoundRobin::new(1);
        assert_ne!(w0.pick(&set), w1.pick(&set));
        let mut counts = [0; 3];
        for _ in 0..300 {
            let a = w0.pick(&set).unwrap();
            counts[set.endpoints.iter().position(|e| *e == a).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn empty_set_and_pick_other() {
        let rr = RoundRobin::new(0);
        let empty = EndpointSet {
            generation: 1,
            endpoints: vec![],
        };
        assert_eq!(rr.pick(&empty), None);
        let one = EndpointSet {
            generation: 1,
            endpoints: vec![addr(2)],
        };
        assert_eq!(rr.pick_other(&one, addr(2)), None);
        let two = EndpointSet {
            generation: 1,
            endpoints: vec![addr(2), addr(3)],
        };
        assert_eq!(rr.pick_other(&two, addr(2)), Some(addr(3)));
    }
}
