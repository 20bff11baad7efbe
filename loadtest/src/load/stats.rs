//! Accounting for a load run: per-call outcomes into counters, time windows and a latency
//! histogram, plus the arithmetic the report rests on (imbalance, open-loop send times).
//!
//! Everything here is plain data with no IO and no clock of its own, so the numbers a user
//! trusts can be unit-tested exactly. Each worker thread owns a [`Tally`] and records into it
//! without locks; every flush tick it moves its tally into the shared one the live snapshot
//! reads, so the request path never takes a lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram resolves, in microseconds (one hour); longer calls are
/// recorded as this value.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits the histogram keeps (0.1% relative error, as wrk2 and oha).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants inside hdrhistogram's valid range (low >= 1, high >= 2 * low,
    // sigfig <= 5), so construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range so no value is ever dropped.
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(us.clamp(1, LATENCY_US_MAX));
}

/// Counts of one time window, keyed by window index (`start = index * window`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub calls_ok: u64,
    pub errors: u64,
    pub per_pod: BTreeMap<String, u64>,
}

impl WindowCounts {
    fn add(&mut self, other: &WindowCounts) {
        self.calls_ok += other.calls_ok;
        self.errors += other.errors;
        add_counts(&mut self.per_pod, &other.per_pod);
    }
}

/// Counters of a run or part of one. Workers record into their own, then [`Tally::merge_into`]
/// the shared one.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub calls_ok: u64,
    pub errors: u64,
    /// Calls sent (the request written), for the achieved rate.
    pub calls_sent: u64,
    pub connects: u64,
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    pub tls_negotiated: BTreeMap<String, u64>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub per_pod: BTreeMap<String, u64>,
    pub windows: BTreeMap<u64, WindowCounts>,
}

impl Tally {
    /// Records one call's outcome: `error` is its kind when it failed, `pod` the backend
    /// header's value when the response carried one, `window` the index of the window the call
    /// finished in.
    pub fn record(&mut self, window: u64, error: Option<&str>, pod: Option<&str>) {
        let counts = self.windows.entry(window).or_default();
        match error {
            None => {
                self.calls_ok += 1;
                counts.calls_ok += 1;
            }
            Some(kind) => {
                self.errors += 1;
                counts.errors += 1;
                increment(&mut self.errors_by_kind, kind);
            }
        }
        if let Some(pod) = pod {
            increment(&mut self.per_pod, pod);
            increment(&mut counts.per_pod, pod);
        }
    }

    /// Adds this tally into `into` and clears it, keeping the maps' allocations where it can.
    pub fn merge_into(&mut self, into: &mut Tally) {
        into.calls_ok += self.calls_ok;
        into.errors += self.errors;
        into.calls_sent += self.calls_sent;
        into.connects += self.connects;
        into.tls_handshakes += self.tls_handshakes;
        into.tls_resumed += self.tls_resumed;
        add_counts(&mut into.tls_negotiated, &self.tls_negotiated);
        add_counts(&mut into.errors_by_kind, &self.errors_by_kind);
        add_counts(&mut into.per_pod, &self.per_pod);
        for (index, counts) in &self.windows {
            into.windows.entry(*index).or_default().add(counts);
        }
        self.calls_ok = 0;
        self.errors = 0;
        self.calls_sent = 0;
        self.connects = 0;
        self.tls_handshakes = 0;
        self.tls_resumed = 0;
        self.tls_negotiated.values_mut().for_each(|v| *v = 0);
        self.errors_by_kind.values_mut().for_each(|v| *v = 0);
        self.per_pod.values_mut().for_each(|v| *v = 0);
        self.windows.clear();
    }

    /// Windows `0..count`, in order, with empty ones filled in so a window where nothing
    /// finished shows as zero rather than disappearing.
    pub fn windows_upto(&self, count: u64) -> Vec<(u64, WindowCounts)> {
        (0..count)
            .map(|index| (index, self.windows.get(&index).cloned().unwrap_or_default()))
            .collect()
    }
}

