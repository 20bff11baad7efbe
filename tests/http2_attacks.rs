//! Known attacks on an HTTP/2 server, sent as raw frames: each must end in a clear GOAWAY or
//! RST_STREAM within a bounded time, be counted, and leave the worker and the other
//! connections serving. Under both io drivers.

mod common;

use std::time::Duration;

use common::h2client::H2Client;
use common::rawh2::*;
use common::*;
use ringway::server::Server;
use ringway::stats::H2_REASON_NAMES;

/// How long an attack may take to be answered (a hang, not a timing check).
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

fn reason_index(name: &str) -> usize {
    H2_REASON_NAMES.iter().position(|n| *n == name).unwrap()
}

/// Start a proxy and a backend, open a well-behaved HTTP/2 client first, run `attack`, then
/// check that the well-behaved client (and a new one) are still served.
fn under_attack(
    extra_flags: &[&str],
    attack: impl Fn(&Server, &ringway_load::backend::BackendHandle),
) {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], extra_flags);
        let mut bystander = H2Client::connect(proxy.local_addr());
        assert_eq!(
            bystander.grpc_unary(UNARY, &[], b"before").grpc_status(),
            Some(0)
        );
        attack(&proxy, &backend);
        assert_eq!(
            bystander.grpc_unary(UNARY, &[], b"after").grpc_status(),
            Some(0)
        );
        let mut newcomer = H2Client::connect(proxy.local_addr());
        assert_eq!(
            newcomer.grpc_unary(UNARY, &[], b"new").grpc_status(),
            Some(0)
        );
    });
}

/// CVE-2023-44487: HEADERS then RST_STREAM, in a loop.
#[test]
fn rapid_reset_gets_goaway_enhance_your_calm() {
    under_attack(&[], |proxy, backend| {
        let mut raw = RawH2::connect(proxy.local_addr());
        for i in 0..2000u32 {
            let stream = 2 * i + 1;
            let ok = raw.request(stream, UNARY, &[], false)
                && raw.frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
            if !ok {
                break;
            }
        }
        assert_eq!(raw.goaway_code(ANSWER_LIMIT), Some(ENHANCE_YOUR_CALM));
        let calm = reason_index("ENHANCE_YOUR_CALM");
        assert!(wait_until(ANSWER_LIMIT, || totals(proxy)
            .http2_goaways_sent[calm]
            >= 1));
        // The attack was cut short: nowhere near 2,000 calls reached the backend.
        assert!(backend.stats().calls_started < 500, "{:?}", backend.stats());
    });
}

#[test]
fn continuation_flood_gets_goaway() {
    under_attack(&[], |proxy, _| {
        let mut raw = RawH2::connect(proxy.local_addr());
        let fragment = header_block(&[("x-filler", "0123456789abcdef")]);
        raw.frame(HEADERS, 0, 1, &header_block(&[(":method", "POST")]));
        for _ in 0..20_000 {
            if !raw.frame(CONTINUATION, 0, 1, &fragment) {
                break;
            }
        }
        let code = raw.goaway_code(ANSWER_LIMIT).expect("GOAWAY");
        assert_ne!(code, NO_ERROR);
        assert!(wait_until(ANSWER_LIMIT, || {
            totals(proxy).http2_goaways_sent.iter().sum::<u64>() >= 1
        }));
    });
}

#[test]
fn settings_and_ping_floods_get_goaway_enhance_your_calm() {
    under_attack(&[], |proxy, _| {
        for (kind, payload) in [(SETTINGS, &[][..]), (PING, &[0u8; 8][..])] {
            let mut raw = RawH2::connect(proxy.local_addr());
            for _ in 0..2000 {
                if !raw.frame(kind, 0, 0, payload) {
                    break;
                }
            }
            assert_eq!(
                raw.goaway_code(ANSWER_LIMIT),
                Some(ENHANCE_YOUR_CALM),
                "type {kind}"
            );
        }
        // One ping and one settings flood.
        assert!(wait_until(ANSWER_LIMIT, || totals(proxy).http2_floods == [1, 1, 0, 0]));
    });
}

#[test]
fn empty_data_flood_gets_goaway_enhance_your_calm() {
    under_attack(&[], |proxy, _| {
        let mut raw = RawH2::connect(proxy.local_addr());
        raw.request(1, UNARY, &[], false);
        for _ in 0..2000 {
            if !raw.frame(DATA, 0, 1, &[]) {
                break;
            }
        }
        assert_eq!(raw.goaway_code(ANSWER_LIMIT), Some(ENHANCE_YOUR_CALM));
    });
}

