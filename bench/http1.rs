//! Benchmarks for the HTTP/1.1 hot path: parsing a browser's gRPC-Web request head and decoding
//! a small chunked body. Run with `cargo bench --bench http1`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringway::http1::{parse_request_head, ChunkEvent, ChunkedDecoder, HeadLimits, Version};
use ringway::testing::encode_response_head;

/// What Chrome sends for a unary grpc-web call made with grpc-web-javascript from another origin
/// (18 header fields, 650 bytes).
const CHROME_HEAD: &[u8] = b"POST /echo.EchoService/Echo HTTP/1.1\r\n\
Host: api.example.com\r\n\
Connection: keep-alive\r\n\
Content-Length: 54\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
X-User-Agent: grpc-web-javascript/0.1\r\n\
sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n\
Content-Type: application/grpc-web+proto\r\n\
sec-ch-ua-mobile: ?0\r\n\
X-Grpc-Web: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
Chrome/131.0.0.0 Safari/537.36\r\n\
Accept: */*\r\n\
Origin: https://app.example.com\r\n\
Sec-Fetch-Site: same-site\r\n\
Sec-Fetch-Mode: cors\r\n\
Sec-Fetch-Dest: empty\r\n\
Referer: https://app.example.com/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
\r\n";

/// A 54-byte gRPC-Web message (5-byte frame header and 49 bytes of protobuf) sent as two chunks,
/// the way a streaming fetch upload might cut it.
const CHUNKED_BODY: &[u8] = b"5\r\n\x00\x00\x00\x00\x31\r\n\
31\r\n\x0a\x2fHello from the browser, this is a grpc-web call\r\n\
0\r\n\r\n";

const LIMITS: HeadLimits = HeadLimits {
    header_bytes_max: 16 * 1024,
    header_count_max: 64,
};

fn bench_head(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_head");
    group.throughput(Throughput::Bytes(CHROME_HEAD.len() as u64));
    group.bench_function("parse_chrome_grpc_web", |b| {
        b.iter_batched(
            || BytesMut::from(CHROME_HEAD),
            |mut buf| parse_request_head(&mut buf, black_box(&LIMITS)),
            BatchSize::SmallInput,
        )
    });
    // httparse alone, on the same bytes: the floor under `parse_chrome_grpc_web`, so the cost of
    // our checks and of building the zero-copy head can be read off as the difference.
    group.bench_function("httparse_baseline", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            black_box(request.parse(black_box(CHROME_HEAD)).is_ok())
        })
    });
    // As the connection loop does it: one read buffer reused across requests, so the copy of the
    // head into it and dropping the parsed head are part of the cost.
    group.bench_function("read_and_parse_reused_buffer", |b| {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            buf.extend_from_slice(black_box(CHROME_HEAD));
            let head = parse_request_head(&mut buf, &LIMITS);
            black_box(head.map(|head| head.map(|head| head.headers.len())))
        })
    });
    group.finish();
}

fn bench_chunked(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_chunked");
    group.throughput(Throughput::Bytes(CHUNKED_BODY.len() as u64));
    group.bench_function("decode_small_body", |b| {
        b.iter_batched(
            || BytesMut::from(CHUNKED_BODY),
            |mut buf| {
                let mut decoder = ChunkedDecoder::new(4 * 1024 * 1024);
                let mut data_bytes = 0;
                while let Ok(Some(ChunkEvent::Data(data))) = decoder.decode(&mut buf) {
                    data_bytes += data.len();
                }
                black_box(data_bytes)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_response(c: &mut Criterion) {
    let headers: [(&[u8], &[u8]); 4] = [
        (b"content-type", b"application/grpc-web+proto"),
        (b"transfer-encoding", b"chunked"),
        (b"access-control-allow-origin", b"https://app.example.com"),
        (
            b"access-control-expose-headers",
            b"grpc-status,grpc-message",
        ),
    ];
    let mut out = BytesMut::with_capacity(4096);
    c.bench_function("http1_response/encode_head", |b| {
        b.iter(|| {
            out.clear();
            encode_response_head(&mut out, Version::Http11, 200, black_box(&headers));
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench_head, bench_chunked, bench_response);
criterion_main!(benches);
