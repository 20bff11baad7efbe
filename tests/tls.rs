//! The TLS layer (src/tls/) with real sockets and real peers: rustls clients, an h2 client over
//! tokio-rustls, and `openssl s_client` for what rustls refuses to be (a TLS 1.0-only client, a
//! renegotiating one). A small monoio test listener calls `tls::accept` the way the listener
//! does, under both io drivers, and answers HTTP/1.1 or HTTP/2 by the ALPN result. Every
//! hostile case also runs against the real server (`--tls-listen` in front of the HTTP/1.1 and
//! HTTP/2 servers and a real backend), which must count it and go on serving HTTPS and
//! cleartext calls meanwhile.
//!
//! Certificates (a test CA, ECDSA P-256 and RSA leaves for localhost and 127.0.0.1) are made at
//! run time in a temporary directory; no key is committed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{pem_of, KeyKind, Leaf, TestPki};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use ringway::tls::{self, Acceptor, Alpn, ConfigHandle, Reloader, TlsStats, TlsStream};
use ringway_load::backend::BackendHandle;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

const DRIVERS: [&str; 2] = ["uring", "epoll"];

/// How long a client waits for the server before the test fails: a hang, not a timing check.
const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// The handshake timeout of the test listener: short, so the slow-client tests end quickly.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How long the test listener lets a response write stall before closing the connection,
/// standing in for the connection layer's idle timeout.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_millis(1_000);

// ---------------------------------------------------------------------------------------------
// Certificates

/// Rewrites a PKCS#8 key file in its traditional form (SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA
/// PRIVATE KEY`), with openssl as an operator would.
fn to_traditional(key: &Path, out: &Path) {
    let status = Command::new("openssl")
        .args(["pkey", "-traditional", "-in"])
        .arg(key)
        .arg("-out")
        .arg(out)
        .status()
        .expect("openssl (Debian package openssl) is needed for the key-format tests");
    assert!(status.success());
}

// ---------------------------------------------------------------------------------------------
// The test listener

struct TestServer {
    addr: SocketAddr,
    stats: Arc<TlsStats>,
    /// Responses whose write stalled past WRITE_STALL_TIMEOUT (the client stopped reading).
    write_stalls: Arc<AtomicU64>,
    /// Connections whose stream was served by the kernel (kTLS), and by rustls.
    kernel_streams: Arc<AtomicU64>,
}

fn start_server(driver: &str, acceptor: Acceptor) -> TestServer {
    let stats = Arc::new(TlsStats::default());
    let write_stalls = Arc::new(AtomicU64::new(0));
    let kernel_streams = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let server = (stats.clone(), write_stalls.clone(), kernel_streams.clone());
    let driver = driver.to_string();
    std::thread::spawn(move || {
        let run = async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (stats, stalls, kernel) = server.clone();
                monoio::spawn(async move {
                    let Ok(accepted) = tls::accept(stream, &acceptor, &stats).await else {
                        return;
                    };
                    if accepted.stream.is_kernel_tls() {
                        kernel.fetch_add(1, Ordering::Relaxed);
                    }
                    let facts = format!("alpn={:?} resumed={}", accepted.alpn, accepted.resumed);
                    match accepted.alpn {
                        Alpn::H2 => serve_h2(accepted.stream).await,
                        Alpn::Http1 => serve_http1(accepted.stream, &facts, &stalls).await,
                    }
                });
            }
        };
        if driver == "uring" {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()
                .expect("io_uring runtime")
                .block_on(run);
        } else {
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap()
                .block_on(run);
        }
    });
    TestServer {
        addr: rx.recv().unwrap(),
        stats,
        write_stalls,
        kernel_streams,
    }
}

/// `GET /bytes/N` → N bytes of `x`, the handshake facts in `x-tls`; keep-alive until EOF.
async fn serve_http1(mut stream: TlsStream, facts: &str, stalls: &AtomicU64) {
    let mut pending = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                break end + 4;
            }
            let (result, buf) = stream.read(Vec::with_capacity(4096)).await;
            match result {
                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).to_string();
        pending.drain(..head_end);
        let bytes: usize = head
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/bytes/"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let response_head =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nx-tls: {facts}\r\n\r\n");
        // Head and body in one vectored write, as the HTTP/1.1 code writes them (a single
        // `writev`: monoio 0.2.4's `write_vectored_all` mishandles partial writes, see
        // src/connection.rs), the rest in plain writes.
        let first = bytes.min(64 * 1024);
        let head_bytes = response_head.len();
        let parts = monoio::buf::VecBuf::from(vec![response_head.into_bytes(), vec![b'x'; first]]);
        let write = async {
            let (result, _) = stream.writev(parts).await;
            let written = result?;
            // What the vectored write did not take: the rest of the head, then of the body.
            if written < head_bytes {
                let rest =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nx-tls: {facts}\r\n\r\n")
                        .into_bytes()
                        .split_off(written);
                let (result, _) = stream.write_all(rest).await;
                result?;
            }
            let mut sent = written.saturating_sub(head_bytes);
            while sent < bytes {
                let chunk = (bytes - sent).min(64 * 1024);
                let (result, _) = stream.write_all(vec![b'x'; chunk]).await;
                result?;
                sent += chunk;
            }
            stream.flush().await
        };
        match monoio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                stalls.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Every request: its body is read whole, then answered with as many bytes as it had, while
