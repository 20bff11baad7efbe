//! The upstream pool: round robin, stream and connection limits with their queue, GOAWAY, and
//! retrying a call that could not connect on another endpoint.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ringway_load::backend::BackendHandle;

const WAIT: Duration = Duration::from_secs(5);

fn call(proxy: SocketAddr, message: &[u8]) -> Response {
    roundtrip(proxy, &grpc_web_request(UNARY, &[], &grpc_frame(message)))
}

/// A backend that takes one stream at a time per connection.
fn single_stream_backend() -> BackendHandle {
    start_backend_with("127.0.0.1:0", "b", |c| c.max_concurrent_streams = Some(1))
}

/// Park a call in the backend (it waits a minute before answering); dropping the returned
/// client cancels it.
fn park_call(proxy: SocketAddr, backend: &BackendHandle) -> Reader {
    let in_flight = backend.stats().in_flight;
    let mut client = Reader::new(connect(proxy));
    client.write(&grpc_web_request(
        UNARY,
        &[("x-delay-ms", "60000")],
        &grpc_frame(b"slow"),
    ));
    assert!(wait_until(WAIT, || backend.stats().in_flight == in_flight + 1));
    client
}

/// Start a call on its own thread; its response arrives on the channel.
fn call_in_background(proxy: SocketAddr, message: &'static [u8], done: &mpsc::Sender<Response>) {
    let done = done.clone();
    std::thread::spawn(move || {
        let _ = done.send(call(proxy, message));
    });
}

#[test]
fn round_robin_splits_evenly() {
    for_each_driver(|driver| {
        let b2 = start_backend_with("127.0.0.2:0", "b2", |_| {});
        let b3 = start_backend_with("127.0.0.3:0", "b3", |_| {});
        let proxy = start_proxy(driver, &[b2.local_addr(), b3.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let mut names = Vec::new();
        for _ in 0..10 {
            client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"rr")));
            let response = client.read_response();
            assert_eq!(response.grpc_status(), Some(0));
            names.push(response.header("x-backend").unwrap().to_owned());
        }
        assert_eq!(names.iter().filter(|n| *n == "b2").count(), 5, "{names:?}");
        assert_eq!(names.iter().filter(|n| *n == "b3").count(), 5, "{names:?}");
        assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
        assert_eq!(b2.stats().calls_started, 5);
        assert_eq!(b3.stats().calls_started, 5);
    });
}

/// One connection of one stream and a queue of one: with a call in flight and one queued, the
/// next is refused with RESOURCE_EXHAUSTED; the queued one runs once the slot frees up.
#[test]
fn full_pool_and_queue_exhaust_resources() {
    for_each_driver(|driver| {
        let backend = single_stream_backend();
        let flags = [
            "--h2-connections-per-endpoint-max",
            "1",
            "--pending-calls-max",
            "1",
            "--pending-timeout-ms",
            "30000",
        ];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        // A finished call proves the backend's SETTINGS (one stream) reached the pool.
        assert_echo(&call(proxy.local_addr(), b"warm"), "b", &[b"warm"]);
        let parked = park_call(proxy.local_addr(), &backend);

        // Two more calls: whichever reaches the pool first waits, the other is refused.
        let (done, results) = mpsc::channel();
        call_in_background(proxy.local_addr(), b"x", &done);
        call_in_background(proxy.local_addr(), b"x", &done);
        let refused = results.recv_timeout(WAIT * 2).expect("one call refused");
        assert_eq!(
            refused.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ngrpc-status: 8\r\n\
             grpc-message: upstream connection pool and queue are full\r\n\
             content-length: 0\r\n\r\n"
        );
        drop(parked);
        let queued = results
            .recv_timeout(WAIT * 2)
            .expect("queued call answered");
        assert_echo(&queued, "b", &[b"x"]);
        assert_eq!(backend.stats().connections_accepted, 1);
    });
}

/// A queued call that waits longer than `--pending-timeout-ms` gets UNAVAILABLE.
#[test]
fn queued_call_times_out_unavailable() {
    for_each_driver(|driver| {
        let backend = single_stream_backend();
        let flags = [
            "--h2-connections-per-endpoint-max",
            "1",
            "--pending-timeout-ms",
            "100",
        ];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        assert_echo(&call(proxy.local_addr(), b"warm"), "b", &[b"warm"]);
        let parked = park_call(proxy.local_addr(), &backend);
        assert_eq!(
            call(proxy.local_addr(), b"x").head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ngrpc-status: 14\r\n\
             grpc-message: timed out waiting for an upstream stream\r\n\
             content-length: 0\r\n\r\n"
        );
        drop(parked);
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
        assert_echo(&call(proxy.local_addr(), b"after"), "b", &[b"after"]);
    });
}

/// When the only connection is full, a second one is opened (up to the flag's bound).
#[test]
fn second_connection_when_the_first_is_full() {
    for_each_driver(|driver| {
        let backend = single_stream_backend();
        let flags = ["--h2-connections-per-endpoint-max", "2"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        assert_echo(&call(proxy.local_addr(), b"warm"), "b", &[b"warm"]);
        let parked = park_call(proxy.local_addr(), &backend);
        assert_echo(&call(proxy.local_addr(), b"beside"), "b", &[b"beside"]);
        assert_eq!(backend.stats().connections_accepted, 2);
        drop(parked);
    });
}

/// After a GOAWAY closes the connection, later calls succeed on a new one.
#[test]
fn goaway_then_new_connection() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        assert_echo(&call(proxy.local_addr(), b"before"), "b", &[b"before"]);
        backend.goaway();
        assert!(wait_until(WAIT, || backend.stats().connections_open == 0));
        for message in [&b"after"[..], b"again"] {
            assert_echo(&call(proxy.local_addr(), message), "b", &[message]);
        }
        assert_eq!(backend.stats().connections_accepted, 2);
    });
}

/// A call whose endpoint refuses the connection is retried on the other endpoint, before and
/// during the dead endpoint's reconnect backoff.
#[test]
fn connect_failure_is_retried_on_another_endpoint() {
    for_each_driver(|driver| {
        let live = start_backend_with("127.0.0.3:0", "live", |_| {});
        // Endpoints are ordered by address, so round robin tries the dead one (127.0.0.1) first.
        let proxy = start_proxy(driver, &[closed_port(), live.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for _ in 0..4 {
            client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"retry")));
            assert_echo(&client.read_response(), "live", &[b"retry"]);
        }
        assert_eq!(live.stats().calls_started, 4);
    });
}
