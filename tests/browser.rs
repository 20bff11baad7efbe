//! A real browser through ringway: Debian's Chromium, headless, driven by playwright-core
//! (tests/clients/browser.mjs), loads a page from another origin (a static server on 127.0.0.2)
//! whose script, @connectrpc/connect-web's gRPC-Web transport, calls ringway's HTTPS listener on
//! 127.0.0.1. CORS is ringway's own (preflights answered, the page's origin allowed by list).
//! Chromium trusts the test certificate by its key's pin only
//! (`--ignore-certificate-errors-spki-list`); every other certificate check stays on.
//!
//! The point of HTTP/2 for a page: twelve server streams open at once, each receiving its first
//! message while all twelve are open, which HTTP/1.1's six connections per origin cannot do (the
//! second test shows Chromium with HTTP/2 disabled holding the seventh stream back until one of
//! the six closes). Facts are judged by counts and order of events, never by durations.

mod common;

use std::time::Duration;

use common::browser::{bundle_page, run_page, PageRun, PageServer};
use common::node::{NodeClients, NodeRun};
use common::pki::{temp_dir, tls_flags, KeyKind, TestPki};
use common::{for_each_driver, start_backend, start_proxy, wait_until};
use ringway::server::Server;
use ringway_load::backend::BackendHandle;
use serde_json::Value;

/// The page's origin: another loopback host than ringway's, so every call is cross-origin.
const PAGE_LISTEN: &str = "127.0.0.2:0";
/// Concurrent server streams: twice what HTTP/1.1 allows Chromium per origin.
const STREAMS: usize = 12;
/// Chromium's HTTP/1.1 connections per origin (its socket pool's per-group limit).
const HTTP1_CONNECTIONS_PER_ORIGIN: u64 = 6;
/// How long the backend may take to see the page's cancellations: a hang, not a timing.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// The page, ringway in front of a backend with an HTTPS listener and the page's origin
/// allowed, and the pin Chromium needs.
struct Setup {
    _pki: TestPki,
    spki: String,
    backend: BackendHandle,
    proxy: Server,
}

