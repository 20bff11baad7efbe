//! Certificate rotation while calls run, through the real server under both io drivers: a
//! steady stream of calls over HTTPS (HTTP/1.1 with and without ALPN, HTTP/2; on long-lived
//! connections and on a new connection per call) runs while the certificate and key files are
//! replaced, both ways they are in production: rewritten in place, and a Kubernetes Secret
//! mount's `..data` symlink swapped. No call may fail; new connections must be served the new
//! leaf; connections opened before keep theirs and keep working; a bad new file is counted as
//! a reload failure and the certificate in use stays.

mod common;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::certs_for_server::{InPlaceFiles, KeyKind, Leaf, SecretMount, TestCa};
use common::https::{
    h2_over_tls, https, https_roundtrip, peer_leaf, served_leaf, start_tls_proxy, tls_addr,
};
use common::*;
use ringway::server::Server;
use ringway::tls::ConfigHandle;
use rustls::ClientConfig;

const BACKEND: &str = "pod-rotation";

/// How long a phase may wait for the calls to move on, or for a reload to show, before the
/// test fails (a hang, not a timing check).
const PHASE_WAIT: Duration = Duration::from_secs(10);

/// Calls each client must complete in every phase, so each rotation happens with calls in
/// flight on every kind of connection.
const CALLS_PER_PHASE: u64 = 10;

/// One client of the steady load: what it speaks, how many calls it completed, and the leaf of
/// its long-lived connection (when it has one).
struct Client {
    name: &'static str,
    calls: Arc<AtomicU64>,
    first_leaf: Arc<Mutex<Option<Vec<u8>>>>,
    thread: JoinHandle<()>,
}

/// The steady load: clients calling until `stop`; the first failure is kept.
struct Load {
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    clients: Vec<Client>,
}

#[derive(Clone, Copy)]
enum Kind {
    /// One HTTP/1.1 keep-alive connection for every call.
    Http1KeptAlive,
    /// A new HTTP/1.1 connection (resuming its session when it can) per call.
    Http1PerCall,
    /// One HTTP/2 connection for every call.
    Http2KeptOpen,
    /// A new HTTP/2 connection per call.
    Http2PerCall,
}

impl Load {
    fn start(addr: SocketAddr, ca: &TestCa) -> Load {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            failure: Arc::new(Mutex::new(None)),
            clients: Vec::new(),
        };
        let clients: [(&'static str, Kind, Arc<ClientConfig>); 5] = [
            (
                "HTTP/1.1 kept alive, ALPN http/1.1",
                Kind::Http1KeptAlive,
                ca.client_config(&[b"http/1.1"]),
            ),
            (
                "HTTP/1.1 kept alive, no ALPN",
                Kind::Http1KeptAlive,
                ca.client_config(&[]),
            ),
            (
                "HTTP/1.1 per call",
                Kind::Http1PerCall,
                ca.client_config(&[b"http/1.1"]),
            ),
            (
                "HTTP/2 kept open",
                Kind::Http2KeptOpen,
                ca.client_config(&[b"h2"]),
            ),
            (
                "HTTP/2 per call",
                Kind::Http2PerCall,
                ca.client_config(&[b"h2", b"http/1.1"]),
            ),
        ];
        for (name, kind, config) in clients {
            load.spawn(name, kind, addr, config);
        }
        load
    }

