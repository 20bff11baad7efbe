//! Downstream HTTP/1.1 behaviour: keep-alive, pipelining, body framings, `Expect`, limits,
//! timeouts, request-smuggling defences and local routes, each with the exact bytes answered.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const PROTO: &str = "application/grpc-web+proto";

/// Two calls on one connection, then `Connection: close` ends it after the third.
#[test]
fn keep_alive_serves_calls_until_connection_close() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for message in [&b"first"[..], b"second"] {
            client.write(&grpc_web_request(UNARY, &[], &grpc_frame(message)));
            assert_echo(&client.read_response(), "b", &[message]);
        }
        client.write(&grpc_web_request(
            UNARY,
            &[("connection", "close")],
            &grpc_frame(b"last"),
        ));
        let last = client.read_response();
        assert_eq!(
            last.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(last.body, echo_body(&[b"last"]));
        client.assert_closed();
    });
}

/// HTTP/1.0 keeps the connection only with `Connection: keep-alive`.
#[test]
fn http10_keeps_the_connection_only_when_asked() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(
            client.read_until(b"ok\n"),
            b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\
              connection: keep-alive\r\n\r\nok\n"
        );
        client.write(b"GET /healthz HTTP/1.0\r\n\r\n");
        assert_eq!(
            client.read_to_end(),
            b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n"
        );
    });
}

/// Three requests in one write are answered in order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let messages: [&[u8]; 3] = [b"one", b"two", b"three"];
        let mut pipelined = Vec::new();
        for message in messages {
            pipelined.extend(grpc_web_request(UNARY, &[], &grpc_frame(message)));
        }
        pipelined.extend_from_slice(b"GET /healthz HTTP/1.1\r\nhost: test.local\r\n\r\n");
        client.write(&pipelined);
        for message in messages {
            assert_echo(&client.read_response(), "b", &[message]);
        }
        assert_eq!(client.read_response().body, b"ok\n");
    });
}

/// A chunked body is reassembled whatever the chunk boundaries, including inside the 5-byte
/// gRPC prefix, and whether the chunks arrive together or one write each.
#[test]
fn chunked_body_split_anywhere() {
    let backend = start_backend("b");
    let message = b"chunk boundaries anywhere";
    let frame = grpc_frame(message);
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for split in 1..frame.len() {
            let mut request = post_chunked_head(UNARY, PROTO, &[]);
            request.extend(chunked_body(&[&frame[..split], &frame[split..]]));
            client.write(&request);
            assert_echo(&client.read_response(), "b", &[message]);
        }
        // One byte per chunk, one write per chunk.
        client.write(&post_chunked_head(UNARY, PROTO, &[]));
        for byte in frame.chunks(1) {
            client.write(&chunk(byte));
        }
        client.write(b"0\r\n\r\n");
        assert_echo(&client.read_response(), "b", &[message]);
    });
}

/// A Content-Length body may arrive in pieces, split inside the gRPC prefix.
#[test]
fn content_length_body_in_pieces() {
    let backend = start_backend("b");
    let message = b"length-delimited";
    let request = grpc_web_request(UNARY, &[], &grpc_frame(message));
    let body_start = request.len() - grpc_frame(message).len();
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for cut in [
            body_start,
            body_start + 2,
            body_start + 5,
            request.len() - 1,
        ] {
            client.write(&request[..cut]);
            client.write(&request[cut..]);
            assert_echo(&client.read_response(), "b", &[message]);
        }
    });
}

/// `Expect: 100-continue` gets the interim response before the body is sent.
#[test]
fn expect_100_continue() {
    let backend = start_backend("b");
    let body = grpc_frame(b"after continue");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let request = grpc_web_request(UNARY, &[("expect", "100-continue")], &body);
        client.write(&request[..request.len() - body.len()]);
        assert_eq!(client.read_raw_head(), "HTTP/1.1 100 Continue\r\n\r\n");
        client.write(&body);
        assert_echo(&client.read_response(), "b", &[b"after continue"]);
    });
}

fn assert_refused(proxy: std::net::SocketAddr, request: &[u8], expected: &str) {
    let mut client = Reader::new(connect(proxy));
    client.write(request);
    assert_eq!(
        String::from_utf8_lossy(&client.read_to_end()),
        expected,
        "request {:?}",
        String::from_utf8_lossy(request)
    );
}

