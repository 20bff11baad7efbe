//! HTTPS end to end through the real server, under both io drivers: gRPC-Web over TLS with
//! HTTP/1.1 (ALPN `http/1.1`, and no ALPN at all) and with HTTP/2 (ALPN `h2`), native gRPC over
//! TLS with HTTP/2 (the h2 crate over tokio-rustls), each checked byte for byte and against the
//! worker's TLS and HTTP/2 counters; a proxy with only the TLS listener (`--listen off`); and
//! start-up refusing a certificate it cannot load, naming the file, in-process and as the real
//! binary.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::certs_for_server::{tls_flags, TestCa};
use common::h2client::{exchange, request};
use common::https::{
    h2_over_tls, https, https_roundtrip, peer_leaf, start_tls_proxy, tls_addr, worker_stats,
};
use common::*;
use ringway::config::Config;
use ringway::server::Server;
use ringway::stats::{Totals, WorkerStats};

const BACKEND: &str = "pod-https";
const GRPC: &str = "application/grpc+proto";
const CLIENT_STREAM: &str = "/test.Echo/ClientStream";

/// How long the real binary may take to refuse a bad certificate before the test fails (a
/// hang, not a timing check).
const BINARY_EXIT_WAIT: Duration = Duration::from_secs(20);

/// Asserts the worker counted exactly these calls, by grpc-status. A call is counted just after
/// its last bytes were written, so the count is waited for (bounded) rather than read once.
fn assert_calls(stats: &WorkerStats, expected: &[(usize, u64)]) {
    let counts = || {
        let totals = Totals::sum([stats]);
        let wanted: Vec<(usize, u64)> = expected
            .iter()
            .map(|(code, _)| (*code, totals.calls_by_status[*code]))
            .collect();
        (wanted, totals.calls())
    };
    let total: u64 = expected.iter().map(|(_, n)| n).sum();
    wait_until(Duration::from_secs(10), || {
        counts() == (expected.to_vec(), total)
    });
    assert_eq!(counts(), (expected.to_vec(), total));
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn grpc_web_over_https_with_http1_for_alpn_http1_and_for_no_alpn() {
    let ca = TestCa::new("https-h1");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let addr = tls_addr(&proxy);
        let versions: [&[&'static rustls::SupportedProtocolVersion]; 2] =
            [&[&rustls::version::TLS13], &[&rustls::version::TLS12]];
        let alpns: [&[&[u8]]; 2] = [&[b"http/1.1"], &[]];
        let mut connections = 0;
        for versions in versions {
            for alpn in alpns {
                let config = ca.client_config_for(alpn, versions);
                let mut client = https(addr, &config);
                connections += 1;
                assert_eq!(client.stream.conn.alpn_protocol(), alpn.first().copied());
                assert_eq!(peer_leaf(&client.stream.conn), leaf.der.as_ref());

                // Binary unary: the exact head and body of the HTTP/1.1 path.
                client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"tls unary")));
                assert_echo(&client.read_response(), BACKEND, &[b"tls unary"]);

                // Text mode on the same (kept-alive) connection.
                let body = base64(&grpc_frame(b"tls text"));
                client.write(&post(
                    UNARY,
                    "application/grpc-web-text",
                    &[("x-grpc-web", "1")],
                    body.as_bytes(),
                ));
                let text = client.read_response();
                assert_eq!(
                    text.head,
                    streaming_head("application/grpc-web-text", BACKEND)
                );
                assert_eq!(text.messages(), [Bytes::from_static(b"tls text")]);
                assert_eq!(text.trailers(), [("grpc-status".into(), "0".into())]);

                // A server stream, message by message in one chunked body.
                let headers = [("x-stream-count", "3")];
                client.write(&grpc_web_request(
                    SERVER_STREAM,
                    &headers,
                    &grpc_frame(b"s"),
                ));
                let stream = client.read_response();
                assert_echo(&stream, BACKEND, &[b"s", b"s", b"s"]);
            }
        }
        let stats = worker_stats(&proxy);
        let tls = &stats.tls;
        assert_eq!(tls.alpn_http1.get(), connections);
        assert_eq!(tls.alpn_h2.get(), 0);
        assert_eq!(
            tls.handshakes_full.get() + tls.handshakes_resumed.get(),
            connections
        );
        assert_eq!(tls.handshakes_tls12.get(), 2);
        assert_eq!(stats.http2_connections.get(), 0);
        assert_calls(&stats, &[(0, 3 * connections)]);
    });
}

