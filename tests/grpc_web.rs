//! gRPC-Web ⇄ gRPC translation: content types, text (base64) mode in both directions, the
//! upstream request the backend sees, streaming, trailers and metadata, large messages.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use common::*;
use ringway_load::backend::pattern_message;

const TEXT: &str = "application/grpc-web-text";

/// A text-mode unary request whose body is `text` (already base64).
fn text_request(content_type: &str, text: &str) -> Vec<u8> {
    post(UNARY, content_type, &[], text.as_bytes())
}

/// Assert a text-mode response: the exact head, a body of base64 characters only, and the
/// decoded frames of an echo of `messages`.
fn assert_text_echo(response: &Response, content_type: &str, messages: &[&[u8]]) {
    assert_eq!(response.head, streaming_head(content_type, "b"));
    assert!(
        response
            .body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)),
        "text body is base64: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    let mut decoded: Vec<u8> = Vec::new();
    for frame in response.frames() {
        match frame {
            ringway::testing::Frame::Message { data, .. } => {
                decoded.extend_from_slice(&grpc_frame(&data))
            }
            ringway::testing::Frame::Trailers(_) => {
                assert_eq!(response.trailers(), [("grpc-status".into(), "0".into())]);
                decoded.extend_from_slice(&trailer_frame(&[("grpc-status", "0")]));
            }
        }
    }
    assert_eq!(decoded, echo_body(messages));
}

/// Binary unary echo: exact head and body for the plain and the `+proto` content type, and
/// the upstream content type the backend saw for each.
#[test]
fn binary_unary_echo() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let message = b"\x0a\x05hello";
        for (web, upstream) in [
            ("application/grpc-web", "application/grpc"),
            ("application/grpc-web+proto", "application/grpc+proto"),
        ] {
            let response = roundtrip(
                proxy.local_addr(),
                &post(UNARY, web, &[], &grpc_frame(message)),
            );
            assert_eq!(response.head, streaming_head(web, "b"));
            assert_eq!(response.body, echo_body(&[message]));
            let seen = backend.last_request_headers().unwrap();
            assert_eq!(seen.get("content-type"), Some(upstream));
        }
    });
}

/// The upstream request: POST, `:path` and `:authority` from the request, `te: trailers`, the
/// gRPC content type, hop-by-hop headers gone, metadata and the deadline passed on.
#[test]
fn upstream_request_as_seen_by_the_backend() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut request = b"POST /test.Echo/Unary?tag=1 HTTP/1.1\r\nhost: api.example:8443\r\n\
            content-type: application/grpc-web+proto\r\ntransfer-encoding: chunked\r\n\
            connection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\nx-hop: secret\r\n\
            upgrade: h2c\r\nx-custom: value\r\nx-grpc-web: 1\r\ngrpc-timeout: 10S\r\n\r\n"
            .to_vec();
        request.extend(chunked_body(&[&grpc_frame(b"m")]));
        let response = roundtrip(proxy.local_addr(), &request);
        assert_eq!(response.body, echo_body(&[b"m"]));

        let seen = backend.last_request_headers().unwrap();
        let names: Vec<&str> = seen.names().collect();
        assert_eq!(
            names,
            [
                ":method",
                ":scheme",
                ":authority",
                ":path",
                "x-custom",
                "x-grpc-web",
                "content-type",
                "te",
                "grpc-timeout"
            ]
        );
        assert_eq!(seen.get(":method"), Some("POST"));
        assert_eq!(seen.get(":authority"), Some("api.example:8443"));
        assert_eq!(seen.get(":path"), Some("/test.Echo/Unary?tag=1"));
        assert_eq!(seen.get("te"), Some("trailers"));
        assert_eq!(seen.get("content-type"), Some("application/grpc+proto"));
        assert_eq!(seen.get("x-custom"), Some("value"));
        // The remaining time of the 10 s deadline, in milliseconds.
        let timeout = seen.get("grpc-timeout").unwrap();
        let ms: u64 = timeout.strip_suffix('m').unwrap().parse().unwrap();
        assert!((1..=10_000).contains(&ms), "grpc-timeout {timeout}");
    });
}

/// A malformed grpc-timeout (bad unit, sign, empty, over 8 digits) ends the call with
/// INVALID_ARGUMENT before it reaches a backend.
#[test]
fn malformed_grpc_timeout_is_invalid_argument() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        for bad in ["1Z", "-1S", "", "123456789S", "5"] {
            let request = grpc_web_request(UNARY, &[("grpc-timeout", bad)], &grpc_frame(b"m"));
            let response = roundtrip(proxy.local_addr(), &request);
            assert_eq!(response.status, 200, "{bad:?}: {response:?}");
            assert_eq!(response.grpc_status(), Some(3), "{bad:?}: {response:?}");
            assert!(
                response
                    .header("grpc-message")
                    .is_some_and(|m| m.contains("grpc-timeout")),
                "{response:?}"
            );
        }
        let good = grpc_web_request(UNARY, &[("grpc-timeout", "5S")], &grpc_frame(b"m"));
        assert_eq!(roundtrip(proxy.local_addr(), &good).grpc_status(), Some(0));
        assert_eq!(backend.stats().calls_started, 1);
    });
}

