//! The load generator's wire format, sans-IO: encoding a gRPC-Web request over HTTP/1.1 and
//! judging the response, from status line to the trailer frame's grpc-status.
//!
//! The connection loop feeds received bytes to a [`ResponseParser`] and, once it says the
//! message is complete, asks [`judge`] for the call's one outcome. Nothing here reads a socket
//! or a clock, so every hostile input a target might send is a unit test on a byte string.
//!
//! Parsing is strict because a load generator that shrugs at a broken response reports a
//! broken balancer as healthy: a frame cut short, bytes after the trailer frame, a missing
//! trailer frame, a grpc-status that is not a number, all count as errors.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Largest response head (status line and headers), in bytes.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most response headers.
const HEADERS_MAX: usize = 64;
/// Largest chunk-size line or chunked trailer line, in bytes.
const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Largest response body per call, in bytes (as received: base64 text counts before decoding).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How the call's messages travel: binary frames or base64 text (`grpc-web-text`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Binary,
    Text,
}

/// The kind of call: one response message, or any number of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    Unary,
    ServerStream,
}

/// Why a call failed; exactly one per failed call. [`ErrorKind::name`] is the string the
/// report counts it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection could not be made.
    Connect,
    /// HTTPS: the TLS handshake failed (certificate not trusted or not for the name, alert,
    /// no common parameters, ALPN `h2` not selected); no request was sent.
    Tls,
    /// Writing the request or reading the response failed, or the peer closed the
    /// connection before the response was complete.
    Io,
    /// The call did not finish within the call timeout.
    Timeout,
    /// HTTP/2 only: the server reset the call's stream (RST_STREAM with this error code)
    /// before the response was complete.
    StreamReset(u32),
    /// A complete HTTP response with a status other than 200.
    HttpStatus(u16),
    /// A gRPC status other than OK.
    Grpc(u32),
    /// The HTTP message or the gRPC-Web body broke the protocol.
    Malformed,
    /// The body ended without a trailer frame and the headers carried no grpc-status.
    MissingTrailers,
    /// The response body exceeded [`BODY_BYTES_MAX`] or the head [`HEAD_BYTES_MAX`].
    TooLarge,
    /// Still in flight when the run ended and its grace period ran out.
    Unfinished,
}

impl ErrorKind {
    /// The report's name for this kind: `connect`, `http_503`, `grpc_UNAVAILABLE`, …
    pub fn name(&self) -> String {
        match self {
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Tls => "tls".into(),
            ErrorKind::Io => "io".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::StreamReset(code) => match h2_error_code_name(*code) {
                Some(name) => format!("reset_{name}"),
                None => format!("reset_{code}"),
            },
            ErrorKind::HttpStatus(status) => format!("http_{status}"),
            ErrorKind::Grpc(code) => match grpc_code_name(*code) {
                Some(name) => format!("grpc_{name}"),
                None => format!("grpc_{code}"),
            },
            ErrorKind::Malformed => "malformed".into(),
            ErrorKind::MissingTrailers => "missing_trailers".into(),
            ErrorKind::TooLarge => "too_large".into(),
            ErrorKind::Unfinished => "unfinished".into(),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The canonical name of a gRPC status code (grpc/doc/statuscodes.md).
pub fn grpc_code_name(code: u32) -> Option<&'static str> {
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
    NAMES.get(code as usize).copied()
}

/// The name of an HTTP/2 error code (RFC 9113 section 7), as RST_STREAM carries it.
pub fn h2_error_code_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(code as usize).copied()
}

/// Checks a metadata header before it goes into every request: a token name (and not one the
/// generator sets itself) and a value without control characters, so a flag cannot smuggle a
/// second header or request.
pub fn check_metadata(name: &str, value: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("metadata name {name:?} is not an HTTP token"));
    }
    let reserved = [
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
    ];
    if reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return Err(format!(
            "metadata name {name:?} is set by the load generator"
        ));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "metadata value for {name:?} has control characters"
        ));
    }
    Ok(())
}

/// The request body of every call: one uncompressed gRPC frame holding `payload_bytes` bytes
/// (pattern `i % 251`, as the test backend uses), base64 in text mode; and its gRPC-Web content
/// type.
pub fn encode_body(mode: Mode, payload_bytes: usize) -> (&'static str, Vec<u8>) {
    let mut frame = Vec::with_capacity(5 + payload_bytes);
    frame.push(0);
    frame.extend_from_slice(&(payload_bytes as u32).to_be_bytes());
    frame.extend((0..payload_bytes).map(|i| (i % 251) as u8));
    match mode {
        Mode::Binary => ("application/grpc-web+proto", frame),
        Mode::Text => (
            "application/grpc-web-text+proto",
            STANDARD.encode(&frame).into_bytes(),
        ),
    }
}

