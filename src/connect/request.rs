//! A Connect request head and unary body, translated into what the gRPC request needs, sans-IO.
//!
//! The head translation is a function over `(name, value)` byte pairs, so that an HTTP/1.1 head
//! (slices of the read buffer) and an HTTP/2 `HeaderMap` use the same code: it returns what to
//! add ([`UpstreamHead`]: content type, deadline, encodings, and for a GET the whole body), and
//! [`is_dropped_request_header`] says what not to copy. The rest of the head is metadata and
//! passes as it is.
//!
//! Which header carries the message encoding is the one thing easy to get wrong: a unary call
//! compresses its body as a whole, so it uses HTTP's own `content-encoding` and
//! `accept-encoding`; a stream compresses message by message, so it uses
//! `connect-content-encoding` and `connect-accept-encoding`, and HTTP's headers there describe
//! the body as a whole (which ringway does not decode, so a stream's body `content-encoding`
//! other than `identity` is refused). A GET names its encoding in the query.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::get::{self, GetRequest};
use super::{
    is_token, strip_prefix_ignore_case, trim_ows, CallKind, Code, ConnectCall, ConnectError,
};

/// Flag byte (1) and big-endian length (4) in front of every gRPC frame and Connect envelope.
pub const FRAME_PREFIX_BYTES: usize = 5;

/// The protocol's bound on `connect-timeout-ms`: at most 10 digits.
pub const TIMEOUT_DIGITS_MAX: usize = 10;

/// Codings kept from one `accept-encoding` list. Browsers send four or five; the bound keeps a
/// hostile list from growing the upstream head.
pub const ACCEPT_ENCODINGS_MAX: usize = 16;

/// What the upstream gRPC request head needs, beyond the metadata that passes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHead {
    /// `content-type`: `application/grpc+<codec>`.
    pub content_type: Bytes,
    /// The client's deadline from `connect-timeout-ms`. The caller caps it and sends the
    /// remaining time as `grpc-timeout` ([`GrpcTimeout`] encodes it without losing range).
    pub timeout: Option<Duration>,
    /// `grpc-encoding`: how the request message is compressed, when not `identity`. The unary
    /// frame's compressed flag follows it ([`unary_frame_prefix`], [`UnaryBody`]).
    pub grpc_encoding: Option<Bytes>,
    /// `grpc-accept-encoding`: the codings the client accepts on the response, most preferred
    /// first, without quality values, `identity` and `*`.
    pub grpc_accept_encoding: Option<Bytes>,
    /// For a GET only: the whole upstream body, the query's message as one gRPC frame.
    pub get_body: Option<Bytes>,
}

/// Translate a Connect request head. `headers` are every request header (names in any case);
/// `query` is the target's query (only a GET reads it, see [`super::query_of`]);
/// `message_bytes_max` bounds a GET's decoded message.
pub fn translate_request_head<'a, I>(
    call: &ConnectCall,
    query: &[u8],
    headers: I,
    message_bytes_max: usize,
) -> Result<UpstreamHead, ConnectError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut seen = Seen::default();
    for (name, value) in headers {
        seen.record(call.kind, name, value)?;
    }
    let mut head = UpstreamHead {
        content_type: call.upstream_content_type(),
        timeout: seen.timeout,
        grpc_encoding: None,
        grpc_accept_encoding: seen.accept_encoding.finish(),
        get_body: None,
    };
    match call.kind {
        CallKind::Unary | CallKind::Streaming => head.grpc_encoding = seen.encoding,
        CallKind::UnaryGet => {
            let GetRequest {
                compression, frame, ..
            } = get::parse(query, message_bytes_max)?;
            head.grpc_encoding = compression;
            head.get_body = Some(frame);
        }
    }
    Ok(head)
}

