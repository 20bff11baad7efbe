//! The Connect protocol through ringway to the gRPC test backend, under both io drivers: the real
//! clients (`@connectrpc/connect-node`'s Connect transport over HTTPS with HTTP/2 and HTTP/1.1
//! and over h2c; `@connectrpc/connect-web` in headless Chromium from another origin), and hostile
//! requests written byte by byte, each of which must get a Connect error with the right code and
//! HTTP status, never a hang.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::browser::{bundle_page, run_page, PageRun, PageServer};
use common::h2client::{exchange, request, H2Client};
use common::node::{NodeClients, NodeRun};
use common::pki::{temp_dir, tls_flags, KeyKind, TestPki};
use common::*;
use ringway::server::Server;
use ringway_load::backend::BackendHandle;
use serde_json::Value;

/// The one side-effect-free method the tests let a GET call.
const GET_ALLOW: &str = "/test.Echo/Unary";
/// How long the backend may take to notice a call the proxy cancelled: a hang, not a timing.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Connect scenarios of tests/clients/src/scenarios.mjs over HTTP/2, where request messages
/// stream too; deadline and cancellation run on their own (below).
const CONNECT_H2: &[&str] = &[
    "unary",
    "unary_get",
    "server_streaming",
    "client_streaming",
    "bidi_streaming",
    "metadata",
    "error_details",
    "error_trailers_only",
];

/// Over HTTP/1.1 a request body is sent whole: no client or bidi streaming.
const CONNECT_HTTP1: &[&str] = &[
    "unary",
    "unary_get",
    "server_streaming",
    "metadata",
    "error_details",
    "error_trailers_only",
];

/// A backend, and ringway in front of it with a cleartext and an HTTPS listener, Connect GETs
/// allowed on the one side-effect-free method.
struct Setup {
    pki: TestPki,
    spki: String,
    backend: BackendHandle,
    proxy: Server,
}

impl Setup {
    fn start(driver: &str, name: &str, extra: &[String]) -> Setup {
        let pki = TestPki::new(name);
        let leaf = pki.leaf("ringway", KeyKind::EcdsaP256);
        let backend = start_backend("connect-backend");
        let mut flags = tls_flags(&leaf);
        flags.extend(["--connect-get-allow".to_owned(), GET_ALLOW.to_owned()]);
        flags.extend(extra.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        Setup {
            spki: leaf.spki_sha256_base64(),
            pki,
            backend,
            proxy,
        }
    }

    fn https(&self) -> String {
        format!(
            "https://{}",
            self.proxy.tls_local_addr().expect("TLS listener")
        )
    }

    fn run(&self, clients: &NodeClients, http: &str, target: &str, scenarios: &[&str]) -> NodeRun {
        let ca = self.pki.ca_file();
        let run = clients.connect_node("connect", http, target, Some(&ca), scenarios);
        // Shown with any later failure of the test (the harness keeps it until then).
        eprintln!("{run}");
        run
    }

    /// The deadline reaches the backend as `grpc-timeout`, and the call is cancelled there.
    fn check_deadline(&self, clients: &NodeClients, http: &str, target: &str) {
        let cancelled = self.backend.stats().cancelled_by_client;
        self.run(clients, http, target, &["deadline"])
            .assert_passed(&["deadline"]);
        let headers = self.backend.last_request_headers().expect("a request");
        let timeout = headers.get("grpc-timeout").unwrap_or("(none)");
        assert!(
            timeout.ends_with('m') || timeout.ends_with('u') || timeout.ends_with('n'),
            "the backend got grpc-timeout {timeout:?}, from connect-timeout-ms"
        );
        assert!(wait_until(CANCEL_WAIT, || {
            self.backend.stats().cancelled_by_client > cancelled
        }));
    }

    /// A call the client aborts is cancelled at the backend.
    fn check_cancellation(&self, clients: &NodeClients, http: &str, target: &str) {
        let cancelled = self.backend.stats().cancelled_by_client;
        self.run(clients, http, target, &["cancellation"])
            .assert_passed(&["cancellation"]);
        assert!(wait_until(CANCEL_WAIT, || {
            self.backend.stats().cancelled_by_client > cancelled
        }));
    }
}

#[test]
fn connect_node_over_https_http2_and_h2c() {
    let clients = NodeClients::require();
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-h2", &[]);
        let https = setup.https();
        setup
            .run(&clients, "2", &https, CONNECT_H2)
            .assert_passed(CONNECT_H2);
        setup.check_deadline(&clients, "2", &https);
        setup.check_cancellation(&clients, "2", &https);
        // The same calls over cleartext HTTP/2 with prior knowledge.
        let h2c = format!("http://{}", setup.proxy.local_addr());
        setup
            .run(&clients, "2", &h2c, CONNECT_H2)
            .assert_passed(CONNECT_H2);
        // The GET went out as a GET and reached the backend as a gRPC POST of its message.
        assert!(setup.backend.stats().calls_started > 0);
    });
}