#[test]
fn oversized_heads_get_431_and_close() {
    let backend = start_backend("b");
    let expected = local_error(
        "431 Request Header Fields Too Large",
        "request head too large",
    );
    for_each_driver(|driver| {
        let flags = ["--header-bytes-max", "512", "--header-count-max", "8"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let long_value = "v".repeat(600);
        let too_long = grpc_web_request(UNARY, &[("x-long", &long_value)], &grpc_frame(b"x"));
        assert_refused(proxy.local_addr(), &too_long, &expected);
        let many: Vec<(String, String)> = (0..8).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let too_many = grpc_web_request(UNARY, &many, &grpc_frame(b"x"));
        assert_refused(proxy.local_addr(), &too_many, &expected);
        // Just under both limits still works.
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&grpc_web_request(UNARY, &many[..3], &grpc_frame(b"x")));
        assert_echo(&client.read_response(), "b", &[b"x"]);
    });
    assert_eq!(backend.stats().calls_started, 2);
}

#[test]
fn heads_larger_than_the_read_buffer_grow_it() {
    // A browser's head with a bearer token and cookies is several times the default 1 KiB
    // buffer: it must grow, on every request of a keep-alive connection, pipelined or not.
    let backend = start_backend("b");
    let token = format!("Bearer {}", "t".repeat(1500));
    let cookie = "c".repeat(1200);
    for_each_driver(|driver| {
        for buffer in ["512", "1024"] {
            let proxy = start_proxy(
                driver,
                &[backend.local_addr()],
                &["--read-buffer-bytes", buffer],
            );
            let mut client = Reader::new(connect(proxy.local_addr()));
            let request = |i: u8| {
                grpc_web_request(
                    UNARY,
                    &[("authorization", &token), ("cookie", &cookie)],
                    &grpc_frame(&[i; 16]),
                )
            };
            for i in 0..3 {
                client.write(&request(i));
                assert_echo(&client.read_response(), "b", &[&[i; 16]]);
            }
            let mut pipelined = request(7);
            pipelined.extend(request(8));
            client.write(&pipelined);
            assert_echo(&client.read_response(), "b", &[&[7; 16]]);
            assert_echo(&client.read_response(), "b", &[&[8; 16]]);
        }
    });
}

#[test]
fn oversized_bodies_get_413_and_close() {
    let backend = start_backend("b");
    let expected = local_error("413 Content Too Large", "request body too large");
    let big = grpc_frame(&[7u8; 100]);
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &["--body-bytes-max", "64"]);
        assert_refused(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[], &big),
            &expected,
        );
        let mut chunked = post_chunked_head(UNARY, PROTO, &[]);
        chunked.extend(chunked_body(&[&big[..50], &big[50..]]));
        assert_refused(proxy.local_addr(), &chunked, &expected);
    });
    assert_eq!(backend.stats().calls_started, 0);
}

/// A head that stops arriving gets 408 once the header read timeout passes.
#[test]
fn slow_head_gets_408() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let flags = ["--header-read-timeout-ms", "100"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        assert_refused(
            proxy.local_addr(),
            b"POST /test.Echo/Unary HTTP/1.1\r\nhost: test.local\r\n",
            &local_error("408 Request Timeout", "request not received in time"),
        );
    });
}

/// An idle keep-alive connection is closed without a word, after a request or before any.
#[test]
fn idle_connection_closes_silently() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let flags = ["--idle-timeout-ms", "100"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"then idle")));
        assert_echo(&client.read_response(), "b", &[b"then idle"]);
        client.assert_closed();
        Reader::new(connect(proxy.local_addr())).assert_closed();
    });
}