pub(crate) fn increment(counts: &mut BTreeMap<String, u64>, key: &str) {
    // Look up by &str first so the common case (a key seen before) allocates nothing.
    match counts.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (key, count) in from {
        if *count > 0 {
            *into.entry(key.clone()).or_default() += count;
        }
    }
}

/// Imbalance of a distribution: the largest pod's share over the smallest pod's share (which
/// is the same as max count / min count). `None` with no pods; infinite when a listed pod got
/// nothing. 1.0 is perfect balance.
pub fn imbalance(per_pod: &BTreeMap<String, u64>) -> Option<f64> {
    let max = *per_pod.values().max()?;
    let min = *per_pod.values().min()?;
    if min == 0 {
        return Some(f64::INFINITY);
    }
    Some(max as f64 / min as f64)
}

/// The index of the window a call finishing `elapsed` after the run's start belongs to. Calls
/// finishing after the run's last window (in-flight calls draining after the deadline) count in
/// the last window, so the report does not end in a misleading sliver of a window.
pub fn window_index(elapsed: Duration, window: Duration, last: Option<u64>) -> u64 {
    let index = (elapsed.as_nanos() / window.as_nanos().max(1)) as u64;
    match last {
        Some(last) => index.min(last),
        None => index,
    }
}

/// Number of windows a run of `duration` has (the last one may be partial).
pub fn window_count(duration: Duration, window: Duration) -> u64 {
    let window_ns = window.as_nanos().max(1);
    duration.as_nanos().div_ceil(window_ns).max(1) as u64
}