#[test]
fn grpc_web_over_https_with_http2() {
    let ca = TestCa::new("https-h2-web");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        // A browser offers both and gets h2.
        let config = ca.client_config(&[b"h2", b"http/1.1"]);
        let mut client = h2_over_tls(tls_addr(&proxy), &config);

        let binary = client.web_unary(UNARY, &[("origin", "https://app.example")], b"web h2");
        assert_eq!(binary.status, 200);
        assert_eq!(
            binary.header("content-type"),
            Some("application/grpc-web+proto")
        );
        assert_eq!(binary.header("x-backend"), Some(BACKEND));
        assert_eq!(binary.header("access-control-allow-origin"), Some("*"));
        assert!(binary.trailers.is_none(), "gRPC-Web has no HTTP/2 trailers");
        assert_eq!(binary.body(), echo_body(&[b"web h2"]));

        let body = base64(&grpc_frame(b"web text"));
        let text = client.call(
            UNARY,
            &[
                ("content-type", "application/grpc-web-text"),
                ("x-grpc-web", "1"),
            ],
            body.as_bytes(),
        );
        assert_eq!(
            text.header("content-type"),
            Some("application/grpc-web-text")
        );
        assert_eq!(text.messages(), [Bytes::from_static(b"web text")]);
        assert_eq!(text.web_trailer("grpc-status").as_deref(), Some("0"));

        let stream = client.call(
            SERVER_STREAM,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-stream-count", "3"),
            ],
            &grpc_frame(b"s"),
        );
        assert_eq!(stream.body(), echo_body(&[b"s", b"s", b"s"]));

        let stats = worker_stats(&proxy);
        assert_eq!(stats.tls.alpn_h2.get(), 1);
        assert_eq!(stats.tls.alpn_http1.get(), 0);
        assert_eq!(stats.tls.handshakes_full.get(), 1);
        assert_eq!(stats.http2_connections.get(), 1);
        assert_eq!(stats.http2_streams.get(), 3);
    });
}

