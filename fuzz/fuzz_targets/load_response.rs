//! Fuzz the load generator's response reader (`ringway_load::load::wire`): HTTP/1.1 head,
//! Content-Length / chunked / close-delimited bodies, then the gRPC-Web judgement in binary and
//! text mode for unary and streaming calls.
//!
//! The first byte picks the size of the pieces the rest is fed in, as a socket would deliver
//! it. The reader must never panic, never consume more than it was given, keep the body under
//! its cap, and reach the same verdict however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_load::load::wire::{self, CallKind, ErrorKind, Mode, Progress, ResponseParser};

fuzz_target!(|data: &[u8]| {
    let [chunk_seed, rest @ ..] = data else {
        return;
    };
    let split = read(rest, usize::from(*chunk_seed).max(1));
    let whole = read(rest, rest.len().max(1));
    assert_eq!(split, whole, "the verdict depends on how the input was split");
    let mut out = Vec::new();
    let _ = wire::decode_text(rest, &mut out);
});

/// Feeds `input` in pieces of `step` bytes; returns every verdict (all modes and call kinds)
/// or the reader's error.
fn read(input: &[u8], step: usize) -> Result<Vec<Result<(), ErrorKind>>, ErrorKind> {
    let mut parser = ResponseParser::new("x-backend");
    let mut buffered: Vec<u8> = Vec::new();
    let mut done = false;
    for piece in input.chunks(step) {
        buffered.extend_from_slice(piece);
        match parser.feed(&buffered)? {
            Progress::NeedMore { consumed } => {
                assert!(consumed <= buffered.len());
                buffered.drain(..consumed);
            }
            Progress::Done { consumed } => {
                assert!(consumed <= buffered.len());
                done = true;
                break;
            }
        }
    }
    if !done {
        parser.feed_eof()?;
    }
    assert!(parser.is_done());
    assert!(parser.body().len() <= wire::BODY_BYTES_MAX);
    let mut scratch = Vec::new();
    let mut verdicts = Vec::new();
    for mode in [Mode::Binary, Mode::Text] {
        for call in [CallKind::Unary, CallKind::ServerStream] {
            let verdict = wire::judge(parser.head(), parser.body(), mode, call, "x-backend", &mut scratch);
            verdicts.push(verdict.result);
        }
    }
    Ok(verdicts)
}
