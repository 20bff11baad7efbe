//! Real Node.js clients against ringway over HTTPS, under both io drivers: connect-node's
//! gRPC-Web transport over HTTP/2 (ALPN h2) and HTTP/1.1 (Node's https, no ALPN), and a gRPC-Web
//! call written by hand with Node's built-in `https`, whose bytes are checked exactly. The
//! scripts are in tests/clients/ (README.md there); scripts/test-deps.sh installs them.
//!
//! Each test checks both sides: what the client reported, and what ringway (TLS ALPN counters)
//! and the backend (request headers, cancellations) saw.

mod common;

use std::time::Duration;

use common::node::{NodeClients, NodeRun, NODE_RUN_TIMEOUT};
use common::pki::{tls_flags, KeyKind, TestPki};
use common::{echo_body, for_each_driver, start_backend, start_proxy, wait_until};
use ringway::server::Server;
use ringway_load::backend::BackendHandle;

/// How long the backend may take to notice a call the proxy cancelled: a hang, not a timing.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// The gRPC-Web scenarios of tests/clients/src/scenarios.mjs over HTTP/2, where connect-node
/// also streams request messages; deadline and cancellation run on their own (below).
const GRPC_WEB_H2: &[&str] = &[
    "unary",
    "server_streaming",
    "client_streaming",
    "bidi_streaming",
    "metadata",
    "error_details",
    "error_trailers_only",
];

/// Over HTTP/1.1 a request body is sent whole, so no client or bidi streaming.
const GRPC_WEB_HTTP1: &[&str] = &[
    "unary",
    "server_streaming",
    "metadata",
    "error_details",
    "error_trailers_only",
];

/// A backend, and ringway in front of it with an HTTPS listener whose certificate comes from a
/// fresh test CA.
struct HttpsProxy {
    pki: TestPki,
    backend: BackendHandle,
    proxy: Server,
}

impl HttpsProxy {
    fn start(driver: &str, name: &str) -> HttpsProxy {
        let pki = TestPki::new(name);
        let leaf = pki.leaf("ringway", KeyKind::EcdsaP256);
        let backend = start_backend("node-backend");
        let flags = tls_flags(&leaf);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        HttpsProxy {
            pki,
            backend,
            proxy,
        }
    }

    /// The HTTPS base URL, by IP (the certificate names 127.0.0.1).
    fn target(&self) -> String {
        let addr = self.proxy.tls_local_addr().expect("a TLS listener");
        format!("https://{addr}")
    }

    /// TLS handshakes that chose h2, and those that chose HTTP/1.1 (no ALPN counts as that).
    fn alpn_counts(&self) -> (u64, u64) {
        let view = self.proxy.view();
        let sum = |pick: fn(&ringway::stats::TlsStats) -> u64| {
            view.worker_stats.iter().map(|w| pick(&w.tls)).sum::<u64>()
        };
        (sum(|t| t.alpn_h2.get()), sum(|t| t.alpn_http1.get()))
    }

    fn run(&self, clients: &NodeClients, http: &str, scenarios: &[&str]) -> NodeRun {
        let ca = self.pki.ca_file();
        let run = clients.connect_node("grpc-web", http, &self.target(), Some(&ca), scenarios);
        // Shown with any later failure of the test (the harness keeps it until then).
        eprintln!("{run}");
        run
    }

    /// Runs the `deadline` scenario and checks that the backend got the deadline as
    /// `grpc-timeout` and that its call was cancelled, not left running.
    fn check_deadline(&self, clients: &NodeClients, http: &str) {
        let cancelled = self.backend.stats().cancelled_by_client;
        self.run(clients, http, &["deadline"])
            .assert_passed(&["deadline"]);
        let headers = self.backend.last_request_headers().expect("a request");
        let timeout = headers.get("grpc-timeout").unwrap_or("(none)");
        assert!(
            timeout.ends_with('m') || timeout.ends_with('u') || timeout.ends_with('n'),
            "the backend got grpc-timeout {timeout:?}, want the client's 300 ms deadline"
        );
        assert!(
            wait_until(CANCEL_WAIT, || self.backend.stats().cancelled_by_client
                > cancelled),
            "the call past its deadline was not cancelled at the backend: {:?}",
            self.backend.stats()
        );
    }

    /// Runs the `cancellation` scenario and checks that the backend saw the stream cancelled.
    fn check_cancellation(&self, clients: &NodeClients, http: &str) {
        let cancelled = self.backend.stats().cancelled_by_client;
        self.run(clients, http, &["cancellation"])
            .assert_passed(&["cancellation"]);
        assert!(
            wait_until(CANCEL_WAIT, || self.backend.stats().cancelled_by_client
                > cancelled),
            "the cancelled stream was not cancelled at the backend: {:?}",
            self.backend.stats()
        );
    }
}

#[test]
fn connect_node_grpc_web_over_https_http2() {
    let clients = NodeClients::require();
    for_each_driver(|driver| {
        let https = HttpsProxy::start(driver, "node-h2");
        https
            .run(&clients, "2", GRPC_WEB_H2)
            .assert_passed(GRPC_WEB_H2);
        https.check_deadline(&clients, "2");
        https.check_cancellation(&clients, "2");
        let (h2, http1) = https.alpn_counts();
        assert!(h2 >= 3, "{h2} h2 handshakes for three client runs");
        assert_eq!(http1, 0, "no HTTP/1.1 handshake from an HTTP/2 client");
    });
}

#[test]
fn connect_node_grpc_web_over_https_http1() {
    let clients = NodeClients::require();
    for_each_driver(|driver| {
        let https = HttpsProxy::start(driver, "node-http1");
        https
            .run(&clients, "1.1", GRPC_WEB_HTTP1)
            .assert_passed(GRPC_WEB_HTTP1);
        https.check_deadline(&clients, "1.1");
        https.check_cancellation(&clients, "1.1");
        let (h2, http1) = https.alpn_counts();
        assert_eq!(h2, 0, "no h2 handshake from an HTTP/1.1 client");
        // One connection per call (no keep-alive agent): at least one per scenario.
        assert!(
            http1 >= GRPC_WEB_HTTP1.len() as u64 + 2,
            "{http1} handshakes"
        );
    });
}

#[test]
fn node_https_without_alpn_gets_http1_and_the_exact_grpc_web_bytes() {
    let clients = NodeClients::require();
    let message = "héllo over https, no ALPN".as_bytes();
    for_each_driver(|driver| {
        let https = HttpsProxy::start(driver, "node-raw");
        let ca = https.pki.ca_file();
        let args: Vec<String> = [
            "--target",
            &https.target(),
            "--ca",
            ca.to_str().unwrap(),
            "--message-hex",
            &hex(message),
            "--header",
            "x-echo-note:raw",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let run = clients.run("https_raw.mjs", &args, NODE_RUN_TIMEOUT);
        assert_eq!(run.exit_code, Some(0), "{run}");
        let reply = &run.lines[0];
        assert_eq!(reply["http_version"], "1.1", "{run}");
        assert_eq!(reply["alpn"], false, "no protocol negotiated: {run}");
        assert_eq!(reply["status"], 200, "{run}");
        let headers = &reply["headers"];
        assert_eq!(headers["content-type"], "application/grpc-web+proto");
        assert_eq!(headers["x-echo-note"], "raw");
        assert_eq!(headers["x-backend"], "node-backend");
        assert_eq!(reply["body_hex"], hex(&echo_body(&[message])), "{run}");
        assert_eq!(https.alpn_counts(), (0, 1), "one handshake, HTTP/1.1");
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
