//! HTTPS targets: the rustls client configuration of a run, and the client TLS stream the
//! HTTP/1.1 loop and the h2 client both run over, on the thread's monoio runtime.
//!
//! # The adapter: our own, over owned buffers
//! The stream is written here, not taken from `monoio-rustls` (0.4.0, the version for monoio
//! 0.2 and rustls 0.23), for the reasons ringway's server side gives (`src/tls/mod.rs`), which
//! hold for its client side as well (its `Stream` is shared by both sides):
//! - h2 runs over `monoio_compat::StreamWrapper`, which keeps a read and a write future of the
//!   stream alive at once. In monoio-rustls a read that meets a bad record writes the alert
//!   through the write buffer that a suspended write has taken out, and its
//!   `expect("buffer mut expected")` panics: a misbehaving target would crash the generator
//!   instead of counting an error. A read cancelled by a call's timeout likewise leaves its
//!   buffer gone, and the next read panics on `expect("buffer ref expected")`.
//! - Here the two directions own separate ciphertext buffers, touch the rustls state only
//!   between awaits, and take turns on the socket for writes (records must leave in the order
//!   rustls sealed them); a cancelled operation makes the stream return errors, never panic.
//!
//! The crypto provider is aws-lc-rs, as the proxy's, so a handshake costs the client what a
//! browser's would cost in the same library, and the key exchange groups can be narrowed
//! ([`KeyExchange`]) so that two servers with different defaults do the same work.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::task::{Poll, Waker};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore};

/// Ciphertext read buffer: one whole maximum-size record (16 KiB of plaintext, up to 256 bytes
/// of expansion and the 5-byte header), so a large response decrypts a record per read.
const CIPHERTEXT_READ_BYTES: usize = 16 * 1024 + 256 + 5;
/// Plaintext rustls buffers before it must be encrypted and sent; a write past it waits for
/// the socket (rustls's own default, stated so the bound is visible here).
const PLAINTEXT_BUFFERED_BYTES_MAX: usize = 64 * 1024;
/// Sessions a run keeps for resumption (`--tls-resumption`): one per connection of a large run.
const RESUMPTION_SESSIONS_MAX: usize = 4096;

/// The key exchange groups the client offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyExchange {
    /// rustls's defaults with aws-lc-rs, most preferred first: X25519MLKEM768 (what current
    /// browsers send), P-384, X25519, P-256.
    #[default]
    Default,
    /// X25519 only: what a server without the post-quantum hybrid picks from a browser.
    X25519,
    /// P-256 (secp256r1) only.
    P256,
    /// The X25519MLKEM768 hybrid only.
    X25519Mlkem768,
}

impl KeyExchange {
    fn groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        use aws_lc_rs::kx_group;
        match self {
            KeyExchange::Default => aws_lc_rs::DEFAULT_KX_GROUPS.to_vec(),
            KeyExchange::X25519 => vec![kx_group::X25519],
            KeyExchange::P256 => vec![kx_group::SECP256R1],
            KeyExchange::X25519Mlkem768 => vec![kx_group::X25519MLKEM768],
        }
    }
}

/// An HTTPS target: whom to trust, the name to ask for and check, and how to shake hands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    /// Trust anchors (the certificates of `--ca-file`); the server's chain must lead to one.
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// The name sent as SNI and required in the server's certificate (a DNS name or an IP).
    pub server_name: String,
    pub key_exchange: KeyExchange,
    /// Resume sessions with the tickets of earlier connections (abbreviated handshakes);
    /// off, every connection makes a full handshake.
    pub resumption: bool,
}

/// Every certificate of a PEM file (`--ca-file`); an error names the file.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certificates)
}

/// What one thread needs to open TLS connections: the shared rustls configuration and the
/// parsed server name.
#[derive(Clone, Debug)]
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// The ALPN protocol the server must select (`h2` for the HTTP/2 mode); `None` over
    /// HTTP/1.1, where a server that selects nothing is speaking HTTP/1.1.
    required_alpn: Option<&'static [u8]>,
}