impl Setup {
    fn start(driver: &str, page: &PageServer) -> Setup {
        let pki = TestPki::new("browser");
        let leaf = pki.leaf("ringway", KeyKind::EcdsaP256);
        let backend = start_backend("browser-backend");
        let mut flags = tls_flags(&leaf);
        flags.extend(["--cors-allow-origins".to_owned(), page.origin()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        Setup {
            spki: leaf.spki_sha256_base64(),
            _pki: pki,
            backend,
            proxy,
        }
    }

    /// The HTTPS base URL, by IP (the certificate names 127.0.0.1).
    fn target(&self) -> String {
        format!(
            "https://{}",
            self.proxy.tls_local_addr().expect("TLS listener")
        )
    }

    fn run(
        &self,
        clients: &NodeClients,
        page: &PageServer,
        scenarios: &[&str],
        params: &[(&str, &str)],
        disable_http2: bool,
    ) -> NodeRun {
        let target = self.target();
        let run = run_page(
            clients,
            page,
            &PageRun {
                target: &target,
                protocol: "grpc-web",
                scenarios,
                params,
                spki: &self.spki,
                disable_http2,
            },
        );
        // Shown with any later failure of the test (the harness keeps it until then).
        eprintln!("{run}");
        run
    }

    /// Sums a per-worker counter of the proxy.
    fn counter(&self, pick: fn(&ringway::stats::WorkerStats) -> u64) -> u64 {
        self.proxy.view().worker_stats.iter().map(|w| pick(w)).sum()
    }

    /// Waits until the backend has seen `count` calls cancelled by the client.
    fn expect_cancelled(&self, count: u64) {
        assert!(
            wait_until(CANCEL_WAIT, || self.backend.stats().cancelled_by_client
                >= count),
            "the backend saw {:?}, want {count} cancelled calls",
            self.backend.stats()
        );
    }
}

/// The page served from its own origin, with the script bundled fresh.
fn page(clients: &NodeClients) -> PageServer {
    let dir = temp_dir("page");
    let script = bundle_page(clients, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    PageServer::start(PAGE_LISTEN, script)
}

/// The `data` of the page's concurrent_streams result: its events, in order.
fn stream_events(run: &NodeRun) -> Vec<Value> {
    let result = run.result("concurrent_streams");
    result["data"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events\n{run}"))
        .clone()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Every response from ringway that Chromium's network stack saw used `protocol` (preflights
/// included), and there were at least `calls` of them besides the preflights.
fn assert_protocol(run: &NodeRun, protocol: &str, calls: usize) {
    let responses = run.line("browser")["protocols"]
        .as_array()
        .unwrap_or_else(|| panic!("no protocols\n{run}"));
    let others: Vec<&Value> = responses
        .iter()
        .filter(|r| r["protocol"] != protocol)
        .collect();
    assert!(
        others.is_empty(),
        "responses not over {protocol}: {others:?}"
    );
    let calls_seen = responses
        .iter()
        .filter(|r| r["type"] != "Preflight")
        .count();
    assert!(
        calls_seen >= calls,
        "{calls_seen} responses, want at least {calls}\n{run}"
    );
    // The page's own view, its resource-timing entries: one per finished call (the cancelled
    // streams leave none). For a cross-origin call the Resource Timing spec hides the protocol
    // ("") unless the response allows it with `Timing-Allow-Origin`, which ringway (like Envoy's
    // cors filter) does not send; when shown, it must agree.
    let timing = run.line("browser")["resource_timing"]
        .as_array()
        .unwrap_or_else(|| panic!("no resource timing\n{run}"));
    assert!(
        !timing.is_empty(),
        "no finished call in resource timing\n{run}"
    );
    for entry in timing {
        let seen = entry["next_hop_protocol"].as_str().unwrap_or("?");
        assert!(seen == protocol || seen.is_empty(), "{entry}");
    }
}

#[test]
fn twelve_grpc_web_server_streams_from_chromium_are_open_at_once_over_http2() {
    let clients = NodeClients::require_with_chromium();
    let page = page(&clients);
    for_each_driver(|driver| {
        let setup = Setup::start(driver, &page);
        let streams = STREAMS.to_string();
        let run = setup.run(
            &clients,
            &page,
            &["concurrent_streams"],
            &[("streams", &streams)],
            false,
        );
        run.assert_passed(&["concurrent_streams"]);
        let events = stream_events(&run);
        let firsts = of_kind(&events, "first");
        assert_eq!(firsts.len(), STREAMS, "{events:?}");
        for first in &firsts {
            assert_eq!(first["echoed"], true, "{first}");
            assert_eq!(
                first["open"], STREAMS,
                "a stream got its first message while not all {STREAMS} were open: {first}"
            );
        }
        // No stream ended before the last first message; the page then cancelled all of them.
        let last_first = events.iter().rposition(|e| e["event"] == "first").unwrap();
        let first_end = events.iter().position(|e| e["event"] == "end").unwrap();
        assert!(last_first < first_end, "{events:?}");
        assert!(of_kind(&events, "release").is_empty());
        let outcomes = &run.result("concurrent_streams")["data"]["outcomes"];
        assert_eq!(outcomes, &Value::from(vec!["Canceled"; STREAMS]));
        assert_protocol(&run, "h2", STREAMS + 1);
        // Ringway answered the page's CORS preflights itself; the backend saw the warm-up call
        // and every stream, each of them cancelled by the page.
        assert!(setup.counter(|w| w.preflights.get()) >= 1);
        assert_eq!(setup.counter(|w| w.tls.alpn_http1.get()), 0);
        assert!(setup.counter(|w| w.tls.alpn_h2.get()) >= 1);
        setup.expect_cancelled(STREAMS as u64);
        assert_eq!(setup.backend.stats().calls_started, STREAMS as u64 + 1);
    });
}

#[test]
fn chromium_over_http1_holds_streams_beyond_six_until_others_close() {
    let clients = NodeClients::require_with_chromium();
    let page = page(&clients);
    for_each_driver(|driver| {
        let setup = Setup::start(driver, &page);
        let streams = STREAMS.to_string();
        let params = [
            ("streams", streams.as_str()),
            ("release", "1"),
            ("quiet_ms", "3000"),
            ("deadline_ms", "40000"),
        ];
        let run = setup.run(&clients, &page, &["concurrent_streams"], &params, true);
        run.assert_passed(&["concurrent_streams"]);
        let events = stream_events(&run);
        assert_eq!(of_kind(&events, "first").len(), STREAMS, "{events:?}");
        // Before the page released anything, the browser let at most six streams start; after
        // that, every further first message followed a release that freed a connection.
        let mut releases = 0;
        let mut firsts_after_release = 0;
        for event in &events {
            match event["event"].as_str() {
                Some("release") => releases += 1,
                Some("first") => {
                    assert!(
                        event["open_with_first"].as_u64().unwrap() <= HTTP1_CONNECTIONS_PER_ORIGIN,
                        "more streams open than HTTP/1.1 connections: {event}"
                    );
                    if releases > 0 {
                        firsts_after_release += 1;
                        assert!(
                            firsts_after_release <= releases,
                            "a stream started without a connection freed for it: {events:?}"
                        );
                    }
                }
                _ => {}
            }
        }
        assert!(
            firsts_after_release >= STREAMS as u64 - HTTP1_CONNECTIONS_PER_ORIGIN,
            "{events:?}"
        );
        assert_protocol(&run, "http/1.1", STREAMS + 1);
        assert_eq!(setup.counter(|w| w.tls.alpn_h2.get()), 0);
        assert!(
            setup.counter(|w| w.tls.alpn_http1.get()) >= HTTP1_CONNECTIONS_PER_ORIGIN,
            "six streams open at once need six HTTP/1.1 connections"
        );
        setup.expect_cancelled(STREAMS as u64);
        assert_eq!(setup.backend.stats().calls_started, STREAMS as u64 + 1);
    });
}

/// The basic gRPC-Web calls of tests/clients/src/scenarios.mjs from the page, cross-origin over
/// HTTP/2: what CORS must let through (custom metadata both ways, status details, trailers-only
/// errors read from response headers), deadlines and cancellation.
const PAGE_SCENARIOS: &[&str] = &[
    "unary",
    "server_streaming",
    "metadata",
    "error_details",
    "error_trailers_only",
    "deadline",
    "cancellation",
];

#[test]
fn grpc_web_calls_from_chromium_cross_origin_over_https() {
    let clients = NodeClients::require_with_chromium();
    let page = page(&clients);
    for_each_driver(|driver| {
        let setup = Setup::start(driver, &page);
        let run = setup.run(&clients, &page, PAGE_SCENARIOS, &[], false);
        run.assert_passed(PAGE_SCENARIOS);
        // Every call had a response but the deadline's (its backend never answers).
        assert_protocol(&run, "h2", PAGE_SCENARIOS.len() - 1);
        assert!(setup.counter(|w| w.preflights.get()) >= 1);
        // The deadline's call and the cancelled stream both ended at the backend.
        setup.expect_cancelled(2);
    });
}
