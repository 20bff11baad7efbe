//! Refused connects, shared by every worker through the control plane.
//!
//! A refused connect (`ECONNREFUSED`: the host answered, and nothing listens on the port) is
//! conclusive, unlike a timeout: the endpoint cannot take a call until something listens there
//! again. The worker that saw it takes the endpoint out of its own rotation at once
//! (`upstream::Pool`) and reports it here; the `ringway-refused` thread publishes the refused
//! endpoints as an immutable snapshot ([`RefusedTable`]), so every other worker skips the
//! endpoint too, without paying a failed connect of its own first.
//!
//! An endpoint leaves the table when a worker connects to it again (every worker keeps probing
//! the endpoints it skips, off the request path, so a backend that comes back is found without
//! traffic) or when it leaves the endpoint set. The first refusal of an endpoint also asks DNS
//! discovery to re-resolve its target early: a pod that stopped listening has usually been
//! deleted, and the sooner its record is gone, the sooner the set is right again.
//!
//! Workers report through a bounded queue without waiting (when it is full the report is dropped:
//! the worker's own exclusion still holds, only the sharing is lost), and read the snapshot with
//! one `ArcSwap::load`, so nothing on the request path waits on this thread or takes a lock.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tracing::{debug, info};

use crate::discovery::RefreshRequester;
use crate::endpoints::{EndpointDirectory, EndpointSet};

/// Reports that may wait for the control thread. A worker reports an endpoint once per change
/// of its state (refused, then connected again), so this is far more than a scale-down of a
/// large set sends at once.
pub const REPORTS_QUEUED_MAX: usize = 1024;

/// How often the control thread looks for endpoints that left the set while no report came.
const PRUNE_INTERVAL: Duration = Duration::from_millis(250);

/// The endpoints some worker found refusing connections, in address order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedSet {
    addrs: Vec<SocketAddr>,
}

impl RefusedSet {
    /// Whether `addr` refused. Costs one length check while nothing is refused, the usual case.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        !self.addrs.is_empty() && self.addrs.binary_search(&addr).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().copied()
    }
}

/// The shared snapshot of refused endpoints; only the control thread writes it.
#[derive(Debug, Default)]
pub struct RefusedTable {
    current: ArcSwap<RefusedSet>,
}

impl RefusedTable {
    /// The current snapshot, behind a guard: a few uncontended atomic operations and no
    /// reference count change, so a call can read it on the request path. Hold it only for the
    /// length of one pick.
    pub fn load(&self) -> Guard<Arc<RefusedSet>> {
        self.current.load()
    }

    fn publish(&self, set: RefusedSet) {
        self.current.store(Arc::new(set));
    }
}

/// What a worker tells the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A connect to the endpoint was refused.
    Refused(SocketAddr),
    /// A connect to the endpoint succeeded (its HTTP/2 handshake included).
    Connected(SocketAddr),
}

enum Message {
    Report(Report),
    Stop,
}

/// A worker's way to report; cheap to clone, never waits.
#[derive(Debug, Clone)]
pub struct Reporter {
    queue: SyncSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Report(report) => write!(f, "{report:?}"),
            Message::Stop => f.write_str("Stop"),
        }
    }
}

impl Reporter {
    pub fn report(&self, report: Report) {
        if self.queue.try_send(Message::Report(report)).is_err() {
            debug!(
                ?report,
                "refusal report dropped: the control thread is behind"
            );
        }
    }
}

/// The running control thread; dropping it stops and joins the thread.
pub struct RefusedControl {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl RefusedControl {
    /// A reporter for one worker.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            queue: self.queue.clone(),
        }
    }
}