/// Ambiguous framing is refused with 400 (an unknown coding with 501), then the connection
/// closes: nothing after such a request can be trusted.
#[test]
fn smuggling_attempts_are_refused_and_close() {
    let backend = start_backend("b");
    let frame = grpc_frame(b"x");
    let head = |extra: &str| {
        format!(
            "POST /test.Echo/Unary HTTP/1.1\r\nhost: test.local\r\n\
             content-type: application/grpc-web+proto\r\n{extra}\r\n"
        )
        .into_bytes()
    };
    let with_body = |mut head: Vec<u8>, body: &[u8]| {
        head.extend_from_slice(body);
        head
    };
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            with_body(
                head("content-length: 6\r\ntransfer-encoding: chunked\r\n"),
                &chunked_body(&[&frame]),
            ),
            local_error("400 Bad Request", "content-length with transfer-encoding"),
        ),
        (
            with_body(head("content-length: 6\r\ncontent-length: 7\r\n"), &frame),
            local_error("400 Bad Request", "conflicting content-length values"),
        ),
        (
            with_body(
                head("transfer-encoding: chunked\r\n"),
                b"zz\r\n000000\r\n0\r\n\r\n",
            ),
            local_error("400 Bad Request", "bad chunk size"),
        ),
        (
            with_body(head("content-length: 6\r\nx-folded: a\r\n b\r\n"), &frame),
            local_error("400 Bad Request", "bad header name"),
        ),
        (
            with_body(
                head("transfer-encoding: gzip, chunked\r\n"),
                &chunked_body(&[&frame]),
            ),
            local_error("501 Not Implemented", "unsupported transfer coding"),
        ),
    ];
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        for (request, expected) in &cases {
            assert_refused(proxy.local_addr(), request, expected);
        }
    });
    assert_eq!(backend.stats().calls_started, 0);
}

/// A refused request on one connection does not disturb a call in flight on another.
#[test]
fn bad_request_leaves_concurrent_call_alone() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut streaming = Reader::new(connect(proxy.local_addr()));
        let headers = [("x-stream-count", "2"), ("x-stream-interval-ms", "200")];
        streaming.write(&grpc_web_request(
            SERVER_STREAM,
            &headers,
            &grpc_frame(b"s"),
        ));
        streaming.read_raw_head();
        assert_eq!(streaming.read_chunk().unwrap(), grpc_frame(b"s"));
        assert_refused(
            proxy.local_addr(),
            &with_te_and_length(),
            &local_error("400 Bad Request", "content-length with transfer-encoding"),
        );
        assert_eq!(streaming.read_chunk().unwrap(), grpc_frame(b"s"));
        assert_eq!(
            streaming.read_chunk().unwrap(),
            trailer_frame(&[("grpc-status", "0")])
        );
        assert_eq!(streaming.read_chunk(), None);
    });
}

fn with_te_and_length() -> Vec<u8> {
    b"POST /test.Echo/Unary HTTP/1.1\r\nhost: test.local\r\ncontent-type: application/grpc-web\r\n\
      content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        .to_vec()
}

/// Requests that are not gRPC-Web calls: 415 for another content type, 405 for another
/// method, 200 for the health path.
#[test]
fn local_routes() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        // (`application/json` is a Connect unary call now; an `application/<codec>` without
        // `connect-protocol-version` is nobody's.)
        assert_refused(
            proxy.local_addr(),
            &post(UNARY, "application/xml", &[], b"<x/>"),
            &local_error(
                "415 Unsupported Media Type",
                "content-type must be application/grpc-web or application/grpc-web-text",
            ),
        );
        assert_refused(
            proxy.local_addr(),
            b"GET /test.Echo/Unary HTTP/1.1\r\nhost: test.local\r\n\r\n",
            &local_error("405 Method Not Allowed", "gRPC-Web calls use POST"),
        );
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(b"GET /healthz HTTP/1.1\r\nhost: test.local\r\n\r\n");
        assert_eq!(
            client.read_until(b"ok\n"),
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n"
        );
        // The connection stays usable after the health check.
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"after")));
        assert_echo(&client.read_response(), "b", &[b"after"]);
    });
    assert_eq!(backend.stats().calls_started, 2);
}

/// A request pipelined while the previous call still waits upstream is kept and answered next.
#[test]
fn request_pipelined_during_a_call_is_answered_after_it() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&grpc_web_request(
            UNARY,
            &[("x-delay-ms", "200")],
            &grpc_frame(b"slow"),
        ));
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().in_flight == 1
        }));
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"next")));
        assert_echo(&client.read_response(), "b", &[b"slow"]);
        assert_echo(&client.read_response(), "b", &[b"next"]);
    });
}

