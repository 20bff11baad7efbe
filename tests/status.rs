//! Every call ends in a gRPC status the client can read: unreachable upstreams, non-gRPC
//! replies, stream resets, deadlines, a backend that dies, and the upstream cancellation of a
//! call whose client went away.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(5);

/// The exact head of a local trailers-only reply.
fn trailers_only_head(code: u32, message: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ngrpc-status: {code}\r\n\
         grpc-message: {message}\r\ncontent-length: 0\r\n\r\n"
    )
}

#[test]
fn unreachable_upstream_is_unavailable() {
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[closed_port()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"m")));
        let refused = client.read_response();
        assert_eq!(
            refused.head,
            trailers_only_head(
                14,
                "upstream connect error: Connection refused (os error 111)"
            )
        );
        // The endpoint is now in reconnect backoff: failed fast, same status, same connection,
        // and the message still names the cause rather than the backoff.
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"m")));
        assert_eq!(
            client.read_response().head,
            trailers_only_head(
                14,
                "upstream connect error: Connection refused (os error 111)"
            )
        );
    });
}

/// doc/http-grpc-status-mapping.md: an upstream HTTP status without gRPC framing.
#[test]
fn non_grpc_upstream_replies_map_to_status() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for (http, code) in [
            (503, 14),
            (404, 12),
            (401, 16),
            (403, 7),
            (400, 13),
            (500, 2),
            (429, 14),
            (502, 14),
            (504, 14),
            // 200 without a gRPC content type is not gRPC either.
            (200, 2),
        ] {
            let http_status = http.to_string();
            client.write(&grpc_web_request(
                UNARY,
                &[("x-http-status", &http_status)],
                &grpc_frame(b"m"),
            ));
            assert_eq!(
                client.read_response().head,
                trailers_only_head(
                    code,
                    &format!("upstream returned HTTP {http} without gRPC status")
                )
            );
        }
    });
}

/// PROTOCOL-HTTP2.md: RST_STREAM before any response headers.
#[test]
fn reset_before_headers_maps_to_status() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for (reset_code, name, code) in [
            ("7", "REFUSED_STREAM", 14),
            ("8", "CANCEL", 1),
            ("11", "ENHANCE_YOUR_CALM", 8),
            ("2", "INTERNAL_ERROR", 13),
        ] {
            let headers = [("x-reset", "before-headers"), ("x-reset-code", reset_code)];
            client.write(&grpc_web_request(UNARY, &headers, &grpc_frame(b"m")));
            assert_eq!(
                client.read_response().head,
                trailers_only_head(code, &format!("upstream reset the stream: {name}"))
            );
        }
    });
}

/// A reset after the response headers ends the body with a trailer frame carrying a status.
#[test]
fn reset_after_headers_ends_with_a_trailer_frame() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let trailer = trailer_frame(&[
            ("grpc-status", "13"),
            ("grpc-message", "upstream reset the stream: INTERNAL_ERROR"),
        ]);
        let no_message: &[&[u8]] = &[];
        for (point, messages) in [("after-headers", no_message), ("after-data", &[b"m"])] {
            client.write(&grpc_web_request(
                UNARY,
                &[("x-reset", point)],
                &grpc_frame(b"m"),
            ));
            let response = client.read_response();
            assert_eq!(
                response.head,
                streaming_head("application/grpc-web+proto", "b")
            );
            let mut body: Vec<u8> = messages.iter().flat_map(|m| grpc_frame(m)).collect();
            body.extend_from_slice(&trailer);
            assert_eq!(response.body, body, "reset {point}");
        }
    });
}

/// An expired grpc-timeout answers DEADLINE_EXCEEDED and cancels the upstream stream.
#[test]
fn grpc_timeout_expiry_cancels_upstream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let headers = [("grpc-timeout", "100m"), ("x-delay-ms", "60000")];
        let response = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &headers, &grpc_frame(b"m")),
        );
        assert_eq!(response.head, trailers_only_head(4, "deadline exceeded"));
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
    });
}

/// `--grpc-timeout-max-ms` caps a longer grpc-timeout, and applies to calls without one.
#[test]
fn grpc_timeout_max_caps_the_deadline() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = ["--grpc-timeout-max-ms", "100"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for (cancelled, asked) in [(1, Some("60S")), (2, None)] {
            let mut headers = vec![("x-delay-ms", "60000")];
            headers.extend(asked.map(|t| ("grpc-timeout", t)));
            client.write(&grpc_web_request(UNARY, &headers, &grpc_frame(b"m")));
            assert_eq!(
                client.read_response().head,
                trailers_only_head(4, "deadline exceeded")
            );
            let seen = backend.last_request_headers().unwrap();
            let timeout = seen.get("grpc-timeout").unwrap();
            let ms: u64 = timeout.strip_suffix('m').unwrap().parse().unwrap();
            assert!((1..=100).contains(&ms), "grpc-timeout {timeout}");
            assert!(wait_until(WAIT, || {
                backend.stats().cancelled_by_client == cancelled
            }));
        }
    });
}