#[test]
fn native_grpc_over_https_with_http2() {
    let ca = TestCa::new("https-h2-native");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let config = ca.client_config(&[b"h2"]);
        let mut client = h2_over_tls(tls_addr(&proxy), &config);

        // Unary: metadata both ways, the message, real HTTP/2 trailers.
        let unary = client.grpc_unary(
            UNARY,
            &[("x-echo-meta", "m1"), ("x-trailer-echo-t", "t1")],
            b"native tls",
        );
        assert_eq!(unary.status, 200);
        assert_eq!(unary.header("content-type"), Some(GRPC));
        assert_eq!(unary.header("x-backend"), Some(BACKEND));
        assert_eq!(unary.header("x-echo-meta"), Some("m1"));
        assert_eq!(unary.body(), grpc_frame(b"native tls"));
        assert_eq!(unary.trailer("grpc-status"), Some("0"));
        assert_eq!(unary.trailer("x-trailer-echo-t"), Some("t1"));
        let seen = backend.last_request_headers().unwrap();
        assert_eq!(seen.get("content-type"), Some(GRPC));
        assert_eq!(seen.get("te"), Some("trailers"));
        assert_eq!(seen.get("x-echo-meta"), Some("m1"));

        // Trailers-only: the status in the response head, no body, no trailers.
        let refused = client.grpc_unary(
            UNARY,
            &[("x-grpc-status", "5"), ("x-trailers-only", "1")],
            b"x",
        );
        assert_eq!(refused.header("grpc-status"), Some("5"));
        assert!(refused.body().is_empty());
        assert!(refused.trailers.is_none());

        // Server streaming.
        let stream = client.call(
            SERVER_STREAM,
            &[
                ("content-type", GRPC),
                ("te", "trailers"),
                ("x-stream-count", "3"),
            ],
            &grpc_frame(b"s"),
        );
        assert_eq!(
            stream.body(),
            [grpc_frame(b"s"), grpc_frame(b"s"), grpc_frame(b"s")].concat()
        );
        assert_eq!(stream.trailer("grpc-status"), Some("0"));

        // Client streaming, the messages in separate DATA frames.
        let send = client.send.clone();
        let pieces = vec![
            Bytes::from(grpc_frame(b"one")),
            Bytes::from(grpc_frame(b"two")),
            Bytes::from(grpc_frame(&vec![3u8; 100_000])),
        ];
        let streamed = client.runtime.block_on(async move {
            let req = request(
                "POST",
                CLIENT_STREAM,
                &[("content-type", GRPC), ("te", "trailers")],
            );
            tokio::time::timeout(common::h2client::H2_TIMEOUT, exchange(send, req, pieces))
                .await
                .expect("response within the test timeout")
        });
        let mut expected = b"onetwo".to_vec();
        expected.extend_from_slice(&[3u8; 100_000]);
        assert_eq!(streamed.body(), grpc_frame(&expected));
        assert_eq!(streamed.trailer("grpc-status"), Some("0"));
        assert_eq!(streamed.trailer("x-request-messages"), Some("3"));

        let stats = worker_stats(&proxy);
        assert_eq!(stats.tls.alpn_h2.get(), 1);
        assert_eq!(stats.tls.handshakes_full.get(), 1);
        assert_eq!(stats.http2_connections.get(), 1);
        assert_eq!(stats.http2_streams.get(), 4);
        assert_calls(&stats, &[(0, 3), (5, 1)]);
    });
}

/// Requests of every size over HTTPS with HTTP/1.1, each written at once: one TLS record for
/// the small ones (the head and the whole body decrypted together, more than the proxy's first
/// read takes), several for the large ones.
#[test]
fn grpc_web_requests_of_every_size_over_https_with_http1() {
    let ca = TestCa::new("https-sizes");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(
            driver,
            &[backend.local_addr()],
            &leaf.cert,
            &leaf.key,
            &["--header-read-timeout-ms", "60000"],
        );
        let config = ca.client_config(&[b"http/1.1"]);
        let mut client = https(tls_addr(&proxy), &config);
        for size in [
            0, 500, 900, 1_000, 1_500, 3_000, 8_000, 16_000, 16_500, 40_000, 300_000,
        ] {
            eprintln!("--- {size} bytes");
            let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            client.write(&grpc_web_request(UNARY, &[], &grpc_frame(&message)));
            assert_echo(&client.read_response(), BACKEND, &[&message]);
        }
    });
}

/// Pipelined requests over HTTPS with HTTP/1.1, written at once (decrypted together, so the
/// later ones wait in rustls while the first is proxied), are answered in order; one of them
/// waits for the backend long enough for the proxy to watch the client meanwhile.
#[test]
fn pipelined_requests_over_https_with_http1_are_answered_in_order() {
    let ca = TestCa::new("https-pipelined");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let mut client = https(tls_addr(&proxy), &ca.client_config(&[]));
        let mut pipelined = grpc_web_request(UNARY, &[("x-delay-ms", "200")], &grpc_frame(b"1"));
        for message in [&b"2"[..], b"3"] {
            pipelined.extend(grpc_web_request(UNARY, &[], &grpc_frame(message)));
        }
        client.write(&pipelined);
        for message in [&b"1"[..], b"2", b"3"] {
            assert_echo(&client.read_response(), BACKEND, &[message]);
        }
    });
}

