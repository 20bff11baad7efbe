//! TLS termination for the downstream listener: certificates from PEM files kept current
//! ([`Reloader`]), the server handshake under a time limit on a monoio socket ([`accept`]), and
//! the stream that carries HTTP/1.1 or HTTP/2 after it ([`TlsStream`]).
//!
//! # The adapter: our own, over owned buffers
//! [`TlsStream`] is written here rather than taken from the `monoio-rustls` crate (0.4.0, the
//! version for monoio 0.2 and rustls 0.23), whose source was read for this choice:
//! - h2 runs over `monoio_compat::StreamWrapper`, which accepts any `AsyncReadRent +
//!   AsyncWriteRent` stream but keeps a read and a write future of it alive at once. In
//!   monoio-rustls a read that meets a bad record writes the alert through the same write
//!   buffer a suspended write has taken out, and that buffer's `expect("buffer mut expected")`
//!   then panics: a hostile client could abort the process (`panic = "abort"`). Here the two
//!   directions own separate buffers and take turns on the socket.
//! - Its `writev` sends only the first iovec, so an HTTP/1.1 response written as head + body
//!   becomes two records and two socket writes; here all slices go through rustls's vectored
//!   write into as few records as their size allows, and out in one write.
//! - It reads into a fixed 16 KiB buffer per connection; here an idle connection holds 4 KiB
//!   ([`stream::CIPHERTEXT_READ_BYTES_MIN`]), growing to one full record only for bulk reads.
//! - Kernel TLS needs the handshake read record by record, so no byte past the handshake is
//!   taken from the socket before the kernel takes it over; that is a mode of our read path.
//!
//! # The crypto provider: aws-lc-rs
//! Measured with callgrind (instructions counted inside the server's rustls calls only, so the
//! figures do not depend on the machine's load), rustls 0.23.48, ECDSA P-256 certificate, the
//! same in-memory harness built once with each provider:
//!
//! | per TLS 1.3 handshake, server side | aws-lc-rs | ring |
//! |---|---|---|
//! | full, X25519 | 1.17 M instructions | 1.27 M |
//! | full, X25519MLKEM768 (what Chrome and Firefox offer) | 1.40 M | not offered |
//! | bulk AES-256-GCM seal, per byte | 4.7 | 4.7 |
//!
//! aws-lc-rs is rustls's default provider, 8 % cheaper per handshake at equal key exchange,
//! and the only one of the two with the post-quantum hybrid key exchange browsers now send
//! (rustls 0.23.48 deprecates `ring::default_provider` for lacking it). It builds here with gcc
//! alone (no cmake, clang or nasm); its cost is build time: a clean build of rustls with it took
//! 94 s against 36 s with ring (2 shared cores), paid once per clean build. bench/tls.rs
//! measures the chosen configuration.
//!
//! # Kernel TLS
//! Behind `--tls-ktls` ([`ktls`]): the handshake stays in rustls, then the record layer goes to
//! the kernel. It is off by default because it could not be measured against userspace rustls
//! on the machines this was written on (their kernel has no `tls` module); it was tested for
//! real under qemu with a Debian 6.1 kernel (every AEAD, both TLS versions, both io drivers).

pub mod certs;
pub mod ktls;
pub mod reload;
pub mod stream;

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use rustls::server::ProducesTickets;
use rustls::{HandshakeKind, ProtocolVersion, ServerConnection};

pub use crate::stats::TlsStats;

pub use certs::CertError;
pub use reload::{ConfigHandle, ReloadStats, Reloader};
pub use stream::TlsStream;

use stream::{HandshakeError, UserspaceTls};

/// The crypto provider and the ticketer, chosen in one place (see the module doc).
mod provider {
    use super::*;

    /// aws-lc-rs with the AES-128-GCM suites first: the server picks by its own order
    /// (`ignore_client_order` in `certs::server_config`). Browsers list AES-128-GCM first
    /// anyway; a client that lists AES-256-GCM-SHA384 first (rustls, Go) would otherwise make
    /// every handshake's key schedule and transcript run on SHA-384, which costs more per
    /// byte than SHA-256 (docs/benchmarks.md, TLS).
    pub fn provider() -> rustls::crypto::CryptoProvider {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|suite| !format!("{:?}", suite.suite()).contains("AES_128_GCM"));
        provider
    }

    pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
        rustls::crypto::aws_lc_rs::Ticketer::new()
    }
}

