//! The Node.js clients of tests/clients/ (connect-node, Node's https, and Chromium driven by
//! playwright-core), run as child processes with a bounded run time, their JSON output parsed.
//!
//! `scripts/test-deps.sh` installs what they need; when something is missing a test fails (never
//! skips) with a message naming that script. Each run is one process group, so a timeout kills
//! the script and anything it started (Chromium) together.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The Chromium the browser tests drive: Debian's package, as scripts/test-deps.sh installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a client script may run before it and its children are killed and the test fails;
/// every script bounds its own calls far below this.
pub const NODE_RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a running script is checked for having exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);
const INSTALL_HINT: &str = "run scripts/test-deps.sh (it installs the npm packages into \
                            tests/clients/node_modules, generates tests/clients/gen/ and \
                            installs Debian's chromium)";

/// tests/clients/ in this checkout.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Node.js and the installed clients.
pub struct NodeClients {
    node: PathBuf,
    dir: PathBuf,
}

/// What one script run printed and how it ended.
#[derive(Debug)]
pub struct NodeRun {
    /// The command line, for failure messages.
    pub command: String,
    /// Every stdout line that is a JSON value, in order.
    pub lines: Vec<Value>,
    /// Stdout lines that are not JSON.
    pub other_output: String,
    pub stderr: String,
    /// `None` when the run was killed at its timeout.
    pub exit_code: Option<i32>,
}

impl NodeClients {
    /// Node, tests/clients/node_modules and the generated code; panics with how to install them
    /// when any is missing.
    pub fn require() -> NodeClients {
        let dir = clients_dir();
        let node = PathBuf::from("node");
        let version = Command::new(&node).arg("--version").output();
        match version {
            Ok(out) if out.status.success() => {}
            _ => panic!("node is not on PATH: install Node.js 20 or later, then {INSTALL_HINT}"),
        }
        for needed in ["node_modules/.package-lock.json", "gen/test_pb.js"] {
            assert!(
                dir.join(needed).exists(),
                "{} is missing: {INSTALL_HINT}",
                dir.join(needed).display()
            );
        }
        NodeClients { node, dir }
    }

    /// [`NodeClients::require`], and Chromium.
    pub fn require_with_chromium() -> NodeClients {
        let clients = NodeClients::require();
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: {INSTALL_HINT}"
        );
        clients
    }

    /// Runs `node tests/clients/<script> <args>` to its end, or kills it (and its process
    /// group) after `timeout`.
    pub fn run(&self, script: &str, args: &[String], timeout: Duration) -> NodeRun {
        let mut command = Command::new(&self.node);
        command
            .arg(self.dir.join(script))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout also reaches the browser it started.
            .process_group(0);
        let shown = format!("node tests/clients/{script} {}", args.join(" "));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let (exit_code, stdout, stderr) = wait_bounded(&mut child, timeout);
        let mut lines = Vec::new();
        let mut other_output = String::new();
        for line in stdout.lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(value) => lines.push(value),
                Err(_) => {
                    other_output.push_str(line);
                    other_output.push('\n');
                }
            }
        }
        NodeRun {
            command: shown,
            lines,
            other_output,
            stderr: if exit_code.is_none() {
                format!("{stderr}\n(killed after {timeout:?})")
            } else {
                stderr
            },
            exit_code,
        }
    }

    /// `node_client.mjs` (@connectrpc/connect-node): `scenarios` (all that apply if empty) over
    /// `protocol` (`grpc-web` or `connect`) and HTTP version `http` (`2` or `1.1`) against
    /// `target`, a base URL (`https://…`, trusting the PEM CA file `ca`; or `http://…`, HTTP/2
    /// then meaning prior knowledge).
    pub fn connect_node(
        &self,
        protocol: &str,
        http: &str,
        target: &str,
        ca: Option<&Path>,
        scenarios: &[&str],
    ) -> NodeRun {
        let mut args: Vec<String> = vec![
            "--protocol".into(),
            protocol.into(),
            "--http".into(),
            http.into(),
            "--target".into(),
            target.into(),
        ];
        if let Some(ca) = ca {
            args.extend(["--ca".into(), ca.to_str().expect("UTF-8 path").into()]);
        }
        args.extend(scenarios.iter().map(|s| s.to_string()));
        self.run("node_client.mjs", &args, NODE_RUN_TIMEOUT)
    }
}

impl NodeRun {
    /// The scenario result lines (`{"scenario": …}`), in order.
    pub fn results(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|line| line.get("scenario").is_some())
            .collect()
    }

    /// The result line of `scenario`; panics if there is none.
    pub fn result(&self, scenario: &str) -> &Value {
        self.results()
            .into_iter()
            .find(|r| r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no result for {scenario}\n{self}"))
    }

    /// The one line that has `key` (e.g. the browser driver's `"browser"` line), its value.
    pub fn line(&self, key: &str) -> &Value {
        self.lines
            .iter()
            .find_map(|line| line.get(key))
            .unwrap_or_else(|| panic!("no {key:?} line\n{self}"))
    }

    /// Panics, showing everything the run printed, unless it exited 0 after reporting exactly
    /// `scenarios`, in order, each passed.
    pub fn assert_passed(&self, scenarios: &[&str]) {
        let results = self.results();
        let names: Vec<&str> = results
            .iter()
            .map(|r| r["scenario"].as_str().unwrap_or("?"))
            .collect();
        let all_ok = results.iter().all(|r| r["ok"] == true);
        assert!(
            self.exit_code == Some(0) && all_ok && names == scenarios,
            "expected {scenarios:?} to pass\n{self}"
        );
    }
}

impl std::fmt::Display for NodeRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}\nexit: {:?}", self.command, self.exit_code)?;
        for line in &self.lines {
            match line.get("scenario") {
                Some(name) => {
                    let detail = line["detail"].as_str().unwrap_or_default();
                    writeln!(f, "  {name}: ok={} {detail}", line["ok"])?;
                    if let Some(data) = line.get("data") {
                        writeln!(f, "    data: {data}")?;
                    }
                }
                None => writeln!(f, "  {line}")?,
            }
        }
        write!(
            f,
            "other stdout:\n{}stderr:\n{}",
            self.other_output, self.stderr
        )
    }
}

/// Waits for `child` up to `timeout`, killing its whole process group then; returns its exit
/// code (`None` when killed) and its output. Both pipes are read while it runs, so a chatty
/// child cannot block on a full pipe.
fn wait_bounded(child: &mut Child, timeout: Duration) -> (Option<i32>, String, String) {
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    });
    let deadline = Instant::now() + timeout;
    let exit_code = loop {
        match child.try_wait().expect("waiting for a client script") {
            Some(status) => break status.code(),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(EXIT_POLL_INTERVAL),
        }
    };
    // Whether it timed out or exited, nothing it started may outlive the run (a browser left
    // behind would also hold the pipes open). The group id is the child's pid (process_group(0)).
    let group = -(child.id() as libc::pid_t);
    // SAFETY: kill(2) with a negative pid signals that process group only; it touches no memory.
    unsafe { libc::kill(group, libc::SIGKILL) };
    let _ = child.wait();
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    (exit_code, stdout, stderr)
}