/// Encodes one complete request: `POST method`, keep-alive, the body of [`encode_body`]. Built
/// once per run; every call sends the same bytes.
pub fn encode_request(
    method: &str,
    host: &str,
    mode: Mode,
    payload_bytes: usize,
    metadata: &[(String, String)],
) -> Vec<u8> {
    let (content_type, body) = encode_body(mode, payload_bytes);
    let mut request = format!(
        "POST {method} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {content_type}\r\n\
         accept: {content_type}\r\nx-grpc-web: 1\r\nx-user-agent: ringway-load\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in metadata {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The response's content type, classified once while parsing the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentType {
    /// `application/grpc-web`, with or without `+subtype` or parameters.
    GrpcWeb,
    /// `application/grpc-web-text`, likewise.
    GrpcWebText,
    /// `application/proto`: a Connect unary message.
    Proto,
    /// `application/json`: a Connect error (or a JSON message).
    Json,
    /// Anything else, or no content type.
    #[default]
    Other,
}

impl ContentType {
    pub fn classify(value: &str) -> ContentType {
        // "application/grpc-web-text" also starts with "application/grpc-web", so the byte after
        // the prefix must end it: nothing, '+' (subtype) or ';' (parameters). Compared as bytes:
        // slicing the str could split a multi-byte character.
        let has = |expected: &str| {
            let value = value.as_bytes();
            value
                .get(..expected.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(expected.as_bytes()))
                && matches!(value.get(expected.len()), None | Some(b'+' | b';'))
        };
        if has("application/grpc-web") {
            ContentType::GrpcWeb
        } else if has("application/grpc-web-text") {
            ContentType::GrpcWebText
        } else if has("application/proto") {
            ContentType::Proto
        } else if has("application/json") {
            ContentType::Json
        } else {
            ContentType::Other
        }
    }
}

/// What the parser needs from the response head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_type: ContentType,
    /// The backend header's value (`--backend-header`), the pod that served the call.
    pub pod: Option<String>,
    /// `grpc-status` in the headers: a trailers-only response (or a misbehaving server).
    pub grpc_status: Option<String>,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

enum State {
    Head,
    Body(BodyState),
    Done,
}

/// Progress of [`ResponseParser::feed`].
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed; `consumed` bytes of the input were used and must not be fed again.
    NeedMore { consumed: usize },
    /// The response is complete; bytes after `consumed` belong to whatever follows.
    Done { consumed: usize },
}

/// Incremental HTTP/1.1 response reader: status line and headers with `httparse`, then a body
/// delimited by Content-Length, chunked coding or the connection's close. The body is collected
/// (up to [`BODY_BYTES_MAX`]) for [`judge`]. Reused across calls with [`ResponseParser::reset`].
pub struct ResponseParser {
    backend_header: String,
    state: State,
    head: Head,
    body: Vec<u8>,
    /// The previous response's pod string, kept so the next one reuses its allocation.
    spare_pod: String,
}

impl ResponseParser {
    pub fn new(backend_header: &str) -> Self {
        ResponseParser {
            backend_header: backend_header.to_ascii_lowercase(),
            state: State::Head,
            head: Head::default(),
            body: Vec::new(),
            spare_pod: String::new(),
        }
    }

