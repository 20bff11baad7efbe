//! The drain, end to end on the real binary: SIGTERM while clients call over keep-alive
//! connections and a slow call is in flight. Readiness fails at once, serving goes on through
//! the drain delay, keep-alive clients are told `Connection: close`, the slow call finishes, no
//! call fails, and the process exits 0.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// The tests here start the real binary with two workers, clients and backends, and signal
/// it; run one at a time, so that one test's load does not starve another's timers (a drain
/// grace or an admin deadline missed under a loaded 2-core machine is not what they test).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn admin_get(admin: SocketAddr, path: &str) -> Option<u16> {
    let mut reader = Reader::new(TcpStream::connect(admin).ok()?);
    reader.write(format!("GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n").as_bytes());
    Some(reader.read_response().status)
}

fn start_ringway(
    driver: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    (delay_ms, timeout_ms): (&str, &str),
) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .args(["--upstream", &upstream.to_string(), "--workers", "2"])
        .args([
            "--io-driver",
            driver,
            "--drain-delay-ms",
            delay_ms,
            "--drain-timeout-ms",
            timeout_ms,
        ])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ringway binary starts");
    Running(child)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    told_to_close: AtomicU64,
}

/// Call over a keep-alive connection until told to close (the drain stopped accepting), until
/// connecting is refused, or until `stop` is set.
fn client(proxy: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let Ok(stream) = TcpStream::connect(proxy) else {
        return;
    };
    stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
    let mut reader = Reader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        reader.write(&grpc_web_request(UNARY, &[], &grpc_frame(b"drain")));
        let response = reader.read_response();
        if response.status == 200 && response.grpc_status() == Some(0) {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("failed call during drain: {response:?}");
        }
        if response.header("connection") == Some("close") {
            tally.told_to_close.fetch_add(1, Ordering::Relaxed);
            // `connection: close`, then the connection really closes.
            reader.assert_closed();
            // Told to close once accepting stopped: like the load balancer in front, which
            // took the pod out during the drain delay, the client goes elsewhere. (A new
            // connection now could race the listeners' close in the kernel: its handshake
            // completed by a listener about to close, then reset.)
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigterm_drains_without_failing_a_call() {
    let _serial = one_at_a_time();
    for_each_driver(|driver| {
        let backend = start_backend("pod");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut ringway =
            start_ringway(driver, listen, admin, backend.local_addr(), ("600", "5000"));
        assert!(
            wait_until(Duration::from_secs(10), || admin_get(admin, "/ready")
                == Some(200)),
            "ringway never became ready"
        );

        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (tally, stop) = (tally.clone(), stop.clone());
                std::thread::spawn(move || client(listen, tally, stop))
            })
            .collect();
        // A call that is still running when accepting stops.
        let slow = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            roundtrip(
                listen,
                &grpc_web_request(UNARY, &[("x-delay-ms", "1500")], &grpc_frame(b"slow")),
            )
        });
        assert!(wait_until(Duration::from_secs(10), || tally
            .ok
            .load(Ordering::Relaxed)
            > 50));

        // SAFETY: sending SIGTERM to the child we started.
        unsafe { libc::kill(ringway.id() as i32, libc::SIGTERM) };
        assert!(
            wait_until(Duration::from_secs(5), || admin_get(admin, "/ready")
                == Some(503)),
            "readiness did not fail on SIGTERM"
        );
        let calls_at_sigterm = tally.ok.load(Ordering::Relaxed);
        let status = wait_exit(&mut ringway, Duration::from_secs(15));
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        let slow = slow.join().unwrap();

        assert_eq!(status, Some(0), "ringway exits 0 after draining");
        assert_eq!(
            slow.grpc_status(),
            Some(0),
            "the slow call finished: {slow:?}"
        );
        assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "no call failed");
        assert!(
            tally.ok.load(Ordering::Relaxed) > calls_at_sigterm,
            "serving went on during the drain delay"
        );
        assert!(
            tally.told_to_close.load(Ordering::Relaxed) >= 1,
            "keep-alive clients were told to close"
        );
    });
}

/// A call still running when the drain timeout passes ends with UNAVAILABLE in its trailers
/// (the client reads a status, not a cut connection), and the process still exits 0.
#[test]
fn a_call_outliving_the_drain_timeout_ends_unavailable() {
    let _serial = one_at_a_time();
    for_each_driver(|driver| {
        let backend = start_backend("pod");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut ringway = start_ringway(driver, listen, admin, backend.local_addr(), ("0", "400"));
        assert!(
            wait_until(Duration::from_secs(10), || admin_get(admin, "/ready")
                == Some(200)),
            "ringway never became ready"
        );
        let started = std::time::Instant::now();
        let slow = std::thread::spawn(move || {
            roundtrip(
                listen,
                &grpc_web_request(UNARY, &[("x-delay-ms", "20000")], &grpc_frame(b"slow")),
            )
        });
        // A server stream whose head and first messages were sent: it ends with a trailer frame.
        let stream = std::thread::spawn(move || {
            let headers = [("x-stream-count", "100"), ("x-stream-interval-ms", "100")];
            roundtrip(
                listen,
                &grpc_web_request(SERVER_STREAM, &headers, &grpc_frame(b"stream")),
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: sending SIGTERM to the child we started.
        unsafe { libc::kill(ringway.id() as i32, libc::SIGTERM) };
        let status = wait_exit(&mut ringway, Duration::from_secs(10));
        let slow = slow.join().unwrap();
        let stream = stream.join().unwrap();
        let messages = stream.messages().len();
        assert!(
            (1..100).contains(&messages),
            "{messages} messages: {stream:?}"
        );
        assert_eq!(
            stream.trailer("grpc-status").as_deref(),
            Some("14"),
            "{stream:?}"
        );
        assert_eq!(status, Some(0), "ringway exits 0 after the drain timeout");
        assert_eq!(slow.status, 200, "{slow:?}");
        assert_eq!(slow.grpc_status(), Some(14), "{slow:?}");
        assert!(
            slow.trailer("grpc-message")
                .or_else(|| slow.header("grpc-message").map(str::to_owned))
                .is_some_and(|message| message.contains("drain")),
            "{slow:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call ended at the drain timeout, not with the backend"
        );
    });
}

/// Ctrl-C starts the drain (its delay here is 10 s); a second one exits at once, with status 1.
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let _serial = one_at_a_time();
    let backend = start_backend("pod");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut ringway = start_ringway(
        "auto",
        listen,
        admin,
        backend.local_addr(),
        ("10000", "10000"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || admin_get(admin, "/ready")
            == Some(200)),
        "ringway never became ready"
    );
    // SAFETY: sending SIGINT to the child we started.
    unsafe { libc::kill(ringway.id() as i32, libc::SIGINT) };
    assert!(
        wait_until(Duration::from_secs(5), || admin_get(admin, "/ready")
            == Some(503)),
        "readiness did not fail on the first Ctrl-C"
    );
    let second = std::time::Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(ringway.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut ringway, Duration::from_secs(5));
    assert_eq!(status, Some(1), "the second Ctrl-C exits with status 1");
    assert!(second.elapsed() < Duration::from_secs(5));
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}
