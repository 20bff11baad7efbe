//! `--protocol connect`: Connect unary calls against small Connect-speaking servers on
//! 127.0.0.1 (HTTP/1.1 on std threads, HTTP/2 with the h2 crate; both check every request as
//! the protocol defines it and refuse a wrong one), cleartext and over TLS, with each error
//! shape counted as its kind. The proxy does not speak Connect yet, hence these servers.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ringway_load::load::{
    self, CallKind, KeyExchange, LoadConfig, Mode, Protocol, Report, TlsTarget,
};
use support::{Pki, TlsRelay, SERVER_NAME};

fn connect_config(target: SocketAddr, http2: bool) -> LoadConfig {
    LoadConfig {
        target,
        host_header: target.to_string(),
        protocol: Protocol::Connect,
        http2,
        streams: if http2 { 4 } else { 1 },
        connections: 2,
        threads: 1,
        duration: Some(Duration::from_millis(300)),
        window: Duration::from_millis(100),
        ..LoadConfig::default()
    }
}

fn misbehaving(config: LoadConfig, how: &str) -> LoadConfig {
    LoadConfig {
        metadata: vec![("x-misbehave".into(), how.into())],
        ..config
    }
}

fn assert_all_ok(report: &Report, pod: &str) {
    assert_eq!(report.errors, 0, "{}", report.table());
    assert!(report.calls_ok > 4, "{}", report.table());
    assert_eq!(report.per_pod[pod], report.calls_ok, "{}", report.table());
    assert!(report.table().contains("Connect over HTTP/"));
}

fn only(kind: &str, report: &Report) {
    let errors: Vec<_> = report.errors_by_kind.iter().collect();
    assert_eq!(report.calls_ok, 0, "{kind}: {}", report.table());
    assert_eq!(errors.len(), 1, "{kind}: {errors:?}");
    assert_eq!(errors[0].0, kind);
}

#[test]
fn connect_unary_calls_over_http1_and_http2() {
    let servers = [
        (support::http1_server(), false, "pod-1"),
        (support::h2_server(), true, "pod-h2"),
    ];
    for (addr, http2, pod) in servers {
        let report = load::start(connect_config(addr, http2)).unwrap().join();
        assert_all_ok(&report, pod);
        assert_eq!(report.config.protocol, Protocol::Connect);
    }
}

#[test]
fn connect_errors_are_counted_by_code_or_status() {
    for (addr, http2) in [
        (support::http1_server(), false),
        (support::h2_server(), true),
    ] {
        for (how, kind) in [
            ("unavailable", "grpc_UNAVAILABLE"),
            ("not-json", "http_502"),
            ("wrong-type", "malformed"),
        ] {
            let config = misbehaving(connect_config(addr, http2), how);
            only(kind, &load::start(config).unwrap().join());
        }
        // A message other than the expected one fails the servers' check: they do check.
        let config = LoadConfig {
            payload_bytes: 15,
            ..connect_config(addr, http2)
        };
        only(
            "grpc_INVALID_ARGUMENT",
            &load::start(config).unwrap().join(),
        );
    }
}

#[test]
fn connect_over_tls_http1_and_http2() {
    let pki = Pki::standard();
    let relay = TlsRelay::start(
        &pki,
        &[b"h2", b"http/1.1"],
        Some(support::http1_server()),
        Some(support::h2_server()),
    );
    for (http2, pod) in [(false, "pod-1"), (true, "pod-h2")] {
        for connection_per_call in [false, true] {
            let config = LoadConfig {
                host_header: SERVER_NAME.into(),
                tls: Some(TlsTarget {
                    ca_certificates: vec![pki.ca.clone()],
                    server_name: SERVER_NAME.into(),
                    key_exchange: KeyExchange::Default,
                    resumption: false,
                }),
                connection_per_call,
                streams: 1,
                ..connect_config(relay.addr, http2)
            };
            let report = load::start(config).unwrap().join();
            assert_all_ok(&report, pod);
            assert_eq!(report.tls_handshakes, report.connects);
            if connection_per_call {
                assert_eq!(report.connects, report.calls_ok);
            } else {
                assert_eq!(report.connects, 2);
            }
        }
    }
}

#[test]
fn connect_settings_that_do_not_exist_are_refused() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (config, expected) in [
        (
            LoadConfig {
                mode: Mode::Text,
                ..connect_config(addr, false)
            },
            "no text mode",
        ),
        (
            LoadConfig {
                call: CallKind::ServerStream,
                ..connect_config(addr, true)
            },
            "unary calls only",
        ),
    ] {
        let error = load::start(config).err().expect("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn connect_cli_flag() {
    let addr = support::http1_server();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args(["run", "--target", &format!("http://{addr}")])
        .args([
            "--protocol",
            "connect",
            "--connections",
            "1",
            "--threads",
            "1",
        ])
        .args(["--duration", "200ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Connect over HTTP/1.1"), "{stdout}");
    assert!(!stdout.contains("errors by kind"), "{stdout}");
}
