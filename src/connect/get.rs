//! A Connect unary GET's query, decoded into the gRPC request frame, sans-IO.
//!
//! Side-effect-free unary calls may be GETs so that browsers, proxies and CDNs can cache them:
//! `?connect=v1&encoding=proto&base64=1&compression=gzip&message=…`. The protocol fixes the
//! rules this module follows:
//! - parameters come in any order and unknown ones are allowed alongside;
//! - `encoding` and `message` are required, `connect` (when present) must be `v1`;
//! - `message` is URL-safe base64 (RFC 4648 §5), padded or not, when `base64=1` (any other
//!   `base64` value is ignored), and otherwise percent-encoded text;
//! - `compression` names the message's content coding (`identity` when absent), and an empty
//!   message is never compressed.
//!
//! Decoding follows Go's `net/url` and `encoding/base64` as connect-go uses them: `+` in the
//! query is a space (`application/x-www-form-urlencoded`), base64 whose length is a multiple
//! of four must be canonically padded and any other length unpadded, and unused trailing bits
//! are ignored. Two things are refused that connect-go lets through, because a cache in front
//! may read such a query differently from us: a repeated Connect parameter (Go takes the first,
//! others the last) and a malformed percent-escape (Go silently drops the pair).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};

use super::request::{write_frame_prefix, FRAME_PREFIX_BYTES};
use super::{hex_value, is_token, Code, Codec, ConnectError, CODEC_NAME_BYTES_MAX};

/// Longest decoded value of a short parameter (`connect`, `encoding`, `base64`,
/// `compression`): a codec name is the longest legitimate one.
const SHORT_VALUE_BYTES_MAX: usize = CODEC_NAME_BYTES_MAX;

/// The GET request, ready for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    pub codec: Codec,
    /// `grpc-encoding` for the upstream: the `compression` parameter, unless `identity`.
    pub compression: Option<Bytes>,
    /// The decoded message as one gRPC frame (5-byte prefix included): the whole upstream body.
    pub frame: Bytes,
}

impl GetRequest {
    /// The decoded message, without the frame prefix.
    pub fn message(&self) -> &[u8] {
        &self.frame[FRAME_PREFIX_BYTES..]
    }
}

/// Decode a Connect GET's query (the bytes after `?`) into the upstream request. The decoded
/// message may be at most `message_bytes_max` bytes (`resource_exhausted` otherwise); the query
/// itself is bounded by the framing's head size limit, and decoding allocates at most its size.
pub fn parse(query: &[u8], message_bytes_max: usize) -> Result<GetRequest, ConnectError> {
    let scan = Scan::find(query).unwrap_or(Err(MISSING_ENCODING))?;
    let codec = scan.codec()?;
    let compression = match scan.compression {
        Some(raw) => compression(raw)?,
        None => None,
    };
    // The protocol says to ignore any `base64` value but `1`, malformed ones included.
    let base64 = scan
        .base64
        .is_some_and(|raw| decode_short(raw).is_ok_and(|value| value.as_slice() == b"1"));
    let raw_message = scan.message.ok_or(MISSING_MESSAGE)?;
    let frame = message_frame(
        raw_message,
        base64,
        compression.is_some(),
        message_bytes_max,
    )?;
    Ok(GetRequest {
        codec,
        compression,
        frame,
    })
}

const MISSING_ENCODING: ConnectError =
    ConnectError::new(Code::InvalidArgument, "missing encoding parameter");
const MISSING_MESSAGE: ConnectError =
    ConnectError::new(Code::InvalidArgument, "missing message parameter");
const REPEATED: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "repeated connect, encoding, base64, compression or message parameter",
);
const BAD_VERSION: ConnectError =
    ConnectError::new(Code::InvalidArgument, "connect parameter must be \"v1\"");