/// A client that leaves during a call over HTTPS with HTTP/1.1, with a close_notify alert or
/// without one (as browsers close), has its upstream call cancelled.
#[test]
fn a_client_leaving_mid_call_over_https_cancels_the_upstream_call() {
    let ca = TestCa::new("https-leave");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        for (round, close_notify) in [(1, true), (2, false)] {
            let mut client = https(tls_addr(&proxy), &ca.client_config(&[]));
            let request = grpc_web_request(UNARY, &[("x-delay-ms", "60000")], &grpc_frame(b"x"));
            client.write(&request);
            assert!(wait_until(Duration::from_secs(10), || backend
                .stats()
                .in_flight
                == 1));
            if close_notify {
                client.stream.conn.send_close_notify();
                client.stream.flush().unwrap();
            }
            drop(client);
            assert!(
                wait_until(Duration::from_secs(10), || backend
                    .stats()
                    .cancelled_by_client
                    == round),
                "close_notify {close_notify}: the upstream call was not cancelled"
            );
        }
        assert_calls(&worker_stats(&proxy), &[(1, 2)]);
    });
}

/// A server stream over HTTPS reaches the client message by message: the first message arrives
/// while the backend holds the second back for a minute (nothing in the TLS layer waits for
/// more), over HTTP/1.1 and over HTTP/2.
#[test]
fn a_server_stream_over_https_arrives_message_by_message() {
    let ca = TestCa::new("https-stream");
    let leaf = ca.leaf("leaf");
    let held = [("x-stream-count", "2"), ("x-stream-interval-ms", "60000")];
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let addr = tls_addr(&proxy);

        let mut http1 = https(addr, &ca.client_config(&[]));
        http1.write(&grpc_web_request(
            SERVER_STREAM,
            &held,
            &grpc_frame(b"first"),
        ));
        assert_eq!(
            http1.read_raw_head(),
            streaming_head("application/grpc-web+proto", BACKEND)
        );
        assert_eq!(http1.read_chunk().unwrap(), grpc_frame(b"first"));

        let client = h2_over_tls(addr, &ca.client_config(&[b"h2"]));
        let send = client.send.clone();
        let first = client.runtime.block_on(async move {
            let mut send = send.ready().await.unwrap();
            let mut headers = vec![("content-type", GRPC), ("te", "trailers")];
            headers.extend_from_slice(&held);
            let (response, mut body) = send
                .send_request(request("POST", SERVER_STREAM, &headers), false)
                .unwrap();
            body.send_data(Bytes::from(grpc_frame(b"first")), true)
                .unwrap();
            let first = async {
                let mut recv = response.await.unwrap().into_body();
                recv.data().await.unwrap().unwrap()
            };
            tokio::time::timeout(common::h2client::H2_TIMEOUT, first)
                .await
                .expect("the first message while the stream is open")
        });
        assert_eq!(first, grpc_frame(b"first"));
    });
}

/// A request body sent over HTTPS with HTTP/1.1 in chunks with pauses between them (each its
/// own TLS record, arriving while the call already runs) reaches the backend whole, in binary
/// and in text mode.
#[test]
fn a_body_streamed_in_pieces_over_https_with_http1() {
    let ca = TestCa::new("https-pieces");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let mut client = https(tls_addr(&proxy), &ca.client_config(&[]));
        let message: Vec<u8> = (0..50_000).map(|i| (i % 251) as u8).collect();
        let binary = grpc_frame(&message);
        let text = base64(&binary).into_bytes();
        for (content_type, body) in [
            ("application/grpc-web+proto", &binary),
            ("application/grpc-web-text", &text),
        ] {
            client.write(&post_chunked_head(
                UNARY,
                content_type,
                &[("x-grpc-web", "1")],
            ));
            for piece in body.chunks(7_001) {
                client.write(&chunk(piece));
                std::thread::sleep(Duration::from_millis(10));
            }
            client.write(&chunk(&[]));
            let response = client.read_response();
            assert_eq!(response.messages(), [Bytes::from(message.clone())]);
            assert_eq!(response.grpc_status(), Some(0));
        }
    });
}

