//! Keeps the served certificate current: a thread polls the certificate and key files and, when
//! they change, builds a new `ServerConfig` and publishes it lock-free, so new connections get
//! the new certificate while open ones keep the configuration they started with.
//!
//! Polling, not inotify: a Kubernetes Secret volume changes by an atomic swap of its `..data`
//! symlink to a new timestamped directory (the files' own paths never change, which an inotify
//! watch on them misses), and cert-manager renewals arrive that way; a tool that rewrites a file
//! in place changes its mtime or size. Both show in the metadata polled here: the inode, mtime
//! and size of each file (following links) and the target of each symlink on the way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use super::certs::{self, CertError, SessionState, SniCounters};

/// After a change is seen, a failed load is retried this long later before it is counted: the
/// certificate and the key are two files, and a tool that rewrites them one after the other is
/// caught between the two by a poll now and then.
pub const SETTLE_MS: u64 = 200;

/// What identifies the content of one file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    device: u64,
    modified: Option<SystemTime>,
    bytes: u64,
    /// Targets of the symlinks on the path (`tls.crt` → `..data/tls.crt`, `..data` →
    /// `..2026_01_01_…`), in order.
    links: Vec<PathBuf>,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mut links = Vec::new();
    if let Ok(target) = std::fs::read_link(path) {
        links.push(target);
    }
    // A Secret volume's data directory link, next to the file.
    if let Some(dir) = path.parent() {
        if let Ok(target) = std::fs::read_link(dir.join("..data")) {
            links.push(target);
        }
    }
    Some(FileStamp {
        inode: meta.ino(),
        device: meta.dev(),
        modified: meta.modified().ok(),
        bytes: meta.len(),
        links,
    })
}

/// Reload counters, process-wide (one reloader thread writes them).
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// New certificates published after a change.
    pub reloads: AtomicU64,
    /// Changes whose files could not be loaded (the previous certificate stays).
    pub reload_failures: AtomicU64,
}

/// What the reloader publishes and how it loads it.
struct Shared {
    current: ArcSwap<ServerConfig>,
    cert_file: PathBuf,
    key_file: PathBuf,
    sessions: SessionState,
    sni: Arc<SniCounters>,
    secret_extraction: bool,
    stats: ReloadStats,
}

impl Shared {
    fn load(&self) -> Result<ServerConfig, CertError> {
        certs::load_server_config(
            &self.cert_file,
            &self.key_file,
            &self.sessions,
            self.sni.clone(),
            self.secret_extraction,
        )
    }

    fn stamps(&self) -> (Option<FileStamp>, Option<FileStamp>) {
        (stamp(&self.cert_file), stamp(&self.key_file))
    }
}

/// A cheap handle on the current configuration, one per worker.
#[derive(Clone)]
pub struct ConfigHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigHandle")
            .field("cert_file", &self.shared.cert_file)
            .finish()
    }
}

impl ConfigHandle {
    /// The configuration a new connection uses: an atomic load, no lock.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.shared.current.load_full()
    }

    pub fn stats(&self) -> &ReloadStats {
        &self.shared.stats
    }

    /// How many handshakes named (by SNI) a host the certificate does not cover.
    pub fn sni_unmatched(&self) -> u64 {
        self.shared.sni.unmatched.load(Ordering::Relaxed)
    }
}

/// Owns the polling thread; dropping it stops the thread.
pub struct Reloader {
    handle: ConfigHandle,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Reloader {
    /// Loads the files (an error names the file and what is wrong) and starts polling them
    /// every `interval`.
    pub fn start(
        cert_file: &Path,
        key_file: &Path,
        secret_extraction: bool,
        interval: Duration,
    ) -> Result<Reloader, CertError> {
        let sessions = SessionState::new()?;
        let sni = Arc::new(SniCounters::default());
        let stamps_before = (stamp(cert_file), stamp(key_file));
        let first = certs::load_server_config(
            cert_file,
            key_file,
            &sessions,
            sni.clone(),
            secret_extraction,
        )?;
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(first),
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            sessions,
            sni,
            secret_extraction,
            stats: ReloadStats::default(),
        });
        let (stop, stopped) = mpsc::channel();
        let poller = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || poll(&poller, stamps_before, interval, &stopped))
            .map_err(|error| CertError::Read {
                path: cert_file.to_owned(),
                error,
            })?;
        Ok(Reloader {
            handle: ConfigHandle { shared },
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> ConfigHandle {
        self.handle.clone()
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.handle.current()
    }

    pub fn stats(&self) -> &ReloadStats {
        self.handle.stats()
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Stamps = (Option<FileStamp>, Option<FileStamp>);

fn poll(shared: &Shared, mut seen: Stamps, interval: Duration, stopped: &mpsc::Receiver<()>) {
    // Every message or a dropped sender means stop; only the timeout means poll.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        let now = shared.stamps();
        if now == seen {
            continue;
        }
        seen = reload(shared, now, stopped);
    }
}

/// Loads the changed files and publishes them; returns the stamps the result belongs to.
fn reload(shared: &Shared, mut stamps: Stamps, stopped: &mpsc::Receiver<()>) -> Stamps {
    loop {
        match shared.load() {
            Ok(config) => {
                shared.current.store(Arc::new(config));
                shared.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    cert = %shared.cert_file.display(),
                    key = %shared.key_file.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                return stamps;
            }
            Err(error) => {
                // Wait for a half-written pair to be completed before calling it bad.
                if stopped.recv_timeout(Duration::from_millis(SETTLE_MS))
                    != Err(mpsc::RecvTimeoutError::Timeout)
                {
                    return stamps;
                }
                let settled = shared.stamps();
                if settled != stamps {
                    stamps = settled;
                    continue;
                }
                shared.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    "TLS certificate change not loaded; the previous certificate stays in use"
                );
                return stamps;
            }
        }
    }
}
