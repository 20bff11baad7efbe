//! HTTP/2 from clients (h2c with prior knowledge, on the same port as HTTP/1.1): native gRPC and
//! gRPC-Web over real HTTP/2 streams, through ringway to the real test backend, under both io
//! drivers.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2client::{exchange, read_response, request, H2Client};
use common::*;

const GRPC: &str = "application/grpc+proto";

#[test]
fn native_grpc_unary_passes_headers_messages_and_trailers() {
    for_each_driver(|driver| {
        let backend = start_backend("pod-a");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = H2Client::connect(proxy.local_addr());
        let response = client.grpc_unary(
            UNARY,
            &[("x-echo-meta", "m1"), ("x-trailer-echo-t", "t1")],
            b"hello",
        );
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type"),
            Some("application/grpc+proto")
        );
        assert_eq!(response.header("x-backend"), Some("pod-a"));
        assert_eq!(response.header("x-echo-meta"), Some("m1"));
        assert_eq!(response.messages(), [Bytes::from_static(b"hello")]);
        assert_eq!(response.trailer("grpc-status"), Some("0"));
        assert_eq!(response.trailer("x-trailer-echo-t"), Some("t1"));
        // The upstream saw a gRPC request with the client's metadata.
        let seen = backend.last_request_headers().unwrap();
        assert_eq!(seen.get("content-type"), Some(GRPC));
        assert_eq!(seen.get("te"), Some("trailers"));
        assert_eq!(seen.get("x-echo-meta"), Some("m1"));
    });
}

#[test]
fn one_port_serves_http1_and_http2() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let h1 = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[], &grpc_frame(b"1")),
        );
        assert_eq!(h1.grpc_status(), Some(0));
        let mut h2 = H2Client::connect(proxy.local_addr());
        assert_eq!(h2.grpc_unary(UNARY, &[], b"2").grpc_status(), Some(0));
        assert_eq!(proxy.view().worker_stats[0].http2_connections.get(), 1);
    });
}

#[test]
fn grpc_web_over_http2_binary_and_text() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = H2Client::connect(proxy.local_addr());
        let response = client.web_unary(UNARY, &[("origin", "https://app.example")], b"web");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type"),
            Some("application/grpc-web+proto")
        );
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
        assert!(
            response.trailers.is_none(),
            "gRPC-Web carries no HTTP/2 trailers"
        );
        assert_eq!(response.messages(), [Bytes::from_static(b"web")]);
        assert_eq!(response.web_trailer("grpc-status").as_deref(), Some("0"));

        // Text mode: a base64 body in, a base64 body out.
        let text = base64_encode(&grpc_frame(b"txt"));
        let response = client.call(
            UNARY,
            &[("content-type", "application/grpc-web-text+proto")],
            text.as_bytes(),
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/grpc-web-text+proto")
        );
        assert_eq!(response.messages(), [Bytes::from_static(b"txt")]);
        assert_eq!(response.web_trailer("grpc-status").as_deref(), Some("0"));
    });
}

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = bytes::BytesMut::new();
    ringway::grpc_web::encode_base64_flush(bytes, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn server_stream_arrives_incrementally_on_both_protocols() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let client = H2Client::connect(proxy.local_addr());
        for content_type in [GRPC, "application/grpc-web+proto"] {
            let headers = [
                ("content-type", content_type),
                ("x-stream-count", "3"),
                ("x-stream-interval-ms", "200"),
            ];
            let req = request("POST", SERVER_STREAM, &headers);
            let send = client.send.clone();
            let arrivals = client.runtime.block_on(async move {
                let mut send = send.ready().await.unwrap();
                let (response, mut body) = send.send_request(req, false).unwrap();
                body.send_data(Bytes::from(grpc_frame(b"s")), true).unwrap();
                let response = response.await.unwrap();
                let mut recv = response.into_body();
                let start = Instant::now();
                let mut arrivals = Vec::new();
                while let Some(data) = recv.data().await {
                    let data = data.unwrap();
                    let _ = recv.flow_control().release_capacity(data.len());
                    arrivals.push(start.elapsed());
                }
                arrivals
            });
            // The first message arrives long before the last: relayed as it comes, not
            // gathered until the stream ends.
            assert!(arrivals.len() >= 3, "{content_type}: {arrivals:?}");
            assert!(
                arrivals[0] + Duration::from_millis(300) < *arrivals.last().unwrap(),
                "{content_type}: {arrivals:?}"
            );
        }
    });
}