/// other streams of the connection read and write at the same time.
async fn serve_h2(stream: TlsStream) {
    let io = monoio_compat::StreamWrapper::new(stream);
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        monoio::spawn(async move {
            let mut body = request.into_body();
            let mut received = 0usize;
            while let Some(Ok(data)) = body.data().await {
                received += data.len();
                let _ = body.flow_control().release_capacity(data.len());
            }
            let response = http::Response::builder().status(200).body(()).unwrap();
            let Ok(mut send) = respond.send_response(response, false) else {
                return;
            };
            let mut sent = 0;
            while sent < received {
                let chunk = (received - sent).min(16 * 1024);
                send.reserve_capacity(chunk);
                let granted = loop {
                    match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(0)) => continue,
                        Some(Ok(n)) => break n,
                        _ => return,
                    }
                };
                if send
                    .send_data(bytes::Bytes::from(vec![b'y'; granted]), false)
                    .is_err()
                {
                    return;
                }
                sent += granted;
            }
            let _ = send.send_data(bytes::Bytes::new(), true);
        });
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn acceptor_for(cert: &Path, key: &Path, ktls: bool) -> (Reloader, Acceptor) {
    let settings = tls::TlsSettings {
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ktls,
        reload_interval: Duration::from_millis(50),
    };
    let reloader = settings.start_reloader().expect("test certificate loads");
    let acceptor = settings.acceptor(reloader.handle());
    (reloader, acceptor)
}

// ---------------------------------------------------------------------------------------------
// Clients

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(
    roots: RootCertStore,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn tls13_and_12() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

type Client = rustls::StreamOwned<ClientConnection, TcpStream>;

fn tcp(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    sock.set_write_timeout(Some(CLIENT_WAIT)).unwrap();
    sock
}

fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<Client, rustls::Error> {
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(config.clone(), server_name).unwrap();
    let mut client = rustls::StreamOwned::new(conn, tcp(addr));
    while client.conn.is_handshaking() {
        if let Err(e) = client.conn.complete_io(&mut client.sock) {
            return Err(
                match e
                    .into_inner()
                    .map(|inner| inner.downcast::<rustls::Error>())
                {
                    Some(Ok(tls)) => *tls,
                    _ => rustls::Error::General("io error in handshake".into()),
                },
            );
        }
    }
    Ok(client)
}

/// One HTTP/1.1 request for `bytes` bytes; returns the `x-tls` facts and the body length.
fn get(client: &mut Client, bytes: usize) -> (String, usize) {
    client
        .write_all(format!("GET /bytes/{bytes} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    client.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .to_string()
    };
    let length: usize = header("content-length").parse().unwrap();
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).unwrap();
    assert!(body.iter().all(|b| *b == b'x'));
    (header("x-tls"), length)
}

/// Waits (bounded) until `done` holds; fails the test if it never does.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < CLIENT_WAIT, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads until the server closes (EOF or reset); returns what arrived. Fails the test if the
/// server keeps the connection open.
fn read_until_closed(sock: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the server kept the connection open for {CLIENT_WAIT:?}")
            }
            Err(_) => return got,
        }
    }
}

/// A TLS alert record: content type 21.
fn is_alert(bytes: &[u8]) -> bool {
    bytes.first() == Some(&21)
}

/// A ClientHello as rustls sends it, to replay byte by byte or corrupt.
fn client_hello(roots: RootCertStore) -> Vec<u8> {
    let config = client_config(roots, &[b"h2"], &tls13_and_12());
    let mut conn =
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

// ---------------------------------------------------------------------------------------------
// Handshakes that succeed

#[test]
fn alpn_picks_h2_http1_or_http1_for_no_alpn_over_tls13_and_tls12() {
    let pki = TestPki::new("alpn");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for driver in DRIVERS {
        let server = start_server(driver, acceptor.clone());
        let cases: [(&[&[u8]], &str); 3] = [
            (&[b"http/1.1"], "alpn=Http1"),
            (&[], "alpn=Http1"),
            (&[b"spdy/3", b"http/1.1"], "alpn=Http1"),
        ];
        for (versions, version) in [
            (
                vec![&rustls::version::TLS13],
                rustls::ProtocolVersion::TLSv1_3,
            ),
            (
                vec![&rustls::version::TLS12],
                rustls::ProtocolVersion::TLSv1_2,
            ),
        ] {
            for (alpn, expected) in cases {
                let config = client_config(pki.roots(), alpn, &versions);
                let mut client = connect(server.addr, &config, "localhost").unwrap();
                assert_eq!(client.conn.protocol_version(), Some(version));
                let (facts, length) = get(&mut client, 100_000);
                assert!(facts.starts_with(expected), "{driver}: {facts}");
                assert_eq!(length, 100_000);
                // Keep-alive: a second request on the same connection.
                assert_eq!(get(&mut client, 10).1, 10);
            }
        }
        assert_eq!(server.stats.alpn_http1.get(), 6, "{driver}");
        assert_eq!(server.stats.handshakes_tls12.get(), 3, "{driver}");
    }
}

#[test]
fn an_rsa_certificate_is_served_too() {
    let pki = TestPki::new("rsa");
    let leaf = pki.leaf("leaf", KeyKind::Rsa2048);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for driver in DRIVERS {
        let server = start_server(driver, acceptor.clone());
        for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
            let config = client_config(pki.roots(), &[b"http/1.1"], &versions);
            let mut client = connect(server.addr, &config, "127.0.0.1").unwrap();
            assert_eq!(
                client.conn.peer_certificates().unwrap()[0].as_ref(),
                leaf.der.as_ref()
            );
            assert_eq!(get(&mut client, 5).1, 5);
        }
    }
}

