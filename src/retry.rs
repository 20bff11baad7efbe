//! When a failed call may be sent again, and how many retries a worker lets run.
//!
//! ringway retries only calls the upstream provably did not process, so a retry can never
//! duplicate a call: a connect that failed (nothing was sent), and a stream the peer refused
//! (`REFUSED_STREAM`, RFC 9113 §8.7, or above a GOAWAY's last stream id). Retries are bounded
//! per call (`--retry-attempts-max`) and per worker (a budget of `--retry-budget-percent` of the
//! calls in flight, but always [`RETRY_CONCURRENCY_MIN`]), so a failing endpoint cannot double
//! the load on the others (Envoy's retry budget, without its shared counters).

use std::cell::Cell;
use std::rc::Rc;

use crate::error::Error;

/// Retries always allowed in flight per worker, however few calls are running (Envoy's
/// `min_retry_concurrency`).
pub const RETRY_CONCURRENCY_MIN: usize = 3;

/// Whether the request provably never reached the upstream application, so another endpoint
/// may be tried without risking a duplicate call.
pub fn retry_safe(error: &Error) -> bool {
    match error {
        Error::Connect(_) | Error::ConnectTimeout => true,
        // REFUSED_STREAM is the peer's promise that it did not process the stream
        // (RFC 9113 §8.7), and a GOAWAY refusal means the stream was never opened.
        Error::H2(e) => e.reason() == Some(h2::Reason::REFUSED_STREAM) || e.is_go_away(),
        _ => false,
    }
}

/// Whether a retry may go to the same endpoint: a stream refused on one connection can succeed
/// on a fresh one, but an endpoint that refused the connection is in backoff.
pub fn retry_same_endpoint(error: &Error) -> bool {
    matches!(error, Error::H2(_))
}

/// A worker's retry budget.
pub struct RetryBudget {
    attempts_max: u32,
    budget_percent: usize,
    calls_active: Rc<Cell<usize>>,
    retries_active: Rc<Cell<usize>>,
}

impl RetryBudget {
    pub fn new(attempts_max: u32, budget_percent: u32) -> Self {
        RetryBudget {
            attempts_max,
            budget_percent: budget_percent as usize,
            calls_active: Rc::new(Cell::new(0)),
            retries_active: Rc::new(Cell::new(0)),
        }
    }

    /// Count a call as active until the guard drops.
    pub fn call_started(&self) -> ActiveGuard {
        ActiveGuard::new(&self.calls_active)
    }

    /// Permission for retry number `attempt` of a call, or `None` when the per-call limit or
    /// the budget is spent.
    pub fn try_retry(&self, attempt: u32) -> Option<RetryGuard> {
        let allowed =
            (self.calls_active.get() * self.budget_percent / 100).max(RETRY_CONCURRENCY_MIN);
        if attempt > self.attempts_max || self.retries_active.get() >= allowed {
            return None;
        }
        Some(RetryGuard {
            attempt,
            _active: ActiveGuard::new(&self.retries_active),
        })
    }
}

/// Holds one unit of an active count; gives it back on drop.
pub struct ActiveGuard(Rc<Cell<usize>>);

impl ActiveGuard {
    fn new(count: &Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        ActiveGuard(count.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A granted retry: which attempt it is, counted as active while it runs.
pub struct RetryGuard {
    pub attempt: u32,
    _active: ActiveGuard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unprocessed_calls_are_retry_safe() {
        let refused = Error::H2(h2::Error::from(h2::Reason::REFUSED_STREAM));
        let reset = Error::H2(h2::Error::from(h2::Reason::INTERNAL_ERROR));
        let connect = Error::Connect(std::io::ErrorKind::ConnectionRefused.into());
        assert!(retry_safe(&refused) && retry_same_endpoint(&refused));
        assert!(retry_safe(&connect) && !retry_same_endpoint(&connect));
        assert!(retry_safe(&Error::ConnectTimeout));
        for not_safe in [
            reset,
            Error::DeadlineExceeded,
            Error::UpstreamHttpStatus(503),
            Error::UpstreamProtocol("no grpc-status"),
            Error::PoolExhausted,
            Error::NoEndpoint,
        ] {
            assert!(!retry_safe(&not_safe), "{not_safe:?}");
        }
    }

    #[test]
    fn per_call_limit_and_minimum_concurrency() {
        let budget = RetryBudget::new(2, 20);
        let _call = budget.call_started();
        assert!(budget.try_retry(3).is_none(), "past the per-call limit");
        let held: Vec<_> = (0..RETRY_CONCURRENCY_MIN)
            .map(|_| budget.try_retry(1).expect("within the minimum"))
            .collect();
        assert!(budget.try_retry(1).is_none(), "budget spent");
        drop(held);
        assert!(budget.try_retry(2).is_some(), "guards give the budget back");
    }

    #[test]
    fn budget_grows_with_calls_in_flight() {
        let budget = RetryBudget::new(5, 20);
        let calls: Vec<_> = (0..50).map(|_| budget.call_started()).collect();
        let held: Vec<_> = (0..10).map(|_| budget.try_retry(1).unwrap()).collect();
        assert!(budget.try_retry(1).is_none(), "20 % of 50 calls");
        drop((calls, held));
    }
}