/// Request headers the translation consumes or replaces, and the reserved ones that must not
/// reach the upstream from a client: the caller copies every other header as metadata (after
/// its framing dropped the hop-by-hop ones: `connection` and what it names, `te`, `host`, …).
///
/// - `content-type`, `content-length`, `content-encoding`, `accept-encoding`: replaced by the
///   gRPC content type and frame, `grpc-encoding` and `grpc-accept-encoding` (for a stream the
///   HTTP codings describe the body as a whole and mean nothing to a gRPC server);
/// - every `connect-…` header: reserved for the Connect protocol;
/// - the gRPC transport's own headers (`grpc-timeout`, `grpc-encoding`,
///   `grpc-accept-encoding`, `grpc-status`, `grpc-message`, `grpc-status-details-bin`): the
///   translation sets the first three, and a client must not forge any of them. Other `grpc-`
///   names (a tracer's `grpc-trace-bin`) are metadata.
pub fn is_dropped_request_header(name: &[u8]) -> bool {
    const DROPPED: &[&[u8]] = &[
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"accept-encoding",
        b"grpc-timeout",
        b"grpc-encoding",
        b"grpc-accept-encoding",
        b"grpc-status",
        b"grpc-message",
        b"grpc-status-details-bin",
    ];
    strip_prefix_ignore_case(name, b"connect-").is_some()
        || DROPPED
            .iter()
            .any(|dropped| dropped.eq_ignore_ascii_case(name))
}

const BAD_TIMEOUT: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "connect-timeout-ms must be 1 to 10 digits",
);
const REPEATED_TIMEOUT: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "connect-timeout-ms sent more than once",
);
const BAD_CODING: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "content encoding is not a content-coding token",
);
const LAYERED_CODINGS: ConnectError = ConnectError::new(
    Code::Unimplemented,
    "more than one content encoding applied to the message",
);
const STREAM_BODY_ENCODING: ConnectError = ConnectError::new(
    Code::Unimplemented,
    "content-encoding on a streaming request compresses the whole body; use connect-content-encoding",
);

/// The protocol headers found while walking the head.
#[derive(Default)]
struct Seen {
    timeout: Option<Duration>,
    encoding: Option<Bytes>,
    accept_encoding: AcceptEncoding,
}

impl Seen {
    fn record(&mut self, kind: CallKind, name: &[u8], value: &[u8]) -> Result<(), ConnectError> {
        // Every header read here starts with `a` or `c`; most of a browser's head does not.
        if !matches!(name.first(), Some(b'a' | b'A' | b'c' | b'C')) {
            return Ok(());
        }
        let streaming = kind == CallKind::Streaming;
        if name.eq_ignore_ascii_case(b"connect-timeout-ms") {
            if self.timeout.is_some() {
                return Err(REPEATED_TIMEOUT);
            }
            self.timeout = Some(parse_timeout_ms(value)?);
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            match kind {
                CallKind::Unary => merge_coding(&mut self.encoding, value)?,
                // The query names a GET's encoding; a GET has no body for this to describe.
                CallKind::UnaryGet => {}
                CallKind::Streaming => {
                    if content_coding(value)?.is_some() {
                        return Err(STREAM_BODY_ENCODING);
                    }
                }
            }
        } else if streaming && name.eq_ignore_ascii_case(b"connect-content-encoding") {
            merge_coding(&mut self.encoding, value)?;
        } else if name.eq_ignore_ascii_case(if streaming {
            b"connect-accept-encoding".as_slice()
        } else {
            b"accept-encoding".as_slice()
        }) {
            self.accept_encoding.add(value);
        }
        Ok(())
    }
}

/// Parse `connect-timeout-ms`: 1 to 10 ASCII digits, nothing else (no sign, no space), as
/// connect-es checks it. Zero is a deadline already past, which the call then reports.
pub fn parse_timeout_ms(value: &[u8]) -> Result<Duration, ConnectError> {
    if value.is_empty() || value.len() > TIMEOUT_DIGITS_MAX || !value.iter().all(u8::is_ascii_digit)
    {
        return Err(BAD_TIMEOUT);
    }
    let ms = value
        .iter()
        .fold(0u64, |ms, &digit| ms * 10 + u64::from(digit - b'0'));
    Ok(Duration::from_millis(ms))
}

/// One content coding, or none for `identity`. A list naming two real codings means layered
/// compression, which no Connect or gRPC peer does.
fn content_coding(value: &[u8]) -> Result<Option<&[u8]>, ConnectError> {
    let mut found = None;
    for element in value.split(|&b| b == b',').map(trim_ows) {
        if element.is_empty() || element.eq_ignore_ascii_case(b"identity") {
            continue;
        }
        if !is_token(element) {
            return Err(BAD_CODING);
        }
        if found.replace(element).is_some() {
            return Err(LAYERED_CODINGS);
        }
    }
    Ok(found)
}

