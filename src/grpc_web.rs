//! gRPC-Web ⇄ gRPC translation pieces, sans-IO (grpc/grpc `doc/PROTOCOL-WEB.md`).
//!
//! Browsers cannot speak gRPC over HTTP/2 because they neither expose trailers nor let a page
//! control HTTP/2 framing. gRPC-Web therefore moves the trailers into the body as a frame with
//! flag bit 7 set, and optionally base64-encodes the whole body (`application/grpc-web-text`) for
//! XHR clients that can only read text. This module holds every byte-level piece of that
//! translation, so the connection loop only moves buffers around:
//!
//! - [`classify_content_type`] and [`accepts_text`] read the request's media types;
//! - [`Base64Decoder`] turns a text-mode request body back into binary, chunk by chunk;
//! - [`encode_base64_flush`] and [`encode_trailer_frame`] build the response body;
//! - [`FrameParser`] splits length-prefixed frames wherever whole messages or the trailer
//!   frame must be seen (request bodies, clients in tests, the fuzz targets);
//! - [`parse_grpc_timeout`], [`Code`], [`code_from_http_status`], [`code_from_h2_reason`] and
//!   [`encode_grpc_message`] implement the status rules of `doc/PROTOCOL-HTTP2.md`,
//!   `doc/http-grpc-status-mapping.md` and `doc/statuscodes.md`.
//!
//! Nothing here touches a socket, and nothing panics on input from the network.
//!
//! Where ringway deliberately differs from Envoy's `grpc_web` filter:
//! - content types are matched case-insensitively with parameters ignored, and any `+suffix` is
//!   accepted and kept upstream (Envoy matches four exact strings and always sends plain
//!   `application/grpc`);
//! - a text-mode body may contain padding in the middle (independently encoded chunks, as
//!   `PROTOCOL-WEB.md` allows for responses) and may end unpadded; Envoy decodes the whole
//!   4-byte groups of each read in one go, so it fails on padding that does not happen to end
//!   a read, and it requires the body length to be a multiple of 4;
//! - trailer names are lower-cased and trailers whose values hold control bytes (CR, LF, NUL,
//!   ...) are dropped rather than copied into the body.

use crate::http1::trim_ows;
use base64::engine::general_purpose::PAD;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::OnceLock;
use std::time::Duration;

/// What a request's `content-type` says about the gRPC-Web call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebContentType {
    /// `application/grpc-web-text…`: the body is base64.
    pub text: bool,
    /// The content type to send upstream: `application/grpc` plus the same `+suffix` if any
    /// (e.g. `application/grpc-web-text+proto` → `application/grpc+proto`).
    pub upstream: Bytes,
    /// The content type to answer the client with: the request's own type without parameters
    /// (e.g. `application/grpc-web+proto`).
    pub response: Bytes,
}

const WEB_TYPE: &[u8] = b"application/grpc-web";
const TEXT_MARK: &[u8] = b"-text";

/// RFC 6838 limits a media type's subtype (`restricted-name`) to 127 characters; the `+suffix`
/// is part of it, so a longer suffix cannot be a media type and is refused rather than copied
/// into the upstream request.
const MEDIA_SUFFIX_BYTES_MAX: usize = 127;

/// Classify a request content type. Case-insensitive on the type, parameters (`; charset=…`)
/// ignored. Returns `None` for anything that is not gRPC-Web.
///
/// `application/grpc-web-text-base64`, which `PROTOCOL-WEB.md` mentions as a way to name the
/// text encoding, is not accepted: no client sends it and Envoy does not accept it either.
pub fn classify_content_type(value: &[u8]) -> Option<WebContentType> {
    let media = trim_ows(before_semicolon(value));
    let rest = strip_prefix_ignore_case(media, WEB_TYPE)?;
    let (text, rest) = match strip_prefix_ignore_case(rest, TEXT_MARK) {
        Some(after) => (true, after),
        None => (false, rest),
    };
    let suffix = match rest {
        [] => None,
        [b'+', suffix @ ..] if is_media_suffix(suffix) => Some(suffix),
        _ => return None,
    };
    let (upstream, response) = content_type_pair(text, suffix);
    Some(WebContentType {
        text,
        upstream,
        response,
    })
}