#[test]
fn connect_node_over_https_http1() {
    let clients = NodeClients::require();
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-http1", &[]);
        let https = setup.https();
        setup
            .run(&clients, "1.1", &https, CONNECT_HTTP1)
            .assert_passed(CONNECT_HTTP1);
        setup.check_deadline(&clients, "1.1", &https);
        setup.check_cancellation(&clients, "1.1", &https);
    });
}

/// The same clients' gRPC-Web transport through the same ringway, beside Connect.
#[test]
fn grpc_web_transport_still_passes_beside_connect() {
    let clients = NodeClients::require();
    let setup = Setup::start("uring", "connect-web", &[]);
    let https = setup.https();
    let ca = setup.pki.ca_file();
    let scenarios = ["unary", "server_streaming", "metadata", "error_details"];
    let run = clients.connect_node("grpc-web", "2", &https, Some(&ca), &scenarios);
    run.assert_passed(&scenarios);
}

#[test]
fn connect_web_in_chromium_from_another_origin() {
    let clients = NodeClients::require_with_chromium();
    let dir = temp_dir("connect-page");
    let page = PageServer::start("127.0.0.2:0", bundle_page(&clients, &dir));
    let scenarios = [
        "unary",
        "unary_get",
        "server_streaming",
        "metadata",
        "error_details",
        "error_trailers_only",
        "deadline",
        "cancellation",
    ];
    for_each_driver(|driver| {
        let cors = ["--cors-allow-origins".to_owned(), page.origin()];
        let setup = Setup::start(driver, "connect-browser", &cors);
        let target = setup.https();
        let run = run_page(
            &clients,
            &page,
            &PageRun {
                target: &target,
                protocol: "connect",
                scenarios: &scenarios,
                params: &[],
                spki: &setup.spki,
                disable_http2: false,
            },
        );
        eprintln!("{run}");
        run.assert_passed(&scenarios);
        let browser: &Value = run.line("browser");
        assert!(
            browser.to_string().contains("\"h2\""),
            "Chromium spoke HTTP/2 to ringway: {browser}"
        );
        let preflights: u64 = setup
            .proxy
            .view()
            .worker_stats
            .iter()
            .map(|w| w.preflights.get())
            .sum();
        assert!(preflights >= 1, "a cross-origin POST is preflighted");
    });
}

/// An HTTP/1.1 Connect request with the given head lines and body; its full response.
fn connect_post(
    proxy: std::net::SocketAddr,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut headers = vec![("connect-protocol-version", "1")];
    headers.extend_from_slice(extra);
    roundtrip(proxy, &post(UNARY, content_type, &headers, body))
}

fn json(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&response.body)))
}

fn get(proxy: std::net::SocketAddr, target: &str) -> Response {
    let request = format!("GET {target} HTTP/1.1\r\nhost: test.local\r\n\r\n");
    roundtrip(proxy, request.as_bytes())
}