#[test]
fn window_update_overflow_is_a_flow_control_error() {
    under_attack(&[], |proxy, _| {
        // On a stream: that stream is reset.
        let mut raw = RawH2::connect(proxy.local_addr());
        raw.acknowledge_settings();
        raw.request(1, UNARY, &[], false);
        raw.frame(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes());
        raw.frame(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes());
        let mut seen = Vec::new();
        let reset = raw
            .read_until(ANSWER_LIMIT, &mut seen, |f| {
                f.kind == RST_STREAM && f.stream == 1
            })
            .expect("RST_STREAM on the stream");
        assert_eq!(reset.error_code(), Some(FLOW_CONTROL_ERROR));
        // On the connection: the connection ends.
        let mut raw = RawH2::connect(proxy.local_addr());
        raw.frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes());
        raw.frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes());
        assert_eq!(raw.goaway_code(ANSWER_LIMIT), Some(FLOW_CONTROL_ERROR));
        // Counted as the frames are handed to the socket, which may be a moment after the
        // client read them.
        let flow = reason_index("FLOW_CONTROL_ERROR");
        assert!(wait_until(ANSWER_LIMIT, || {
            let t = totals(proxy);
            t.http2_resets_sent[flow] >= 1 && t.http2_goaways_sent[flow] >= 1
        }));
    });
}

/// A stream whose body never comes ends with a status after the body read timeout, and its
/// upstream call is cancelled.
#[test]
fn a_body_that_never_comes_ends_the_stream() {
    under_attack(&["--header-read-timeout-ms", "300"], |proxy, backend| {
        let mut raw = RawH2::connect(proxy.local_addr());
        raw.request(1, UNARY, &[], false);
        let mut seen = Vec::new();
        let end = raw
            .read_until(ANSWER_LIMIT, &mut seen, |f| {
                f.stream == 1 && (f.kind == RST_STREAM || f.flags & END_STREAM != 0)
            })
            .expect("the stream ends");
        assert_eq!(end.kind, HEADERS, "a trailers-only status: {seen:?}");
        assert!(wait_until(ANSWER_LIMIT, || backend
            .stats()
            .cancelled_by_client
            == 1));
        // The client never finishes its body either: the stream is then reset with NO_ERROR.
        let reset = raw
            .read_until(ANSWER_LIMIT, &mut seen, |f| {
                f.stream == 1 && f.kind == RST_STREAM
            })
            .expect("RST_STREAM(NO_ERROR)");
        assert_eq!(reset.error_code(), Some(NO_ERROR));
    });
}

#[test]
fn a_header_list_over_the_limit_is_refused() {
    under_attack(
        &["--http2-header-list-bytes-max", "4096"],
        |proxy, backend| {
            let mut raw = RawH2::connect(proxy.local_addr());
            raw.acknowledge_settings();
            // Over the 4 KiB limit, under h2's abuse limit (twice the limit, past which the whole
            // connection is closed instead): the stream alone is refused.
            let big = "v".repeat(6_000);
            raw.request(1, UNARY, &[("x-big", &big)], true);
            // h2 answers 431 and ends the stream (the request had ended too, so no reset is
            // needed; a request still sending would also get RST_STREAM(REFUSED_STREAM)).
            let mut seen = Vec::new();
            let answer = raw
                .read_until(ANSWER_LIMIT, &mut seen, |f| f.stream == 1)
                .unwrap_or_else(|| panic!("an answer on stream 1: {seen:?}"));
            assert_eq!(answer.status(), Some(431), "{answer:?}");
            assert!(answer.flags & END_STREAM != 0);
            assert_eq!(
                backend.stats().calls_started,
                1,
                "only the bystander's call"
            );
        },
    );
}

#[test]
fn streams_over_the_limit_are_refused() {
    under_attack(&["--http2-streams-max", "2"], |proxy, _| {
        let mut raw = RawH2::connect(proxy.local_addr());
        raw.acknowledge_settings();
        for stream in [1, 3, 5] {
            raw.request(stream, UNARY, &[("x-delay-ms", "2000")], false);
        }
        let mut seen = Vec::new();
        let reset = raw
            .read_until(ANSWER_LIMIT, &mut seen, |f| f.kind == RST_STREAM)
            .expect("RST_STREAM");
        assert_eq!(
            (reset.stream, reset.error_code()),
            (5, Some(REFUSED_STREAM))
        );
    });
}

#[test]
fn a_preface_followed_by_garbage_gets_goaway() {
    under_attack(&[], |proxy, _| {
        let mut raw = RawH2::connect(proxy.local_addr());
        raw.write(b"\x00\x00\x04\xffgarbage that is not a frame at all");
        let code = raw.goaway_code(ANSWER_LIMIT).expect("GOAWAY");
        assert_ne!(code, NO_ERROR);
        assert!(wait_until(ANSWER_LIMIT, || totals(proxy)
            .http2_protocol_errors
            >= 1));
    });
}