/// A chunked body may end with a trailer section; it is consumed, not forwarded.
#[test]
fn chunked_body_with_trailer_section() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let mut request = post_chunked_head(UNARY, PROTO, &[]);
        request.extend(chunk(&grpc_frame(b"t")));
        request.extend_from_slice(b"0\r\nx-checksum: 1\r\n\r\n");
        client.write(&request);
        assert_echo(&client.read_response(), "b", &[b"t"]);
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"u")));
        assert_echo(&client.read_response(), "b", &[b"u"]);
    });
}

/// A body that stops arriving mid-call gets 408 and the upstream stream is cancelled.
#[test]
fn stalled_body_gets_408_and_cancels_upstream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = ["--header-read-timeout-ms", "100"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let frame = grpc_frame(b"never finished");
        let request = grpc_web_request(UNARY, &[], &frame);
        assert_refused(
            proxy.local_addr(),
            &request[..request.len() - 3],
            &local_error("408 Request Timeout", "request not received in time"),
        );
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().cancelled_by_client == 1
        }));
    });
}

/// A body trickled a byte at a time never lets the read timeout pass, but the whole body's
/// deadline (`--request-body-timeout-ms`) still ends it with 408.
#[test]
fn trickled_body_meets_the_whole_body_deadline() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = [
            "--header-read-timeout-ms",
            "2000",
            "--request-body-timeout-ms",
            "600",
        ];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let frame = grpc_frame(&[b'x'; 64]);
        let request = grpc_web_request(UNARY, &[], &frame);
        let body_at = request.len() - frame.len();
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&request[..body_at]);
        let started = std::time::Instant::now();
        // One byte every 100 ms: well inside the read timeout, for longer than the deadline.
        let mut sent = body_at;
        while started.elapsed() < Duration::from_millis(1500) && sent < request.len() - 1 {
            if client.stream.write_all(&request[sent..sent + 1]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            client.read_raw_head(),
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 29\r\nconnection: close\r\n\r\n",
        );
        assert!(sent < request.len() - 1, "the body never completed");
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().cancelled_by_client == 1
        }));
    });
}

/// A client that closes mid-body is a client close (nginx's 499 in the access log), not a
/// timeout: nothing is answered, and the upstream stream is cancelled.
#[test]
fn client_closing_mid_body_is_logged_as_499_and_cancels_upstream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let log_path =
            std::env::temp_dir().join(format!("ringway-499-{driver}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log_path);
        let log = log_path.to_str().unwrap();
        let flags = ["--access-log", log, "--access-log-format", "json"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let request = grpc_web_request(UNARY, &[], &grpc_frame(b"never finished"));
        let mut client = connect(proxy.local_addr());
        client.write_all(&request[..request.len() - 3]).unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().calls_started == 1
        }));
        drop(client);
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().cancelled_by_client == 1
        }));
        let lines = || std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            wait_until(Duration::from_secs(5), || lines().lines().count() == 1),
            "{}",
            lines()
        );
        let line = lines();
        assert!(line.contains("\"status\":499,\"grpc_status\":1,"), "{line}");
        drop(proxy);
        let _ = std::fs::remove_file(&log_path);
    });
}

/// `Expect` values other than 100-continue get 417; an oversized body announced with
/// 100-continue gets 413 without the interim response.
#[test]
fn expectations_that_cannot_be_met() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &["--body-bytes-max", "64"]);
        let head = |expect: &str, length: usize| {
            format!(
                "POST {UNARY} HTTP/1.1\r\nhost: test.local\r\ncontent-type: {PROTO}\r\n\
                 expect: {expect}\r\ncontent-length: {length}\r\n\r\n"
            )
            .into_bytes()
        };
        assert_refused(
            proxy.local_addr(),
            &head("something-else", 6),
            &local_error("417 Expectation Failed", "unsupported expectation"),
        );
        assert_refused(
            proxy.local_addr(),
            &head("100-continue", 1000),
            &local_error("413 Content Too Large", "request body too large"),
        );
    });
    assert_eq!(backend.stats().calls_started, 0);
}

/// A grpc-web-text body that is not base64 gets 400.
#[test]
fn bad_base64_gets_400() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        assert_refused(
            proxy.local_addr(),
            &post(UNARY, "application/grpc-web-text", &[], b"AAAA*AAA"),
            &local_error("400 Bad Request", "grpc-web-text body is not valid base64"),
        );
    });
}

