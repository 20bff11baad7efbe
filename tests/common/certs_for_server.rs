//! Certificates for the real server's TLS listener: a test CA and leaves for `localhost` and
//! `127.0.0.1`, made at run time in a temporary directory (no key is committed) and written as
//! the PEM files `--tls-cert-file` and `--tls-key-file` read; and the two ways those files
//! change under a running proxy (rewritten in place, or a Kubernetes Secret mount's `..data`
//! symlink swapped).
//!
//! The CA and leaves are `pki.rs`'s; this adds the flag list for a proxy's TLS listener and the
//! rotations.

use std::path::{Path, PathBuf};

use super::pki::TestPki;
pub use super::pki::{KeyKind, Leaf};

/// A test CA in its own temporary directory (removed on drop), and the leaves it signs: the
/// CA of `pki.rs`, with ECDSA leaves by default and the CA file written at once.
pub struct TestCa(TestPki);

impl std::ops::Deref for TestCa {
    type Target = TestPki;
    fn deref(&self) -> &TestPki {
        &self.0
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let pki = TestPki::new(name);
        pki.ca_file();
        TestCa(pki)
    }

    /// The CA certificate as a PEM file: what grpcio's `--tls-ca` and curl's `--cacert` take.
    pub fn ca_file(&self) -> PathBuf {
        self.0.dir.join("ca.pem")
    }

    /// An ECDSA P-256 leaf for localhost and 127.0.0.1, written as `<name>.crt` and `<name>.key`.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.0.leaf(name, KeyKind::EcdsaP256)
    }

    pub fn leaf_of(&self, name: &str, kind: KeyKind) -> Leaf {
        self.0.leaf(name, kind)
    }
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
