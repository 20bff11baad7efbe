//! The test backend against a real h2 client over TCP: each row of the metadata table in
//! `backend.rs`, plus GOAWAY, kill, shutdown and the counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Request, StatusCode};
use ringway_load::backend::{
    frame, pattern_frame, pattern_message, split_frames, Backend, BackendConfig, BackendHandle,
};
use tokio::net::TcpStream;

fn start() -> BackendHandle {
    start_with(|_| {})
}

fn start_with(adjust: impl FnOnce(&mut BackendConfig)) -> BackendHandle {
    let mut config = BackendConfig::new("127.0.0.1:0".parse().unwrap(), "pod-a");
    adjust(&mut config);
    Backend::start(config).expect("backend starts")
}

/// Connects an h2 client whose windows let 1 MiB messages flow; the connection task's
/// join handle finishes when the server closes the connection.
async fn connect(addr: SocketAddr) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, driver)
}

fn grpc_request(addr: SocketAddr, path: &str, metadata: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// DATA chunks with their arrival time.
    chunks: Vec<(Instant, Bytes)>,
    trailers: Option<HeaderMap>,
    /// The stream error seen while reading the body, if any.
    error: Option<h2::Error>,
    trailers_only: bool,
}

async fn send(client: &mut SendRequest<Bytes>, request: Request<()>, body: Bytes) -> Reply {
    try_send(client, request, body)
        .await
        .expect("response headers")
}

async fn try_send(
    client: &mut SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
) -> Result<Reply, h2::Error> {
    let mut client = client.clone().ready().await?;
    let (response, mut stream) = client.send_request(request, false)?;
    stream.reserve_capacity(body.len());
    stream.send_data(body, true)?;
    let response = response.await?;
    let (parts, recv) = response.into_parts();
    let trailers_only = recv.is_end_stream();
    let (chunks, trailers, error) = read_all(recv).await;
    let mut body = BytesMut::new();
    for (_, chunk) in &chunks {
        body.extend_from_slice(chunk);
    }
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.freeze(),
        chunks,
        trailers,
        error,
        trailers_only,
    })
}

type ReadAll = (Vec<(Instant, Bytes)>, Option<HeaderMap>, Option<h2::Error>);

async fn read_all(mut recv: RecvStream) -> ReadAll {
    let mut chunks = Vec::new();
    while let Some(chunk) = recv.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                chunks.push((Instant::now(), chunk));
            }
            Err(error) => return (chunks, None, Some(error)),
        }
    }
    match recv.trailers().await {
        Ok(trailers) => (chunks, trailers, None),
        Err(error) => (chunks, None, Some(error)),
    }
}

fn hello() -> Bytes {
    frame(Bytes::from_static(b"hello"))
}

fn trailer<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    let map = if reply.trailers_only {
        &reply.headers
    } else {
        reply.trailers.as_ref()?
    };
    map.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn unary_echoes_frames_and_records_the_request_headers() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let body: Bytes = [hello(), frame(Bytes::from_static(b"again"))]
        .concat()
        .into();
    let request = grpc_request(
        backend.local_addr(),
        "/ringway.test.Echo/Unary",
        &[("x-custom", "v")],
    );
    let reply = send(&mut client, request, body.clone()).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-backend"], "pod-a");
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(reply.body, body);
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
    assert!(reply.error.is_none());

    let seen = backend.last_request_headers().expect("recorded");
    assert_eq!(seen.get(":method"), Some("POST"));
    assert_eq!(seen.get(":scheme"), Some("http"));
    assert_eq!(
        seen.get(":authority"),
        Some(backend.local_addr().to_string().as_str())
    );
    assert_eq!(seen.get(":path"), Some("/ringway.test.Echo/Unary"));
    assert_eq!(seen.get("te"), Some("trailers"));
    assert_eq!(seen.get("x-custom"), Some("v"));
    assert!(!seen.contains("connection"));
    let names: Vec<&str> = seen.names().take(4).collect();
    assert_eq!(names, [":method", ":scheme", ":authority", ":path"]);

    let stats = backend
        .wait_for_stats(Duration::from_secs(1), |s| s.calls_finished == 1)
        .await;
    assert_eq!(stats.calls_started, 1);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_open, 1);
}

