//! Real gRPC client programs for the tests, run as child processes: where they and their
//! interpreter are, how to launch one with a bounded run time, and how to read its results.
//!
//! Mocks would prove nothing about interoperability, so the tests drive the clients people
//! use: today Python `grpcio` (`tests/clients/grpcio_client.py`), which speaks native gRPC over
//! HTTP/2 with its own C core. `scripts/test-deps.sh` installs it in a virtualenv at
//! `.venv-test/`; [`python`] finds that interpreter (or the one `RINGWAY_TEST_PYTHON` names).
//! A client prints one JSON object per scenario and line, which [`GrpcioClient::run`] parses
//! into [`ScenarioResult`]s; the test then checks what the server saw.
//!
//! ```no_run
//! use ringway_load::clients::{GrpcioClient, GrpcioOptions};
//! let client = GrpcioClient::find().unwrap_or_else(|why| panic!("{why}"));
//! let run = client.run("127.0.0.1:8080", &GrpcioOptions::default(), &["unary", "bidi_ping_pong"]);
//! run.unwrap().assert_passed(&["unary", "bidi_ping_pong"]);
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Environment variable naming the Python interpreter to use instead of the virtualenv's.
pub const PYTHON_ENV: &str = "RINGWAY_TEST_PYTHON";
/// The virtualenv `scripts/test-deps.sh` creates, relative to the repository root.
pub const VENV_DIR: &str = ".venv-test";
/// Longest a client process may run before it is killed and the run fails: every scenario
/// bounds its own calls by deadlines far below this.
pub const CLIENT_RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a running client is checked for having exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The scenarios of `tests/clients/grpcio_client.py`, in its run order (a test checks that the
/// script lists exactly these).
pub const GRPCIO_SCENARIOS: &[&str] = &[
    "unary",
    "large_messages",
    "server_streaming",
    "client_streaming",
    "bidi_ping_pong",
    "metadata",
    "error_status",
    "status_details_passthrough",
    "unimplemented",
    "deadline",
    "cancellation",
];

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Python interpreter for the test clients: `$RINGWAY_TEST_PYTHON` if set, else the
/// virtualenv's. The error says how to install it.
pub fn python() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let venv = repo_root().join(VENV_DIR).join("bin").join("python");
    if venv.exists() {
        Ok(venv)
    } else {
        Err(format!(
            "no Python for the test clients: {} does not exist and {PYTHON_ENV} is not set; \
             run scripts/test-deps.sh (it creates the virtualenv with grpcio)",
            venv.display()
        ))
    }
}

/// Options of one grpcio client run, as the script's flags.
#[derive(Clone, Debug, Default)]
pub struct GrpcioOptions {
    /// `--tls-ca FILE`: a secure channel trusting only this PEM CA bundle.
    pub tls_ca: Option<PathBuf>,
    /// `--authority NAME`: the `:authority` and, over TLS, the server name (SNI and certificate
    /// check) instead of the target's host.
    pub authority: Option<String>,
    /// `--service NAME`: the service part of every method path [default: ringway.test.Echo].
    pub service: Option<String>,
    /// `--timeout-s`: the deadline of the calls that do not test deadlines [default: 10 s].
    pub call_timeout: Option<Duration>,
}

/// One scenario's line of output.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ScenarioResult {
    pub scenario: String,
    pub ok: bool,
    /// What was checked, or why it failed.
    pub detail: String,
    pub elapsed_ms: f64,
}

/// What one client process did.
#[derive(Clone, Debug)]
pub struct ClientRun {
    /// One entry per scenario line printed, in order.
    pub results: Vec<ScenarioResult>,
    /// The process's exit code; `None` if it was killed (by [`CLIENT_RUN_TIMEOUT`] or a signal).
    pub exit_code: Option<i32>,
    /// Lines of stdout that were not scenario results (a crash's traceback goes to stderr).
    pub other_output: String,
    pub stderr: String,
}

impl ClientRun {
    /// Panics, with every failure's detail and the client's stderr, unless the process exited
    /// 0 after reporting exactly `scenarios`, each passed.
    pub fn assert_passed(&self, scenarios: &[&str]) {
        let names: Vec<&str> = self.results.iter().map(|r| r.scenario.as_str()).collect();
        let failures: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("  {}: {}", r.scenario, r.detail))
            .collect();
        if self.exit_code == Some(0) && failures.is_empty() && names == scenarios {
            return;
        }
        panic!(
            "grpcio client: exit {:?}, scenarios reported {names:?} (expected {scenarios:?})\n\
             failures:\n{}\nstdout (other):\n{}\nstderr:\n{}",
            self.exit_code,
            failures.join("\n"),
            self.other_output,
            self.stderr
        );
    }
}

