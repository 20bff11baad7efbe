//! The downstream HTTP/2 keepalive PING on busy connections, through the real server under both
//! io drivers, over h2c and over TLS: a connection whose streams come and go while a PING is in
//! flight must keep working, and every call on it must succeed.
//!
//! (Regression: the connection driver dropped its PING future whenever a stream was accepted
//! or the last one closed while the PONG was outstanding; h2 then refused the next PING as
//! "send_ping while pending" and the driver closed the connection, failing its open streams.)

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::certs_for_server::TestCa;
use common::h2client::{exchange, request, H2Client};
use common::https::{h2_over_tls, start_tls_proxy, tls_addr, worker_stats};
use common::*;

const BACKEND: &str = "pod-keepalive";

/// PINGs as often as the coarse timer allows (every housekeeping tick, 250 ms), with a timeout
/// no healthy loopback client misses.
const KEEPALIVE_FLAGS: [&str; 4] = [
    "--http2-keepalive-interval-ms",
    "1",
    "--http2-keepalive-timeout-ms",
    "10000",
];

/// How long the calls go on: a dozen PINGs or more at the tick above.
const CALLING_FOR: Duration = Duration::from_secs(3);

/// Calls on one connection, several at once and back to back, for [`CALLING_FOR`]; every one
/// must succeed. Returns how many were made.
fn call_steadily(client: &H2Client) -> u64 {
    let send = client.send.clone();
    client.runtime.block_on(async move {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < CALLING_FOR {
            let batch: Vec<_> = (0..4)
                .map(|i| {
                    let req = request(
                        "POST",
                        UNARY,
                        &[("content-type", "application/grpc"), ("te", "trailers")],
                    );
                    let message = Bytes::from(grpc_frame(format!("{calls}.{i}").as_bytes()));
                    tokio::spawn(exchange(send.clone(), req, vec![message]))
                })
                .collect();
            for (i, call) in batch.into_iter().enumerate() {
                let response = tokio::time::timeout(common::h2client::H2_TIMEOUT, call)
                    .await
                    .expect("response within the test timeout")
                    .expect("call task");
                assert_eq!(
                    response.trailer("grpc-status"),
                    Some("0"),
                    "call {calls}.{i}: {response:?}"
                );
            }
            calls += 4;
        }
        calls
    })
}

#[test]
fn a_busy_h2c_connection_survives_its_keepalive_pings() {
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_proxy(driver, &[backend.local_addr()], &KEEPALIVE_FLAGS);
        let client = H2Client::connect(proxy.local_addr());
        let calls = call_steadily(&client);
        let stats = worker_stats(&proxy);
        assert_eq!(
            stats.http2_connections.get(),
            1,
            "the connection was replaced"
        );
        assert_eq!(stats.http2_streams.get(), calls);
    });
}

#[test]
fn a_busy_h2_connection_over_tls_survives_its_keepalive_pings() {
    let ca = TestCa::new("keepalive");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(
            driver,
            &[backend.local_addr()],
            &leaf.cert,
            &leaf.key,
            &KEEPALIVE_FLAGS,
        );
        let client = h2_over_tls(tls_addr(&proxy), &ca.client_config(&[b"h2"]));
        let calls = call_steadily(&client);
        let stats = worker_stats(&proxy);
        assert_eq!(stats.tls.alpn_h2.get(), 1, "the connection was replaced");
        assert_eq!(stats.http2_streams.get(), calls);
    });
}
