//! HTTPS targets: the load generator's TLS client against a real rustls server on 127.0.0.1
//! (a TLS relay in front of cleartext servers: a tiny HTTP/1.1 gRPC-Web server, and the
//! project's real h2 gRPC backend), over HTTP/1.1 and HTTP/2 (ALPN), with a connection per
//! call, resumption, and every way a handshake can fail counted as `tls`.

mod support;

use std::time::Duration;

use ringway_load::backend::{Backend, BackendConfig};
use ringway_load::load::{self, IoDriver, KeyExchange, LoadConfig, Protocol, Report, TlsTarget};
use support::{Pki, TlsRelay, SERVER_NAME};

fn drivers() -> Vec<IoDriver> {
    let mut drivers = vec![IoDriver::Epoll];
    if monoio::utils::detect_uring() {
        drivers.push(IoDriver::Uring);
    }
    drivers
}

fn tls_target(pki: &Pki) -> TlsTarget {
    TlsTarget {
        ca_certificates: vec![pki.ca.clone()],
        server_name: SERVER_NAME.into(),
        key_exchange: KeyExchange::X25519,
        resumption: false,
    }
}

fn https_config(relay: &TlsRelay, pki: &Pki) -> LoadConfig {
    LoadConfig {
        target: relay.addr,
        host_header: format!("{SERVER_NAME}:{}", relay.addr.port()),
        connections: 4,
        threads: 2,
        duration: Some(Duration::from_millis(400)),
        window: Duration::from_millis(100),
        tls: Some(tls_target(pki)),
        ..LoadConfig::default()
    }
}

fn h2_backend() -> ringway_load::backend::BackendHandle {
    Backend::start(BackendConfig::new("127.0.0.1:0".parse().unwrap(), "pod-h2"))
        .expect("backend starts")
}

fn only(kind: &str, report: &Report) {
    let errors: Vec<_> = report.errors_by_kind.iter().collect();
    assert_eq!(report.calls_ok, 0, "{kind}: {}", report.table());
    assert_eq!(errors.len(), 1, "{kind}: {errors:?}");
    assert_eq!(errors[0].0, kind);
    assert!(*errors[0].1 > 0);
}

#[test]
fn https_http1_keep_alive_makes_one_handshake_per_connection() {
    let pki = Pki::standard();
    let relay = TlsRelay::start(
        &pki,
        &[b"h2", b"http/1.1"],
        Some(support::http1_server()),
        None,
    );
    for io_driver in drivers() {
        let before = relay.seen().handshakes;
        let config = LoadConfig {
            io_driver,
            ..https_config(&relay, &pki)
        };
        let report = load::start(config).unwrap().join();
        assert_eq!(report.errors, 0, "{}", report.table());
        assert!(report.calls_ok > 20, "{}", report.table());
        assert_eq!(report.per_pod["pod-1"], report.calls_ok);
        assert_eq!(report.connects, 4);
        assert_eq!((report.tls_handshakes, report.tls_resumed), (4, 0));
        let negotiated: Vec<_> = report.tls_negotiated.iter().collect();
        assert_eq!(negotiated.len(), 1, "{negotiated:?}");
        assert!(negotiated[0].0.starts_with("TLSv1_3 X25519 TLS13_"));
        assert!(
            negotiated[0].0.ends_with(" http/1.1"),
            "{}",
            negotiated[0].0
        );
        let seen = relay.seen();
        assert_eq!(seen.handshakes - before, 4);
        assert!(seen.alpn.iter().all(|a| a == "http/1.1"), "{:?}", seen.alpn);
        assert!(seen.sni.iter().all(|s| s == SERVER_NAME), "{:?}", seen.sni);
        assert_eq!(report.config.tls_server_name.as_deref(), Some(SERVER_NAME));
        assert!(report
            .table()
            .contains("gRPC-Web over HTTP/1.1 over TLS to ringway.test"));
    }
}

#[test]
fn https_http2_native_grpc_negotiates_h2_and_shares_connections() {
    let pki = Pki::standard();
    let backend = h2_backend();
    let relay = TlsRelay::start(
        &pki,
        &[b"h2", b"http/1.1"],
        None,
        Some(backend.local_addr()),
    );
    for io_driver in drivers() {
        let config = LoadConfig {
            io_driver,
            http2: true,
            streams: 8,
            connections: 2,
            protocol: Protocol::Grpc,
            ..https_config(&relay, &pki)
        };
        let report = load::start(config).unwrap().join();
        assert_eq!(report.errors, 0, "{}", report.table());
        assert!(report.calls_ok > 16, "{}", report.table());
        assert_eq!(report.per_pod["pod-h2"], report.calls_ok);
        assert_eq!((report.connects, report.tls_handshakes), (2, 2));
        assert!(report.tls_negotiated.keys().all(|k| k.ends_with(" h2")));
        // The request's scheme and authority are those of an HTTPS origin.
        let seen = backend.last_request_headers().unwrap();
        assert_eq!(
            seen.get(":authority"),
            Some(format!("{SERVER_NAME}:{}", relay.addr.port()).as_str())
        );
        assert_eq!(seen.get(":scheme"), Some("https"));
    }
}