/// The Python grpcio client, `tests/clients/grpcio_client.py`, with an interpreter that can
/// import `grpc`.
#[derive(Clone, Debug)]
pub struct GrpcioClient {
    python: PathBuf,
    script: PathBuf,
}

impl GrpcioClient {
    /// Finds the interpreter ([`python`]) and checks that it imports `grpc`; the error says
    /// what is missing and how to install it.
    pub fn find() -> Result<GrpcioClient, String> {
        GrpcioClient::with_python(python()?)
    }

    /// The client run by a given interpreter, checked as in [`GrpcioClient::find`].
    pub fn with_python(python: impl Into<PathBuf>) -> Result<GrpcioClient, String> {
        let python = python.into();
        let script = repo_root().join("tests/clients/grpcio_client.py");
        let mut check = Command::new(&python);
        check.args(["-c", "import grpc; print(grpc.__version__)"]);
        let run = run_bounded(check, CLIENT_RUN_TIMEOUT)
            .map_err(|why| format!("cannot run {}: {why}", python.display()))?;
        if run.exit_code != Some(0) {
            return Err(format!(
                "the Python at {} cannot import grpc (grpcio); run scripts/test-deps.sh or set \
                 {PYTHON_ENV} to an interpreter that has it:\n{}",
                python.display(),
                run.stderr.trim_end()
            ));
        }
        Ok(GrpcioClient { python, script })
    }

    /// The scenario names the script knows, in its run order.
    pub fn scenarios(&self) -> Result<Vec<String>, String> {
        let mut command = Command::new(&self.python);
        command.arg(&self.script).arg("--list");
        let run = run_bounded(command, CLIENT_RUN_TIMEOUT)?;
        if run.exit_code != Some(0) {
            return Err(format!("--list failed: {}", run.stderr));
        }
        Ok(run.stdout.lines().map(str::to_owned).collect())
    }

    /// Runs `scenarios` (all of them if empty) against `target` (`host:port`) in one client
    /// process, bounded by [`CLIENT_RUN_TIMEOUT`]. `Err` only when the process could not be
    /// run; failed scenarios and exit codes are in the [`ClientRun`].
    pub fn run(
        &self,
        target: &str,
        options: &GrpcioOptions,
        scenarios: &[&str],
    ) -> Result<ClientRun, String> {
        let mut command = Command::new(&self.python);
        command.arg(&self.script).args(["--target", target]);
        if let Some(ca) = &options.tls_ca {
            command.arg("--tls-ca").arg(ca);
        }
        if let Some(authority) = &options.authority {
            command.args(["--authority", authority]);
        }
        if let Some(service) = &options.service {
            command.args(["--service", service]);
        }
        if let Some(timeout) = options.call_timeout {
            command.args(["--timeout-s", &timeout.as_secs_f64().to_string()]);
        }
        command.args(scenarios);
        let run = run_bounded(command, CLIENT_RUN_TIMEOUT)?;
        let mut results = Vec::new();
        let mut other_output = String::new();
        for line in run.stdout.lines() {
            match serde_json::from_str::<ScenarioResult>(line) {
                Ok(result) => results.push(result),
                Err(_) => {
                    other_output.push_str(line);
                    other_output.push('\n');
                }
            }
        }
        Ok(ClientRun {
            results,
            exit_code: run.exit_code,
            other_output,
            stderr: run.stderr,
        })
    }
}

struct Finished {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` to its end, or kills it after `timeout`; collects its output.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<Finished, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    // Read both pipes while the child runs, so a chatty child cannot block on a full pipe.
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
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let exit_code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            Ok(None) => std::thread::sleep(EXIT_POLL_INTERVAL),
            Err(error) => return Err(error.to_string()),
        }
    };
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    let stderr = if timed_out {
        format!("{stderr}\n(killed after {timeout:?})")
    } else {
        stderr
    };
    Ok(Finished {
        exit_code,
        stdout,
        stderr,
    })
}
