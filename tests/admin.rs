//! The admin listener and the access log, on the real binary: readiness switches, statistics in
//! both formats, the endpoint table, the effective flags, POST-only controls, and one access log
//! line per request; probes answered beside slow clients; controls refused to browsers; and
//! readiness that follows whether any endpoint can take a call.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn admin(addr: SocketAddr, method: &str, path: &str) -> Response {
    admin_raw(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n"),
    )
}

/// A raw request to the admin port, answered within the probe's read timeout or failing.
fn admin_raw(addr: SocketAddr, request: &str) -> Response {
    let stream = TcpStream::connect(addr).expect("admin listens");
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
    let mut reader = Reader::new(stream);
    reader.write(request.as_bytes());
    reader.read_response()
}

/// How long a probe waits for its answer: generous for a loaded machine (the kubelet's probes
/// in deploy/ give up after 1 s), far less than a slow client can hold a serial server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// ringway on free ports with `--upstream upstream`, plus `extra` flags: the process, its data
/// address and its admin address, once the admin port answers.
fn start_ringway(driver: &str, upstream: SocketAddr, extra: &[&str]) -> (Running, SocketAddr) {
    let (listen, admin_addr) = (free_addr(), free_addr());
    let proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin_addr.to_string()])
            .args(["--upstream", &upstream.to_string(), "--workers", "2"])
            .args(["--io-driver", driver, "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("ringway starts"),
    );
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        admin_addr
    )
    .is_ok()));
    (proxy, admin_addr)
}

