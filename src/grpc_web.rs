//! gRPC-Web ⇄ gRPC translation pieces, sans-IO (grpc/grpc doc/PROTOCOL-WEB.md).
//!
//! CONTRACT (skeleton; the implementation replaces these bodies).

use bytes::{Bytes, BytesMut};
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

/// Classify a request content type. Case-insensitive on the type, parameters (`; charset=…`)
/// ignored. Returns `None` for anything that is not gRPC-Web.
pub fn classify_content_type(value: &[u8]) -> Option<WebContentType> {
    let _ = value;
    todo!()
}

/// Whether an `Accept` header asks for text mode (`application/grpc-web-text`).
pub fn accepts_text(accept: &[u8]) -> bool {
    let _ = accept;
    todo!()
}

/// Streaming base64 decoder for grpc-web-text request bodies. Correct across arbitrary chunk
/// boundaries; accepts padded and unpadded input, and padding in the middle of the stream
/// (concatenated independently-encoded messages). Whitespace is rejected.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    _private: (),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Error;

impl Base64Decoder {
    pub fn new() -> Self {
        todo!()
    }
    /// Decode `input`, appending decoded bytes to `out`; keeps an incomplete quantum for later.
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), Base64Error> {
        let _ = (input, out);
        todo!()
    }
    /// End of input: decode a trailing unpadded quantum (2 or 3 chars); 1 leftover char is an
    /// error.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), Base64Error> {
        let _ = out;
        todo!()
    }
}

/// Base64-encode one flush of response bytes, padded, appended to `out`. Each flush is encoded
/// on its own so a server-streamed message reaches the client whole without waiting for the next.
pub fn encode_base64_flush(input: &[u8], out: &mut BytesMut) {
    let _ = (input, out);
    todo!()
}

/// Append the gRPC-Web trailer frame: flag `0x80`, 4-byte big-endian length, then
/// `name:value\r\n` for each `(name, value)` with the name lower-cased.
pub fn encode_trailer_frame<'a>(
    trailers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut BytesMut,
) {
    let _ = (trailers, out);
    todo!()
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

/// Incremental parser of gRPC / gRPC-Web length-prefixed frames, with a cap on frame length.
#[derive(Debug)]
pub struct FrameParser {
    _private: (),
}

impl FrameParser {
    pub fn new(frame_bytes_max: usize) -> Self {
        let _ = frame_bytes_max;
        todo!()
    }
    /// Parse one frame from the front of `buf`, splitting it off; `Ok(None)` if incomplete.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let _ = buf;
        todo!()
    }
}

/// Parse a `grpc-timeout` header value (`1*8DIGIT` then one of `H M S m u n`).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let _ = value;
    todo!()
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

impl Code {
    /// The decimal string sent in `grpc-status` (`"14"`).
    pub fn as_str(self) -> &'static str {
        todo!()
    }
    /// Upper-case name (`"UNAVAILABLE"`), for logs and reports.
    pub fn name(self) -> &'static str {
        todo!()
    }
    pub fn from_u32(code: u32) -> Option<Code> {
        let _ = code;
        todo!()
    }
}

/// gRPC status for an upstream reply that is not gRPC, by HTTP status
/// (doc/http-grpc-status-mapping.md).
pub fn code_from_http_status(status: u16) -> Code {
    let _ = status;
    todo!()
}

/// gRPC status for an upstream RST_STREAM / GOAWAY error code (doc/PROTOCOL-HTTP2.md, "Errors").
pub fn code_from_h2_reason(reason: u32) -> Code {
    let _ = reason;
    todo!()
}

/// Percent-encode a status message for `grpc-message` (PROTOCOL-HTTP2.md: bytes outside
/// 0x20..=0x7E and `%` are percent-encoded).
pub fn encode_grpc_message(message: &str, out: &mut Vec<u8>) {
    let _ = (message, out);
    todo!()
}