/// A client that offers no ALPN but opens with the HTTP/2 preface (prior knowledge over TLS)
/// is served HTTP/2.
#[test]
fn http2_with_prior_knowledge_over_tls_without_alpn() {
    let ca = TestCa::new("https-h2-no-alpn");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let mut client = h2_over_tls(tls_addr(&proxy), &ca.client_config(&[]));
        let native = client.grpc_unary(UNARY, &[], b"prior knowledge");
        assert_eq!(native.body(), grpc_frame(b"prior knowledge"));
        assert_eq!(native.trailer("grpc-status"), Some("0"));
        let web = client.web_unary(UNARY, &[], b"web");
        assert_eq!(web.body(), echo_body(&[b"web"]));
        let stats = worker_stats(&proxy);
        assert_eq!(stats.tls.alpn_http1.get(), 1, "no ALPN counts as http/1.1");
        assert_eq!(stats.http2_connections.get(), 1);
        assert_eq!(stats.http2_streams.get(), 2);
    });
}

/// With `--tls-ktls` every connection is served, by the kernel's TLS where the kernel has it
/// and by rustls otherwise (this machine's kernel has no `tls` module), and accounted for.
#[test]
fn with_kernel_tls_asked_for_every_connection_is_served_and_counted() {
    let ca = TestCa::new("https-ktls");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(
            driver,
            &[backend.local_addr()],
            &leaf.cert,
            &leaf.key,
            &["--tls-ktls"],
        );
        let addr = tls_addr(&proxy);
        let mut http1 = https(addr, &ca.client_config(&[b"http/1.1"]));
        for message in [&b"first"[..], &vec![b'k'; 200_000]] {
            http1.write(&grpc_web_request(UNARY, &[], &grpc_frame(message)));
            assert_echo(&http1.read_response(), BACKEND, &[message]);
        }
        let mut h2 = h2_over_tls(addr, &ca.client_config(&[b"h2"]));
        let native = h2.grpc_unary(UNARY, &[], &[b'n'; 200_000]);
        assert_eq!(native.body(), grpc_frame(&[b'n'; 200_000]));
        assert_eq!(native.trailer("grpc-status"), Some("0"));
        let tls = &worker_stats(&proxy).tls;
        assert_eq!(tls.ktls_connections.get() + tls.ktls_fallbacks.get(), 2);
        assert_eq!(tls.ktls_failures.get(), 0);
    });
}

/// `--listen off`: the TLS listener alone serves, HTTP/1.1 and HTTP/2, and the address the
/// server reports is the TLS one.
#[test]
fn with_listen_off_only_tls_is_served() {
    let ca = TestCa::new("tls-only");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let upstream = backend.local_addr().to_string();
        let mut args = vec![
            "ringway".to_string(),
            "--listen".into(),
            "off".into(),
            "--workers".into(),
            "1".into(),
            "--io-driver".into(),
            driver.into(),
            "--upstream".into(),
            upstream,
        ];
        args.extend(tls_flags(&leaf.cert, &leaf.key));
        let config = Config::from_args(args).expect("flags parse");
        let proxy = Server::start(&config).expect("proxy starts");
        let addr = tls_addr(&proxy);
        assert_eq!(proxy.local_addr(), addr);

        let response = https_roundtrip(
            addr,
            &ca.client_config(&[]),
            &grpc_web_request(UNARY, &[], &grpc_frame(b"only tls")),
        );
        assert_echo(&response, BACKEND, &[b"only tls"]);
        let mut h2 = h2_over_tls(addr, &ca.client_config(&[b"h2"]));
        let native = h2.grpc_unary(UNARY, &[], b"only tls h2");
        assert_eq!(native.body(), grpc_frame(b"only tls h2"));
        assert_eq!(native.trailer("grpc-status"), Some("0"));

        // A cleartext client finds only the TLS port, which tells it so.
        let mut plain = Reader::new(connect(addr));
        plain.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"plain")));
        let answer = String::from_utf8(plain.read_to_end()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let stats = worker_stats(&proxy);
        // Counted once the handshake's end is handled, just after the socket closed.
        assert!(wait_until(Duration::from_secs(10), || stats
            .tls
            .handshakes_plain_http
            .get()
            == 1));
        assert_eq!(stats.tls.alpn_http1.get(), 1);
        assert_eq!(stats.tls.alpn_h2.get(), 1);
    });
}

