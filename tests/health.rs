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

#[test]
fn a_killed_endpoint_is_ejected_after_consecutive_failures() {
    for_each_driver(|driver| {
        let a = start_backend_with("127.0.0.2:0", "a", |_| {});
        let b = start_backend_with("127.0.0.3:0", "b", |_| {});
        let proxy = start_proxy(
            driver,
            &[a.local_addr(), b.local_addr()],
            &[
                "--outlier-consecutive-failures",
                "3",
                "--outlier-base-ejection-ms",
                "60000",
                // Without retries every call to the dead endpoint fails, so failures are
                // countable; with them (the default) the client would not see any.
                "--retry-attempts-max",
                "0",
            ],
        );
        let addr = proxy.local_addr();
        b.kill();
        let statuses: Vec<u32> = (0..40).map(|_| call(addr).0).collect();
        let failures = statuses.iter().filter(|s| **s != 0).count();
        // Round robin sends every other call to b until it is ejected after 3 failures.
        assert_eq!(failures, 3, "{statuses:?}");
        assert!(statuses[10..].iter().all(|s| *s == 0), "{statuses:?}");
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
/// anyway, which succeeds once the endpoint is back.
#[test]
fn all_unhealthy_policy_is_explicit() {
    for policy in ["fail", "spread"] {
        for_each_driver(|driver| {
            let backend = start_backend_with("127.0.0.2:0", "a", |_| {});
            let backend_addr = backend.local_addr();
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
            backend.kill();
            assert_eq!(call(addr).0, 14);
            assert_eq!(call(addr).0, 14);
            // Ejected now; the endpoint comes back.
            let backend = start_backend_with(&backend_addr.to_string(), "a", |_| {});
            std::thread::sleep(Duration::from_millis(5));
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
