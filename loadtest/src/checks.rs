//! The verdicts of a scaling scenario, computed from what the load saw: sans-IO.
//!
//! `scenario scale` records the load generator's time windows (calls per pod per window) and a
//! timeline of steps (when the DNS answer changed, which pods are live, which were removed,
//! when the proxy first asked DNS again). This module turns those into pass/fail verdicts and
//! the step metrics the report prints. It never touches a socket or a clock, so the checks are
//! unit-tested with synthetic windows: an evenly balanced run passes; a proxy pinning every
//! call to one pod, or failing calls during a scale-down, fails with a message naming the check,
//! the step and the numbers.
//!
//! The three checks, per step:
//!
//! - **balance**: from `settle` after the DNS change (one refresh interval plus one second) to
//!   the end of the step, every live pod's share of the calls is within
//!   `share_tolerance` (10%) of the fair share `1/n`, relative: with 6 pods, 16.7% ± 1.7%.
//! - **removed pods idle**: a pod removed from DNS gets no calls in windows that start once the
//!   removal is visible (the proxy's first DNS query after the change, or `settle` after the
//!   change when the proxy never asked) plus `removal_slack` for calls already in flight.
//! - **no failed calls**: no window of the step counted an error (a window a change falls into
//!   counts for the step that change starts).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One time window of the load, on the load's clock (zero = load start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub start: Duration,
    pub end: Duration,
    pub calls_ok: u64,
    pub errors: u64,
    /// Successful calls per `x-backend` name.
    pub per_pod: BTreeMap<String, u64>,
}

/// One step of the timeline: the pod set the DNS answered from `at` until `end`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// When the DNS answer changed to this step's pods (zero for the first step).
    pub at: Duration,
    /// When the next step began, or the load ended.
    pub end: Duration,
    /// Pods in the DNS answer during the step.
    pub live: Vec<String>,
    /// Pods this step's change removed from the DNS answer.
    pub removed: Vec<String>,
    /// When the proxy first asked DNS after the change, if it did during the step.
    pub visible_at: Option<Duration>,
    /// Calls each removed pod itself received from `removal_slack` after `visible_at` to the
    /// step's end, when the pods were asked; more precise than the load's windows, which
    /// count calls when they finish and by the `x-backend` of the answer.
    pub removed_pod_calls: Option<BTreeMap<String, u64>>,
}

/// Tolerances of the checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckParams {
    /// Time after a DNS change by which the shares must be fair: refresh interval + 1 s.
    pub settle: Duration,
    /// Allowed deviation from the fair share, relative to it (0.10 = 10%).
    pub share_tolerance: f64,
    /// Time after a removal became visible for calls already in flight to finish.
    pub removal_slack: Duration,
}

/// Which check a verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    Balance,
    RemovedPodsIdle,
    NoFailedCalls,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Balance => "balance",
            Check::RemovedPodsIdle => "removed-pods-idle",
            Check::NoFailedCalls => "no-failed-calls",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of one check on one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub check: Check,
    /// Index of the step in the timeline (0 = the starting pod set).
    pub step: usize,
    pub passed: bool,
    /// What was measured, in words and numbers.
    pub detail: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = if self.passed { "ok  " } else { "FAIL" };
        write!(
            f,
            "{outcome} {} step {}: {}",
            self.check, self.step, self.detail
        )
    }
}

/// What the report shows per step besides the verdicts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub pods: usize,
    pub at: Duration,
    /// Time from the DNS change to the end of the first window in which every live pod's share
    /// was within tolerance; `None` if no window of the step was.
    pub fair_after: Option<Duration>,
    /// Time from the DNS change to the proxy's first DNS query after it.
    pub visible_after: Option<Duration>,
    pub calls_ok: u64,
    pub errors: u64,
    /// Calls to removed pods once the removal was visible (plus slack).
    pub calls_to_removed_after_visible: u64,
    /// Share of each pod in the judged part of the step (after `settle`).
    pub shares: BTreeMap<String, f64>,
}