#[test]
fn unary_calls_are_translated_both_ways() {
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-raw", &[]);
        let proxy = setup.proxy.local_addr();
        let ok = connect_post(
            proxy,
            "application/proto",
            &[
                ("x-echo-a", "1"),
                ("x-trailer-echo-t", "2"),
                ("origin", "https://app.example"),
            ],
            b"bare message",
        );
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("content-type"), Some("application/proto"));
        assert_eq!(ok.body, b"bare message");
        assert_eq!(ok.header("x-echo-a"), Some("1"));
        assert_eq!(ok.header("trailer-x-trailer-echo-t"), Some("2"));
        let exposed = ok.header("access-control-expose-headers").unwrap_or("");
        assert!(exposed.contains("trailer-x-trailer-echo-t"), "{exposed}");
        // The upstream saw a gRPC call: the message framed, a gRPC content type.
        let seen = setup.backend.last_request_headers().unwrap();
        assert_eq!(seen.get("content-type"), Some("application/grpc+proto"));
        assert!(seen.get("connect-protocol-version").is_none());

        // An error becomes Connect JSON with the protocol's HTTP status.
        let error = connect_post(
            proxy,
            "application/json",
            &[
                ("x-grpc-status", "5"),
                ("x-grpc-message", "gone"),
                ("x-status-details", "WHY"),
            ],
            b"{}",
        );
        assert_eq!(error.status, 404);
        assert_eq!(error.header("content-type"), Some("application/json"));
        let body = json(&error);
        assert_eq!(body["code"], "not_found");
        assert_eq!(body["message"], "gone");
        assert_eq!(body["details"][0]["type"], "google.rpc.ErrorInfo");
        assert_eq!(
            setup
                .backend
                .last_request_headers()
                .unwrap()
                .get("content-type"),
            Some("application/grpc+json")
        );

        // connect-timeout-ms becomes grpc-timeout; its expiry is deadline_exceeded (504).
        let late = connect_post(
            proxy,
            "application/proto",
            &[("connect-timeout-ms", "100"), ("x-delay-ms", "5000")],
            b"m",
        );
        assert_eq!(late.status, 504);
        assert_eq!(json(&late)["code"], "deadline_exceeded");
    });
}

/// A body that arrives in pieces, after the head: with Content-Length (framed in front and
/// streamed) and chunked (gathered, then framed), as Node's HTTP/1.1 client sends it.
#[test]
fn a_unary_body_arriving_in_pieces_is_framed_once() {
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-pieces", &[]);
        let head = |framing: &str| {
            format!(
                "POST {UNARY} HTTP/1.1\r\nhost: test.local\r\ncontent-type: application/proto\r\n\
                 connect-protocol-version: 1\r\n{framing}\r\n\r\n"
            )
            .into_bytes()
        };
        let cases: [Vec<Vec<u8>>; 2] = [
            vec![head("content-length: 6"), b"ab".to_vec(), b"cdef".to_vec()],
            vec![
                head("transfer-encoding: chunked"),
                chunk(b"abc"),
                chunk(b"def"),
                b"0\r\n\r\n".to_vec(),
            ],
        ];
        for pieces in cases {
            let mut client = Reader::new(connect(setup.proxy.local_addr()));
            for piece in &pieces {
                client.write(piece);
                // Separate writes, so the pieces tend to arrive in separate reads.
                std::thread::sleep(Duration::from_millis(30));
            }
            let response = client.read_response();
            assert_eq!((response.status, &response.body[..]), (200, &b"abcdef"[..]));
        }
    });
}

#[test]
fn get_is_allowed_per_method_and_its_query_is_checked() {
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-get", &[]);
        let proxy = setup.proxy.local_addr();
        // "abc", URL-safe base64, on the allowed method.
        let ok = get(
            proxy,
            &format!("{GET_ALLOW}?connect=v1&encoding=proto&base64=1&message=YWJj"),
        );
        assert_eq!((ok.status, &ok.body[..]), (200, &b"abc"[..]));
        assert_eq!(ok.header("vary"), Some("accept-encoding"));
        let seen = setup.backend.last_request_headers().unwrap();
        assert_eq!(seen.get("content-type"), Some("application/grpc+proto"));

        let cases = [
            // A method not listed in --connect-get-allow.
            (
                "/test.Echo/ServerStream?connect=v1&encoding=proto&message=x",
                501,
                "unimplemented",
            ),
            // No message.
            (
                "/test.Echo/Unary?connect=v1&encoding=proto",
                400,
                "invalid_argument",
            ),
            // Bad base64.
            (
                "/test.Echo/Unary?connect=v1&encoding=proto&base64=1&message=%%%",
                400,
                "invalid_argument",
            ),
            // An encoding that is not a codec name.
            (
                "/test.Echo/Unary?connect=v1&encoding=a/b&message=x",
                400,
                "invalid_argument",
            ),
            // A repeated parameter.
            (
                "/test.Echo/Unary?connect=v1&encoding=proto&message=a&message=b",
                400,
                "invalid_argument",
            ),
        ];
        for (target, status, code) in cases {
            let refused = get(proxy, target);
            assert_eq!(refused.status, status, "{target}: {refused:?}");
            assert_eq!(json(&refused)["code"], code, "{target}");
        }
        assert_eq!(
            setup.backend.stats().calls_started,
            1,
            "only the allowed GET was called"
        );
    });
}

