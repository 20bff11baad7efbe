//! Fuzz the `grpc-status-details-bin` reader and the error JSON written from upstream trailers.
//!
//! The first byte picks the `grpc-status`; the rest is used three ways, each checked with an
//! independent JSON parser (serde_json, in this crate only: the proxy writes JSON by hand):
//! - as a `google.rpc.Status` encoding: `parse_status` never panics, keeps at most
//!   `DETAILS_MAX` details, and every slice it returns lies inside the input;
//! - as a JSON string: `write_string` always gives valid JSON that decodes to the input read as
//!   lossy UTF-8;
//! - as trailers (the bytes base64'd into `grpc-status-details-bin`, and raw as `grpc-message`
//!   and a metadata value) ending a unary and a streaming call: the unary body is a JSON error
//!   whose code is a Connect name and whose details are exactly the parsed ones, type and base64
//!   value each; the end-of-stream envelope is framed right and is valid JSON.
#![no_main]

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ringway::connect::json::write_string;
use ringway::connect::response::{StreamEnd, StreamingHead, StreamingResponse, UnaryResponse};
use ringway::connect::status_details::{parse_status, Detail, DETAILS_BIN_BYTES_MAX, DETAILS_MAX};
use ringway::connect::{code_from_name, CallKind, Codec, ConnectCall};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&status_seed, rest)) = data.split_first() else {
        return;
    };
    status_reader(rest);
    json_string(rest);
    trailers(status_seed % 20, rest);
});

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let start = outer.as_ptr() as usize;
    let at = inner.as_ptr() as usize;
    inner.is_empty() || (at >= start && at + inner.len() <= start + outer.len())
}

fn status_reader(bytes: &[u8]) {
    let Ok(status) = parse_status(bytes) else {
        return;
    };
    assert!(status.details.len() <= DETAILS_MAX);
    assert!(within(bytes, status.message));
    for detail in &status.details {
        assert!(within(bytes, detail.type_url) && within(bytes, detail.value));
        assert!(detail.type_url.ends_with(detail.type_name()));
    }
}

fn json_string(bytes: &[u8]) {
    let mut out = Vec::new();
    write_string(&mut out, bytes);
    let decoded: String = serde_json::from_slice(&out).expect("write_string wrote invalid JSON");
    assert_eq!(decoded, String::from_utf8_lossy(bytes));
}

fn call(kind: CallKind) -> ConnectCall {
    ConnectCall {
        kind,
        codec: Codec::Json,
    }
}

fn trailers(code: u8, bytes: &[u8]) {
    let status = code.to_string();
    let details = STANDARD_NO_PAD.encode(bytes);
    let list: [(&[u8], &[u8]); 4] = [
        (b"grpc-status", status.as_bytes()),
        (b"grpc-message", bytes),
        (b"grpc-status-details-bin", details.as_bytes()),
        (b"x-meta", bytes),
    ];
    let head: [(&[u8], &[u8]); 1] = [(b"content-type", b"application/grpc+json")];

    // What the details trailer holds, if anything: the Status's details when it parses.
    let parsed = parse_status(bytes)
        .ok()
        .filter(|_| details.len() <= DETAILS_BIN_BYTES_MAX);
    let expected = parsed.map(|status| status.details).unwrap_or_default();

    let mut unary = UnaryResponse::new(&call(CallKind::Unary), 1024);
    assert_eq!(unary.head(200, head, false), None);
    let response = unary.trailers(list);
    let error: Value = serde_json::from_slice(&response.body).expect("error body is not JSON");
    let name = error["code"].as_str().expect("code is a string");
    assert!(
        code_from_name(name.as_bytes()).is_some(),
        "{name} is no Connect code"
    );
    assert!(error.get("message").is_none_or(Value::is_string));
    if code == 0 {
        // OK without a message breaks unary cardinality: the proxy's own error, no details.
        assert_eq!(response.status, 501);
        check_details(&error, &[]);
    } else {
        check_details(&error, &expected);
    }

    let mut streaming = StreamingResponse::new(&call(CallKind::Streaming), 1024);
    let StreamingHead::Stream(_) = streaming.head(200, head, false) else {
        panic!("a gRPC head must start the stream");
    };
    let StreamEnd::Envelope(end) = streaming.trailers(list) else {
        panic!("a stream at a boundary must end with an envelope");
    };
    assert_eq!(end[0], 0x02);
    assert_eq!(
        u32::from_be_bytes([end[1], end[2], end[3], end[4]]) as usize,
        end.len() - 5
    );
    let end: Value = serde_json::from_slice(&end[5..]).expect("end of stream is not JSON");
    let metadata = &end["metadata"]["x-meta"];
    assert_eq!(
        metadata[0].as_str(),
        Some(String::from_utf8_lossy(bytes).as_ref())
    );
    if code == 0 {
        assert!(end.get("error").is_none());
    } else {
        check_details(&end["error"], &expected);
    }
}

/// The JSON details are exactly `expected`: type names, and unpadded base64 of the values.
fn check_details(error: &Value, expected: &[Detail<'_>]) {
    let details = error
        .get("details")
        .map(|d| d.as_array().expect("details is an array"));
    let details = details.map(Vec::as_slice).unwrap_or_default();
    assert_eq!(details.len(), expected.len());
    for (json, detail) in details.iter().zip(expected) {
        let type_name = json["type"].as_str().expect("type is a string");
        assert_eq!(type_name, String::from_utf8_lossy(detail.type_name()));
        let value = json["value"].as_str().expect("value is a string");
        assert!(!value.contains('='), "detail values are unpadded");
        let padded = format!("{value}{}", "=".repeat((4 - value.len() % 4) % 4));
        assert_eq!(
            STANDARD.decode(padded).expect("value is base64"),
            detail.value
        );
    }
}
