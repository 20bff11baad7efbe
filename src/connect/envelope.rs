//! 5-byte envelopes, the framing shared by Connect streams and gRPC messages, sans-IO.
//!
//! A Connect envelope and a gRPC length-prefixed message are laid out alike: one flag byte, a
//! 4-byte big-endian length, the message. Bit 0 of the flags marks a compressed message in
//! both. Connect adds bit 1 for its end-of-stream envelope (only a server sends it, last); gRPC
//! has no such bit (its trailers are HTTP trailers). So a client's Connect request messages
//! *are* gRPC frames, and a gRPC server's messages *are* Connect envelopes: they pass through
//! byte for byte once their prefixes are known to be legal on the side they go to.
//!
//! Two readers, for two needs:
//! - [`EnvelopeParser`] splits whole envelopes off a `BytesMut` (zero-copy), for code that needs
//!   each message whole: the unary response, and clients.
//! - [`EnvelopeRelay`] checks envelopes as bytes stream through, without holding messages: only
//!   a prefix cut by a read boundary (at most four bytes) is held back, so a stream is
//!   forwarded piece by piece as it arrives and a refused prefix never reaches the other side.
//!
//! A prefix is judged as soon as its bytes arrive: the flags from the first byte, the length
//! from the fifth, so a hostile length is refused before any of its body is read. Errors are
//! terminal: after one, both readers keep returning it.

use bytes::{Buf, Bytes, BytesMut};

use super::request::FRAME_PREFIX_BYTES;
use super::{Code, ConnectError};

/// Flag bit 0: the message is compressed with the stream's declared encoding.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit 1: a Connect end-of-stream envelope (JSON), sent only by a server, only last.
pub const FLAG_END_STREAM: u8 = 0x02;

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Reserved flag bits, or the end-of-stream bit where this side may not send it.
    BadFlags(u8),
    /// The compressed bit on a stream that declared no encoding (the protocol says it must
    /// then be 0).
    CompressedWithoutEncoding,
    /// A declared length above the limit.
    TooLarge,
    /// The stream ended inside an envelope.
    Truncated,
    /// Data after the end-of-stream envelope.
    AfterEndStream,
}

impl EnvelopeError {
    /// As the Connect error answered to a client whose request stream this is:
    /// `invalid_argument` for malformed input, `resource_exhausted` for a message too large
    /// (as connect-go answers both).
    pub fn from_client(self) -> ConnectError {
        match self {
            EnvelopeError::TooLarge => ConnectError::new(
                Code::ResourceExhausted,
                "request message is larger than the proxy's message limit",
            ),
            other => ConnectError::new(Code::InvalidArgument, other.reason()),
        }
    }

    /// As the Connect error reported when the upstream's reply is at fault: `internal` (the
    /// gRPC status for a peer that broke the protocol), `resource_exhausted` for a message
    /// above the limit (gRPC's status for a received message too large).
    pub fn from_upstream(self) -> ConnectError {
        match self {
            EnvelopeError::TooLarge => ConnectError::new(
                Code::ResourceExhausted,
                "upstream response message is larger than the proxy's message limit",
            ),
            _ => ConnectError::new(
                Code::Internal,
                "upstream sent an invalid gRPC message frame",
            ),
        }
    }

    fn reason(self) -> &'static str {
        match self {
            EnvelopeError::BadFlags(_) => "envelope with flags this side may not set",
            EnvelopeError::CompressedWithoutEncoding => {
                "compressed envelope on a stream that declared no encoding"
            }
            EnvelopeError::TooLarge => "envelope longer than the limit",
            EnvelopeError::Truncated => "stream ended inside an envelope",
            EnvelopeError::AfterEndStream => "data after the end-of-stream envelope",
        }
    }
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for EnvelopeError {}

/// Which flags a stream may carry, and how long a message may be.
#[derive(Debug, Clone, Copy)]
struct Rules {
    message_bytes_max: usize,
    compressed_allowed: bool,
    end_stream_allowed: bool,
}

impl Rules {
    fn check_flags(&self, flags: u8) -> Result<(), EnvelopeError> {
        let end_stream = if self.end_stream_allowed {
            FLAG_END_STREAM
        } else {
            0
        };
        if flags & !(FLAG_COMPRESSED | end_stream) != 0 {
            return Err(EnvelopeError::BadFlags(flags));
        }
        if flags & FLAG_COMPRESSED != 0 && !self.compressed_allowed {
            return Err(EnvelopeError::CompressedWithoutEncoding);
        }
        Ok(())
    }