    /// Prepares for the next response on the connection, keeping the body's allocation.
    pub fn reset(&mut self) {
        self.state = State::Head;
        if let Some(pod) = self.head.pod.take() {
            self.spare_pod = pod;
        }
        self.head = Head::default();
        self.body.clear();
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Feeds received bytes. Bytes not consumed (an incomplete line) must be fed again with
    /// more appended.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, ErrorKind> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match self.state {
                State::Done => return Ok(Progress::Done { consumed }),
                State::Head => match self.parse_head(rest)? {
                    Some(used) => consumed += used,
                    None => return Ok(Progress::NeedMore { consumed }),
                },
                State::Body(body) => {
                    let (used, next) = self.feed_body(body, rest)?;
                    consumed += used;
                    match next {
                        Some(next) => self.state = next,
                        None => return Ok(Progress::NeedMore { consumed }),
                    }
                }
            }
        }
    }

    /// The peer closed the connection: completes a close-delimited body, or says why the
    /// response is broken.
    pub fn feed_eof(&mut self) -> Result<(), ErrorKind> {
        match self.state {
            State::Done | State::Body(BodyState::UntilClose) => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(ErrorKind::Io),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Parses the head if it is all in `input`; returns the bytes it took.
    fn parse_head(&mut self, input: &[u8]) -> Result<Option<usize>, ErrorKind> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let used = match response.parse(input) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) if input.len() > HEAD_BYTES_MAX => {
                return Err(ErrorKind::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ErrorKind::TooLarge),
            Err(_) => return Err(ErrorKind::Malformed),
        };
        if used > HEAD_BYTES_MAX {
            return Err(ErrorKind::TooLarge);
        }
        // httparse guarantees code and version on Complete.
        let status = response.code.unwrap_or(0);
        let http10 = response.version == Some(0);
        if (100..200).contains(&status) {
            // An interim response (100 Continue, 103 Early Hints): the real one follows.
            if status == 101 {
                return Err(ErrorKind::Malformed);
            }
            return Ok(Some(used));
        }
        let mut head = Head {
            status,
            keep_alive: !http10,
            ..Head::default()
        };
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        for header in response.headers.iter() {
            let name = header.name;
            let value = std::str::from_utf8(header.value).map_err(|_| ErrorKind::Malformed)?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let length = parse_decimal(value).ok_or(ErrorKind::Malformed)?;
                // Repeated Content-Length must agree (RFC 9112 §6.3).
                if content_length.is_some_and(|previous| previous != length) {
                    return Err(ErrorKind::Malformed);
                }
                content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only "chunked" as the final (and here only) coding is understood.
                if !value.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(ErrorKind::Malformed);
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for option in value.split(',').map(str::trim) {
                    if option.eq_ignore_ascii_case("close") {
                        head.keep_alive = false;
                    } else if option.eq_ignore_ascii_case("keep-alive") && http10 {
                        head.keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                head.content_type = ContentType::classify(value);
            } else if name.eq_ignore_ascii_case("grpc-status") {
                head.grpc_status = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case(&self.backend_header) && head.pod.is_none() {
                let mut pod = std::mem::take(&mut self.spare_pod);
                pod.clear();
                pod.push_str(value);
                head.pod = Some(pod);
            }
        }
        if chunked && content_length.is_some() {
            // Both framings at once is the classic smuggling shape; a real server never does it.
            return Err(ErrorKind::Malformed);
        }
        let body = if status == 204 || status == 304 {
            BodyState::Length(0)
        } else if chunked {
            BodyState::Chunked(Chunked::Size)
        } else if let Some(length) = content_length {
            if length > BODY_BYTES_MAX as u64 {
                return Err(ErrorKind::TooLarge);
            }
            BodyState::Length(length)
        } else {
            head.keep_alive = false;
            BodyState::UntilClose
        };
        self.head = head;
        self.state = State::Body(body);
        Ok(Some(used))
    }

    /// Takes body bytes; returns the bytes used and the next state, or `None` when more input
    /// is needed in the current state.
    fn feed_body(
        &mut self,
        body: BodyState,
        input: &[u8],
    ) -> Result<(usize, Option<State>), ErrorKind> {
        match body {
            BodyState::Length(0) => Ok((0, Some(State::Done))),
            BodyState::Length(remaining) => {
                let take = input.len().min(remaining as usize);
                self.append(&input[..take])?;
                let remaining = remaining - take as u64;
                let next = if remaining == 0 {
                    State::Done
                } else {
                    State::Body(BodyState::Length(remaining))
                };
                Ok((take, (take > 0 || remaining == 0).then_some(next)))
            }
            BodyState::UntilClose => {
                self.append(input)?;
                Ok((input.len(), None))
            }
            BodyState::Chunked(chunked) => self.feed_chunked(chunked, input),
        }
    }

    fn feed_chunked(
        &mut self,
        chunked: Chunked,
        input: &[u8],
    ) -> Result<(usize, Option<State>), ErrorKind> {
        let in_chunked = |c| Some(State::Body(BodyState::Chunked(c)));
        match chunked {
            Chunked::Size => {
                let Some((line, used)) = take_line(input)? else {
                    return Ok((0, None));
                };
                // The size, then optional extensions after ';' which are ignored.
                let size_text = line.split(|&b| b == b';').next().unwrap_or(line);
                let size = parse_hex(trim_ows(size_text)).ok_or(ErrorKind::Malformed)?;
                if size > BODY_BYTES_MAX as u64 {
                    return Err(ErrorKind::TooLarge);
                }
                let next = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
                Ok((used, in_chunked(next)))
            }
            Chunked::Data(remaining) => {
                let take = input.len().min(remaining as usize);
                if take == 0 {
                    return Ok((0, None));
                }
                self.append(&input[..take])?;
                let remaining = remaining - take as u64;
                let next = if remaining == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(remaining)
                };
                Ok((take, in_chunked(next)))
            }
            Chunked::DataEnd => {
                if input.len() < 2 {
                    return Ok((0, None));
                }
                if &input[..2] != b"\r\n" {
                    return Err(ErrorKind::Malformed);
                }
                Ok((2, in_chunked(Chunked::Size)))
            }
            Chunked::Trailers => {
                // HTTP trailer fields after the last chunk, ended by an empty line; gRPC-Web
                // puts its trailers in the body, so these are skipped.
                let Some((line, used)) = take_line(input)? else {
                    return Ok((0, None));
                };
                if line.is_empty() {
                    Ok((used, Some(State::Done)))
                } else {
                    Ok((used, in_chunked(Chunked::Trailers)))
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        if self.body.len() + bytes.len() > BODY_BYTES_MAX {
            return Err(ErrorKind::TooLarge);
        }
        self.body.extend_from_slice(bytes);
        Ok(())
    }
}

/// A CRLF-terminated line at the start of `input` (without the CRLF) and the bytes it spans;
/// `None` if the line is not complete yet. A bare LF or an overlong line is malformed.
fn take_line(input: &[u8]) -> Result<Option<(&[u8], usize)>, ErrorKind> {
    match input.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && input[lf - 1] == b'\r' && lf <= CHUNK_LINE_BYTES_MAX => {
            Ok(Some((&input[..lf - 1], lf + 1)))
        }
        Some(_) => Err(ErrorKind::Malformed),
        None if input.len() > CHUNK_LINE_BYTES_MAX => Err(ErrorKind::Malformed),
        None => Ok(None),
    }
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_hex(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 15 {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The one outcome of a call whose HTTP response is complete: `Ok` or the error kind, plus the
/// pod that answered (from the headers, else from the trailer frame).
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub result: Result<(), ErrorKind>,
    pub pod: Option<&'a str>,
}

/// Judges a complete response: HTTP status, content type, then the gRPC-Web body (decoded from
/// base64 in text mode into `scratch`), then grpc-status from the trailer frame or, for a
/// trailers-only response, the headers. A unary call must carry exactly one message.
pub fn judge<'a>(
    head: &'a Head,
    body: &'a [u8],
    mode: Mode,
    call: CallKind,
    backend_header: &str,
    scratch: &'a mut Vec<u8>,
) -> Verdict<'a> {
    let response = GrpcWebResponse {
        status: head.status,
        content_type: head.content_type,
        grpc_status: head.grpc_status.as_deref(),
        pod: head.pod.as_deref(),
        body,
    };
    judge_grpc_web(response, mode, call, backend_header, scratch)
}

/// A complete gRPC-Web response, however it travelled (HTTP/1.1 or HTTP/2).
#[derive(Clone, Copy, Debug)]
pub struct GrpcWebResponse<'a> {
    pub status: u16,
    pub content_type: ContentType,
    /// `grpc-status` in the headers (a trailers-only response).
    pub grpc_status: Option<&'a str>,
    /// The backend header's value in the headers.
    pub pod: Option<&'a str>,
    pub body: &'a [u8],
}

/// [`judge`] on the parts of a response: the HTTP/2 mode has no [`Head`].
pub fn judge_grpc_web<'a>(
    response: GrpcWebResponse<'a>,
    mode: Mode,
    call: CallKind,
    backend_header: &str,
    scratch: &'a mut Vec<u8>,
) -> Verdict<'a> {
    let mut pod = response.pod;
    let result = judge_inner(response, mode, call, backend_header, scratch, &mut pod);
    Verdict { result, pod }
}

