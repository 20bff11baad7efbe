//! HTTP/2 abuse detection on a client's incoming byte stream, sans-IO.
//!
//! The `h2` crate bounds most attacks itself: streams above SETTINGS_MAX_CONCURRENT_STREAMS are
//! refused, header lists over the limit get 431, CONTINUATION floods and window overflows end
//! the connection, and streams reset before they were accepted are capped. It does not bound
//! how often a client may make it work for nothing: a PING or SETTINGS flood costs an answer
//! each, a HEADERS-then-RST_STREAM loop (CVE-2023-44487, rapid reset) costs an upstream call
//! each once the stream was accepted, and empty DATA frames cost a wake-up each.
//!
//! [`FrameWatch`] follows the frame boundaries in the bytes the server reads (it looks at the
//! 9-byte frame headers only, skipping payloads) and counts those frames per one-second window.
//! A count above its limit is a [`Flood`]: the connection is then closed with
//! `GOAWAY(ENHANCE_YOUR_CALM)`, as Envoy and nginx do. The limits are far above what any client
//! sends in normal use (a keepalive PING every few seconds, a few cancelled streams).

use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4), before the first frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_BYTES: usize = 9;
const WINDOW: Duration = Duration::from_secs(1);

const TYPE_DATA: u8 = 0x0;
const TYPE_RST_STREAM: u8 = 0x3;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const TYPE_GOAWAY: u8 = 0x7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;

/// PINGs (not acknowledgements) per second above which a client is flooding.
pub const PINGS_PER_S_MAX: u32 = 50;
/// SETTINGS frames (not acknowledgements) per second above which a client is flooding.
pub const SETTINGS_PER_S_MAX: u32 = 50;
/// RST_STREAM frames per second above which a client is flooding (rapid reset).
pub const RESETS_PER_S_MAX: u32 = 200;
/// DATA frames that carry nothing and do not end their stream, per second.
pub const EMPTY_DATA_PER_S_MAX: u32 = 100;

/// The kind of abuse detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Ping,
    Settings,
    Reset,
    EmptyData,
}

impl Flood {
    pub const ALL: [Flood; 4] = [Flood::Ping, Flood::Settings, Flood::Reset, Flood::EmptyData];

    /// Label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Flood::Ping => "ping",
            Flood::Settings => "settings",
            Flood::Reset => "rst_stream",
            Flood::EmptyData => "empty_data",
        }
    }

    fn limit(self) -> u32 {
        match self {
            Flood::Ping => PINGS_PER_S_MAX,
            Flood::Settings => SETTINGS_PER_S_MAX,
            Flood::Reset => RESETS_PER_S_MAX,
            Flood::EmptyData => EMPTY_DATA_PER_S_MAX,
        }
    }
}

/// Follows the frames of one client connection.
#[derive(Debug)]
pub struct FrameWatch {
    /// Preface bytes still to pass before the first frame header.
    preface_left: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
    window_start: Option<Instant>,
    counts: [u32; 4],
}

impl Default for FrameWatch {
    fn default() -> Self {
        FrameWatch {
            preface_left: PREFACE.len(),
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            payload_left: 0,
            window_start: None,
            counts: [0; 4],
        }
    }
}

impl FrameWatch {
    /// Look at the next `bytes` the client sent, read at `now`. Returns the first flood found.
    pub fn observe(&mut self, mut bytes: &[u8], now: Instant) -> Option<Flood> {
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len());
                self.payload_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len < FRAME_HEADER_BYTES {
                break;
            }
            self.header_len = 0;
            let h = self.header;
            self.payload_left =
                usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            if let Some(kind) = counted(h[3], h[4], self.payload_left) {
                if let Some(flood) = self.count(kind, now) {
                    return Some(flood);
                }
            }
        }
        None
    }

    fn count(&mut self, kind: Flood, now: Instant) -> Option<Flood> {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= WINDOW {
            self.window_start = Some(now);
            self.counts = [0; 4];
        }
        let index = Flood::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        self.counts[index] += 1;
        (self.counts[index] > kind.limit()).then_some(kind)
    }
}