    /// The payload length of a whole, flag-checked prefix.
    fn check_length(&self, prefix: &[u8]) -> Result<usize, EnvelopeError> {
        let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        match usize::try_from(declared) {
            Ok(len) if len <= self.message_bytes_max => Ok(len),
            _ => Err(EnvelopeError::TooLarge),
        }
    }
}

/// One whole envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    /// Prefix and payload: forwardable as it is, as a gRPC frame or a Connect envelope.
    pub frame: Bytes,
}

impl Envelope {
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// The message, without the prefix.
    pub fn payload(&self) -> Bytes {
        self.frame.slice(FRAME_PREFIX_BYTES..)
    }
}

/// Splits whole envelopes off the front of a buffer.
#[derive(Debug)]
pub struct EnvelopeParser {
    rules: Rules,
    ended: bool,
    failed: Option<EnvelopeError>,
}

impl EnvelopeParser {
    /// Messages only (flags `0x00`, and `0x01` when the stream declared an encoding): a Connect
    /// request stream, or a gRPC message stream.
    pub fn messages(message_bytes_max: usize, compressed_allowed: bool) -> Self {
        Self::with_rules(Rules {
            message_bytes_max,
            compressed_allowed,
            end_stream_allowed: false,
        })
    }

    /// A Connect response stream, for clients: messages, then one end-of-stream envelope and
    /// nothing after it.
    pub fn connect_responses(message_bytes_max: usize, compressed_allowed: bool) -> Self {
        Self::with_rules(Rules {
            message_bytes_max,
            compressed_allowed,
            end_stream_allowed: true,
        })
    }

    fn with_rules(rules: Rules) -> Self {
        EnvelopeParser {
            rules,
            ended: false,
            failed: None,
        }
    }

    /// Split one envelope off the front of `buf`; `Ok(None)` when it is not all there yet
    /// (nothing is consumed then). Room for the declared length is not reserved: memory grows
    /// with bytes received, not with what a peer claims it will send.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Envelope>, EnvelopeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.parse_one(buf);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    fn parse_one(&mut self, buf: &mut BytesMut) -> Result<Option<Envelope>, EnvelopeError> {
        let Some(&flags) = buf.first() else {
            return Ok(None);
        };
        if self.ended {
            return Err(EnvelopeError::AfterEndStream);
        }
        self.rules.check_flags(flags)?;
        if buf.len() < FRAME_PREFIX_BYTES {
            return Ok(None);
        }
        let len = self.rules.check_length(&buf[..FRAME_PREFIX_BYTES])?;
        if buf.len() - FRAME_PREFIX_BYTES < len {
            return Ok(None);
        }
        let frame = buf.split_to(FRAME_PREFIX_BYTES + len).freeze();
        self.ended = flags & FLAG_END_STREAM != 0;
        Ok(Some(Envelope { flags, frame }))
    }

    /// The stream ended with `buf` left over: an error if that is part of an envelope, or if a
    /// response stream never sent its end-of-stream envelope.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), EnvelopeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if !buf.is_empty() || (self.rules.end_stream_allowed && !self.ended) {
            return Err(EnvelopeError::Truncated);
        }
        Ok(())
    }
}

/// Checks the envelopes of a stream of messages (flags `0x00`, and `0x01` when an encoding
/// was declared) as it passes through, without holding messages.
#[derive(Debug)]
pub struct EnvelopeRelay {
    rules: Rules,
    /// A prefix cut by a read boundary, not forwarded yet.
    held: [u8; FRAME_PREFIX_BYTES],
    held_len: usize,
    /// Payload bytes of the current envelope still to come; its prefix was forwarded.
    remaining: usize,
    failed: Option<EnvelopeError>,
}

impl EnvelopeRelay {
    pub fn messages(message_bytes_max: usize, compressed_allowed: bool) -> Self {
        EnvelopeRelay {
            rules: Rules {
                message_bytes_max,
                compressed_allowed,
                end_stream_allowed: false,
            },
            held: [0; FRAME_PREFIX_BYTES],
            held_len: 0,
            remaining: 0,
            failed: None,
        }
    }

