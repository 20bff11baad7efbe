//! Fuzz the gRPC / gRPC-Web length-prefixed frame parser.
//!
//! The first byte picks the frame cap and the second the size of the chunks the rest is fed
//! in, as a connection would receive it. The parser must never panic, never return a frame
//! longer than the cap, never consume more than it was given, and consume exactly five bytes
//! plus the payload per frame. The same bytes are then read as `name`/`value` pairs, encoded
//! with `encode_trailer_frame` and parsed back: every pair the encoder keeps must come back
//! with its name lower-cased and its value trimmed.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringway::grpc_web::encode_trailer_frame;
use ringway::testing::{Frame, FrameParser};

fuzz_target!(|data: &[u8]| {
    let [cap_seed, chunk_seed, rest @ ..] = data else {
        return;
    };
    parse_stream(
        usize::from(*cap_seed) * 8,
        usize::from(*chunk_seed).max(1),
        rest,
    );
    trailer_round_trip(rest);
});

fn parse_stream(frame_bytes_max: usize, chunk_bytes: usize, input: &[u8]) {
    let mut parser = FrameParser::new(frame_bytes_max);
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    for chunk in input.chunks(chunk_bytes) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let before = buf.len();
            match parser.parse(&mut buf) {
                Ok(Some(frame)) => {
                    let taken = before - buf.len();
                    consumed += taken;
                    assert!(consumed <= fed);
                    let payload = taken - 5;
                    assert!(payload <= frame_bytes_max, "frame over the cap");
                    match frame {
                        Frame::Message { data, .. } => assert_eq!(data.len(), payload),
                        Frame::Trailers(pairs) => {
                            let text: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
                            assert!(text <= payload);
                            for (name, _) in &pairs {
                                assert!(!name.iter().any(u8::is_ascii_uppercase));
                            }
                        }
                    }
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "incomplete parse consumed bytes");
                    break;
                }
                // Errors are terminal for a stream.
                Err(_) => return,
            }
        }
    }
}

fn trailer_round_trip(input: &[u8]) {
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    let mut rest = input;
    while let [lens, tail @ ..] = rest {
        let name_len = usize::from(lens & 0x0f).min(tail.len());
        let (name, tail) = tail.split_at(name_len);
        let value_len = usize::from(lens >> 4).min(tail.len());
        let (value, tail) = tail.split_at(value_len);
        pairs.push((name, value));
        rest = tail;
    }
    let mut buf = BytesMut::new();
    encode_trailer_frame(pairs.iter().copied(), &mut buf);
    let encoded_len = buf.len();
    let parsed = FrameParser::new(encoded_len).parse(&mut buf);
    let Ok(Some(Frame::Trailers(got))) = parsed else {
        panic!("encoded trailer frame did not parse: {parsed:?}");
    };
    assert!(buf.is_empty());
    let expected: Vec<(Bytes, Bytes)> = pairs
        .iter()
        .filter(|(name, value)| is_token(name) && is_field_value(value))
        .map(|(name, value)| {
            (
                Bytes::from(name.to_ascii_lowercase()),
                Bytes::copy_from_slice(trim(value)),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}