fn judge_inner<'a>(
    response: GrpcWebResponse<'a>,
    mode: Mode,
    call: CallKind,
    backend_header: &str,
    scratch: &'a mut Vec<u8>,
    pod: &mut Option<&'a str>,
) -> Result<(), ErrorKind> {
    if response.status != 200 {
        return Err(ErrorKind::HttpStatus(response.status));
    }
    let expected = match mode {
        Mode::Binary => ContentType::GrpcWeb,
        Mode::Text => ContentType::GrpcWebText,
    };
    if response.content_type != expected {
        return Err(ErrorKind::Malformed);
    }
    let frames: &'a [u8] = match mode {
        Mode::Binary => response.body,
        Mode::Text => {
            decode_text(response.body, scratch)?;
            scratch
        }
    };
    let parsed = parse_frames(frames, backend_header)?;
    if pod.is_none() {
        *pod = parsed.trailer_pod;
    }
    let status = match (parsed.trailer_status, response.grpc_status) {
        (Some(status), _) => status,
        // Trailers-only: grpc-status in the headers and no frames at all.
        (None, Some(status)) if parsed.messages == 0 && !parsed.trailer_frame => {
            parse_grpc_status(status)?
        }
        (None, _) => return Err(ErrorKind::MissingTrailers),
    };
    if status != 0 {
        return Err(ErrorKind::Grpc(status));
    }
    if call == CallKind::Unary && parsed.messages != 1 {
        return Err(ErrorKind::Malformed);
    }
    Ok(())
}

