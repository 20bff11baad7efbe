//! Real clients through the real server, under both io drivers:
//! - Python grpcio (native gRPC over HTTP/2 with its own C core,
//!   `tests/clients/grpcio_client.py`) runs every scenario through ringway over h2c (cleartext,
//!   prior knowledge) and over TLS trusting only the test CA, one client process per scenario,
//!   with the backend's side checked after each as the direct run does
//!   (loadtest/tests/grpcio.rs);
//! - curl (Debian's, with nghttp2): a gRPC-Web unary call over h2c with prior knowledge, and
//!   over HTTPS with ALPN h2 and http/1.1, each response checked byte for byte.
//!
//! Needs grpcio (`scripts/test-deps.sh` installs it into .venv-test/; without it the grpcio
//! tests fail saying so) and `curl`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::certs_for_server::TestCa;
use common::https::{start_tls_proxy, tls_addr, worker_stats};
use common::*;
use ringway::server::Server;
use ringway_load::backend::{parse_grpc_timeout, BackendHandle, BackendStats};
use ringway_load::clients::{GrpcioClient, GrpcioOptions, GRPCIO_SCENARIOS};

const BACKEND: &str = "pod-clients";

/// How long the backend's counters may take to show a scenario's effect (a hang, not a
/// timing check).
const BACKEND_WAIT: Duration = Duration::from_secs(10);

/// Longest a curl run may take before it is killed (it is also told `--max-time`).
const CURL_MAX_TIME_S: u64 = 10;

fn grpcio() -> GrpcioClient {
    GrpcioClient::find().unwrap_or_else(|why| panic!("{why}"))
}

/// Polls the backend's counters until `done` holds or [`BACKEND_WAIT`] passes; returns the last.
fn wait_for(backend: &BackendHandle, done: impl Fn(&BackendStats) -> bool) -> BackendStats {
    let deadline = Instant::now() + BACKEND_WAIT;
    loop {
        let stats = backend.stats();
        if done(&stats) || Instant::now() >= deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs every grpcio scenario through `proxy` at `target`, one client process each, and after
/// each checks what the backend saw: every call ended there too, the streamed messages
/// arrived, the cancel and the deadline were passed on.
fn every_scenario_through(
    proxy: &Server,
    backend: &BackendHandle,
    target: &str,
    options: &GrpcioOptions,
) {
    let client = grpcio();
    for &scenario in GRPCIO_SCENARIOS {
        eprintln!("--- scenario {scenario}");
        let before = backend.stats();
        let run = client
            .run(target, options, &[scenario])
            .expect("the client runs");
        run.assert_passed(&[scenario]);
        let after = wait_for(backend, |s| s.in_flight == 0);
        assert_eq!(after.in_flight, 0, "{scenario}: calls left in flight");
        match scenario {
            "client_streaming" => {
                assert_eq!(after.messages_received - before.messages_received, 4)
            }
            "bidi_ping_pong" => assert_eq!(after.messages_received - before.messages_received, 5),
            "cancellation" => {
                let after = wait_for(backend, |s| {
                    s.cancelled_by_client > before.cancelled_by_client
                });
                assert_eq!(
                    after.cancelled_by_client - before.cancelled_by_client,
                    1,
                    "the backend saw the cancel"
                );
            }
            "deadline" => {
                let seen = backend.last_request_headers().unwrap();
                let timeout = seen
                    .get_bytes("grpc-timeout")
                    .and_then(parse_grpc_timeout)
                    .expect("ringway passed grpcio's grpc-timeout on");
                assert!(
                    !timeout.is_zero() && timeout <= Duration::from_millis(500),
                    "{timeout:?}"
                );
                // Whoever noticed first (grpcio, ringway or the backend), the call did not run
                // on at the backend.
                let after = wait_for(backend, |s| {
                    s.cancelled_by_client + s.deadlines_exceeded
                        > before.cancelled_by_client + before.deadlines_exceeded
                });
                let ended = (after.cancelled_by_client - before.cancelled_by_client)
                    + (after.deadlines_exceeded - before.deadlines_exceeded);
                assert_eq!(ended, 1, "{after:?}");
            }
            _ => {}
        }
    }
    // Every scenario reached the backend through the proxy's HTTP/2 server.
    let stats = worker_stats(proxy);
    assert!(
        stats.http2_connections.get() >= GRPCIO_SCENARIOS.len() as u64,
        "{} HTTP/2 connections",
        stats.http2_connections.get()
    );
}

#[test]
fn every_grpcio_scenario_passes_through_ringway_over_h2c() {
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let target = proxy.local_addr().to_string();
        every_scenario_through(&proxy, &backend, &target, &GrpcioOptions::default());
    });
}