#[test]
fn admin_endpoints_and_access_log() {
    for_each_driver(|driver| {
        let backend = start_backend("pod");
        let (listen, admin_addr) = (free_addr(), free_addr());
        let log_path = std::env::temp_dir().join(format!(
            "ringway-access-{driver}-{}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log_path);
        let _proxy = Running(
            Command::new(env!("CARGO_BIN_EXE_ringway"))
                .args([
                    "--listen",
                    &listen.to_string(),
                    "--admin",
                    &admin_addr.to_string(),
                ])
                .args([
                    "--upstream",
                    &backend.local_addr().to_string(),
                    "--workers",
                    "2",
                ])
                .args(["--io-driver", driver, "--log-level", "warn"])
                .args([
                    "--access-log",
                    log_path.to_str().unwrap(),
                    "--access-log-format",
                    "json",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("ringway starts"),
        );
        assert!(wait_until(Duration::from_secs(10), || {
            TcpStream::connect(admin_addr).is_ok()
                && admin(admin_addr, "GET", "/ready").status == 200
        }));
        assert_eq!(admin(admin_addr, "GET", "/live").status, 200);

        for _ in 0..3 {
            assert_eq!(
                roundtrip(listen, &grpc_web_request(UNARY, &[], &grpc_frame(b"m"))).grpc_status(),
                Some(0)
            );
        }
        assert_eq!(
            roundtrip(listen, &post(UNARY, "text/plain", &[], b"x")).status,
            415
        );

        // Counters are summed over both workers; endpoint stats are republished within a second.
        // A call is counted just after its response is written, so the client may see the
        // answer a moment before the counter moves.
        let prometheus = || {
            let response = admin(admin_addr, "GET", "/stats/prometheus");
            assert_eq!(response.status, 200);
            String::from_utf8(response.body).unwrap()
        };
        assert!(
            wait_until(Duration::from_secs(5), || prometheus()
                .contains("ringway_calls_total{grpc_status=\"OK\"} 3\n")),
            "{}",
            prometheus()
        );
        let text = prometheus();
        assert!(
            text.contains("ringway_downstream_local_responses_total{status=\"415\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ringway_call_duration_seconds_count 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ringway_access_log_lines_dropped_total 0\n"),
            "{text}"
        );
        let stats = String::from_utf8(admin(admin_addr, "GET", "/stats").body).unwrap();
        assert!(stats.contains("calls.grpc_status.OK: 3\n"), "{stats}");
        assert!(stats.contains("access_log.lines_dropped: 0\n"), "{stats}");
        let calls_in_clusters = || {
            let clusters = String::from_utf8(admin(admin_addr, "GET", "/clusters").body).unwrap();
            let line = format!("{} state=active health=healthy", backend.local_addr());
            let calls: u64 = clusters
                .split_whitespace()
                .filter_map(|field| field.strip_prefix("calls="))
                .map(|n| n.parse::<u64>().unwrap())
                .sum();
            clusters.contains(&line).then_some(calls)
        };
        assert!(
            wait_until(Duration::from_secs(5), || calls_in_clusters() == Some(3)),
            "{:?}",
            calls_in_clusters()
        );
        let config = String::from_utf8(admin(admin_addr, "GET", "/config").body).unwrap();
        assert!(config.contains("drain_timeout_ms: 30000"), "{config}");

        // Mutating endpoints are POST only; readiness follows them.
        assert_eq!(admin(admin_addr, "GET", "/healthcheck/fail").status, 405);
        assert_eq!(admin(admin_addr, "POST", "/healthcheck/fail").status, 200);
        assert_eq!(admin(admin_addr, "GET", "/ready").status, 503);
        assert_eq!(admin(admin_addr, "POST", "/healthcheck/ok").status, 200);
        assert_eq!(admin(admin_addr, "GET", "/ready").status, 200);
        assert_eq!(admin(admin_addr, "GET", "/nope").status, 404);

        // One JSON line per request, handed to the writer within a housekeeping tick.
        let lines = || std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            wait_until(Duration::from_secs(5), || lines().lines().count() == 4),
            "{}",
            lines()
        );
        let log = lines();
        assert_eq!(log.matches("\"grpc_status\":0,").count(), 3, "{log}");
        assert!(
            log.contains("\"status\":415,\"grpc_status\":null,\"upstream\":null"),
            "{log}"
        );
        assert!(
            log.contains(&format!("\"upstream\":\"{}\"", backend.local_addr())),
            "{log}"
        );
        assert!(log.contains("\"bytes_in\":"), "{log}");
        let _ = std::fs::remove_file(&log_path);
    });
}

/// A client trickling its request one byte every 1.5 s holds one admin connection, not the
/// admin port: `/live` and `/ready` keep answering beside it, and it is cut at its deadline
/// for the whole request. With every connection slot taken by clients that send nothing, a
/// probe still gets in (the oldest silent one makes room).
#[test]
fn probes_answer_beside_slow_and_silent_clients() {
    for_each_driver(|driver| {
        let backend = start_backend("pod");
        let (_proxy, admin_addr) = start_ringway(driver, backend.local_addr(), &[]);
        assert!(wait_until(Duration::from_secs(10), || admin(
            admin_addr, "GET", "/ready"
        )
        .status
            == 200));

        let request = b"GET /live HTTP/1.1\r\nhost: localhost\r\n\r\n";
        let slow_done = Arc::new(AtomicBool::new(false));
        let slow = {
            let done = slow_done.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(admin_addr).unwrap();
                // Returns how many bytes went out before the server closed the connection.
                let mut sent = 0;
                for byte in &request[..8] {
                    if stream.write_all(&[*byte]).is_err() {
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(1500));
                }
                done.store(true, Ordering::SeqCst);
                sent
            })
        };
        let mut probes = 0;
        while !slow_done.load(Ordering::SeqCst) {
            for path in ["/live", "/ready"] {
                let response = admin_raw(
                    admin_addr,
                    &format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n"),
                );
                assert_eq!(response.status, 200, "{path} beside the slow client");
                probes += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let sent = slow.join().unwrap();
        assert!(probes >= 4, "{probes} probes");
        // Cut at the whole-request deadline (2 s), long before its 8 bytes (12 s): a write
        // after the close fails within a byte or two.
        assert!(sent < 8, "the slow client was never cut off");

        let silent: Vec<TcpStream> = (0..16)
            .map(|_| TcpStream::connect(admin_addr).unwrap())
            .collect();
        let response = admin_raw(admin_addr, "GET /ready HTTP/1.1\r\nhost: localhost\r\n\r\n");
        assert_eq!(response.status, 200, "probe with every slot taken");
        let stats = String::from_utf8(admin(admin_addr, "GET", "/stats").body).unwrap();
        let evicted: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("admin.connections_evicted: "))
            .expect("the eviction counter")
            .parse()
            .unwrap();
        assert!(evicted >= 1, "{stats}");
        drop(silent);
    });
}

/// State-changing POSTs from a browser page are refused: with an `Origin` header, or a `Host`
/// that is a name other than localhost (DNS rebinding). Tools get through.
#[test]
fn browser_posts_to_the_admin_port_are_refused() {
    for_each_driver(|driver| {
        let backend = start_backend("pod");
        let (_proxy, admin_addr) = start_ringway(driver, backend.local_addr(), &[]);
        let ready = || admin(admin_addr, "GET", "/ready").status;
        assert!(wait_until(Duration::from_secs(10), || ready() == 200));
        let post = |path: &str, headers: &str| {
            admin_raw(
                admin_addr,
                &format!("POST {path} HTTP/1.1\r\n{headers}content-length: 0\r\n\r\n"),
            )
            .status
        };
        let host = format!("host: {admin_addr}\r\n");
        let with_origin = format!("{host}origin: https://app.example\r\n");
        for path in ["/healthcheck/fail", "/drain"] {
            assert_eq!(post(path, &with_origin), 403, "{path} with Origin");
            assert_eq!(post(path, "host: evil.example:9901\r\n"), 403, "{path}");
            assert_eq!(
                post(path, "host: localhost.evil.example\r\n"),
                403,
                "{path}"
            );
        }
        assert_eq!(ready(), 200, "a refused POST changed nothing");
        assert_eq!(post("/healthcheck/fail", "host: localhost:19901\r\n"), 200);
        assert_eq!(ready(), 503);
        assert_eq!(post("/healthcheck/ok", &host), 200);
        assert_eq!(ready(), 200);
    });
}

/// `/ready` answers 503 while no endpoint can take a call: here the only endpoint refuses
/// connects (found by the warm connect, without any call). It turns 200 once the endpoint
/// listens, without a call either (the workers probe it). With `--ready-requires-upstream
/// false` the same pod stays ready.
#[test]
fn ready_follows_whether_an_endpoint_can_take_a_call() {
    for_each_driver(|driver| {
        let upstream = closed_port();
        let (_proxy, admin_addr) = start_ringway(driver, upstream, &[]);
        let ready = || admin(admin_addr, "GET", "/ready");
        assert!(
            wait_until(Duration::from_secs(10), || ready().status == 503),
            "{:?}",
            ready()
        );
        let body = String::from_utf8(ready().body).unwrap();
        assert!(
            body.starts_with("not ready: no upstream endpoint can take a call (1 in the set"),
            "{body}"
        );
        let stats = String::from_utf8(admin(admin_addr, "GET", "/stats").body).unwrap();
        assert!(stats.contains("endpoints.refused: 1\n"), "{stats}");
        assert!(stats.contains("upstream.connects_refused: "), "{stats}");

        let backend = start_backend_with(&upstream.to_string(), "back", |_| {});
        assert!(
            wait_until(Duration::from_secs(10), || ready().status == 200),
            "{:?}",
            ready()
        );
        drop(backend);

        let upstream = closed_port();
        let (_proxy, admin_addr) =
            start_ringway(driver, upstream, &["--ready-requires-upstream", "false"]);
        let refused = || {
            String::from_utf8(admin(admin_addr, "GET", "/stats").body)
                .unwrap()
                .contains("endpoints.refused: 1\n")
        };
        assert!(wait_until(Duration::from_secs(10), refused));
        assert_eq!(admin(admin_addr, "GET", "/ready").status, 200);
    });
}