/// Decodes a grpc-web-text body: base64 in padded chunks that may simply be concatenated
/// (each flush of the server's stream is encoded on its own), so padding may appear at the end
/// of any 4-character quantum, not just the last one. Whitespace is not allowed.
pub fn decode_text(text: &[u8], out: &mut Vec<u8>) -> Result<(), ErrorKind> {
    out.clear();
    if !text.len().is_multiple_of(4) {
        return Err(ErrorKind::Malformed);
    }
    let mut start = 0;
    for (index, quantum) in text.chunks_exact(4).enumerate() {
        if quantum.contains(&b'=') {
            let end = (index + 1) * 4;
            STANDARD
                .decode_vec(&text[start..end], out)
                .map_err(|_| ErrorKind::Malformed)?;
            start = end;
        }
    }
    STANDARD
        .decode_vec(&text[start..], out)
        .map_err(|_| ErrorKind::Malformed)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Frames<'a> {
    messages: u64,
    trailer_frame: bool,
    trailer_status: Option<u32>,
    trailer_pod: Option<&'a str>,
}

/// Walks gRPC-Web frames (1-byte flag, 4-byte big-endian length): data frames (flag 0, or 1 for
/// a compressed message), then at most one trailer frame (flag 0x80) which must be last.
fn parse_frames<'a>(mut body: &'a [u8], backend_header: &str) -> Result<Frames<'a>, ErrorKind> {
    let mut frames = Frames::default();
    while !body.is_empty() {
        if frames.trailer_frame || body.len() < 5 {
            return Err(ErrorKind::Malformed);
        }
        let flag = body[0];
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = body.get(5..5 + length).ok_or(ErrorKind::Malformed)?;
        match flag {
            0x00 | 0x01 => frames.messages += 1,
            0x80 => {
                frames.trailer_frame = true;
                parse_trailers(payload, backend_header, &mut frames)?;
            }
            _ => return Err(ErrorKind::Malformed),
        }
        body = &body[5 + length..];
    }
    Ok(frames)
}

/// Parses a trailer frame's `name:value\r\n` lines (HTTP/1 header syntax, per the gRPC-Web
/// spec); the last line may lack its CRLF.
fn parse_trailers<'a>(
    payload: &'a [u8],
    backend_header: &str,
    frames: &mut Frames<'a>,
) -> Result<(), ErrorKind> {
    let text = std::str::from_utf8(payload).map_err(|_| ErrorKind::Malformed)?;
    let text = text.strip_suffix("\r\n").unwrap_or(text);
    if text.is_empty() {
        return Ok(());
    }
    for line in text.split("\r\n") {
        let (name, value) = line.split_once(':').ok_or(ErrorKind::Malformed)?;
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ErrorKind::Malformed);
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(ErrorKind::Malformed);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("grpc-status") {
            if frames.trailer_status.is_some() {
                return Err(ErrorKind::Malformed);
            }
            frames.trailer_status = Some(parse_grpc_status(value)?);
        } else if name.eq_ignore_ascii_case(backend_header) && frames.trailer_pod.is_none() {
            frames.trailer_pod = Some(value);
        }
    }
    Ok(())
}