impl TlsClient {
    /// The client for `target`, offering ALPN `h2` alone with `http2`, else `http/1.1` alone,
    /// so the server cannot pick a protocol the run does not speak.
    pub fn new(target: &TlsTarget, http2: bool) -> Result<TlsClient, String> {
        let server_name = ServerName::try_from(target.server_name.clone())
            .map_err(|_| format!("{:?} is not a DNS name or IP address", target.server_name))?;
        let mut roots = RootCertStore::empty();
        for certificate in &target.ca_certificates {
            roots
                .add(certificate.clone())
                .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA file holds no certificate".into());
        }
        let mut provider = CryptoProvider {
            kx_groups: target.key_exchange.groups(),
            ..aws_lc_rs::default_provider()
        };
        // Offered in the order browsers offer them (Chrome and Firefox list AES-128-GCM first;
        // rustls's default lists AES-256-GCM first), so a server that follows the client's
        // order agrees on what a browser would get.
        provider
            .cipher_suites
            .sort_by_key(|suite| !format!("{:?}", suite.suite()).contains("AES_128_GCM"));
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let alpn: &'static [u8] = if http2 { b"h2" } else { b"http/1.1" };
        config.alpn_protocols = vec![alpn.to_vec()];
        config.resumption = if target.resumption {
            Resumption::in_memory_sessions(RESUMPTION_SESSIONS_MAX)
        } else {
            Resumption::disabled()
        };
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
            required_alpn: http2.then_some(b"h2".as_slice()),
        })
    }

    /// Runs the client handshake on a connected socket.
    pub async fn connect(&self, io: TcpStream) -> Result<TlsStream, String> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| e.to_string())?;
        let mut stream = TlsStream::new(io, conn);
        stream.handshake().await?;
        if let Some(required) = self.required_alpn {
            if stream.conn.alpn_protocol() != Some(required) {
                return Err(format!(
                    "the server did not select ALPN {:?}",
                    String::from_utf8_lossy(required)
                ));
            }
        }
        Ok(stream)
    }
}

/// The outcome of a handshake, for the report: how many were resumed, and what was agreed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub resumed: bool,
    /// Version, key exchange group, cipher suite and ALPN protocol, e.g.
    /// `TLSv1_3 X25519 TLS13_AES_128_GCM_SHA256 h2`.
    pub summary: String,
}

/// The ciphertext read buffer: bytes `start..end` came from the socket and were not yet given
/// to rustls. Owned, so it can travel to the ring and back.
struct ReadSpace {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

// SAFETY: the pointer and length describe `buf[end..]`, which stays valid and unaliased while
// the ring owns the value; `set_init` only advances `end` within that range.
unsafe impl IoBufMut for ReadSpace {
    fn write_ptr(&mut self) -> *mut u8 {
        // `end <= buf.len()` always holds, so the offset stays within the allocation.
        unsafe { self.buf.as_mut_ptr().add(self.end) }
    }
    fn bytes_total(&mut self) -> usize {
        self.buf.len() - self.end
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.end += pos;
    }
}

impl ReadSpace {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes room at the end for the next socket read.
    fn prepare(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// A client TLS connection: rustls in userspace over a monoio socket.
pub(crate) struct TlsStream {
    io: TcpStream,
    conn: ClientConnection,
    /// `None` while a socket read has it, or for good after that read was cancelled.
    rx: Option<ReadSpace>,
    /// Likewise for writes.
    tx: Option<Vec<u8>>,
    /// A socket write is in flight (from either direction); the other waits its turn.
    writing: bool,
    write_waiter: Option<Waker>,
}

/// The error of a stream whose read or write was cancelled mid-operation: the buffer went
/// with the dropped future, and the connection must be closed.
fn cancelled() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "TLS stream used after a cancelled read or write",
    )
}

fn invalid(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl TlsStream {
    fn new(io: TcpStream, mut conn: ClientConnection) -> TlsStream {
        conn.set_buffer_limit(Some(PLAINTEXT_BUFFERED_BYTES_MAX));
        TlsStream {
            io,
            conn,
            rx: Some(ReadSpace {
                buf: vec![0; CIPHERTEXT_READ_BYTES].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
            tx: Some(Vec::new()),
            writing: false,
            write_waiter: None,
        }
    }

    /// What the handshake agreed on.
    pub fn negotiated(&self) -> Negotiated {
        let conn = &self.conn;
        let name = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
        let summary = format!(
            "{} {} {} {}",
            name(conn.protocol_version().map(|v| format!("{v:?}"))),
            name(
                conn.negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()))
            ),
            name(
                conn.negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
            ),
            name(
                conn.alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
            ),
        );
        Negotiated {
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
            summary,
        }
    }

    /// Reads more ciphertext from the socket; `Ok(false)` at the end of the stream.
    async fn read_socket(&mut self) -> io::Result<bool> {
        let mut rx = self.rx.take().ok_or_else(cancelled)?;
        rx.prepare();
        let (result, rx) = self.io.read(rx).await;
        self.rx = Some(rx);
        Ok(result? > 0)
    }

    /// Gives the buffered ciphertext to rustls and processes it; returns the bytes it took.
    fn feed(&mut self) -> Result<usize, rustls::Error> {
        // A cancelled socket read took the buffer with it; the next read reports that.
        let Some(rx) = self.rx.as_mut() else {
            return Ok(0);
        };
        let mut fed = 0;
        while !rx.pending().is_empty() {
            let mut input = rx.pending();
            // An error means rustls's own buffer is full: process what it has first.
            let consumed = self.conn.read_tls(&mut input).unwrap_or_default();
            rx.start += consumed;
            fed += consumed;
            self.conn.process_new_packets()?;
            if consumed == 0 {
                break;
            }
        }
        Ok(fed)
    }

    /// Sends the records rustls has sealed.
    async fn flush_records(&mut self) -> io::Result<()> {
        loop {
            self.write_turn().await;
            if !self.conn.wants_write() {
                return Ok(());
            }
            let mut tx = self.tx.take().ok_or_else(cancelled)?;
            tx.clear();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut tx)?;
            }
            self.writing = true;
            let (result, tx) = self.io.write_all(tx).await;
            self.writing = false;
            if let Some(waiter) = self.write_waiter.take() {
                waiter.wake();
            }
            self.tx = Some(tx);
            result?;
        }
    }

