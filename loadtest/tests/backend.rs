//! The test backend against a real h2 client over TCP: each row of the metadata table in
//! `backend.rs`, plus GOAWAY, kill, shutdown and the counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Request, StatusCode};
use ringway_load::backend::{
    frame, parse_grpc_timeout, pattern_frame, pattern_message, split_frames, Backend,
    BackendConfig, BackendHandle,
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

// ---- Streaming methods, early replies, rich errors and deadlines ----

/// Opens a call without ending the request stream: the client decides when to send what.
async fn open_call(
    client: &SendRequest<Bytes>,
    request: Request<()>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = client.clone().ready().await.expect("ready");
    ready.send_request(request, false).expect("send_request")
}

/// Reads DATA until `bytes` bytes have arrived (or the stream ends); returns them.
async fn read_exactly(recv: &mut RecvStream, bytes: usize) -> Bytes {
    let mut out = BytesMut::new();
    while out.len() < bytes {
        match recv.data().await {
            Some(Ok(chunk)) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                out.extend_from_slice(&chunk);
            }
            other => panic!(
                "stream ended after {} of {bytes} bytes: {other:?}",
                out.len()
            ),
        }
    }
    out.freeze()
}

/// Waits for the server's RST_STREAM on the client's side of the stream.
async fn reset_reason(stream: &mut h2::SendStream<Bytes>) -> Reason {
    let wait = std::future::poll_fn(|cx| stream.poll_reset(cx));
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a reset arrives")
        .expect("poll_reset")
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn client_stream_reads_each_message_before_the_end_of_the_stream() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/ClientStream", &[])).await;

    stream
        .send_data(frame(Bytes::from_static(b"one")), false)
        .unwrap();
    // The backend has the first message while the client still holds its stream open.
    let stats = backend
        .wait_for_stats(WAIT, |s| s.messages_received == 1)
        .await;
    assert_eq!((stats.messages_received, stats.calls_finished), (1, 0));
    // A message split across DATA frames is still one message.
    let two = frame(Bytes::from_static(b"two"));
    stream.send_data(two.slice(..2), false).unwrap();
    stream.send_data(two.slice(2..), false).unwrap();
    stream.send_data(frame(Bytes::new()), true).unwrap();

    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (chunks, trailers, error) = read_all(response.into_body()).await;
    assert!(error.is_none(), "{error:?}");
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert_eq!(body, frame(Bytes::from_static(b"onetwo")));
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-request-messages"], "3");
    assert_eq!(trailers["x-request-bytes"], "6");
    let stats = backend
        .wait_for_stats(WAIT, |s| s.calls_finished == 1)
        .await;
    assert_eq!((stats.messages_received, stats.calls_finished), (3, 1));
}

#[tokio::test]
async fn client_stream_limits_the_sum_of_its_messages() {
    let backend = start_with(|c| c.request_body_bytes_max = 1000);
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/ClientStream", &[])).await;
    stream.send_data(pattern_frame(600), false).unwrap();
    stream.send_data(pattern_frame(600), false).unwrap();
    let response = response.await.unwrap();
    assert!(response.body().is_end_stream(), "trailers-only");
    assert_eq!(response.headers()["grpc-status"], "8");
    assert_eq!(reset_reason(&mut stream).await, Reason::NO_ERROR);
}

#[tokio::test]
async fn bidi_stream_answers_each_message_before_the_next_is_sent() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let metadata = [("x-echo-a", "1"), ("x-trailer-echo-b", "2")];
    let request = grpc_request(addr, "/a.B/BidiStream", &metadata);
    let (response, mut stream) = open_call(&client, request).await;
    // The response headers come before any request message.
    let response = response.await.unwrap();
    assert_eq!(response.headers()["x-echo-a"], "1");
    let mut recv = response.into_body();
    for round in 0..5u8 {
        let message = Bytes::from(vec![round; 10 + round as usize]);
        stream.send_data(frame(message.clone()), false).unwrap();
        // Ping-pong: the echo arrives while the client still holds its next message back.
        let echo = read_exactly(&mut recv, 15 + round as usize).await;
        assert_eq!(echo, frame(message));
    }
    stream.send_data(Bytes::new(), true).unwrap();
    let (chunks, trailers, error) = read_all(recv).await;
    assert!(chunks.is_empty() && error.is_none(), "{chunks:?} {error:?}");
    let trailers = trailers.expect("trailers after the client's END_STREAM");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer-echo-b"], "2");
    let stats = backend
        .wait_for_stats(WAIT, |s| s.calls_finished == 1)
        .await;
    assert_eq!(stats.messages_received, 5);
}

