//! The real Python grpcio client (tests/clients/grpcio_client.py) against the test backend
//! directly, no proxy in between: every scenario passes, one client process each, and after
//! the scenarios whose effect is on the server side, the backend's counters show it (the
//! cancel arrived, the deadline was sent, the streamed messages were received).
//!
//! Needs grpcio: `scripts/test-deps.sh` installs it; without it this test fails saying so.

use std::time::{Duration, Instant};

use ringway_load::backend::{
    parse_grpc_timeout, Backend, BackendConfig, BackendHandle, BackendStats,
};
use ringway_load::clients::{GrpcioClient, GrpcioOptions, GRPCIO_SCENARIOS};

const WAIT: Duration = Duration::from_secs(5);

fn grpcio() -> GrpcioClient {
    GrpcioClient::find().unwrap_or_else(|why| panic!("{why}"))
}

fn start_backend() -> BackendHandle {
    let config = BackendConfig::new("127.0.0.1:0".parse().unwrap(), "pod-grpcio");
    Backend::start(config).expect("backend starts")
}

/// Polls the backend's counters until `done` holds or [`WAIT`] passes; returns the last.
fn wait_for(backend: &BackendHandle, done: impl Fn(&BackendStats) -> bool) -> BackendStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = backend.stats();
        if done(&stats) || Instant::now() >= deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_script_lists_the_scenarios_the_harness_knows() {
    assert_eq!(grpcio().scenarios().unwrap(), GRPCIO_SCENARIOS);
}

#[test]
fn every_grpcio_scenario_passes_against_the_backend() {
    let client = grpcio();
    let backend = start_backend();
    let target = backend.local_addr().to_string();
    for &scenario in GRPCIO_SCENARIOS {
        let before = backend.stats();
        let run = client
            .run(&target, &GrpcioOptions::default(), &[scenario])
            .expect("the client runs");
        run.assert_passed(&[scenario]);
        // Every call grpcio made has ended on the backend's side too.
        let after = wait_for(&backend, |s| s.in_flight == 0);
        assert_eq!(after.in_flight, 0, "{scenario}: calls left in flight");
        match scenario {
            "client_streaming" => assert_eq!(after.messages_received - before.messages_received, 4),
            "bidi_ping_pong" => assert_eq!(after.messages_received - before.messages_received, 5),
            "cancellation" => assert_eq!(
                after.cancelled_by_client - before.cancelled_by_client,
                1,
                "the backend saw the cancel"
            ),
            "deadline" => {
                let seen = backend.last_request_headers().unwrap();
                let timeout = seen
                    .get_bytes("grpc-timeout")
                    .and_then(parse_grpc_timeout)
                    .expect("grpcio sent a grpc-timeout");
                assert!(
                    !timeout.is_zero() && timeout <= Duration::from_millis(500),
                    "{timeout:?}"
                );
                // Whoever noticed first, the call did not run on: the client cancelled at its
                // deadline, or the backend answered DEADLINE_EXCEEDED at its own.
                let ended = (after.cancelled_by_client - before.cancelled_by_client)
                    + (after.deadlines_exceeded - before.deadlines_exceeded);
                assert_eq!(ended, 1, "{after:?}");
            }
            _ => {}
        }
    }
}

#[test]
fn all_scenarios_run_in_one_process_too() {
    let backend = start_backend();
    let run = grpcio()
        .run(
            &backend.local_addr().to_string(),
            &GrpcioOptions::default(),
            &[],
        )
        .unwrap();
    run.assert_passed(GRPCIO_SCENARIOS);
}

#[test]
fn failures_are_reported_per_scenario_with_a_nonzero_exit() {
    // Nothing listens on the port of a backend that was shut down.
    let target = start_backend().local_addr().to_string();
    let options = GrpcioOptions {
        call_timeout: Some(Duration::from_secs(2)),
        ..GrpcioOptions::default()
    };
    let run = grpcio()
        .run(&target, &options, &["unary", "metadata"])
        .unwrap();
    assert_eq!(run.exit_code, Some(1), "{run:?}");
    let names: Vec<&str> = run.results.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(names, ["unary", "metadata"]);
    assert!(
        run.results
            .iter()
            .all(|r| !r.ok && r.detail.contains("UNAVAILABLE")),
        "{run:?}"
    );
}

#[test]
fn a_missing_interpreter_or_ca_file_is_a_clear_error() {
    let error = GrpcioClient::with_python("/nonexistent/python3").unwrap_err();
    assert!(error.contains("/nonexistent/python3"), "{error}");
    let options = GrpcioOptions {
        tls_ca: Some("/nonexistent/ca.pem".into()),
        authority: Some("api.ringway.test".into()),
        ..GrpcioOptions::default()
    };
    let run = grpcio().run("127.0.0.1:9", &options, &["unary"]).unwrap();
    assert_eq!(run.exit_code, Some(2), "{run:?}");
    assert!(run.stderr.contains("/nonexistent/ca.pem"), "{}", run.stderr);
    assert!(run.results.is_empty());
}