const BAD_ENCODING: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "encoding parameter is not a codec name",
);
const BAD_COMPRESSION: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "compression parameter is not a content coding",
);
const BAD_PERCENT: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "query parameter is not valid percent-encoding",
);
const BAD_BASE64: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "message parameter is not valid URL-safe base64",
);
const TOO_LARGE: ConnectError = ConnectError::new(
    Code::ResourceExhausted,
    "message parameter is larger than the proxy's message limit",
);

/// The Connect parameters of a query, as raw (still percent-encoded) values, each seen at most
/// once.
#[derive(Debug, Default)]
pub(crate) struct Scan<'a> {
    connect: Option<&'a [u8]>,
    encoding: Option<&'a [u8]>,
    base64: Option<&'a [u8]>,
    compression: Option<&'a [u8]>,
    message: Option<&'a [u8]>,
}

impl<'a> Scan<'a> {
    /// `None` when the query names none of `connect`, `encoding`, `message`: not a Connect GET.
    pub(crate) fn find(query: &'a [u8]) -> Option<Result<Scan<'a>, ConnectError>> {
        let mut scan = Scan::default();
        let mut repeated = false;
        for pair in query.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let Some(slot) = scan.slot(key) else {
                continue;
            };
            repeated |= slot.replace(value).is_some();
        }
        if scan.connect.is_none() && scan.encoding.is_none() && scan.message.is_none() {
            return None;
        }
        Some(if repeated { Err(REPEATED) } else { Ok(scan) })
    }

    /// Which parameter a (percent-encoded) key names; `None` for unknown ones, which the
    /// protocol says to allow. A key that does not decode is unknown too.
    fn slot(&mut self, raw_key: &[u8]) -> Option<&mut Option<&'a [u8]>> {
        let key = decode_short(raw_key).ok()?;
        Some(match key.as_slice() {
            b"connect" => &mut self.connect,
            b"encoding" => &mut self.encoding,
            b"base64" => &mut self.base64,
            b"compression" => &mut self.compression,
            b"message" => &mut self.message,
            _ => return None,
        })
    }

    /// Everything the classifier checks before a call is made: the version, the codec, and that
    /// a message is there. The message itself is decoded by [`parse`].
    pub(crate) fn codec(&self) -> Result<Codec, ConnectError> {
        if let Some(raw) = self.connect {
            if decode_short(raw)?.as_slice() != b"v1" {
                return Err(BAD_VERSION);
            }
        }
        let raw = self.encoding.ok_or(MISSING_ENCODING)?;
        let codec = Codec::parse(decode_short(raw)?.as_slice()).ok_or(BAD_ENCODING)?;
        if self.message.is_none() {
            return Err(MISSING_MESSAGE);
        }
        Ok(codec)
    }
}

fn compression(raw: &[u8]) -> Result<Option<Bytes>, ConnectError> {
    let value = decode_short(raw)?;
    let coding = value.as_slice();
    if coding.is_empty() || coding.eq_ignore_ascii_case(b"identity") {
        return Ok(None);
    }
    if !is_token(coding) {
        return Err(BAD_COMPRESSION);
    }
    Ok(Some(Bytes::copy_from_slice(coding)))
}

/// A short decoded value on the stack: parameters are checked on every GET, and none needs
/// more than a codec name.
struct Short {
    bytes: [u8; SHORT_VALUE_BYTES_MAX],
    len: usize,
}

impl Short {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Percent-decode a short value; one longer than [`SHORT_VALUE_BYTES_MAX`] is refused like a
/// malformed one (no legitimate value is that long).
fn decode_short(raw: &[u8]) -> Result<Short, ConnectError> {
    let mut short = Short {
        bytes: [0; SHORT_VALUE_BYTES_MAX],
        len: 0,
    };
    for byte in PercentDecoder::new(raw) {
        let byte = byte.ok_or(BAD_PERCENT)?;
        *short.bytes.get_mut(short.len).ok_or(BAD_PERCENT)? = byte;
        short.len += 1;
    }
    Ok(short)
}

/// `application/x-www-form-urlencoded` decoding: `%XX` is a byte, `+` a space. Yields `None`
/// at a `%` not followed by two hex digits, and then stops.
struct PercentDecoder<'a> {
    rest: &'a [u8],
}