#[tokio::test]
async fn server_stream_flushes_each_message_as_it_is_produced() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let metadata = [
        ("x-stream-count", "3"),
        ("x-stream-interval-ms", "150"),
        ("x-response-bytes", "10"),
    ];
    let request = grpc_request(backend.local_addr(), "/a.B/ServerStream", &metadata);
    let reply = send(&mut client, request, hello()).await;

    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
    assert_eq!(reply.chunks.len(), 3, "one DATA frame per message");
    for (_, chunk) in &reply.chunks {
        assert_eq!(chunk, &pattern_frame(10));
    }
    // Incremental delivery: the messages arrive spread over the intervals, not in a burst.
    for pair in reply.chunks.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(100),
            "{:?}",
            pair[1].0 - pair[0].0
        );
    }
}

#[tokio::test]
async fn server_stream_defaults_to_three_echoes() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let request = grpc_request(backend.local_addr(), "/a.B/ServerStream", &[]);
    let reply = send(&mut client, request, hello()).await;
    let messages = split_frames(&reply.body).unwrap();
    assert_eq!(messages, vec![Bytes::from_static(b"hello"); 3]);
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn status_and_message_end_the_call_after_the_echo() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let metadata = [
        ("x-grpc-status", "5"),
        ("x-grpc-message", "not found: 100%"),
    ];
    let request = grpc_request(backend.local_addr(), "/a.B/Unary", &metadata);
    let reply = send(&mut client, request, hello()).await;
    assert!(!reply.trailers_only);
    assert_eq!(reply.body, hello());
    assert_eq!(trailer(&reply, "grpc-status"), Some("5"));
    assert_eq!(trailer(&reply, "grpc-message"), Some("not found: 100%25"));
}

#[tokio::test]
async fn trailers_only_is_a_single_headers_frame() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let metadata = [
        ("x-trailers-only", "1"),
        ("x-grpc-status", "7"),
        ("x-grpc-message", "no"),
    ];
    let request = grpc_request(backend.local_addr(), "/a.B/Unary", &metadata);
    let reply = send(&mut client, request, hello()).await;
    assert!(reply.trailers_only);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(reply.headers["grpc-status"], "7");
    assert_eq!(reply.headers["grpc-message"], "no");
    assert!(reply.body.is_empty() && reply.trailers.is_none());
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let request = grpc_request(backend.local_addr(), "/a.B/Nope", &[]);
    let reply = send(&mut client, request, hello()).await;
    assert!(reply.trailers_only);
    assert_eq!(reply.headers["grpc-status"], "12");
    assert_eq!(reply.headers["x-backend"], "pod-a");
}

#[tokio::test]
async fn health_check_answers_serving() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let request = grpc_request(backend.local_addr(), "/grpc.health.v1.Health/Check", &[]);
    let reply = send(&mut client, request, frame(Bytes::new())).await;
    assert_eq!(&reply.body[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn metadata_is_echoed_into_headers_and_trailers_untouched() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let metadata = [
        ("x-echo-user", "alice"),
        ("x-echo-blob-bin", "AAECAw=="),
        ("x-trailer-echo-count", "3"),
        ("x-not-echoed", "1"),
    ];
    let request = grpc_request(backend.local_addr(), "/a.B/Unary", &metadata);
    let reply = send(&mut client, request, hello()).await;
    assert_eq!(reply.headers["x-echo-user"], "alice");
    assert_eq!(reply.headers["x-echo-blob-bin"], "AAECAw==");
    assert!(!reply.headers.contains_key("x-not-echoed"));
    assert!(!reply.headers.contains_key("x-trailer-echo-count"));
    assert_eq!(trailer(&reply, "x-trailer-echo-count"), Some("3"));
}

#[tokio::test]
async fn non_grpc_requests_get_415() {
    let backend = start();
    let addr = backend.local_addr();
    let (mut client, _driver) = connect(addr).await;
    let get = Request::get(format!("http://{addr}/a.B/Unary"))
        .body(())
        .unwrap();
    assert_eq!(
        send(&mut client, get, Bytes::new()).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let mut web = grpc_request(addr, "/a.B/Unary", &[]);
    web.headers_mut()
        .insert("content-type", "application/grpc-web".parse().unwrap());
    let reply = send(&mut client, web, hello()).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.headers["content-type"], "text/plain");
}

#[tokio::test]
async fn http_status_override_is_a_plain_reply() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let request = grpc_request(
        backend.local_addr(),
        "/a.B/Unary",
        &[("x-http-status", "503")],
    );
    let reply = send(&mut client, request, hello()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["content-type"], "text/plain");
    assert!(!reply.headers.contains_key("grpc-status"));
    assert!(!reply.body.is_empty());
    assert!(
        reply.trailers.is_none() || !reply.trailers.as_ref().unwrap().contains_key("grpc-status")
    );
}