/// Without a grpc-timeout no deadline applies: a stream whose messages are further apart than
/// the header read and idle timeouts runs to its end.
#[test]
fn long_server_stream_is_not_cut() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = ["--header-read-timeout-ms", "50", "--idle-timeout-ms", "50"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let headers = [("x-stream-count", "4"), ("x-stream-interval-ms", "150")];
        let response = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(SERVER_STREAM, &headers, &grpc_frame(b"slow")),
        );
        assert_eq!(
            response.head,
            streaming_head("application/grpc-web+proto", "b")
        );
        assert_eq!(response.body, echo_body(&[&b"slow"[..]; 4]));
    });
}

/// A client that disconnects while its unary call waits upstream cancels the stream.
#[test]
fn client_disconnect_cancels_unary_call() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&grpc_web_request(
            UNARY,
            &[("x-delay-ms", "60000")],
            &grpc_frame(b"m"),
        ));
        assert!(wait_until(WAIT, || backend.stats().in_flight == 1));
        drop(client);
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
    });
}

/// A client that disconnects in the middle of a server stream cancels the stream.
#[test]
fn client_disconnect_cancels_server_stream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let (client, _) = stalled_stream(proxy.local_addr());
        drop(client);
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
        assert_eq!(backend.stats().calls_finished, 0);
    });
}

/// A backend that dies mid-stream still leaves the client with a terminal status.
#[test]
fn backend_killed_mid_stream_ends_with_a_status() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let (mut client, _) = stalled_stream(proxy.local_addr());
        backend.kill();
        // The io error's wording (broken pipe, reset, EOF) depends on where the kill caught the
        // connection; the status does not.
        let last = Response {
            body: client.read_chunk().expect("a trailer frame"),
            ..Response::default()
        };
        let trailers = last.trailers();
        assert_eq!(trailers.len(), 2, "{trailers:?}");
        assert_eq!(trailers[0], ("grpc-status".into(), "14".into()));
        assert_eq!(trailers[1].0, "grpc-message");
        assert!(
            trailers[1].1.starts_with("upstream connection error: "),
            "{trailers:?}"
        );
        assert_eq!(client.read_chunk(), None);
    });
}

/// A client that goes away in the middle of its upload cancels the upstream stream.
#[test]
fn client_disconnect_mid_upload_cancels_upstream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&post_chunked_head(UNARY, "application/grpc-web", &[]));
        client.write(&chunk(b"\x00\x00\x00\x00\x10partial"));
        assert!(wait_until(WAIT, || backend.stats().in_flight == 1));
        drop(client);
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
    });
}

/// A call that fails before its body was read (nothing to connect to): a client still
/// uploading a large body must be able to read the status.
#[test]
fn unreachable_upstream_status_is_readable_during_upload() {
    let big = grpc_frame(&vec![1u8; 4 * 1024 * 1024]);
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[closed_port()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let request = grpc_web_request(UNARY, &[], &big);
        let _ = std::io::Write::write_all(&mut client.stream, &request);
        let response = client.read_response();
        assert_eq!(response.grpc_status(), Some(14), "{}", response.head);
    });
}

/// A deadline that expires after the response head ends the stream with a status-4 trailer
/// frame and cancels the upstream stream.
#[test]
fn deadline_mid_stream_ends_with_a_trailer_frame() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let headers = [
            ("x-stream-count", "2"),
            ("x-stream-interval-ms", "60000"),
            ("grpc-timeout", "200m"),
        ];
        client.write(&grpc_web_request(
            SERVER_STREAM,
            &headers,
            &grpc_frame(b"tick"),
        ));
        let response = client.read_response();
        assert_eq!(
            response.head,
            streaming_head("application/grpc-web+proto", "b")
        );
        let mut body = grpc_frame(b"tick");
        body.extend(trailer_frame(&[
            ("grpc-status", "4"),
            ("grpc-message", "deadline exceeded"),
        ]));
        assert_eq!(response.body, body);
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
        // The call ended cleanly for the client: the connection takes the next one.
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"next")));
        assert_echo(&client.read_response(), "b", &[b"next"]);
    });
}

/// A client that pipelines its next request during a server stream and then goes away still
/// cancels the stream.
#[test]
fn client_gone_after_pipelining_during_a_stream_cancels_it() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let (mut client, _) = stalled_stream(proxy.local_addr());
        client.write(b"GET /healthz HTTP/1.1\r\nhost: test.local\r\n\r\n");
        drop(client);
        assert!(wait_until(WAIT, || backend.stats().cancelled_by_client == 1));
    });
}