impl<'a> PercentDecoder<'a> {
    fn new(raw: &'a [u8]) -> Self {
        PercentDecoder { rest: raw }
    }
}

impl Iterator for PercentDecoder<'_> {
    type Item = Option<u8>;

    fn next(&mut self) -> Option<Option<u8>> {
        let (&first, rest) = self.rest.split_first()?;
        let (byte, rest) = match first {
            b'+' => (Some(b' '), rest),
            b'%' => match rest {
                [high, low, tail @ ..] => match (hex_value(*high), hex_value(*low)) {
                    (Some(high), Some(low)) => (Some(high << 4 | low), tail),
                    _ => (None, &rest[rest.len()..]),
                },
                _ => (None, &rest[rest.len()..]),
            },
            other => (Some(other), rest),
        };
        self.rest = rest;
        Some(byte)
    }
}

/// Decode the `message` parameter straight into a gRPC frame: one allocation, sized by the raw
/// value (decoding only shrinks it).
fn message_frame(
    raw: &[u8],
    base64: bool,
    compressed: bool,
    message_bytes_max: usize,
) -> Result<Bytes, ConnectError> {
    let mut frame = BytesMut::with_capacity(FRAME_PREFIX_BYTES + raw.len());
    frame.resize(FRAME_PREFIX_BYTES, 0);
    if base64 {
        decode_base64_message(raw, &mut frame)?;
    } else {
        for byte in PercentDecoder::new(raw) {
            frame.extend_from_slice(&[byte.ok_or(BAD_PERCENT)?]);
        }
    }
    let message_len = frame.len() - FRAME_PREFIX_BYTES;
    if message_len > message_bytes_max {
        return Err(TOO_LARGE);
    }
    write_frame_prefix(&mut frame, compressed)?;
    Ok(frame.freeze())
}

/// URL-safe base64, possibly percent-encoded (padding must be, as `%3D`). Most clients send no
/// padding and nothing to unescape, so the raw value is usually decoded as it stands.
fn decode_base64_message(raw: &[u8], frame: &mut BytesMut) -> Result<(), ConnectError> {
    let unescaped: Vec<u8>;
    let text = if raw.iter().any(|&b| b == b'%' || b == b'+') {
        unescaped = PercentDecoder::new(raw)
            .collect::<Option<Vec<u8>>>()
            .ok_or(BAD_PERCENT)?;
        &unescaped[..]
    } else {
        raw
    };
    let engine = if text.len().is_multiple_of(4) {
        &URL_SAFE_PADDED
    } else {
        &URL_SAFE_UNPADDED
    };
    let start = frame.len();
    // Three bytes per four characters, rounded up: what the engine asks room for.
    frame.resize(start + text.len().div_ceil(4) * 3, 0);
    let written = engine
        .decode_slice(text, &mut frame[start..])
        .map_err(|_| BAD_BASE64)?;
    frame.truncate(start + written);
    Ok(())
}