    /// Check `data`, the next bytes of the stream, and push what may be forwarded to `out`:
    /// usually `data` itself; a prefix that `data` leaves incomplete is held back for the next
    /// call, and a held prefix, once complete, is pushed first as its own piece.
    ///
    /// On an error, `out` holds every whole envelope before the refused prefix (forward them,
    /// then end the stream: the other side is at an envelope boundary, see
    /// [`at_boundary`](Self::at_boundary)). Nothing of the refused prefix is ever pushed.
    pub fn relay(&mut self, data: Bytes, out: &mut Vec<Bytes>) -> Result<(), EnvelopeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.relay_piece(&data, out);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    fn relay_piece(&mut self, data: &Bytes, out: &mut Vec<Bytes>) -> Result<(), EnvelopeError> {
        let mut pos = self.complete_held(data, out)?;
        if self.held_len > 0 {
            return Ok(());
        }
        // Bytes from `run_start` to `pos` are checked and not pushed yet.
        let run_start = pos;
        loop {
            let payload = self.remaining.min(data.len() - pos);
            pos += payload;
            self.remaining -= payload;
            if pos == data.len() {
                break;
            }
            let prefix = &data[pos..data.len().min(pos + FRAME_PREFIX_BYTES)];
            let checked = self.rules.check_flags(prefix[0]).and_then(|()| {
                if prefix.len() < FRAME_PREFIX_BYTES {
                    return Ok(None);
                }
                self.rules.check_length(prefix).map(Some)
            });
            match checked {
                Ok(Some(len)) => {
                    pos += FRAME_PREFIX_BYTES;
                    self.remaining = len;
                }
                Ok(None) => {
                    self.held[..prefix.len()].copy_from_slice(prefix);
                    self.held_len = prefix.len();
                    break;
                }
                Err(error) => {
                    push_run(data, run_start, pos, out);
                    return Err(error);
                }
            }
        }
        push_run(data, run_start, pos, out);
        Ok(())
    }

    /// Feed the front of `data` to a held prefix; returns how many bytes of `data` it took.
    fn complete_held(
        &mut self,
        data: &Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<usize, EnvelopeError> {
        if self.held_len == 0 {
            return Ok(0);
        }
        let take = (FRAME_PREFIX_BYTES - self.held_len).min(data.len());
        self.held[self.held_len..self.held_len + take].copy_from_slice(&data[..take]);
        self.held_len += take;
        if self.held_len < FRAME_PREFIX_BYTES {
            return Ok(take);
        }
        // The flags were checked when the first byte arrived.
        self.remaining = self.rules.check_length(&self.held)?;
        self.held_len = 0;
        out.push(Bytes::copy_from_slice(&self.held));
        Ok(take)
    }

    /// Whether the other side has received only whole envelopes, so that an end-of-stream
    /// envelope may follow. A held, unforwarded partial prefix does not count against it.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// The stream ended here: an error if it ended inside an envelope.
    pub fn finish(&self) -> Result<(), EnvelopeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.remaining > 0 || self.held_len > 0 {
            return Err(EnvelopeError::Truncated);
        }
        Ok(())
    }
}

/// Push the checked bytes `start..end` of `data`, if any, as one zero-copy piece.
fn push_run(data: &Bytes, start: usize, end: usize, out: &mut Vec<Bytes>) {
    if end > start {
        out.push(data.slice(start..end));
    }
}

/// Parse a prefix for the response side of a unary call, from a contiguous slice: the flags and
/// the payload length, or `None` when fewer than five bytes are there.
pub(crate) fn peek_message_prefix(
    data: &[u8],
    message_bytes_max: usize,
    compressed_allowed: bool,
) -> Result<Option<(u8, usize)>, EnvelopeError> {
    let rules = Rules {
        message_bytes_max,
        compressed_allowed,
        end_stream_allowed: false,
    };
    let Some(&flags) = data.first() else {
        return Ok(None);
    };
    rules.check_flags(flags)?;
    if data.len() < FRAME_PREFIX_BYTES {
        return Ok(None);
    }
    Ok(Some((flags, rules.check_length(data)?)))
}

