//! The admin listener and the access log, on the real binary: readiness switches, statistics in
//! both formats, the endpoint table, the effective flags, POST-only controls, and one access log
//! line per request.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn admin(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut reader = Reader::new(TcpStream::connect(addr).expect("admin listens"));
    reader.write(
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
    );
    reader.read_response()
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        let _proxy = Proxy(
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
        let prometheus = admin(admin_addr, "GET", "/stats/prometheus");
        assert_eq!(prometheus.status, 200);
        let text = String::from_utf8(prometheus.body).unwrap();
        assert!(
            text.contains("ringway_calls_total{grpc_status=\"OK\"} 3\n"),
            "{text}"
        );
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
