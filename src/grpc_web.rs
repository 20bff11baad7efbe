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
//! - [`WebReply`] decides the response's content type (text when asked for with `Accept`), and
//!   [`is_forwardable_response_header`] which upstream headers reach the client as metadata.
//!
//! The status codes and their mappings are in `status.rs`, `grpc-timeout` in `translate.rs`,
//! and the parser of whole response bodies that the tests use in `testing.rs`.
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

use std::sync::OnceLock;

use base64::engine::general_purpose::PAD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::HeaderName;

use crate::field::{is_field_value, is_token, trim_ows};

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

/// Whether a request content type is native gRPC (`application/grpc`, or with any
/// `+suffix`): case-insensitive on the type, parameters ignored, the same suffix rules as
/// gRPC-Web. Native gRPC requests are passed upstream with their content type unchanged.
pub fn is_native_grpc(value: &[u8]) -> bool {
    let media = trim_ows(before_semicolon(value));
    match strip_prefix_ignore_case(media, b"application/grpc") {
        Some([]) => true,
        Some([b'+', suffix @ ..]) => is_media_suffix(suffix),
        _ => false,
    }
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

/// How a gRPC-Web call is answered: in text mode (base64) or binary, and with which content
/// type. A binary request is answered in text when its `Accept` asks for
/// `application/grpc-web-text`, as the grpc-web JS client does for server streams on browsers
/// that cannot read binary responses incrementally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebReply {
    pub text: bool,
    pub content_type: Bytes,
}

impl WebReply {
    pub fn new(request: &WebContentType, accept: Option<&[u8]>) -> Self {
        let text = request.text || accept.is_some_and(accepts_text);
        WebReply {
            text,
            content_type: text_aware_content_type(request, text),
        }
    }
}

/// The response content type: the request's own, or its text variant (same `+suffix`) when the
/// client asked for text with `Accept`.
fn text_aware_content_type(content_type: &WebContentType, text: bool) -> Bytes {
    if !text || content_type.text {
        return content_type.response.clone();
    }
    let suffix =
        &content_type.upstream[b"application/grpc".len().min(content_type.upstream.len())..];
    let mut text_type = BytesMut::with_capacity(32 + suffix.len());
    text_type.extend_from_slice(b"application/grpc-web-text");
    text_type.extend_from_slice(suffix);
    text_type.freeze()
}

/// Upstream response headers that are passed on to the client as initial metadata: all but
/// the content type (the client gets its own) and the hop-by-hop and framing headers.
pub fn is_forwardable_response_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-type"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
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
    // ---- replies ----

    #[test]
    fn reply_is_text_when_the_request_is_or_accept_asks() {
        let binary = classify_content_type(b"application/grpc-web+proto").unwrap();
        let text = classify_content_type(b"application/grpc-web-text+proto").unwrap();
        let custom = classify_content_type(b"application/grpc-web+thrift").unwrap();
        let reply = |ct: &WebContentType, accept: Option<&[u8]>| WebReply::new(ct, accept);
        assert_eq!(
            reply(&binary, None),
            WebReply {
                text: false,
                content_type: Bytes::from_static(b"application/grpc-web+proto")
            }
        );
        assert_eq!(
            reply(&binary, Some(b"application/grpc-web-text")).content_type,
            "application/grpc-web-text+proto"
        );
        assert_eq!(
            reply(&custom, Some(b"application/grpc-web-text")).content_type,
            "application/grpc-web-text+thrift"
        );
        assert!(reply(&text, None).text);
        assert_eq!(
            reply(&text, None).content_type,
            "application/grpc-web-text+proto"
        );
        assert!(!reply(&binary, Some(b"text/html")).text);
    }

    #[test]
    fn framing_and_hop_by_hop_response_headers_are_not_metadata() {
        for name in [
            "content-type",
            "content-length",
            "connection",
            "transfer-encoding",
            "te",
        ] {
            assert!(
                !is_forwardable_response_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in ["x-backend", "grpc-status", "grpc-message", "set-cookie"] {
            assert!(
                is_forwardable_response_header(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }
    #[test]
    fn native_grpc_content_types() {
        for ok in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"Application/GRPC+json; charset=utf-8",
            b" application/grpc+thrift ",
        ] {
            assert!(is_native_grpc(ok), "{ok:?}");
        }
        for bad in [
            &b"application/grpc-web"[..],
            b"application/grpc-web-text+proto",
            b"application/grpc+",
            b"application/grpc+a/b",
            b"application/grpcx",
            b"application/json",
            b"",
        ] {
            assert!(!is_native_grpc(bad), "{bad:?}");
        }
    }
}