/// Text mode: a base64 request body, and a base64 response with the text content type.
#[test]
fn text_mode_unary() {
    let message = b"text mode";
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        for content_type in [TEXT, "application/grpc-web-text+proto"] {
            let body = STANDARD.encode(grpc_frame(message));
            let response = roundtrip(proxy.local_addr(), &text_request(content_type, &body));
            assert_text_echo(&response, content_type, &[message]);
        }
        assert_eq!(
            backend.last_request_headers().unwrap().get("content-type"),
            Some("application/grpc+proto")
        );
    });
}

/// A text body split across chunked-encoding chunks at every position of two quanta, and
/// one character per chunk.
#[test]
fn text_body_split_across_chunks() {
    let message = b"split text";
    let text = STANDARD.encode(grpc_frame(message));
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        for split in 1..=8 {
            let mut request = post_chunked_head(UNARY, TEXT, &[]);
            let (a, b) = text.as_bytes().split_at(split);
            request.extend(chunked_body(&[a, b]));
            client.write(&request);
            assert_text_echo(&client.read_response(), TEXT, &[message]);
        }
        let pieces: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        let mut request = post_chunked_head(UNARY, TEXT, &[]);
        request.extend(chunked_body(&pieces));
        client.write(&request);
        assert_text_echo(&client.read_response(), TEXT, &[message]);
    });
}

/// Padded and unpadded input, and padding in the middle: two frames encoded separately and
/// concatenated, as a client that flushes per message sends them.
#[test]
fn text_padding_variants() {
    // 5 + 2 = 7 bytes: not a multiple of 3, so the padded form ends with `=`.
    let (one, two) = (b"ab", b"cde1");
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let padded = STANDARD.encode(grpc_frame(one));
        assert!(padded.ends_with('='));
        let unpadded = STANDARD_NO_PAD.encode(grpc_frame(one));
        for body in [&padded, &unpadded] {
            let response = roundtrip(proxy.local_addr(), &text_request(TEXT, body));
            assert_text_echo(&response, TEXT, &[one]);
        }
        let concatenated = padded.clone() + &STANDARD.encode(grpc_frame(two));
        let response = roundtrip(proxy.local_addr(), &text_request(TEXT, &concatenated));
        assert_text_echo(&response, TEXT, &[one, two]);
    });
}

/// A binary request that accepts text gets a text response.
#[test]
fn binary_request_accepting_text_gets_text() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let request = grpc_web_request(
            UNARY,
            &[("accept", "application/grpc-web-text")],
            &grpc_frame(b"accept"),
        );
        let response = roundtrip(proxy.local_addr(), &request);
        assert_text_echo(&response, "application/grpc-web-text+proto", &[b"accept"]);
    });
}

/// A server stream reaches the client message by message: the first message is read while
/// the backend still has the call in flight (it waits a minute before the second).
#[test]
fn server_stream_arrives_incrementally() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let (client, head) = stalled_stream(proxy.local_addr());
        assert_eq!(head, streaming_head("application/grpc-web+proto", "b"));
        let stats = backend.stats();
        assert_eq!((stats.in_flight, stats.calls_finished), (1, 0));
        drop(client);
        assert!(wait_until(Duration::from_secs(5), || {
            backend.stats().cancelled_by_client == 1
        }));
    });
}

/// Status, message (percent-encoding kept), initial and trailing metadata.
#[test]
fn trailers_and_metadata() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let headers = [
            ("x-grpc-status", "5"),
            ("x-grpc-message", "bad \"thing\" 100%"),
            ("x-echo-color", "blue"),
            ("x-trailer-echo-shade", "dark"),
        ];
        let request = grpc_web_request(UNARY, &headers, &grpc_frame(b"m"));
        let response = roundtrip(proxy.local_addr(), &request);
        assert_eq!(
            response.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\
             x-echo-color: blue\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut body = grpc_frame(b"m");
        body.extend(trailer_frame(&[
            ("grpc-status", "5"),
            ("grpc-message", "bad \"thing\" 100%25"),
            ("x-trailer-echo-shade", "dark"),
        ]));
        assert_eq!(response.body, body);
    });
}

/// A trailers-only upstream reply becomes headers with `content-length: 0`, and the
/// connection stays usable.
#[test]
fn trailers_only_reply() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = Reader::new(connect(proxy.local_addr()));
        let headers = [
            ("x-trailers-only", "1"),
            ("x-grpc-status", "7"),
            ("x-grpc-message", "no way"),
            ("x-echo-a", "1"),
        ];
        client.write(&grpc_web_request(UNARY, &headers, &grpc_frame(b"m")));
        let response = client.read_response();
        assert_eq!(
            response.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\
             x-echo-a: 1\r\ngrpc-status: 7\r\ngrpc-message: no way\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(response.body, b"");
        client.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"next")));
        assert_echo(&client.read_response(), "b", &[b"next"]);
    });
}

