//! Micro-benchmarks of the per-call Connect pieces: classification and request head
//! translation of a browser's unary call, a unary GET's query, the unary response machine (a
//! success, and an error with details), and the streaming relay. Run with
//! `cargo bench --bench connect`.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringway::connect::request::translate_request_head;
use ringway::connect::response::{StreamingHead, StreamingResponse, UnaryResponse};
use ringway::connect::{classify, get, CallKind, Codec, ConnectCall, RequestProtocol};
use std::hint::black_box;

const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The head Chrome sends for a connect-web unary call from another origin.
const BROWSER_HEAD: [(&[u8], &[u8]); 14] = [
    (b"host", b"api.example.com"),
    (b"connection", b"keep-alive"),
    (b"content-length", b"37"),
    (b"content-type", b"application/proto"),
    (b"connect-protocol-version", b"1"),
    (b"connect-timeout-ms", b"15000"),
    (b"accept", b"*/*"),
    (b"origin", b"https://app.example.com"),
    (b"sec-fetch-site", b"same-site"),
    (b"sec-fetch-mode", b"cors"),
    (b"referer", b"https://app.example.com/"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"accept-language", b"en-US,en;q=0.9"),
    (
        b"user-agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
    ),
];

fn frame(payload: &[u8]) -> Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn request(c: &mut Criterion) {
    c.bench_function("connect/classify_unary_post", |b| {
        b.iter(|| {
            classify(
                black_box(b"POST"),
                black_box(b"/acme.v1.Service/Method"),
                black_box(Some(&b"application/proto"[..])),
                black_box(Some(&b"1"[..])),
            )
        })
    });
    let call = ConnectCall {
        kind: CallKind::Unary,
        codec: Codec::Proto,
    };
    c.bench_function("connect/translate_request_head/browser", |b| {
        b.iter(|| translate_request_head(&call, b"", black_box(BROWSER_HEAD), MESSAGE_BYTES_MAX))
    });
    let message: Vec<u8> = (0..32).map(|i| i * 7).collect();
    let query = format!(
        "connect=v1&encoding=proto&base64=1&message={}",
        URL_SAFE_NO_PAD.encode(&message)
    );
    let target = format!("/acme.v1.Service/Method?{query}");
    c.bench_function("connect/get/classify_and_parse_32B", |b| {
        b.iter(|| {
            let RequestProtocol::Connect(_) =
                classify(b"GET", black_box(target.as_bytes()), None, None)
            else {
                unreachable!("the query is a Connect GET");
            };
            get::parse(black_box(query.as_bytes()), MESSAGE_BYTES_MAX)
        })
    });
}

fn unary_response(c: &mut Criterion) {
    let call = ConnectCall {
        kind: CallKind::Unary,
        codec: Codec::Proto,
    };
    let head: [(&[u8], &[u8]); 2] = [
        (b"content-type", b"application/grpc"),
        (b"grpc-accept-encoding", b"gzip"),
    ];
    let data = frame(&[7u8; 64]);
    let ok: [(&[u8], &[u8]); 2] = [(b"grpc-status", b"0"), (b"grpc-message", b"")];
    c.bench_function("connect/unary_response/success_64B", |b| {
        b.iter(|| {
            let mut unary = UnaryResponse::new(&call, MESSAGE_BYTES_MAX);
            assert!(unary.head(200, head, false).is_none());
            unary.data(data.clone()).expect("one message");
            black_box(unary.trailers(ok))
        })
    });
    // google.rpc.Status{code: 14, message: "overloaded", details: [RetryInfo{60s}]}.
    let status = b"\x08\x0e\x12\x0aoverloaded\x1a\x30\x0a\x28type.googleapis.com/google.rpc.RetryInfo\x12\x04\x0a\x02\x08\x3c";
    let details = STANDARD_NO_PAD.encode(status);
    let error: [(&[u8], &[u8]); 3] = [
        (b"grpc-status", b"14"),
        (b"grpc-message", b"overloaded%3A back off"),
        (b"grpc-status-details-bin", details.as_bytes()),
    ];
    c.bench_function("connect/unary_response/error_with_details", |b| {
        b.iter(|| {
            let mut unary = UnaryResponse::new(&call, MESSAGE_BYTES_MAX);
            assert!(unary.head(200, head, false).is_none());
            black_box(unary.trailers(error))
        })
    });
}

fn streaming(c: &mut Criterion) {
    let call = ConnectCall {
        kind: CallKind::Streaming,
        codec: Codec::Proto,
    };
    let head: [(&[u8], &[u8]); 1] = [(b"content-type", b"application/grpc")];
    let messages: Bytes = (0..100).flat_map(|_| frame(&[1u8; 100]).to_vec()).collect();
    let mut group = c.benchmark_group("connect/streaming_relay");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100x100B_in_one_read", |b| {
        let mut out = Vec::with_capacity(4);
        b.iter(|| {
            let mut streaming = StreamingResponse::new(&call, MESSAGE_BYTES_MAX);
            let StreamingHead::Stream(_) = streaming.head(200, head, false) else {
                unreachable!("a gRPC head starts the stream");
            };
            out.clear();
            streaming
                .data(messages.clone(), &mut out)
                .expect("valid frames");
            black_box(&out);
        })
    });
    group.bench_function("100x100B_in_reads_of_7", |b| {
        let pieces: Vec<Bytes> = messages.chunks(7).map(Bytes::copy_from_slice).collect();
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut streaming = StreamingResponse::new(&call, MESSAGE_BYTES_MAX);
            let StreamingHead::Stream(_) = streaming.head(200, head, false) else {
                unreachable!("a gRPC head starts the stream");
            };
            out.clear();
            for piece in &pieces {
                streaming
                    .data(piece.clone(), &mut out)
                    .expect("valid frames");
            }
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, request, unary_response, streaming);
criterion_main!(benches);