/// Fold one more encoding header line into what earlier lines said (HTTP lets a list be split
/// across lines).
fn merge_coding(encoding: &mut Option<Bytes>, value: &[u8]) -> Result<(), ConnectError> {
    let Some(coding) = content_coding(value)? else {
        return Ok(());
    };
    if encoding.is_some() {
        return Err(LAYERED_CODINGS);
    }
    *encoding = Some(Bytes::copy_from_slice(coding));
    Ok(())
}

/// The client's accepted codings, as a `grpc-accept-encoding` value.
///
/// The protocol lets a server accept HTTP's full syntax, and browsers put their own
/// `accept-encoding` on a unary call, so quality values are handled: a coding with `q=0` is
/// refused and left out, other parameters are dropped, and `identity` and `*` are left out
/// (gRPC always accepts identity; a wildcard is no coding a server could pick). The order is
/// the client's.
#[derive(Default)]
struct AcceptEncoding {
    value: Vec<u8>,
    count: usize,
}

impl AcceptEncoding {
    fn add(&mut self, list: &[u8]) {
        // What is kept is never longer than the list: one allocation, not one per coding.
        self.value.reserve(list.len());
        for element in list.split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';').map(trim_ows);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(is_zero_quality);
            if refused
                || !is_token(coding)
                || coding == b"*"
                || coding.eq_ignore_ascii_case(b"identity")
                || self.count == ACCEPT_ENCODINGS_MAX
            {
                continue;
            }
            if self.count > 0 {
                self.value.extend_from_slice(b", ");
            }
            self.value.extend_from_slice(coding);
            self.count += 1;
        }
    }

    fn finish(self) -> Option<Bytes> {
        (self.count > 0).then(|| Bytes::from(self.value))
    }
}

/// `q=0`, `q=0.`, `q=0.000` (RFC 9110 §12.4.2): the coding is not acceptable.
fn is_zero_quality(parameter: &[u8]) -> bool {
    let Some(value) = parameter
        .strip_prefix(b"q=")
        .or_else(|| parameter.strip_prefix(b"Q="))
    else {
        return false;
    };
    match value.split_first() {
        Some((b'0', [])) => true,
        Some((b'0', [b'.', decimals @ ..])) => decimals.iter().all(|&d| d == b'0'),
        _ => false,
    }
}

/// A `grpc-timeout` value (`1*8DIGIT unit`), on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    bytes: [u8; 9],
    len: u8,
}