/// HEAD on the health path: the same head as GET, no body.
#[test]
fn head_on_health_path() {
    let backend = start_backend("b");
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(b"HEAD /healthz HTTP/1.1\r\nhost: test.local\r\n\r\n");
        assert_eq!(
            client.read_raw_head(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n"
        );
        client.write(b"GET /healthz HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n\r\n");
        assert_eq!(
            client.read_to_end(),
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\
              connection: close\r\n\r\nok\n"
        );
    });
}

/// A large body refused before it was read: the client, still uploading, must be able to
/// read the answer (the proxy may not reset the connection under it).
#[test]
fn large_refused_body_answer_is_readable() {
    let backend = start_backend("b");
    let big = grpc_frame(&vec![1u8; 4 * 1024 * 1024]);
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[backend.local_addr()], &["--body-bytes-max", "64"]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let request = grpc_web_request(UNARY, &[], &big);
        // The proxy answers after the head; the rest of the upload may fail, which is fine.
        let _ = std::io::Write::write_all(&mut client.stream, &request);
        assert_eq!(
            String::from_utf8_lossy(&client.read_to_end()),
            local_error("413 Content Too Large", "request body too large")
        );
    });
}

/// Unusual but unambiguous framings are accepted: chunk extensions, a capitalised coding, a
/// repeated identical Content-Length, an absolute-form target, a head sent byte by byte.
#[test]
fn unusual_but_unambiguous_requests_are_served() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let frame = grpc_frame(b"odd");
        let mut client = Reader::new(connect(proxy.local_addr()));

        let mut extensions = post_chunked_head(UNARY, PROTO, &[]);
        extensions.extend_from_slice(format!("{:x};name=value\r\n", frame.len()).as_bytes());
        extensions.extend_from_slice(&frame);
        extensions.extend_from_slice(b"\r\n0;last\r\n\r\n");
        let mut capitalised = format!(
            "POST {UNARY} HTTP/1.1\r\nHost: test.local\r\nContent-Type: {PROTO}\r\n\
             Transfer-Encoding: Chunked\r\n\r\n"
        )
        .into_bytes();
        capitalised.extend(chunked_body(&[&frame]));
        let length = frame.len().to_string();
        let repeated = post(
            UNARY,
            PROTO,
            &[("content-length", &format!("{length}, {length}"))],
            &frame,
        );
        let mut absolute = format!(
            "POST http://test.local{UNARY} HTTP/1.1\r\nhost: test.local\r\n\
             content-type: {PROTO}\r\ncontent-length: {length}\r\n\r\n"
        )
        .into_bytes();
        absolute.extend_from_slice(&frame);
        for request in [&extensions, &capitalised, &repeated, &absolute] {
            client.write(request);
            assert_echo(&client.read_response(), "b", &[b"odd"]);
        }
        assert_eq!(
            backend.last_request_headers().unwrap().get(":path"),
            Some(UNARY)
        );

        for byte in grpc_web_request(UNARY, &[], &frame).chunks(1) {
            client.write(byte);
        }
        assert_echo(&client.read_response(), "b", &[b"odd"]);
    });
}

/// A request target that is not a path (nor an absolute http(s) URI) gets 400 and never reaches
/// the upstream: `foo/admin.Svc/Delete` must not become `:path /foo/admin.Svc/Delete` behind a
/// path rule that only let `/public.Svc/` through. An absolute-form target names the authority
/// the upstream sees (RFC 9112 §3.2.2: Host is ignored then).
#[test]
fn targets_that_are_not_paths_are_refused() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let frame = grpc_frame(b"x");
        for target in ["foo/admin.Svc/Delete", "admin.Svc/Delete", "?x"] {
            let request = format!(
                "POST {target} HTTP/1.1\r\nhost: test.local\r\ncontent-type: {PROTO}\r\n\
                 content-length: {}\r\n\r\n",
                frame.len()
            );
            let mut bytes = request.into_bytes();
            bytes.extend_from_slice(&frame);
            assert_refused(
                proxy.local_addr(),
                &bytes,
                &local_error(
                    "400 Bad Request",
                    "request target must be a path (origin-form) or an absolute http(s) URI",
                ),
            );
        }
        assert_eq!(backend.stats().calls_started, 0);
        let mut absolute = format!(
            "POST http://other.example{UNARY} HTTP/1.1\r\nhost: test.local\r\n\
             content-type: {PROTO}\r\ncontent-length: {}\r\n\r\n",
            frame.len()
        )
        .into_bytes();
        absolute.extend_from_slice(&frame);
        assert_eq!(
            roundtrip(proxy.local_addr(), &absolute).grpc_status(),
            Some(0)
        );
        let seen = backend.last_request_headers().unwrap();
        assert_eq!(seen.get(":authority"), Some("other.example"));
        assert_eq!(seen.get(":path"), Some(UNARY));
    });
}

