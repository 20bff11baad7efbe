//! Fuzz the Connect / gRPC envelope readers and the response state machines built on them.
//!
//! The first byte picks the message limit and whether the compressed flag is allowed, the
//! second the size of the pieces the rest is fed in, as reads would cut it. The same bytes go
//! to the zero-copy `EnvelopeParser` and to the streaming `EnvelopeRelay`, which must agree:
//! - neither panics, the parser never returns an envelope over the limit, consumes nothing
//!   when it needs more, and consumes exactly five bytes plus the payload per envelope;
//! - the relay forwards a prefix of the input, never an empty piece, and holds back at most
//!   four bytes (a cut prefix) at any time;
//! - both refuse the same input with the same error, and then the relay has forwarded exactly
//!   the whole envelopes the parser returned (nothing of the refused prefix);
//! - at the end, both call the stream whole or truncated alike, and a whole stream was
//!   forwarded entirely.
//!
//! The same bytes are then the DATA of an upstream gRPC response to a unary and to a streaming
//! Connect call: neither machine panics, a unary answer never holds more than the limit, and a
//! stream's forwarded bytes are a prefix of the input followed by at most one end-of-stream
//! envelope.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringway::connect::envelope::{EnvelopeError, EnvelopeParser, EnvelopeRelay};
use ringway::connect::response::{StreamEnd, StreamingHead, StreamingResponse, UnaryResponse};
use ringway::connect::{CallKind, Codec, ConnectCall};

fuzz_target!(|data: &[u8]| {
    let [limit_seed, piece_seed, rest @ ..] = data else {
        return;
    };
    let message_bytes_max = usize::from(limit_seed >> 1) * 4;
    let compressed_allowed = limit_seed & 1 == 1;
    let piece = usize::from(*piece_seed).max(1);
    compare_readers(rest, message_bytes_max, compressed_allowed, piece);
    unary_response(rest, message_bytes_max, compressed_allowed, piece);
    streaming_response(rest, message_bytes_max, compressed_allowed, piece);
});

/// What a reader made of the whole input.
#[derive(Debug, PartialEq)]
enum Ending {
    Refused(EnvelopeError),
    Finished(Result<(), EnvelopeError>),
}

fn compare_readers(input: &[u8], max: usize, compressed_allowed: bool, piece: usize) {
    let (parsed, parse_end) = parse_all(input, max, compressed_allowed, piece);
    let (forwarded, relay_end) = relay_all(input, max, compressed_allowed, piece);
    assert_eq!(parse_end, relay_end, "the readers disagree");
    match parse_end {
        Ending::Refused(_) => assert_eq!(forwarded, parsed, "relay forwarded past a refusal"),
        Ending::Finished(Ok(())) => {
            assert_eq!(parsed, input, "a whole stream parsed short");
            assert_eq!(forwarded, input, "a whole stream forwarded short");
        }
        Ending::Finished(Err(_)) => {}
    }
}

fn parse_all(
    input: &[u8],
    max: usize,
    compressed_allowed: bool,
    piece: usize,
) -> (Vec<u8>, Ending) {
    let mut parser = EnvelopeParser::messages(max, compressed_allowed);
    let mut buf = BytesMut::new();
    let mut parsed = Vec::new();
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match parser.parse(&mut buf) {
                Ok(Some(envelope)) => {
                    let payload = envelope.payload();
                    assert!(payload.len() <= max, "envelope over the limit");
                    assert_eq!(before - buf.len(), 5 + payload.len());
                    assert_eq!(envelope.frame[0], envelope.flags);
                    assert!(envelope.flags <= 1 && (compressed_allowed || envelope.flags == 0));
                    parsed.extend_from_slice(&envelope.frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "need-more consumed bytes");
                    break;
                }
                Err(error) => return (parsed, Ending::Refused(error)),
            }
        }
    }
    (parsed, Ending::Finished(parser.finish(&buf)))
}

fn relay_all(
    input: &[u8],
    max: usize,
    compressed_allowed: bool,
    piece: usize,
) -> (Vec<u8>, Ending) {
    let mut relay = EnvelopeRelay::messages(max, compressed_allowed);
    let mut forwarded = Vec::new();
    let mut fed = 0;
    for chunk in input.chunks(piece) {
        fed += chunk.len();
        let mut out = Vec::new();
        let result = relay.relay(Bytes::copy_from_slice(chunk), &mut out);
        for piece in &out {
            assert!(!piece.is_empty(), "empty piece forwarded");
            forwarded.extend_from_slice(piece);
        }
        assert!(
            input.starts_with(&forwarded),
            "forwarded bytes are not the input"
        );
        if let Err(error) = result {
            assert!(relay.at_boundary());
            return (forwarded, Ending::Refused(error));
        }
        assert!(fed - forwarded.len() <= 4, "more than a prefix held back");
    }
    (forwarded, Ending::Finished(relay.finish()))
}

fn proto_call(kind: CallKind) -> ConnectCall {
    ConnectCall {
        kind,
        codec: Codec::Proto,
    }
}

fn grpc_head(compressed_allowed: bool) -> Vec<(&'static [u8], &'static [u8])> {
    let mut head: Vec<(&[u8], &[u8])> = vec![(b"content-type", b"application/grpc")];
    if compressed_allowed {
        head.push((b"grpc-encoding", b"gzip"));
    }
    head
}

const OK_TRAILERS: [(&[u8], &[u8]); 2] = [(b"grpc-status", b"0"), (b"x-t", b"1")];

fn unary_response(input: &[u8], max: usize, compressed_allowed: bool, piece: usize) {
    let mut unary = UnaryResponse::new(&proto_call(CallKind::Unary), max);
    assert_eq!(unary.head(200, grpc_head(compressed_allowed), false), None);
    let mut answer = None;
    for chunk in input.chunks(piece) {
        if let Err(done) = unary.data(Bytes::copy_from_slice(chunk)) {
            answer = Some(done);
            break;
        }
    }
    let answer = answer.unwrap_or_else(|| unary.trailers(OK_TRAILERS));
    assert!(matches!(
        answer.status,
        200 | 400 | 401 | 403 | 404 | 409 | 429 | 499 | 500 | 501 | 503 | 504
    ));
    if answer.status == 200 {
        assert!(answer.body.len() <= max, "unary message over the limit");
    }
}

fn streaming_response(input: &[u8], max: usize, compressed_allowed: bool, piece: usize) {
    let mut streaming = StreamingResponse::new(&proto_call(CallKind::Streaming), max);
    let StreamingHead::Stream(_) = streaming.head(200, grpc_head(compressed_allowed), false) else {
        panic!("a gRPC head must start the stream");
    };
    let mut forwarded = Vec::new();
    let mut end = None;
    for chunk in input.chunks(piece) {
        let mut out = Vec::new();
        let result = streaming.data(Bytes::copy_from_slice(chunk), &mut out);
        out.iter()
            .for_each(|piece| forwarded.extend_from_slice(piece));
        if let Err(stream_end) = result {
            end = Some(stream_end);
            break;
        }
    }
    assert!(input.starts_with(&forwarded));
    let end = end.unwrap_or_else(|| streaming.trailers(OK_TRAILERS));
    if let StreamEnd::Envelope(envelope) = end {
        assert_eq!(envelope[0], 0x02);
        let len = u32::from_be_bytes([envelope[1], envelope[2], envelope[3], envelope[4]]);
        assert_eq!(len as usize, envelope.len() - 5);
        assert!(serde_json::from_slice::<serde_json::Value>(&envelope[5..]).is_ok());
    }
}