impl GrpcTimeout {
    /// Encode `timeout` in the finest unit that fits eight digits, rounding down, as connect-go
    /// and Envoy do: a Connect deadline may be up to 10 digits of milliseconds (115 days), which
    /// milliseconds alone could not carry. Beyond 99,999,999 hours it saturates.
    pub fn new(timeout: Duration) -> Self {
        const DIGITS_LIMIT: u128 = 100_000_000;
        let nanos = timeout.as_nanos();
        let units: [(u128, u8); 6] = [
            (1, b'n'),
            (1_000, b'u'),
            (1_000_000, b'm'),
            (1_000_000_000, b'S'),
            (60_000_000_000, b'M'),
            (3_600_000_000_000, b'H'),
        ];
        let (count, unit) = units
            .iter()
            .map(|&(size, unit)| (nanos / size, unit))
            .find(|&(count, _)| count < DIGITS_LIMIT)
            .unwrap_or((DIGITS_LIMIT - 1, b'H'));
        let mut digits = [0u8; 8];
        let mut len = 0;
        let mut rest = count;
        loop {
            digits[len] = b'0' + (rest % 10) as u8;
            len += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut bytes = [0u8; 9];
        for (i, &digit) in digits[..len].iter().rev().enumerate() {
            bytes[i] = digit;
        }
        bytes[len] = unit;
        GrpcTimeout {
            bytes,
            len: len as u8 + 1,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

const TOO_LARGE: ConnectError = ConnectError::new(
    Code::ResourceExhausted,
    "request message is larger than the proxy's message limit",
);

/// The 5-byte prefix for a unary body whose length is known before it arrives
/// (`content-length`), so the body can stream to the upstream unbuffered right behind it. The
/// compressed flag follows `grpc_encoding`, except that an empty body is never compressed (the
/// protocol forbids decompressing zero-length content).
pub fn unary_frame_prefix(
    message_len: u64,
    compressed: bool,
    message_bytes_max: usize,
) -> Result<[u8; FRAME_PREFIX_BYTES], ConnectError> {
    let len = u32::try_from(message_len).map_err(|_| TOO_LARGE)?;
    if usize::try_from(len).map_or(true, |len| len > message_bytes_max) {
        return Err(TOO_LARGE);
    }
    let [a, b, c, d] = len.to_be_bytes();
    Ok([u8::from(compressed && len > 0), a, b, c, d])
}

/// Fill in the prefix reserved at the front of `frame` for the payload that follows it.
pub(crate) fn write_frame_prefix(
    frame: &mut BytesMut,
    compressed: bool,
) -> Result<(), ConnectError> {
    let payload_len = frame.len().saturating_sub(FRAME_PREFIX_BYTES);
    let len = u32::try_from(payload_len).map_err(|_| TOO_LARGE)?;
    let [a, b, c, d] = len.to_be_bytes();
    frame[..FRAME_PREFIX_BYTES].copy_from_slice(&[u8::from(compressed && len > 0), a, b, c, d]);
    Ok(())
}

/// A unary body whose length is not known in advance (chunked, or HTTP/2 DATA without
/// `content-length`), collected into one gRPC frame: the prefix needs the length, so the body
/// is held, bounded by `message_bytes_max`, until it ends. The frame is built in place, in one
/// buffer, so finishing copies nothing.
#[derive(Debug)]
pub struct UnaryBody {
    frame: BytesMut,
    compressed: bool,
    message_bytes_max: usize,
}

impl UnaryBody {
    pub fn new(compressed: bool, message_bytes_max: usize) -> Self {
        let mut frame = BytesMut::with_capacity(FRAME_PREFIX_BYTES);
        frame.put_bytes(0, FRAME_PREFIX_BYTES);
        UnaryBody {
            frame,
            compressed,
            message_bytes_max,
        }
    }

    /// Append a piece of the body; `resource_exhausted` once it passes the limit (the caller
    /// stops reading and answers with it).
    pub fn push(&mut self, data: &[u8]) -> Result<(), ConnectError> {
        let held = self.frame.len() - FRAME_PREFIX_BYTES;
        if data.len() > self.message_bytes_max.saturating_sub(held) {
            return Err(TOO_LARGE);
        }
        self.frame.extend_from_slice(data);
        Ok(())
    }

    /// The whole body as one gRPC frame.
    pub fn finish(mut self) -> Result<Bytes, ConnectError> {
        write_frame_prefix(&mut self.frame, self.compressed)?;
        Ok(self.frame.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Codec;

    fn call(kind: CallKind) -> ConnectCall {
        ConnectCall {
            kind,
            codec: Codec::Proto,
        }
    }

    fn translate(kind: CallKind, headers: &[(&str, &str)]) -> Result<UpstreamHead, ConnectError> {
        translate_request_head(
            &call(kind),
            b"",
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            1024,
        )
    }

    #[test]
    fn unary_uses_http_encoding_headers() {
        let head = translate(
            CallKind::Unary,
            &[
                ("Content-Type", "application/proto"),
                ("Connect-Protocol-Version", "1"),
                ("Connect-Timeout-Ms", "5000"),
                ("Content-Encoding", "gzip"),
                ("Accept-Encoding", "gzip, deflate, br, zstd"),
                // A stream's headers mean nothing on a unary call.
                ("Connect-Content-Encoding", "br"),
                ("Connect-Accept-Encoding", "snappy"),
            ],
        )
        .unwrap();
        assert_eq!(
            head,
            UpstreamHead {
                content_type: Bytes::from_static(b"application/grpc+proto"),
                timeout: Some(Duration::from_millis(5000)),
                grpc_encoding: Some(Bytes::from_static(b"gzip")),
                grpc_accept_encoding: Some(Bytes::from_static(b"gzip, deflate, br, zstd")),
                get_body: None,
            }
        );
    }

    #[test]
    fn streaming_uses_connect_encoding_headers() {
        let head = translate(
            CallKind::Streaming,
            &[
                ("connect-content-encoding", "gzip"),
                ("connect-accept-encoding", "gzip,br"),
                // HTTP's codings, which a browser adds, describe the body as a whole.
                ("accept-encoding", "zstd"),
                ("content-encoding", "identity"),
            ],
        )
        .unwrap();
        assert_eq!(head.grpc_encoding.as_deref(), Some(&b"gzip"[..]));
        assert_eq!(head.grpc_accept_encoding.as_deref(), Some(&b"gzip, br"[..]));
        assert_eq!(head.timeout, None);
        assert_eq!(
            translate(CallKind::Streaming, &[("content-encoding", "gzip")]),
            Err(STREAM_BODY_ENCODING)
        );
        // The unary header on a stream is ignored, not taken for the message encoding.
        let head = translate(CallKind::Streaming, &[("content-encoding", "")]).unwrap();
        assert_eq!(head.grpc_encoding, None);
    }

    #[test]
    fn get_reads_the_query_and_ignores_body_encoding() {
        let head = translate_request_head(
            &call(CallKind::UnaryGet),
            b"encoding=proto&base64=1&compression=gzip&message=AAEC",
            [
                (&b"content-encoding"[..], &b"br"[..]),
                (b"accept-encoding", b"gzip"),
            ],
            1024,
        )
        .unwrap();
        assert_eq!(head.grpc_encoding.as_deref(), Some(&b"gzip"[..]));
        assert_eq!(head.grpc_accept_encoding.as_deref(), Some(&b"gzip"[..]));
        assert_eq!(
            head.get_body.as_deref(),
            Some(&b"\x01\x00\x00\x00\x03\x00\x01\x02"[..])
        );
        let refused =
            translate_request_head(&call(CallKind::UnaryGet), b"encoding=proto", [], 1024);
        assert!(matches!(refused, Err(e) if e.code == Code::InvalidArgument));
    }

    #[test]
    fn identity_and_absent_encodings() {
        for value in ["identity", "IDENTITY", "", " , identity "] {
            let head = translate(CallKind::Unary, &[("content-encoding", value)]).unwrap();
            assert_eq!(head.grpc_encoding, None, "{value:?}");
        }
        let head = translate(CallKind::Unary, &[]).unwrap();
        assert_eq!(head.grpc_encoding, None);
        assert_eq!(head.grpc_accept_encoding, None);
        let head = translate(CallKind::Unary, &[("accept-encoding", "identity, *")]).unwrap();
        assert_eq!(head.grpc_accept_encoding, None);
    }

    #[test]
    fn hostile_encodings() {
        for value in ["gzip, br", "gzip,gzip"] {
            assert_eq!(
                translate(CallKind::Unary, &[("content-encoding", value)]),
                Err(LAYERED_CODINGS),
                "{value:?}"
            );
        }
        assert_eq!(
            translate(
                CallKind::Unary,
                &[("content-encoding", "gzip"), ("content-encoding", "br")]
            ),
            Err(LAYERED_CODINGS)
        );
        for value in ["gz ip", "gzip;q=1", "\"gzip\"", "g\u{e9}"] {
            assert_eq!(
                translate(CallKind::Unary, &[("content-encoding", value)]),
                Err(BAD_CODING),
                "{value:?}"
            );
        }
        assert_eq!(
            translate(CallKind::Streaming, &[("connect-content-encoding", "a b")]),
            Err(BAD_CODING)
        );
    }

    #[test]
    fn accept_encoding_quality_values_and_bounds() {
        let head = translate(
            CallKind::Unary,
            &[
                (
                    "accept-encoding",
                    "br;q=1.0, gzip;q=0.8, deflate;q=0, zstd; Q=0.000",
                ),
                (
                    "accept-encoding",
                    "x-bad coding, *;q=0.1, identity, snappy;level=3,,",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            head.grpc_accept_encoding.as_deref(),
            Some(&b"br, gzip, snappy"[..])
        );
        let many = vec!["c"; 100].join(",");
        let head = translate(CallKind::Unary, &[("accept-encoding", many.as_str())]).unwrap();
        let kept = head.grpc_accept_encoding.unwrap();
        assert_eq!(kept.split(|&b| b == b',').count(), ACCEPT_ENCODINGS_MAX);
        for q in ["q=0", "q=0.", "q=0.0", "q=0.000"] {
            assert!(is_zero_quality(q.as_bytes()), "{q}");
        }
        for q in ["q=0.001", "q=1", "q=", "level=0", "q=00"] {
            assert!(!is_zero_quality(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout_ms(b"0"), Ok(Duration::ZERO));
        assert_eq!(parse_timeout_ms(b"5000"), Ok(Duration::from_secs(5)));
        assert_eq!(
            parse_timeout_ms(b"9999999999"),
            Ok(Duration::from_millis(9_999_999_999))
        );
        for bad in [
            &b""[..],
            b"12345678901",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1.5",
            b"1e3",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_timeout_ms(bad), Err(BAD_TIMEOUT), "{bad:?}");
        }
        assert_eq!(
            translate(
                CallKind::Unary,
                &[("connect-timeout-ms", "1"), ("Connect-Timeout-Ms", "1")]
            ),
            Err(REPEATED_TIMEOUT)
        );
        assert_eq!(
            translate(CallKind::Streaming, &[("connect-timeout-ms", "abc")]),
            Err(BAD_TIMEOUT)
        );
        // A client's own grpc-timeout is not the deadline; it is dropped.
        let head = translate(CallKind::Unary, &[("grpc-timeout", "1S")]).unwrap();
        assert_eq!(head.timeout, None);
        assert!(is_dropped_request_header(b"grpc-timeout"));
    }

    #[test]
    fn grpc_timeout_encoding_keeps_range() {
        let cases: [(Duration, &str); 9] = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_millis(5000), "5000000u"),
            (Duration::from_millis(100_000), "100000m"),
            (Duration::from_millis(9_999_999_999), "9999999S"),
            (Duration::from_secs(100_000_000), "1666666M"),
            // 100,000,000 hours does not fit eight digits: saturated.
            (Duration::from_secs(100_000_000 * 3600), "99999999H"),
            (Duration::MAX, "99999999H"),
        ];
        for (timeout, expected) in cases {
            let encoded = GrpcTimeout::new(timeout);
            assert_eq!(encoded.as_bytes(), expected.as_bytes(), "{timeout:?}");
            let parsed = crate::translate::parse_grpc_timeout(encoded.as_bytes()).unwrap();
            assert!(parsed <= timeout, "{timeout:?} became {parsed:?}");
        }
    }

    #[test]
    fn dropped_headers() {
        for name in [
            "content-type",
            "Content-Length",
            "content-encoding",
            "ACCEPT-ENCODING",
            "connect-protocol-version",
            "Connect-Timeout-Ms",
            "connect-content-encoding",
            "connect-accept-encoding",
            "connect-future-thing",
            "grpc-encoding",
            "grpc-accept-encoding",
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
        ] {
            assert!(is_dropped_request_header(name.as_bytes()), "{name}");
        }
        for name in [
            "x-user-id",
            "authorization",
            "grpc-trace-bin",
            "connect",
            "connectx",
            "user-agent",
        ] {
            assert!(!is_dropped_request_header(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn unary_frames() {
        assert_eq!(
            unary_frame_prefix(3, false, 10),
            Ok(*b"\x00\x00\x00\x00\x03")
        );
        assert_eq!(
            unary_frame_prefix(3, true, 10),
            Ok(*b"\x01\x00\x00\x00\x03")
        );
        // Zero-length content is never compressed.
        assert_eq!(
            unary_frame_prefix(0, true, 10),
            Ok(*b"\x00\x00\x00\x00\x00")
        );
        assert_eq!(unary_frame_prefix(10, false, 10).map(|p| p[4]), Ok(10));
        assert_eq!(unary_frame_prefix(11, false, 10), Err(TOO_LARGE));
        assert_eq!(
            unary_frame_prefix(u64::from(u32::MAX) + 1, false, usize::MAX),
            Err(TOO_LARGE)
        );
        assert_eq!(
            unary_frame_prefix(u64::MAX, false, usize::MAX),
            Err(TOO_LARGE)
        );

        let mut body = UnaryBody::new(true, 6);
        body.push(b"abc").unwrap();
        body.push(b"").unwrap();
        body.push(b"def").unwrap();
        assert_eq!(body.push(b"g"), Err(TOO_LARGE));
        assert_eq!(&body.finish().unwrap()[..], b"\x01\x00\x00\x00\x06abcdef");
        let empty = UnaryBody::new(true, 6).finish().unwrap();
        assert_eq!(&empty[..], b"\x00\x00\x00\x00\x00");
        let mut none = UnaryBody::new(false, 0);
        assert_eq!(none.push(b"x"), Err(TOO_LARGE));
    }
}