#[tokio::test]
async fn bidi_stream_sized_echoes_and_errors_after_the_messages() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let metadata = [("x-response-bytes", "3"), ("x-grpc-status", "10")];
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/BidiStream", &metadata)).await;
    stream
        .send_data([hello(), hello()].concat().into(), true)
        .unwrap();
    let (chunks, trailers, _) = read_all(response.await.unwrap().into_body()).await;
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert_eq!(body, [pattern_frame(3), pattern_frame(3)].concat());
    assert_eq!(trailers.unwrap()["grpc-status"], "10");
}

#[tokio::test]
async fn streaming_calls_reset_by_the_client_are_cancellations() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    for (count, path) in [(1, "/a.B/BidiStream"), (2, "/a.B/ClientStream")] {
        let (_response, mut stream) = open_call(&client, grpc_request(addr, path, &[])).await;
        stream.send_data(hello(), false).unwrap();
        backend
            .wait_for_stats(WAIT, |s| s.messages_received == count)
            .await;
        stream.send_reset(Reason::CANCEL);
        let stats = backend
            .wait_for_stats(WAIT, |s| s.cancelled_by_client == count)
            .await;
        assert_eq!(
            (stats.cancelled_by_client, stats.in_flight),
            (count, 0),
            "{path}"
        );
    }
}

#[tokio::test]
async fn reply_before_body_sends_the_whole_response_then_reset_no_error() {
    let backend = start();
    let addr = backend.local_addr();
    // A small client window, so the 1 MiB reply needs flow control while the request is open.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(64 << 10)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let metadata = [
        ("x-reply-before-body", "1"),
        ("x-response-bytes", "1048576"),
        ("x-stream-count", "2"),
        ("x-trailer-echo-t", "x"),
    ];
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/ServerStream", &metadata)).await;
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (chunks, trailers, error) = read_all(response.into_body()).await;
    assert!(error.is_none(), "{error:?}");
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert!(body == [pattern_frame(1 << 20), pattern_frame(1 << 20)].concat());
    let trailers = trailers.expect("trailers with END_STREAM");
    assert_eq!(
        (&trailers["grpc-status"], &trailers["x-trailer-echo-t"]),
        (&"0".parse().unwrap(), &"x".parse().unwrap())
    );
    // Then h2 tells the client to stop sending, without error (RFC 9113 section 8.1).
    assert_eq!(reset_reason(&mut stream).await, Reason::NO_ERROR);
    assert!(stream.send_data(hello(), true).is_err());
    let stats = backend
        .wait_for_stats(WAIT, |s| s.calls_finished == 1)
        .await;
    assert_eq!((stats.calls_finished, stats.messages_received), (1, 0));
}

#[tokio::test]
async fn a_no_error_reset_does_not_discard_a_response_not_yet_read() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let metadata = [("x-reply-before-body", "1"), ("x-response-bytes", "5")];
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/Unary", &metadata)).await;
    // The reset has arrived before the client reads anything of the response.
    assert_eq!(reset_reason(&mut stream).await, Reason::NO_ERROR);
    let (chunks, trailers, error) = read_all(response.await.unwrap().into_body()).await;
    assert!(error.is_none(), "{error:?}");
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert_eq!(body, pattern_frame(5));
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn reply_before_body_drain_reads_the_request_to_its_end() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let metadata = [("x-reply-before-body", "drain"), ("x-response-bytes", "2")];
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/ClientStream", &metadata)).await;
    let (chunks, trailers, error) = read_all(response.await.unwrap().into_body()).await;
    assert!(error.is_none(), "{error:?}");
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert_eq!(body, pattern_frame(2));
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-request-messages"], "0");
    // The backend is still reading the request: the call is not over.
    assert_eq!(backend.stats().in_flight, 1);
    stream.send_data(hello(), false).unwrap();
    stream.send_data(hello(), true).unwrap();
    let stats = backend
        .wait_for_stats(WAIT, |s| s.calls_finished == 1)
        .await;
    assert_eq!((stats.calls_finished, stats.in_flight), (1, 0));
    // The stream closed normally: no RST_STREAM follows the client's END_STREAM.
    let reset = tokio::time::timeout(
        Duration::from_millis(200),
        std::future::poll_fn(|cx| stream.poll_reset(cx)),
    )
    .await;
    assert!(reset.is_err(), "unexpected reset: {reset:?}");
}