#[test]
fn sessions_resume_with_tickets_and_count_as_resumed() {
    let pki = TestPki::new("resume");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for driver in DRIVERS {
        let server = start_server(driver, acceptor.clone());
        for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
            // One client config: its session store carries the ticket to the next connection.
            let config = client_config(pki.roots(), &[b"http/1.1"], &versions);
            let mut first = connect(server.addr, &config, "localhost").unwrap();
            let (facts, _) = get(&mut first, 1);
            assert!(facts.ends_with("resumed=false"), "{facts}");
            let mut second = connect(server.addr, &config, "localhost").unwrap();
            let (facts, _) = get(&mut second, 1);
            assert!(
                facts.ends_with("resumed=true"),
                "{driver} {versions:?}: {facts}"
            );
        }
        assert_eq!(server.stats.handshakes_full.get(), 2, "{driver}");
        assert_eq!(server.stats.handshakes_resumed.get(), 2, "{driver}");
    }
}

/// h2 over `monoio_compat::StreamWrapper<TlsStream>`: several streams upload and download at
/// once, so a read and a write of the TLS stream are in flight together.
#[test]
fn h2_runs_over_the_tls_stream_with_reads_and_writes_in_flight_together() {
    let pki = TestPki::new("h2");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for driver in DRIVERS {
        let server = start_server(driver, acceptor.clone());
        let config = client_config(pki.roots(), &[b"h2", b"http/1.1"], &tls13_and_12());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let received = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (client, connection) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(connection);
            let mut calls = Vec::new();
            for _ in 0..4 {
                let mut client = client.clone();
                calls.push(tokio::spawn(async move {
                    client = client.ready().await.unwrap();
                    let request = http::Request::post("https://localhost/echo")
                        .body(())
                        .unwrap();
                    let (response, mut send) = client.send_request(request, false).unwrap();
                    let upload = async {
                        for _ in 0..16 {
                            send.reserve_capacity(16 * 1024);
                            let mut left = 16 * 1024;
                            while left > 0 {
                                let n = std::future::poll_fn(|cx| send.poll_capacity(cx))
                                    .await
                                    .unwrap()
                                    .unwrap();
                                let n = n.min(left);
                                send.send_data(bytes::Bytes::from(vec![b'u'; n]), false)
                                    .unwrap();
                                left -= n;
                            }
                        }
                        send.send_data(bytes::Bytes::new(), true).unwrap();
                    };
                    let download = async {
                        let response = response.await.unwrap();
                        assert_eq!(response.status(), 200);
                        let mut body = response.into_body();
                        let mut n = 0;
                        while let Some(data) = body.data().await {
                            let data = data.unwrap();
                            n += data.len();
                            let _ = body.flow_control().release_capacity(data.len());
                        }
                        n
                    };
                    let ((), n) = tokio::join!(upload, download);
                    n
                }));
            }
            let mut total = 0;
            for call in calls {
                total += tokio::time::timeout(CLIENT_WAIT, call)
                    .await
                    .unwrap()
                    .unwrap();
            }
            total
        });
        assert_eq!(received, 4 * 16 * 16 * 1024, "{driver}");
        assert_eq!(server.stats.alpn_h2.get(), 1, "{driver}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile clients, against the test listener and the real server

/// Where each hostile case runs, under each io driver: the test listener above (the TLS layer
/// alone), and the real server (`--tls-listen` in front of the HTTP/1.1 and HTTP/2 servers and
/// a real backend, one worker). Both count the case in their `TlsStats` and must go on serving
/// other clients while and after it runs.
trait Target {
    fn describe(&self) -> String;
    fn addr(&self) -> SocketAddr;
    fn stats(&self) -> &TlsStats;
    /// Handshakes that named (by SNI) a host the certificate does not cover.
    fn sni_unmatched(&self) -> u64;
    /// Other clients are served. Test listener: a new HTTPS connection gets its bytes. Real
    /// server: a gRPC-Web call over HTTPS with HTTP/1.1, a native gRPC call over HTTPS with
    /// HTTP/2 and a gRPC-Web call on the cleartext port each get their exact echo.
    fn assert_serves_others(&self);
    /// Every connection the case opened is closed and accounted for (the real server's count
    /// of active connections, which its drain waits for, is back to zero; the test listener
    /// keeps no count).
    fn assert_connections_closed(&self);
}

struct ListenerTarget {
    driver: &'static str,
    server: TestServer,
    handle: ConfigHandle,
    config: Arc<ClientConfig>,
}

impl Target for ListenerTarget {
    fn describe(&self) -> String {
        format!("test listener, {}", self.driver)
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn stats(&self) -> &TlsStats {
        &self.server.stats
    }

    fn sni_unmatched(&self) -> u64 {
        self.handle.sni_unmatched()
    }

    fn assert_serves_others(&self) {
        let mut client = connect(self.server.addr, &self.config, "localhost").unwrap();
        assert_eq!(get(&mut client, 3).1, 3, "{}", self.describe());
    }

    fn assert_connections_closed(&self) {}
}

/// The name of the real server's backend, in its `x-backend` header.
const BACKEND: &str = "pod-tls";

struct ProxyTarget {
    driver: &'static str,
    server: ringway::server::Server,
    backend: BackendHandle,
    stats: Arc<ringway::stats::WorkerStats>,
    /// Clients trusting the test CA: no ALPN (HTTP/1.1), and ALPN h2.
    http1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
}

impl ProxyTarget {
    fn start(driver: &'static str, pki: &TestPki, leaf: &Leaf, extra: &[&str]) -> ProxyTarget {
        let backend = common::start_backend(BACKEND);
        // The test listener's handshake timeout, so the slow-client cases end as quickly.
        let timeout_ms = HANDSHAKE_TIMEOUT.as_millis().to_string();
        let mut flags = vec!["--tls-handshake-timeout-ms", &timeout_ms];
        flags.extend_from_slice(extra);
        let server = common::https::start_tls_proxy(
            driver,
            &[backend.local_addr()],
            &leaf.cert,
            &leaf.key,
            &flags,
        );
        ProxyTarget {
            driver,
            stats: common::https::worker_stats(&server),
            server,
            backend,
            http1: client_config(pki.roots(), &[], &tls13_and_12()),
            h2: client_config(pki.roots(), &[b"h2"], &tls13_and_12()),
        }
    }

    fn calls_with_status(&self, code: usize) -> u64 {
        ringway::stats::Totals::sum([&*self.stats]).calls_by_status[code]
    }
}

impl Target for ProxyTarget {
    fn describe(&self) -> String {
        format!("real server, {}", self.driver)
    }

    fn addr(&self) -> SocketAddr {
        common::https::tls_addr(&self.server)
    }

    fn stats(&self) -> &TlsStats {
        &self.stats.tls
    }

    fn sni_unmatched(&self) -> u64 {
        let tls = self.server.view().tls;
        tls.expect("a TLS listener").sni_unmatched()
    }

    fn assert_serves_others(&self) {
        let what = self.describe();
        let request = common::grpc_web_request(common::UNARY, &[], &common::grpc_frame(b"https"));
        let https = common::https::https_roundtrip(self.addr(), &self.http1, &request);
        common::assert_echo(&https, BACKEND, &[b"https"]);
        let mut h2 = common::https::h2_over_tls(self.addr(), &self.h2);
        let native = h2.grpc_unary(common::UNARY, &[], b"h2");
        assert_eq!(
            native.messages(),
            [bytes::Bytes::from_static(b"h2")],
            "{what}"
        );
        assert_eq!(native.trailer("grpc-status"), Some("0"), "{what}");
        let request = common::grpc_web_request(common::UNARY, &[], &common::grpc_frame(b"clear"));
        let clear = common::roundtrip(self.server.local_addr(), &request);
        common::assert_echo(&clear, BACKEND, &[b"clear"]);
    }

    fn assert_connections_closed(&self) {
        eventually("every connection closed and uncounted", || {
            self.stats.connections_active.get() == 0
        });
    }
}

/// The two targets for one io driver; the test listener shares `acceptor` (and its reloader)
/// across drivers, the real server has its own.
fn targets(
    driver: &'static str,
    pki: &TestPki,
    leaf: &Leaf,
    acceptor: &Acceptor,
) -> [Box<dyn Target>; 2] {
    let listener = ListenerTarget {
        driver,
        server: start_server(driver, acceptor.clone()),
        handle: acceptor.configs.clone(),
        config: client_config(pki.roots(), &[], &tls13_and_12()),
    };
    let proxy = ProxyTarget::start(driver, pki, leaf, &[]);
    [Box::new(listener), Box::new(proxy)]
}

/// Runs `case` against every target under every io driver; the target is printed first, so a
/// failure's captured output says which one failed.
fn for_each_target(pki: &TestPki, leaf: &Leaf, acceptor: &Acceptor, case: impl Fn(&dyn Target)) {
    for driver in DRIVERS {
        for target in targets(driver, pki, leaf, acceptor) {
            eprintln!("--- {}", target.describe());
            case(&*target);
            target.assert_connections_closed();
        }
    }
}

#[test]
fn a_client_that_never_sends_a_client_hello_is_closed_at_the_handshake_timeout() {
    let pki = TestPki::new("silent");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for_each_target(&pki, &leaf, &acceptor, |target| {
        let mut silent = tcp(target.addr());
        // Others are served while it holds its connection open, and after.
        target.assert_serves_others();
        assert!(read_until_closed(&mut silent).is_empty());
        eventually("timeout counted", || {
            target.stats().handshake_timeouts.get() == 1
        });
        target.assert_serves_others();
    });
}

#[test]
fn a_handshake_at_one_byte_per_second_is_closed_at_the_handshake_timeout() {
    let pki = TestPki::new("trickle");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    let hello = client_hello(pki.roots());
    for_each_target(&pki, &leaf, &acceptor, |target| {
        let mut slow = tcp(target.addr());
        // Each probe read waits up to a second: the pace of one byte per second.
        slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut closed = false;
        for (i, byte) in hello.iter().enumerate() {
            if slow.write_all(&[*byte]).is_err() {
                closed = true;
                break;
            }
            if i == 0 {
                // Others are served while the handshake trickles in.
                target.assert_serves_others();
            }
            let mut probe = [0u8; 1];
            match slow.read(&mut probe) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                _ => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(
            closed,
            "{}: the whole ClientHello went through at 1 byte/s",
            target.describe()
        );
        eventually("timeout counted", || {
            target.stats().handshake_timeouts.get() == 1
        });
        target.assert_serves_others();
    });
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_and_counted() {
    let pki = TestPki::new("garbage");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for_each_target(&pki, &leaf, &acceptor, |target| {
        let stats = target.stats();
        // Not TLS at all: closed without an answer.
        let mut junk = tcp(target.addr());
        junk.write_all(&[0x00, 0xff, 0x13, 0x37, 0x42, 0x99, 0x01])
            .unwrap();
        assert!(read_until_closed(&mut junk).is_empty());
        eventually("not-TLS counted", || stats.handshakes_not_tls.get() == 1);

        // A TLS record header with a corrupted ClientHello inside: rustls answers with an alert.
        let mut hello = client_hello(pki.roots());
        for b in hello.iter_mut().skip(9).take(40) {
            *b ^= 0x5a;
        }
        let mut corrupt = tcp(target.addr());
        corrupt.write_all(&hello).unwrap();
        let answer = read_until_closed(&mut corrupt);
        assert!(is_alert(&answer), "{}: {answer:?}", target.describe());
        eventually("bad hello counted", || {
            stats.handshakes_failed_other.get() + stats.handshakes_incompatible.get() == 1
        });

        // A record that claims more than a record may hold.
        let mut huge = tcp(target.addr());
        huge.write_all(&[22, 3, 1, 0xff, 0xff]).unwrap();
        huge.write_all(&[0u8; 1024]).unwrap();
        let _ = read_until_closed(&mut huge);
        eventually("oversized record counted", || {
            stats.handshakes_failed_other.get() + stats.handshakes_incompatible.get() == 2
        });
        target.assert_serves_others();
    });
}

#[test]
fn a_plain_http_request_to_the_tls_port_gets_400() {
    let pki = TestPki::new("plain");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for_each_target(&pki, &leaf, &acceptor, |target| {
        let mut plain = tcp(target.addr());
        plain
            .write_all(b"POST /demo.Echo/Unary HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        let answer = String::from_utf8(read_until_closed(&mut plain)).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("This port speaks HTTPS, not plain HTTP.\n"));
        eventually("plain HTTP counted", || {
            target.stats().handshakes_plain_http.get() == 1
        });
        target.assert_serves_others();
    });
}

#[test]
fn an_unknown_sni_gets_the_certificate_which_the_client_rejects() {
    let pki = TestPki::new("sni");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for_each_target(&pki, &leaf, &acceptor, |target| {
        // The test listener's reloader is shared by both drivers' listeners.
        let unmatched_before = target.sni_unmatched();
        let config = client_config(pki.roots(), &[b"h2"], &tls13_and_12());
        let error = connect(target.addr(), &config, "unknown.example").unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. }
                    )
            ),
            "{error:?}"
        );
        eventually("client alert counted", || {
            target.stats().handshakes_peer_alert.get() == 1
        });
        assert_eq!(target.sni_unmatched(), unmatched_before + 1);
        // A name the certificate covers is not counted.
        connect(target.addr(), &config, "localhost").unwrap();
        assert_eq!(target.sni_unmatched(), unmatched_before + 1);
        target.assert_serves_others();
    });
}

#[test]
fn a_client_offering_only_unknown_alpn_protocols_gets_an_alert() {
    let pki = TestPki::new("alpn-none");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for_each_target(&pki, &leaf, &acceptor, |target| {
        let config = client_config(pki.roots(), &[b"h3", b"spdy/3"], &tls13_and_12());
        let error = connect(target.addr(), &config, "localhost").unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
            ),
            "{error:?}"
        );
        eventually("incompatible counted", || {
            target.stats().handshakes_incompatible.get() == 1
        });
        target.assert_serves_others();
    });
}

