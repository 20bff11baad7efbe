//! The load generator against a real HTTP/1.1 gRPC-Web server on 127.0.0.1: counts, open-loop
//! rate, per-pod distribution, the balance check's exit code and every error kind. Then the
//! HTTP/2 mode: native gRPC against the project's real h2 test backend (no proxy in between),
//! and gRPC-Web over HTTP/2 against a tiny h2 responder.
//!
//! ringway-load must not depend on ringway, so the HTTP/1.1 server is a tiny responder written
//! here: std threads, keep-alive, one fixed reply per call naming a pod in `x-backend` and
//! ending in a trailer frame. A request header `x-misbehave` makes it misbehave on demand.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ringway_load::backend::{Backend, BackendConfig, BackendHandle, BackendStats};
use ringway_load::load::{self, CallKind, IoDriver, LoadConfig, Mode, Protocol, Report};

/// A running responder; its threads end with the test process.
struct Responder {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl Responder {
    /// Serves on 127.0.0.1:0; call n is answered by `pods[n % pods.len()]`.
    fn start(pods: &[&str]) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pods: Arc<Vec<String>> = Arc::new(pods.iter().map(|p| p.to_string()).collect());
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let pods = pods.clone();
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, &pods, &counter));
            }
        });
        Responder { addr, requests }
    }

    fn config(&self) -> LoadConfig {
        LoadConfig {
            target: self.addr,
            host_header: self.addr.to_string(),
            connections: 4,
            threads: 2,
            duration: Some(Duration::from_millis(500)),
            window: Duration::from_millis(100),
            ..LoadConfig::default()
        }
    }
}

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One keep-alive connection: read a request (head and Content-Length body), answer it.
fn serve(stream: TcpStream, pods: &[String], counter: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            headers.push(line.trim_end().to_ascii_lowercase());
        }
        let header = |name: &str| {
            headers
                .iter()
                .find_map(|h| h.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let pod = &pods[n as usize % pods.len()];
        let text =
            header("content-type").is_some_and(|t| t.starts_with("application/grpc-web-text"));
        let misbehave = header("x-misbehave").unwrap_or_default();
        let reply = respond(&misbehave, pod, text);
        match reply {
            Some(bytes) => {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            None if misbehave == "hang" => std::thread::sleep(Duration::from_secs(30)),
            None => return, // close without answering
        }
        if misbehave == "close-after" {
            return;
        }
    }
}

/// The reply's bytes for a misbehaviour (`""` = a correct unary reply); `None` = no reply.
fn respond(misbehave: &str, pod: &str, text: bool) -> Option<Vec<u8>> {
    let message = frame(0, b"0123456789abcdef");
    let ok_trailer = frame(0x80, b"grpc-status:0\r\ngrpc-message:\r\n");
    let body: Vec<u8> = match misbehave {
        "" | "chunked" | "close-after" => [message, ok_trailer].concat(),
        "stream" => [message.clone(), message.clone(), message, ok_trailer].concat(),
        "unavailable" => frame(0x80, b"grpc-status:14\r\ngrpc-message:down\r\n"),
        "bad-framing" => [message[..8].to_vec()].concat(),
        "no-trailers" => message,
        "trailers-only" => Vec::new(),
        "503" => {
            let head = format!("HTTP/1.1 503 Service Unavailable\r\nx-backend: {pod}\r\ncontent-length: 4\r\n\r\nbusy");
            return Some(head.into_bytes());
        }
        _ => return None,
    };
    let body = if text {
        STANDARD.encode(&body).into_bytes()
    } else {
        body
    };
    let content_type = if text {
        "application/grpc-web-text+proto"
    } else {
        "application/grpc-web+proto"
    };
    let mut head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nx-backend: {pod}\r\n");
    if misbehave == "trailers-only" {
        head.push_str("grpc-status: 5\r\ngrpc-message: nope\r\n");
    }
    if misbehave == "close-after" {
        head.push_str("connection: close\r\n");
    }
    let mut out = if misbehave == "chunked" {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        let mut out = head.into_bytes();
        for piece in body.chunks(7) {
            out.extend(format!("{:x}\r\n", piece.len()).bytes());
            out.extend_from_slice(piece);
            out.extend(b"\r\n");
        }
        out.extend(b"0\r\n\r\n");
        return Some(out);
    } else {
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        head.into_bytes()
    };
    out.extend(body);
    Some(out)
}

fn misbehaving(config: LoadConfig, how: &str) -> LoadConfig {
    LoadConfig {
        metadata: vec![("x-misbehave".into(), how.into())],
        ..config
    }
}

/// The io drivers this machine can run: epoll always, io_uring when the kernel allows it.
fn drivers() -> Vec<IoDriver> {
    let mut drivers = vec![IoDriver::Epoll];
    if monoio::utils::detect_uring() {
        drivers.push(IoDriver::Uring);
    }
    drivers
}

#[test]
fn closed_loop_counts_every_call_once() {
    for io_driver in drivers() {
        closed_loop_counts(io_driver);
    }
}

fn closed_loop_counts(io_driver: IoDriver) {
    let responder = Responder::start(&["pod-1", "pod-2"]);
    let config = LoadConfig {
        io_driver,
        ..responder.config()
    };
    let report = load::start(config).unwrap().join();
    assert_eq!(report.config.io_driver, io_driver);
    assert!(report.calls_ok > 100, "{}", report.table());
    assert_eq!(report.errors, 0, "{}", report.table());
    assert_eq!(report.calls_ok, responder.requests.load(Ordering::Relaxed));
    assert_eq!(report.connects, 4, "keep-alive: one connect per connection");
    assert_eq!(report.per_pod.values().sum::<u64>(), report.calls_ok);
    assert_eq!(report.windows.len(), 5);
    let windowed: u64 = report.windows.iter().map(|w| w.calls_ok).sum();
    assert_eq!(windowed, report.calls_ok);
    assert!(
        report.windows.iter().all(|w| w.calls_ok > 0),
        "every window had calls"
    );
    // Alternating pods: the counts differ by at most one.
    let imbalance = report.imbalance.unwrap();
    assert!(imbalance < 1.02, "imbalance {imbalance}");
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
    assert!(report.duration >= Duration::from_millis(500));
    assert!(
        report.duration < Duration::from_millis(700),
        "{:?}",
        report.duration
    );
    assert!(report.requests_per_s > 0.0 && report.target_rate.is_none());
}

#[test]
fn open_loop_achieves_the_target_rate() {
    for io_driver in drivers() {
        open_loop_rate(io_driver);
    }
}

fn open_loop_rate(io_driver: IoDriver) {
    let responder = Responder::start(&["pod-1"]);
    let config = LoadConfig {
        io_driver,
        rate: Some(400.0),
        connections: 8,
        duration: Some(Duration::from_secs(2)),
        window: Duration::from_millis(500),
        ..responder.config()
    };
    let report = load::start(config).unwrap().join();
    assert_eq!(report.errors, 0, "{}", report.table());
    assert_eq!(report.target_rate, Some(400.0));
    // 800 calls are due in 2 s: the schedule is exact, so only the run's edges can differ.
    assert!((790..=800).contains(&report.calls_ok), "{}", report.table());
    let achieved = report.achieved_rate;
    assert!((380.0..=410.0).contains(&achieved), "achieved {achieved}");
    // Each 0.5 s window holds about 200 calls: the rate is steady, not bursty.
    for window in &report.windows {
        assert!(
            (180..=220).contains(&window.calls_ok),
            "{:?}",
            report.windows
        );
    }
}

#[test]
fn per_pod_counts_and_imbalance() {
    let responder = Responder::start(&["pod-a", "pod-a", "pod-b"]);
    let report = load::start(responder.config()).unwrap().join();
    let a = report.per_pod["pod-a"];
    let b = report.per_pod["pod-b"];
    assert_eq!(a + b, report.calls_ok);
    let imbalance = report.imbalance.unwrap();
    assert!((1.95..=2.05).contains(&imbalance), "imbalance {imbalance}");
    assert_eq!(load::imbalance(&report.per_pod), report.imbalance);
    let table = report.table();
    assert!(
        table.contains("pod-a") && table.contains("imbalance"),
        "{table}"
    );
}

#[test]
fn check_balance_exit_code_and_files() {
    let responder = Responder::start(&["pod-a", "pod-a", "pod-b"]);
    let dir = std::env::temp_dir().join(format!("ringway-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let chart = dir.join("chart.svg");
    let run = |limit: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
            .args(["run", "--target", &format!("http://{}", responder.addr)])
            .args([
                "--connections",
                "2",
                "--threads",
                "1",
                "--duration",
                "300ms",
            ])
            .args(["--window", "100ms", "--check-balance", limit])
            .arg("--json")
            .arg(&json)
            .arg("--chart")
            .arg(&chart)
            .output()
            .unwrap()
    };
    let failed = run("1.5");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("balance check FAILED"), "{stdout}");
    let passed = run("2.5");
    assert_eq!(
        passed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&passed.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["calls_ok"].as_u64().unwrap() > 0);
    assert!(report["per_pod"]["pod-b"].as_u64().unwrap() > 0);
    assert_eq!(report["windows"].as_array().unwrap().len(), 3);
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("pod-b"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_balance_fails_when_no_pod_is_named() {
    let responder = Responder::start(&["pod-a"]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args(["run", "--target", &format!("http://{}", responder.addr)])
        .args([
            "--connections",
            "1",
            "--duration",
            "200ms",
            "--backend-header",
            "x-other",
        ])
        .args(["--check-balance", "1.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
}

/// Runs a short load that misbehaves as `how` and returns the error counts.
fn errors_for(
    how: &str,
    config: impl FnOnce(LoadConfig) -> LoadConfig,
) -> (u64, Vec<(String, u64)>) {
    let responder = Responder::start(&["pod-1"]);
    let base = LoadConfig {
        duration: Some(Duration::from_millis(300)),
        connections: 2,
        threads: 1,
        ..responder.config()
    };
    let report = load::start(config(misbehaving(base, how))).unwrap().join();
    (report.calls_ok, report.errors_by_kind.into_iter().collect())
}

fn only(kind: &str, (ok, errors): (u64, Vec<(String, u64)>)) {
    assert_eq!(ok, 0, "{kind}: {errors:?}");
    assert_eq!(errors.len(), 1, "{kind}: {errors:?}");
    assert_eq!(errors[0].0, kind);
    assert!(errors[0].1 > 0);
}

#[test]
fn each_error_kind() {
    only("http_503", errors_for("503", |c| c));
    only("grpc_UNAVAILABLE", errors_for("unavailable", |c| c));
    only("grpc_NOT_FOUND", errors_for("trailers-only", |c| c));
    only("malformed", errors_for("bad-framing", |c| c));
    only("missing_trailers", errors_for("no-trailers", |c| c));
    // Closing without a reply: the idle-close retry happens once, then it is an error.
    only("io", errors_for("close", |c| c));
    // A server stream's reply on a unary call (three messages) breaks the unary contract.
    only("malformed", errors_for("stream", |c| c));
}

#[test]
fn hanging_target_times_out() {
    let (ok, errors) = errors_for("hang", |c| LoadConfig {
        call_timeout: Duration::from_millis(100),
        ..c
    });
    assert_eq!(ok, 0);
    let timeouts = errors
        .iter()
        .find(|(k, _)| k == "timeout")
        .map_or(0, |(_, n)| *n);
    // Two connections, 300 ms, 100 ms each: about six, and nothing else but calls cut off at
    // the end of the run.
    assert!((4..=8).contains(&timeouts), "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|(k, _)| k == "timeout" || k == "unfinished"),
        "{errors:?}"
    );
}

#[test]
fn dead_target_counts_connect_errors_and_ends() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = LoadConfig {
        target: addr,
        host_header: addr.to_string(),
        connections: 2,
        duration: Some(Duration::from_millis(300)),
        ..LoadConfig::default()
    };
    let started = Instant::now();
    let report = load::start(config).unwrap().join();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.calls_ok, 0);
    let connect = report.errors_by_kind.get("connect").copied().unwrap_or(0);
    assert!(connect >= 2, "{:?}", report.errors_by_kind);
    assert_eq!(
        report.errors_by_kind.len(),
        1,
        "{:?}",
        report.errors_by_kind
    );
    assert_eq!(report.requests_per_s, 0.0, "no request was sent");
}

#[test]
fn good_variants_succeed() {
    let ok = |how: &str, config: fn(LoadConfig) -> LoadConfig| {
        let (ok, errors) = errors_for(how, config);
        assert!(ok > 0 && errors.is_empty(), "{how}: ok {ok}, {errors:?}");
    };
    ok("", |c| c);
    ok("chunked", |c| c);
    ok("", |c| LoadConfig {
        mode: Mode::Text,
        ..c
    });
    ok("chunked", |c| LoadConfig {
        mode: Mode::Text,
        ..c
    });
    ok("stream", |c| LoadConfig {
        call: CallKind::ServerStream,
        ..c
    });
    ok("", |c| LoadConfig {
        payload_bytes: 100_000,
        ..c
    });
}

#[test]
fn connection_close_reconnects_and_counts() {
    let responder = Responder::start(&["pod-1"]);
    let config = misbehaving(
        LoadConfig {
            connections: 1,
            threads: 1,
            duration: Some(Duration::from_millis(200)),
            ..responder.config()
        },
        "close-after",
    );
    let report = load::start(config).unwrap().join();
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert!(report.calls_ok > 5);
    assert_eq!(report.connects, report.calls_ok, "one connection per call");
}

#[test]
fn stop_ends_an_endless_run_and_snapshot_is_live() {
    let responder = Responder::start(&["pod-1", "pod-2"]);
    let config = LoadConfig {
        duration: None,
        ..responder.config()
    };
    let handle = load::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(550));
    let snapshot = handle.snapshot();
    assert!(snapshot.calls_ok > 0);
    // Windows are listed once the threads' 200 ms flush lag has passed after their end.
    assert_eq!(snapshot.windows.len(), 3, "three 100 ms windows settled");
    assert!(snapshot.windows.iter().all(|w| w.calls_ok > 0));
    assert_eq!(snapshot.per_pod.len(), 2);
    let stopped = Instant::now();
    handle.stop();
    let report = handle.join();
    assert!(stopped.elapsed() < Duration::from_millis(1500));
    assert!(report.calls_ok >= snapshot.calls_ok);
    assert!(
        (0.5..0.7).contains(&report.duration.as_secs_f64()),
        "{:?}",
        report.duration
    );
}

#[test]
fn stop_with_calls_hanging_counts_them_unfinished_within_the_grace() {
    let responder = Responder::start(&["pod-1"]);
    let config = misbehaving(
        LoadConfig {
            duration: None,
            ..responder.config()
        },
        "hang",
    );
    let handle = load::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stopped = Instant::now();
    handle.stop();
    let report = handle.join();
    let waited = stopped.elapsed();
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert_eq!(report.errors_by_kind.get("unfinished"), Some(&4));
}

#[test]
fn invalid_config_is_refused() {
    for config in [
        LoadConfig {
            connections: 0,
            ..LoadConfig::default()
        },
        LoadConfig {
            connections: 100_001,
            ..LoadConfig::default()
        },
        LoadConfig {
            rate: Some(0.0),
            ..LoadConfig::default()
        },
        LoadConfig {
            method: "no-slash".into(),
            ..LoadConfig::default()
        },
        LoadConfig {
            metadata: vec![("x".into(), "a\r\nb: c".into())],
            ..LoadConfig::default()
        },
    ] {
        let error = load::start(config).err().expect("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn invalid_http2_settings_are_refused() {
    let h2 = LoadConfig {
        http2: true,
        protocol: Protocol::Grpc,
        ..LoadConfig::default()
    };
    for (config, expected) in [
        (
            LoadConfig {
                streams: 8,
                ..LoadConfig::default()
            },
            "need HTTP/2",
        ),
        (
            LoadConfig {
                protocol: Protocol::Grpc,
                ..LoadConfig::default()
            },
            "needs HTTP/2",
        ),
        (
            LoadConfig {
                mode: Mode::Text,
                ..h2.clone()
            },
            "text mode",
        ),
        (
            LoadConfig {
                streams: 0,
                ..h2.clone()
            },
            "streams",
        ),
        (
            LoadConfig {
                connections: 100_000,
                streams: 100,
                ..h2.clone()
            },
            "connections × streams",
        ),
    ] {
        let error = load::start(config).err().expect("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains(expected), "{error}");
    }
}

// ---- HTTP/2 ----

fn h2_backend(adjust: impl FnOnce(&mut BackendConfig)) -> BackendHandle {
    let mut config = BackendConfig::new("127.0.0.1:0".parse().unwrap(), "pod-h2");
    adjust(&mut config);
    Backend::start(config).expect("backend starts")
}

/// Native gRPC over 2 HTTP/2 connections × 8 streams on 2 threads, 500 ms.
fn h2_config(target: SocketAddr) -> LoadConfig {
    LoadConfig {
        target,
        host_header: target.to_string(),
        connections: 2,
        streams: 8,
        threads: 2,
        http2: true,
        protocol: Protocol::Grpc,
        duration: Some(Duration::from_millis(500)),
        window: Duration::from_millis(100),
        ..LoadConfig::default()
    }
}

#[test]
fn http2_multiplexes_every_stream_over_few_connections() {
    for io_driver in drivers() {
        http2_multiplexes(io_driver);
    }
}

fn http2_multiplexes(io_driver: IoDriver) {
    // Calls take 100 ms, so the 16 streams are seen at once on the backend.
    let backend = h2_backend(|c| c.latency_ms = 100);
    let config = LoadConfig {
        io_driver,
        duration: Some(Duration::from_millis(800)),
        ..h2_config(backend.local_addr())
    };
    let handle = load::start(config).unwrap();
    let mut in_flight_max = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight_max < 16 && Instant::now() < deadline && !handle.is_finished() {
        in_flight_max = in_flight_max.max(backend.stats().in_flight);
        std::thread::sleep(Duration::from_millis(2));
    }
    let report = handle.join();
    assert_eq!(in_flight_max, 16, "2 connections × 8 streams at once");
    assert_eq!(report.errors, 0, "{}", report.table());
    assert!(report.calls_ok >= 16, "{}", report.table());
    assert_eq!(
        report.connects, 2,
        "one connection per --connections, shared by its streams"
    );
    let stats = backend.stats();
    assert_eq!(stats.connections_accepted, 2);
    assert_eq!(stats.calls_finished, report.calls_ok);
    assert_eq!(report.per_pod["pod-h2"], report.calls_ok);
    let seen = backend.last_request_headers().unwrap();
    assert_eq!(seen.get("content-type"), Some("application/grpc"));
    assert_eq!(seen.get("te"), Some("trailers"));
    assert_eq!(
        seen.get(":authority"),
        Some(report.config.host_header.as_str())
    );
    assert!(report.table().contains("gRPC over HTTP/2"));
    assert!(report.table().contains("2 connections × 8 streams"));
}

/// A short native gRPC run against the backend with `metadata` on every call.
fn h2_run(backend: &BackendHandle, adjust: impl FnOnce(LoadConfig) -> LoadConfig) -> Report {
    let config = LoadConfig {
        duration: Some(Duration::from_millis(300)),
        threads: 1,
        ..h2_config(backend.local_addr())
    };
    load::start(adjust(config)).unwrap().join()
}

fn only_h2(kind: &str, report: &Report) {
    let errors: Vec<_> = report.errors_by_kind.iter().collect();
    assert_eq!(report.calls_ok, 0, "{kind}: {errors:?}");
    assert_eq!(errors.len(), 1, "{kind}: {errors:?}");
    assert_eq!(errors[0].0, kind);
    assert!(*errors[0].1 > 0);
}

fn with_metadata(pairs: &[(&str, &str)]) -> impl FnOnce(LoadConfig) -> LoadConfig {
    let metadata = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |c| LoadConfig { metadata, ..c }
}

#[test]
fn http2_native_grpc_error_kinds() {
    let backend = h2_backend(|_| {});
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("grpc_UNAVAILABLE", &[("x-grpc-status", "14")]),
        (
            "grpc_NOT_FOUND",
            &[("x-trailers-only", "1"), ("x-grpc-status", "5")],
        ),
        ("http_503", &[("x-http-status", "503")]),
        (
            "reset_CANCEL",
            &[("x-reset", "after-headers"), ("x-reset-code", "8")],
        ),
        ("reset_INTERNAL_ERROR", &[("x-reset", "before-headers")]),
        (
            "grpc_DEADLINE_EXCEEDED",
            &[
                ("x-delay-ms", "5000"),
                ("grpc-timeout", "20m"),
                ("x-enforce-deadline", "1"),
            ],
        ),
    ];
    for (kind, metadata) in cases {
        only_h2(kind, &h2_run(&backend, with_metadata(metadata)));
    }
    // Trailers-only OK has no message: not a unary reply.
    let report = h2_run(&backend, with_metadata(&[("x-trailers-only", "1")]));
    only_h2("malformed", &report);
    // Three messages on a unary call.
    let report = h2_run(&backend, |c| LoadConfig {
        method: "/ringway.test.Echo/ServerStream".into(),
        ..c
    });
    only_h2("malformed", &report);
    // A refused stream is sent once more on a new connection, then counted as refused.
    let report = h2_run(
        &backend,
        with_metadata(&[("x-reset", "before-headers"), ("x-reset-code", "7")]),
    );
    only_h2("reset_REFUSED_STREAM", &report);
    assert!(
        report.connects > 2,
        "retries reconnect: {}",
        report.connects
    );
    // The connections stay up through every error above.
    let report = h2_run(&backend, |c| c);
    assert!(
        report.calls_ok > 0 && report.errors == 0,
        "{}",
        report.table()
    );
}

#[test]
fn http2_call_timeout_resets_the_stream_and_keeps_the_connection() {
    let backend = h2_backend(|_| {});
    let report = h2_run(&backend, |c| LoadConfig {
        call_timeout: Duration::from_millis(100),
        metadata: vec![("x-delay-ms".into(), "10000".into())],
        ..c
    });
    assert_eq!(report.calls_ok, 0);
    assert!(
        report.errors_by_kind["timeout"] >= 16,
        "{:?}",
        report.errors_by_kind
    );
    assert!(
        report
            .errors_by_kind
            .keys()
            .all(|k| k == "timeout" || k == "unfinished"),
        "{:?}",
        report.errors_by_kind
    );
    assert_eq!(
        report.connects, 2,
        "a timed-out stream does not cost its connection"
    );
    // Each timed-out call reached the backend as a cancellation (RST_STREAM), the last ones
    // too: the run's end writes them before it closes the connections.
    let timeouts = report.errors_by_kind["timeout"];
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = |s: BackendStats| s.connections_open == 0 && s.in_flight == 0;
    while !closed(backend.stats()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = backend.stats();
    assert!(closed(stats), "{stats:?}");
    assert_eq!(stats.cancelled_by_client, stats.calls_started, "{stats:?}");
    assert!(stats.cancelled_by_client >= timeouts, "{stats:?}");
}

#[test]
fn http2_server_streams_and_large_payloads() {
    let backend = h2_backend(|_| {});
    let report = h2_run(&backend, |c| LoadConfig {
        call: CallKind::ServerStream,
        method: "/ringway.test.Echo/ServerStream".into(),
        metadata: vec![("x-stream-count".into(), "5".into())],
        ..c
    });
    assert!(
        report.calls_ok > 0 && report.errors == 0,
        "{}",
        report.table()
    );
    let report = h2_run(&backend, |c| LoadConfig {
        payload_bytes: 1 << 20,
        streams: 2,
        ..c
    });
    assert!(
        report.calls_ok > 0 && report.errors == 0,
        "{}",
        report.table()
    );
}

#[test]
fn http2_open_loop_achieves_the_target_rate() {
    let backend = h2_backend(|_| {});
    let config = LoadConfig {
        rate: Some(400.0),
        duration: Some(Duration::from_secs(2)),
        window: Duration::from_millis(500),
        ..h2_config(backend.local_addr())
    };
    let report = load::start(config).unwrap().join();
    assert_eq!(report.errors, 0, "{}", report.table());
    // 800 calls are due in 2 s, spread over the 16 streams.
    assert!((790..=800).contains(&report.calls_ok), "{}", report.table());
    assert_eq!(report.connects, 2);
}

#[test]
fn http2_goaway_costs_no_call() {
    let backend = h2_backend(|c| c.latency_ms = 5);
    let config = LoadConfig {
        duration: Some(Duration::from_millis(1500)),
        ..h2_config(backend.local_addr())
    };
    let handle = load::start(config).unwrap();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(400));
        backend.goaway();
    }
    let report = handle.join();
    assert_eq!(report.errors, 0, "{}", report.table());
    assert!(
        report.connects > 2,
        "reconnected after GOAWAY: {}",
        report.table()
    );
    assert_eq!(backend.stats().connections_accepted, report.connects);
    assert_eq!(backend.stats().calls_finished, report.calls_ok);
}

#[test]
fn http2_dead_target_counts_connect_errors_and_ends() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let started = Instant::now();
    let report = load::start(LoadConfig {
        duration: Some(Duration::from_millis(300)),
        ..h2_config(addr)
    })
    .unwrap()
    .join();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(report.calls_ok, 0);
    assert_eq!(
        report.errors_by_kind.keys().collect::<Vec<_>>(),
        ["connect"]
    );
    assert_eq!(report.requests_per_s, 0.0, "no request was sent");
}

#[test]
fn http2_cli_flags_reach_the_report() {
    let backend = h2_backend(|_| {});
    let dir = std::env::temp_dir().join(format!("ringway-load-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args([
            "run",
            "--target",
            &format!("http://{}", backend.local_addr()),
        ])
        .args(["--http2", "--streams", "4", "--protocol", "grpc"])
        .args([
            "--connections",
            "2",
            "--threads",
            "1",
            "--duration",
            "300ms",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["config"]["http2"], true);
    assert_eq!(report["config"]["streams"], 4);
    assert_eq!(report["config"]["protocol"], "grpc");
    assert_eq!(report["errors"], 0, "{stdout}");
    assert!(report["calls_ok"].as_u64().unwrap() > 0);
    assert_eq!(report["connects"], 2);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args([
            "run",
            "--target",
            &format!("http://{}", backend.local_addr()),
        ])
        .args(["--protocol", "grpc"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs HTTP/2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A gRPC-Web server over HTTP/2 (h2c): what a proxy with an HTTP/2 downstream answers. Each
/// call gets one message and a trailer frame naming pod `pod-web` (base64 in text mode);
/// `x-misbehave: unavailable` makes it a trailers-only UNAVAILABLE.
struct WebResponder {
    addr: SocketAddr,
}

impl WebResponder {
    fn start() -> WebResponder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(web_connection(socket));
                }
            });
        });
        WebResponder { addr }
    }
}

async fn web_connection(socket: tokio::net::TcpStream) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        tokio::spawn(async move {
            let (parts, mut body) = request.into_parts();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let content_type = parts.headers["content-type"].clone();
            let text = content_type
                .as_bytes()
                .starts_with(b"application/grpc-web-text");
            let mut response = http::Response::new(());
            response.headers_mut().insert("content-type", content_type);
            response
                .headers_mut()
                .insert("x-backend", http::HeaderValue::from_static("pod-web"));
            if parts.headers.get("x-misbehave").is_some() {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("14"));
                let _ = respond.send_response(response, true);
                return;
            }
            let body = [
                frame(0, b"0123456789abcdef"),
                frame(0x80, b"grpc-status:0\r\n"),
            ]
            .concat();
            let body = if text {
                STANDARD.encode(&body).into_bytes()
            } else {
                body
            };
            if let Ok(mut stream) = respond.send_response(response, false) {
                let _ = stream.send_data(body.into(), true);
            }
        });
    }
}

#[test]
fn http2_grpc_web_binary_and_text() {
    let responder = WebResponder::start();
    for mode in [Mode::Binary, Mode::Text] {
        let config = LoadConfig {
            protocol: Protocol::GrpcWeb,
            mode,
            duration: Some(Duration::from_millis(300)),
            ..h2_config(responder.addr)
        };
        let report = load::start(config).unwrap().join();
        assert!(report.calls_ok > 0, "{mode:?}: {}", report.table());
        assert_eq!(report.errors, 0, "{mode:?}: {}", report.table());
        assert_eq!(report.per_pod["pod-web"], report.calls_ok);
        assert_eq!(report.connects, 2);
    }
    let config = LoadConfig {
        protocol: Protocol::GrpcWeb,
        duration: Some(Duration::from_millis(300)),
        metadata: vec![("x-misbehave".into(), "1".into())],
        ..h2_config(responder.addr)
    };
    only_h2("grpc_UNAVAILABLE", &load::start(config).unwrap().join());
}
