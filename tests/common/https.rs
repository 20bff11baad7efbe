//! HTTPS to the real server's TLS listener: starting a proxy with one, a blocking rustls client
//! that carries this harness's raw HTTP/1.1 client ([`Reader`] over TLS), the h2 client over
//! tokio-rustls, and the certificate a new connection is served.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use ringway::server::Server;
use ringway::stats::WorkerStats;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::certs_for_server::tls_flags;
use super::h2client::H2Client;
use super::{Reader, Response, CLIENT_READ_TIMEOUT};

/// A TLS client connection over a blocking socket.
pub type TlsClient = rustls::StreamOwned<ClientConnection, TcpStream>;

/// Start ringway (one worker, `driver`) with its cleartext listener and a TLS listener serving
/// `cert` and `key` (see [`tls_flags`]), plus `extra` flags.
pub fn start_tls_proxy(
    driver: &str,
    upstreams: &[SocketAddr],
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> Server {
    let mut flags = tls_flags(cert, key);
    flags.extend(extra.iter().map(|f| f.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = super::start_proxy(driver, upstreams, &flags);
    assert!(server.tls_local_addr().is_some(), "the TLS listener is up");
    server
}

/// The HTTPS address of a proxy started with a TLS listener.
pub fn tls_addr(server: &Server) -> SocketAddr {
    server.tls_local_addr().expect("a TLS listener")
}

/// The counters of the proxy's one worker (tests start one).
pub fn worker_stats(server: &Server) -> Arc<WorkerStats> {
    server.view().worker_stats[0].clone()
}

/// Connect and complete the handshake, naming `name` (SNI and certificate check).
pub fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<TlsClient, rustls::Error> {
    let server_name = ServerName::try_from(name.to_string()).expect("a valid server name");
    let conn = ClientConnection::new(config.clone(), server_name).expect("client connection");
    let sock = TcpStream::connect(addr).expect("connect to the TLS listener");
    sock.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut client = rustls::StreamOwned::new(conn, sock);
    while client.conn.is_handshaking() {
        if let Err(e) = client.conn.complete_io(&mut client.sock) {
            let tls = e
                .into_inner()
                .map(|inner| inner.downcast::<rustls::Error>());
            return Err(match tls {
                Some(Ok(tls)) => *tls,
                _ => rustls::Error::General("I/O error in the handshake".into()),
            });
        }
    }
    Ok(client)
}

/// An HTTPS connection to `localhost` at `addr`, ready for raw HTTP/1.1.
pub fn https(addr: SocketAddr, config: &Arc<ClientConfig>) -> Reader<TlsClient> {
    Reader::new(tls_connect(addr, config, "localhost").expect("TLS handshake"))
}

/// One request on a new HTTPS connection, one response.
pub fn https_roundtrip(addr: SocketAddr, config: &Arc<ClientConfig>, request: &[u8]) -> Response {
    let mut client = https(addr, config);
    client.write(request);
    client.read_response()
}

/// An h2 client (the harness's [`H2Client`]) over TLS to `localhost` at `addr`. When `config`
/// offers ALPN `h2` the server must have chosen it; without ALPN the client speaks HTTP/2 with
/// prior knowledge.
pub fn h2_over_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> H2Client {
    let offers_h2 = config.alpn_protocols.iter().any(|p| p == b"h2");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let expected: Option<&[u8]> = offers_h2.then_some(b"h2");
        assert_eq!(tls.get_ref().1.alpn_protocol(), expected, "ALPN");
        let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        send
    });
    H2Client { runtime, send }
}

/// The leaf certificate a new connection is served. A resumed session would report the
/// certificate of the session it resumes (tickets outlive a reload on purpose), so this client
/// never resumes.
pub fn served_leaf(addr: SocketAddr, config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut fresh = (**config).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let client = tls_connect(addr, &Arc::new(fresh), "localhost").expect("TLS handshake");
    peer_leaf(&client.conn)
}

/// The leaf certificate of an established connection.
pub fn peer_leaf(conn: &ClientConnection) -> Vec<u8> {
    conn.peer_certificates().expect("a server certificate")[0]
        .as_ref()
        .to_vec()
}