/// Which counted kind a frame is, from its type, flags and length.
fn counted(frame_type: u8, flags: u8, len: usize) -> Option<Flood> {
    match frame_type {
        TYPE_PING if flags & FLAG_ACK == 0 => Some(Flood::Ping),
        TYPE_SETTINGS if flags & FLAG_ACK == 0 => Some(Flood::Settings),
        TYPE_RST_STREAM => Some(Flood::Reset),
        TYPE_DATA if len == 0 && flags & FLAG_END_STREAM == 0 => Some(Flood::EmptyData),
        _ => None,
    }
}

/// A frame ringway sent that ends something: a stream (`RST_STREAM`) or the connection
/// (`GOAWAY`), with its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Reset(u32),
    GoAway(u32),
}

/// Follows the frames ringway writes to one client, to count the resets and GOAWAYs the `h2`
/// server sends on its own (streams over the limit, header lists over the limit, protocol
/// errors) as well as ringway's.
#[derive(Debug, Default)]
pub struct SentFrames {
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    payload_left: usize,
    /// The first payload bytes of a RST_STREAM or GOAWAY, up to its error code.
    code: [u8; 8],
    code_len: usize,
    code_wanted: usize,
    frame_type: u8,
}

impl SentFrames {
    /// Look at the next `bytes` written; `found` gets each RST_STREAM or GOAWAY completed.
    pub fn observe(&mut self, mut bytes: &[u8], found: &mut impl FnMut(Sent)) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len());
                let wanted = self.code_wanted.saturating_sub(self.code_len).min(take);
                self.code[self.code_len..self.code_len + wanted].copy_from_slice(&bytes[..wanted]);
                self.code_len += wanted;
                if wanted > 0 && self.code_len == self.code_wanted {
                    let at = self.code_wanted - 4;
                    let code = u32::from_be_bytes([
                        self.code[at],
                        self.code[at + 1],
                        self.code[at + 2],
                        self.code[at + 3],
                    ]);
                    found(match self.frame_type {
                        TYPE_RST_STREAM => Sent::Reset(code),
                        _ => Sent::GoAway(code),
                    });
                }
                self.payload_left -= take;
                bytes = &bytes[take..];
                continue;
            }
            let take = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len < FRAME_HEADER_BYTES {
                break;
            }
            self.header_len = 0;
            let h = self.header;
            self.payload_left =
                usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            self.frame_type = h[3];
            self.code_len = 0;
            self.code_wanted = match h[3] {
                TYPE_RST_STREAM if self.payload_left >= 4 => 4,
                TYPE_GOAWAY if self.payload_left >= 8 => 8,
                _ => 0,
            };
        }
    }
}

