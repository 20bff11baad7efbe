//! HTTP/1.x request heads, parsed sans-IO from the front of a connection's read buffer into a
//! [`RequestHead`] whose path and header values are `Bytes` slices of the frozen head.
//!
//! Every ambiguity in RFC 9112 §6 that a hop in front of us might resolve differently is refused
//! (see the module doc of [`crate::http1`]); limits bound the bytes looked at and the fields kept.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use crate::field::list_elements;

/// Upper bound on `HeadLimits::header_count_max`, because the `httparse` header array lives on
/// the stack. 128 fields is far more than a browser sends (Chrome sends about 15 on a gRPC-Web
/// call); a configured limit above it behaves as 128.
pub const HEADER_COUNT_CAP: usize = 128;

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes from the start of the buffer (including any empty lines skipped before the request
    /// line) to the end of the blank line that ends the head.
    pub header_bytes_max: usize,
    /// Number of header fields; values above [`HEADER_COUNT_CAP`] behave as the cap.
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
    /// a bad Content-Length, `chunked` not the final coding or applied twice, an empty
    /// Transfer-Encoding element, Transfer-Encoding on HTTP/1.0. 400.
    Smuggling(&'static str),
    /// Head larger than `header_bytes_max` or more than `header_count_max` fields. 431.
    HeadTooLarge,
    /// Bad chunk size line, chunk extension or trailer section too long, missing CRLF. 400.
    BadChunk(&'static str),
    /// Content-Length larger than the body limit, or chunked body exceeding it. 413.
    BodyTooLarge,
    /// A transfer coding other than `chunked` (e.g. `gzip, chunked`). RFC 9112 §6.1 says 501.
    NotImplemented(&'static str),
    /// An `Expect` value other than `100-continue` on HTTP/1.1. RFC 9110 §10.1.1 says 417.
    ExpectationFailed,
}

impl Http1Error {
    pub fn status(&self) -> u16 {
        match self {
            Http1Error::Malformed(_) | Http1Error::Smuggling(_) | Http1Error::BadChunk(_) => 400,
            Http1Error::HeadTooLarge => 431,
            Http1Error::BodyTooLarge => 413,
            Http1Error::NotImplemented(_) => 501,
            Http1Error::ExpectationFailed => 417,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Http1Error::Malformed(reason)
            | Http1Error::Smuggling(reason)
            | Http1Error::BadChunk(reason)
            | Http1Error::NotImplemented(reason) => reason,
            Http1Error::HeadTooLarge => "request head too large",
            Http1Error::BodyTooLarge => "request body too large",
            Http1Error::ExpectationFailed => "unsupported expectation",
        }
    }
}

impl std::fmt::Display for Http1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for Http1Error {}

/// Parse one request head from the front of `buf`.
/// Returns `Ok(None)` when more bytes are needed (and the head limit is not yet exceeded).
/// Leading empty lines (CRLF) before a request line are skipped, as RFC 9112 allows.
///
/// On success the head (and any skipped empty lines) is removed from `buf`; whatever follows it,
/// body bytes or a pipelined request, stays in `buf`. On error `buf` is left as it was: the
/// connection answers with `status()` and closes, since the framing can no longer be trusted.
pub fn parse_request_head(
    buf: &mut BytesMut,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, Http1Error> {
    // Only the first `header_bytes_max` bytes are ever given to httparse, so a peer cannot make
    // us rescan an unbounded buffer on each read.
    let window_len = buf.len().min(limits.header_bytes_max);
    let header_count_max = limits.header_count_max.min(HEADER_COUNT_CAP);
    // Left uninitialised: httparse writes the fields it parses, and zeroing 4 KiB per request
    // would cost more than a short head takes to parse.
    let mut header_storage = [const { MaybeUninit::uninit() }; HEADER_COUNT_CAP];
    let mut request = httparse::Request::new(&mut []);
    let parsed = request
        .parse_with_uninit_headers(&buf[..window_len], &mut header_storage[..header_count_max]);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        // Partial at `len >= header_bytes_max` means the finished head would be longer.
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            return Err(Http1Error::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(from_httparse(error)),
    };
    // httparse accepts a bare LF as a line ending (RFC 9112 §2.2 allows that leniency). A hop in
    // front of us may not, and a disagreement about where a line ends is how smuggling starts.
    if has_bare_lf(&buf[..head_len]) {
        return Err(Http1Error::Malformed("bare lf in request head"));
    }
    let mut layout = HeadLayout::default();
    layout.record(&request, buf.as_ptr())?;
    check_target(request.path.unwrap_or_default().as_bytes(), &layout.method)?;
    let summary = summarise_headers(request.headers, layout.version)?;

    let head = buf.split_to(head_len).freeze();
    Ok(Some(layout.to_request_head(&head, summary)))
}

/// The request-target forms ringway serves (RFC 9112 §3.2): origin-form (`/path?query`),
/// absolute-form with an `http` or `https` scheme, and asterisk-form for `OPTIONS`. Anything
/// else (`foo/admin.Svc/Delete`, `admin.Svc/Delete`, `?x`, authority-form) is refused: turned
/// into a `:path` it would not be the path a rule in front of ringway matched on.
fn check_target(target: &[u8], method: &Method) -> Result<(), Http1Error> {
    let absolute = |scheme: &[u8]| {
        target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    match target {
        [b'/', ..] => Ok(()),
        b"*" if *method == Method::Options => Ok(()),
        _ if absolute(b"http://") || absolute(b"https://") => Ok(()),
        _ => Err(Http1Error::Malformed(
            "request target must be a path (origin-form) or an absolute http(s) URI",
        )),
    }
}

fn from_httparse(error: httparse::Error) -> Http1Error {
    match error {
        httparse::Error::TooManyHeaders => Http1Error::HeadTooLarge,
        httparse::Error::HeaderName => Http1Error::Malformed("bad header name"),
        httparse::Error::HeaderValue => Http1Error::Malformed("bad header value"),
        httparse::Error::NewLine => Http1Error::Malformed("bad line ending"),
        httparse::Error::Token => Http1Error::Malformed("bad request line"),
        httparse::Error::Version => Http1Error::Malformed("bad http version"),
        httparse::Error::Status => Http1Error::Malformed("bad request line"),
    }
}

/// Whether some LF is not preceded by CR. Written without an early exit so that it compiles to
/// a vector loop: heads are nearly always clean, and this runs over every byte of each one.
fn has_bare_lf(bytes: &[u8]) -> bool {
    let starts_with_lf = bytes.first() == Some(&b'\n');
    let inner_bare_lf = bytes
        .iter()
        .zip(bytes.iter().skip(1))
        .fold(false, |found, (&before, &byte)| {
            found | ((byte == b'\n') & (before != b'\r'))
        });
    starts_with_lf | inner_bare_lf
}

/// Where the method, path and header fields lie, as byte ranges of the head. httparse hands out
/// slices that borrow the read buffer, and the buffer must be split before those slices can
/// become `Bytes`, so the ranges are noted first (on the stack) and turned into `Bytes` after.
struct HeadLayout {
    method: Method,
    method_span: (usize, usize),
    path: (usize, usize),
    version: Version,
    headers: [HeaderSpan; HEADER_COUNT_CAP],
    header_count: usize,
}

#[derive(Clone, Copy, Default)]
struct HeaderSpan {
    name: (usize, usize),
    value: (usize, usize),
}

impl Default for HeadLayout {
    fn default() -> Self {
        HeadLayout {
            method: Method::Get,
            method_span: (0, 0),
            path: (0, 0),
            version: Version::Http11,
            headers: [HeaderSpan::default(); HEADER_COUNT_CAP],
            header_count: 0,
        }
    }
}

impl HeadLayout {
    /// Note where each part of a completely parsed `request` lies relative to `base`, the start
    /// of the buffer it was parsed from.
    fn record(
        &mut self,
        request: &httparse::Request<'_, '_>,
        base: *const u8,
    ) -> Result<(), Http1Error> {
        // A complete parse always fills method, path and version; a `None` here would be an
        // httparse bug, answered as a malformed request rather than a panic.
        let malformed = Http1Error::Malformed("bad request line");
        let method = request.method.ok_or(malformed.clone())?.as_bytes();
        let path = request.path.ok_or(malformed)?.as_bytes();
        self.version = match request.version {
            Some(0) => Version::Http10,
            Some(1) => Version::Http11,
            _ => return Err(Http1Error::Malformed("bad http version")),
        };
        self.method = known_method(method);
        self.method_span = span_of(base, method);
        self.path = span_of(base, path);
        self.header_count = request.headers.len();
        for (span, header) in self.headers.iter_mut().zip(request.headers.iter()) {
            span.name = span_of(base, header.name.as_bytes());
            span.value = span_of(base, header.value);
        }
        Ok(())
    }

    fn to_request_head(&self, head: &Bytes, summary: HeadSummary) -> RequestHead {
        let slice = |(start, end): (usize, usize)| head.slice(start..end);
        let headers: Vec<Header> = self.headers[..self.header_count]
            .iter()
            .map(|span| Header {
                name: slice(span.name),
                value: slice(span.value),
            })
            .collect();
        let host = summary.host_index.map(|i| headers[i].value.clone());
        let content_type = summary.content_type_index.map(|i| headers[i].value.clone());
        let method = match self.method {
            Method::Other(_) => Method::Other(slice(self.method_span)),
            ref known => known.clone(),
        };
        RequestHead {
            method,
            path: slice(self.path),
            version: self.version,
            headers,
            body: summary.body,
            keep_alive: summary.keep_alive,
            expect_continue: summary.expect_continue,
            host,
            content_type,
        }
    }
}

/// The byte range of `part` within the buffer that starts at `base`. httparse only ever returns
/// sub-slices of the buffer it was given, so the subtraction cannot underflow.
fn span_of(base: *const u8, part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base as usize;
    (start, start + part.len())
}

/// The method for `token`; any method other than the six named ones comes back as
/// `Other` with an empty placeholder, filled with a slice of the head once it is frozen.
fn known_method(token: &[u8]) -> Method {
    // Methods are case-sensitive (RFC 9110 §9.1): `get` is some other method, not GET.
    match token {
        b"GET" => Method::Get,
        b"POST" => Method::Post,
        b"OPTIONS" => Method::Options,
        b"HEAD" => Method::Head,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        _ => Method::Other(Bytes::new()),
    }
}

/// What the connection needs to know from the header fields, gathered in one pass.
struct HeadSummary {
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    host_index: Option<usize>,
    content_type_index: Option<usize>,
}

fn summarise_headers(
    headers: &[httparse::Header<'_>],
    version: Version,
) -> Result<HeadSummary, Http1Error> {
    let mut content_length: Option<u64> = None;
    let mut transfer_codings = TransferCodings::default();
    let mut connection = ConnectionTokens::default();
    let mut expect = ExpectTokens::default();
    let mut host_index = None;
    let mut content_type_index = None;

    for (index, header) in headers.iter().enumerate() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(merge_content_length(content_length, value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_codings.add(value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(value);
        } else if name.eq_ignore_ascii_case("host") {
            if host_index.is_some() {
                return Err(Http1Error::Malformed("more than one host header"));
            }
            host_index = Some(index);
        } else if name.eq_ignore_ascii_case("content-type") {
            // Content-Type is a singleton; two of them leave the gRPC-Web codec to a guess.
            if content_type_index.is_some() {
                return Err(Http1Error::Malformed("more than one content-type header"));
            }
            content_type_index = Some(index);
        } else if name.eq_ignore_ascii_case("expect") {
            expect.add(value);
        }
    }

    if version == Version::Http11 && host_index.is_none() {
        return Err(Http1Error::Malformed("missing host header"));
    }
    if transfer_codings.seen {
        transfer_codings.check()?;
    }
    let body = match (content_length, transfer_codings.seen) {
        (Some(_), true) => {
            return Err(Http1Error::Smuggling(
                "content-length with transfer-encoding",
            ))
        }
        // HTTP/1.0 has no chunked coding (RFC 9112 §6.1); a 1.0 hop in front of us would frame
        // this body by closing the connection, not by chunks.
        (None, true) if version == Version::Http10 => {
            return Err(Http1Error::Smuggling("transfer-encoding on http/1.0"))
        }
        (None, true) => BodyKind::Chunked,
        (Some(0), false) | (None, false) => BodyKind::Empty,
        (Some(length), false) => BodyKind::Length(length),
    };
    // RFC 9110 §10.1.1: a server ignores `100-continue` in an HTTP/1.0 request, and a 1.0 client
    // could not have meant any other expectation for us either.
    let expect_continue = match version {
        Version::Http10 => false,
        Version::Http11 if expect.other => return Err(Http1Error::ExpectationFailed),
        Version::Http11 => expect.continue_100,
    };
    let keep_alive = match version {
        Version::Http10 => connection.keep_alive && !connection.close,
        Version::Http11 => !connection.close,
    };
    Ok(HeadSummary {
        body,
        keep_alive,
        expect_continue,
        host_index,
        content_type_index,
    })
}

/// Fold one Content-Length field into what earlier ones said. RFC 9112 §6.3 allows a list of
/// identical values (a hop may have merged duplicates); anything else is ambiguous framing.
fn merge_content_length(earlier: Option<u64>, value: &[u8]) -> Result<u64, Http1Error> {
    let mut merged = earlier;
    for element in list_elements(value) {
        let length = parse_content_length(element)?;
        if merged.is_some_and(|seen| seen != length) {
            return Err(Http1Error::Smuggling("conflicting content-length values"));
        }
        merged = Some(length);
    }
    // `split` yields at least one element, so `merged` is set; the fallback only keeps this
    // total without an unwrap.
    merged.ok_or(Http1Error::Smuggling("bad content-length"))
}

/// Content-Length = 1*DIGIT: no sign, no inner spaces, no hex, and it must fit in a u64.
fn parse_content_length(digits: &[u8]) -> Result<u64, Http1Error> {
    let bad = Http1Error::Smuggling("bad content-length");
    if digits.is_empty() {
        return Err(bad);
    }
    let mut length: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return Err(bad);
        }
        length = length
            .checked_mul(10)
            .and_then(|length| length.checked_add(u64::from(byte - b'0')))
            .ok_or(bad.clone())?;
    }
    Ok(length)
}

/// The transfer codings sent, gathered over every Transfer-Encoding field: several fields form
/// one list (RFC 9110 §5.3), so `gzip` then `chunked` in two fields means `gzip, chunked`.
#[derive(Default)]
struct TransferCodings {
    seen: bool,
    chunked_count: u32,
    last_is_chunked: bool,
    other_seen: bool,
    empty_seen: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        for coding in list_elements(value) {
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked_count = self.chunked_count.saturating_add(u32::from(is_chunked));
            self.last_is_chunked = is_chunked;
            self.other_seen |= !is_chunked && !coding.is_empty();
            self.empty_seen |= coding.is_empty();
        }
    }

    /// Accept exactly one coding, `chunked`. RFC 9112 §6.3: if `chunked` is not the final coding
    /// the body length cannot be determined, so 400; §6.1: a coding we do not implement is 501.
    /// Empty list elements are rejected rather than skipped: `chunked,` is exactly the kind of
    /// value two parsers read differently.
    fn check(&self) -> Result<(), Http1Error> {
        if self.empty_seen {
            return Err(Http1Error::Smuggling("empty transfer-encoding element"));
        }
        if !self.last_is_chunked {
            return Err(Http1Error::Smuggling(
                "chunked is not the final transfer coding",
            ));
        }
        if self.chunked_count > 1 {
            return Err(Http1Error::Smuggling("chunked applied more than once"));
        }
        if self.other_seen {
            return Err(Http1Error::NotImplemented("unsupported transfer coding"));
        }
        Ok(())
    }
}

/// The `Connection` options we act on, gathered over every Connection field.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

impl ConnectionTokens {
    fn add(&mut self, value: &[u8]) {
        for token in list_elements(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }
}

/// The `Expect` expectations sent, gathered over every Expect field. Empty list elements are
/// skipped as RFC 9110 §5.6.1 asks; anything but `100-continue` is one we cannot meet.
#[derive(Default)]
struct ExpectTokens {
    continue_100: bool,
    other: bool,
}

impl ExpectTokens {
    fn add(&mut self, value: &[u8]) {
        for expectation in list_elements(value) {
            if expectation.eq_ignore_ascii_case(b"100-continue") {
                self.continue_100 = true;
            } else if !expectation.is_empty() {
                self.other = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        header_bytes_max: 8 * 1024,
        header_count_max: 64,
    };

    const BROWSER_HEAD: &[u8] = b"POST /echo.Echo/Say HTTP/1.1\r\n\
        Host: api.example.com\r\n\
        Content-Type: application/grpc-web+proto\r\n\
        X-Grpc-Web: 1\r\n\
        Content-Length: 5\r\n\
        \r\n";

    fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, Http1Error> {
        parse_request_head(&mut BytesMut::from(bytes), &LIMITS)
    }

    fn parse_ok(bytes: &[u8]) -> RequestHead {
        match parse(bytes) {
            Ok(Some(head)) => head,
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn parse_err(bytes: &[u8]) -> Http1Error {
        match parse(bytes) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// A request with the given header lines (each without CRLF) and a Host header first.
    fn with_headers(version: &str, lines: &[&str]) -> Vec<u8> {
        let mut head = format!("POST / {version}\r\nHost: h\r\n");
        for line in lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn header_value<'a>(head: &'a RequestHead, name: &str) -> Option<&'a [u8]> {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value[..])
    }

    // ---- request heads: the happy path ----

    #[test]
    fn parses_browser_request() {
        let head = parse_ok(BROWSER_HEAD);
        assert_eq!(head.method, Method::Post);
        assert_eq!(&head.path[..], b"/echo.Echo/Say");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers.len(), 4);
        assert_eq!(&head.headers[0].name[..], b"Host");
        assert_eq!(head.body, BodyKind::Length(5));
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(head.host.as_deref(), Some(&b"api.example.com"[..]));
        assert_eq!(
            head.content_type.as_deref(),
            Some(&b"application/grpc-web+proto"[..])
        );
    }

    #[test]
    fn head_is_zero_copy() {
        let mut buf = BytesMut::from(BROWSER_HEAD);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let head = parse_request_head(&mut buf, &LIMITS).unwrap().unwrap();
        let inside = |bytes: &Bytes| {
            range.contains(&(bytes.as_ptr() as usize))
                && bytes.as_ptr() as usize + bytes.len() <= range.end
        };
        assert!(inside(&head.path));
        for header in &head.headers {
            assert!(inside(&header.name) && inside(&header.value));
        }
        assert!(inside(head.host.as_ref().unwrap()));
        assert!(inside(head.content_type.as_ref().unwrap()));
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        let head = parse_ok(b"OPTIONS / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.method, Method::Options);
        let head = parse_ok(b"get / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.method, Method::Other(Bytes::from_static(b"get")));
        let head = parse_ok(b"PATCH / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.method, Method::Other(Bytes::from_static(b"PATCH")));
    }

    #[test]
    fn absolute_form_target_is_kept_as_sent() {
        let head =
            parse_ok(b"POST http://api.example.com/echo.Echo/Say HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(&head.path[..], b"http://api.example.com/echo.Echo/Say");
    }

    #[test]
    fn targets_that_are_not_paths_are_refused() {
        for target in [
            "foo/admin.Svc/Delete",
            "admin.Svc/Delete",
            "?x",
            "api.example.com:443",
            "ftp://x/y",
            "http://",
            "*",
        ] {
            let request = format!("POST {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(
                matches!(parse_err(request.as_bytes()), Http1Error::Malformed(_)),
                "{target}"
            );
        }
        for target in ["/", "/a?b", "HTTPS://x/y", "http://x"] {
            let request = format!("POST {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(&parse_ok(request.as_bytes()).path[..], target.as_bytes());
        }
        let preflight = parse_ok(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(&preflight.path[..], b"*");
    }

    #[test]
    fn incomplete_head_needs_more() {
        assert_eq!(parse(b"").unwrap().map(|h| h.method), None);
        assert!(parse(b"POST / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        assert!(parse(b"POST / HTTP/1.1\r\nHost: h\r\n\r")
            .unwrap()
            .is_none());
    }

    #[test]
    fn head_split_at_every_byte_needs_more_until_complete() {
        for cut in 0..BROWSER_HEAD.len() {
            let mut buf = BytesMut::from(&BROWSER_HEAD[..cut]);
            assert!(
                parse_request_head(&mut buf, &LIMITS).unwrap().is_none(),
                "cut {cut}"
            );
            assert_eq!(buf.len(), cut, "nothing consumed while incomplete");
            buf.extend_from_slice(&BROWSER_HEAD[cut..]);
            let head = parse_request_head(&mut buf, &LIMITS).unwrap().unwrap();
            assert_eq!(head.body, BodyKind::Length(5));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn pipelined_requests_leave_the_rest_in_the_buffer() {
        let mut input = BROWSER_HEAD.to_vec();
        input.extend_from_slice(b"hello");
        input.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: h\r\n\r\nGET /th");
        let mut buf = BytesMut::from(&input[..]);
        let first = parse_request_head(&mut buf, &LIMITS).unwrap().unwrap();
        assert_eq!(&first.path[..], b"/echo.Echo/Say");
        assert!(buf.starts_with(b"hello"));
        let _ = buf.split_to(5);
        let second = parse_request_head(&mut buf, &LIMITS).unwrap().unwrap();
        assert_eq!(
            (second.method, &second.path[..]),
            (Method::Get, &b"/second"[..])
        );
        assert_eq!(&buf[..], b"GET /th");
        assert!(parse_request_head(&mut buf, &LIMITS).unwrap().is_none());
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_bounded() {
        let head = parse_ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.method, Method::Get);
        let endless = b"\r\n".repeat(LIMITS.header_bytes_max);
        assert_eq!(parse_err(&endless), Http1Error::HeadTooLarge);
    }

    // ---- versions, keep-alive, Expect ----

    #[test]
    fn only_http_10_and_11() {
        assert_eq!(parse_ok(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_err(bad).status(), 400);
        }
        assert_eq!(parse_err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status(), 400);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(parse_ok(&with_headers("HTTP/1.1", &[])).keep_alive);
        assert!(!parse_ok(&with_headers("HTTP/1.1", &["Connection: close"])).keep_alive);
        assert!(
            !parse_ok(&with_headers(
                "HTTP/1.1",
                &["Connection: Upgrade ,\tCLOSE "]
            ))
            .keep_alive
        );
        assert!(
            !parse_ok(&with_headers(
                "HTTP/1.1",
                &["Connection: te", "connection: close"]
            ))
            .keep_alive
        );
        assert!(parse_ok(&with_headers("HTTP/1.1", &["Connection: closed"])).keep_alive);
        assert!(!parse_ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parse_ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(parse_ok(b"GET / HTTP/1.0\r\nConnection: foo, keep-alive\r\n\r\n").keep_alive);
        assert!(!parse_ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect_continue_on_11_only() {
        assert!(parse_ok(&with_headers("HTTP/1.1", &["Expect: 100-Continue"])).expect_continue);
        assert!(!parse_ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert_eq!(
            parse_err(&with_headers("HTTP/1.1", &["Expect: 200-ok"])),
            Http1Error::ExpectationFailed
        );
        assert_eq!(
            parse_err(&with_headers("HTTP/1.1", &["Expect: 100-continue, x"])).status(),
            417
        );
        // HTTP/1.0 expectations are ignored entirely.
        assert!(!parse_ok(b"POST / HTTP/1.0\r\nExpect: 200-ok\r\n\r\n").expect_continue);
    }

    // ---- smuggling defences ----

    #[test]
    fn content_length_with_transfer_encoding_is_rejected() {
        for lines in [
            &["Content-Length: 5", "Transfer-Encoding: chunked"][..],
            &["Transfer-Encoding: chunked", "content-length: 0"],
        ] {
            let error = parse_err(&with_headers("HTTP/1.1", lines));
            assert_eq!(
                error,
                Http1Error::Smuggling("content-length with transfer-encoding")
            );
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn content_length_values() {
        let body =
            |lines: &[&str]| parse(&with_headers("HTTP/1.1", lines)).map(|h| h.unwrap().body);
        assert_eq!(body(&["Content-Length: 0"]), Ok(BodyKind::Empty));
        assert_eq!(body(&[]), Ok(BodyKind::Empty));
        assert_eq!(body(&["Content-Length: 007"]), Ok(BodyKind::Length(7)));
        assert_eq!(body(&["Content-Length: 5, 5"]), Ok(BodyKind::Length(5)));
        assert_eq!(
            body(&["Content-Length: 5", "content-length: 5"]),
            Ok(BodyKind::Length(5))
        );
        assert_eq!(
            body(&["Content-Length: 18446744073709551615"]),
            Ok(BodyKind::Length(u64::MAX))
        );
        for bad in [
            "Content-Length: 5, 6",
            "Content-Length: -5",
            "Content-Length: +5",
            "Content-Length: 5 5",
            "Content-Length: 0x5",
            "Content-Length: 5,",
            "Content-Length: ,5",
            "Content-Length: ",
            "Content-Length: 18446744073709551616",
            "Content-Length: 99999999999999999999999",
        ] {
            assert_eq!(body(&[bad]).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(
            body(&["Content-Length: 5", "Content-Length: 6"]),
            Err(Http1Error::Smuggling("conflicting content-length values"))
        );
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        let body =
            |lines: &[&str]| parse(&with_headers("HTTP/1.1", lines)).map(|h| h.unwrap().body);
        assert_eq!(body(&["Transfer-Encoding: chunked"]), Ok(BodyKind::Chunked));
        assert_eq!(
            body(&["transfer-encoding: \tCHUNKED "]),
            Ok(BodyKind::Chunked)
        );
        let status = |line: &str| body(&[line]).unwrap_err().status();
        assert_eq!(status("Transfer-Encoding: gzip, chunked"), 501);
        assert_eq!(status("Transfer-Encoding: gzip"), 400);
        assert_eq!(status("Transfer-Encoding: chunked, gzip"), 400);
        assert_eq!(status("Transfer-Encoding: chunked, chunked"), 400);
        assert_eq!(status("Transfer-Encoding: chunked,"), 400);
        assert_eq!(status("Transfer-Encoding: ,chunked"), 400);
        assert_eq!(status("Transfer-Encoding: "), 400);
        assert_eq!(status("Transfer-Encoding: chunked;q=1"), 400);
        assert_eq!(status("Transfer-Encoding: xchunked"), 400);
        // Several fields form one list: two fields saying chunked is chunked applied twice.
        let statuses = |lines: &[&str]| body(lines).unwrap_err().status();
        assert_eq!(
            statuses(&["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
            400
        );
        assert_eq!(
            statuses(&["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"]),
            501
        );
        assert_eq!(
            statuses(&["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"]),
            400
        );
    }

    #[test]
    fn transfer_encoding_on_http_10_is_rejected() {
        assert_eq!(
            parse_err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Http1Error::Smuggling("transfer-encoding on http/1.0")
        );
    }

    #[test]
    fn obsolete_line_folding_is_rejected() {
        let error = parse_err(b"POST / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n");
        assert_eq!(error.status(), 400);
        let error = parse_err(b"POST / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n");
        assert_eq!(error.status(), 400);
        // A fold that would hide a Transfer-Encoding from a lenient hop.
        let error =
            parse_err(b"POST / HTTP/1.1\r\nHost: h\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n");
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn whitespace_before_colon_is_rejected() {
        for bad in [
            &b"POST / HTTP/1.1\r\nHost : h\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent Length: 5\r\n\r\n",
        ] {
            assert_eq!(parse_err(bad), Http1Error::Malformed("bad header name"));
        }
    }

    #[test]
    fn host_is_required_once_on_11() {
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\n\r\n"),
            Http1Error::Malformed("missing host header")
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            Http1Error::Malformed("more than one host header")
        );
        assert_eq!(parse_ok(b"GET / HTTP/1.0\r\n\r\n").host, None);
        // An empty Host is allowed (RFC 9110 §7.2) when the target has no authority.
        assert_eq!(
            parse_ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").host.as_deref(),
            Some(&b""[..])
        );
    }

    #[test]
    fn duplicate_content_type_is_rejected() {
        let error = parse_err(&with_headers(
            "HTTP/1.1",
            &[
                "Content-Type: application/grpc-web",
                "Content-Type: application/grpc-web-text",
            ],
        ));
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn control_bytes_in_values_are_rejected() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\0\r\n\r\n",
        ] {
            assert_eq!(
                parse_err(bad).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // obs-text and HTAB are legal in values.
        let head = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\tb\r\n\r\n");
        assert_eq!(header_value(&head, "x"), Some(&b"caf\xc3\xa9\tb"[..]));
    }

    #[test]
    fn bare_lf_in_head_is_rejected() {
        for bad in [
            &b"GET / HTTP/1.1\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
            b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(
                parse_err(bad),
                Http1Error::Malformed("bare lf in request head")
            );
        }
    }

    #[test]
    fn bad_request_lines_are_rejected() {
        for bad in [
            &b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            assert_eq!(
                parse_err(bad).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn header_values_are_trimmed_of_ows() {
        let head = parse_ok(b"GET / HTTP/1.1\r\nHost:  h \t\r\n\r\n");
        assert_eq!(head.host.as_deref(), Some(&b"h"[..]));
    }

    // ---- limits ----

    /// A GET head of exactly `len` bytes (len >= 40), padded with an `X-Pad` header.
    fn head_of_len(len: usize) -> Vec<u8> {
        let fixed = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n".len();
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', len - fixed));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), len);
        head
    }

    #[test]
    fn head_bytes_limit_exactly_and_one_past() {
        let limits = HeadLimits {
            header_bytes_max: 100,
            header_count_max: 8,
        };
        let at_limit = head_of_len(100);
        assert!(
            parse_request_head(&mut BytesMut::from(&at_limit[..]), &limits)
                .unwrap()
                .is_some()
        );
        let past_limit = head_of_len(101);
        assert_eq!(
            parse_request_head(&mut BytesMut::from(&past_limit[..]), &limits).unwrap_err(),
            Http1Error::HeadTooLarge
        );
        // Incomplete: 99 buffered bytes could still end within 100; 100 without the end cannot.
        assert!(
            parse_request_head(&mut BytesMut::from(&past_limit[..99]), &limits)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            parse_request_head(&mut BytesMut::from(&past_limit[..100]), &limits).unwrap_err(),
            Http1Error::HeadTooLarge
        );
        // A head at the limit followed by a body is fine: only the head counts.
        let mut with_body = at_limit.clone();
        with_body.extend_from_slice(&[b'z'; 500]);
        let mut buf = BytesMut::from(&with_body[..]);
        assert!(parse_request_head(&mut buf, &limits).unwrap().is_some());
        assert_eq!(buf.len(), 500);
    }

    #[test]
    fn header_count_limit_exactly_and_one_past() {
        let limits = HeadLimits {
            header_bytes_max: 8 * 1024,
            header_count_max: 3,
        };
        let three = with_headers("HTTP/1.1", &["A: 1", "B: 2"]);
        let four = with_headers("HTTP/1.1", &["A: 1", "B: 2", "C: 3"]);
        assert_eq!(
            parse_request_head(&mut BytesMut::from(&three[..]), &limits)
                .unwrap()
                .unwrap()
                .headers
                .len(),
            3
        );
        let error = parse_request_head(&mut BytesMut::from(&four[..]), &limits).unwrap_err();
        assert_eq!(
            (error.clone(), error.status()),
            (Http1Error::HeadTooLarge, 431)
        );
    }

    #[test]
    fn header_count_is_capped() {
        let limits = HeadLimits {
            header_bytes_max: 64 * 1024,
            header_count_max: 10_000,
        };
        let lines: Vec<String> = (0..HEADER_COUNT_CAP).map(|i| format!("X-{i}: v")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let too_many = with_headers("HTTP/1.1", &lines);
        let error = parse_request_head(&mut BytesMut::from(&too_many[..]), &limits).unwrap_err();
        assert_eq!(error, Http1Error::HeadTooLarge);
        let just_enough = with_headers("HTTP/1.1", &lines[1..]);
        let head = parse_request_head(&mut BytesMut::from(&just_enough[..]), &limits)
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.len(), HEADER_COUNT_CAP);
    }

    #[test]
    fn zero_limits_reject_without_panicking() {
        let limits = HeadLimits {
            header_bytes_max: 0,
            header_count_max: 0,
        };
        let error = parse_request_head(&mut BytesMut::from(BROWSER_HEAD), &limits).unwrap_err();
        assert_eq!(error, Http1Error::HeadTooLarge);
        let limits = HeadLimits {
            header_bytes_max: 1024,
            header_count_max: 0,
        };
        let error = parse_request_head(&mut BytesMut::from(BROWSER_HEAD), &limits).unwrap_err();
        assert_eq!(error, Http1Error::HeadTooLarge);
    }
}