/// 1 MiB messages up and down, binary and text.
#[test]
fn one_mebibyte_messages() {
    let mib = 1024 * 1024;
    let message = pattern_message(mib);
    let size = mib.to_string();
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let echo = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[], &grpc_frame(&message)),
        );
        assert_echo(&echo, "b", &[&message]);
        let download = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[("x-response-bytes", &size)], &grpc_frame(b"")),
        );
        assert_eq!(download.messages(), [&message[..]]);
        assert_eq!(download.grpc_status(), Some(0));

        let text = STANDARD.encode(grpc_frame(&message));
        let response = roundtrip(proxy.local_addr(), &text_request(TEXT, &text));
        assert_text_echo(&response, TEXT, &[&message]);
    });
}

/// HTTP/1.0 has no chunked coding: the response is delimited by closing the connection.
#[test]
fn http10_gets_a_close_delimited_response() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let frame = grpc_frame(b"old");
        let mut request = format!(
            "POST {UNARY} HTTP/1.0\r\nhost: test.local\r\ncontent-type: application/grpc-web+proto\r\n\
             connection: keep-alive\r\ncontent-length: {}\r\n\r\n",
            frame.len()
        )
        .into_bytes();
        request.extend_from_slice(&frame);
        let response = roundtrip(proxy.local_addr(), &request);
        assert_eq!(
            response.head,
            "HTTP/1.0 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\r\n"
        );
        assert_eq!(response.framing, "close");
        assert_eq!(response.body, echo_body(&[b"old"]));
    });
}

/// Text mode end to end for a server stream, a trailers-only reply and a local error: every
/// answer carries the text content type, and streamed pieces are base64 each on its own.
#[test]
fn text_mode_stream_and_statuses() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let frame = STANDARD.encode(grpc_frame(b"st"));
        let stream = roundtrip(
            proxy.local_addr(),
            &post(
                SERVER_STREAM,
                TEXT,
                &[("x-stream-count", "3")],
                frame.as_bytes(),
            ),
        );
        assert_text_echo(&stream, TEXT, &[b"st", b"st", b"st"]);

        let trailers_only = roundtrip(
            proxy.local_addr(),
            &post(
                UNARY,
                TEXT,
                &[("x-trailers-only", "1"), ("x-grpc-status", "9")],
                frame.as_bytes(),
            ),
        );
        assert_eq!(
            trailers_only.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web-text\r\nx-backend: b\r\n\
             grpc-status: 9\r\ncontent-length: 0\r\n\r\n"
        );
        drop(proxy);

        let unreachable = start_proxy(driver, &[closed_port()], &[]);
        let local = roundtrip(unreachable.local_addr(), &text_request(TEXT, &frame));
        assert_eq!(local.header("content-type"), Some(TEXT));
        assert_eq!(local.header("grpc-status"), Some("14"));
    });
}

/// Binary (`-bin`) and repeated metadata pass through unchanged in both directions.
#[test]
fn binary_and_repeated_metadata() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let headers = [
            ("x-echo-data-bin", "AAEC/w=="),
            ("x-echo-multi", "a"),
            ("x-echo-multi", "b"),
            ("x-trailer-echo-t-bin", "3q2+7w"),
        ];
        let response = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &headers, &grpc_frame(b"m")),
        );
        assert_eq!(
            response.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\
             x-echo-data-bin: AAEC/w==\r\nx-echo-multi: a\r\nx-echo-multi: b\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let mut body = grpc_frame(b"m");
        body.extend(trailer_frame(&[
            ("grpc-status", "0"),
            ("x-trailer-echo-t-bin", "3q2+7w"),
        ]));
        assert_eq!(response.body, body);
    });
}

/// An upload larger than the backend's 4 MiB HTTP/2 stream window completes intact: the body is
/// sent as flow control grants capacity.
#[test]
fn upload_beyond_the_stream_window() {
    let message = pattern_message(6 * 1024 * 1024);
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let response = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[("x-response-bytes", "1")], &grpc_frame(&message)),
        );
        assert_eq!(response.messages(), [&[0u8][..]]);
        assert_eq!(response.grpc_status(), Some(0));
    });
}

/// A download larger than the proxy's socket send buffer (tcp_wmem max is 4 MiB here) to a
/// client with a small receive buffer: ringway's writes to the client are then partial, and
/// every byte must still arrive in order.
#[test]
fn download_to_a_slow_reader_arrives_whole() {
    let size = 8 * 1024 * 1024;
    let message = pattern_message(size);
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.connect(&proxy.local_addr().into()).expect("connect");
        let stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
        let mut client = Reader::new(stream);
        let size = size.to_string();
        client.write(&grpc_web_request(
            UNARY,
            &[("x-response-bytes", &size)],
            &grpc_frame(b""),
        ));
        let response = client.read_response();
        assert_eq!(response.messages(), [&message[..]]);
        assert_eq!(response.grpc_status(), Some(0));
    });
}