fn openssl_s_client(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new("timeout")
        .arg(CLIENT_WAIT.as_secs().to_string())
        .arg("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "openssl (Debian package openssl) is needed for the TLS 1.0 and renegotiation tests",
        );
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        for line in stdin.split_inclusive(|b| *b == b'\n') {
            // Give the handshake (and each command's answer) time to happen before the next
            // line; s_client reads commands only between its own reads.
            std::thread::sleep(Duration::from_millis(500));
            if input.write_all(line).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(1_000));
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(
        output.status.code(),
        Some(124),
        "openssl s_client hung:\n{text}"
    );
    (output.status.success(), text)
}

#[test]
fn a_tls10_only_client_gets_a_handshake_failure_alert() {
    let pki = TestPki::new("tls10");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for_each_target(&pki, &leaf, &acceptor, |target| {
        // OpenSSL 3 refuses TLS 1.0 at its default security level; level 0 lets it try.
        let (ok, text) = openssl_s_client(
            target.addr(),
            &[
                "-tls1",
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
                "-servername",
                "localhost",
            ],
            b"",
        );
        assert!(!ok, "{text}");
        // rustls answers a ClientHello without TLS 1.2 or 1.3 with handshake_failure (40).
        assert!(text.contains("alert handshake failure"), "{text}");
        eventually("TLS 1.0 counted", || {
            target.stats().handshakes_incompatible.get() == 1
        });
        target.assert_serves_others();
    });
}

