//! Backends that accept TCP connections but never answer: a listening socket that never reads,
//! and a real backend process stopped with SIGSTOP. Calls must complete on the other endpoint,
//! and none may hang: a connection joins the pool only once the server's HTTP/2 SETTINGS
//! arrived (`--upstream-handshake-timeout-ms`), and a connection that stops answering keepalive
//! PINGs ejects its endpoint.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// The environment variable that turns this test binary into a backend process.
const CHILD_LISTEN: &str = "RINGWAY_TEST_CHILD_BACKEND_LISTEN";

/// One unary call on a fresh connection: (grpc-status, x-backend).
fn call(proxy: SocketAddr) -> (u32, Option<String>) {
    let response = roundtrip(proxy, &grpc_web_request(UNARY, &[], &grpc_frame(b"hi")));
    (
        response.grpc_status().expect("a grpc-status"),
        response.header("x-backend").map(str::to_owned),
    )
}

/// A listening socket that accepts connections, holds them open, and never reads or writes.
struct SilentListener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentListener {
    fn start(listen: &str) -> SilentListener {
        let listener = TcpListener::bind(listen).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SilentListener {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Calls on a proxy in front of a silent listener and a live backend all complete on the live
/// one, the ones that arrive while the first connect to the silent listener waits for its
/// SETTINGS included (they go elsewhere when it times out).
#[test]
fn calls_go_around_a_backend_that_accepts_but_never_answers() {
    for_each_driver(|driver| {
        let silent = SilentListener::start("127.0.0.2:0");
        let live = start_backend_with("127.0.0.3:0", "live", |_| {});
        let proxy = start_proxy(driver, &[silent.addr, live.local_addr()], &[]);
        let addr = proxy.local_addr();
        // A burst at once, while the warm connect to the silent listener is still waiting.
        let (done, results) = mpsc::channel();
        for _ in 0..8 {
            let done = done.clone();
            std::thread::spawn(move || {
                let _ = done.send(call(addr));
            });
        }
        for _ in 0..8 {
            let result = results.recv_timeout(WAIT * 2).expect("no call hangs");
            assert_eq!(result, (0, Some("live".into())));
        }
        for i in 0..20 {
            assert_eq!(call(addr), (0, Some("live".into())), "call {i}");
        }
        assert!(silent.accepted.load(Ordering::Relaxed) >= 1);
        assert!(totals(&proxy).upstream_handshake_timeouts >= 1);
        assert_eq!(live.stats().calls_started, 28);
    });
}

/// Not a test: the entry point of the backend process the tests below start, SIGSTOP and
/// SIGCONT. Run as this binary with `--exact backend_child_process --ignored` and
/// `RINGWAY_TEST_CHILD_BACKEND_LISTEN` set; it prints the address it listens on and serves
/// until its stdin closes (the test ended, or died).
#[test]
#[ignore = "the backend process of stopped_backend tests, started by them"]
fn backend_child_process() {
    let Ok(listen) = std::env::var(CHILD_LISTEN) else {
        eprintln!("backend_child_process runs only as a child of the stopped_backend tests");
        return;
    };
    let backend = start_backend_with(&listen, "stopped", |_| {});
    println!("LISTENING {}", backend.local_addr());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// A backend in a process of its own, which the test can stop and continue like a pod whose
/// process is frozen (SIGSTOP, a debugger, a cgroup freeze, a node in trouble).
struct BackendProcess {
    child: Child,
    addr: SocketAddr,
    _stdin: ChildStdin,
}

impl BackendProcess {
    fn start(listen: &str) -> BackendProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "backend_child_process",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_LISTEN, listen)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the backend process starts");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the backend process prints its address")
                .unwrap();
            // libtest may print the test's name on the same line first.
            if let Some((_, addr)) = line.split_once("LISTENING ") {
                break addr.trim().parse().unwrap();
            }
        };
        // Keep draining its output (libtest's lines), so the child never blocks on a pipe.
        std::thread::spawn(move || lines.for_each(drop));
        BackendProcess {
            child,
            addr,
            _stdin: stdin,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let result = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({signal})");
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend process stopped before the proxy ever reached it: the kernel still accepts
/// connections for it, but no SETTINGS come. Calls complete on the other endpoint; once the
/// process continues, housekeeping's probe finds it and it takes calls again. Stopped once
/// more while the proxy holds a connection to it, the connection's keepalive PING goes
/// unanswered and the endpoint is ejected: calls stay on the live endpoint, and the ones that
/// were already sent to the stopped process end with UNAVAILABLE instead of hanging.
#[test]
fn stopped_backend_process_costs_no_hung_call() {
    for_each_driver(|driver| {
        let stopped = BackendProcess::start("127.0.0.2:0");
        stopped.signal(libc::SIGSTOP);
        let live = start_backend_with("127.0.0.3:0", "live", |_| {});
        let flags = [
            "--h2-keepalive-interval-ms",
            "200",
            "--h2-keepalive-timeout-ms",
            "500",
            "--outlier-base-ejection-ms",
            "60000",
            "--reconnect-backoff-max-ms",
            "200",
        ];
        let proxy = start_proxy(driver, &[stopped.addr, live.local_addr()], &flags);
        let addr = proxy.local_addr();
        for i in 0..20 {
            assert_eq!(call(addr), (0, Some("live".into())), "call {i}");
        }
        assert!(totals(&proxy).upstream_handshake_timeouts >= 1);

        stopped.signal(libc::SIGCONT);
        assert!(
            wait_until(WAIT, || call(addr).1.as_deref() == Some("stopped")),
            "the continued process never gets a call again"
        );

        stopped.signal(libc::SIGSTOP);
        let mut statuses = Vec::new();
        assert!(
            wait_until(WAIT, || {
                let (status, _) = call(addr);
                statuses.push(status);
                totals(&proxy).upstream_keepalive_timeouts >= 1
            }),
            "no keepalive timeout: {statuses:?}"
        );
        assert!(statuses.iter().all(|s| [0, 14].contains(s)), "{statuses:?}");
        for i in 0..20 {
            assert_eq!(
                call(addr),
                (0, Some("live".into())),
                "call {i} after the ejection"
            );
        }
        let ejected = |view: &ringway::server::ServerView| {
            view.endpoint_stats[0]
                .load()
                .iter()
                .any(|e| e.addr == stopped.addr && e.ejected)
        };
        assert!(wait_until(WAIT, || ejected(&proxy.view())));
    });
}