/// The start-up error for each kind of bad file names the file.
#[test]
fn a_bad_certificate_file_fails_start_up_naming_the_file() {
    let ca = TestCa::new("bad-files");
    let leaf = ca.leaf("leaf");
    let other = ca.leaf("other");
    let missing = ca.dir.join("missing.crt");
    let garbage = ca.dir.join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let cases = [
        (missing.as_path(), leaf.key.as_path(), "missing.crt"),
        (garbage.as_path(), leaf.key.as_path(), "garbage.crt"),
        (leaf.cert.as_path(), missing.as_path(), "missing.crt"),
        (leaf.cert.as_path(), other.key.as_path(), "other.key"),
    ];
    for (cert, key, named) in cases {
        let mut args = vec![
            "ringway".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--workers".into(),
            "1".into(),
        ];
        args.extend(tls_flags(cert, key));
        let config = Config::from_args(args).expect("flags parse");
        let error = match Server::start(&config) {
            Ok(_) => panic!("started with {cert:?} and {key:?}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(named), "{error}");
    }
}

/// The real binary exits with a failure and says which file is wrong, instead of serving
/// without TLS or hanging.
#[test]
fn the_binary_refuses_a_missing_certificate_and_names_it() {
    let ca = TestCa::new("bad-binary");
    let leaf = ca.leaf("leaf");
    let missing = ca.dir.join("no-such-dir").join("tls.crt");
    let output = run_binary(
        &[
            "--listen",
            "off",
            "--admin",
            "off",
            "--upstream",
            "127.0.0.1:9",
        ],
        &missing,
        &leaf.key,
    );
    assert!(!output.0, "the binary started: {}", output.1);
    assert!(
        output.1.contains(missing.to_str().unwrap()),
        "the error does not name the file:\n{}",
        output.1
    );
}

/// Runs the binary with `flags` and a TLS listener serving `cert` and `key`; returns whether it
/// exited successfully and what it wrote. Fails the test if it does not exit.
fn run_binary(flags: &[&str], cert: &Path, key: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(flags)
        .args(tls_flags(cert, key))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringway binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BINARY_EXIT_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the binary kept running with a missing certificate");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status.success(), text)
}

/// The certificate's reload counters reach the admin port, as text and for Prometheus.
#[test]
fn the_admin_port_shows_the_certificate_counters() {
    let ca = TestCa::new("admin-tls");
    let leaf = ca.leaf("leaf");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args([
            "--listen",
            "off",
            "--upstream",
            "127.0.0.1:9",
            "--workers",
            "1",
        ])
        .args(["--admin", &admin.to_string(), "--log-level", "warn"])
        .args(tls_flags(&leaf.cert, &leaf.key))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringway binary starts");
    let get = |path: &str| -> Option<String> {
        let mut reader = Reader::new(std::net::TcpStream::connect(admin).ok()?);
        reader.write(format!("GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n").as_bytes());
        Some(String::from_utf8_lossy(&reader.read_response().body).into_owned())
    };
    let mut text = None;
    wait_until(Duration::from_secs(10), || {
        text = get("/stats");
        text.is_some()
    });
    let prometheus = get("/stats/prometheus");
    let _ = child.kill();
    let _ = child.wait();
    let text = text.expect("the admin port answers");
    for line in [
        "tls.certificate_reloads: 0",
        "tls.certificate_reload_failures: 0",
        "tls.sni_unmatched: 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let prometheus = prometheus.expect("prometheus answers");
    assert!(
        prometheus.contains("\nringway_tls_certificate_reloads_total 0\n"),
        "{prometheus}"
    );
}