#[test]
fn a_tls12_renegotiation_is_refused_and_the_connection_ends() {
    let pki = TestPki::new("reneg");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    let ca_file = pki.dir.join("ca.pem");
    std::fs::write(&ca_file, pem_of(&pki.ca)).unwrap();
    for_each_target(&pki, &leaf, &acceptor, |target| {
        // "R" asks s_client to renegotiate; the request after it shows whether the connection
        // survived.
        let (_, text) = openssl_s_client(
            target.addr(),
            &[
                "-tls1_2",
                "-servername",
                "localhost",
                "-CAfile",
                ca_file.to_str().unwrap(),
            ],
            b"R\nGET /bytes/2 HTTP/1.1\r\nhost: localhost\r\n\r\n",
        );
        assert!(text.contains("RENEGOTIATING"), "{text}");
        // rustls answers at once with a no_renegotiation alert, which ends s_client.
        assert!(
            text.contains("no renegotiation"),
            "{}: not refused:\n{text}",
            target.describe()
        );
        target.assert_serves_others();
    });
}

#[test]
fn a_client_that_stops_reading_mid_response_is_closed_and_others_are_unaffected() {
    let pki = TestPki::new("stall");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, false);
    for driver in DRIVERS {
        let server = start_server(driver, acceptor.clone());
        let config = client_config(pki.roots(), &[], &tls13_and_12());
        let mut stalled = connect(server.addr, &config, "localhost").unwrap();
        stalled
            .write_all(b"GET /bytes/67108864 HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        stalled.flush().unwrap();
        // It reads nothing. Meanwhile another client is served in full.
        let mut other = connect(server.addr, &config, "localhost").unwrap();
        assert_eq!(get(&mut other, 1_000_000).1, 1_000_000);
        eventually("stalled write counted", || {
            server.write_stalls.load(Ordering::Relaxed) == 1
        });
        // Its connection was closed: draining it ends (it cannot hold 64 MiB in buffers).
        let drained = drain_until_closed(&mut stalled);
        assert!(
            drained < 64 * 1024 * 1024,
            "{driver}: the whole response arrived"
        );
    }
}