impl Drop for RefusedControl {
    fn drop(&mut self) {
        // A blocking send: the thread drains the queue, so this waits at most for the reports
        // ahead of it.
        let _ = self.queue.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Start the control thread that turns workers' reports into the snapshot in `table`, and asks
/// `discovery` (when some target is a name) for early re-resolves.
pub fn spawn(
    directory: Arc<EndpointDirectory>,
    table: Arc<RefusedTable>,
    discovery: Option<RefreshRequester>,
) -> io::Result<RefusedControl> {
    let (queue, inbox) = mpsc::sync_channel(REPORTS_QUEUED_MAX);
    let thread = std::thread::Builder::new()
        .name("ringway-refused".into())
        .spawn(move || {
            let mut tracker = Tracker::default();
            loop {
                let message = match inbox.recv_timeout(PRUNE_INTERVAL) {
                    Ok(Message::Report(report)) => Some(report),
                    Err(RecvTimeoutError::Timeout) => None,
                    Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                };
                let set = directory.snapshot();
                let mut changed = tracker.prune(&set);
                if let Some(report) = message {
                    let change = tracker.apply(report, &set);
                    changed |= change != Change::None;
                    if let (Change::Added(addr), Some(discovery)) = (change, &discovery) {
                        discovery.endpoint_refused(addr);
                    }
                    if change != Change::None {
                        info!(
                            ?report,
                            refused = tracker.refused.len(),
                            "refused endpoints changed"
                        );
                    }
                }
                if changed {
                    table.publish(tracker.snapshot());
                }
            }
        })?;
    Ok(RefusedControl {
        queue,
        thread: Some(thread),
    })
}

/// What one report did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    None,
    Added(SocketAddr),
    Removed,
}

/// The control thread's state, sans-IO: which endpoints of the current set refused.
#[derive(Debug, Default)]
struct Tracker {
    refused: BTreeSet<SocketAddr>,
    generation: u64,
}

impl Tracker {
    /// Apply one report. A refusal of an endpoint that is not (or no longer) in the set is
    /// ignored: a worker may still hold connections to an endpoint that left it.
    fn apply(&mut self, report: Report, set: &EndpointSet) -> Change {
        match report {
            Report::Refused(addr) if set.endpoints.contains(&addr) => {
                if self.refused.insert(addr) {
                    Change::Added(addr)
                } else {
                    Change::None
                }
            }
            Report::Refused(_) => Change::None,
            Report::Connected(addr) => {
                if self.refused.remove(&addr) {
                    Change::Removed
                } else {
                    Change::None
                }
            }
        }
    }

    /// Forget endpoints that left the set; true when any did. Only looks when the set changed.
    fn prune(&mut self, set: &EndpointSet) -> bool {
        if set.generation == self.generation {
            return false;
        }
        self.generation = set.generation;
        let before = self.refused.len();
        self.refused.retain(|addr| set.endpoints.contains(addr));
        self.refused.len() != before
    }

    fn snapshot(&self) -> RefusedSet {
        // A BTreeSet iterates in order, which `RefusedSet::contains` relies on.
        RefusedSet {
            addrs: self.refused.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 9000))
    }

    fn set(generation: u64, last: &[u8]) -> EndpointSet {
        EndpointSet {
            generation,
            endpoints: last.iter().map(|l| addr(*l)).collect(),
        }
    }

    #[test]
    fn refusals_in_the_set_are_kept_until_a_connect_or_their_removal() {
        let mut tracker = Tracker::default();
        let three = set(1, &[2, 3, 4]);
        assert!(!tracker.prune(&three) && tracker.generation == 1);
        assert_eq!(
            tracker.apply(Report::Refused(addr(3)), &three),
            Change::Added(addr(3))
        );
        assert_eq!(
            tracker.apply(Report::Refused(addr(3)), &three),
            Change::None,
            "a second worker's report of the same endpoint changes nothing"
        );
        assert_eq!(
            tracker.apply(Report::Refused(addr(9)), &three),
            Change::None,
            "an endpoint outside the set is not published"
        );
        assert_eq!(
            tracker.apply(Report::Refused(addr(4)), &three),
            Change::Added(addr(4))
        );
        let snapshot = tracker.snapshot();
        assert!(snapshot.contains(addr(3)) && snapshot.contains(addr(4)));
        assert!(!snapshot.contains(addr(2)) && !snapshot.contains(addr(9)));
        assert_eq!(snapshot.len(), 2);

        assert_eq!(
            tracker.apply(Report::Connected(addr(3)), &three),
            Change::Removed
        );
        assert_eq!(
            tracker.apply(Report::Connected(addr(3)), &three),
            Change::None
        );
        assert!(
            !tracker.prune(&three),
            "same generation: nothing to look at"
        );
        assert!(tracker.prune(&set(2, &[2, 3])), "4 left the set");
        assert!(tracker.snapshot().is_empty());
        assert!(!tracker.prune(&set(3, &[2])));
    }

    #[test]
    fn an_empty_set_contains_nothing() {
        let empty = RefusedSet::default();
        assert!(empty.is_empty() && !empty.contains(addr(2)));
        assert_eq!(empty.iter().count(), 0);
    }

    #[test]
    fn the_thread_publishes_reports_and_stops_on_drop() {
        let directory = Arc::new(EndpointDirectory::new(vec![addr(2), addr(3)]));
        let table = Arc::new(RefusedTable::default());
        let control = spawn(directory.clone(), table.clone(), None).unwrap();
        let reporter = control.reporter();
        reporter.report(Report::Refused(addr(3)));
        let wait = |what: &dyn Fn(&RefusedSet) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !what(&table.load()) {
                assert!(std::time::Instant::now() < deadline, "{:?}", table.load());
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait(&|t| t.contains(addr(3)));
        // Leaving the set removes it without any report.
        directory.publish(vec![addr(2)]);
        wait(&|t| t.is_empty());
        drop(control);
        // After the stop a report is dropped, not queued forever or panicking.
        reporter.report(Report::Refused(addr(2)));
    }
}