#[test]
fn hostile_requests_get_connect_errors_not_hangs() {
    for_each_driver(|driver| {
        let setup = Setup::start(
            driver,
            "connect-hostile",
            &["--body-bytes-max".to_owned(), "64".to_owned()],
        );
        let proxy = setup.proxy.local_addr();
        // A protocol version other than 1.
        let version = roundtrip(
            proxy,
            &post(
                UNARY,
                "application/proto",
                &[("connect-protocol-version", "2")],
                b"m",
            ),
        );
        assert_eq!(
            (version.status, json(&version)["code"].clone()),
            (400, "invalid_argument".into())
        );
        // A bad connect-timeout-ms.
        let timeout = connect_post(
            proxy,
            "application/proto",
            &[("connect-timeout-ms", "soon")],
            b"m",
        );
        assert_eq!(json(&timeout)["code"], "invalid_argument");
        // A message over the limit.
        let big = connect_post(proxy, "application/proto", &[], &[7u8; 100]);
        assert_eq!(json(&big)["code"], "resource_exhausted");
        // A stream whose envelope claims the end-of-stream flag from a client, and one whose
        // envelope is cut short by the end of the body.
        for body in [&b"\x02\0\0\0\x02{}"[..], b"\0\0\0\0\x09abc"] {
            let stream = connect_post(proxy, "application/connect+proto", &[], body);
            assert_eq!(
                stream.status, 200,
                "stream errors travel in the end envelope"
            );
            let envelope = &stream.body[stream.body.len() - 5..];
            assert!(
                stream.body.contains(&0x02),
                "an end-of-stream envelope: {envelope:?}"
            );
            let text = String::from_utf8_lossy(&stream.body);
            assert!(text.contains("\"code\":\"invalid_argument\""), "{text}");
        }
        // An unknown content type is still 415, and the proxy still serves.
        let unknown = roundtrip(proxy, &post(UNARY, "text/plain", &[], b"m"));
        assert_eq!(unknown.status, 415);
        let ok = connect_post(proxy, "application/proto", &[], b"m");
        assert_eq!(ok.status, 200);
    });
}

#[test]
fn preflights_allow_the_connect_headers() {
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-cors", &[]);
        let preflight = format!(
            "OPTIONS {UNARY} HTTP/1.1\r\nhost: test.local\r\norigin: https://app.example\r\n\
             access-control-request-method: POST\r\n\
             access-control-request-headers: connect-protocol-version,connect-timeout-ms,content-type\r\n\r\n"
        );
        let answer = roundtrip(setup.proxy.local_addr(), preflight.as_bytes());
        assert_eq!(answer.status, 204);
        let allowed = answer.header("access-control-allow-headers").unwrap_or("");
        for header in ["connect-protocol-version", "connect-timeout-ms"] {
            assert!(allowed.contains(header), "{allowed}");
        }
    });
}

/// Client and bidi streaming need HTTP/2: envelopes pass through as the client sends them.
#[test]
fn streams_over_http2_pass_envelopes_both_ways() {
    for_each_driver(|driver| {
        let setup = Setup::start(driver, "connect-stream", &[]);
        let client = H2Client::connect(setup.proxy.local_addr());
        let send = client.send.clone();
        let response = client.runtime.block_on(async move {
            let req = request(
                "POST",
                "/test.Echo/ClientStream",
                &[
                    ("content-type", "application/connect+proto"),
                    ("connect-protocol-version", "1"),
                ],
            );
            let pieces = vec![
                Bytes::from(grpc_frame(b"one ")),
                Bytes::from(grpc_frame(b"two")),
            ];
            exchange(send, req, pieces).await
        });
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type"),
            Some("application/connect+proto")
        );
        let body = response.body();
        // One message (the two joined, as the backend answers), then the end-of-stream envelope.
        assert_eq!(&body[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(&body[5..12], b"one two");
        assert_eq!(body[12], 0x02);
        assert!(String::from_utf8_lossy(&body[17..]).contains("x-request-messages"));
    });
}