/// The TLS flags, as the listener needs them.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// From accept to the handshake's last flight sent; a client slower than this is closed.
    pub handshake_timeout: Duration,
    /// Try kernel TLS after the handshake (falls back to userspace where the kernel cannot).
    pub ktls: bool,
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// The settings, or `None` when `--tls-listen` is off.
    pub fn from_flags(config: &crate::config::Config) -> Option<TlsSettings> {
        config.tls_listen.0?;
        Some(TlsSettings {
            cert_file: config.tls_cert_file.clone(),
            key_file: config.tls_key_file.clone(),
            handshake_timeout: Duration::from_millis(config.tls_handshake_timeout_ms),
            ktls: config.tls_ktls,
            reload_interval: Duration::from_millis(config.tls_reload_interval_ms),
        })
    }

    /// Loads the certificate (an error names the file) and starts watching it.
    pub fn start_reloader(&self) -> Result<Reloader, CertError> {
        Reloader::start(
            &self.cert_file,
            &self.key_file,
            self.ktls,
            self.reload_interval,
        )
    }

    /// What one worker needs to accept TLS connections.
    pub fn acceptor(&self, configs: ConfigHandle) -> Acceptor {
        Acceptor {
            configs,
            handshake_timeout: self.handshake_timeout,
            ktls: self.ktls,
        }
    }
}

/// One worker's view of the TLS settings.
#[derive(Debug, Clone)]
pub struct Acceptor {
    pub configs: ConfigHandle,
    pub handshake_timeout: Duration,
    pub ktls: bool,
}

/// The application protocol agreed by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    /// `http/1.1`, or a client that offered no ALPN at all.
    Http1,
}

/// A connection whose handshake finished.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TlsStream,
    pub alpn: Alpn,
    pub version: ProtocolVersion,
    pub resumed: bool,
}

