//! What the connections and calls of one worker share: read-only settings, the worker's own
//! upstream pool and picker, its counters, timers and access-log buffer, and the snapshots the
//! control plane publishes.
//!
//! A worker builds one [`WorkerContext`] and hands an `Rc` of it to every connection it
//! accepts. Nothing in it is shared with another worker except the published snapshots (read
//! lock-free) and the counters (written only by this worker).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access_log::WorkerLog;
use crate::coarse_timer::CoarseTimers;
use crate::config::DownstreamLimits;
use crate::cors::CorsPolicy;
use crate::endpoints::{Balancer, EndpointDirectory, EndpointSet};
use crate::health::HealthTable;
use crate::refused::RefusedTable;
use crate::retry::RetryBudget;
use crate::stats::WorkerStats;
use crate::upstream::{EndpointStats, Pool};

/// One worker's shared state.
pub struct WorkerContext {
    pub index: usize,
    pub limits: DownstreamLimits,
    pub cors: CorsPolicy,
    pub directory: Arc<EndpointDirectory>,
    pub health: Arc<HealthTable>,
    /// Endpoints some worker found refusing connects; read per pick with `load()`.
    pub refused: Arc<RefusedTable>,
    pub balancer: Balancer,
    pub pool: Pool,
    pub retries: RetryBudget,
    pub warm_connections: bool,
    /// This worker's counters; only this worker writes them.
    pub stats: Arc<WorkerStats>,
    /// Set when the drain began: connections finish their current request and close.
    pub draining: Cell<bool>,
    /// Wakes idle keep-alive connections when the drain begins, so they close at once.
    pub drain_started: tokio::sync::Notify,
    /// Set when the drain timeout passed with calls still running; they end with UNAVAILABLE
    /// (their clients get a status, not a cut connection) and the worker exits.
    pub drain_expired: Cell<bool>,
    /// Wakes the calls still running when the drain timeout passes.
    pub drain_ended: tokio::sync::Notify,
    /// The connections' idle, read, write and drain-grace timeouts, fired by housekeeping.
    pub timers: Rc<CoarseTimers>,
    /// This worker's access log buffer, when the log is on.
    pub access_log: RefCell<Option<WorkerLog>>,
    /// This worker's per-endpoint view, republished by housekeeping for readers off the
    /// worker (the admin page); the request path never touches it.
    pub endpoint_stats: Arc<ArcSwap<Vec<EndpointStats>>>,
}

impl WorkerContext {
    /// Resolves when the drain timeout passed with calls still running.
    pub async fn drain_expired(&self) {
        if self.drain_expired.get() {
            return;
        }
        self.drain_ended.notified().await
    }

    /// Apply a new endpoint set to this worker's pool and warm connections to new endpoints
    /// in the background.
    pub fn reconcile(self: &Rc<Self>, set: &EndpointSet) {
        for addr in self.pool.reconcile(set) {
            if self.warm_connections {
                let context = self.clone();
                monoio::spawn(async move { context.pool.warm(addr).await });
            }
        }
    }
}

/// A connection counted as active from its accept until its task ends or is dropped. Counting at
/// accept rather than when the task first runs matters to a drain: a connection accepted just
/// before the listener closed, whose task has not run yet, is waited for (and answered with
/// `Connection: close`) instead of being dropped unanswered when the worker exits.
pub struct ActiveConnection(Arc<WorkerStats>);

impl ActiveConnection {
    pub fn new(stats: &Arc<WorkerStats>) -> Self {
        stats.connections_accepted.add(1);
        stats.connections_active.add(1);
        ActiveConnection(stats.clone())
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connections_active.sub(1);
    }
}
