//! Certificates for the real server's TLS listener: a test CA and leaves for `localhost` and
//! `127.0.0.1`, made at run time in a temporary directory (no key is committed) and written as
//! the PEM files `--tls-cert-file` and `--tls-key-file` read; and the two ways those files
//! change under a running proxy (rewritten in place, or a Kubernetes Secret mount's `..data`
//! symlink swapped).
//!
//! A compact copy of what tests/tls.rs's `TestPki` does, kept separate because `TestPki` is
//! moving to tests/common/pki.rs in another branch; the two are to be deduplicated at merge.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A test CA in its own temporary directory (removed on drop), and the leaves it signs.
pub struct TestCa {
    pub dir: PathBuf,
    ca: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A leaf certificate's files and its DER, to compare with what a client was served.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The chain, leaf first then the CA, as a Secret's `tls.crt` holds it.
    pub cert: PathBuf,
    /// The PKCS#8 key.
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringway-certs-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("ringway test CA {name}"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().der().clone();
        let test_ca = TestCa {
            dir,
            ca,
            issuer: rcgen::Issuer::new(params, key),
        };
        std::fs::write(test_ca.ca_file(), pem_of(&test_ca.ca)).unwrap();
        test_ca
    }

    /// The CA certificate as a PEM file: what grpcio's `--tls-ca` and curl's `--cacert` take.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// An ECDSA P-256 leaf for localhost and 127.0.0.1, written as `<name>.crt` and `<name>.key`.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_of(name, KeyKind::EcdsaP256)
    }

    pub fn leaf_of(&self, name: &str, kind: KeyKind) -> Leaf {
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
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&leaf.cert, format!("{}{}", cert.pem(), pem_of(&self.ca))).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// Trust anchors holding only this CA.
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
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The flags that serve `cert` and `key` on a TLS listener on 127.0.0.1, with a short reload
/// interval (so rotations are picked up quickly). The handshake timeout stays at its default,
/// so a loaded machine cannot fail a test's handshake; the slow-client tests set their own.
pub fn tls_flags(cert: &Path, key: &Path) -> Vec<String> {
    [
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-reload-interval-ms",
        "50",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A certificate and key at fixed paths, rewritten in place (truncated and written again, key
/// first), as a tool that writes the files itself does.
pub struct InPlaceFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl InPlaceFiles {
    pub fn new(dir: &Path, leaf: &Leaf) -> InPlaceFiles {
        std::fs::create_dir_all(dir).unwrap();
        let files = InPlaceFiles {
            cert: dir.join("live.crt"),
            key: dir.join("live.key"),
        };
        files.rewrite(leaf);
        files
    }

    pub fn rewrite(&self, leaf: &Leaf) {
        self.rewrite_bytes(
            &std::fs::read(&leaf.cert).unwrap(),
            &std::fs::read(&leaf.key).unwrap(),
        );
    }

    pub fn rewrite_bytes(&self, cert: &[u8], key: &[u8]) {
        std::fs::write(&self.key, key).unwrap();
        std::fs::write(&self.cert, cert).unwrap();
    }
}

/// A directory laid out as the kubelet mounts a Secret: `tls.crt` → `..data/tls.crt`, `..data`
/// → a timestamped directory, swapped atomically by renaming a new link over `..data`.
pub struct SecretMount {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretMount {
    pub fn new(dir: PathBuf, leaf: &Leaf) -> SecretMount {
        std::fs::create_dir_all(&dir).unwrap();
        let mut mount = SecretMount { dir, generation: 0 };
        mount.publish(leaf);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.join(name)).unwrap();
        }
        mount
    }

    pub fn publish(&mut self, leaf: &Leaf) {
        self.publish_bytes(
            &std::fs::read(&leaf.cert).unwrap(),
            &std::fs::read(&leaf.key).unwrap(),
        );
    }

    /// A new timestamped directory with both files, then the `..data` swap; the previous
    /// directory is removed afterwards, as the kubelet does.
    pub fn publish_bytes(&mut self, cert: &[u8], key: &[u8]) {
        self.generation += 1;
        let version = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation,
            std::process::id()
        );
        let data = self.dir.join(&version);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let previous = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(previous) = previous {
            let _ = std::fs::remove_dir_all(self.dir.join(previous));
        }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}