/// The upstream and response content types for a classified request. The suffixes real
/// clients send (none, `proto`, `json`) are served from static strings so the hot path does
/// not allocate.
fn content_type_pair(text: bool, suffix: Option<&[u8]>) -> (Bytes, Bytes) {
    let known = match suffix {
        None => Some(0),
        Some(s) if s.eq_ignore_ascii_case(b"proto") => Some(1),
        Some(s) if s.eq_ignore_ascii_case(b"json") => Some(2),
        Some(_) => None,
    };
    if let Some(index) = known {
        const UPSTREAM: [&[u8]; 3] = [
            b"application/grpc",
            b"application/grpc+proto",
            b"application/grpc+json",
        ];
        const BINARY: [&[u8]; 3] = [
            b"application/grpc-web",
            b"application/grpc-web+proto",
            b"application/grpc-web+json",
        ];
        const TEXT: [&[u8]; 3] = [
            b"application/grpc-web-text",
            b"application/grpc-web-text+proto",
            b"application/grpc-web-text+json",
        ];
        let response = if text { TEXT[index] } else { BINARY[index] };
        return (
            Bytes::from_static(UPSTREAM[index]),
            Bytes::from_static(response),
        );
    }
    let suffix = suffix.unwrap_or_default();
    let mut upstream = Vec::with_capacity(b"application/grpc+".len() + suffix.len());
    upstream.extend_from_slice(b"application/grpc+");
    upstream.extend(suffix.iter().map(u8::to_ascii_lowercase));
    let mut response = Vec::with_capacity(WEB_TYPE.len() + TEXT_MARK.len() + 1 + suffix.len());
    response.extend_from_slice(WEB_TYPE);
    if text {
        response.extend_from_slice(TEXT_MARK);
    }
    response.push(b'+');
    response.extend(suffix.iter().map(u8::to_ascii_lowercase));
    (Bytes::from(upstream), Bytes::from(response))
}

/// Whether `suffix` is a `restricted-name` (RFC 6838 §4.2): it ends up in the upstream request
/// and the response, so it must not carry separators or control bytes.
fn is_media_suffix(suffix: &[u8]) -> bool {
    !suffix.is_empty()
        && suffix.len() <= MEDIA_SUFFIX_BYTES_MAX
        && suffix.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                )
        })
}

/// Whether an `Accept` header asks for text mode (`application/grpc-web-text`).
///
/// Any element of the comma-separated list counts, with or without a `+suffix`; parameters
/// (including `q`) are ignored. Envoy compares the whole header with two exact strings, which
/// misses `Accept: application/grpc-web-text, */*`.
pub fn accepts_text(accept: &[u8]) -> bool {
    accept.split(|&b| b == b',').any(|item| {
        let media = trim_ows(before_semicolon(item));
        match strip_prefix_ignore_case(media, b"application/grpc-web-text") {
            Some(rest) => rest.is_empty() || rest[0] == b'+',
            None => false,
        }
    })
}

fn before_semicolon(value: &[u8]) -> &[u8] {
    match value.iter().position(|&b| b == b';') {
        Some(end) => &value[..end],
        None => value,
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&value[prefix.len()..])
    } else {
        None
    }
}

