//! A raw HTTP/2 client that writes frames byte by byte as an attacker would, and reads the
//! server's frames back without interpreting them (no HPACK decoding: the attack tests only
//! look at frame types, flags, stream ids and error codes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame read from the server.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The `:status` of a response HEADERS frame, when it is the block's first field (as h2
    /// writes it): indexed from the static table, or a literal whose value is plain or
    /// Huffman-coded digits (RFC 7541 §6, Appendix B).
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        let block = &self.payload;
        const INDEXED: [(u8, u16); 7] = [
            (0x88, 200),
            (0x89, 204),
            (0x8a, 206),
            (0x8b, 304),
            (0x8c, 400),
            (0x8d, 404),
            (0x8e, 500),
        ];
        let first = *block.first()?;
        if let Some((_, status)) = INDEXED.iter().find(|(b, _)| *b == first) {
            return Some(*status);
        }
        // A literal with name index 8 (`:status`): with indexing (0x48), without (0x08) or
        // never indexed (0x18).
        if !matches!(first, 0x48 | 0x08 | 0x18) {
            return None;
        }
        let len_byte = *block.get(1)?;
        let len = usize::from(len_byte & 0x7f);
        let value = block.get(2..2 + len)?;
        let digits = if len_byte & 0x80 == 0 {
            value.to_vec()
        } else {
            huffman_digits(value)?
        };
        std::str::from_utf8(&digits).ok()?.parse().ok()
    }

    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().unwrap()))
    }
}

pub struct RawH2 {
    pub stream: TcpStream,
}

impl RawH2 {
    /// Connect and send the preface and an empty SETTINGS frame.
    pub fn connect(addr: SocketAddr) -> RawH2 {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = RawH2 { stream };
        raw.write(PREFACE);
        raw.frame(SETTINGS, 0, 0, &[]);
        raw
    }

    /// Read the server's SETTINGS and acknowledge them, so its limits are in force (a server
    /// applies its own SETTINGS once the client acknowledged them, RFC 9113 §6.5.3).
    pub fn acknowledge_settings(&mut self) {
        let mut seen = Vec::new();
        self.read_until(Duration::from_secs(10), &mut seen, |f| {
            f.kind == SETTINGS && f.flags & ACK == 0
        })
        .expect("server SETTINGS");
        self.frame(SETTINGS, ACK, 0, &[]);
        // The server acknowledges ours; reading it makes sure the ACK above arrived first.
        self.read_until(Duration::from_secs(10), &mut seen, |f| {
            f.kind == SETTINGS && f.flags & ACK != 0
        })
        .expect("server SETTINGS ACK");
    }

    /// Write bytes; a server that closed the connection makes this a no-op.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    pub fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        self.write(&frame(kind, flags, stream, payload))
    }

    /// A POST HEADERS frame opening `stream` (END_STREAM when `end`), with extra fields.
    pub fn request(&mut self, stream: u32, path: &str, extra: &[(&str, &str)], end: bool) -> bool {
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "test.local"),
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        fields.extend_from_slice(extra);
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.frame(HEADERS, flags, stream, &header_block(&fields))
    }

    /// The next frame, or `None` at the end of the connection (EOF, reset, or the read
    /// timeout, which the tests then report as a hang).
    pub fn read_frame(&mut self) -> Option<RawFrame> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).ok()?;
        Some(RawFrame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Read frames until one matches `wanted` (returned), or the connection ends or `limit`
    /// passes (`None`). Every frame read is kept in `seen`.
    pub fn read_until(
        &mut self,
        limit: Duration,
        seen: &mut Vec<RawFrame>,
        wanted: impl Fn(&RawFrame) -> bool,
    ) -> Option<RawFrame> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let frame = self.read_frame()?;
            seen.push(frame.clone());
            if wanted(&frame) {
                return Some(frame);
            }
        }
        None
    }

    /// Read until a GOAWAY and return its error code.
    pub fn goaway_code(&mut self, limit: Duration) -> Option<u32> {
        let mut seen = Vec::new();
        self.read_until(limit, &mut seen, |f| f.kind == GOAWAY)
            .and_then(|f| f.error_code())
    }
}

/// Decode a Huffman-coded string of digits (the codes of '0'..='9', RFC 7541 Appendix B);
/// `None` for anything else.
fn huffman_digits(bytes: &[u8]) -> Option<Vec<u8>> {
    const CODES: [(u32, u32, u8); 10] = [
        (0x0, 5, b'0'),
        (0x1, 5, b'1'),
        (0x2, 5, b'2'),
        (0x19, 6, b'3'),
        (0x1a, 6, b'4'),
        (0x1b, 6, b'5'),
        (0x1c, 6, b'6'),
        (0x1d, 6, b'7'),
        (0x1e, 6, b'8'),
        (0x1f, 6, b'9'),
    ];
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = Vec::new();
    let mut at = 0;
    'next: while at < bits.len() {
        for (code, len, digit) in CODES {
            let len = len as usize;
            if at + len <= bits.len() {
                let value = bits[at..at + len]
                    .iter()
                    .fold(0u32, |v, b| (v << 1) | u32::from(*b));
                if value == code {
                    out.push(digit);
                    at += len;
                    continue 'next;
                }
            }
        }
        // The rest must be padding: fewer than 8 one bits.
        return (bits.len() - at < 8 && bits[at..].iter().all(|b| *b == 1)).then_some(out);
    }
    Some(out)
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block of literal fields without indexing (RFC 7541 §6.2.2), plain strings.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_string(&mut out, name.as_bytes());
        hpack_string(&mut out, value.as_bytes());
    }
    out
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    // 7-bit prefix integer (RFC 7541 §5.1), Huffman bit clear.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128 + 128) as u8);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}
