//! Micro-benchmarks of the per-request gRPC-Web pieces: content-type classification, trailer
//! frame encoding, text-mode base64 in both directions, and the CORS headers of an actual
//! response. Run with `cargo bench --bench grpc_web`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringway::cors::CorsPolicy;
use ringway::grpc_web::{
    classify_content_type, encode_base64_flush, encode_trailer_frame, Base64Decoder,
};
use ringway::testing::FrameParser;
use std::hint::black_box;

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn content_type(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify_content_type");
    for value in [
        &b"application/grpc-web-text"[..],
        b"application/grpc-web+proto",
        b"Application/GRPC-Web-Text+Proto; charset=utf-8",
    ] {
        let name = String::from_utf8_lossy(value).into_owned();
        group.bench_function(name, |b| b.iter(|| classify_content_type(black_box(value))));
    }
    group.finish();
}

fn trailer_frame(c: &mut Criterion) {
    let trailers: [(&[u8], &[u8]); 3] = [
        (b"grpc-status", b"0"),
        (b"grpc-message", b"OK"),
        (b"x-request-id", b"6f1d2c3e-9a7b-4c1d-8e2f-0a1b2c3d4e5f"),
    ];
    let mut out = BytesMut::with_capacity(256);
    c.bench_function("encode_trailer_frame/3", |b| {
        b.iter(|| {
            out.clear();
            encode_trailer_frame(black_box(trailers), &mut out);
            black_box(&out);
        })
    });
    let mut encoded = BytesMut::new();
    encode_trailer_frame(trailers, &mut encoded);
    let encoded = encoded.freeze();
    c.bench_function("parse_trailer_frame/3", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            black_box(FrameParser::new(4096).parse(&mut buf))
        })
    });
}

fn base64(c: &mut Criterion) {
    let mut group = c.benchmark_group("base64");
    for len in [16, 64 * 1024] {
        let raw = message(len);
        let text = STANDARD.encode(&raw);
        let mut out = BytesMut::with_capacity(len + 16);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("decode/{len}"), |b| {
            b.iter(|| {
                out.clear();
                let mut decoder = Base64Decoder::new();
                decoder
                    .decode(black_box(text.as_bytes()), &mut out)
                    .unwrap();
                decoder.finish(&mut out).unwrap();
                black_box(&out);
            })
        });
        group.throughput(Throughput::Bytes(len as u64));
        let mut encoded = BytesMut::with_capacity(text.len() + 16);
        group.bench_function(format!("encode_flush/{len}"), |b| {
            b.iter(|| {
                encoded.clear();
                encode_base64_flush(black_box(&raw), &mut encoded);
                black_box(&encoded);
            })
        });
    }
    // A 64 KiB body arriving in 1460-byte TCP segments, so most calls carry a partial quantum.
    let raw = message(64 * 1024);
    let text = STANDARD.encode(&raw);
    let mut out = BytesMut::with_capacity(raw.len() + 16);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("decode_segments_1460/65536", |b| {
        b.iter(|| {
            out.clear();
            let mut decoder = Base64Decoder::new();
            for segment in text.as_bytes().chunks(1460) {
                decoder.decode(black_box(segment), &mut out).unwrap();
            }
            decoder.finish(&mut out).unwrap();
            black_box(&out);
        })
    });
    group.finish();
}

fn cors(c: &mut Criterion) {
    let policy = CorsPolicy::default();
    let origin = Bytes::from_static(b"https://app.example.com");
    c.bench_function("cors_actual_headers/no_custom", |b| {
        b.iter(|| black_box(policy.actual_headers(black_box(Some(&origin)), [])))
    });
    let names: [&[u8]; 4] = [
        b"content-type",
        b"grpc-status",
        b"x-request-id",
        b"x-trace-bin",
    ];
    c.bench_function("cors_actual_headers/4_names", |b| {
        b.iter(|| black_box(policy.actual_headers(black_box(Some(&origin)), names)))
    });
    let request_headers = Bytes::from_static(b"content-type,x-grpc-web,x-user-agent");
    c.bench_function("cors_preflight", |b| {
        b.iter(|| black_box(policy.preflight(Some(&origin), Some(&request_headers))))
    });
}

criterion_group!(benches, content_type, trailer_frame, base64, cors);
criterion_main!(benches);