/// Open loop: when connection `connection` of `connections` should send its call number
/// `call` (0-based), as an offset from the run's start, for a total rate of `rate` calls/s.
///
/// Calls are spread evenly over the connections and staggered: the run's n-th call overall
/// is due at n / rate, and call n goes to connection n mod connections. So each connection sends
/// every connections / rate seconds and the aggregate is a steady rate, not a burst per tick
/// (wrk2's model). The time is computed from the call number, not by adding intervals, so
/// rounding never accumulates into drift.
pub fn intended_send_offset(
    connection: usize,
    call: u64,
    connections: usize,
    rate: f64,
) -> Duration {
    let n = call as f64 * connections as f64 + connection as f64;
    Duration::from_secs_f64((n / rate).min(LATENCY_US_MAX as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
        counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn imbalance_is_max_over_min() {
        assert_eq!(imbalance(&pods(&[])), None);
        assert_eq!(imbalance(&pods(&[("a", 7)])), Some(1.0));
        assert_eq!(imbalance(&pods(&[("a", 100), ("b", 110)])), Some(1.1));
        assert_eq!(
            imbalance(&pods(&[("a", 300), ("b", 100), ("c", 200)])),
            Some(3.0)
        );
        assert_eq!(imbalance(&pods(&[("a", 5), ("b", 0)])), Some(f64::INFINITY));
    }

    #[test]
    fn tally_records_every_call_once() {
        let mut tally = Tally::default();
        tally.record(0, None, Some("pod-1"));
        tally.record(0, None, Some("pod-2"));
        tally.record(1, Some("http_503"), None);
        tally.record(1, Some("grpc_UNAVAILABLE"), Some("pod-1"));
        tally.record(3, None, None);
        assert_eq!((tally.calls_ok, tally.errors), (3, 2));
        assert_eq!(tally.per_pod, pods(&[("pod-1", 2), ("pod-2", 1)]));
        assert_eq!(
            tally.errors_by_kind,
            pods(&[("grpc_UNAVAILABLE", 1), ("http_503", 1)])
        );
        let windows = tally.windows_upto(4);
        assert_eq!(windows.len(), 4);
        assert_eq!((windows[0].1.calls_ok, windows[0].1.errors), (2, 0));
        assert_eq!((windows[1].1.calls_ok, windows[1].1.errors), (0, 2));
        assert_eq!(windows[2].1, WindowCounts::default());
        assert_eq!(windows[3].1.calls_ok, 1);
    }

    #[test]
    fn merge_adds_and_clears() {
        let mut shared = Tally::default();
        let mut worker = Tally::default();
        for _ in 0..2 {
            worker.record(0, None, Some("pod-1"));
            worker.record(2, Some("timeout"), None);
            worker.calls_sent += 2;
            worker.connects += 1;
            worker.merge_into(&mut shared);
        }
        assert_eq!(
            (worker.calls_ok, worker.errors, worker.windows.len()),
            (0, 0, 0)
        );
        assert_eq!((shared.calls_ok, shared.errors), (2, 2));
        assert_eq!((shared.calls_sent, shared.connects), (4, 2));
        assert_eq!(shared.per_pod, pods(&[("pod-1", 2)]));
        assert_eq!(shared.errors_by_kind, pods(&[("timeout", 2)]));
        assert_eq!(shared.windows[&0].calls_ok, 2);
        assert_eq!(shared.windows[&2].errors, 2);
        // A worker's zeroed keys do not leak into the shared map as zero entries.
        let mut other = Tally::default();
        worker.merge_into(&mut other);
        assert!(other.per_pod.is_empty());
    }

    #[test]
    fn windows_by_elapsed_time() {
        let second = Duration::from_secs(1);
        assert_eq!(window_index(Duration::ZERO, second, None), 0);
        assert_eq!(window_index(Duration::from_millis(999), second, None), 0);
        assert_eq!(window_index(Duration::from_millis(1000), second, None), 1);
        assert_eq!(
            window_index(Duration::from_millis(10_400), second, Some(9)),
            9
        );
        assert_eq!(
            window_index(Duration::from_secs(5), Duration::ZERO, None),
            5_000_000_000
        );
        assert_eq!(window_count(Duration::from_secs(10), second), 10);
        assert_eq!(window_count(Duration::from_millis(10_001), second), 11);
        assert_eq!(window_count(Duration::ZERO, second), 1);
    }

    #[test]
    fn open_loop_schedule_is_even_and_driftless() {
        // 1000 calls/s over 4 connections: every 1 ms one call, each connection every 4 ms.
        let at = |c, k| intended_send_offset(c, k, 4, 1000.0);
        assert_eq!(at(0, 0), Duration::ZERO);
        assert_eq!(at(1, 0), Duration::from_millis(1));
        assert_eq!(at(3, 0), Duration::from_millis(3));
        assert_eq!(at(0, 1), Duration::from_millis(4));
        assert_eq!(at(2, 1), Duration::from_millis(6));
        // After a million calls the schedule is still exact to well under a microsecond.
        let late = at(1, 250_000);
        assert!(late.abs_diff(Duration::from_millis(1_000_001)) < Duration::from_micros(1));
        // Calls due in the first second across all connections: exactly the rate.
        let due = (0..4)
            .flat_map(|c| (0..1000).map(move |k| (c, k)))
            .filter(|&(c, k)| at(c, k) < Duration::from_secs(1))
            .count();
        assert_eq!(due, 1000);
        // A rate below one call per connection still works (one call every 64 s per connection).
        assert_eq!(intended_send_offset(0, 1, 64, 1.0), Duration::from_secs(64));
    }

    #[test]
    fn histogram_percentiles_and_clamping() {
        let mut histogram = latency_histogram();
        for us in 1..=1000u64 {
            record_latency(&mut histogram, Duration::from_micros(us));
        }
        record_latency(&mut histogram, Duration::ZERO);
        record_latency(&mut histogram, Duration::from_secs(100_000));
        assert_eq!(histogram.len(), 1002);
        let p50 = histogram.value_at_quantile(0.5);
        assert!((499..=501).contains(&p50), "p50 {p50}");
        let p99 = histogram.value_at_quantile(0.99);
        assert!((989..=991).contains(&p99), "p99 {p99}");
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= LATENCY_US_MAX);
    }
}