/// Every verdict and per-step metric of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub verdicts: Vec<Verdict>,
    pub steps: Vec<StepMetrics>,
}

impl Evaluation {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|verdict| verdict.passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|verdict| !verdict.passed)
    }
}

/// Judges every step of a run.
pub fn evaluate(samples: &[Sample], steps: &[Step], params: &CheckParams) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for (index, step) in steps.iter().enumerate() {
        let in_step: Vec<&Sample> = samples
            .iter()
            .filter(|sample| step_of(steps, sample) == Some(index))
            .collect();
        let (balance, shares) = check_balance(index, step, samples, params);
        let (removed, calls_to_removed) = check_removed_idle(index, step, samples, params);
        let failed = check_no_failed_calls(index, step, &in_step);
        evaluation.verdicts.push(balance);
        evaluation.verdicts.extend(removed);
        evaluation.verdicts.push(failed);
        evaluation.steps.push(StepMetrics {
            step: index,
            pods: step.live.len(),
            at: step.at,
            fair_after: fair_after(step, &in_step, params.share_tolerance),
            visible_after: step
                .visible_at
                .map(|visible| visible.saturating_sub(step.at)),
            calls_ok: in_step.iter().map(|sample| sample.calls_ok).sum(),
            errors: in_step.iter().map(|sample| sample.errors).sum(),
            calls_to_removed_after_visible: calls_to_removed,
            shares,
        });
    }
    evaluation
}

fn check_balance(
    index: usize,
    step: &Step,
    samples: &[Sample],
    params: &CheckParams,
) -> (Verdict, BTreeMap<String, f64>) {
    let from = step.at + params.settle;
    let judged: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.start >= from && sample.end <= step.end)
        .collect();
    let verdict = |passed, detail| Verdict {
        check: Check::Balance,
        step: index,
        passed,
        detail,
    };
    if step.live.is_empty() {
        return (verdict(true, "no live pods".into()), BTreeMap::new());
    }
    let counts = sum_per_pod(&judged);
    let total: u64 = counts.values().sum();
    if total == 0 {
        let detail = format!(
            "no successful calls between {} (the change at {} plus the settle time {}) and \
             the step's end at {}: the step is too short or the proxy served nothing",
            secs(from),
            secs(step.at),
            secs(params.settle),
            secs(step.end)
        );
        return (verdict(false, detail), BTreeMap::new());
    }
    let shares: BTreeMap<String, f64> = counts
        .iter()
        .map(|(pod, count)| (pod.clone(), *count as f64 / total as f64))
        .chain(
            step.live
                .iter()
                .filter(|pod| !counts.contains_key(*pod))
                .map(|pod| (pod.clone(), 0.0)),
        )
        .collect();
    let fair = 1.0 / step.live.len() as f64;
    let allowed = fair * params.share_tolerance;
    let unfair: Vec<String> = step
        .live
        .iter()
        .filter(|pod| (shares[*pod] - fair).abs() > allowed)
        .map(|pod| format!("{pod} got {}", percent(shares[pod])))
        .collect();
    let window = format!(
        "{total} calls from {} to {} ({} pods, fair {} ± {})",
        secs(from),
        secs(step.end),
        step.live.len(),
        percent(fair),
        percent(allowed)
    );
    let passed = unfair.is_empty();
    let detail = if passed {
        let spread = step.live.iter().map(|pod| shares[pod]);
        let (low, high) = spread.fold((1.0f64, 0.0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
        format!("{window}: shares {} to {}", percent(low), percent(high))
    } else {
        format!("{window}: {}", unfair.join(", "))
    };
    (verdict(passed, detail), shares)
}

fn check_removed_idle(
    index: usize,
    step: &Step,
    samples: &[Sample],
    params: &CheckParams,
) -> (Option<Verdict>, u64) {
    if step.removed.is_empty() {
        return (None, 0);
    }
    let (visible, how) = match step.visible_at {
        Some(visible) => (visible, "the proxy's first DNS query after the change"),
        None => (
            step.at + params.settle,
            "the settle time; the proxy never asked DNS",
        ),
    };
    let from = visible + params.removal_slack;
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.start >= from && sample.start < step.end)
        .collect();
    let (counts, counted_by) = match &step.removed_pod_calls {
        Some(counts) => (counts.clone(), "counted by the pods"),
        None => (sum_per_pod(&after), "answers seen by the load"),
    };
    let late: Vec<String> = step
        .removed
        .iter()
        .filter_map(|pod| {
            counts
                .get(pod)
                .filter(|count| **count > 0)
                .map(|c| (pod, c))
        })
        .map(|(pod, count)| format!("{pod} got {count}"))
        .collect();
    let calls: u64 = step.removed.iter().filter_map(|pod| counts.get(pod)).sum();
    let removed = step.removed.join(", ");
    let detail = format!(
        "removed {removed} at {}; visible at {} ({how}); calls to them from {} to {} \
         ({counted_by}): {}",
        secs(step.at),
        secs(visible),
        secs(from),
        secs(step.end),
        if late.is_empty() {
            "none".to_owned()
        } else {
            late.join(", ")
        }
    );
    let verdict = Verdict {
        check: Check::RemovedPodsIdle,
        step: index,
        passed: late.is_empty(),
        detail,
    };
    (Some(verdict), calls)
}