#[tokio::test]
async fn resets_happen_at_the_requested_point_with_the_requested_code() {
    let backend = start();
    let addr = backend.local_addr();
    let (mut client, _driver) = connect(addr).await;

    let before = grpc_request(
        addr,
        "/a.B/Unary",
        &[("x-reset", "before-headers"), ("x-reset-code", "7")],
    );
    let error = try_send(&mut client, before, hello())
        .await
        .expect_err("no headers");
    assert_eq!(error.reason(), Some(Reason::REFUSED_STREAM));

    let after_headers = grpc_request(
        addr,
        "/a.B/Unary",
        &[("x-reset", "after-headers"), ("x-reset-code", "8")],
    );
    let reply = send(&mut client, after_headers, hello()).await;
    assert_eq!(reply.headers["x-backend"], "pod-a");
    assert!(reply.body.is_empty());
    assert_eq!(reply.error.and_then(|e| e.reason()), Some(Reason::CANCEL));

    let after_data = grpc_request(addr, "/a.B/ServerStream", &[("x-reset", "after-data")]);
    let reply = send(&mut client, after_data, hello()).await;
    assert_eq!(split_frames(&reply.body).unwrap().len(), 3);
    assert!(reply.trailers.is_none());
    assert_eq!(
        reply.error.and_then(|e| e.reason()),
        Some(Reason::INTERNAL_ERROR)
    );

    // The connection survives stream resets.
    let ok = send(&mut client, grpc_request(addr, "/a.B/Unary", &[]), hello()).await;
    assert_eq!(trailer(&ok, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn one_mebibyte_messages_flow_both_ways() {
    let backend = start();
    let addr = backend.local_addr();
    let (mut client, _driver) = connect(addr).await;
    let upload = pattern_frame(1 << 20);
    let reply = send(
        &mut client,
        grpc_request(addr, "/a.B/Unary", &[]),
        upload.clone(),
    )
    .await;
    assert_eq!(reply.body.len(), upload.len());
    assert!(reply.body == upload, "echo differs");
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));

    let request = grpc_request(addr, "/a.B/Unary", &[("x-response-bytes", "1048576")]);
    let reply = send(&mut client, request, hello()).await;
    assert_eq!(
        split_frames(&reply.body).unwrap(),
        vec![pattern_message(1 << 20)]
    );
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_resource_exhausted() {
    let backend = start_with(|c| c.request_body_bytes_max = 1000);
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let request = grpc_request(backend.local_addr(), "/a.B/Unary", &[]);
    let reply = send(&mut client, request, pattern_frame(5000)).await;
    assert!(reply.trailers_only);
    assert_eq!(reply.headers["grpc-status"], "8");
    assert_eq!(
        reply.headers["grpc-message"],
        "request body exceeds 1000 bytes"
    );
}

#[tokio::test]
async fn delay_holds_the_response_headers() {
    let backend = start();
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let request = grpc_request(backend.local_addr(), "/a.B/Unary", &[("x-delay-ms", "200")]);
    let started = Instant::now();
    let reply = send(&mut client, request, hello()).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn client_resets_are_counted_as_cancellations() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;

    // Reset while the backend waits before the headers.
    let mut ready = client.clone().ready().await.unwrap();
    let (_response, mut stream) = ready
        .send_request(
            grpc_request(addr, "/a.B/Unary", &[("x-delay-ms", "10000")]),
            false,
        )
        .unwrap();
    stream.send_data(hello(), true).unwrap();
    backend
        .wait_for_stats(Duration::from_secs(2), |s| s.in_flight == 1)
        .await;
    stream.send_reset(Reason::CANCEL);
    let stats = backend
        .wait_for_stats(Duration::from_secs(2), |s| s.cancelled_by_client == 1)
        .await;
    assert_eq!(
        (
            stats.cancelled_by_client,
            stats.in_flight,
            stats.calls_finished
        ),
        (1, 0, 0)
    );

    // Drop the response mid-stream, between messages.
    let mut ready = client.clone().ready().await.unwrap();
    let metadata = [("x-stream-count", "100"), ("x-stream-interval-ms", "50")];
    let (response, mut stream) = ready
        .send_request(grpc_request(addr, "/a.B/ServerStream", &metadata), false)
        .unwrap();
    stream.send_data(hello(), true).unwrap();
    let mut body = response.await.unwrap().into_body();
    body.data().await.unwrap().unwrap();
    drop(body);
    drop(stream);
    let stats = backend
        .wait_for_stats(Duration::from_secs(2), |s| s.cancelled_by_client == 2)
        .await;
    assert_eq!(
        (
            stats.cancelled_by_client,
            stats.in_flight,
            stats.calls_started
        ),
        (2, 0, 2)
    );
}

#[tokio::test]
async fn goaway_lets_in_flight_calls_finish_and_closes_the_connection() {
    let backend = start();
    let addr = backend.local_addr();
    let (mut client, driver) = connect(addr).await;
    let slow = grpc_request(addr, "/a.B/Unary", &[("x-delay-ms", "300")]);
    let mut slow_client = client.clone();
    let slow_call = tokio::spawn(async move { send(&mut slow_client, slow, hello()).await });
    backend
        .wait_for_stats(Duration::from_secs(2), |s| s.in_flight == 1)
        .await;

    backend.goaway();
    let reply = slow_call.await.unwrap();
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
    tokio::time::timeout(Duration::from_secs(2), driver)
        .await
        .expect("connection closes after GOAWAY")
        .unwrap();
    assert!(
        try_send(&mut client, grpc_request(addr, "/a.B/Unary", &[]), hello())
            .await
            .is_err()
    );
    let stats = backend
        .wait_for_stats(Duration::from_secs(1), |s| s.connections_open == 0)
        .await;
    assert_eq!(stats.connections_open, 0);

    // The listener still accepts.
    let (mut fresh, _driver) = connect(addr).await;
    let reply = send(&mut fresh, grpc_request(addr, "/a.B/Unary", &[]), hello()).await;
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn kill_drops_connections_and_the_listener() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, driver) = connect(addr).await;
    let slow = grpc_request(addr, "/a.B/Unary", &[("x-delay-ms", "10000")]);
    let mut slow_client = client.clone();
    let slow_call = tokio::spawn(async move { try_send(&mut slow_client, slow, hello()).await });
    backend
        .wait_for_stats(Duration::from_secs(2), |s| s.in_flight == 1)
        .await;

    let killed = Instant::now();
    backend.kill();
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "kill does not wait for calls"
    );
    assert!(slow_call.await.unwrap().is_err());
    tokio::time::timeout(Duration::from_secs(2), driver)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener is closed"
    );
    let stats = backend.stats();
    assert_eq!((stats.in_flight, stats.connections_open), (0, 0));
}

