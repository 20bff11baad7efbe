//! Process logs on the real binary: `--log-format json` writes one JSON object per line, and
//! text logs carry no colour escapes when stderr is not a terminal (a pipe here, a file or
//! `kubectl logs` in production).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start ringway with `format` logs and return its stderr lines up to and including the
/// "ringway serving" line.
fn lines_until_serving(format: &str) -> Vec<String> {
    let mut proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["--listen", "127.0.0.1:0", "--admin", "off"])
            .args(["--upstream", "127.0.0.1:9", "--workers", "1"])
            .args(["--log-level", "info", "--log-format", format])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ringway starts"),
    );
    let stderr = proxy.0.stderr.take().expect("piped stderr");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("utf-8 log line");
        let done = line.contains("ringway serving");
        lines.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        lines.last().is_some_and(|l| l.contains("ringway serving")),
        "{lines:#?}"
    );
    lines
}

#[test]
fn json_logs_are_one_object_per_line() {
    for line in lines_until_serving("json") {
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(
            value["level"].is_string() && value["target"].is_string(),
            "{line}"
        );
        if value["fields"]["message"] == "ringway serving" {
            assert_eq!(value["level"], "INFO");
            assert_eq!(value["fields"]["workers"], 1);
            assert!(value["fields"]["listen"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"));
        }
    }
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_escapes() {
    let lines = lines_until_serving("text");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
    assert!(lines.last().unwrap().contains(" INFO "), "{lines:#?}");
}