pub(crate) fn parse_grpc_status(text: &str) -> Result<u32, ErrorKind> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorKind::Malformed);
    }
    text.parse().map_err(|_| ErrorKind::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "x-backend";

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn ok_body() -> Vec<u8> {
        let mut body = frame(0, b"hello");
        body.extend(frame(0x80, b"grpc-status:0\r\ngrpc-message:\r\n"));
        body
    }

    /// Parses `response` fed in pieces of `step` bytes, as a socket might deliver it.
    fn parse_in_steps(response: &[u8], step: usize) -> Result<ResponseParser, ErrorKind> {
        let mut parser = ResponseParser::new(POD);
        let mut buffered = Vec::new();
        for piece in response.chunks(step.max(1)) {
            buffered.extend_from_slice(piece);
            match parser.feed(&buffered)? {
                Progress::NeedMore { consumed } => {
                    buffered.drain(..consumed);
                }
                Progress::Done { consumed } => {
                    assert_eq!(consumed, buffered.len(), "no bytes after the response");
                    return Ok(parser);
                }
            }
        }
        parser.feed_eof()?;
        Ok(parser)
    }

    fn response(head: &str, body: &[u8]) -> Vec<u8> {
        let mut out = head.as_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A verdict that owns its pod, so it can outlive the parser.
    #[derive(Debug, PartialEq, Eq)]
    struct Owned {
        result: Result<(), ErrorKind>,
        pod: Option<String>,
    }

    fn verdict(raw: &[u8], mode: Mode, call: CallKind) -> Owned {
        let parser = match parse_in_steps(raw, 7) {
            Ok(parser) => parser,
            Err(kind) => {
                return Owned {
                    result: Err(kind),
                    pod: None,
                }
            }
        };
        let mut scratch = Vec::new();
        let verdict = judge(parser.head(), parser.body(), mode, call, POD, &mut scratch);
        Owned {
            result: verdict.result,
            pod: verdict.pod.map(str::to_owned),
        }
    }

    fn binary(raw: &[u8]) -> Result<(), ErrorKind> {
        verdict(raw, Mode::Binary, CallKind::Unary).result
    }

    fn grpc_head(length: usize) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\n\
             x-backend: pod-3\r\ncontent-length: {length}\r\n\r\n"
        )
    }

    #[test]
    fn unary_ok_with_content_length_in_any_pieces() {
        let body = ok_body();
        let raw = response(&grpc_head(body.len()), &body);
        for step in [1, 2, 5, 13, raw.len()] {
            let parser = parse_in_steps(&raw, step).unwrap();
            assert_eq!(parser.head().status, 200);
            assert!(parser.head().keep_alive);
            assert_eq!(parser.body(), body.as_slice());
            let mut scratch = Vec::new();
            let verdict = judge(
                parser.head(),
                parser.body(),
                Mode::Binary,
                CallKind::Unary,
                POD,
                &mut scratch,
            );
            assert_eq!(
                verdict,
                Verdict {
                    result: Ok(()),
                    pod: Some("pod-3")
                }
            );
        }
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let body = ok_body();
        let (a, b) = body.split_at(9);
        let mut chunked = format!("{:x};ext=1\r\n", a.len()).into_bytes();
        chunked.extend_from_slice(a);
        chunked.extend(format!("\r\n{:X}\r\n", b.len()).bytes());
        chunked.extend_from_slice(b);
        chunked.extend(b"\r\n0\r\nx-trailer: 1\r\n\r\n");
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web\r\n\
                    transfer-encoding: chunked\r\nx-backend: pod-1\r\n\r\n";
        let raw = response(head, &chunked);
        for step in [1, 3, raw.len()] {
            let parser = parse_in_steps(&raw, step).unwrap();
            assert_eq!(parser.body(), body.as_slice());
        }
        assert_eq!(binary(&raw), Ok(()));
    }

    #[test]
    fn close_delimited_body_ends_at_eof_and_closes() {
        let body = ok_body();
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\n\r\n";
        let parser = parse_in_steps(&response(head, &body), 4).unwrap();
        assert!(!parser.head().keep_alive);
        assert_eq!(parser.body(), body.as_slice());
    }

    #[test]
    fn keep_alive_rules() {
        let keep = |head: &str| {
            parse_in_steps(head.as_bytes(), 100)
                .unwrap()
                .head()
                .keep_alive
        };
        assert!(!keep(
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 204 No Content\r\n\r\n"));
        assert!(keep(
            "HTTP/1.0 204 No Content\r\nconnection: keep-alive\r\n\r\n"
        ));
        assert!(keep("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
    }

    #[test]
    fn interim_response_is_skipped() {
        let body = ok_body();
        let raw = response(
            &format!("HTTP/1.1 100 Continue\r\n\r\n{}", grpc_head(body.len())),
            &body,
        );
        assert_eq!(binary(&raw), Ok(()));
    }

    #[test]
    fn http_errors_are_named_by_status() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nbusy!";
        assert_eq!(binary(raw), Err(ErrorKind::HttpStatus(503)));
        assert_eq!(ErrorKind::HttpStatus(503).name(), "http_503");
    }

    #[test]
    fn grpc_status_from_trailer_frame_or_headers() {
        let mut body = frame(0x80, b"grpc-status:14\r\ngrpc-message:down\r\n");
        let raw = response(&grpc_head(body.len()), &body);
        assert_eq!(binary(&raw), Err(ErrorKind::Grpc(14)));
        assert_eq!(ErrorKind::Grpc(14).name(), "grpc_UNAVAILABLE");
        assert_eq!(ErrorKind::Grpc(99).name(), "grpc_99");
        // Trailers-only: status in the headers, empty body.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\n\
                    grpc-status: 12\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(binary(head.as_bytes()), Err(ErrorKind::Grpc(12)));
        let head = head.replace("12", "0");
        // Trailers-only OK on a unary call has no message: malformed.
        assert_eq!(binary(head.as_bytes()), Err(ErrorKind::Malformed));
        assert_eq!(
            verdict(head.as_bytes(), Mode::Binary, CallKind::ServerStream).result,
            Ok(())
        );
        // Last trailer line without CRLF is accepted.
        body = frame(0, b"m");
        body.extend(frame(0x80, b"grpc-status:0"));
        assert_eq!(binary(&response(&grpc_head(body.len()), &body)), Ok(()));
    }

    #[test]
    fn missing_trailers() {
        let body = frame(0, b"hello");
        assert_eq!(
            binary(&response(&grpc_head(body.len()), &body)),
            Err(ErrorKind::MissingTrailers)
        );
        assert_eq!(
            binary(grpc_head(0).as_bytes()),
            Err(ErrorKind::MissingTrailers)
        );
        // A trailer frame without grpc-status is missing the trailer that matters.
        let mut body = frame(0, b"hello");
        body.extend(frame(0x80, b"x-other:1\r\n"));
        assert_eq!(
            binary(&response(&grpc_head(body.len()), &body)),
            Err(ErrorKind::MissingTrailers)
        );
    }

    #[test]
    fn hostile_frames_are_malformed() {
        let ok = ok_body();
        let cases: Vec<Vec<u8>> = vec![
            ok[..ok.len() - 1].to_vec(),              // cut trailer frame
            ok[..3].to_vec(),                         // cut header
            [ok.clone(), frame(0, b"late")].concat(), // data after trailers
            [ok.clone(), ok.clone()].concat(),        // two trailer frames
            [frame(0x02, b"x"), frame(0x80, b"grpc-status:0\r\n")].concat(), // unknown flag
            [frame(0, b"x"), frame(0x80, b"grpc-status:zero\r\n")].concat(), // status not a number
            [frame(0, b"x"), frame(0x80, b"grpc-status:-1\r\n")].concat(),
            [frame(0, b"x"), frame(0x80, b"grpc-status:99999999999\r\n")].concat(),
            [frame(0, b"x"), frame(0x80, b"no colon\r\n")].concat(),
            [
                frame(0, b"x"),
                frame(0x80, b"grpc-status:0\r\ngrpc-status:0\r\n"),
            ]
            .concat(),
            [frame(0, b"x"), frame(0x80, b"grpc-status:0\nx:1")].concat(), // bare LF
            [frame(0, b"x"), frame(0x80, &[0xff, b':', b'0'])].concat(),   // not UTF-8
            [
                frame(0, b"a"),
                frame(0, b"b"),
                frame(0x80, b"grpc-status:0"),
            ]
            .concat(), // 2 msgs unary
            vec![0, 0xff, 0xff, 0xff, 0xff],                               // huge length
        ];
        for (index, body) in cases.iter().enumerate() {
            let raw = response(&grpc_head(body.len()), body);
            assert_eq!(binary(&raw), Err(ErrorKind::Malformed), "case {index}");
        }
        // Two messages are fine on a server stream.
        let stream = [
            frame(0, b"a"),
            frame(0, b"b"),
            frame(0x80, b"grpc-status:0"),
        ]
        .concat();
        let raw = response(&grpc_head(stream.len()), &stream);
        assert_eq!(
            verdict(&raw, Mode::Binary, CallKind::ServerStream).result,
            Ok(())
        );
    }

    #[test]
    fn wrong_content_type_is_malformed() {
        let body = ok_body();
        for content_type in [
            // Found by fuzzing: a multi-byte character across the prefix's end.
            "applicatio./grpc-web+pro\u{513}ength",
            "application/grpc-w\u{e9}b",
            "text/plain",
            "application/grpc",
            "application/grpc-webx",
            "",
        ] {
            let raw = response(
                &format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                ),
                &body,
            );
            for mode in [Mode::Binary, Mode::Text] {
                let result = verdict(&raw, mode, CallKind::Unary).result;
                assert_eq!(
                    result,
                    Err(ErrorKind::Malformed),
                    "{content_type:?} {mode:?}"
                );
            }
        }
        // Binary body labelled text and the reverse.
        let raw = response(&grpc_head(body.len()), &body);
        assert_eq!(
            verdict(&raw, Mode::Text, CallKind::Unary).result,
            Err(ErrorKind::Malformed)
        );
    }

    #[test]
    fn hostile_http_framing() {
        let cases: [&[u8]; 8] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
        ];
        for (index, raw) in cases.iter().enumerate() {
            assert_eq!(binary(raw), Err(ErrorKind::Malformed), "case {index}");
        }
        assert_eq!(
            binary(b"HTTP/1.1 101 Switching\r\n\r\n"),
            Err(ErrorKind::Malformed)
        );
        // Truncated: the connection closes before Content-Length or the last chunk.
        assert_eq!(
            binary(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"),
            Err(ErrorKind::Io)
        );
        assert_eq!(
            binary(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab"),
            Err(ErrorKind::Io)
        );
        assert_eq!(binary(b"HTTP/1.1 200 O"), Err(ErrorKind::Io));
    }

    #[test]
    fn limits() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        assert_eq!(binary(huge.as_bytes()), Err(ErrorKind::TooLarge));
        let chunk = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
            BODY_BYTES_MAX + 1
        );
        assert_eq!(binary(chunk.as_bytes()), Err(ErrorKind::TooLarge));
        let long_head = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(HEAD_BYTES_MAX + 10));
        assert_eq!(binary(long_head.as_bytes()), Err(ErrorKind::TooLarge));
        let many: String = (0..HEADERS_MAX + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        assert_eq!(
            binary(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()),
            Err(ErrorKind::TooLarge)
        );
        // Close-delimited bodies are capped too.
        let mut parser = ResponseParser::new(POD);
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let mb = vec![0u8; 1 << 20];
        let mut result = Ok(Progress::NeedMore { consumed: 0 });
        for _ in 0..65 {
            result = parser.feed(&mb);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ErrorKind::TooLarge));
    }

    #[test]
    fn parser_is_reusable_across_keep_alive_responses() {
        let body = ok_body();
        let one = response(&grpc_head(body.len()), &body);
        let two = [one.clone(), one.clone()].concat();
        let mut parser = ResponseParser::new(POD);
        let Progress::Done { consumed } = parser.feed(&two).unwrap() else {
            panic!("not done")
        };
        assert_eq!(consumed, one.len());
        parser.reset();
        assert_eq!(
            parser.feed(&two[consumed..]).unwrap(),
            Progress::Done {
                consumed: one.len()
            }
        );
        assert_eq!(parser.body(), body.as_slice());
    }

    #[test]
    fn text_mode_concatenated_padded_chunks() {
        let data = frame(0, b"hello");
        let trailer = frame(0x80, b"grpc-status:0\r\nx-backend:pod-9\r\n");
        // Each flush encoded on its own: padding inside the stream.
        let text = format!("{}{}", STANDARD.encode(&data), STANDARD.encode(&trailer));
        assert!(
            text[..text.len() - 4].contains('='),
            "test needs inner padding"
        );
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web-text+proto\r\ncontent-length: {}\r\n\r\n",
            text.len()
        );
        let raw = response(&head, text.as_bytes());
        let verdict = verdict(&raw, Mode::Text, CallKind::Unary);
        // The pod comes from the trailer frame when the headers do not name it.
        assert_eq!(
            verdict,
            Owned {
                result: Ok(()),
                pod: Some("pod-9".into())
            }
        );
        let mut out = Vec::new();
        decode_text(text.as_bytes(), &mut out).unwrap();
        assert_eq!(out, [data, trailer].concat());
    }

    #[test]
    fn text_mode_hostile_base64() {
        let mut out = Vec::new();
        for bad in [
            "abc", "ab=c", "a===", "AA==A", "AAA=AA", "AA A", "AA\r\n", "!!!!", "AB==",
        ] {
            // "AB==" has non-zero trailing bits, which the standard engine rejects.
            assert_eq!(
                decode_text(bad.as_bytes(), &mut out),
                Err(ErrorKind::Malformed),
                "{bad:?}"
            );
        }
        decode_text(b"", &mut out).unwrap();
        assert!(out.is_empty());
        decode_text(b"AA==AAA=AAAA", &mut out).unwrap();
        assert_eq!(out, vec![0; 6]);
    }

    #[test]
    fn request_encoding() {
        let meta = vec![("authorization".to_owned(), "Bearer x".to_owned())];
        let request = encode_request("/a.B/C", "example:80", Mode::Binary, 3, &meta);
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("POST /a.B/C HTTP/1.1\r\nhost: example:80\r\n"));
        assert!(text.contains("content-type: application/grpc-web+proto\r\n"));
        assert!(text.contains("content-length: 8\r\n"));
        assert!(text.contains("authorization: Bearer x\r\n\r\n"));
        assert!(request.ends_with(&[0, 0, 0, 0, 3, 0, 1, 2]));
        let request = encode_request("/a.B/C", "h", Mode::Text, 3, &[]);
        assert!(request.ends_with(b"content-length: 12\r\n\r\nAAAAAAMAAQI="));
        assert!(check_metadata("x-ok", "v 1").is_ok());
        assert!(check_metadata("bad name", "v").is_err());
        assert!(check_metadata("x", "a\r\nx-injected: 1").is_err());
        assert!(check_metadata("Content-Length", "1").is_err());
        assert!(check_metadata("", "1").is_err());
    }
}
