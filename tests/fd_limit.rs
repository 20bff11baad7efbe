//! At the file-descriptor limit: the real binary under a low RLIMIT_NOFILE. Connections beyond
//! the limit wait in the kernel's queue, the failures are counted (and logged, rate-limited),
//! the connections already open keep being served, and the waiting ones are served as soon as
//! descriptors free up.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The hard (and so soft) descriptor limit the proxy runs under: a few dozen connections.
const FD_LIMIT: u64 = 64;
/// More connections than that limit lets the proxy accept.
const CONNECTIONS: usize = 80;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start_limited(
    driver: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringway"));
    command
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .args(["--upstream", &upstream.to_string(), "--workers", "1"])
        .args(["--io-driver", driver, "--drain-delay-ms", "0"])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Running(command.spawn().expect("ringway binary starts"))
}

fn stats(admin: SocketAddr) -> Option<String> {
    let mut reader = Reader::new(TcpStream::connect(admin).ok()?);
    reader.write(b"GET /stats HTTP/1.1\r\nhost: admin\r\n\r\n");
    let response = reader.read_response();
    (response.status == 200).then(|| String::from_utf8_lossy(&response.body).into_owned())
}

fn stat(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /stats:\n{text}"))
}

fn call(reader: &mut Reader<TcpStream>, name: &str) -> Option<u32> {
    reader.write(&grpc_web_request(UNARY, &[], &grpc_frame(name.as_bytes())));
    reader.read_response().grpc_status()
}

#[test]
fn at_the_descriptor_limit_new_connections_wait_and_open_ones_are_served() {
    for_each_driver(|driver| {
        let backend = start_backend("pod");
        let (listen, admin) = (free_addr(), free_addr());
        let mut ringway = start_limited(driver, listen, admin, backend.local_addr());
        assert!(
            wait_until(Duration::from_secs(10), || stats(admin).is_some()),
            "ringway never served its admin port"
        );
        let mut first = Reader::new(connect(listen));
        assert_eq!(call(&mut first, "first"), Some(0));

        // Every connection completes its TCP handshake (the kernel's listen queue); the proxy
        // can accept only some. Each sends a request; the accepted ones are answered.
        let mut waiting: Vec<Reader<TcpStream>> = (0..CONNECTIONS)
            .map(|i| {
                let mut reader = Reader::new(connect(listen));
                reader.write(&grpc_web_request(
                    UNARY,
                    &[],
                    &grpc_frame(format!("c{i}").as_bytes()),
                ));
                reader
            })
            .collect();
        let mut served = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline && !waiting.is_empty() {
            let mut still = Vec::new();
            for reader in waiting {
                reader
                    .stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let mut byte = [0u8; 1];
                match reader.stream.peek(&mut byte) {
                    Ok(n) if n > 0 => served.push(reader),
                    _ => still.push(reader),
                }
            }
            waiting = still;
        }
        assert!(!served.is_empty(), "some connections were accepted");
        assert!(
            !waiting.is_empty(),
            "{CONNECTIONS} connections under a limit of {FD_LIMIT} descriptors: some must wait"
        );
        // The connection opened before the limit was reached is still served.
        assert_eq!(call(&mut first, "still served"), Some(0));

        // Descriptors free up: the waiting connections are accepted and answered.
        let waiting_count = waiting.len();
        drop(served);
        for mut reader in waiting {
            reader
                .stream
                .set_read_timeout(Some(CLIENT_READ_TIMEOUT))
                .unwrap();
            assert_eq!(reader.read_response().grpc_status(), Some(0));
        }
        let text = stats(admin).expect("admin answers once descriptors are free");
        assert!(
            stat(&text, "downstream.accept_failures") > 0,
            "accept failures counted ({waiting_count} connections waited):\n{text}"
        );
        assert_eq!(call(&mut first, "after"), Some(0));

        // SAFETY: sending SIGTERM to the child we started.
        unsafe { libc::kill(ringway.id() as i32, libc::SIGTERM) };
        let output = ringway.wait_with_output_timeout();
        assert!(
            output.contains("file-descriptor limit"),
            "the limit is logged:\n{output}"
        );
    });
}

trait WaitWithOutput {
    fn wait_with_output_timeout(&mut self) -> String;
}

impl WaitWithOutput for Child {
    /// Wait for the process to exit (killing it after 10 s) and return its stderr.
    fn wait_with_output_timeout(&mut self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill();
        let _ = self.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }
}
