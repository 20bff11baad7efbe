//! `scenario scale` end to end: real pods on 127.0.0.x, the project's DNS server, the real
//! `ringway` binary as a subprocess and the real load generator, on a short timeline
//! (3 → 6 → 2 pods, 3 s steps, DNS refresh every 500 ms).
//!
//! Both ways: ringway must pass every check, and a deliberately bad proxy (ringway started
//! with pod-1's address as its only, static upstream, so it pins every call to one pod) must
//! fail the balance check with a message naming the step and the numbers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ringway_load::checks::Check;
use ringway_load::proxy::ProxyKind;
use ringway_load::scenario::{self, ScenarioConfig};

fn ringway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringway"))
}

fn short_scenario(proxy: ProxyKind, name: &str) -> ScenarioConfig {
    let mut config = ScenarioConfig::new(proxy);
    config.timeline = vec![3, 6, 2];
    config.step = Duration::from_secs(3);
    config.refresh_interval_ms = 500;
    config.termination_grace_ms = 2_000;
    config.rate = Some(600.0);
    config.connections = 8;
    config.proxy_workers = 2;
    // The machine running the tests may be busy; the proxy gets a second to apply an answer.
    config.removal_slack_ms = 1_000;
    config.out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("scenario-{name}-{}", std::process::id()));
    config
}

#[test]
fn ringway_follows_scale_up_and_down_evenly_without_failed_calls() {
    let config = short_scenario(ProxyKind::Ringway { bin: ringway_bin() }, "ringway");
    let outcome = scenario::run(&config, &AtomicBool::new(false)).expect("scenario runs");
    let summary = scenario::summary(&config, &outcome);
    assert!(outcome.evaluation.passed(), "{summary}");
    // balance and no-failed-calls for 3 steps, removed-pods-idle for the scale-down.
    assert_eq!(outcome.evaluation.verdicts.len(), 7, "{summary}");
    assert_eq!(outcome.report.errors, 0, "{summary}");
    let scale_up = &outcome.evaluation.steps[1];
    assert!(
        scale_up.fair_after.is_some_and(|d| d <= config.settle()),
        "{summary}"
    );
    assert!(scale_up.visible_after.is_some(), "{summary}");
    assert_eq!(
        outcome.steps[2].removed,
        ["pod-6", "pod-5", "pod-4", "pod-3"]
    );
    for file in [
        "report.txt",
        "scenario.json",
        "load.json",
        "chart.svg",
        "ringway.log",
    ] {
        assert!(outcome.out_dir.join(file).is_file(), "{file} missing");
    }
    let json = std::fs::read_to_string(outcome.out_dir.join("scenario.json")).unwrap();
    assert!(json.contains("\"passed\": true"), "{json}");
    let _ = std::fs::remove_dir_all(&outcome.out_dir);
}

#[test]
fn a_proxy_pinning_every_call_to_one_pod_fails_the_balance_check() {
    let template = format!(
        "exec {} --listen {{listen}} --upstream {{first_pod}} --workers 1 \
         --admin off",
        ringway_bin().display()
    );
    let config = short_scenario(ProxyKind::Cmd { template }, "pinned");
    let outcome = scenario::run(&config, &AtomicBool::new(false)).expect("scenario runs");
    let summary = scenario::summary(&config, &outcome);
    assert!(!outcome.evaluation.passed(), "{summary}");
    let balance_failures: Vec<String> = outcome
        .evaluation
        .failures()
        .filter(|verdict| verdict.check == Check::Balance)
        .map(|verdict| verdict.to_string())
        .collect();
    assert_eq!(balance_failures.len(), 3, "{summary}");
    assert!(
        balance_failures[1].starts_with("FAIL balance step 1: "),
        "{summary}"
    );
    assert!(
        balance_failures[1]
            .contains("(6 pods, fair 16.7% ± 1.7%): pod-1 got 100.0%, pod-2 got 0.0%"),
        "{summary}"
    );
    assert!(summary.contains("FAILED: balance (step 0), balance (step 1), balance (step 2)"));
    let _ = std::fs::remove_dir_all(&outcome.out_dir);
}

#[test]
fn a_proxy_that_never_re_resolves_drops_calls_during_the_scale_down() {
    // pod-3 as the only, static upstream: the new pods are never used, and once pod-3 leaves
    // DNS and shuts down there is nowhere else to go. (With the first three pods, ringway would
    // move the calls pod-3 refuses to the other two and drop none.)
    let template = format!(
        "exec {} --listen {{listen}} --upstream 127.0.0.4:{{port}} --workers 1 --admin off",
        ringway_bin().display()
    );
    let config = short_scenario(ProxyKind::Cmd { template }, "static");
    let outcome = scenario::run(&config, &AtomicBool::new(false)).expect("scenario runs");
    let summary = scenario::summary(&config, &outcome);
    let failed: Vec<(Check, usize)> = outcome
        .evaluation
        .failures()
        .map(|verdict| (verdict.check, verdict.step))
        .collect();
    assert!(failed.contains(&(Check::Balance, 1)), "{summary}");
    assert!(failed.contains(&(Check::NoFailedCalls, 2)), "{summary}");
    let dropped = outcome
        .evaluation
        .failures()
        .find(|verdict| verdict.check == Check::NoFailedCalls)
        .unwrap()
        .to_string();
    assert!(
        dropped.starts_with("FAIL no-failed-calls step 2: "),
        "{dropped}"
    );
    assert!(
        dropped.contains("during the scale-down removing pod-6, pod-5, pod-4, pod-3"),
        "{dropped}"
    );
    assert!(outcome.report.errors > 0, "{summary}");
    let _ = std::fs::remove_dir_all(&outcome.out_dir);
}
