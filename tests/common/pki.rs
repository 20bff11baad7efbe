//! Test certificates made at run time with `rcgen`, so no key is ever committed: a test CA and
//! leaves (ECDSA P-256 or RSA 2048) for `localhost` and `127.0.0.1`, written as the PEM files
//! ringway's `--tls-cert-file`/`--tls-key-file` read, plus what clients need to trust them
//! narrowly: the CA as a PEM file or a rustls root store, and the leaf's SPKI pin for Chromium's
//! `--ignore-certificate-errors-spki-list`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use rcgen::PublicKeyData;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A test CA, and a temporary directory (removed on drop) holding the files made from it.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: CertificateDer<'static>,
    ca_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A leaf certificate: its chain file (leaf then CA), its PKCS#8 key file, and its DER.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    /// The DER `SubjectPublicKeyInfo` of the leaf's key.
    pub spki: Vec<u8>,
}

impl Leaf {
    /// Base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo: the pin format of Chromium's
    /// `--ignore-certificate-errors-spki-list` (and of HPKP), which trusts this one key only.
    pub fn spki_sha256_base64(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    }
}

/// A fresh directory under the system's temporary directory, unique per process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringway-tls-{}-{}-{}",
        std::process::id(),
        name,
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringway test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().der().clone();
        TestPki {
            dir: temp_dir(name),
            ca,
            ca_issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for localhost and 127.0.0.1, written as `<name>.crt` (leaf + CA) and `<name>.key`
    /// (PKCS#8).
    pub fn leaf(&self, name: &str, kind: KeyKind) -> Leaf {
        let key = match kind {
            KeyKind::EcdsaP256 => rcgen::KeyPair::generate().unwrap(),
            KeyKind::Rsa2048 => rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(),
        };
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("ringway test {name}"));
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        let chain = format!("{}{}", cert.pem(), pem_of(&self.ca));
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().clone(),
            spki: key.subject_public_key_info(),
        };
        std::fs::write(&leaf.cert, chain).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    /// A client trusting only this CA, offering `alpn` (none when empty), TLS 1.3 and 1.2.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        self.client_config_for(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    pub fn client_config_for(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The CA certificate as a PEM file (`ca.pem` in the directory), for clients that take a
    /// CA bundle (Node's `ca` option, grpcio's root certificates, openssl's `-CAfile`).
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.join("ca.pem");
        std::fs::write(&path, pem_of(&self.ca)).unwrap();
        path
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn pem_of(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// `--tls-listen 127.0.0.1:0` with `leaf`'s files: the flags that give a proxy started with
/// `start_proxy` an HTTPS listener (read its address with `Server::tls_local_addr`).
pub fn tls_flags(leaf: &Leaf) -> Vec<String> {
    vec![
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert-file".into(),
        path_text(&leaf.cert),
        "--tls-key-file".into(),
        path_text(&leaf.key),
    ]
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("temporary paths are UTF-8").to_owned()
}