fn check_no_failed_calls(index: usize, step: &Step, in_step: &[&Sample]) -> Verdict {
    let errors: u64 = in_step.iter().map(|sample| sample.errors).sum();
    let calls: u64 = in_step.iter().map(|sample| sample.calls_ok).sum();
    let mut detail = format!(
        "{errors} failed of {} calls from {} to {}",
        calls + errors,
        secs(step.at),
        secs(step.end)
    );
    if let Some(first) = in_step.iter().find(|sample| sample.errors > 0) {
        detail.push_str(&format!(
            ", the first {} in the window at {}",
            first.errors,
            secs(first.start)
        ));
        if !step.removed.is_empty() {
            detail.push_str(&format!(
                " (during the scale-down removing {})",
                step.removed.join(", ")
            ));
        }
    }
    Verdict {
        check: Check::NoFailedCalls,
        step: index,
        passed: errors == 0,
        detail,
    }
}

/// The step a window counts for: the last one whose change came before the window's end, so
/// a window a change falls into counts for the change it shows (its failed calls, say).
fn step_of(steps: &[Step], sample: &Sample) -> Option<usize> {
    steps.iter().rposition(|step| step.at < sample.end)
}

/// The time from the step's change to the end of its first fair window.
fn fair_after(step: &Step, in_step: &[&Sample], tolerance: f64) -> Option<Duration> {
    in_step
        .iter()
        .find(|sample| is_fair(&step.live, &sample.per_pod, tolerance))
        .map(|sample| sample.end.saturating_sub(step.at))
}

/// Whether every live pod's share of `per_pod` is within `tolerance` of fair. Calls to pods
/// outside `live` count in the total, so a proxy still using a removed pod is not fair yet.
pub fn is_fair(live: &[String], per_pod: &BTreeMap<String, u64>, tolerance: f64) -> bool {
    let total: u64 = per_pod.values().sum();
    if live.is_empty() || total == 0 {
        return false;
    }
    let fair = 1.0 / live.len() as f64;
    live.iter().all(|pod| {
        let share = per_pod.get(pod).copied().unwrap_or(0) as f64 / total as f64;
        (share - fair).abs() <= fair * tolerance
    })
}

fn sum_per_pod(samples: &[&Sample]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        for (pod, count) in &sample.per_pod {
            *counts.entry(pod.clone()).or_insert(0) += count;
        }
    }
    counts
}

