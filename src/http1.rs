//! HTTP/1.1 request parsing for the downstream side, sans-IO.
//!
//! CONTRACT (skeleton; the implementation replaces these bodies):
//! - `parse_request_head` parses with `httparse` over the front of the read buffer. On success it
//!   splits the head off the buffer (`split_to(..).freeze()`) and every header value and the path
//!   are `Bytes` slices of that frozen head: nothing is copied.
//! - `ChunkedDecoder` decodes a chunked request body from the front of the read buffer, returning
//!   each chunk's data as a `Bytes` slice split off the buffer.
//! - `encode_response_head` writes a status line and headers into a reusable `BytesMut`.

use bytes::{Bytes, BytesMut};

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes from the start of the request line to the end of the blank line.
    pub header_bytes_max: usize,
    /// Number of header fields.
    pub header_count_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Options,
    Head,
    Put,
    Delete,
    /// Any other token, as sent.
    Other(Bytes),
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no Content-Length and no Transfer-Encoding, or Content-Length: 0).
    Empty,
    /// Content-Length bytes.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
}

/// One header field. `name` is the name as sent (case preserved); `value` a slice of the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
}

/// A parsed request head. All `Bytes` are slices of the frozen head buffer.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// Request target as sent (origin-form expected; absolute-form accepted, path kept as sent).
    pub path: Bytes,
    pub version: Version,
    /// Every header, in order, including the ones also summarised below.
    pub headers: Vec<Header>,
    pub body: BodyKind,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (HTTP/1.1 only).
    pub expect_continue: bool,
    /// Convenience copies (cheap `Bytes` clones) of common headers, when present.
    pub host: Option<Bytes>,
    pub content_type: Option<Bytes>,
}

/// Why a request head or body was rejected. `status()` is the HTTP status to answer with before
/// closing; `reason()` a short human-readable reason for the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http1Error {
    /// Malformed syntax (bad token, bad version, obs-fold, bad header name/value...). 400.
    Malformed(&'static str),
    /// Content-Length together with Transfer-Encoding, multiple differing Content-Lengths,
    /// unsupported transfer coding. 400.
    Smuggling(&'static str),
    /// Head larger than `header_bytes_max` or more than `header_count_max` fields. 431.
    HeadTooLarge,
    /// Bad chunk size line, chunk extension or trailer section too long, missing CRLF. 400.
    BadChunk(&'static str),
    /// Content-Length larger than the body limit, or chunked body exceeding it. 413.
    BodyTooLarge,
}

impl Http1Error {
    pub fn status(&self) -> u16 {
        todo!()
    }
    pub fn reason(&self) -> &'static str {
        todo!()
    }
}

/// Parse one request head from the front of `buf`.
/// Returns `Ok(None)` when more bytes are needed (and the head limit is not yet exceeded).
/// Leading empty lines (CRLF) before a request line are skipped, as RFC 9112 allows.
pub fn parse_request_head(
    buf: &mut BytesMut,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, Http1Error> {
    let _ = (buf, limits);
    todo!()
}

/// One step of chunked body decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkEvent {
    /// A piece of body data (a slice split off the buffer; may be part of a chunk).
    Data(Bytes),
    /// The last-chunk and trailer section were consumed; the body is complete.
    End,
}

/// Incremental decoder for a chunked request body, with a cap on total body bytes.
#[derive(Debug)]
pub struct ChunkedDecoder {
    _private: (),
}

impl ChunkedDecoder {
    pub fn new(body_bytes_max: u64) -> Self {
        let _ = body_bytes_max;
        todo!()
    }
    /// Decode from the front of `buf`, consuming what it uses. `Ok(None)` means more bytes are
    /// needed. Data is returned as soon as any is available (not held until the chunk is whole).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ChunkEvent>, Http1Error> {
        let _ = buf;
        todo!()
    }
}

/// Append `HTTP/1.1 <status> <reason>\r\n`, each `name: value\r\n`, and the blank line to `out`.
/// `version` selects the status line's version token.
pub fn encode_response_head(
    out: &mut BytesMut,
    version: Version,
    status: u16,
    headers: &[(&[u8], &[u8])],
) {
    let _ = (out, version, status, headers);
    todo!()
}

/// The chunk-size line for a chunk of `len` bytes (`"<hex>\r\n"`), into a small stack buffer.
pub fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    let _ = len;
    todo!()
}

// --- Response head writing, piece by piece, so callers never build a header list. ---

/// Append `HTTP/1.x <status> <reason>\r\n`.
pub fn write_status_line(out: &mut BytesMut, version: Version, status: u16) {
    let _ = (out, version, status);
    todo!()
}

/// Append `name: value\r\n`.
pub fn write_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append `content-length: <n>\r\n` without allocating.
pub fn write_content_length(out: &mut BytesMut, length: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = length;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_header(out, b"content-length", &digits[at..]);
}

/// Append the blank line that ends a head.
pub fn finish_head(out: &mut BytesMut) {
    out.extend_from_slice(b"\r\n");
}