#[test]
fn every_grpcio_scenario_passes_through_ringway_over_tls() {
    let ca = TestCa::new("grpcio");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let target = tls_addr(&proxy).to_string();
        // The certificate is checked against `localhost` (SNI too), the name grpcio is given.
        let options = GrpcioOptions {
            tls_ca: Some(ca.ca_file()),
            authority: Some("localhost".into()),
            ..GrpcioOptions::default()
        };
        every_scenario_through(&proxy, &backend, &target, &options);
        let tls = &worker_stats(&proxy).tls;
        assert!(tls.alpn_h2.get() >= GRPCIO_SCENARIOS.len() as u64);
        assert_eq!(tls.alpn_http1.get(), 0);
        assert_eq!(
            tls.handshakes_full.get() + tls.handshakes_resumed.get(),
            tls.alpn_h2.get()
        );
        assert_eq!(tls.handshakes_peer_alert.get(), 0);

        // Without --authority grpcio checks the certificate against the target's address.
        let run = grpcio()
            .run(
                &target,
                &GrpcioOptions {
                    tls_ca: Some(ca.ca_file()),
                    ..GrpcioOptions::default()
                },
                &["unary"],
            )
            .unwrap();
        run.assert_passed(&["unary"]);
    });
}

/// A CA grpcio does not trust: the handshake fails on the client's side, the proxy counts it,
/// and no call reaches the backend.
#[test]
fn grpcio_refuses_a_certificate_from_another_ca() {
    let ca = TestCa::new("grpcio-trusted");
    let stranger = TestCa::new("grpcio-stranger");
    let leaf = stranger.leaf("leaf");
    let backend = start_backend(BACKEND);
    let proxy = start_tls_proxy("epoll", &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
    let options = GrpcioOptions {
        tls_ca: Some(ca.ca_file()),
        authority: Some("localhost".into()),
        call_timeout: Some(Duration::from_secs(2)),
        ..GrpcioOptions::default()
    };
    let run = grpcio()
        .run(&tls_addr(&proxy).to_string(), &options, &["unary"])
        .unwrap();
    assert_eq!(run.exit_code, Some(1), "{run:?}");
    assert!(
        run.results.iter().all(|r| r.detail.contains("UNAVAILABLE")),
        "{run:?}"
    );
    let tls = &worker_stats(&proxy).tls;
    // grpcio's C core closes the connection after its failed check without sending the alert
    // a rustls client sends; either way the handshake is counted as ended by the client.
    assert!(tls.handshakes_peer_alert.get() + tls.handshakes_closed.get() >= 1);
    assert_eq!(tls.handshakes_full.get(), 0);
    assert_eq!(backend.stats().calls_finished, 0);
}

// ---------------------------------------------------------------------------------------------
// curl

/// What curl received: the response head as it prints it (`-D`) and the body bytes.
struct CurlResponse {
    head: String,
    body: Vec<u8>,
}

/// POSTs `body` to `url` with curl and the given extra arguments; fails the test if curl fails.
fn curl(url: &str, args: &[&str], headers: &[&str], body: &[u8]) -> CurlResponse {
    let dir = std::env::temp_dir().join(format!(
        "ringway-curl-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let head_file = dir.join("head");
    let body_file = dir.join("body");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", &CURL_MAX_TIME_S.to_string()])
        .args(["-X", "POST", "--data-binary", "@-"])
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file)
        .args(args);
    for header in headers {
        command.args(["-H", header]);
    }
    let mut child = command
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (Debian package curl) is needed for these tests");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let response = CurlResponse {
        head: std::fs::read_to_string(&head_file).unwrap(),
        body: std::fs::read(&body_file).unwrap(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    response
}

const WEB_HEADERS: [&str; 2] = ["content-type: application/grpc-web+proto", "x-grpc-web: 1"];

#[test]
fn curl_calls_grpc_web_over_h2c_with_prior_knowledge() {
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let url = format!("http://{}{UNARY}", proxy.local_addr());
        let response = curl(
            &url,
            &["--http2-prior-knowledge"],
            &WEB_HEADERS,
            &grpc_frame(b"abc"),
        );
        assert_eq!(
            response.head,
            format!(
                "HTTP/2 200 \r\ncontent-type: application/grpc-web+proto\r\n\
                 x-backend: {BACKEND}\r\n\r\n"
            )
        );
        // The echoed message frame, then the trailer frame: exactly these bytes.
        let mut expected = vec![0, 0, 0, 0, 3];
        expected.extend_from_slice(b"abc");
        expected.extend_from_slice(&[0x80, 0, 0, 0, 15]);
        expected.extend_from_slice(b"grpc-status:0\r\n");
        assert_eq!(response.body, expected);
        assert_eq!(worker_stats(&proxy).http2_connections.get(), 1);
    });
}

#[test]
fn curl_calls_grpc_web_over_https_with_h2_and_with_http1() {
    let ca = TestCa::new("curl");
    let leaf = ca.leaf("leaf");
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_tls_proxy(driver, &[backend.local_addr()], &leaf.cert, &leaf.key, &[]);
        let port = tls_addr(&proxy).port();
        let url = format!("https://localhost:{port}{UNARY}");
        let resolve = format!("localhost:{port}:127.0.0.1");
        let ca_file = ca.ca_file();
        let tls_args = ["--cacert", ca_file.to_str().unwrap(), "--resolve", &resolve];
        let h2 = curl(
            &url,
            &[&tls_args[..], &["--http2"]].concat(),
            &WEB_HEADERS,
            &grpc_frame(b"over h2"),
        );
        assert!(h2.head.starts_with("HTTP/2 200 \r\n"), "{}", h2.head);
        assert_eq!(h2.body, echo_body(&[b"over h2"]));
        let h1 = curl(
            &url,
            &[&tls_args[..], &["--http1.1"]].concat(),
            &WEB_HEADERS,
            &grpc_frame(b"over http/1.1"),
        );
        assert_eq!(
            h1.head,
            streaming_head("application/grpc-web+proto", BACKEND)
        );
        assert_eq!(h1.body, echo_body(&[b"over http/1.1"]));
        let tls = &worker_stats(&proxy).tls;
        assert_eq!(tls.alpn_h2.get(), 1);
        assert_eq!(tls.alpn_http1.get(), 1);
    });
}