    /// Waits until no write of the other direction is in flight.
    async fn write_turn(&mut self) {
        std::future::poll_fn(|cx| {
            if self.writing {
                self.write_waiter = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Runs the client handshake to its end (the client's Finished sent).
    async fn handshake(&mut self) -> Result<(), String> {
        loop {
            if self.conn.wants_write() {
                self.flush_records().await.map_err(|e| e.to_string())?;
            }
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            if !self.read_socket().await.map_err(|e| e.to_string())? {
                return Err("the server closed the connection during the handshake".into());
            }
            if let Err(error) = self.feed() {
                // rustls queued an alert saying why; the connection is dropped next anyway.
                let _ = self.flush_records().await;
                return Err(error.to_string());
            }
        }
    }

    async fn read_plain<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            match self.conn.reader().fill_buf() {
                Ok(plain) => {
                    // An empty chunk means close_notify was received: a clean end.
                    let n = plain.len().min(buf.bytes_total());
                    // SAFETY: `write_ptr` points at `bytes_total` writable bytes of `buf`,
                    // which cannot overlap rustls's plaintext queue.
                    unsafe {
                        std::ptr::copy_nonoverlapping(plain.as_ptr(), buf.write_ptr(), n);
                        buf.set_init(n);
                    }
                    self.conn.reader().consume(n);
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: the end of the stream; the HTTP framing
                // above says whether anything was cut short.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            // Ciphertext left over from the last read is offered first; a socket read follows
            // only when rustls took none of it, so this loop always waits on something.
            let consumed = match self.feed() {
                Ok(consumed) => consumed,
                Err(error) => {
                    let _ = self.flush_records().await;
                    return (Err(invalid(error)), buf);
                }
            };
            // A KeyUpdate answer: send it now, so a server waiting for it is not left hanging.
            if self.conn.wants_write() {
                if let Err(e) = self.flush_records().await {
                    return (Err(e), buf);
                }
            }
            if consumed == 0 {
                match self.read_socket().await {
                    Ok(true) => {}
                    Ok(false) => {
                        // An empty reader tells rustls the peer closed; later reads see it too.
                        let _ = self.conn.read_tls(&mut io::empty());
                        return (Ok(0), buf);
                    }
                    Err(e) => return (Err(e), buf),
                }
            }
        }
    }

    async fn write_plain(&mut self, plain: &[u8]) -> io::Result<usize> {
        if plain.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.conn.writer().write(plain)?;
            self.flush_records().await?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Sends close_notify and closes the socket's sending side: the well-behaved end of a
    /// connection (`--connection-per-call` ends every call this way).
    pub async fn close(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_records().await?;
        self.io.shutdown().await
    }
}

/// A connection to the target, cleartext or TLS: what the HTTP/1.1 loop reads and writes, and
/// what h2 runs over (through monoio-compat).
pub(crate) enum Stream {
    Plain(TcpStream),
    /// Boxed: the rustls state is a few KiB, the plain socket a few bytes.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Ends the connection politely: close_notify over TLS, then FIN.
    pub async fn close(&mut self) {
        let _ = match self {
            Stream::Plain(io) => io.shutdown().await,
            Stream::Tls(tls) => tls.close().await,
        };
    }
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(io) => io.read(buf).await,
            Stream::Tls(tls) => tls.read_plain(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(io) => io.readv(buf).await,
            Stream::Tls(tls) => {
                // Fill the first non-empty iovec: a short read is allowed.
                // SAFETY: the raw buffer borrows `buf`'s memory, which outlives this call.
                let result = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
                    Some(raw) => tls.read_plain(raw).await.0,
                    None => Ok(0),
                };
                if let Ok(n) = result {
                    // SAFETY: `n` bytes were written at the start of the first iovec.
                    unsafe { buf.set_init(n) };
                }
                (result, buf)
            }
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(io) => io.write(buf).await,
            Stream::Tls(tls) => {
                // SAFETY: `read_ptr` points at `bytes_init` initialised bytes owned by `buf`.
                let plain = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let result = tls.write_plain(plain).await;
                (result, buf)
            }
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(io) => io.writev(buf).await,
            Stream::Tls(tls) => {
                // The generator writes whole requests from one buffer and h2 writes through
                // monoio-compat's single buffer, so the first iovec is all there is to send;
                // a short write is allowed.
                // SAFETY: the raw buffer borrows `buf`'s memory, which outlives this call.
                let result = match unsafe { RawBuf::new_from_iovec(&buf) } {
                    Some(raw) => {
                        let plain =
                            unsafe { std::slice::from_raw_parts(raw.read_ptr(), raw.bytes_init()) };
                        tls.write_plain(plain).await
                    }
                    None => Ok(0),
                };
                (result, buf)
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(io) => io.flush().await,
            Stream::Tls(tls) => {
                tls.conn.writer().flush()?;
                tls.flush_records().await
            }
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(io) => io.shutdown().await,
            Stream::Tls(tls) => tls.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_read_buffer_is_compacted_and_an_empty_one_rewound() {
        let mut rx = ReadSpace {
            buf: vec![7; 16].into_boxed_slice(),
            start: 10,
            end: 16,
        };
        rx.prepare();
        assert_eq!((rx.start, rx.end), (0, 6));
        assert!(rx.pending().iter().all(|b| *b == 7));
        rx.start = 6;
        rx.prepare();
        assert_eq!((rx.start, rx.end), (0, 0));
        assert_eq!(rx.bytes_total(), 16);
    }

    fn target(ca: Vec<CertificateDer<'static>>, name: &str) -> TlsTarget {
        TlsTarget {
            ca_certificates: ca,
            server_name: name.into(),
            key_exchange: KeyExchange::X25519,
            resumption: false,
        }
    }

    #[test]
    fn bad_names_and_empty_or_broken_trust_are_refused() {
        let error = TlsClient::new(&target(vec![], "ringway.test"), false).unwrap_err();
        assert!(error.contains("no certificate"), "{error}");
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        let error = TlsClient::new(&target(vec![garbage], "ringway.test"), false).unwrap_err();
        assert!(error.contains("not usable"), "{error}");
        let error = TlsClient::new(&target(vec![], "bad name!"), true).unwrap_err();
        assert!(error.contains("not a DNS name"), "{error}");
    }

    #[test]
    fn key_exchange_choices_narrow_the_groups() {
        assert_eq!(KeyExchange::X25519.groups().len(), 1);
        assert_eq!(
            format!("{:?}", KeyExchange::P256.groups()[0].name()),
            "secp256r1"
        );
        assert!(KeyExchange::Default.groups().len() > 2);
    }
}