#[tokio::test]
async fn dropping_the_handle_with_an_idle_client_does_not_hang() {
    let backend = start_with(|c| c.threads = 2);
    let (mut client, _driver) = connect(backend.local_addr()).await;
    let reply = send(
        &mut client,
        grpc_request(backend.local_addr(), "/a.B/Unary", &[]),
        hello(),
    )
    .await;
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
    let started = Instant::now();
    drop(backend);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn error_rate_and_response_size_knobs_apply_to_every_call() {
    let backend = start_with(|c| {
        c.error_rate = 0.5;
        c.response_bytes = Some(32);
    });
    let addr = backend.local_addr();
    let (mut client, _driver) = connect(addr).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = send(&mut client, grpc_request(addr, "/a.B/Unary", &[]), hello()).await;
        if trailer(&reply, "grpc-status") == Some("0") {
            assert_eq!(reply.body, pattern_frame(32));
        }
        statuses.push(trailer(&reply, "grpc-status").unwrap().to_owned());
    }
    assert_eq!(statuses, ["0", "14", "0", "14"]);
}

#[tokio::test]
async fn max_concurrent_streams_is_advertised() {
    let backend = start_with(|c| c.max_concurrent_streams = Some(2));
    let (mut client, _driver) = connect(backend.local_addr()).await;
    // The SETTINGS frame is applied once the first exchange has happened.
    let reply = send(
        &mut client,
        grpc_request(backend.local_addr(), "/a.B/Unary", &[]),
        hello(),
    )
    .await;
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
    assert_eq!(client.current_max_send_streams(), 2);
}