/// Streaming base64 decoder for grpc-web-text request bodies. Correct across arbitrary chunk
/// boundaries; accepts padded and unpadded input, and padding in the middle of the stream
/// (concatenated independently-encoded messages). Whitespace is rejected.
///
/// Only the standard alphabet (RFC 4648 §4, `+` and `/`) is accepted: the grpc-web JS client
/// encodes request bodies with Closure's `goog.crypt.base64.encodeByteArray`, whose default
/// alphabet is the standard one, and Envoy's decoder accepts nothing else. URL-safe `-` and `_`
/// are therefore errors, as are whitespace, `=` in the first two places of a quantum, data after
/// `=` in the same quantum, and non-zero bits left over before padding (non-canonical input
/// that no encoder produces).
///
/// Whole 4-character quanta are decoded in bulk by the `base64` crate's SIMD engine; at most
/// three characters are carried from one call to the next. After an error the decoder stays
/// failed: the rest of the body cannot be trusted.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    /// Characters of an incomplete quantum left over from the previous call.
    carry: [u8; 4],
    carry_len: u8,
    failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Error;

impl std::fmt::Display for Base64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid base64 in grpc-web-text body")
    }
}

impl std::error::Error for Base64Error {}

impl Base64Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode `input`, appending decoded bytes to `out`; keeps an incomplete quantum for later.
    /// On error nothing is appended to `out` by this call.
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), Base64Error> {
        if self.failed {
            return Err(Base64Error);
        }
        let out_len_before = out.len();
        let result = self.decode_chunk(input, out);
        if result.is_err() {
            self.failed = true;
            out.truncate(out_len_before);
        }
        result
    }

    /// End of input: decode a trailing unpadded quantum (2 or 3 chars); 1 leftover char is an
    /// error, and so is a quantum cut short after its padding began (`QQ=`).
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), Base64Error> {
        if self.failed {
            return Err(Base64Error);
        }
        let carried = usize::from(self.carry_len);
        self.carry_len = 0;
        if carried == 0 {
            return Ok(());
        }
        let mut decoded = [0u8; 3];
        match decode_partial(&self.carry[..carried], &mut decoded) {
            Ok(written) => {
                out.extend_from_slice(&decoded[..written]);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn decode_chunk(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), Base64Error> {
        let mut rest = input;
        if self.carry_len > 0 {
            let carried = usize::from(self.carry_len);
            let take = (4 - carried).min(rest.len());
            self.carry[carried..carried + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            if carried + take < 4 {
                self.carry_len = (carried + take) as u8;
                return Ok(());
            }
            self.carry_len = 0;
            let quantum = self.carry;
            decode_quanta(&quantum, out)?;
        }
        let whole = rest.len() / 4 * 4;
        decode_quanta(&rest[..whole], out)?;
        let tail = &rest[whole..];
        self.carry[..tail.len()].copy_from_slice(tail);
        self.carry_len = tail.len() as u8;
        Ok(())
    }
}

/// The engine for whole quanta: SIMD where the CPU has it, with the crate's scalar fallback.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn engine() -> &'static base64::engine::Simd {
    static ENGINE: OnceLock<base64::engine::Simd> = OnceLock::new();
    ENGINE.get_or_init(|| base64::engine::Simd::standard(PAD))
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn engine() -> &'static base64::engine::GeneralPurpose {
    static ENGINE: OnceLock<base64::engine::GeneralPurpose> = OnceLock::new();
    ENGINE.get_or_init(|| base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, PAD))
}

/// Decode `region` (a whole number of quanta) and append the bytes to `out`. Quanta holding
/// `=` end a group and are decoded by hand; the runs between them go to the bulk engine. Each
/// search for `=` starts where the previous one stopped, so many short padded groups cost
/// linear time too.
fn decode_quanta(region: &[u8], out: &mut BytesMut) -> Result<(), Base64Error> {
    debug_assert!(region.len().is_multiple_of(4));
    if region.is_empty() {
        return Ok(());
    }
    let start = out.len();
    out.resize(start + region.len() / 4 * 3, 0);
    let mut written = start;
    let mut rest = region;
    loop {
        let bulk = find_pad(rest) / 4 * 4;
        if bulk > 0 {
            written += engine()
                .decode_slice(&rest[..bulk], &mut out[written..])
                .map_err(|_| Base64Error)?;
        }
        if bulk == rest.len() {
            break;
        }
        let mut decoded = [0u8; 3];
        let n = decode_padded_quantum(&rest[bulk..bulk + 4], &mut decoded)?;
        out[written..written + n].copy_from_slice(&decoded[..n]);
        written += n;
        rest = &rest[bulk + 4..];
    }
    out.truncate(written);
    Ok(())
}

/// Index of the first `=` in `input`, or `input.len()`. Blocks of 32 are or-folded without an
/// early exit so the compiler vectorises the common case of no padding at all.
fn find_pad(input: &[u8]) -> usize {
    let mut blocks = input.chunks_exact(32);
    let mut offset = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |seen, &b| seen | (b == b'=')) {
            break;
        }
        offset += 32;
    }
    input[offset..]
        .iter()
        .position(|&b| b == b'=')
        .map_or(input.len(), |i| offset + i)
}

