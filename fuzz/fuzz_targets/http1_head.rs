//! Fuzz `http1::parse_request_head`: arbitrary bytes must never panic, and what it returns must
//! agree with what it consumed.
//!
//! Invariants checked:
//! - a parsed head consumes at least one byte and no more than `header_bytes_max`, and never
//!   more than the input; an incomplete or rejected head consumes nothing;
//! - the path and every header name and value are slices of the consumed head (zero copy);
//! - header count stays within `header_count_max`; `Chunked` and `Length` never come together
//!   with the opposite header, and HTTP/1.1 heads carry a Host;
//! - splitting the input in two does not change the outcome: every proper prefix of a head that
//!   parses is "need more", and the whole parses to the same head;
//! - pipelined heads in one buffer parse one after another until the buffer runs out.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringway::http1::{parse_request_head, BodyKind, HeadLimits, RequestHead, Version};

fuzz_target!(|data: &[u8]| {
    // The first byte picks small limits sometimes, so the limit paths get exercised too.
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        header_bytes_max: if knob & 1 == 0 {
            8 * 1024
        } else {
            usize::from(knob)
        },
        header_count_max: usize::from(knob >> 3) + 1,
    };
    check_pipeline(input, &limits);
    check_split(input, &limits, usize::from(knob));
});

fn check_pipeline(input: &[u8], limits: &HeadLimits) {
    let mut buf = BytesMut::from(input);
    loop {
        let before = buf.len();
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + before;
        match parse_request_head(&mut buf, limits) {
            Ok(Some(head)) => {
                let consumed = before - buf.len();
                assert!(consumed > 0 && consumed <= before);
                assert!(consumed <= limits.header_bytes_max);
                check_head(&head, range.start..range.start + consumed, limits);
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before, "nothing is consumed without a head");
                return;
            }
        }
    }
}

fn check_head(head: &RequestHead, consumed: std::ops::Range<usize>, limits: &HeadLimits) {
    let inside = |bytes: &[u8]| {
        let start = bytes.as_ptr() as usize;
        bytes.is_empty() || (consumed.contains(&start) && start + bytes.len() <= consumed.end)
    };
    assert!(!head.path.is_empty() && inside(&head.path));
    assert!(head.headers.len() <= limits.header_count_max);
    for header in &head.headers {
        assert!(!header.name.is_empty() && inside(&header.name) && inside(&header.value));
    }
    let has = |name: &str| {
        head.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
    };
    match head.body {
        BodyKind::Chunked => assert!(!has("content-length") && head.version == Version::Http11),
        BodyKind::Length(n) => assert!(n > 0 && !has("transfer-encoding")),
        BodyKind::Empty => assert!(!has("transfer-encoding")),
    }
    if head.version == Version::Http11 {
        assert!(head.host.is_some());
    } else {
        assert!(!head.expect_continue);
    }
}

fn check_split(input: &[u8], limits: &HeadLimits, cut: usize) {
    let mut whole_buf = BytesMut::from(input);
    let Ok(Some(head)) = parse_request_head(&mut whole_buf, limits) else {
        return;
    };
    let head_len = input.len() - whole_buf.len();
    let cut = cut % head_len;
    // A head is complete only once its last byte is in; any shorter prefix is "need more".
    for prefix_len in [cut, head_len - 1] {
        let mut prefix = BytesMut::from(&input[..prefix_len]);
        assert!(matches!(parse_request_head(&mut prefix, limits), Ok(None)));
        assert_eq!(prefix.len(), prefix_len);
    }
    let mut buf = BytesMut::from(&input[..cut]);
    assert!(matches!(parse_request_head(&mut buf, limits), Ok(None)));
    buf.extend_from_slice(&input[cut..]);
    let Ok(Some(again)) = parse_request_head(&mut buf, limits) else {
        panic!("a head that parses whole failed when split at {cut}");
    };
    assert_eq!(buf.len(), whole_buf.len());
    assert_eq!(head.method, again.method);
    assert_eq!(head.path, again.path);
    assert_eq!(head.headers, again.headers);
    assert_eq!(head.body, again.body);
    assert_eq!(head.keep_alive, again.keep_alive);
    assert_eq!(head.expect_continue, again.expect_continue);
}
