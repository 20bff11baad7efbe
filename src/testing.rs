//! Test support: parsers and encoders that only the tests, the fuzz targets and the benches use.
//!
//! The proxy never parses a gRPC-Web response body or encodes a whole HTTP/1.1 head from a list,
//! but its tests must, to check the bytes it writes strictly. This module is compiled only with
//! the `testing` feature, which the crate's own dev-dependency on itself turns on for tests and
//! benches (and the fuzz crate turns on explicitly), so none of it is part of the production
//! library.

use bytes::{Buf, Bytes, BytesMut};

use crate::field::{is_field_value, is_token, trim_ows};
use crate::grpc_web::{COMPRESSED_FLAG, FRAME_HEADER_BYTES, TRAILER_FLAG};
use crate::http1::{finish_head, write_header, write_status_line, Version};

/// Append `HTTP/1.1 <status> <reason>\r\n`, each `name: value\r\n`, and the blank line to `out`.
/// `version` selects the status line's version token.
pub fn encode_response_head(
    out: &mut BytesMut,
    version: Version,
    status: u16,
    headers: &[(&[u8], &[u8])],
) {
    write_status_line(out, version, status);
    for &(name, value) in headers {
        write_header(out, name, value);
    }
    finish_head(out);
}

/// One gRPC length-prefixed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message (flag bit 7 clear); `compressed` is flag bit 0.
    Message { compressed: bool, data: Bytes },
    /// A gRPC-Web trailer frame (flag bit 7 set), parsed into `(name, value)` pairs.
    Trailers(Vec<(Bytes, Bytes)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Declared length above the parser's limit.
    TooLarge,
    /// Trailer block that is not `name:value\r\n` lines.
    BadTrailers,
    /// Flag byte with unknown bits set.
    BadFlags,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::TooLarge => "grpc frame longer than the limit",
            FrameError::BadTrailers => "malformed grpc-web trailer frame",
            FrameError::BadFlags => "grpc frame with unknown flag bits",
        })
    }
}

impl std::error::Error for FrameError {}

/// Incremental parser of gRPC / gRPC-Web length-prefixed frames, with a cap on frame length.
///
/// Accepted flag bytes are `0x00` and `0x01` (message, compressed) and `0x80` (trailers). The
/// compressed trailer frame `0x81` of `PROTOCOL-WEB.md` is refused as [`FrameError::BadFlags`]:
/// browsers cannot decompress it (the spec leaves per-message compression to a future wasm
/// client), no server emits it, and this parser does not know the call's `grpc-encoding`.
///
/// Trailer blocks are `name:value` lines separated by CRLF. The final CRLF may be missing and
/// empty lines are skipped, as the grpc-web JS client (which trims the block and splits on CRLF)
/// tolerates both. Names must be tokens and are lower-cased; values are trimmed of SP/HTAB and
/// must not contain control bytes other than HTAB. A bare CR or LF is an error, never a line
/// break, so a value cannot smuggle an extra trailer.
#[derive(Debug)]
pub struct FrameParser {
    frame_bytes_max: usize,
}

impl FrameParser {
    pub fn new(frame_bytes_max: usize) -> Self {
        Self { frame_bytes_max }
    }

    /// Parse one frame from the front of `buf`, splitting it off; `Ok(None)` if incomplete.
    ///
    /// The flag byte and the length are checked as soon as they arrive, so a hostile prefix
    /// is refused before its body is buffered. The parser deliberately does not reserve room
    /// for the declared length: memory then grows with bytes actually received, not with what
    /// a peer claims it will send.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(&flags) = buf.first() else {
            return Ok(None);
        };
        if !matches!(flags, 0x00 | COMPRESSED_FLAG | TRAILER_FLAG) {
            return Err(FrameError::BadFlags);
        }
        if buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        let len = usize::try_from(declared).map_err(|_| FrameError::TooLarge)?;
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge);
        }
        if buf.len() - FRAME_HEADER_BYTES < len {
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_BYTES);
        let data = buf.split_to(len).freeze();
        if flags == TRAILER_FLAG {
            parse_trailer_block(&data).map(|pairs| Some(Frame::Trailers(pairs)))
        } else {
            Ok(Some(Frame::Message {
                compressed: flags == COMPRESSED_FLAG,
                data,
            }))
        }
    }
}

fn parse_trailer_block(block: &Bytes) -> Result<Vec<(Bytes, Bytes)>, FrameError> {
    let mut pairs = Vec::new();
    let mut line_start = 0;
    while line_start < block.len() {
        let (line_end, next) = match find_crlf(&block[line_start..]) {
            Some(i) => (line_start + i, line_start + i + 2),
            None => (block.len(), block.len()),
        };
        if line_end > line_start {
            pairs.push(parse_trailer_line(block, line_start, line_end)?);
        }
        line_start = next;
    }
    Ok(pairs)
}

