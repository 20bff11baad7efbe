//! The server's CPU cost of TLS with the configuration ringway serves (src/tls/certs.rs:
//! aws-lc-rs, TLS 1.3 and 1.2, tickets on): a full TLS 1.3 handshake with an ECDSA P-256
//! certificate (X25519, and the X25519MLKEM768 hybrid browsers offer), a resumed one, a full
//! TLS 1.2 one, and sealing and opening records. Client and server run in memory; only the
//! server's calls are timed (`iter_custom`), so the client's share is not counted.
//!
//! `cargo bench --bench tls`. For instruction counts that do not depend on the machine's load,
//! run one case under callgrind, collecting only inside the server's calls:
//!
//! ```sh
//! cargo bench --bench tls --no-run
//! RINGWAY_TLS_BENCH_CASE=full-x25519 RINGWAY_TLS_BENCH_ITERATIONS=200 \
//!   valgrind --tool=callgrind --toggle-collect='tls::server_*' target/release/deps/tls-<hash>
//! ```
//!
//! and divide the total by the iterations (subtract a run with 0 iterations for the set-up).

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use ringway::tls::certs::{self, SessionState, SniCounters};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

struct Setup {
    server: Arc<ServerConfig>,
    roots: RootCertStore,
}

fn setup() -> Setup {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .unwrap();
    let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
    let sessions = SessionState::new().unwrap();
    let server = certs::server_config(
        certified,
        &sessions,
        Arc::new(SniCounters::default()),
        false,
    )
    .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    Setup {
        server: Arc::new(server),
        roots,
    }
}