/// h2load (nghttp2) loads ringway over h2c with native gRPC calls: many streams over a few
/// connections. h2load judges only the HTTP status, so the proxy's own count of calls ended
/// with grpc-status 0 is checked too.
#[test]
fn h2load_native_grpc_over_h2c() {
    const CALLS: u64 = 400;
    for_each_driver(|driver| {
        let backend = start_backend(BACKEND);
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let body = std::env::temp_dir().join(format!(
            "ringway-h2load-{driver}-{}.bin",
            std::process::id()
        ));
        std::fs::write(&body, grpc_frame(b"h2load")).unwrap();
        let output = Command::new("h2load")
            .args(["-n", &CALLS.to_string(), "-c", "2", "-m", "16"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&body)
            .arg(format!("http://{}{UNARY}", proxy.local_addr()))
            .output()
            .expect("h2load (Debian package nghttp2-client) is needed for this test");
        let _ = std::fs::remove_file(&body);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{text}");
        assert!(
            text.contains(&format!("{CALLS} succeeded, 0 failed, 0 errored")),
            "{text}"
        );
        let totals = totals(&proxy);
        assert_eq!(totals.calls_by_status[0], CALLS, "{text}");
        assert_eq!(totals.calls(), CALLS);
        assert_eq!(totals.http2_connections, 2);
    });
}