/// Skip the prefix of a whole frame at the front of `data` and split its payload off.
pub(crate) fn take_payload(data: &mut Bytes, len: usize) -> Bytes {
    data.advance(FRAME_PREFIX_BYTES);
    data.split_to(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn relay_in_pieces(
        relay: &mut EnvelopeRelay,
        wire: &[u8],
        piece: usize,
    ) -> (Vec<u8>, Result<(), EnvelopeError>) {
        let mut forwarded = Vec::new();
        for chunk in wire.chunks(piece.max(1)) {
            let mut out = Vec::new();
            let result = relay.relay(Bytes::copy_from_slice(chunk), &mut out);
            for piece in out {
                assert!(!piece.is_empty(), "empty piece pushed");
                forwarded.extend_from_slice(&piece);
            }
            if result.is_err() {
                return (forwarded, result);
            }
        }
        (forwarded, relay.finish())
    }

    #[test]
    fn parses_messages_incrementally() {
        let wire = [
            envelope(0x00, b"hello"),
            envelope(0x01, b""),
            envelope(0x00, b"x"),
        ]
        .concat();
        let mut parser = EnvelopeParser::messages(16, true);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &wire {
            buf.put_u8(byte);
            while let Some(envelope) = parser.parse(&mut buf).unwrap() {
                got.push(envelope);
            }
        }
        assert!(parser.finish(&buf).is_ok());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].payload(), "hello");
        assert_eq!(&got[0].frame[..], &envelope(0x00, b"hello")[..]);
        assert!(got[1].is_compressed() && got[1].payload().is_empty());
        assert!(!got[2].is_compressed() && !got[2].is_end_stream());
    }

    #[test]
    fn refuses_hostile_request_envelopes() {
        let cases: [(&[u8], EnvelopeError); 7] = [
            // A client may not end the stream with Connect's end-of-stream flag.
            (b"\x02", EnvelopeError::BadFlags(0x02)),
            (b"\x03\x00", EnvelopeError::BadFlags(0x03)),
            (b"\x80", EnvelopeError::BadFlags(0x80)),
            (b"\x04", EnvelopeError::BadFlags(0x04)),
            (b"\xff\xff\xff\xff\xff", EnvelopeError::BadFlags(0xff)),
            // The length is refused from the prefix alone.
            (b"\x00\x00\x00\x00\x11", EnvelopeError::TooLarge),
            (b"\x00\xff\xff\xff\xff", EnvelopeError::TooLarge),
        ];
        for (wire, expected) in cases {
            let mut parser = EnvelopeParser::messages(16, true);
            let mut buf = BytesMut::from(wire);
            assert_eq!(parser.parse(&mut buf), Err(expected), "{wire:?}");
            // Errors stick.
            assert_eq!(parser.parse(&mut BytesMut::new()), Err(expected));
            assert_eq!(parser.finish(&BytesMut::new()), Err(expected));
        }
        let mut parser = EnvelopeParser::messages(16, false);
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\x00"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(EnvelopeError::CompressedWithoutEncoding)
        );
        // A partial prefix is "need more", and the end of the stream there is truncation.
        let mut parser = EnvelopeParser::messages(16, false);
        let mut buf = BytesMut::from(&b"\x00\x00\x00"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert_eq!(buf.len(), 3);
        assert_eq!(parser.finish(&buf), Err(EnvelopeError::Truncated));
        let mut buf = BytesMut::from(&envelope(0, b"abc")[..7]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert_eq!(parser.finish(&buf), Err(EnvelopeError::Truncated));
    }

    #[test]
    fn error_codes_by_side() {
        assert_eq!(
            EnvelopeError::BadFlags(2).from_client().code,
            Code::InvalidArgument
        );
        assert_eq!(
            EnvelopeError::Truncated.from_client().code,
            Code::InvalidArgument
        );
        assert_eq!(
            EnvelopeError::TooLarge.from_client().code,
            Code::ResourceExhausted
        );
        assert_eq!(
            EnvelopeError::BadFlags(2).from_upstream().code,
            Code::Internal
        );
        assert_eq!(
            EnvelopeError::TooLarge.from_upstream().code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn connect_response_streams_end_once() {
        let wire = [envelope(0x00, b"m"), envelope(0x02, b"{}")].concat();
        let mut parser = EnvelopeParser::connect_responses(16, false);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(!parser.parse(&mut buf).unwrap().unwrap().is_end_stream());
        assert!(parser.parse(&mut buf).unwrap().unwrap().is_end_stream());
        assert!(parser.finish(&buf).is_ok());
        buf.extend_from_slice(&envelope(0x00, b""));
        assert_eq!(parser.parse(&mut buf), Err(EnvelopeError::AfterEndStream));

        let mut unended = EnvelopeParser::connect_responses(16, false);
        let mut buf = BytesMut::from(&envelope(0x00, b"m")[..]);
        assert!(unended.parse(&mut buf).unwrap().is_some());
        assert_eq!(unended.finish(&buf), Err(EnvelopeError::Truncated));
    }

    #[test]
    fn relay_forwards_everything_at_every_piece_size() {
        let wire = [
            envelope(0x00, b"hello"),
            envelope(0x01, b""),
            envelope(0x00, &[7u8; 40]),
            envelope(0x01, b"z"),
        ]
        .concat();
        for piece in 1..=wire.len() {
            let mut relay = EnvelopeRelay::messages(64, true);
            let (forwarded, result) = relay_in_pieces(&mut relay, &wire, piece);
            assert_eq!(result, Ok(()), "piece {piece}");
            assert_eq!(forwarded, wire, "piece {piece}");
            assert!(relay.at_boundary());
        }
    }

    #[test]
    fn relay_passes_whole_pieces_without_copying() {
        let wire = Bytes::from([envelope(0, b"ab"), envelope(0, b"cd")].concat());
        let mut relay = EnvelopeRelay::messages(64, false);
        let mut out = Vec::new();
        relay.relay(wire.clone(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), wire.as_ptr());
        assert_eq!(out[0].len(), wire.len());
    }

    #[test]
    fn relay_holds_back_a_cut_prefix() {
        let mut relay = EnvelopeRelay::messages(64, false);
        let mut out = Vec::new();
        let wire = [envelope(0, b"ab"), envelope(0, b"cd")].concat();
        // The first envelope and two bytes of the second prefix.
        relay
            .relay(Bytes::copy_from_slice(&wire[..9]), &mut out)
            .unwrap();
        assert_eq!(out, vec![Bytes::copy_from_slice(&wire[..7])]);
        assert!(relay.at_boundary());
        assert_eq!(relay.finish(), Err(EnvelopeError::Truncated));
        out.clear();
        relay
            .relay(Bytes::copy_from_slice(&wire[9..]), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![
                Bytes::copy_from_slice(&wire[7..12]),
                Bytes::copy_from_slice(&wire[12..])
            ]
        );
        assert!(relay.finish().is_ok());
        // Inside a payload the other side is not at a boundary.
        let mut relay = EnvelopeRelay::messages(64, false);
        relay
            .relay(Bytes::copy_from_slice(&wire[..6]), &mut Vec::new())
            .unwrap();
        assert!(!relay.at_boundary());
        assert_eq!(relay.finish(), Err(EnvelopeError::Truncated));
    }

    #[test]
    fn relay_forwards_nothing_of_a_refused_prefix() {
        let good = envelope(0, b"ok");
        for bad in [
            &b"\x02\x00\x00\x00\x00"[..],
            b"\x80\x00\x00\x00\x00",
            b"\x00\x00\x00\x01\x00",
        ] {
            let wire = [good.as_slice(), bad].concat();
            for piece in 1..=wire.len() {
                let mut relay = EnvelopeRelay::messages(64, false);
                let (forwarded, result) = relay_in_pieces(&mut relay, &wire, piece);
                assert!(result.is_err(), "{bad:?} piece {piece}");
                assert_eq!(forwarded, good, "{bad:?} piece {piece}");
                assert!(relay.at_boundary());
                assert_eq!(
                    relay.relay(Bytes::from_static(b"\x00"), &mut Vec::new()),
                    result
                );
            }
        }
        let mut relay = EnvelopeRelay::messages(64, false);
        let result = relay.relay(Bytes::from_static(b"\x01\x00\x00\x00\x00"), &mut Vec::new());
        assert_eq!(result, Err(EnvelopeError::CompressedWithoutEncoding));
    }

    #[test]
    fn unary_prefix_peek() {
        assert_eq!(peek_message_prefix(b"", 8, false), Ok(None));
        assert_eq!(peek_message_prefix(b"\x00\x00", 8, false), Ok(None));
        assert_eq!(
            peek_message_prefix(b"\x02", 8, false),
            Err(EnvelopeError::BadFlags(2))
        );
        assert_eq!(
            peek_message_prefix(b"\x00\x00\x00\x00\x08", 8, false),
            Ok(Some((0, 8)))
        );
        assert_eq!(
            peek_message_prefix(b"\x01\x00\x00\x00\x09", 8, true),
            Err(EnvelopeError::TooLarge)
        );
        let mut data = Bytes::from(envelope(1, b"abc"));
        assert_eq!(take_payload(&mut data, 3), "abc");
        assert!(data.is_empty());
    }
}