fn find_crlf(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"\r\n")
}

fn parse_trailer_line(
    block: &Bytes,
    start: usize,
    end: usize,
) -> Result<(Bytes, Bytes), FrameError> {
    let line = &block[start..end];
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(FrameError::BadTrailers)?;
    let name = &line[..colon];
    if !is_token(name) {
        return Err(FrameError::BadTrailers);
    }
    let raw_value = &line[colon + 1..];
    if !is_field_value(raw_value) {
        return Err(FrameError::BadTrailers);
    }
    let leading_ows = raw_value
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t'))
        .count();
    let value_start = start + colon + 1 + leading_ows;
    let value = block.slice(value_start..value_start + trim_ows(raw_value).len());
    let name = if name.iter().any(u8::is_ascii_uppercase) {
        Bytes::from(name.to_ascii_lowercase())
    } else {
        block.slice(start..start + colon)
    };
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc_web::encode_trailer_frame;
    use bytes::BufMut;

    fn frame_bytes(flag: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(flag);
        buf.put_u32(payload.len() as u32);
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn trailer_frame_round_trip() {
        let mut buf = BytesMut::new();
        encode_trailer_frame(
            [(&b"GRPC-STATUS"[..], &b"14"[..]), (b"grpc-message", b"")],
            &mut buf,
        );
        let frame = FrameParser::new(1024).parse(&mut buf).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Trailers(vec![
                (
                    Bytes::from_static(b"grpc-status"),
                    Bytes::from_static(b"14")
                ),
                (Bytes::from_static(b"grpc-message"), Bytes::new()),
            ])
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn parses_messages_incrementally() {
        let mut wire = frame_bytes(0x00, b"hello");
        wire.extend_from_slice(&frame_bytes(0x01, b""));
        wire.extend_from_slice(&frame_bytes(0x80, b"grpc-status: 0 \r\nX-A:\tb c\t"));
        let mut parser = FrameParser::new(64);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            while let Some(frame) = parser.parse(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            frames,
            vec![
                Frame::Message {
                    compressed: false,
                    data: Bytes::from_static(b"hello")
                },
                Frame::Message {
                    compressed: true,
                    data: Bytes::new()
                },
                Frame::Trailers(vec![
                    (Bytes::from_static(b"grpc-status"), Bytes::from_static(b"0")),
                    (Bytes::from_static(b"x-a"), Bytes::from_static(b"b c")),
                ]),
            ]
        );
    }

    #[test]
    fn frame_limits_and_flags() {
        let mut parser = FrameParser::new(4);
        // The length is refused from the header alone, before any body arrives.
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x05"[..]);
        assert_eq!(parser.parse(&mut buf), Err(FrameError::TooLarge));
        let mut buf = BytesMut::from(&b"\x00\xff\xff\xff\xff"[..]);
        assert_eq!(parser.parse(&mut buf), Err(FrameError::TooLarge));
        let mut buf = frame_bytes(0x00, b"abcd");
        assert!(parser.parse(&mut buf).unwrap().is_some());
        for flag in [0x02, 0x40, 0x81, 0x82, 0xc0, 0xff] {
            let mut buf = BytesMut::from(&[flag][..]);
            assert_eq!(
                parser.parse(&mut buf),
                Err(FrameError::BadFlags),
                "{flag:#x}"
            );
        }
        let mut buf = BytesMut::from(&b"\x00\x00\x00"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn trailer_block_tolerance_and_hostility() {
        let ok: [(&[u8], usize); 5] = [
            (b"", 0),
            (b"grpc-status:0", 1),
            (b"grpc-status:0\r\n\r\n", 1),
            (b"a:1\r\n\r\nb:2\r\n", 2),
            (b"a:\xc3\xa9\r\n", 1),
        ];
        for (block, pairs) in ok {
            let mut buf = frame_bytes(0x80, block);
            match FrameParser::new(1024).parse(&mut buf) {
                Ok(Some(Frame::Trailers(got))) => assert_eq!(got.len(), pairs, "{block:?}"),
                other => panic!("{block:?}: {other:?}"),
            }
        }
        let bad: [&[u8]; 9] = [
            b"no colon\r\n",
            b":empty-name\r\n",
            b"sp ace:1\r\n",
            b"name :1\r\n",
            b"a:1\nb:2\r\n",
            b"a:1\rb:2\r\n",
            b"a:\0\r\n",
            b"a:\x7f\r\n",
            b"\r\n\r\nx",
        ];
        for block in bad {
            let mut buf = frame_bytes(0x80, block);
            assert_eq!(
                FrameParser::new(1024).parse(&mut buf),
                Err(FrameError::BadTrailers),
                "{block:?}"
            );
        }
    }
}
