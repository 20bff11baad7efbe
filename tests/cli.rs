//! The binary's command line: `--help` names the `demo` subcommand, and at start the soft
//! open-file limit is raised to the hard one (and logged).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ringway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringway"))
}

#[test]
fn help_lists_the_demo_subcommand() {
    let help = ringway().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.contains("ringway <COMMAND>"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("demo ")),
        "{text}"
    );
    let demo = ringway().args(["demo", "--help"]).output().unwrap();
    let text = String::from_utf8(demo.stdout).unwrap();
    assert!(text.contains("Usage: ringway demo"), "{text}");
    assert!(text.contains("--scale-to"), "{text}");
    // Proxy flags belong to the proxy, not to the demo.
    let mixed = ringway().args(["--workers", "1", "demo"]).output().unwrap();
    assert_eq!(mixed.status.code(), Some(2));
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let mut command = ringway();
    command
        .args(["--listen", "127.0.0.1:0", "--admin", "off"])
        .args(["--upstream", "127.0.0.1:9", "--workers", "1"])
        .args(["--log-level", "info", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 2048,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raised = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("raised the open-file limit") {
            raised = Some(line);
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = raised.expect("the raise is logged");
    assert!(
        line.contains("\"from\":256") && line.contains("\"to\":2048"),
        "{line}"
    );
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["2048", "2048"], "{open_files}");
}