/// `12.3s`.
pub fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// `16.7%`.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_MS: u64 = 250;

    fn params() -> CheckParams {
        CheckParams {
            settle: Duration::from_millis(1500),
            share_tolerance: 0.10,
            removal_slack: Duration::from_millis(250),
        }
    }

    fn pods(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// The classic timeline: 3 → 6 → 2 pods, 4 s per step; the proxy asks DNS `lag` after
    /// each change.
    fn timeline(lag: Duration) -> Vec<Step> {
        let three = pods(&["pod-1", "pod-2", "pod-3"]);
        let six = pods(&["pod-1", "pod-2", "pod-3", "pod-4", "pod-5", "pod-6"]);
        vec![
            Step {
                at: ms(0),
                end: ms(4000),
                live: three,
                removed: vec![],
                visible_at: None,
                removed_pod_calls: None,
            },
            Step {
                at: ms(4000),
                end: ms(8000),
                live: six,
                removed: vec![],
                visible_at: Some(ms(4000) + lag),
                removed_pod_calls: None,
            },
            Step {
                at: ms(8000),
                end: ms(12000),
                live: pods(&["pod-1", "pod-2"]),
                removed: pods(&["pod-3", "pod-4", "pod-5", "pod-6"]),
                visible_at: Some(ms(8000) + lag),
                removed_pod_calls: None,
            },
        ]
    }

    /// One window per 250 ms, spread by `route(window start, step index)`.
    fn run(
        steps: &[Step],
        route: impl Fn(Duration, usize) -> BTreeMap<String, u64>,
    ) -> Vec<Sample> {
        let end = steps.last().unwrap().end;
        let mut samples = Vec::new();
        let mut start = Duration::ZERO;
        while start < end {
            let index = steps
                .iter()
                .position(|s| start >= s.at && start < s.end)
                .unwrap();
            let per_pod = route(start, index);
            samples.push(Sample {
                start,
                end: start + ms(WINDOW_MS),
                calls_ok: per_pod.values().sum(),
                errors: 0,
                per_pod,
            });
            start += ms(WINDOW_MS);
        }
        samples
    }

    /// A proxy that uses each change from its DNS query on and then round-robins exactly:
    /// 600 calls per window.
    fn even(steps: &[Step]) -> impl Fn(Duration, usize) -> BTreeMap<String, u64> + '_ {
        move |start, index| {
            let step = &steps[index];
            let seen = step.visible_at.unwrap_or(step.at);
            let live = if index > 0 && start < seen {
                &steps[index - 1].live
            } else {
                &step.live
            };
            live.iter()
                .map(|pod| (pod.clone(), 600 / live.len() as u64))
                .collect()
        }
    }

    fn failed(evaluation: &Evaluation) -> Vec<(Check, usize)> {
        evaluation.failures().map(|v| (v.check, v.step)).collect()
    }

    #[test]
    fn an_even_run_passes_every_check() {
        let steps = timeline(ms(200));
        let samples = run(&steps, even(&steps));
        let evaluation = evaluate(&samples, &steps, &params());
        assert!(evaluation.passed(), "{:#?}", evaluation.verdicts);
        // balance and no-failed-calls per step, removed-pods-idle for the scale-down.
        assert_eq!(evaluation.verdicts.len(), 7);
        assert_eq!(evaluation.steps[0].fair_after, Some(ms(WINDOW_MS)));
        assert_eq!(evaluation.steps[1].fair_after, Some(ms(500)));
        assert_eq!(evaluation.steps[1].visible_after, Some(ms(200)));
        assert_eq!(evaluation.steps[2].calls_to_removed_after_visible, 0);
    }

    #[test]
    fn a_proxy_pinning_one_pod_fails_balance_with_the_numbers() {
        let steps = timeline(ms(200));
        let samples = run(&steps, |_, _| BTreeMap::from([("pod-1".into(), 600)]));
        let evaluation = evaluate(&samples, &steps, &params());
        assert_eq!(
            failed(&evaluation),
            vec![
                (Check::Balance, 0),
                (Check::Balance, 1),
                (Check::Balance, 2)
            ]
        );
        let message = evaluation.failures().nth(1).unwrap().to_string();
        assert!(message.starts_with("FAIL balance step 1: "), "{message}");
        assert!(message.contains("6 pods, fair 16.7% ± 1.7%"), "{message}");
        assert!(message.contains("pod-1 got 100.0%"), "{message}");
        assert!(message.contains("pod-6 got 0.0%"), "{message}");
        assert_eq!(evaluation.steps[1].fair_after, None);
    }

    #[test]
    fn a_pickup_within_the_settle_time_passes_and_a_slower_one_fails() {
        // Asked DNS 1.25 s after each change: inside the 1.5 s settle time.
        let steps = timeline(ms(1250));
        let evaluation = evaluate(&run(&steps, even(&steps)), &steps, &params());
        assert!(evaluation.passed(), "{:#?}", evaluation.verdicts);
        assert_eq!(evaluation.steps[1].fair_after, Some(ms(1500)));
        // 2.5 s after: the judged part of each step (from 1.5 s) is partly stale.
        let steps = timeline(ms(2500));
        let evaluation = evaluate(&run(&steps, even(&steps)), &steps, &params());
        assert_eq!(
            failed(&evaluation),
            vec![(Check::Balance, 1), (Check::Balance, 2)]
        );
        assert_eq!(evaluation.steps[1].fair_after, Some(ms(2750)));
    }

    #[test]
    fn a_split_within_ten_percent_of_fair_passes_and_one_beyond_fails() {
        let steps = timeline(ms(200));
        let skewed = |first: u64| {
            move |_, index: usize| -> BTreeMap<String, u64> {
                timeline(ms(0))[index]
                    .live
                    .iter()
                    .enumerate()
                    .map(|(i, pod)| (pod.clone(), if i == 0 { first } else { 9 }))
                    .collect()
            }
        };
        // 10 calls against 9 per window: at most 2.6 points off fair, within 10% of it.
        assert!(evaluate(&run(&steps, skewed(10)), &steps, &params()).passed());
        // 12 against 9: 40% against a fair 33.3% with 3 pods.
        let evaluation = evaluate(&run(&steps, skewed(12)), &steps, &params());
        assert!(failed(&evaluation).contains(&(Check::Balance, 0)));
    }

    #[test]
    fn calls_to_a_removed_pod_after_the_removal_is_visible_fail() {
        let steps = timeline(ms(200));
        let mut samples = run(&steps, even(&steps));
        // In flight when the removal became visible (8.2 s): allowed within the slack.
        assert_eq!(samples[33].start, ms(8250));
        samples[33].per_pod.insert("pod-5".into(), 3);
        assert!(evaluate(&samples, &steps, &params()).passed());
        // A call after the slack.
        samples[40].per_pod.insert("pod-5".into(), 1);
        let evaluation = evaluate(&samples, &steps, &params());
        assert_eq!(failed(&evaluation), vec![(Check::RemovedPodsIdle, 2)]);
        let message = evaluation.failures().next().unwrap().to_string();
        assert!(
            message.contains("removed pod-3, pod-4, pod-5, pod-6 at 8.0s"),
            "{message}"
        );
        assert!(message.contains("visible at 8.2s"), "{message}");
        assert!(message.contains("pod-5 got 1"), "{message}");
        assert_eq!(evaluation.steps[2].calls_to_removed_after_visible, 1);
    }

    #[test]
    fn calls_counted_by_the_removed_pods_decide_when_present() {
        let mut steps = timeline(ms(200));
        let mut samples = run(&steps, even(&steps));
        // The load saw a late answer from pod-5, but the pods say no call arrived: in flight.
        samples[40].per_pod.insert("pod-5".into(), 1);
        steps[2].removed_pod_calls = Some(BTreeMap::from([("pod-5".into(), 0)]));
        let evaluation = evaluate(&samples, &steps, &params());
        assert!(evaluation.passed(), "{:#?}", evaluation.verdicts);
        steps[2].removed_pod_calls = Some(BTreeMap::from([("pod-3".into(), 4)]));
        let evaluation = evaluate(&samples, &steps, &params());
        let message = evaluation.failures().next().unwrap().to_string();
        assert!(
            message.contains("(counted by the pods): pod-3 got 4"),
            "{message}"
        );
        assert_eq!(evaluation.steps[2].calls_to_removed_after_visible, 4);
    }

    #[test]
    fn without_a_dns_query_the_removal_counts_as_visible_after_the_settle_time() {
        let mut steps = timeline(ms(200));
        let mut samples = run(&steps, even(&steps));
        steps[2].visible_at = None;
        // 9.0 s is before 8.0 + 1.5 + 0.25 s.
        samples[36].per_pod.insert("pod-6".into(), 5);
        let evaluation = evaluate(&samples, &steps, &params());
        assert!(evaluation.passed(), "{:#?}", evaluation.verdicts);
        samples[40].per_pod.insert("pod-6".into(), 5);
        let evaluation = evaluate(&samples, &steps, &params());
        let message = evaluation
            .failures()
            .find(|v| v.check == Check::RemovedPodsIdle)
            .unwrap()
            .to_string();
        assert!(message.contains("the proxy never asked DNS"), "{message}");
        assert!(message.contains("visible at 9.5s"), "{message}");
    }

    #[test]
    fn failed_calls_during_a_scale_down_fail_with_the_step_and_count() {
        let steps = timeline(ms(200));
        let mut samples = run(&steps, even(&steps));
        samples[34].errors = 7;
        samples[35].errors = 2;
        let evaluation = evaluate(&samples, &steps, &params());
        assert_eq!(failed(&evaluation), vec![(Check::NoFailedCalls, 2)]);
        let message = evaluation.failures().next().unwrap().to_string();
        assert!(
            message.starts_with("FAIL no-failed-calls step 2: 9 failed of "),
            "{message}"
        );
        assert!(
            message.contains("the first 7 in the window at 8.5s"),
            "{message}"
        );
        assert!(
            message.contains("during the scale-down removing pod-3"),
            "{message}"
        );
        assert_eq!(evaluation.steps[2].errors, 9);
    }

    #[test]
    fn a_window_a_change_falls_into_counts_for_that_change() {
        let mut steps = timeline(ms(200));
        // The change comes 100 ms into the window starting at 8.0 s.
        steps[1].end = ms(8100);
        steps[2].at = ms(8100);
        steps[2].visible_at = Some(ms(8300));
        let mut samples = run(&steps, even(&steps));
        samples[32].errors = 5;
        assert_eq!(samples[32].start, ms(8000));
        let evaluation = evaluate(&samples, &steps, &params());
        assert_eq!(failed(&evaluation), vec![(Check::NoFailedCalls, 2)]);
        assert_eq!(evaluation.steps[1].errors, 0);
        assert_eq!(evaluation.steps[2].errors, 5);
    }

    #[test]
    fn a_step_shorter_than_the_settle_time_cannot_pass_balance() {
        let mut steps = timeline(ms(200));
        steps[1].end = ms(5000);
        steps[2].at = ms(5000);
        steps[2].visible_at = Some(ms(5200));
        let samples = run(&steps, even(&steps));
        let evaluation = evaluate(&samples, &steps, &params());
        assert_eq!(failed(&evaluation), vec![(Check::Balance, 1)]);
        let message = evaluation.failures().next().unwrap().to_string();
        assert!(
            message.starts_with("FAIL balance step 1: no successful calls"),
            "{message}"
        );
    }

    #[test]
    fn no_calls_at_all_fail_every_balance_check() {
        let steps = timeline(ms(200));
        let evaluation = evaluate(&[], &steps, &params());
        assert_eq!(
            failed(&evaluation),
            vec![
                (Check::Balance, 0),
                (Check::Balance, 1),
                (Check::Balance, 2)
            ]
        );
    }

    #[test]
    fn is_fair_counts_calls_to_pods_outside_the_live_set() {
        let live = pods(&["a", "b"]);
        let even = BTreeMap::from([("a".into(), 50), ("b".into(), 50)]);
        assert!(is_fair(&live, &even, 0.1));
        let stale = BTreeMap::from([("a".into(), 40), ("b".into(), 40), ("c".into(), 20)]);
        assert!(!is_fair(&live, &stale, 0.1));
        assert!(!is_fair(&live, &BTreeMap::new(), 0.1));
        assert!(!is_fair(&[], &even, 0.1));
    }
}