/// Whether `bytes` (the first bytes of a connection) are the HTTP/2 preface: `Some(true)` once
/// all of it arrived, `Some(false)` as soon as they differ, `None` while they are a prefix.
pub fn is_preface(bytes: &[u8]) -> Option<bool> {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            frame_type,
            flags,
        ];
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn stream_of(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = PREFACE.to_vec();
        for f in frames {
            wire.extend_from_slice(f);
        }
        wire
    }

    #[test]
    fn preface_detection() {
        assert_eq!(is_preface(b""), None);
        assert_eq!(is_preface(b"PRI * HT"), None);
        assert_eq!(is_preface(PREFACE), Some(true));
        assert_eq!(
            is_preface(&stream_of(&[frame(TYPE_SETTINGS, 0, &[])])),
            Some(true)
        );
        assert_eq!(is_preface(b"POST / HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_preface(b"PRI * HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_preface(b"P"), None);
        assert_eq!(is_preface(b"G"), Some(false));
    }

    #[test]
    fn normal_traffic_is_not_a_flood_however_it_is_split() {
        let mut frames = vec![frame(TYPE_SETTINGS, 0, &[0; 12])];
        for _ in 0..20 {
            frames.push(frame(0x1, 0x4, &[0x82; 30])); // HEADERS
            frames.push(frame(TYPE_DATA, FLAG_END_STREAM, &[0; 100]));
            frames.push(frame(TYPE_PING, FLAG_ACK, &[0; 8]));
            frames.push(frame(TYPE_SETTINGS, FLAG_ACK, &[]));
        }
        frames.push(frame(TYPE_PING, 0, &[0; 8]));
        let wire = stream_of(&frames);
        let now = Instant::now();
        for step in [1, 2, 7, 9, 10, 64, wire.len()] {
            let mut watch = FrameWatch::default();
            for piece in wire.chunks(step) {
                assert_eq!(watch.observe(piece, now), None, "step {step}");
            }
            assert_eq!(
                watch.counts,
                [1, 1, 0, 0],
                "step {step}: one PING, one SETTINGS"
            );
        }
    }

    #[test]
    fn each_flood_trips_one_past_its_limit() {
        let cases = [
            (Flood::Ping, frame(TYPE_PING, 0, &[0; 8]), PINGS_PER_S_MAX),
            (
                Flood::Settings,
                frame(TYPE_SETTINGS, 0, &[]),
                SETTINGS_PER_S_MAX,
            ),
            (
                Flood::Reset,
                frame(TYPE_RST_STREAM, 0, &[0, 0, 0, 8]),
                RESETS_PER_S_MAX,
            ),
            (
                Flood::EmptyData,
                frame(TYPE_DATA, 0, &[]),
                EMPTY_DATA_PER_S_MAX,
            ),
        ];
        let now = Instant::now();
        for (kind, one, limit) in cases {
            let mut watch = FrameWatch::default();
            assert_eq!(watch.observe(PREFACE, now), None);
            for _ in 0..limit {
                assert_eq!(watch.observe(&one, now), None, "{kind:?}");
            }
            assert_eq!(watch.observe(&one, now), Some(kind));
        }
    }

    #[test]
    fn counts_start_again_each_window() {
        let ping = frame(TYPE_PING, 0, &[0; 8]);
        let mut watch = FrameWatch::default();
        let start = Instant::now();
        watch.observe(PREFACE, start);
        for second in 0..5 {
            let now = start + WINDOW * second;
            for _ in 0..PINGS_PER_S_MAX {
                assert_eq!(watch.observe(&ping, now), None, "second {second}");
            }
        }
    }

    #[test]
    fn huge_and_hostile_lengths_are_skipped_not_buffered() {
        // A 16 MiB frame announced, then only part of it: the watch keeps three counters and a
        // 9-byte header, never the payload.
        let mut watch = FrameWatch::default();
        let now = Instant::now();
        let mut wire = PREFACE.to_vec();
        wire.extend_from_slice(&[0xff, 0xff, 0xff, TYPE_DATA, 0, 0, 0, 0, 1]);
        wire.extend_from_slice(&[0; 1000]);
        assert_eq!(watch.observe(&wire, now), None);
        assert_eq!(watch.payload_left, 0xff_ffff - 1000);
        // Garbage instead of frames is only counted where it happens to look like one.
        let mut watch = FrameWatch::default();
        assert_eq!(watch.observe(&[0xAB; 4096], now), None);
    }
    #[test]
    fn sent_resets_and_goaways_are_found_however_the_writes_are_split() {
        let mut wire = frame(0x1, 0x4, &[0x88]); // HEADERS
        wire.extend(frame(TYPE_RST_STREAM, 0, &7u32.to_be_bytes()));
        wire.extend(frame(TYPE_DATA, 0, &[9; 40]));
        let mut goaway = 5u32.to_be_bytes().to_vec();
        goaway.extend(11u32.to_be_bytes());
        goaway.extend(b"debug data");
        wire.extend(frame(TYPE_GOAWAY, 0, &goaway));
        wire.extend(frame(TYPE_RST_STREAM, 0, &[0, 0])); // malformed: too short, ignored
        wire.extend(frame(TYPE_PING, 0, &[0; 8]));
        for step in 1..=wire.len() {
            let mut sent = SentFrames::default();
            let mut found = Vec::new();
            for piece in wire.chunks(step) {
                sent.observe(piece, &mut |s| found.push(s));
            }
            assert_eq!(found, [Sent::Reset(7), Sent::GoAway(11)], "step {step}");
        }
    }
}