#[test]
fn trailers_only_and_error_statuses() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = H2Client::connect(proxy.local_addr());
        // Trailers-only from the upstream: one HEADERS frame with grpc-status.
        let response = client.grpc_unary(
            UNARY,
            &[
                ("x-trailers-only", "1"),
                ("x-grpc-status", "7"),
                ("x-grpc-message", "nope"),
            ],
            b"m",
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.header("grpc-status"), Some("7"));
        assert!(response.data.is_empty() && response.trailers.is_none());
        // An unknown method is UNIMPLEMENTED from the backend.
        let response = client.grpc_unary("/test.Echo/Nope", &[], b"m");
        assert_eq!(response.grpc_status(), Some(12));
        // A non-gRPC upstream reply maps by HTTP status (503 → UNAVAILABLE).
        let response = client.grpc_unary(UNARY, &[("x-http-status", "503")], b"m");
        assert_eq!(response.grpc_status(), Some(14));
        // gRPC-Web: the same upstream failure as a trailers-only reply with CORS.
        let response = client.web_unary(UNARY, &[("x-http-status", "503")], b"m");
        assert_eq!(response.header("grpc-status"), Some("14"));
        assert_eq!(
            response.header("content-type"),
            Some("application/grpc-web+proto")
        );
        // A status set after the reply: the backend percent-encodes its message (here the
        // `%` of the text it was given), and the proxy passes it on unchanged.
        let response = client.grpc_unary(
            UNARY,
            &[("x-grpc-status", "9"), ("x-grpc-message", "caf%C3%A9")],
            b"m",
        );
        assert_eq!(response.trailer("grpc-status"), Some("9"));
        assert_eq!(response.trailer("grpc-message"), Some("caf%25C3%25A9"));
    });
}

#[test]
fn deadline_and_client_cancellation_reach_the_upstream() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = H2Client::connect(proxy.local_addr());
        let response = client.grpc_unary(
            UNARY,
            &[("grpc-timeout", "100m"), ("x-delay-ms", "5000")],
            b"m",
        );
        assert_eq!(response.grpc_status(), Some(4), "DEADLINE_EXCEEDED");
        assert!(wait_until(Duration::from_secs(5), || backend
            .stats()
            .cancelled_by_client
            == 1));
        // A malformed grpc-timeout is refused, not ignored: the call never reaches the backend.
        let calls_before = backend.stats().calls_started;
        for bad in ["1Z", "-1S", "123456789S"] {
            let response = client.grpc_unary(UNARY, &[("grpc-timeout", bad)], b"m");
            assert_eq!(
                response.grpc_status(),
                Some(3),
                "INVALID_ARGUMENT for {bad}"
            );
        }
        assert_eq!(backend.stats().calls_started, calls_before);

        // The client resets its stream: the upstream stream is cancelled too.
        let send = client.send.clone();
        client.runtime.block_on(async move {
            let mut send = send.ready().await.unwrap();
            let req = request(
                "POST",
                UNARY,
                &[("content-type", GRPC), ("x-delay-ms", "5000")],
            );
            let (_response, mut body) = send.send_request(req, false).unwrap();
            body.send_data(Bytes::from(grpc_frame(b"m")), true).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            body.send_reset(h2::Reason::CANCEL);
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert!(wait_until(Duration::from_secs(5), || backend
            .stats()
            .cancelled_by_client
            == 2));
    });
}

#[test]
fn many_streams_on_one_connection_are_balanced_per_call() {
    for_each_driver(|driver| {
        let a = start_backend_with("127.0.0.2:0", "a", |_| {});
        let b = start_backend_with("127.0.0.3:0", "b", |_| {});
        let proxy = start_proxy(driver, &[a.local_addr(), b.local_addr()], &[]);
        let client = H2Client::connect(proxy.local_addr());
        let send = client.send.clone();
        let backends = client.runtime.block_on(async move {
            let calls = (0..40).map(|i| {
                let req = request("POST", UNARY, &[("content-type", GRPC)]);
                exchange(
                    send.clone(),
                    req,
                    vec![Bytes::from(grpc_frame(format!("{i}").as_bytes()))],
                )
            });
            futures_join(calls).await
        });
        let on_a = backends
            .iter()
            .filter(|r| r.header("x-backend") == Some("a"))
            .count();
        assert!(backends.iter().all(|r| r.grpc_status() == Some(0)));
        assert_eq!(on_a, 20, "round robin per call, not per connection");
    });
}

/// Run every future as a task of its own, concurrently, and collect the results in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("call task"));
    }
    out
}