/// Malformed heads get 400 with the reason, then the connection closes.
#[test]
fn malformed_heads_are_refused() {
    let frame = grpc_frame(b"x");
    let with_frame = |head: &str| {
        let mut request = head.as_bytes().to_vec();
        request.extend_from_slice(&frame);
        request
    };
    let cases = [
        (
            with_frame(&format!(
                "POST {UNARY} HTTP/1.1\r\ncontent-type: {PROTO}\r\ncontent-length: 6\r\n\r\n"
            )),
            "missing host header",
        ),
        (
            with_frame(&format!(
                "POST {UNARY} HTTP/1.1\r\nhost: a\r\ncontent-type: {PROTO}\r\ncontent-length: +6\r\n\r\n"
            )),
            "bad content-length",
        ),
        (
            format!(
                "POST {UNARY} HTTP/1.0\r\nhost: a\r\ncontent-type: {PROTO}\r\n\
                 transfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            .into_bytes(),
            "transfer-encoding on http/1.0",
        ),
        (
            with_frame(&format!(
                "POST {UNARY} HTTP/1.1\r\nhost: a\ncontent-type: {PROTO}\r\ncontent-length: 6\r\n\r\n"
            )),
            "bare lf in request head",
        ),
        (
            with_frame(&format!(
                "POST {UNARY} HTTP/1.1\r\nhost: a\r\nx-nul: a\0b\r\ncontent-type: {PROTO}\r\n\
                 content-length: 6\r\n\r\n"
            )),
            "bad header value",
        ),
        (
            format!(
                "POST {UNARY} HTTP/1.1\r\nhost: a\r\ncontent-type: {PROTO}\r\n\
                 transfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
            )
            .into_bytes(),
            "chunked applied more than once",
        ),
    ];
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        for (request, reason) in &cases {
            assert_refused(
                proxy.local_addr(),
                request,
                &local_error("400 Bad Request", reason),
            );
        }
        assert_eq!(backend.stats().calls_started, 0);
    });
}

/// Limits are inclusive: a head of exactly `--header-bytes-max` bytes with exactly
/// `--header-count-max` fields, and a body of exactly `--body-bytes-max`, are served; one more
/// byte or field is refused.
#[test]
fn limits_are_exact() {
    let body = grpc_frame(&[9u8; 59]);
    assert_eq!(body.len(), 64);
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = [
            "--header-bytes-max",
            "512",
            "--header-count-max",
            "8",
            "--body-bytes-max",
            "64",
        ];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        // host, content-type, content-length, x-grpc-web, and x-pad: 5 fields.
        let sized = |head_bytes: usize, extra_fields: usize| {
            let base = grpc_web_request(UNARY, &[("x-pad", "")], &body).len() - body.len();
            let mut extra: Vec<(String, String)> = (0..extra_fields)
                .map(|i| (format!("x-{i}"), String::new()))
                .collect();
            let used: usize = extra.iter().map(|(n, _)| n.len() + 4).sum();
            let pad = "p".repeat(head_bytes - base - used);
            extra.push(("x-pad".into(), pad));
            let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let request = grpc_web_request(UNARY, &extra, &body);
            assert_eq!(request.len() - body.len(), head_bytes);
            request
        };
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&sized(512, 3));
        assert_echo(&client.read_response(), "b", &[&body[5..]]);
        let too_large = local_error(
            "431 Request Header Fields Too Large",
            "request head too large",
        );
        assert_refused(proxy.local_addr(), &sized(513, 3), &too_large);
        assert_refused(proxy.local_addr(), &sized(512, 4), &too_large);
        let longer = grpc_frame(&[9u8; 60]);
        assert_refused(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[], &longer),
            &local_error("413 Content Too Large", "request body too large"),
        );
    });
}
