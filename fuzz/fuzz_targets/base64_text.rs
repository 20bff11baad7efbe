//! Fuzz the streaming grpc-web-text base64 decoder.
//!
//! The first byte picks how many chunk sizes follow; the chunk sizes are cycled to split the
//! rest of the input. Whatever the split, the decoder must never panic and must give exactly
//! the answer of decoding the input in one piece, which in turn must match a naive
//! quantum-by-quantum reference decoder written here (the library bulk-decodes with the
//! `base64` crate's SIMD engine, so the reference is an independent check). Finally, encoding
//! the input with `encode_base64_flush` must decode back to it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringway::grpc_web::{encode_base64_flush, Base64Decoder};

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8).min(rest.len());
    let (sizes, text) = rest.split_at(count);

    let whole = decode(text, &[]);
    let split = decode(text, sizes);
    assert_eq!(whole, split, "split {sizes:?} changed the result");
    assert_eq!(whole, reference(text), "differs from the reference decoder");

    let mut encoded = BytesMut::new();
    encode_base64_flush(text, &mut encoded);
    assert_eq!(decode(&encoded, sizes), Some(text.to_vec()));
});

/// Feed `text` in chunks of the given sizes (cycled), then finish. `None` on error.
fn decode(text: &[u8], sizes: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = Base64Decoder::new();
    let mut out = BytesMut::new();
    let mut rest = text;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = match sizes.next() {
            // An empty chunk is a legal call; feed one, then move on by a byte so the loop
            // always ends.
            Some(&0) => {
                decoder.decode(&[], &mut out).ok()?;
                1
            }
            Some(&size) => usize::from(size).min(rest.len()),
            None => rest.len(),
        };
        let (chunk, tail) = rest.split_at(size);
        let before = out.len();
        if decoder.decode(chunk, &mut out).is_err() {
            assert_eq!(out.len(), before, "a failed call appended bytes");
            return None;
        }
        // Up to three characters carried from the previous call complete a quantum here.
        const CARRIED_MAX: usize = 3;
        assert!(out.len() - before <= (chunk.len() + CARRIED_MAX) / 4 * 3);
        rest = tail;
    }
    decoder.finish(&mut out).ok()?;
    assert!(out.len() <= text.len() / 4 * 3 + 2);
    Some(out.to_vec())
}

/// The documented semantics, one quantum at a time with no cleverness.
fn reference(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let mut out = Vec::new();
    for quantum in text.chunks(4) {
        let data_len = quantum
            .iter()
            .position(|&c| c == b'=')
            .unwrap_or(quantum.len());
        let padded = data_len < quantum.len();
        if padded && (quantum.len() != 4 || quantum[data_len..].iter().any(|&c| c != b'=')) {
            return None;
        }
        if data_len < 2 && !(data_len == 0 && quantum.is_empty()) {
            return None;
        }
        let mut bits = 0u32;
        for &c in &quantum[..data_len] {
            bits = bits << 6 | sextet(c)?;
        }
        let (bytes, spare_bits) = match data_len {
            4 => (3, 0),
            3 => (2, 2),
            2 => (1, 4),
            _ => return None,
        };
        if bits & ((1 << spare_bits) - 1) != 0 {
            return None;
        }
        let bits = bits >> spare_bits;
        for i in (0..bytes).rev() {
            out.push((bits >> (8 * i)) as u8);
        }
    }
    Some(out)
}
