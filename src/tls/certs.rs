//! Loads a PEM certificate chain and private key, as a Kubernetes `kubernetes.io/tls` Secret
//! mounts them (`tls.crt`, `tls.key`), and builds the `rustls::ServerConfig` that serves them.
//!
//! Every error names the file and what is wrong with it, because the operator reading it at
//! start-up (or in the log after a bad renewal) has nothing else to go on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Largest certificate or key file read. A chain of a leaf and two intermediates in PEM is about
/// 6 KiB; anything past this is not a certificate file (a wrong mount, a log file).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// ALPN protocols offered, in the server's order of preference. A client that offers none of
/// them gets a `no_application_protocol` alert (RFC 7301); one that offers no ALPN at all gets
/// HTTP/1.1.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What went wrong reading the certificate or key; the file is always named.
#[derive(Debug)]
pub enum CertError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    TooLarge {
        path: PathBuf,
        bytes: u64,
    },
    Pem {
        path: PathBuf,
        what: String,
    },
    NoCertificate {
        path: PathBuf,
    },
    NoKey {
        path: PathBuf,
    },
    /// The key's type or curve is not one the crypto provider can sign with.
    UnsupportedKey {
        path: PathBuf,
        error: rustls::Error,
    },
    /// The key is not the one the leaf certificate was issued for.
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
    },
    /// The leaf certificate cannot be parsed as X.509.
    BadCertificate {
        path: PathBuf,
        error: String,
    },
    Config(rustls::Error),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read { path, error } => write!(f, "{}: cannot read: {error}", path.display()),
            CertError::TooLarge { path, bytes } => write!(
                f,
                "{}: {bytes} bytes, more than the {PEM_FILE_BYTES_MAX} a PEM file may have",
                path.display()
            ),
            CertError::Pem { path, what } => write!(f, "{}: not valid PEM: {what}", path.display()),
            CertError::NoCertificate { path } => write!(
                f,
                "{}: no CERTIFICATE block (expected a PEM chain, leaf first)",
                path.display()
            ),
            CertError::NoKey { path } => write!(
                f,
                "{}: no private key block (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)",
                path.display()
            ),
            CertError::UnsupportedKey { path, error } => {
                write!(f, "{}: unsupported private key: {error}", path.display())
            }
            CertError::KeyMismatch { cert, key } => write!(
                f,
                "{}: the private key does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            CertError::BadCertificate { path, error } => {
                write!(f, "{}: leaf certificate is not valid X.509: {error}", path.display())
            }
            CertError::Config(error) => write!(f, "TLS configuration: {error}"),
        }
    }
}

impl std::error::Error for CertError {}

/// Reads a file that must be small, naming it in the error.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, CertError> {
    let read_error = |error| CertError::Read {
        path: path.to_owned(),
        error,
    };
    let bytes = std::fs::metadata(path).map_err(read_error)?.len();
    if bytes > PEM_FILE_BYTES_MAX {
        return Err(CertError::TooLarge {
            path: path.to_owned(),
            bytes,
        });
    }
    std::fs::read(path).map_err(read_error)
}

fn pem_error(path: &Path, error: pem::Error) -> CertError {
    CertError::Pem {
        path: path.to_owned(),
        what: error.to_string(),
    }
}

/// The certificate chain of a PEM file, leaf first.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = read_pem_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key of a PEM file: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
/// PKCS#1 (`RSA PRIVATE KEY`), which is what cert-manager writes for each `privateKey.encoding`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoKey {
            path: path.to_owned(),
        },
        e => pem_error(path, e),
    })
}

/// Loads the chain and key and checks that they belong together.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let chain = load_chain(cert_file)?;
    let key = load_key(key_file)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| CertError::UnsupportedKey {
            path: key_file.to_owned(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch {
                cert: cert_file.to_owned(),
                key: key_file.to_owned(),
            })
        }
        // The provider cannot derive the public key of this key type to compare: serve it, the
        // handshake's signature check is the client's.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(error) => {
            return Err(CertError::BadCertificate {
                path: cert_file.to_owned(),
                error: error.to_string(),
            })
        }
    }
    // Parse the leaf once here so a broken one fails the load, not every handshake.
    webpki::EndEntityCert::try_from(certified.end_entity_cert().map_err(CertError::Config)?)
        .map_err(|e| CertError::BadCertificate {
            path: cert_file.to_owned(),
            error: e.to_string(),
        })?;
    Ok(certified)
}

/// State that outlives a certificate reload, so that a renewal does not invalidate every session
/// ticket and cached session: connections resumed after a reload stay cheap.
#[derive(Clone)]
pub struct SessionState {
    pub ticketer: Arc<dyn ProducesTickets>,
    pub cache: Arc<dyn StoresServerSessions + Send + Sync>,
}

impl fmt::Debug for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionState")
    }
}

/// TLS 1.2 session IDs kept for clients that do not use tickets (a few hundred bytes each).
pub const SESSION_CACHE_ENTRIES: usize = 1024;

impl SessionState {
    pub fn new() -> Result<SessionState, CertError> {
        Ok(SessionState {
            // Rotates its key every 6 hours and accepts the previous one, so tickets live 6 to
            // 12 hours.
            ticketer: super::provider::ticketer().map_err(CertError::Config)?,
            cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        })
    }
}

/// Which SNI the served certificate covers, counted so an operator can see clients using a name
/// the certificate does not cover (they fail their own check after the handshake).
#[derive(Debug, Default)]
pub struct SniCounters {
    pub unmatched: std::sync::atomic::AtomicU64,
}

/// Serves the one certificate to every client. A client whose SNI the certificate does not cover
/// still gets it, as Envoy and nginx serve their default certificate: the client then rejects
/// it with an alert, which is a clearer failure than a handshake refused before any certificate
/// was seen. The mismatch is counted.
#[derive(Debug)]
struct SingleCert {
    key: Arc<CertifiedKey>,
    sni: Arc<SniCounters>,
}

impl SingleCert {
    fn covers(&self, sni: &str) -> bool {
        let Ok(name) = DnsName::try_from(sni) else {
            return false;
        };
        let Ok(leaf) = self.key.end_entity_cert() else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .and_then(|cert| cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name)))
            .is_ok()
    }
}

impl ResolvesServerCert for SingleCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            if !self.covers(sni) {
                self.sni
                    .unmatched
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Some(self.key.clone())
    }
}

/// Builds the server configuration for one certificate: TLS 1.3 and 1.2, ALPN `h2` and
/// `http/1.1`, session tickets on, and secret extraction on when kernel TLS may be used.
pub fn server_config(
    key: CertifiedKey,
    sessions: &SessionState,
    sni: Arc<SniCounters>,
    secret_extraction: bool,
) -> Result<ServerConfig, CertError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(super::provider::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(CertError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCert {
            key: Arc::new(key),
            sni,
        }));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    // The provider's order (AES-128-GCM first), not the client's: see `provider`.
    config.ignore_client_order = true;
    config.ticketer = sessions.ticketer.clone();
    config.session_storage = sessions.cache.clone();
    config.enable_secret_extraction = secret_extraction;
    Ok(config)
}

/// Loads the files and builds a configuration: what start-up and every reload do.
pub fn load_server_config(
    cert_file: &Path,
    key_file: &Path,
    sessions: &SessionState,
    sni: Arc<SniCounters>,
    secret_extraction: bool,
) -> Result<ServerConfig, CertError> {
    let key = load_certified_key(cert_file, key_file, &super::provider::provider())?;
    server_config(key, sessions, sni, secret_extraction)
}