/// Reads and discards until the server closes the connection; returns how much arrived. Fails
/// the test if the server keeps the connection open.
fn drain_until_closed(client: &mut Client) -> usize {
    let mut drained = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return drained,
            Ok(n) => drained += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the server kept a stalled connection open for {CLIENT_WAIT:?}")
            }
            // A reset, or a TCP close without close_notify.
            Err(_) => return drained,
        }
    }
}

/// The real server's limits on a client that stops reading: `--idle-timeout-ms` for a
/// response write (HTTP/1.1) or a stream's shut window (HTTP/2), then the HTTP/2 keepalive
/// PING for the connection whose socket no longer moves.
const STALL_FLAGS: [&str; 6] = [
    "--idle-timeout-ms",
    "1000",
    "--http2-keepalive-interval-ms",
    "1000",
    "--http2-keepalive-timeout-ms",
    "1000",
];

/// A server stream of 64 messages of 1 MiB: more than the socket buffers on both sides hold.
const HUGE_STREAM: [(&str, &str); 2] = [("x-stream-count", "64"), ("x-response-bytes", "1048576")];

/// The real server, over HTTP/1.1 and HTTP/2 (both over TLS): a client that stops reading a
/// large response has its call cancelled upstream (the backend sees it), counted as CANCELLED,
/// and its connection closed, while the worker serves others throughout.
#[test]
fn a_client_that_stops_reading_mid_response_from_the_real_server_is_cut_off() {
    let pki = TestPki::new("stall-proxy");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    for driver in DRIVERS {
        let target = ProxyTarget::start(driver, &pki, &leaf, &STALL_FLAGS);
        eprintln!("--- {}", target.describe());
        let cancelled = ringway::status::Code::Cancelled as usize;

        // HTTP/1.1: gRPC-Web, and the client never reads.
        let mut stalled = connect(target.addr(), &target.http1, "localhost").unwrap();
        let request = common::grpc_web_request(
            common::SERVER_STREAM,
            &HUGE_STREAM,
            &common::grpc_frame(b"big"),
        );
        stalled.write_all(&request).unwrap();
        stalled.flush().unwrap();
        target.assert_serves_others();
        eventually("HTTP/1.1: the upstream call cancelled", || {
            target.backend.stats().cancelled_by_client == 1
        });
        eventually("counted as CANCELLED", || {
            target.calls_with_status(cancelled) == 1
        });
        assert!(drain_until_closed(&mut stalled) < 64 * 1024 * 1024);

        // HTTP/2: native gRPC on a connection whose client opened its windows wide and then
        // stopped reading the socket.
        let mut stalled = connect(target.addr(), &target.h2, "localhost").unwrap();
        assert_eq!(stalled.conn.alpn_protocol(), Some(&b"h2"[..]));
        let window_max: u32 = (1 << 31) - 1;
        let mut opening = common::rawh2::PREFACE.to_vec();
        // SETTINGS_INITIAL_WINDOW_SIZE (4) at its maximum; the connection window likewise.
        let mut settings = 4u16.to_be_bytes().to_vec();
        settings.extend_from_slice(&window_max.to_be_bytes());
        opening.extend(common::rawh2::frame(
            common::rawh2::SETTINGS,
            0,
            0,
            &settings,
        ));
        let increment = window_max - 65_535;
        opening.extend(common::rawh2::frame(
            common::rawh2::WINDOW_UPDATE,
            0,
            0,
            &increment.to_be_bytes(),
        ));
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", common::SERVER_STREAM),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        fields.extend_from_slice(&HUGE_STREAM);
        opening.extend(common::rawh2::frame(
            common::rawh2::HEADERS,
            common::rawh2::END_HEADERS,
            1,
            &common::rawh2::header_block(&fields),
        ));
        opening.extend(common::rawh2::frame(
            common::rawh2::DATA,
            common::rawh2::END_STREAM,
            1,
            &common::grpc_frame(b"big"),
        ));
        stalled.write_all(&opening).unwrap();
        stalled.flush().unwrap();
        target.assert_serves_others();
        eventually("HTTP/2: the upstream call cancelled", || {
            target.backend.stats().cancelled_by_client == 2
        });
        eventually("counted as CANCELLED", || {
            target.calls_with_status(cancelled) == 2
        });
        assert!(drain_until_closed(&mut stalled) < 64 * 1024 * 1024);
        target.assert_serves_others();
        drop(stalled);
        target.assert_connections_closed();
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel TLS

/// With `--tls-ktls`, a kernel with the `tls` module takes the record layer; this machine's
/// kernel has none (TCP_ULP fails with ENOENT), so connections fall back to userspace, are
/// counted, and work. Either way every connection is served and accounted for.
#[test]
fn ktls_takes_over_or_falls_back_cleanly() {
    let pki = TestPki::new("ktls");
    let leaf = pki.leaf("leaf", KeyKind::EcdsaP256);
    let (_reloader, acceptor) = acceptor_for(&leaf.cert, &leaf.key, true);
    use rustls::CipherSuite as S;
    // Every AEAD the kernel offloads, in both versions.
    let suites = [
        (&rustls::version::TLS13, S::TLS13_AES_128_GCM_SHA256),
        (&rustls::version::TLS13, S::TLS13_AES_256_GCM_SHA384),
        (&rustls::version::TLS13, S::TLS13_CHACHA20_POLY1305_SHA256),
        (
            &rustls::version::TLS12,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            &rustls::version::TLS12,
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for driver in DRIVERS {
        let server = start_server(driver, acceptor.clone());
        for (version, suite) in suites {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            provider.cipher_suites.retain(|s| s.suite() == suite);
            let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(pki.roots())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut client = connect(server.addr, &Arc::new(config), "localhost").unwrap();
            assert_eq!(
                client.conn.negotiated_cipher_suite().unwrap().suite(),
                suite
            );
            // A request written right behind the handshake, a large response, keep-alive.
            assert_eq!(get(&mut client, 300_000).1, 300_000, "{driver} {suite:?}");
            assert_eq!(get(&mut client, 7).1, 7);
        }
        let stats = &server.stats;
        assert_eq!(
            stats.ktls_connections.get() + stats.ktls_fallbacks.get(),
            suites.len() as u64,
            "{driver}"
        );
        assert_eq!(
            server.kernel_streams.load(Ordering::Relaxed),
            stats.ktls_connections.get()
        );
        assert_eq!(stats.ktls_failures.get(), 0);
        // Where the kernel is known to have the module (the qemu run in the report), every
        // connection must have been handed over.
        let expect_kernel = std::env::var_os("RINGWAY_TEST_EXPECT_KTLS").is_some();
        if expect_kernel {
            assert_eq!(
                stats.ktls_connections.get(),
                suites.len() as u64,
                "{driver}"
            );
        }

        // A TLS 1.3 KeyUpdate: rustls in userspace answers it and the connection goes on; the
        // kernel (before Linux 6.13) cannot rekey, the read fails with EIO and the connection
        // ends as at an EOF instead of hanging.
        let config = client_config(pki.roots(), &[b"http/1.1"], &[&rustls::version::TLS13]);
        let mut client = connect(server.addr, &config, "localhost").unwrap();
        get(&mut client, 1);
        client.conn.refresh_traffic_keys().unwrap();
        if expect_kernel {
            let _ = client.write_all(b"GET /bytes/1 HTTP/1.1\r\n\r\n");
            let _ = client.flush();
            let mut rest = Vec::new();
            let read = client.read_to_end(&mut rest);
            match read {
                Ok(_) => assert!(rest.is_empty(), "{driver}: answered after a KeyUpdate"),
                Err(e) => assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{driver}: the kTLS connection hung after a KeyUpdate"
                ),
            }
        } else {
            assert_eq!(get(&mut client, 5).1, 5);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate files and reload

#[test]
fn keys_load_in_pkcs8_sec1_and_pkcs1() {
    let pki = TestPki::new("formats");
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    for (kind, label) in [
        (KeyKind::EcdsaP256, "EC PRIVATE KEY"),
        (KeyKind::Rsa2048, "RSA PRIVATE KEY"),
    ] {
        let leaf = pki.leaf(&format!("{kind:?}"), kind);
        tls::certs::load_certified_key(&leaf.cert, &leaf.key, &provider).unwrap();
        let traditional = pki.dir.join(format!("{kind:?}.traditional.key"));
        to_traditional(&leaf.key, &traditional);
        let text = std::fs::read_to_string(&traditional).unwrap();
        assert!(text.contains(&format!("BEGIN {label}")), "{text}");
        tls::certs::load_certified_key(&leaf.cert, &traditional, &provider).unwrap();
    }
}

#[test]
fn start_up_errors_name_the_file_and_the_fault() {
    let pki = TestPki::new("errors");
    let a = pki.leaf("a", KeyKind::EcdsaP256);
    let b = pki.leaf("b", KeyKind::EcdsaP256);
    let missing = pki.dir.join("missing.crt");
    let garbage = pki.dir.join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let start = |cert: &Path, key: &Path| {
        Reloader::start(cert, key, false, Duration::from_secs(60))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let error = start(&missing, &a.key);
    assert!(
        error.contains("missing.crt") && error.contains("cannot read"),
        "{error}"
    );
    let error = start(&garbage, &a.key);
    assert!(
        error.contains("garbage.crt") && error.contains("not valid PEM"),
        "{error}"
    );
    let error = start(&empty, &a.key);
    assert!(
        error.contains("empty.pem") && error.contains("no CERTIFICATE"),
        "{error}"
    );
    let error = start(&a.cert, &empty);
    assert!(
        error.contains("empty.pem") && error.contains("no private key"),
        "{error}"
    );
    let error = start(&a.cert, &a.cert);
    assert!(
        error.contains("a.crt") && error.contains("no private key"),
        "{error}"
    );
    let error = start(&a.cert, &b.key);
    assert!(
        error.contains("b.key") && error.contains("does not match") && error.contains("a.crt"),
        "{error}"
    );
}

/// Lays out a directory as the kubelet mounts a Secret: `tls.crt` → `..data/tls.crt`, `..data`
/// → a timestamped directory, swapped atomically by renaming a new link over `..data`.
struct SecretMount {
    dir: PathBuf,
    generation: u32,
}

impl SecretMount {
    fn new(dir: PathBuf, leaf: &Leaf) -> SecretMount {
        std::fs::create_dir_all(&dir).unwrap();
        let mut mount = SecretMount { dir, generation: 0 };
        mount.publish(leaf);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.join(name)).unwrap();
        }
        mount
    }

    fn publish_files(&mut self, cert: &[u8], key: &[u8]) {
        self.generation += 1;
        let version = format!(
            "..2026_01_01_00_00_0{}.{}",
            self.generation,
            std::process::id()
        );
        let data = self.dir.join(&version);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn publish(&mut self, leaf: &Leaf) {
        let cert = std::fs::read(&leaf.cert).unwrap();
        let key = std::fs::read(&leaf.key).unwrap();
        self.publish_files(&cert, &key);
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

/// The leaf a new connection is served. A resumed session would report the certificate of the
/// session it resumes (tickets outlive a reload on purpose), so this client never resumes.
fn served_leaf(addr: SocketAddr, config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut fresh = (**config).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let client = connect(addr, &Arc::new(fresh), "localhost").unwrap();
    client.conn.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[test]
fn a_secret_mount_swap_reaches_new_connections_and_open_ones_keep_theirs() {
    let pki = TestPki::new("swap");
    let first = pki.leaf("first", KeyKind::EcdsaP256);
    let second = pki.leaf("second", KeyKind::Rsa2048);
    let mut mount = SecretMount::new(pki.dir.join("secret"), &first);
    let (reloader, acceptor) = acceptor_for(&mount.cert(), &mount.key(), false);
    let handle: ConfigHandle = reloader.handle();
    let server = start_server("uring", acceptor);
    let config = client_config(pki.roots(), &[], &tls13_and_12());
    assert_eq!(served_leaf(server.addr, &config), first.der.as_ref());
    let mut open = connect(server.addr, &config, "localhost").unwrap();
    get(&mut open, 1);

    mount.publish(&second);
    eventually("reload", || {
        handle.stats().reloads.load(Ordering::Relaxed) == 1
    });
    assert_eq!(served_leaf(server.addr, &config), second.der.as_ref());
    // The connection opened before keeps its certificate and keeps working.
    assert_eq!(
        open.conn.peer_certificates().unwrap()[0].as_ref(),
        first.der.as_ref()
    );
    assert_eq!(get(&mut open, 1_000).1, 1_000);

    // A bad renewal: logged, counted, and the second certificate stays.
    mount.publish_files(b"not a certificate", b"not a key");
    eventually("failed reload counted", || {
        handle.stats().reload_failures.load(Ordering::Relaxed) == 1
    });
    assert_eq!(handle.stats().reloads.load(Ordering::Relaxed), 1);
    assert_eq!(served_leaf(server.addr, &config), second.der.as_ref());

    // The next good one is taken.
    mount.publish(&first);
    eventually("second reload", || {
        handle.stats().reloads.load(Ordering::Relaxed) == 2
    });
    assert_eq!(served_leaf(server.addr, &config), first.der.as_ref());
}

#[test]
fn a_file_rewritten_in_place_is_reloaded() {
    let pki = TestPki::new("inplace");
    let first = pki.leaf("first", KeyKind::EcdsaP256);
    let second = pki.leaf("second", KeyKind::EcdsaP256);
    let cert = pki.dir.join("live.crt");
    let key = pki.dir.join("live.key");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let (reloader, acceptor) = acceptor_for(&cert, &key, false);
    let server = start_server("epoll", acceptor);
    let config = client_config(pki.roots(), &[], &tls13_and_12());
    assert_eq!(served_leaf(server.addr, &config), first.der.as_ref());
    // Key first, then certificate: between the two the pair does not match, which the settle
    // retry absorbs or counts, but the end state is the new pair.
    std::fs::write(&key, std::fs::read(&second.key).unwrap()).unwrap();
    std::fs::write(&cert, std::fs::read(&second.cert).unwrap()).unwrap();
    eventually("in-place reload", || {
        served_leaf(server.addr, &config) == second.der.as_ref()
    });
    assert!(reloader.stats().reloads.load(Ordering::Relaxed) >= 1);
}

#[test]
fn tls_flags_become_settings_only_when_the_tls_listener_is_on() {
    let config = ringway::config::Config::from_args(["ringway"]).unwrap();
    assert!(tls::TlsSettings::from_flags(&config).is_none());
    let config = ringway::config::Config::from_args([
        "ringway",
        "--tls-listen",
        "127.0.0.1:8443",
        "--tls-cert-file",
        "/secret/tls.crt",
        "--tls-handshake-timeout-ms",
        "2500",
        "--tls-ktls",
    ])
    .unwrap();
    config.validate().unwrap();
    let settings = tls::TlsSettings::from_flags(&config).unwrap();
    assert_eq!(settings.cert_file, Path::new("/secret/tls.crt"));
    assert_eq!(settings.key_file, Path::new("/etc/ringway/tls/tls.key"));
    assert_eq!(settings.handshake_timeout, Duration::from_millis(2_500));
    assert!(settings.ktls);
    assert_eq!(settings.reload_interval, Duration::from_millis(5_000));
    assert!(ringway::config::Config::from_args(["ringway", "--tls-listen", "nowhere"]).is_err());
}
