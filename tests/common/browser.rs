//! The browser side of the tests: the test page (tests/clients/browser/page.mjs, bundled with
//! esbuild at run time so it is never stale) served over plain HTTP from its own loopback origin,
//! so every call it makes to ringway is cross-origin, and a run of headless Chromium on it
//! (tests/clients/browser.mjs) whose JSON report comes back as a [`NodeRun`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::node::{NodeClients, NodeRun, NODE_RUN_TIMEOUT};

/// How long the page may take to report, inside [`NODE_RUN_TIMEOUT`].
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The page server's read timeout per request head: a stuck client, not a timing check.
const PAGE_READ_TIMEOUT: Duration = Duration::from_secs(10);
const PAGE_HEAD_BYTES_MAX: usize = 16 * 1024;

const INDEX_HTML: &str = "<!doctype html>\n<meta charset=\"utf-8\">\n<title>ringway test page</title>\n<script src=\"/page.js\"></script>\n";

/// The page's script: `browser/page.mjs` bundled by `bundle.mjs` into `dir`.
pub fn bundle_page(clients: &NodeClients, dir: &Path) -> Vec<u8> {
    let outfile = dir.join("page.js");
    let run = clients.run(
        "bundle.mjs",
        &[outfile.to_str().expect("UTF-8 path").to_owned()],
        NODE_RUN_TIMEOUT,
    );
    assert_eq!(run.exit_code, Some(0), "bundling the page failed\n{run}");
    std::fs::read(&outfile).expect("the bundle esbuild wrote")
}

/// A static HTTP/1.1 server for the page: `/` is the HTML, `/page.js` the bundle, anything else
/// 404. One thread, one request per connection; stopped on drop.
pub struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    /// Serves on `listen` (e.g. `127.0.0.2:0`: another host than ringway's 127.0.0.1, so
    /// another origin).
    pub fn start(listen: &str, script: Vec<u8>) -> PageServer {
        let listener = TcpListener::bind(listen).expect("page server binds");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    serve_one(stream, &script);
                }
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://host:port`, the page's origin (what ringway's CORS policy must allow).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(mut stream: TcpStream, script: &[u8]) {
    let _ = stream.set_read_timeout(Some(PAGE_READ_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < PAGE_HEAD_BYTES_MAX {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match path {
        "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", INDEX_HTML.as_bytes()),
        "/page.js" => ("200 OK", "text/javascript; charset=utf-8", script),
        _ => ("404 Not Found", "text/plain", &b"not found\n"[..]),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.write_all(body);
}

/// What a page run asks for; see the query parameters documented in browser/page.mjs.
pub struct PageRun<'a> {
    /// ringway's base URL, e.g. `https://127.0.0.1:8443`.
    pub target: &'a str,
    /// `grpc-web` or `connect`.
    pub protocol: &'a str,
    pub scenarios: &'a [&'a str],
    /// Extra query parameters (`streams`, `release`, `quiet_ms`, `deadline_ms`).
    pub params: &'a [(&'a str, &'a str)],
    /// The base64 SHA-256 pin of ringway's certificate key, the only one Chromium then accepts
    /// from an unknown CA.
    pub spki: &'a str,
    /// Chromium's `--disable-http2`: HTTP/1.1 over TLS although ringway offers h2.
    pub disable_http2: bool,
}

/// Loads the page from `page` in headless Chromium and returns its report: one line per
/// scenario, then the `"browser"` line (protocols seen, resource timing, console).
pub fn run_page(clients: &NodeClients, page: &PageServer, run: &PageRun<'_>) -> NodeRun {
    let mut query = vec![
        ("target", run.target.to_owned()),
        ("protocol", run.protocol.to_owned()),
        ("scenarios", run.scenarios.join(",")),
    ];
    query.extend(run.params.iter().map(|(k, v)| (*k, v.to_string())));
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    let url = format!("{}/?{}", page.origin(), query.join("&"));
    let mut args = vec![
        "--url".to_owned(),
        url,
        "--spki".to_owned(),
        run.spki.to_owned(),
        "--timeout-ms".to_owned(),
        PAGE_TIMEOUT.as_millis().to_string(),
    ];
    if run.disable_http2 {
        args.push("--disable-http2".to_owned());
    }
    clients.run("browser.mjs", &args, NODE_RUN_TIMEOUT)
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
