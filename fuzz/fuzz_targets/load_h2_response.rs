//! Fuzz the HTTP/2 load mode's judgement (`ringway_load::load::wire_h2::judge`): an HTTP/2
//! response as the h2 client hands it over (status, headers, DATA bytes, trailers), judged as
//! native gRPC and as gRPC-Web in both modes, for unary and streaming calls.
//!
//! The first bytes pick the status, the content type and whether trailers exist; header and
//! trailer values are taken from the input wherever they are valid header values. The judgement
//! must never panic, and a pod it names must be one of the values the response carried.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ringway_load::load::wire::{CallKind, Mode};
use ringway_load::load::wire_h2::{judge, H2Response, Protocol};

const CONTENT_TYPES: [&str; 5] = [
    "application/grpc",
    "application/grpc+proto",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let [status_seed, shape, value_len, rest @ ..] = data else {
        return;
    };
    let value_len = usize::from(*value_len % 16).min(rest.len());
    let (value, body) = rest.split_at(value_len);
    let status = [200, 200, 200, 503, 204][usize::from(*status_seed % 5)];
    let mut headers = HeaderMap::new();
    let content_type = CONTENT_TYPES[usize::from(shape % 5)];
    headers.insert("content-type", HeaderValue::from_static(content_type));
    let value = HeaderValue::from_bytes(value).ok();
    if let Some(value) = &value {
        if shape & 0x08 != 0 {
            headers.insert("grpc-status", value.clone());
        }
        if shape & 0x10 != 0 {
            headers.insert("x-backend", value.clone());
        }
    }
    let mut trailers = HeaderMap::new();
    if let Some(value) = &value {
        if shape & 0x20 != 0 {
            trailers.insert("grpc-status", value.clone());
            trailers.insert("x-backend", value.clone());
        }
    }
    let response = H2Response {
        status,
        headers: &headers,
        body,
        trailers: (shape & 0x40 != 0).then_some(&trailers),
    };
    let mut scratch = Vec::new();
    for protocol in [Protocol::Grpc, Protocol::GrpcWeb] {
        for mode in [Mode::Binary, Mode::Text] {
            for call in [CallKind::Unary, CallKind::ServerStream] {
                let (_, pod) = judge(response, protocol, mode, call, "x-backend", &mut scratch);
                if let Some(pod) = pod {
                    // A pod comes from a header or trailer value, or from a gRPC-Web trailer
                    // frame inside the body (decoded from base64 in text mode).
                    let from_value = value.as_ref().is_some_and(|v| v.as_bytes().trim_ascii() == pod.as_bytes());
                    assert!(from_value || protocol == Protocol::GrpcWeb, "pod {pod:?} from nowhere");
                }
            }
        }
    }
});