/// Decode one quantum that holds at least one `=`: `xx==` or `xxx=`.
fn decode_padded_quantum(quantum: &[u8], out: &mut [u8; 3]) -> Result<usize, Base64Error> {
    let data_len = match quantum {
        [_, _, b'=', b'='] => 2,
        [_, _, _, b'='] => 3,
        _ => return Err(Base64Error),
    };
    decode_partial(&quantum[..data_len], out)
}

/// Decode the 2 or 3 data characters of a final (padded or unpadded) quantum. The bits that
/// do not fill a byte must be zero, as RFC 4648 §3.5 lets a decoder require; this keeps one
/// encoding per byte string and matches the `base64` crate's one-shot decode.
fn decode_partial(chars: &[u8], out: &mut [u8; 3]) -> Result<usize, Base64Error> {
    let mut sextets = [0u8; 3];
    if !(2..=3).contains(&chars.len()) {
        return Err(Base64Error);
    }
    for (sextet, &c) in sextets.iter_mut().zip(chars) {
        *sextet = DECODE[usize::from(c)];
        if *sextet == INVALID {
            return Err(Base64Error);
        }
    }
    let [a, b, c] = sextets;
    out[0] = a << 2 | b >> 4;
    if chars.len() == 2 {
        return if b & 0x0F == 0 {
            Ok(1)
        } else {
            Err(Base64Error)
        };
    }
    out[1] = b << 4 | c >> 2;
    if c & 0x03 == 0 {
        Ok(2)
    } else {
        Err(Base64Error)
    }
}

const INVALID: u8 = 0xFF;

/// Standard-alphabet decode table; everything else, `=` included, is [`INVALID`].
const DECODE: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Base64-encode one flush of response bytes, padded, appended to `out`. Each flush is encoded
/// on its own so a server-streamed message reaches the client whole without waiting for the next.
pub fn encode_base64_flush(input: &[u8], out: &mut BytesMut) {
    // `input.len() / 3 * 4 + 4` bounds the padded length and cannot overflow, unlike the
    // exact formula on a pathological length.
    let start = out.len();
    out.resize(start + input.len() / 3 * 4 + 4, 0);
    let written = engine()
        .encode_slice(input, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
}

/// Flag byte of an uncompressed gRPC-Web trailer frame.
pub const TRAILER_FLAG: u8 = 0x80;
/// Flag byte of a compressed message; `0x00` is an uncompressed one.
pub const COMPRESSED_FLAG: u8 = 0x01;
/// Flag byte (1) and big-endian length (4) in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Append the gRPC-Web trailer frame: flag `0x80`, 4-byte big-endian length, then
/// `name:value\r\n` for each `(name, value)` with the name lower-cased.
///
/// A pair whose name is not an HTTP token or whose value holds a control byte (CR, LF, NUL,
/// ...) is left out: it would let an upstream inject extra trailer lines the client would
/// believe. (Upstream trailers arrive through `h2`, which already refuses such bytes, so this
/// never drops a well-formed trailer.)
pub fn encode_trailer_frame<'a>(
    trailers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut BytesMut,
) {
    let start = out.len();
    out.put_u8(TRAILER_FLAG);
    out.put_u32(0);
    let mut block_len: usize = 0;
    for (name, value) in trailers {
        if !is_token(name) || !is_field_value(value) {
            continue;
        }
        let line_len = name.len() + 1 + value.len() + 2;
        // The length prefix is 32 bits; trailers never come near 4 GiB (h2 caps the header
        // list long before), but a frame whose prefix lied would desynchronise the client.
        if block_len + line_len > u32::MAX as usize {
            break;
        }
        block_len += line_len;
        out.extend(name.iter().map(u8::to_ascii_lowercase));
        out.put_u8(b':');
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out[start + 1..start + FRAME_HEADER_BYTES].copy_from_slice(&(block_len as u32).to_be_bytes());
}

/// RFC 9110 §5.5 field value bytes: visible ASCII, SP, HTAB and obs-text; no other control
/// byte, so no CR, LF or NUL.
fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7F) || b == b'\t')
}

