//! Endpoint health: active checks (TCP and grpc.health.v1), passive outlier ejection, and what
//! happens when no endpoint is eligible. Real backends on their own loopback addresses; each
//! scenario under both io drivers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// One unary call on a fresh connection: (grpc-status, x-backend).
fn call(proxy: SocketAddr) -> (u32, Option<String>) {
    let response = roundtrip(proxy, &grpc_web_request(UNARY, &[], &grpc_frame(b"hi")));
    assert_eq!(response.status, 200, "{response:?}");
    (
        response.grpc_status().expect("a grpc-status"),
        response.header("x-backend").map(str::to_owned),
    )
}

#[test]
fn active_checks_take_a_dead_endpoint_out_and_bring_it_back() {
    for kind in ["tcp", "grpc"] {
        for_each_driver(|driver| {
            let a = start_backend_with("127.0.0.2:0", "a", |_| {});
            let b = start_backend_with("127.0.0.3:0", "b", |_| {});
            let b_addr = b.local_addr();
            let proxy = start_proxy(
                driver,
                &[a.local_addr(), b_addr],
                &[
                    "--health-check",
                    kind,
                    "--health-check-interval-ms",
                    "50",
                    "--health-check-unhealthy-threshold",
                    "1",
                    "--health-check-healthy-threshold",
                    "1",
                    // Isolate active checks from passive ejection and retries.
                    "--outlier-consecutive-failures",
                    "0",
                    "--reconnect-backoff-ms",
                    "1",
                ],
            );
            let addr = proxy.local_addr();
            b.kill();
            // Once the checker saw b fail, every call goes to a: no call fails any more.
            assert!(
                wait_until(WAIT, || (0..4).all(|_| call(addr) == (0, Some("a".into())))),
                "{kind}: calls still reach the dead endpoint"
            );
            // b comes back on the same address: checks pass and it gets its share again.
            let b = start_backend_with(&b_addr.to_string(), "b", |_| {});
            assert!(
                wait_until(WAIT, || (0..4)
                    .any(|_| call(addr).1.as_deref() == Some("b"))),
                "{kind}: the endpoint never came back"
            );
            drop((proxy, a, b));
        });
    }
}

/// Calls answered UNAVAILABLE in a row eject the endpoint: round robin sends every other call
/// to the failing one until its third failure, then none.
#[test]
fn a_failing_endpoint_is_ejected_after_consecutive_failures() {
    for_each_driver(|driver| {
        let a = start_backend_with("127.0.0.2:0", "a", |_| {});
        let b = start_backend_with("127.0.0.3:0", "b", |c| c.error_rate = 1.0);
        let proxy = start_proxy(
            driver,
            &[a.local_addr(), b.local_addr()],
            &[
                "--outlier-consecutive-failures",
                "3",
                "--outlier-base-ejection-ms",
                "60000",
            ],
        );
        let addr = proxy.local_addr();
        let statuses: Vec<u32> = (0..40).map(|_| call(addr).0).collect();
        let failures = statuses.iter().filter(|s| **s != 0).count();
        // A processed call is never retried, so every call b answers reaches the client.
        assert_eq!(failures, 3, "{statuses:?}");
        assert!(statuses[10..].iter().all(|s| *s == 0), "{statuses:?}");
        assert_eq!(b.stats().calls_started, 3);
    });
}

/// A refused connect is conclusive: the call moves on to the other endpoint without spending a
/// retry (none is allowed here), and the dead endpoint is out of rotation at once, so no call
/// fails and it is tried once, not every other call.
#[test]
fn a_killed_endpoint_costs_no_call_even_without_retries() {
    for_each_driver(|driver| {
        let a = start_backend_with("127.0.0.2:0", "a", |_| {});
        let b = start_backend_with("127.0.0.3:0", "b", |_| {});
        let proxy = start_proxy(
            driver,
            &[a.local_addr(), b.local_addr()],
            // Long backoff: housekeeping's probes of the dead endpoint stay out of the count.
            &[
                "--retry-attempts-max",
                "0",
                "--reconnect-backoff-ms",
                "60000",
            ],
        );
        let addr = proxy.local_addr();
        assert_eq!(call(addr).0, 0);
        b.kill();
        for i in 0..40 {
            assert_eq!(call(addr), (0, Some("a".into())), "call {i}");
        }
        let refused = proxy.view().worker_stats[0].upstream_connects_refused.get();
        assert_eq!(refused, 1, "the dead endpoint was tried more than once");
    });
}

#[test]
fn killed_endpoint_costs_no_failed_call_with_retries() {
    for_each_driver(|driver| {
        let a = start_backend_with("127.0.0.2:0", "a", |_| {});
        let b = start_backend_with("127.0.0.3:0", "b", |_| {});
        let proxy = start_proxy(driver, &[a.local_addr(), b.local_addr()], &[]);
        let addr = proxy.local_addr();
        assert_eq!(call(addr).0, 0);
        b.kill();
        for _ in 0..20 {
            assert_eq!(call(addr), (0, Some("a".into())));
        }
    });
}

/// With every endpoint ejected, `fail` answers UNAVAILABLE without trying, and `spread` tries
/// anyway, which succeeds once the endpoint is healthy again.
#[test]
fn all_unhealthy_policy_is_explicit() {
    for policy in ["fail", "spread"] {
        for_each_driver(|driver| {
            let failing = start_backend_with("127.0.0.2:0", "a", |c| c.error_rate = 1.0);
            let backend_addr = failing.local_addr();
            let proxy = start_proxy(
                driver,
                &[backend_addr],
                &[
                    "--all-unhealthy",
                    policy,
                    "--outlier-consecutive-failures",
                    "2",
                    "--outlier-base-ejection-ms",
                    "60000",
                    "--reconnect-backoff-ms",
                    "1",
                    "--reconnect-backoff-max-ms",
                    "1",
                ],
            );
            let addr = proxy.local_addr();
            assert_eq!(call(addr).0, 14);
            assert_eq!(call(addr).0, 14);
            // Ejected now; a healthy server takes the address over.
            failing.kill();
            let backend = start_backend_with(&backend_addr.to_string(), "a", |_| {});
            let response = roundtrip(addr, &grpc_web_request(UNARY, &[], &grpc_frame(b"hi")));
            match policy {
                "fail" => {
                    assert_eq!(response.grpc_status(), Some(14));
                    assert_eq!(response.header("grpc-message"), Some("no healthy upstream"));
                    assert_eq!(backend.stats().calls_started, 0);
                }
                _ => assert_eq!(response.grpc_status(), Some(0), "{response:?}"),
            }
        });
    }
}