fn client(
    setup: &Setup,
    versions: &[&'static rustls::SupportedProtocolVersion],
    x25519_only: bool,
    resume: bool,
) -> Arc<ClientConfig> {
    let mut provider: CryptoProvider = rustls::crypto::aws_lc_rs::default_provider();
    if x25519_only {
        provider
            .kx_groups
            .retain(|g| g.name() == rustls::NamedGroup::X25519);
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(setup.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

#[inline(never)]
fn server_new(config: &Arc<ServerConfig>) -> ServerConnection {
    ServerConnection::new(config.clone()).unwrap()
}

#[inline(never)]
fn server_receive(server: &mut ServerConnection, mut input: &[u8]) {
    while !input.is_empty() {
        server.read_tls(&mut input).unwrap();
        server.process_new_packets().unwrap();
    }
}

#[inline(never)]
fn server_send(server: &mut ServerConnection, out: &mut Vec<u8>) {
    while server.wants_write() {
        server.write_tls(out).unwrap();
    }
}

#[inline(never)]
fn server_seal(server: &mut ServerConnection, plaintext: &[u8], out: &mut Vec<u8>) {
    server.writer().write_all(plaintext).unwrap();
    server_send(server, out);
}

#[inline(never)]
fn server_open(server: &mut ServerConnection, ciphertext: &[u8], sink: &mut [u8]) {
    server_receive(server, ciphertext);
    while let Ok(n) = server.reader().read(sink) {
        if n == 0 {
            break;
        }
    }
}

fn client_send(client: &mut ClientConnection, out: &mut Vec<u8>) {
    while client.wants_write() {
        client.write_tls(out).unwrap();
    }
}

fn client_receive(client: &mut ClientConnection, mut input: &[u8]) {
    while !input.is_empty() {
        client.read_tls(&mut input).unwrap();
        client.process_new_packets().unwrap();
    }
}

/// One handshake, tickets included; returns the server's time and the pair.
fn handshake(
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<ClientConfig>,
) -> (Duration, ServerConnection, ClientConnection) {
    let mut client = ClientConnection::new(
        client_config.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let start = Instant::now();
    let mut server = server_new(server_config);
    let mut spent = start.elapsed();
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        client_send(&mut client, &mut buf);
        let start = Instant::now();
        server_receive(&mut server, &buf);
        buf.clear();
        server_send(&mut server, &mut buf);
        spent += start.elapsed();
        client_receive(&mut client, &buf);
        if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
            break;
        }
    }
    (spent, server, client)
}

struct Case {
    name: &'static str,
    client: Arc<ClientConfig>,
    expect_resumed: bool,
}

fn cases(setup: &Setup) -> Vec<Case> {
    let tls13 = [&rustls::version::TLS13];
    let tls12 = [&rustls::version::TLS12];
    vec![
        Case {
            name: "full-x25519",
            client: client(setup, &tls13, true, false),
            expect_resumed: false,
        },
        Case {
            name: "full-x25519mlkem768",
            client: client(setup, &tls13, false, false),
            expect_resumed: false,
        },
        Case {
            name: "resumed-x25519",
            client: client(setup, &tls13, true, true),
            expect_resumed: true,
        },
        Case {
            name: "full-tls12-x25519",
            client: client(setup, &tls12, true, false),
            expect_resumed: false,
        },
    ]
}

fn handshakes(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("tls_handshake_server");
    for case in cases(&setup) {
        // A first handshake gives the resuming client its ticket.
        let (_, server, _) = handshake(&setup.server, &case.client);
        let _ = server;
        let (_, server, _) = handshake(&setup.server, &case.client);
        assert_eq!(
            server.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            case.expect_resumed,
            "{}",
            case.name
        );
        group.bench_function(case.name, |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| black_box(handshake(&setup.server, &case.client)).0)
                    .sum()
            })
        });
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let setup = setup();
    let client_config = client(&setup, &[&rustls::version::TLS13], true, false);
    let mut group = c.benchmark_group("tls_record_server");
    for bytes in [100usize, 16 * 1024] {
        let plaintext = vec![7u8; bytes];
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("seal/{bytes}"), |b| {
            let (_, mut server, mut client) = handshake(&setup.server, &client_config);
            let mut out = Vec::with_capacity(bytes + 64);
            let mut sink = vec![0u8; 32 * 1024];
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    out.clear();
                    let start = Instant::now();
                    server_seal(&mut server, &plaintext, &mut out);
                    spent += start.elapsed();
                    // The client takes the record so the server's buffers never fill.
                    client_receive(&mut client, &out);
                    while let Ok(n) = client.reader().read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                    }
                }
                spent
            })
        });
        group.bench_function(format!("open/{bytes}"), |b| {
            let (_, mut server, mut client) = handshake(&setup.server, &client_config);
            let mut record = Vec::with_capacity(bytes + 64);
            let mut sink = vec![0u8; 32 * 1024];
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    record.clear();
                    client.writer().write_all(&plaintext).unwrap();
                    client_send(&mut client, &mut record);
                    let start = Instant::now();
                    server_open(&mut server, &record, &mut sink);
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

/// Runs one case a fixed number of times, for callgrind (see the module doc).
fn run_fixed(case_name: &str, iterations: usize) {
    let setup = setup();
    if let Some(bytes) = case_name.strip_prefix("seal/") {
        let bytes: usize = bytes.parse().expect("seal/<bytes>");
        let client_config = client(&setup, &[&rustls::version::TLS13], true, false);
        let (_, mut server, mut client) = handshake(&setup.server, &client_config);
        let plaintext = vec![7u8; bytes];
        let mut out = Vec::new();
        let mut sink = vec![0u8; 32 * 1024];
        for _ in 0..iterations {
            out.clear();
            server_seal(&mut server, &plaintext, &mut out);
            client_receive(&mut client, &out);
            while let Ok(n) = client.reader().read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
        }
        return;
    }
    let case = cases(&setup)
        .into_iter()
        .find(|c| c.name == case_name)
        .unwrap_or_else(|| panic!("unknown case {case_name}"));
    // The ticket for the resuming client, outside the counted iterations' share.
    let _ = handshake(&setup.server, &case.client);
    for _ in 0..iterations {
        black_box(handshake(&setup.server, &case.client));
    }
}

criterion_group!(benches, handshakes, records);

fn main() {
    if let Ok(case) = std::env::var("RINGWAY_TLS_BENCH_CASE") {
        let iterations = std::env::var("RINGWAY_TLS_BENCH_ITERATIONS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100);
        run_fixed(&case, iterations);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