/// Why a TLS connection was not accepted. The connection is closed; an alert was sent where
/// TLS had got far enough for one.
#[derive(Debug)]
pub enum TlsError {
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The client's first bytes were not a TLS handshake record.
    NotTls,
    /// A plain HTTP request on the TLS port; it was answered with 400.
    PlainHttp,
    /// The client closed or reset the connection before the handshake finished.
    Closed(Option<std::io::Error>),
    /// The handshake failed in TLS (an incompatible client, an alert from it, a malformed
    /// message).
    Tls(rustls::Error),
    /// Kernel TLS took the secrets and then refused them: the connection cannot continue.
    Ktls(std::io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Timeout => f.write_str("TLS handshake timed out"),
            TlsError::NotTls => f.write_str("not a TLS client"),
            TlsError::PlainHttp => f.write_str("plain HTTP request on the TLS port"),
            TlsError::Closed(None) => f.write_str("client closed during the TLS handshake"),
            TlsError::Closed(Some(e)) => write!(f, "TLS handshake: {e}"),
            TlsError::Tls(e) => write!(f, "TLS handshake: {e}"),
            TlsError::Ktls(e) => write!(f, "kernel TLS setup: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What a handshake's outcome adds to the worker's TLS counters.
impl TlsStats {
    fn failed(&self, error: &TlsError) {
        let counter = match error {
            TlsError::Timeout => &self.handshake_timeouts,
            TlsError::NotTls => &self.handshakes_not_tls,
            TlsError::PlainHttp => &self.handshakes_plain_http,
            TlsError::Closed(_) => &self.handshakes_closed,
            TlsError::Tls(rustls::Error::PeerIncompatible(_))
            | TlsError::Tls(rustls::Error::NoApplicationProtocol) => &self.handshakes_incompatible,
            TlsError::Tls(rustls::Error::AlertReceived(_)) => &self.handshakes_peer_alert,
            TlsError::Tls(_) => &self.handshakes_failed_other,
            TlsError::Ktls(_) => &self.ktls_failures,
        };
        counter.add(1);
    }

    fn completed(&self, accepted: &Accepted) {
        if accepted.resumed {
            self.handshakes_resumed.add(1);
        } else {
            self.handshakes_full.add(1);
        }
        match accepted.alpn {
            Alpn::H2 => self.alpn_h2.add(1),
            Alpn::Http1 => self.alpn_http1.add(1),
        }
        if accepted.version == ProtocolVersion::TLSv1_2 {
            self.handshakes_tls12.add(1);
        }
        if accepted.stream.is_kernel_tls() {
            self.ktls_connections.add(1);
        }
    }
}

/// Runs the TLS handshake on an accepted connection, within the handshake timeout, with the
/// certificate current at this moment. Every outcome is counted in `stats`; on error the
/// connection is closed (dropping it) after any alert or 400 answer was sent.
pub async fn accept(
    stream: TcpStream,
    acceptor: &Acceptor,
    stats: &TlsStats,
) -> Result<Accepted, TlsError> {
    let result = match monoio::time::timeout(
        acceptor.handshake_timeout,
        handshake(stream, acceptor, stats),
    )
    .await
    {
        Ok(result) => result,
        // Dropping the handshake cancels its socket operation and closes the socket.
        Err(_) => Err(TlsError::Timeout),
    };
    match &result {
        Ok(accepted) => stats.completed(accepted),
        Err(error) => {
            stats.failed(error);
            tracing::debug!(%error, "TLS handshake failed");
        }
    }
    result
}

async fn handshake(
    stream: TcpStream,
    acceptor: &Acceptor,
    stats: &TlsStats,
) -> Result<Accepted, TlsError> {
    let want_ktls = acceptor.ktls && ktls_ulp(&stream, stats);
    let conn = ServerConnection::new(acceptor.configs.current()).map_err(TlsError::Tls)?;
    let mut tls = Box::new(UserspaceTls::new(stream, conn, want_ktls));
    match tls.handshake().await {
        Ok(()) => {}
        Err(HandshakeError::PlainHttp) => {
            let _ = tls.io.write_all(stream::PLAIN_HTTP_RESPONSE).await;
            return Err(TlsError::PlainHttp);
        }
        Err(HandshakeError::NotTls) => return Err(TlsError::NotTls),
        Err(HandshakeError::Closed) => return Err(TlsError::Closed(None)),
        Err(HandshakeError::Io(e)) => return Err(TlsError::Closed(Some(e))),
        Err(HandshakeError::Tls(e)) => return Err(TlsError::Tls(e)),
    }
    let alpn = match tls.conn.alpn_protocol() {
        Some(b"h2") => Alpn::H2,
        _ => Alpn::Http1,
    };
    let version = tls
        .conn
        .protocol_version()
        .unwrap_or(ProtocolVersion::TLSv1_3);
    let resumed = tls.conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let stream = if want_ktls {
        into_kernel(tls, stats)?
    } else {
        TlsStream::userspace(tls)
    };
    Ok(Accepted {
        stream,
        alpn,
        version,
        resumed,
    })
}

/// Installs the kTLS upper-layer protocol before the handshake, where the kernel may have it.
fn ktls_ulp(stream: &TcpStream, stats: &TlsStats) -> bool {
    if ktls::may_be_available() && ktls::try_install_ulp(stream.as_raw_fd()).is_ok() {
        return true;
    }
    stats.ktls_fallbacks.add(1);
    false
}

/// Hands the record layer to the kernel, or keeps it in userspace when the kernel cannot take
/// this connection's cipher (checked before the secrets leave rustls, which cannot be undone).
fn into_kernel(tls: Box<UserspaceTls>, stats: &TlsStats) -> Result<TlsStream, TlsError> {
    let offloadable = tls.conn.negotiated_cipher_suite().is_some_and(|suite| {
        use rustls::CipherSuite as S;
        matches!(
            suite.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS13_AES_256_GCM_SHA384
                | S::TLS13_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    // Plaintext rustls already holds would be lost to the reader; the record-by-record reads
    // of the handshake leave none, but this is checked rather than assumed.
    let mut tls = tls;
    let holds_plaintext = tls
        .conn
        .process_new_packets()
        .map(|state| state.plaintext_bytes_to_read() > 0)
        .unwrap_or(true);
    if !offloadable || holds_plaintext || !tls.peek_received().is_empty() {
        stats.ktls_fallbacks.add(1);
        return Ok(TlsStream::userspace(tls));
    }
    let version = tls
        .conn
        .protocol_version()
        .unwrap_or(ProtocolVersion::TLSv1_3);
    let UserspaceTls { io, conn, .. } = *tls;
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| TlsError::Ktls(std::io::Error::other(e)))?;
    let fd = io.as_raw_fd();
    for (direction, (seq, secret)) in [
        (ktls::Direction::Transmit, &secrets.tx),
        (ktls::Direction::Receive, &secrets.rx),
    ] {
        let info = ktls::CryptoInfo::new(version, *seq, secret)
            .ok_or_else(|| TlsError::Ktls(std::io::Error::other("cipher not offloadable")))?;
        ktls::set_crypto(fd, direction, &info).map_err(TlsError::Ktls)?;
    }
    Ok(TlsStream::kernel(io))
}
