//! Fuzz `http1::ChunkedDecoder`: arbitrary bytes, fed whole or in pieces, must never panic, and
//! the decoder must never return more than it was given or more than the body limit.
//!
//! Invariants checked:
//! - total data returned is at most the body limit and at most the input length, and no `Data`
//!   event is empty;
//! - what was consumed is a prefix of the input: after `End` the unconsumed bytes are exactly the
//!   input's tail (a pipelined request stays in the buffer);
//! - the outcome (data, and `End` / error / "need more") does not depend on how the input was
//!   split: feeding it all at once and in pieces of fuzzer-chosen sizes agree exactly;
//! - after `End` or an error, further calls return the same thing and consume nothing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringway::http1::{ChunkEvent, ChunkedDecoder, Http1Error};

fuzz_target!(|data: &[u8]| {
    let [limit_knob, split_knob, input @ ..] = data else {
        return;
    };
    // Small limits half the time, so BodyTooLarge is reached; otherwise effectively unlimited.
    let body_bytes_max = if limit_knob & 1 == 0 {
        u64::from(*limit_knob)
    } else {
        u64::MAX
    };
    let whole = decode(input, body_bytes_max, &mut || usize::MAX);
    let mut piece = usize::from(*split_knob);
    let split = decode(input, body_bytes_max, &mut || {
        piece = piece.wrapping_mul(31).wrapping_add(7);
        piece % 17 + 1
    });
    assert_eq!(whole, split, "outcome depends on how the input was split");
});

#[derive(Debug, PartialEq)]
struct Outcome {
    data: Vec<u8>,
    end: Result<Option<ChunkEvent>, Http1Error>,
    rest: Vec<u8>,
}

fn decode(input: &[u8], body_bytes_max: u64, piece_len: &mut dyn FnMut() -> usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new(body_bytes_max);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut data = Vec::new();
    let end = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(ChunkEvent::Data(bytes))) => {
                assert!(!bytes.is_empty());
                data.extend_from_slice(&bytes);
                assert!(data.len() as u64 <= body_bytes_max);
                assert!(data.len() <= input.len());
            }
            Ok(None) if fed < input.len() => {
                let take = piece_len().clamp(1, input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + take]);
                fed += take;
            }
            end => break end,
        }
    };
    if let Ok(Some(ChunkEvent::End)) = end {
        // What is left in the buffer is the end of what was fed: only a prefix was consumed.
        assert_eq!(&buf[..], &input[fed - buf.len()..fed]);
        // Data plus at least `0\r\n\r\n` of framing came out of the consumed bytes.
        assert!(data.len() + 5 <= fed - buf.len());
    }
    if end.is_err() || end == Ok(Some(ChunkEvent::End)) {
        let before = buf.len();
        assert_eq!(decoder.decode(&mut buf), end);
        assert_eq!(buf.len(), before);
    }
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&input[fed..]);
    Outcome { data, end, rest }
}