/// RFC 9110 §5.6.2 `token`: the only bytes allowed in a header name.
fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| is_tchar(b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
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

/// Parse a `grpc-timeout` header value (`1*8DIGIT` then one of `H M S m u n`).
///
/// `0` is accepted (a deadline that has already passed) although the spec asks for a positive
/// integer: honouring it is safer than ignoring the deadline, and grpc-go and grpc-core accept
/// it too. Eight digits of hours fit easily in a `Duration`; the arithmetic saturates anyway.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    const DIGITS_MAX: usize = 8;
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// gRPC status codes used by the proxy (grpc/grpc doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code, indexed by its number.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The decimal string sent in `grpc-status` (`"14"`).
    pub fn as_str(self) -> &'static str {
        const DECIMAL: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        DECIMAL[self as usize]
    }

    /// Upper-case name (`"UNAVAILABLE"`), for logs and reports.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES[self as usize]
    }

    pub fn from_u32(code: u32) -> Option<Code> {
        CODES.get(usize::try_from(code).ok()?).copied()
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// gRPC status for an upstream reply that is not gRPC, by HTTP status
/// (doc/http-grpc-status-mapping.md). The table includes 431 → INTERNAL.
pub fn code_from_http_status(status: u16) -> Code {
    match status {
        400 | 431 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// gRPC status for an upstream RST_STREAM / GOAWAY error code (doc/PROTOCOL-HTTP2.md, "Errors").
///
/// The doc gives STREAM_CLOSED no mapping (there is no stream left to fail) and does not list
/// HTTP_1_1_REQUIRED; both become INTERNAL, as in grpc-go. Codes the doc does not know become
/// UNKNOWN, again as grpc-go does. FLOW_CONTROL_ERROR follows the doc (INTERNAL), not grpc-go
/// (RESOURCE_EXHAUSTED).
pub fn code_from_h2_reason(reason: u32) -> Code {
    match reason {
        // NO_ERROR: an explicit OK status should have been sent instead.
        0x0 => Code::Internal,
        // PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
        // FRAME_SIZE_ERROR.
        0x1..=0x6 => Code::Internal,
        // REFUSED_STREAM: nothing was processed, so the call may be retried elsewhere.
        0x7 => Code::Unavailable,
        // CANCEL, sent by a server.
        0x8 => Code::Cancelled,
        // COMPRESSION_ERROR, CONNECT_ERROR.
        0x9 | 0xa => Code::Internal,
        // ENHANCE_YOUR_CALM: the exhausted resource is bandwidth.
        0xb => Code::ResourceExhausted,
        // INADEQUATE_SECURITY.
        0xc => Code::PermissionDenied,
        // HTTP_1_1_REQUIRED.
        0xd => Code::Internal,
        _ => Code::Unknown,
    }
}

/// Percent-encode a status message for `grpc-message` (PROTOCOL-HTTP2.md: bytes outside
/// 0x20..=0x7E and `%` are percent-encoded).
pub fn encode_grpc_message(message: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0F)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    // ---- content types ----

    #[test]
    fn classify_common_types_without_allocating() {
        type Case = (&'static [u8], bool, &'static [u8], &'static [u8]);
        let cases: [Case; 6] = [
            (
                b"application/grpc-web",
                false,
                b"application/grpc",
                b"application/grpc-web",
            ),
            (
                b"application/grpc-web+proto",
                false,
                b"application/grpc+proto",
                b"application/grpc-web+proto",
            ),
            (
                b"application/grpc-web-text",
                true,
                b"application/grpc",
                b"application/grpc-web-text",
            ),
            (
                b"application/grpc-web-text+proto",
                true,
                b"application/grpc+proto",
                b"application/grpc-web-text+proto",
            ),
            (
                b"Application/GRPC-Web-Text+Proto; charset=utf-8",
                true,
                b"application/grpc+proto",
                b"application/grpc-web-text+proto",
            ),
            (
                b" \tapplication/grpc-web+json ; q=1 ",
                false,
                b"application/grpc+json",
                b"application/grpc-web+json",
            ),
        ];
        for (input, text, upstream, response) in cases {
            let got = classify_content_type(input).unwrap();
            assert_eq!(got.text, text, "{input:?}");
            assert_eq!(&got.upstream[..], upstream, "{input:?}");
            assert_eq!(&got.response[..], response, "{input:?}");
        }
    }

    #[test]
    fn classify_custom_suffix_is_lower_cased() {
        let got = classify_content_type(b"application/grpc-web-text+Thrift").unwrap();
        assert!(got.text);
        assert_eq!(&got.upstream[..], b"application/grpc+thrift");
        assert_eq!(&got.response[..], b"application/grpc-web-text+thrift");
    }

    #[test]
    fn classify_refuses_non_grpc_web() {
        let long_suffix = [b"application/grpc-web+".as_slice(), &[b'a'; 200]].concat();
        let refused: [&[u8]; 14] = [
            b"",
            b";",
            b"application/grpc",
            b"application/grpc+proto",
            b"application/grpc-webx",
            b"application/grpc-web+",
            b"application/grpc-web-text-base64",
            b"application/grpc-web-textual",
            b"application/grpc-web+pro to",
            b"application/grpc-web+proto\r\nx-evil: 1",
            b"application/grpc-web+\0",
            b"text/plain",
            b"application/grpc-we",
            &long_suffix,
        ];
        for input in refused {
            assert_eq!(classify_content_type(input), None, "{input:?}");
        }
    }

    #[test]
    fn accept_header() {
        assert!(accepts_text(b"application/grpc-web-text"));
        assert!(accepts_text(b"application/grpc-web-text+proto"));
        assert!(accepts_text(b"*/*, Application/GRPC-Web-Text ;q=0.5"));
        assert!(!accepts_text(b""));
        assert!(!accepts_text(b"*/*"));
        assert!(!accepts_text(b"application/grpc-web"));
        assert!(!accepts_text(b"application/grpc-web+proto"));
        assert!(!accepts_text(b"application/grpc-web-textual"));
    }

    // ---- base64 ----

    fn decode_split(input: &[u8], splits: &[usize]) -> Result<Vec<u8>, Base64Error> {
        let mut decoder = Base64Decoder::new();
        let mut out = BytesMut::new();
        let mut prev = 0;
        for &at in splits {
            decoder.decode(&input[prev..at], &mut out)?;
            prev = at;
        }
        decoder.decode(&input[prev..], &mut out)?;
        decoder.finish(&mut out)?;
        Ok(out.to_vec())
    }

    /// Every single and every pair of split points gives the same answer as one piece.
    fn assert_split_invariant(input: &[u8]) -> Result<Vec<u8>, Base64Error> {
        let whole = decode_split(input, &[]);
        for i in 0..=input.len() {
            assert_eq!(decode_split(input, &[i]), whole, "{input:?} split at {i}");
            for j in i..=input.len().min(i + 9) {
                assert_eq!(decode_split(input, &[i, j]), whole, "{input:?} at {i},{j}");
            }
        }
        whole
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 3) as u8).collect()
    }

    #[test]
    fn base64_matches_one_shot_decode_at_every_split() {
        for len in [0, 1, 2, 3, 4, 5, 16, 47, 48, 49, 100, 257] {
            let message = sample(len);
            let padded = STANDARD.encode(&message);
            assert_eq!(
                assert_split_invariant(padded.as_bytes()).unwrap(),
                STANDARD.decode(&padded).unwrap()
            );
            let unpadded = STANDARD_NO_PAD.encode(&message);
            assert_eq!(
                assert_split_invariant(unpadded.as_bytes()).unwrap(),
                STANDARD_NO_PAD.decode(&unpadded).unwrap()
            );
        }
    }

    #[test]
    fn base64_concatenated_padded_groups() {
        let parts = [
            sample(1),
            sample(2),
            sample(5),
            sample(0),
            sample(33),
            sample(3),
        ];
        let mut encoded = String::new();
        let mut expected = Vec::new();
        for part in &parts {
            encoded.push_str(&STANDARD.encode(part));
            expected.extend_from_slice(part);
        }
        assert_eq!(
            assert_split_invariant(encoded.as_bytes()).unwrap(),
            expected
        );
        // A final unpadded group after padded ones.
        encoded.push_str(&STANDARD_NO_PAD.encode(b"xy"));
        expected.extend_from_slice(b"xy");
        assert_eq!(
            assert_split_invariant(encoded.as_bytes()).unwrap(),
            expected
        );
        // Many tiny padded groups must stay linear and correct.
        let many = "AA==".repeat(10_000);
        assert_eq!(
            decode_split(many.as_bytes(), &[]).unwrap(),
            vec![0u8; 10_000]
        );
    }

    #[test]
    fn base64_rejects_hostile_input() {
        let refused: [&[u8]; 20] = [
            b"A",
            b"AAAAA",
            b"=AAA",
            b"A=AA",
            b"A===",
            b"====",
            b"AA=A",
            b"AA==A",
            b"AA=",
            b"AAA=AAAA=",
            b"AA AA",
            b"AAAA\r\nAAAA",
            b"AAAA\n",
            b"AA\tA",
            b"AA-_",
            b"AA\0A",
            b"AB==",
            b"AAB=",
            b"QUJD\xff",
            b"QUJD=QUJD",
        ];
        for input in refused {
            for i in 0..=input.len() {
                assert_eq!(
                    decode_split(input, &[i]),
                    Err(Base64Error),
                    "{input:?} at {i}"
                );
            }
        }
    }

    #[test]
    fn base64_bulk_engine_agrees_with_scalar_reference() {
        // The bulk path uses the crate's SIMD engine; long inputs make sure it is exercised.
        let message = sample(70_000);
        let encoded = STANDARD.encode(&message);
        assert_eq!(
            decode_split(encoded.as_bytes(), &[1, 4099]).unwrap(),
            message
        );
        let mut bad = encoded.into_bytes();
        bad[50_001] = b'*';
        assert_eq!(decode_split(&bad, &[]), Err(Base64Error));
    }

    #[test]
    fn base64_error_appends_nothing_and_sticks() {
        let mut decoder = Base64Decoder::new();
        let mut out = BytesMut::new();
        decoder.decode(b"QUJD", &mut out).unwrap();
        assert_eq!(&out[..], b"ABC");
        assert_eq!(decoder.decode(b"QUJDQU!D", &mut out), Err(Base64Error));
        assert_eq!(&out[..], b"ABC");
        assert_eq!(decoder.decode(b"QUJD", &mut out), Err(Base64Error));
        assert_eq!(decoder.finish(&mut out), Err(Base64Error));
    }

    #[test]
    fn base64_flush_encoding() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_base64_flush(b"", &mut out);
        assert_eq!(&out[..], b"prefix");
        for len in [1, 2, 3, 4, 100, 65_536] {
            let message = sample(len);
            let mut out = BytesMut::new();
            encode_base64_flush(&message, &mut out);
            assert_eq!(&out[..], STANDARD.encode(&message).as_bytes());
        }
    }

    // ---- frames ----

    fn frame_bytes(flag: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(flag);
        buf.put_u32(payload.len() as u32);
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn trailer_frame_encoding() {
        let mut out = BytesMut::new();
        encode_trailer_frame(
            [
                (&b"Grpc-Status"[..], &b"0"[..]),
                (b"grpc-message", b"ok"),
                (b"x-evil", b"a\r\nset-cookie: b"),
                (b"bad name", b"x"),
                (b"x-ctl", b"a\x01b"),
                (b"x-del", b"\x7f"),
                (b"", b"x"),
            ],
            &mut out,
        );
        let block = b"grpc-status:0\r\ngrpc-message:ok\r\n";
        assert_eq!(out[0], 0x80);
        assert_eq!(&out[1..5], &(block.len() as u32).to_be_bytes());
        assert_eq!(&out[5..], block);

        let mut empty = BytesMut::new();
        encode_trailer_frame(std::iter::empty(), &mut empty);
        assert_eq!(&empty[..], b"\x80\0\0\0\0");
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

    // ---- timeouts and status ----

    #[test]
    fn grpc_timeout() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout(b"0m"), Some(Duration::ZERO));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            &b""[..],
            b"S",
            b"1",
            b"123456789S",
            b"1s",
            b"1h",
            b"1 S",
            b" 1S",
            b"-1S",
            b"+1S",
            b"1.5S",
            b"\xff\xffS",
            b"1SS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn codes() {
        for n in 0..=16u32 {
            let code = Code::from_u32(n).unwrap();
            assert_eq!(code as u32, n);
            assert_eq!(code.as_str(), n.to_string());
        }
        assert_eq!(Code::from_u32(17), None);
        assert_eq!(Code::from_u32(u32::MAX), None);
        assert_eq!(Code::Unavailable.as_str(), "14");
        assert_eq!(Code::Unavailable.name(), "UNAVAILABLE");
        assert_eq!(Code::Cancelled.name(), "CANCELLED");
        assert_eq!(Code::Unauthenticated.name(), "UNAUTHENTICATED");
    }

    #[test]
    fn http_status_mapping() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (431, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (500, Code::Unknown),
            (0, Code::Unknown),
            (u16::MAX, Code::Unknown),
        ];
        for (status, code) in table {
            assert_eq!(code_from_http_status(status), code, "{status}");
        }
    }

    #[test]
    fn h2_reason_mapping() {
        let table = [
            (0x0, Code::Internal),
            (0x1, Code::Internal),
            (0x2, Code::Internal),
            (0x3, Code::Internal),
            (0x4, Code::Internal),
            (0x5, Code::Internal),
            (0x6, Code::Internal),
            (0x7, Code::Unavailable),
            (0x8, Code::Cancelled),
            (0x9, Code::Internal),
            (0xa, Code::Internal),
            (0xb, Code::ResourceExhausted),
            (0xc, Code::PermissionDenied),
            (0xd, Code::Internal),
            (0xe, Code::Unknown),
            (u32::MAX, Code::Unknown),
        ];
        for (reason, code) in table {
            assert_eq!(code_from_h2_reason(reason), code, "{reason:#x}");
        }
    }

    #[test]
    fn grpc_message_percent_encoding() {
        let mut out = Vec::new();
        encode_grpc_message("a b%c~\r\n\u{7f}é\u{0}", &mut out);
        assert_eq!(out, b"a b%25c~%0D%0A%7F%C3%A9%00");
        out.clear();
        encode_grpc_message("", &mut out);
        assert!(out.is_empty());
    }
}
