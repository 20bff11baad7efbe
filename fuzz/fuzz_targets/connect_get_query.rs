//! Fuzz the Connect unary GET query decoder.
//!
//! The first byte picks the message limit, the second one of a few query starts (so that random
//! bytes reach each parameter's checks quickly); the rest is used twice.
//! - As a query after that start, it goes to `get::parse` and to the classifier: neither panics; a decoded
//!   request's frame has a correct prefix, a message within the limit, and the compressed flag
//!   only with a `compression` and a non-empty message; the classifier agrees (a query it calls
//!   "not Connect" or refuses is refused by the parser with the same error, and a parsed query
//!   is classified as a Connect GET of the same codec).
//! - As a message, it is encoded the ways clients do (unpadded URL-safe base64, padded with
//!   `%3D`, percent-encoding of every byte, and with the message parameter first or last among
//!   unknown parameters) and must decode back to itself.
#![no_main]

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ringway::connect::{classify, get, RequestProtocol};

/// Starts of queries, so that random bytes reach the message decoder and each parameter's
/// checks within a short run, without a dictionary.
const QUERY_HEADS: [&str; 9] = [
    "",
    "encoding=json&message=",
    "encoding=proto&base64=1&message=",
    "connect=v1&encoding=proto&base64=1&compression=gzip&message=",
    "message=",
    "message=x&encoding=",
    "encoding=json&message=x&connect=",
    "encoding=json&message=&compression=",
    "base64=1&encoding=json&",
];

fuzz_target!(|data: &[u8]| {
    let [limit_seed, head_seed, rest @ ..] = data else {
        return;
    };
    let message_bytes_max = usize::from(*limit_seed) * 8;
    let head = QUERY_HEADS[usize::from(*head_seed) % QUERY_HEADS.len()];
    arbitrary_query(&[head.as_bytes(), rest].concat(), message_bytes_max);
    round_trip(rest, message_bytes_max);
});

fn arbitrary_query(query: &[u8], max: usize) {
    let parsed = get::parse(query, max);
    let target = [b"/svc/Method?".as_slice(), query].concat();
    let classified = classify(b"GET", &target, None, None);
    if let Ok(request) = &parsed {
        let message = request.message();
        assert!(message.len() <= max, "message over the limit");
        let prefix = &request.frame[..5];
        assert_eq!(
            u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize,
            message.len()
        );
        let compressed = request.compression.is_some() && !message.is_empty();
        assert_eq!(prefix[0], u8::from(compressed));
        match &classified {
            RequestProtocol::Connect(call) => assert_eq!(call.codec, request.codec),
            other => panic!("parsed, but classified as {other:?}"),
        }
    }
    match classified {
        RequestProtocol::Unknown => assert!(parsed.is_err(), "not Connect, yet parsed"),
        RequestProtocol::ConnectRefused(_, error) => assert_eq!(parsed, Err(error)),
        RequestProtocol::Connect(_) => {}
        other => panic!("a GET classified as {other:?}"),
    }
}

fn round_trip(message: &[u8], max: usize) {
    let unpadded = URL_SAFE_NO_PAD.encode(message);
    let padded = URL_SAFE.encode(message).replace('=', "%3D");
    let escaped: String = message.iter().map(|b| format!("%{b:02X}")).collect();
    let queries = [
        format!("connect=v1&encoding=proto&base64=1&message={unpadded}"),
        format!("message={padded}&x=%ZZ&base64=1&encoding=proto&y"),
        format!("encoding=json&message={escaped}"),
        format!("message={escaped}&encoding=json&base64=0"),
    ];
    for query in queries {
        match get::parse(query.as_bytes(), max) {
            Ok(request) => assert_eq!(request.message(), message, "{query}"),
            Err(error) => assert!(message.len() > max, "{query}: {error}"),
        }
    }
}