    fn spawn(
        &mut self,
        name: &'static str,
        kind: Kind,
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) {
        let calls = Arc::new(AtomicU64::new(0));
        let first_leaf = Arc::new(Mutex::new(None));
        let (stop, failure) = (self.stop.clone(), self.failure.clone());
        let (counted, leaf) = (calls.clone(), first_leaf.clone());
        let thread = std::thread::spawn(move || {
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run_client(kind, addr, &config, &stop, &counted, &leaf)
            }));
            if let Err(panic) = run {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failure
                    .lock()
                    .unwrap()
                    .get_or_insert(format!("{name}: {message}"));
                stop.store(true, Ordering::Relaxed);
            }
        });
        self.clients.push(Client {
            name,
            calls,
            first_leaf,
            thread,
        });
    }

    fn assert_no_failure(&self) {
        if let Some(failure) = self.failure.lock().unwrap().as_ref() {
            panic!("a call failed: {failure}");
        }
    }

    /// Waits until every client completed [`CALLS_PER_PHASE`] more calls.
    fn wait_for_progress(&self, phase: &str) {
        let start: Vec<u64> = self
            .clients
            .iter()
            .map(|c| c.calls.load(Ordering::Relaxed))
            .collect();
        let began = Instant::now();
        loop {
            self.assert_no_failure();
            let behind: Vec<&str> = self
                .clients
                .iter()
                .zip(&start)
                .filter(|(c, s)| c.calls.load(Ordering::Relaxed) < *s + CALLS_PER_PHASE)
                .map(|(c, _)| c.name)
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                began.elapsed() < PHASE_WAIT,
                "{phase}: no progress from {behind:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients; returns each long-lived connection's leaf, by client name.
    fn stop(self) -> Vec<(&'static str, Option<Vec<u8>>)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut leaves = Vec::new();
        for client in self.clients {
            client.thread.join().expect("client thread");
            leaves.push((client.name, client.first_leaf.lock().unwrap().take()));
        }
        if let Some(failure) = self.failure.lock().unwrap().as_ref() {
            panic!("a call failed: {failure}");
        }
        leaves
    }
}

/// One client's calls until `stop`; any failed call panics (caught by [`Load::spawn`]).
fn run_client(
    kind: Kind,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    stop: &AtomicBool,
    calls: &AtomicU64,
    first_leaf: &Mutex<Option<Vec<u8>>>,
) {
    let message = |n: u64| format!("call {n}").into_bytes();
    match kind {
        Kind::Http1KeptAlive => {
            let mut client = https(addr, config);
            *first_leaf.lock().unwrap() = Some(peer_leaf(&client.stream.conn));
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let m = message(n);
                client.write(&grpc_web_request(UNARY, &[], &grpc_frame(&m)));
                assert_echo(&client.read_response(), BACKEND, &[&m]);
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }
        Kind::Http1PerCall => {
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let m = message(n);
                let response =
                    https_roundtrip(addr, config, &grpc_web_request(UNARY, &[], &grpc_frame(&m)));
                assert_echo(&response, BACKEND, &[&m]);
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }
        Kind::Http2KeptOpen | Kind::Http2PerCall => {
            let mut client = h2_over_tls(addr, config);
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if matches!(kind, Kind::Http2PerCall) && n > 0 {
                    client = h2_over_tls(addr, config);
                }
                let m = message(n);
                let response = client.grpc_unary(UNARY, &[], &m);
                assert_eq!(response.messages(), [Bytes::from(m)], "{response:?}");
                assert_eq!(response.trailer("grpc-status"), Some("0"), "{response:?}");
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How the files change under the proxy.
trait Rotation {
    fn cert(&self) -> std::path::PathBuf;
    fn key(&self) -> std::path::PathBuf;
    fn install(&mut self, leaf: &Leaf);
    fn install_bytes(&mut self, cert: &[u8], key: &[u8]);
}

impl Rotation for InPlaceFiles {
    fn cert(&self) -> std::path::PathBuf {
        self.cert.clone()
    }
    fn key(&self) -> std::path::PathBuf {
        self.key.clone()
    }
    fn install(&mut self, leaf: &Leaf) {
        self.rewrite(leaf);
    }
    fn install_bytes(&mut self, cert: &[u8], key: &[u8]) {
        self.rewrite_bytes(cert, key);
    }
}

impl Rotation for SecretMount {
    fn cert(&self) -> std::path::PathBuf {
        SecretMount::cert(self)
    }
    fn key(&self) -> std::path::PathBuf {
        SecretMount::key(self)
    }
    fn install(&mut self, leaf: &Leaf) {
        self.publish(leaf);
    }
    fn install_bytes(&mut self, cert: &[u8], key: &[u8]) {
        self.publish_bytes(cert, key);
    }
}

fn reloads(handle: &ConfigHandle) -> (u64, u64) {
    let stats = handle.stats();
    (
        stats.reloads.load(Ordering::Relaxed),
        stats.reload_failures.load(Ordering::Relaxed),
    )
}

/// Waits until a new connection is served `leaf`.
fn wait_for_leaf(addr: SocketAddr, ca: &TestCa, leaf: &Leaf, what: &str) {
    let config = ca.client_config(&[]);
    let began = Instant::now();
    while served_leaf(addr, &config) != leaf.der.as_ref() {
        assert!(began.elapsed() < PHASE_WAIT, "{what}: never served");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Rotate first → second, then a bad file, then → third, all under load.
fn rotate_under_load(driver: &str, ca: &TestCa, rotation: &mut dyn Rotation, leaves: [&Leaf; 3]) {
    let [first, second, third] = leaves;
    let backend = start_backend(BACKEND);
    let proxy: Server = start_tls_proxy(
        driver,
        &[backend.local_addr()],
        &rotation.cert(),
        &rotation.key(),
        &[],
    );
    let addr = tls_addr(&proxy);
    let handle = proxy.view().tls.expect("a TLS listener");
    assert_eq!(
        served_leaf(addr, &ca.client_config(&[])),
        first.der.as_ref()
    );
    let load = Load::start(addr, ca);
    load.wait_for_progress("before the rotation");

    rotation.install(second);
    wait_for_leaf(addr, ca, second, "the second certificate");
    assert!(reloads(&handle).0 >= 1);
    load.wait_for_progress("after the rotation");

    // A bad renewal: counted, and the second certificate stays.
    rotation.install_bytes(b"not a certificate", b"not a key");
    let began = Instant::now();
    while reloads(&handle).1 == 0 {
        load.assert_no_failure();
        assert!(began.elapsed() < PHASE_WAIT, "the bad file was not counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(reloads(&handle).1, 1);
    assert_eq!(
        served_leaf(addr, &ca.client_config(&[])),
        second.der.as_ref()
    );
    load.wait_for_progress("after the bad file");

    rotation.install(third);
    wait_for_leaf(addr, ca, third, "the third certificate");
    load.wait_for_progress("after the second rotation");
    assert_eq!(
        reloads(&handle).1,
        1,
        "a good rotation counted as a failure"
    );

    // The connections opened before the first rotation kept their certificate throughout.
    for (name, leaf) in load.stop() {
        if let Some(leaf) = leaf {
            assert_eq!(leaf, first.der.as_ref(), "{name}");
        }
    }
    let stats = common::https::worker_stats(&proxy);
    let totals = ringway::stats::Totals::sum([&*stats]);
    eprintln!("{} calls during the rotations, all OK", totals.calls());
    assert_eq!(totals.calls(), totals.calls_by_status[0], "{totals:?}");
    assert_eq!(stats.tls.handshakes_failed_other.get(), 0);
    assert_eq!(stats.tls.handshakes_peer_alert.get(), 0);
}

#[test]
fn files_rewritten_in_place_rotate_the_certificate_without_failing_a_call() {
    let ca = TestCa::new("rotate-in-place");
    // ECDSA to RSA and back: a renewal may change the key type.
    let leaves = [
        ca.leaf("first"),
        ca.leaf_of("second", KeyKind::Rsa2048),
        ca.leaf("third"),
    ];
    for_each_driver(|driver| {
        let mut files = InPlaceFiles::new(&ca.dir.join(driver), &leaves[0]);
        rotate_under_load(
            driver,
            &ca,
            &mut files,
            [&leaves[0], &leaves[1], &leaves[2]],
        );
    });
}

#[test]
fn a_secret_mount_swap_rotates_the_certificate_without_failing_a_call() {
    let ca = TestCa::new("rotate-secret");
    // ECDSA to RSA and back: a renewal may change the key type.
    let leaves = [
        ca.leaf("first"),
        ca.leaf_of("second", KeyKind::Rsa2048),
        ca.leaf("third"),
    ];
    for_each_driver(|driver| {
        let mut mount = SecretMount::new(ca.dir.join(driver), &leaves[0]);
        rotate_under_load(
            driver,
            &ca,
            &mut mount,
            [&leaves[0], &leaves[1], &leaves[2]],
        );
    });
}