#[tokio::test]
async fn error_messages_may_be_any_unicode_and_carry_status_details() {
    let backend = start();
    let addr = backend.local_addr();
    let (mut client, _driver) = connect(addr).await;
    let message = "caf\u{e9} \u{2603} 100%";
    let mut request = grpc_request(
        addr,
        "/a.B/Unary",
        &[("x-grpc-status", "9"), ("x-status-details", "QUOTA_LOW")],
    );
    request.headers_mut().insert(
        "x-grpc-message",
        http::HeaderValue::from_bytes(message.as_bytes()).unwrap(),
    );
    let reply = send(&mut client, request, hello()).await;
    assert_eq!(reply.body, hello());
    assert_eq!(trailer(&reply, "grpc-status"), Some("9"));
    assert_eq!(
        trailer(&reply, "grpc-message"),
        Some("caf%C3%A9 %E2%98%83 100%25")
    );
    let details = trailer(&reply, "grpc-status-details-bin").unwrap();
    assert_eq!(
        base64_decode(details),
        ringway_load::backend::status_details(9, message, "QUOTA_LOW")
    );

    // The same through base64 metadata, trailers-only.
    let metadata = [
        ("x-trailers-only", "1"),
        ("x-grpc-status", "5"),
        ("x-grpc-message-bin", "w7xiZXI"),
        ("x-status-details", "R"),
    ];
    let request = grpc_request(addr, "/a.B/Unary", &metadata);
    let reply = send(&mut client, request, hello()).await;
    assert!(reply.trailers_only);
    assert_eq!(reply.headers["grpc-message"], "%C3%BCber");
    let details = reply.headers["grpc-status-details-bin"].to_str().unwrap();
    assert_eq!(
        base64_decode(details),
        ringway_load::backend::status_details(5, "\u{fc}ber", "R")
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .expect("unpadded base64")
}

#[tokio::test]
async fn enforced_grpc_timeout_ends_slow_work_with_deadline_exceeded() {
    let backend = start();
    let addr = backend.local_addr();
    let (mut client, _driver) = connect(addr).await;
    let enforce = ("x-enforce-deadline", "1");

    // Nothing sent yet when the deadline passes: trailers-only.
    let metadata = [("x-delay-ms", "10000"), ("grpc-timeout", "100m"), enforce];
    let slow = grpc_request(addr, "/a.B/Unary", &metadata);
    let reply = send(&mut client, slow, hello()).await;
    assert!(reply.trailers_only);
    assert_eq!(reply.headers["grpc-status"], "4");
    assert_eq!(reply.headers["grpc-message"], "deadline exceeded");

    // Mid-stream: the messages sent so far, then the status as trailers.
    let metadata = [
        ("x-stream-count", "5"),
        ("x-stream-interval-ms", "10000"),
        ("grpc-timeout", "200m"),
        enforce,
    ];
    let request = grpc_request(addr, "/a.B/ServerStream", &metadata);
    let reply = send(&mut client, request, hello()).await;
    assert!(!reply.trailers_only);
    assert_eq!(reply.body, hello());
    assert_eq!(trailer(&reply, "grpc-status"), Some("4"));

    // A bidirectional stream whose client never sends.
    let metadata = [("grpc-timeout", "100m"), enforce];
    let request = grpc_request(addr, "/a.B/BidiStream", &metadata);
    let (response, _stream) = open_call(&client, request).await;
    let (_, trailers, _) = read_all(response.await.unwrap().into_body()).await;
    assert_eq!(trailers.unwrap()["grpc-status"], "4");

    // Work within the deadline is untouched; a malformed timeout is refused.
    let fast = grpc_request(addr, "/a.B/Unary", &[("grpc-timeout", "10S"), enforce]);
    let reply = send(&mut client, fast, hello()).await;
    assert_eq!(trailer(&reply, "grpc-status"), Some("0"));
    let bad = grpc_request(addr, "/a.B/Unary", &[("grpc-timeout", "10s")]);
    let reply = send(&mut client, bad, hello()).await;
    assert_eq!(reply.headers["grpc-status"], "3");

    let stats = backend
        .wait_for_stats(WAIT, |s| s.calls_finished == 5)
        .await;
    assert_eq!((stats.deadlines_exceeded, stats.calls_finished), (3, 5));
    let seen = backend.last_request_headers().unwrap();
    assert_eq!(seen.get("grpc-timeout"), Some("10s"));
}

#[tokio::test]
async fn grpc_timeout_is_only_recorded_unless_enforced() {
    let backend = start();
    let addr = backend.local_addr();
    let (client, _driver) = connect(addr).await;
    let metadata = [("x-delay-ms", "10000"), ("grpc-timeout", "50m")];
    let (response, mut stream) =
        open_call(&client, grpc_request(addr, "/a.B/Unary", &metadata)).await;
    stream.send_data(hello(), true).unwrap();
    backend.wait_for_stats(WAIT, |s| s.in_flight == 1).await;
    // Well past the deadline the call is still running: the client (or a proxy) must cancel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.stats().in_flight, 1);
    let seen = backend.last_request_headers().unwrap();
    let timeout = seen.get_bytes("grpc-timeout").and_then(parse_grpc_timeout);
    assert_eq!(timeout, Some(Duration::from_millis(50)));
    drop(response);
    stream.send_reset(Reason::CANCEL);
    let stats = backend
        .wait_for_stats(WAIT, |s| s.cancelled_by_client == 1)
        .await;
    assert_eq!(
        (stats.cancelled_by_client, stats.deadlines_exceeded),
        (1, 0)
    );
}