/// Go's `base64.URLEncoding` (canonical padding) and `RawURLEncoding` (none), both lenient on
/// the unused bits of the last character, as Go is unless `Strict()`.
const URL_SAFE_PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);
const URL_SAFE_UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

    const MAX: usize = 1024;

    fn ok(query: &[u8]) -> GetRequest {
        parse(query, MAX).unwrap_or_else(|e| panic!("{query:?}: {e}"))
    }

    fn refused(query: &[u8]) -> ConnectError {
        match parse(query, MAX) {
            Ok(got) => panic!("{query:?} parsed: {got:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn decodes_the_protocol_examples() {
        let json = ok(b"encoding=json&message=%7B%22name%22%3A%22Buf%22%7D");
        assert_eq!(json.codec, Codec::Json);
        assert_eq!(json.message(), br#"{"name":"Buf"}"#);
        assert_eq!(&json.frame[..5], b"\x00\x00\x00\x00\x0e");
        assert_eq!(json.compression, None);

        let proto = ok(b"connect=v1&encoding=proto&base64=1&message=CgNCdWY");
        assert_eq!(proto.codec, Codec::Proto);
        assert_eq!(proto.message(), b"\x0a\x03Buf");
        assert_eq!(&proto.frame[..5], b"\x00\x00\x00\x00\x05");

        // Any order, unknown parameters alongside, empty pairs skipped.
        let reordered = ok(b"&message=CgNCdWY&x=1&&base64=1&encoding=proto&connect=v1&y");
        assert_eq!(reordered, proto);
    }

    #[test]
    fn base64_padded_unpadded_and_url_safe() {
        for len in 0..40usize {
            let message: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let unpadded = URL_SAFE_NO_PAD.encode(&message);
            let padded = URL_SAFE.encode(&message).replace('=', "%3D");
            for encoded in [unpadded, padded] {
                let query = format!("encoding=proto&base64=1&message={encoded}");
                assert_eq!(ok(query.as_bytes()).message(), &message[..], "{query}");
            }
        }
        // `-` and `_` are the URL-safe alphabet's; `+` is a space in a query and `/` belongs to
        // the standard alphabet, so both are refused.
        assert_eq!(
            ok(b"encoding=proto&base64=1&message=-_8").message(),
            b"\xfb\xff"
        );
        for bad in [
            &b"+_8"[..],
            b"/_8",
            b"%2B_8",
            b"A",
            b"AAAAA",
            b"QQ=",
            b"QQ%3D",
            b"QQ==%3D%3D",
        ] {
            let query = [b"encoding=proto&base64=1&message=".as_slice(), bad].concat();
            assert_eq!(refused(&query), BAD_BASE64, "{bad:?}");
        }
        // Unused trailing bits are ignored, as Go does.
        assert_eq!(ok(b"encoding=proto&base64=1&message=QR").message(), b"A");
    }

    #[test]
    fn percent_encoded_text() {
        let got = ok(b"encoding=json&message=a+b%20c%2Bd%C3%A9");
        assert_eq!(got.message(), "a b c+dé".as_bytes());
        // Keys may be escaped too.
        assert_eq!(ok(b"%65ncoding=json&%6Dessage=x").message(), b"x");
        // `base64` other than `1` is ignored: the message is text.
        assert_eq!(ok(b"encoding=json&base64=0&message=QQ").message(), b"QQ");
        assert_eq!(ok(b"encoding=json&base64=true&message=QQ").message(), b"QQ");
        assert_eq!(ok(b"encoding=json&base64=%ZZ&message=QQ").message(), b"QQ");
        assert_eq!(ok(b"encoding=json&base64=%31&message=QQ").message(), b"A");
        // An empty message is a message (the default one).
        assert_eq!(ok(b"encoding=proto&message=").message(), b"");
        assert_eq!(ok(b"encoding=proto&message").message(), b"");
        for bad in [&b"%"[..], b"%4", b"%4G", b"%G4", b"ab%", b"%%41"] {
            let query = [b"encoding=json&message=".as_slice(), bad].concat();
            assert_eq!(refused(&query), BAD_PERCENT, "{bad:?}");
        }
    }

    #[test]
    fn compression_sets_the_flag_unless_the_message_is_empty() {
        let got = ok(b"encoding=proto&base64=1&compression=gzip&message=H4sI");
        assert_eq!(got.compression.as_deref(), Some(&b"gzip"[..]));
        assert_eq!(got.frame[0], 0x01);
        let empty = ok(b"encoding=proto&compression=gzip&message=");
        assert_eq!(empty.compression.as_deref(), Some(&b"gzip"[..]));
        assert_eq!(&empty.frame[..], b"\x00\x00\x00\x00\x00");
        for identity in [&b"identity"[..], b"IDENTITY", b""] {
            let query = [
                b"encoding=proto&message=x&compression=".as_slice(),
                identity,
            ]
            .concat();
            let got = ok(&query);
            assert_eq!(got.compression, None);
            assert_eq!(got.frame[0], 0x00);
        }
        for bad in [&b"gz%20ip"[..], b"gzip,br", b"%00", b"a+b"] {
            let query = [b"encoding=proto&message=x&compression=".as_slice(), bad].concat();
            assert_eq!(refused(&query), BAD_COMPRESSION, "{bad:?}");
        }
    }

    #[test]
    fn refuses_what_the_protocol_refuses() {
        assert_eq!(refused(b"message=x"), MISSING_ENCODING);
        assert_eq!(refused(b"connect=v1"), MISSING_ENCODING);
        assert_eq!(refused(b""), MISSING_ENCODING);
        assert_eq!(refused(b"encoding=json"), MISSING_MESSAGE);
        assert_eq!(refused(b"encoding=json&messages=x"), MISSING_MESSAGE);
        assert_eq!(refused(b"connect=v2&encoding=json&message=x"), BAD_VERSION);
        assert_eq!(refused(b"connect=&encoding=json&message=x"), BAD_VERSION);
        assert_eq!(refused(b"encoding=&message=x"), BAD_ENCODING);
        assert_eq!(refused(b"encoding=a%2Fb&message=x"), BAD_ENCODING);
        assert_eq!(refused(b"encoding=connect%2Bproto&message=x"), BAD_ENCODING);
        for repeated in [
            &b"encoding=json&encoding=json&message=x"[..],
            b"encoding=json&message=x&message=x",
            b"encoding=json&message=x&%6Dessage=y",
            b"connect=v1&connect=v1&encoding=json&message=x",
            b"base64=1&base64=1&encoding=json&message=x",
            b"compression=gzip&compression=br&encoding=json&message=x",
        ] {
            assert_eq!(refused(repeated), REPEATED, "{repeated:?}");
        }
        let long_codec = [b"encoding=".as_slice(), &[b'a'; 200], b"&message=x"].concat();
        assert_eq!(refused(&long_codec), BAD_PERCENT);
    }

    #[test]
    fn message_size_is_bounded() {
        let message = vec![b'a'; MAX];
        let at_limit = [b"encoding=json&message=".as_slice(), &message].concat();
        assert_eq!(ok(&at_limit).message().len(), MAX);
        let over = [at_limit.as_slice(), b"a"].concat();
        assert_eq!(refused(&over), TOO_LARGE);
        let encoded = URL_SAFE_NO_PAD.encode(vec![7u8; MAX + 1]);
        let over = format!("encoding=proto&base64=1&message={encoded}");
        assert_eq!(refused(over.as_bytes()), TOO_LARGE);
        assert_eq!(parse(b"encoding=json&message=", 0).unwrap().message(), b"");
    }

    #[test]
    fn hostile_queries_never_panic() {
        let inputs: [&[u8]; 12] = [
            b"=",
            b"&&&",
            b"==&==",
            b"message==&encoding==",
            b"%",
            b"%&message=%",
            b"encoding=json&message=%C3",
            b"encoding=proto&base64=1&message=%3D%3D%3D%3D",
            b"encoding=proto&base64=1&message====",
            b"\xff\xfe=\x00&encoding=json&message=\xff",
            b"encoding=json&message=\r\n",
            b"encoding=%F0%9F%98%80&message=x",
        ];
        for query in inputs {
            let _ = parse(query, MAX);
            let _ = Scan::find(query).map(|scan| scan.and_then(|s| s.codec()));
        }
    }
}
