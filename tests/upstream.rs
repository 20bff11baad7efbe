//! The upstream pool: round robin, stream and connection limits with their queue, GOAWAY, and
//! retrying a call that could not connect on another endpoint.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
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

/// A minimal HTTP/2 peer written frame by frame: it answers every new stream with
/// `GOAWAY(last-stream-id 0, NO_ERROR)`, i.e. "I processed nothing", which h2 servers send when
/// they shut down. RFC 9113 §6.8: streams above the last-stream-id were not processed and may
/// be retried.
struct GoawayPeer {
    addr: SocketAddr,
    streams_seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoawayPeer {
    fn start(listen: &str) -> GoawayPeer {
        let listener = TcpListener::bind(listen).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let streams_seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (streams_seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let seen = seen.clone();
                        std::thread::spawn(move || refuse_streams(stream, &seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        GoawayPeer {
            addr,
            streams_seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GoawayPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serve one connection until the client closes it (or goes quiet for the read timeout).
fn refuse_streams(mut stream: TcpStream, streams_seen: &AtomicUsize) {
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).is_err() {
        return;
    }
    // Our (empty) SETTINGS.
    let _ = stream.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
    loop {
        let mut header = [0u8; 9];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).is_err() {
            return;
        }
        let (kind, flags) = (header[3], header[4]);
        if kind == SETTINGS && flags & 0x1 == 0 {
            let _ = stream.write_all(&[0, 0, 0, SETTINGS, 0x1, 0, 0, 0, 0]);
        }
        if kind == HEADERS {
            streams_seen.fetch_add(1, Ordering::Relaxed);
            // GOAWAY: length 8, type 7, stream 0; last-stream-id 0, NO_ERROR.
            let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let _ = stream.write_all(&goaway);
        }
    }
}

/// A call the endpoint refused unprocessed (GOAWAY below its stream id) is retried on the
/// other endpoint, as a connect failure is.
#[test]
fn call_refused_by_goaway_is_retried_elsewhere() {
    for_each_driver(|driver| {
        let refusing = GoawayPeer::start("127.0.0.2:0");
        let live = start_backend_with("127.0.0.3:0", "live", |_| {});
        // Endpoints are ordered by address: the first call goes to the refusing peer.
        let proxy = start_proxy(driver, &[refusing.addr, live.local_addr()], &[]);
        let response = call(proxy.local_addr(), b"retry me");
        assert_eq!(refusing.streams_seen.load(Ordering::Relaxed), 1);
        assert_echo(&response, "live", &[b"retry me"]);
    });
}

/// RST_STREAM(REFUSED_STREAM) promises the stream was not processed (RFC 9113 §8.7): the call
/// is tried once more on the other endpoint (here it refuses too, so the status stays 14).
#[test]
fn refused_stream_is_retried_elsewhere() {
    for_each_driver(|driver| {
        let b2 = start_backend_with("127.0.0.2:0", "b2", |_| {});
        let b3 = start_backend_with("127.0.0.3:0", "b3", |_| {});
        let proxy = start_proxy(driver, &[b2.local_addr(), b3.local_addr()], &[]);
        let headers = [("x-reset", "before-headers"), ("x-reset-code", "7")];
        let response = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &headers, &grpc_frame(b"m")),
        );
        assert_eq!(response.grpc_status(), Some(14));
        assert_eq!((b2.stats().calls_started, b3.stats().calls_started), (1, 1));
    });
}

/// Concurrent calls from many client connections are multiplexed on one open HTTP/2
/// connection. The pool is warmed first: calls that arrive while the first connection is still
/// being opened do not wait for it but open connections of their own (up to the bound).
#[test]
fn concurrent_calls_share_one_connection() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let addr = proxy.local_addr();
        assert_echo(&call(addr, b"warm"), "b", &[b"warm"]);
        let clients: Vec<_> = (0..32)
            .map(|i| {
                std::thread::spawn(move || {
                    let message = format!("call {i}");
                    let response = roundtrip(
                        addr,
                        &grpc_web_request(
                            UNARY,
                            &[("x-delay-ms", "50")],
                            &grpc_frame(message.as_bytes()),
                        ),
                    );
                    assert_echo(&response, "b", &[message.as_bytes()]);
                })
            })
            .collect();
        for client in clients {
            client.join().expect("call succeeded");
        }
        let stats = backend.stats();
        assert_eq!((stats.calls_finished, stats.connections_accepted), (33, 1));
    });
}

/// An endpoint that refused connections is used again once it listens, after its reconnect
/// backoff.
#[test]
fn endpoint_recovers_after_backoff() {
    for_each_driver(|driver| {
        let addr = closed_port();
        let flags = [
            "--reconnect-backoff-ms",
            "20",
            "--reconnect-backoff-max-ms",
            "50",
        ];
        let proxy = start_proxy(driver, &[addr], &flags);
        assert_eq!(call(proxy.local_addr(), b"down").grpc_status(), Some(14));
        let backend = start_backend_with(&addr.to_string(), "back", |_| {});
        assert!(wait_until(WAIT, || {
            call(proxy.local_addr(), b"up").grpc_status() == Some(0)
        }));
        assert_echo(&call(proxy.local_addr(), b"up"), "back", &[b"up"]);
        assert_eq!(backend.stats().connections_accepted, 1);
    });
}

/// `--response-headers-timeout-ms`: a backend that does not start its answer in time ends the
/// call with UNAVAILABLE; a server stream whose headers came at once runs on past it, however
/// far apart its messages are.
#[test]
fn response_headers_timeout_bounds_a_silent_backend_not_a_long_stream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = ["--response-headers-timeout-ms", "300"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let silent = grpc_web_request(UNARY, &[("x-delay-ms", "5000")], &grpc_frame(b"m"));
        let response = roundtrip(proxy.local_addr(), &silent);
        assert_eq!(response.grpc_status(), Some(14), "{response:?}");
        assert!(
            response
                .header("grpc-message")
                .is_some_and(|m| m.contains("response headers")),
            "{response:?}"
        );
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().cancelled_by_client == 1
        }));

        let headers = [("x-stream-count", "3"), ("x-stream-interval-ms", "500")];
        let stream = grpc_web_request(SERVER_STREAM, &headers, &grpc_frame(b"s"));
        let response = roundtrip(proxy.local_addr(), &stream);
        assert_eq!(response.grpc_status(), Some(0), "{response:?}");
        assert_eq!(response.messages().len(), 3);
    });
}