#[test]
fn a_body_streamed_in_pieces_is_forwarded_as_it_arrives() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let client = H2Client::connect(proxy.local_addr());
        let send = client.send.clone();
        let response = client.runtime.block_on(async move {
            let mut send = send.ready().await.unwrap();
            let req = request("POST", UNARY, &[("content-type", GRPC)]);
            let (response, mut body) = send.send_request(req, false).unwrap();
            let frame = grpc_frame(&vec![7u8; 300_000]);
            for piece in frame.chunks(50_000) {
                body.reserve_capacity(piece.len());
                body.send_data(Bytes::copy_from_slice(piece), false)
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            body.send_data(Bytes::new(), true).unwrap();
            read_response(response).await
        });
        assert_eq!(response.grpc_status(), Some(0));
        assert_eq!(response.messages()[0].len(), 300_000);
    });
}

#[test]
fn local_answers_over_http2() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let mut client = H2Client::connect(proxy.local_addr());
        let send = client.send.clone();
        let (preflight, health, wrong_type, wrong_method) = client.runtime.block_on(async move {
            let preflight = request(
                "OPTIONS",
                UNARY,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "x-grpc-web,content-type"),
                ],
            );
            let health = request("GET", "/healthz", &[]);
            let wrong_type = request("POST", UNARY, &[("content-type", "text/plain")]);
            let wrong_method = request("PUT", UNARY, &[("content-type", GRPC)]);
            (
                exchange(send.clone(), preflight, vec![]).await,
                exchange(send.clone(), health, vec![]).await,
                exchange(send.clone(), wrong_type, vec![Bytes::from_static(b"x")]).await,
                exchange(send.clone(), wrong_method, vec![]).await,
            )
        });
        assert_eq!(preflight.status, 204);
        assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            preflight.header("access-control-allow-headers"),
            Some("x-grpc-web,content-type")
        );
        assert_eq!((health.status, health.body()), (200, b"ok\n".to_vec()));
        assert_eq!(wrong_type.status, 415);
        assert_eq!(wrong_method.status, 405);
        assert_eq!(backend.stats().calls_started, 0);
        let _ = client.grpc_unary(UNARY, &[], b"still serving");
    });
}

/// An upstream that answers before it has read the request body (the backend's
/// `x-reply-before-body`) while the client still holds its END_STREAM back: the response is
/// delivered whole (head, message, trailers), and the client's stream is not reset with an
/// error (RFC 9113 §8.1 allows at most a NO_ERROR reset after a complete response).
#[test]
fn a_response_completing_before_the_request_body_is_delivered_whole() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let client = H2Client::connect(proxy.local_addr());
        for mode in ["1", "drain"] {
            let headers = [
                ("content-type", GRPC),
                ("x-reply-before-body", mode),
                ("x-response-bytes", "64"),
            ];
            let req = request("POST", UNARY, &headers);
            let send = client.send.clone();
            let (status, messages, grpc_status, reset) = client.runtime.block_on(async move {
                let mut send = send.ready().await.unwrap();
                let (response, mut body) = send.send_request(req, false).unwrap();
                // Part of a message, and no END_STREAM: the request is not finished.
                body.send_data(Bytes::from(grpc_frame(b"unfinished")[..4].to_vec()), false)
                    .unwrap();
                let response = response.await.expect("response head");
                let status = response.status().as_u16();
                let mut recv = response.into_body();
                let mut bytes = Vec::new();
                while let Some(data) = recv.data().await {
                    let data = data.expect("response body whole");
                    let _ = recv.flow_control().release_capacity(data.len());
                    bytes.extend_from_slice(&data);
                }
                let trailers = recv.trailers().await.expect("trailers").unwrap_or_default();
                let grpc_status = trailers
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_owned());
                // Whatever the proxy did to the client's side of the stream afterwards.
                let reset = tokio::time::timeout(
                    Duration::from_millis(300),
                    std::future::poll_fn(|cx| body.poll_reset(cx)),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|reason| format!("{reason:?}"));
                let _ = body.send_data(Bytes::from_static(b"late"), true);
                (status, bytes.len(), grpc_status, reset)
            });
            assert_eq!(status, 200, "{mode}");
            assert_eq!(messages, 5 + 64, "{mode}: one 64-byte message");
            assert_eq!(grpc_status.as_deref(), Some("0"), "{mode}");
            assert!(
                reset.as_deref().is_none_or(|r| r == "NO_ERROR"),
                "{mode}: the client's stream was reset with {reset:?}"
            );
        }
    });
}