#[test]
fn connection_per_call_makes_a_full_handshake_for_every_call() {
    let pki = Pki::standard();
    let backend = h2_backend();
    let relay = TlsRelay::start(
        &pki,
        &[b"h2", b"http/1.1"],
        Some(support::http1_server()),
        Some(backend.local_addr()),
    );
    for http2 in [false, true] {
        let before = relay.seen().handshakes;
        let config = LoadConfig {
            connection_per_call: true,
            http2,
            protocol: if http2 {
                Protocol::Grpc
            } else {
                Protocol::GrpcWeb
            },
            ..https_config(&relay, &pki)
        };
        let report = load::start(config).unwrap().join();
        assert_eq!(report.errors, 0, "http2 {http2}: {}", report.table());
        assert!(report.calls_ok > 4, "{}", report.table());
        // Every call had its own connection and handshake; none was resumed.
        assert_eq!(report.connects, report.calls_ok, "{}", report.table());
        assert_eq!(report.tls_handshakes, report.calls_ok);
        assert_eq!(report.tls_resumed, 0);
        assert_eq!(relay.seen().handshakes - before, report.calls_ok);
        assert!(report.table().contains("a new connection per call"));
    }
    // With resumption, later connections resume the sessions of earlier ones.
    let config = LoadConfig {
        connection_per_call: true,
        tls: Some(TlsTarget {
            resumption: true,
            ..tls_target(&pki)
        }),
        ..https_config(&relay, &pki)
    };
    let report = load::start(config).unwrap().join();
    assert_eq!(report.errors, 0, "{}", report.table());
    assert!(report.tls_resumed > 0, "{}", report.table());
    assert!(report.tls_resumed < report.tls_handshakes);
}

#[test]
fn cleartext_connection_per_call_opens_one_connection_per_call() {
    let backend = h2_backend();
    let addr = backend.local_addr();
    let config = LoadConfig {
        target: addr,
        host_header: addr.to_string(),
        connections: 2,
        threads: 1,
        http2: true,
        protocol: Protocol::Grpc,
        connection_per_call: true,
        duration: Some(Duration::from_millis(300)),
        ..LoadConfig::default()
    };
    let report = load::start(config).unwrap().join();
    assert_eq!(report.errors, 0, "{}", report.table());
    assert!(report.calls_ok > 2);
    assert_eq!(report.connects, report.calls_ok);
    assert_eq!(report.tls_handshakes, 0);
    assert_eq!(backend.stats().connections_accepted, report.calls_ok);
}

#[test]
fn handshake_failures_count_as_tls_and_send_nothing() {
    let pki = Pki::standard();
    let http1 = support::http1_server();
    let relay = TlsRelay::start(&pki, &[b"http/1.1"], Some(http1), None);
    let short = |config: LoadConfig| LoadConfig {
        duration: Some(Duration::from_millis(300)),
        ..config
    };
    // Another CA: the certificate is not trusted.
    let stranger = Pki::standard();
    let config = short(LoadConfig {
        tls: Some(tls_target(&stranger)),
        ..https_config(&relay, &pki)
    });
    let report = load::start(config).unwrap().join();
    only("tls", &report);
    assert_eq!(report.requests_per_s, 0.0, "no request was sent");
    assert_eq!(report.tls_handshakes, 0);
    // A name the certificate does not carry.
    let config = short(LoadConfig {
        tls: Some(TlsTarget {
            server_name: "other.test".into(),
            ..tls_target(&pki)
        }),
        ..https_config(&relay, &pki)
    });
    only("tls", &load::start(config).unwrap().join());
    // HTTP/2 to a server that only speaks http/1.1: ALPN agrees on nothing.
    let config = short(LoadConfig {
        http2: true,
        ..https_config(&relay, &pki)
    });
    only("tls", &load::start(config).unwrap().join());
    // TLS to a cleartext HTTP server: the reply is not a handshake.
    let config = short(LoadConfig {
        target: plain_http_server(),
        ..https_config(&relay, &pki)
    });
    only("tls", &load::start(config).unwrap().join());
    // A key exchange the server does not support (rustls's server offers X25519MLKEM768,
    // X25519, P-256 and P-384, so every choice here works): P-256 alone succeeds.
    let config = short(LoadConfig {
        tls: Some(TlsTarget {
            key_exchange: KeyExchange::P256,
            ..tls_target(&pki)
        }),
        ..https_config(&relay, &pki)
    });
    let report = load::start(config).unwrap().join();
    assert_eq!(report.errors, 0, "{}", report.table());
    assert!(report
        .tls_negotiated
        .keys()
        .all(|k| k.starts_with("TLSv1_3 secp256r1 ")));
}

/// A cleartext server that answers anything with a 400 and closes, as an HTTP server does
/// when a TLS ClientHello arrives.
fn plain_http_server() -> std::net::SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    addr
}

#[test]
fn invalid_tls_settings_are_refused() {
    let pki = Pki::standard();
    let base = LoadConfig {
        tls: Some(tls_target(&pki)),
        ..LoadConfig::default()
    };
    let cases = [
        (
            LoadConfig {
                tls: Some(TlsTarget {
                    ca_certificates: vec![],
                    ..tls_target(&pki)
                }),
                ..base.clone()
            },
            "no certificate",
        ),
        (
            LoadConfig {
                tls: Some(TlsTarget {
                    server_name: "not a name".into(),
                    ..tls_target(&pki)
                }),
                ..base.clone()
            },
            "not a DNS name",
        ),
        (
            LoadConfig {
                http2: true,
                streams: 4,
                connection_per_call: true,
                ..base.clone()
            },
            "one stream",
        ),
    ];
    for (config, expected) in cases {
        let error = load::start(config).err().expect("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn https_cli_flags_reach_the_report() {
    let pki = Pki::standard();
    let backend = h2_backend();
    let relay = TlsRelay::start(
        &pki,
        &[b"h2", b"http/1.1"],
        None,
        Some(backend.local_addr()),
    );
    let ca = pki.write_ca("cli");
    let json = ca.with_extension("json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args([
            "run",
            "--target",
            &format!("https://127.0.0.1:{}", relay.addr.port()),
        ])
        .arg("--ca-file")
        .arg(&ca)
        .args(["--server-name", SERVER_NAME, "--tls-key-exchange", "x25519"])
        .args(["--http2", "--streams", "2", "--protocol", "grpc"])
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
    assert_eq!(report["config"]["tls_server_name"], SERVER_NAME);
    assert_eq!(report["config"]["tls_key_exchange"], "x25519");
    assert_eq!(
        report["config"]["host_header"],
        format!("{SERVER_NAME}:{}", relay.addr.port())
    );
    assert_eq!(report["errors"], 0, "{stdout}");
    assert_eq!(report["tls_handshakes"], 2);
    assert!(stdout.contains("handshakes"), "{stdout}");
    // The IP in the certificate serves as the name when --server-name is not given.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args([
            "run",
            "--target",
            &format!("https://127.0.0.1:{}", relay.addr.port()),
        ])
        .arg("--ca-file")
        .arg(&ca)
        .args(["--http2", "--protocol", "grpc", "--connections", "1"])
        .args([
            "--threads",
            "1",
            "--duration",
            "200ms",
            "--connection-per-call",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("TLS to 127.0.0.1"), "{stdout}");
    assert!(!stdout.contains("errors by kind"), "{stdout}");
    for (args, expected) in [
        (vec!["--target", "https://127.0.0.1:1"], "need --ca-file"),
        (
            vec!["--target", "http://127.0.0.1:1", "--server-name", "x"],
            "for https:// targets",
        ),
    ] {
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-load"))
            .arg("run")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    let _ = std::fs::remove_file(&ca);
    let _ = std::fs::remove_file(&json);
}

/// A cleartext server that accepts connections and never answers.
fn silent_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}

#[test]
fn a_call_timing_out_over_tls_drops_its_connection_and_the_next_call_reconnects() {
    let pki = Pki::standard();
    let relay = TlsRelay::start(&pki, &[b"h2", b"http/1.1"], Some(silent_server()), None);
    for io_driver in drivers() {
        let config = LoadConfig {
            io_driver,
            connections: 2,
            call_timeout: Duration::from_millis(100),
            duration: Some(Duration::from_millis(450)),
            ..https_config(&relay, &pki)
        };
        let report = load::start(config).unwrap().join();
        only("timeout", &report);
        // Each timed-out call cancelled a read in the middle of the TLS stream; that connection
        // is not reused, so every later call made a new one (and a new handshake).
        assert!(report.connects > 2, "{}", report.table());
        assert_eq!(report.tls_handshakes, report.connects);
    }
}
