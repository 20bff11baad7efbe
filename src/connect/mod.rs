//! The Connect protocol (connectrpc.com/docs/protocol) translated to gRPC and back, sans-IO.
//!
//! Connect clients (connect-web, connect-es, connect-go, connect-kotlin, connect-swift) speak
//! plain HTTP: a unary call is a POST whose body is the bare message, or a GET with the message
//! in the query; its errors are JSON with a meaningful HTTP status; streams use 5-byte envelopes
//! and end with a JSON envelope instead of HTTP trailers. gRPC backends speak none of it. This
//! module holds every byte-level piece of the translation, so that a framing (HTTP/1.1 or
//! HTTP/2) and the protocol-independent call only move buffers and headers around:
//!
//! - [`classify`] tells a Connect call (unary POST, unary GET, streaming) from gRPC-Web, native
//!   gRPC and anything else, by method, content type, `connect-protocol-version` and query;
//! - [`request`] turns the Connect request head into what the gRPC head needs
//!   (`connect-timeout-ms` → `grpc-timeout`, the encodings, which headers are dropped) and a
//!   unary body into one gRPC frame;
//! - [`get`] decodes a unary GET's query (`connect`, `encoding`, `base64`, `compression`,
//!   `message`) into that same frame;
//! - [`envelope`] parses and relays 5-byte envelopes: a Connect stream's messages and gRPC's
//!   length-prefixed messages have the same layout, so they pass through byte for byte once
//!   their prefixes are checked;
//! - [`response`] turns the upstream gRPC response into the Connect one: a unary state machine
//!   that holds the one message until the trailers decide the HTTP status, and a streaming relay
//!   that ends with the end-of-stream envelope;
//! - [`json`] writes the error and end-of-stream JSON by hand (the proxy has no JSON library),
//!   and [`status_details`] reads `grpc-status-details-bin` (a `google.rpc.Status`) into the
//!   error's `details`.
//!
//! Nothing here touches a socket, and nothing panics on input from either side.
//!
//! Where ringway deliberately differs from Envoy's `connect_grpc_bridge` filter (the behaviour
//! teams migrate from; read at envoyproxy/envoy `source/extensions/filters/http/
//! connect_grpc_bridge`):
//! - **Detection.** Envoy treats a unary POST as Connect only with `connect-protocol-version`.
//!   ringway, like connect-go servers by default, also takes `application/proto` and
//!   `application/json` without it (the protocol says clients *should* send it, and `curl`
//!   users do not); a custom codec still needs it, so that an `application/x-www-form-urlencoded`
//!   form post, which a browser sends cross-origin without a preflight, is never a call.
//! - **GET.** Envoy passes unary GETs through untranslated; ringway decodes them.
//! - **Compression.** Envoy frames a unary body with the "uncompressed" flag whatever its
//!   `content-encoding` says, asks the backend for `identity` responses, and drops the response
//!   frame's flag. ringway maps `content-encoding` / `accept-encoding` (unary) and
//!   `connect-content-encoding` / `connect-accept-encoding` (streaming) to `grpc-encoding` /
//!   `grpc-accept-encoding`, sets the frame flag from them, and answers `content-encoding` from
//!   a compressed response frame.
//! - **Error codes and statuses.** Envoy maps codes to HTTP with an older table (`canceled` and
//!   `deadline_exceeded` → 408, `unimplemented` → 404, `failed_precondition` → 412); ringway uses
//!   the protocol's current table, as connect-go and connect-es do. Envoy writes `grpc-message`
//!   as received (still percent-encoded) and no `details`; ringway decodes both.
//! - **Validation.** Envoy ignores an invalid `connect-timeout-ms` (the call runs without a
//!   deadline) and passes envelopes unchecked both ways, so a client's end-stream flag reaches
//!   the backend as an invalid gRPC frame and a backend's stray flag reaches the client as a
//!   forged end of stream. ringway refuses all three with a Connect error, as connect-go does.
//! - **Cardinality.** Envoy's unary response keeps whatever DATA arrives after dropping the first
//!   five bytes; ringway requires exactly one response message (`unimplemented` otherwise, the
//!   gRPC status for a cardinality violation).
//! - **JSON.** ringway writes the JSON by hand and its tests check the bytes. (Envoy's own
//!   hand-written writer, in the revision read, `01e2618`, writes the first metadata entry and
//!   value twice and leaves the end-of-stream object unclosed when there is metadata; another
//!   revision builds it through a protobuf `Struct`.)

pub mod adapter;
pub mod envelope;
pub mod get;
pub mod json;
pub mod request;
pub mod response;
pub mod status_details;

use bytes::Bytes;

// The status codes are moving to `crate::status`; everything in this module reaches them
// through this one import so that the move is a one-line change.
pub use crate::status::Code;

/// The Connect error code names (the protocol's "Error Codes" table), indexed by gRPC number.
/// `OK` is not an error and has no Connect name; it is written as `unknown` should it ever
/// reach an error body, which a caller never lets happen.
const CODE_NAMES: [&str; 17] = [
    "unknown",
    "canceled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// HTTP status of a unary error response, per code (the protocol's "Error Codes" table).
const CODE_HTTP_STATUS: [u16; 17] = [
    500, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
];

/// The Connect name of a code: `"canceled"` (one L, unlike gRPC's `CANCELLED`),
/// `"invalid_argument"`, ...
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code as usize]
}

/// The code a Connect name stands for; `None` for anything else (clients then fall back on the
/// HTTP status, as the protocol says).
pub fn code_from_name(name: &[u8]) -> Option<Code> {
    let index = CODE_NAMES
        .iter()
        .skip(1)
        .position(|known| known.as_bytes() == name)?;
    Code::from_u32(index as u32 + 1)
}

/// The HTTP status a unary error with this code is answered with.
pub fn http_status(code: Code) -> u16 {
    CODE_HTTP_STATUS[code as usize]
}

/// The code for a non-Connect, non-gRPC HTTP reply (the protocol's "HTTP to Error Code" table,
/// a superset of gRPC's `http-grpc-status-mapping.md` that agrees with it where gRPC names a
/// specific code). Used when the upstream answers with something other than gRPC.
pub fn code_from_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A Connect error decided by the proxy itself: a refused request, or a broken upstream reply.
/// The message is fixed text: nothing from the request is reflected into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: &'static str,
}

impl ConnectError {
    pub const fn new(code: Code, message: &'static str) -> Self {
        ConnectError { code, message }
    }

    /// The HTTP status a unary call answers this error with.
    pub fn http_status(&self) -> u16 {
        http_status(self.code)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl std::error::Error for ConnectError {}

/// The shape of a Connect call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `POST` with `application/<codec>`: the body is the bare message.
    Unary,
    /// `GET` with the message in the query; otherwise a unary call.
    UnaryGet,
    /// `POST` with `application/connect+<codec>`: enveloped messages both ways.
    Streaming,
}

/// The message codec, which names the content types on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
    /// Any other codec name (lower-cased RFC 6838 `restricted-name` characters), passed to the
    /// upstream as `application/grpc+<name>` for backends that registered such a codec.
    Other(Bytes),
}

impl Codec {
    /// Parse a codec name as it appears after `application/`, `application/connect+` or in
    /// the GET `encoding` parameter. Case-insensitive, as media types are.
    pub fn parse(name: &[u8]) -> Option<Codec> {
        if !is_codec_name(name) {
            return None;
        }
        Some(if name.eq_ignore_ascii_case(b"proto") {
            Codec::Proto
        } else if name.eq_ignore_ascii_case(b"json") {
            Codec::Json
        } else {
            Codec::Other(Bytes::from(name.to_ascii_lowercase()))
        })
    }

    pub fn name(&self) -> &[u8] {
        match self {
            Codec::Proto => b"proto",
            Codec::Json => b"json",
            Codec::Other(name) => name,
        }
    }
}

/// RFC 6838 limits a media subtype to 127 characters; a codec name is part of one.
pub const CODEC_NAME_BYTES_MAX: usize = 127;

/// RFC 6838 §4.2 `restricted-name` characters: the codec is copied into the upstream content
/// type and the response's, so it must not carry separators or control bytes. `+` is left out:
/// `application/connect+proto` already uses it as the separator.
fn is_codec_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= CODEC_NAME_BYTES_MAX
        && name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.')
        })
}

/// What the classifier found a Connect request to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectCall {
    pub kind: CallKind,
    pub codec: Codec,
}

impl ConnectCall {
    pub fn is_streaming(&self) -> bool {
        self.kind == CallKind::Streaming
    }

    /// The codec is JSON, so messages (and a GET's un-base64'd `message`) are text.
    pub fn is_json(&self) -> bool {
        self.codec == Codec::Json
    }

    /// `content-type` of the upstream gRPC request: `application/grpc+<codec>`.
    pub fn upstream_content_type(&self) -> Bytes {
        match &self.codec {
            Codec::Proto => Bytes::from_static(b"application/grpc+proto"),
            Codec::Json => Bytes::from_static(b"application/grpc+json"),
            Codec::Other(name) => concat(b"application/grpc+", name),
        }
    }

    /// `content-type` of a successful response: `application/<codec>` for unary calls,
    /// `application/connect+<codec>` for streams (errors of unary calls are always
    /// `application/json`).
    pub fn response_content_type(&self) -> Bytes {
        match (self.is_streaming(), &self.codec) {
            (false, Codec::Proto) => Bytes::from_static(b"application/proto"),
            (false, Codec::Json) => Bytes::from_static(b"application/json"),
            (true, Codec::Proto) => Bytes::from_static(b"application/connect+proto"),
            (true, Codec::Json) => Bytes::from_static(b"application/connect+json"),
            (false, Codec::Other(name)) => concat(b"application/", name),
            (true, Codec::Other(name)) => concat(b"application/connect+", name),
        }
    }
}

fn concat(prefix: &[u8], name: &[u8]) -> Bytes {
    let mut value = Vec::with_capacity(prefix.len() + name.len());
    value.extend_from_slice(prefix);
    value.extend_from_slice(name);
    Bytes::from(value)
}

/// Which protocol a request speaks, as far as its head tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestProtocol {
    /// `application/grpc-web…`: `grpc_web::classify_content_type` takes it from here (and its
    /// `None` is a 415).
    GrpcWeb,
    /// Native gRPC (`application/grpc`, `application/grpc+…`), for the HTTP/2 downstream.
    Grpc,
    /// A Connect call.
    Connect(ConnectCall),
    /// A Connect request refused before any upstream call: answer it with
    /// [`response::error_response`] (a JSON error, or a stream holding only the end-of-stream
    /// envelope).
    ConnectRefused(ConnectCall, ConnectError),
    /// Anything else: 415 for a POST, the caller's own routes or 405 otherwise.
    Unknown,
}

const VERSION_REFUSED: ConnectError = ConnectError::new(
    Code::InvalidArgument,
    "connect-protocol-version must be \"1\"",
);

/// Classify a request by its method, its target (path and query), its `content-type` and its
/// `connect-protocol-version` header (the first one, if several were sent).
///
/// - `POST application/connect+<codec>` is a Connect stream.
/// - `POST application/proto` and `application/json` are Connect unary calls; so is
///   `application/<other codec>` when `connect-protocol-version` is present. Without it such a
///   type is [`RequestProtocol::Unknown`]: the header is what marks an unknown media type as
///   Connect (connect-go accepts only the codecs it has, and a proxy has them all).
/// - A `connect-protocol-version` other than `1` refuses the call (`invalid_argument`), as
///   connect-go and connect-es do.
/// - `GET` with a query naming `connect`, `encoding` or `message` is a Connect unary GET; its
///   query is checked here (missing `encoding` or `message`, a bad `connect`, a repeated
///   parameter refuse it) but the message itself is decoded later, when
///   [`request::translate_request_head`] calls [`get::parse`].
/// - Media type parameters (`; charset=utf-8`) are ignored; type names are case-insensitive.
pub fn classify(
    method: &[u8],
    target: &[u8],
    content_type: Option<&[u8]>,
    protocol_version: Option<&[u8]>,
) -> RequestProtocol {
    match method {
        b"POST" => classify_post(content_type, protocol_version),
        b"GET" => classify_get(query_of(target)),
        _ => RequestProtocol::Unknown,
    }
}

fn classify_post(content_type: Option<&[u8]>, protocol_version: Option<&[u8]>) -> RequestProtocol {
    let Some(content_type) = content_type else {
        return RequestProtocol::Unknown;
    };
    let media = trim_ows(before_semicolon(content_type));
    let Some(subtype) = strip_prefix_ignore_case(media, b"application/") else {
        return RequestProtocol::Unknown;
    };
    if let Some(rest) = strip_prefix_ignore_case(subtype, b"grpc") {
        return match rest {
            [] | [b'+', ..] => RequestProtocol::Grpc,
            _ if strip_prefix_ignore_case(rest, b"-web").is_some() => RequestProtocol::GrpcWeb,
            _ => RequestProtocol::Unknown,
        };
    }
    // `application/connect…` names a stream or nothing: a unary codec of that name would be
    // a client's mistake, not a codec.
    let (kind, codec_name) = match strip_prefix_ignore_case(subtype, b"connect") {
        Some([b'+', codec @ ..]) => (CallKind::Streaming, codec),
        Some(_) => return RequestProtocol::Unknown,
        None => (CallKind::Unary, subtype),
    };
    let Some(codec) = Codec::parse(codec_name) else {
        return RequestProtocol::Unknown;
    };
    let known = matches!(codec, Codec::Proto | Codec::Json);
    if kind == CallKind::Unary && !known && protocol_version.is_none() {
        return RequestProtocol::Unknown;
    }
    let call = ConnectCall { kind, codec };
    match protocol_version {
        Some(version) if trim_ows(version) != b"1" => {
            RequestProtocol::ConnectRefused(call, VERSION_REFUSED)
        }
        _ => RequestProtocol::Connect(call),
    }
}

fn classify_get(query: &[u8]) -> RequestProtocol {
    let Some(scan) = get::Scan::find(query) else {
        return RequestProtocol::Unknown;
    };
    // The error of a refused GET is JSON whatever its codec, so any codec stands in for one the
    // query could not name.
    let placeholder = ConnectCall {
        kind: CallKind::UnaryGet,
        codec: Codec::Proto,
    };
    match scan.and_then(|scan| scan.codec()) {
        Ok(codec) => RequestProtocol::Connect(ConnectCall {
            kind: CallKind::UnaryGet,
            codec,
        }),
        Err(error) => RequestProtocol::ConnectRefused(placeholder, error),
    }
}

/// The query of a request target (after the first `?`), empty when there is none. A fragment
/// never reaches a server, so none is stripped.
pub fn query_of(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'?') {
        Some(at) => &target[at + 1..],
        None => &[],
    }
}

/// The `:path` of the upstream call: a GET's target without its query (a gRPC server routes on
/// the whole `:path`), any other call's target unchanged.
pub fn upstream_path(call: &ConnectCall, target: &Bytes) -> Bytes {
    match (call.kind, target.iter().position(|&b| b == b'?')) {
        (CallKind::UnaryGet, Some(at)) => target.slice(..at),
        _ => target.clone(),
    }
}

/// Request headers a CORS preflight must allow for Connect clients (connect-es `cors.allowedHeaders`
/// less its gRPC-Web entries). With the default policy ringway echoes the preflight's
/// `access-control-request-headers`, which covers these; a fixed `--cors-allow-headers` list must
/// include them.
pub const CORS_ALLOW_HEADERS: &[&str] = &[
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "content-encoding",
    "accept-encoding",
];

/// Methods Connect uses: `POST` for every call, `GET` for side-effect-free unary calls.
pub const CORS_ALLOW_METHODS: &[&str] = &["GET", "POST"];

/// Response headers to expose to scripts on every response (connect-es `cors.exposedHeaders`):
/// the gRPC-Web status headers (the same listener serves both), and the encodings. Each
/// response's own metadata, `trailer-…` names included, must be exposed as well: the CORS
/// expose list has no wildcard for credentialed requests and no prefix match at all, so the
/// caller passes the names of [`response::CompleteResponse::headers`] (or of the streaming head)
/// to `CorsPolicy::actual_headers`, which does that.
pub const CORS_EXPOSE_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "content-encoding",
    "connect-content-encoding",
];

fn before_semicolon(value: &[u8]) -> &[u8] {
    match value.iter().position(|&b| b == b';') {
        Some(end) => &value[..end],
        None => value,
    }
}

/// Trim HTTP optional whitespace (SP, HTAB) from both ends.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&value[prefix.len()..])
    } else {
        None
    }
}

/// The value of a hex digit, either case.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 `token`: content codings and header names.
fn is_token(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|&b| {
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
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(content_type: &[u8], version: Option<&[u8]>) -> RequestProtocol {
        classify(b"POST", b"/svc/M", Some(content_type), version)
    }

    fn connect(kind: CallKind, codec: Codec) -> RequestProtocol {
        RequestProtocol::Connect(ConnectCall { kind, codec })
    }

    #[test]
    fn code_names_and_statuses_follow_the_protocol_tables() {
        let table = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (code, name, status) in table {
            assert_eq!(code_name(code), name);
            assert_eq!(http_status(code), status, "{name}");
            assert_eq!(code_from_name(name.as_bytes()), Some(code));
        }
        // OK is not a Connect error: it never names one, and no name gives it.
        assert_eq!(code_name(Code::Ok), "unknown");
        assert_eq!(http_status(Code::Ok), 500);
        for bad in [
            &b""[..],
            b"ok",
            b"OK",
            b"Canceled",
            b"cancelled",
            b"code_17",
            b"unknown ",
        ] {
            assert_eq!(code_from_name(bad), None, "{bad:?}");
        }
        assert_eq!(code_from_name(b"unknown"), Some(Code::Unknown));
    }

    #[test]
    fn http_status_to_code() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (431, Code::Unknown),
            (500, Code::Unknown),
            (0, Code::Unknown),
            (u16::MAX, Code::Unknown),
        ];
        for (status, code) in table {
            assert_eq!(code_from_http_status(status), code, "{status}");
        }
    }

    #[test]
    fn classifies_unary_posts() {
        assert_eq!(
            post(b"application/proto", None),
            connect(CallKind::Unary, Codec::Proto)
        );
        assert_eq!(
            post(b"application/json", Some(b"1")),
            connect(CallKind::Unary, Codec::Json)
        );
        assert_eq!(
            post(b" Application/JSON; charset=utf-8 ", None),
            connect(CallKind::Unary, Codec::Json)
        );
        // A custom codec needs the protocol header, lower-cased on the way.
        assert_eq!(post(b"application/Thrift", None), RequestProtocol::Unknown);
        assert_eq!(
            post(b"application/Thrift", Some(b"1")),
            connect(CallKind::Unary, Codec::Other(Bytes::from_static(b"thrift")))
        );
        // A form post (sent cross-origin without a preflight) is never a call.
        assert_eq!(
            post(b"application/x-www-form-urlencoded", None),
            RequestProtocol::Unknown
        );
        assert_eq!(
            post(b"application/octet-stream", None),
            RequestProtocol::Unknown
        );
    }

    #[test]
    fn classifies_streams() {
        assert_eq!(
            post(b"application/connect+proto", None),
            connect(CallKind::Streaming, Codec::Proto)
        );
        assert_eq!(
            post(b"application/CONNECT+json;charset=utf-8", Some(b"1")),
            connect(CallKind::Streaming, Codec::Json)
        );
        // Streams are unambiguous: a custom codec needs no header.
        assert_eq!(
            post(b"application/connect+cbor", None),
            connect(
                CallKind::Streaming,
                Codec::Other(Bytes::from_static(b"cbor"))
            )
        );
    }

    #[test]
    fn tells_grpc_and_grpc_web_apart() {
        for ct in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"Application/GRPC;x=1",
        ] {
            assert_eq!(post(ct, None), RequestProtocol::Grpc, "{ct:?}");
        }
        for ct in [
            &b"application/grpc-web"[..],
            b"application/grpc-web+proto",
            b"application/grpc-web-text",
            b"application/grpc-webx",
        ] {
            assert_eq!(post(ct, None), RequestProtocol::GrpcWeb, "{ct:?}");
        }
        // Even with the Connect header, nothing starting with `grpc` is a Connect codec.
        assert_eq!(
            post(b"application/grpcx", Some(b"1")),
            RequestProtocol::Unknown
        );
    }

    #[test]
    fn refuses_a_wrong_protocol_version() {
        for version in [&b"2"[..], b"", b"1.0", b"v1", b"1,1"] {
            assert_eq!(
                post(b"application/proto", Some(version)),
                RequestProtocol::ConnectRefused(
                    ConnectCall {
                        kind: CallKind::Unary,
                        codec: Codec::Proto
                    },
                    VERSION_REFUSED
                ),
                "{version:?}"
            );
        }
        assert!(matches!(
            post(b"application/connect+json", Some(b"0")),
            RequestProtocol::ConnectRefused(
                ConnectCall {
                    kind: CallKind::Streaming,
                    ..
                },
                _
            )
        ));
        assert_eq!(
            post(b"application/proto", Some(b" 1 ")),
            connect(CallKind::Unary, Codec::Proto)
        );
    }

    #[test]
    fn hostile_content_types_are_unknown() {
        let long = [b"application/".as_slice(), &[b'a'; 200]].concat();
        let long_stream = [b"application/connect+".as_slice(), &[b'a'; 128]].concat();
        let refused: [&[u8]; 16] = [
            b"",
            b";",
            b"application/",
            b"application/connect+",
            b"application/connect",
            b"application/connectx",
            b"application/pro to",
            b"application/proto\r\nx-evil: 1",
            b"application/\0",
            b"application/connect+proto+json",
            b"application/a/b",
            b"text/plain",
            b"applicationproto",
            b"application/\xc3\xa9",
            &long,
            &long_stream,
        ];
        for ct in refused {
            assert_eq!(post(ct, Some(b"1")), RequestProtocol::Unknown, "{ct:?}");
        }
        assert_eq!(
            classify(b"POST", b"/", None, Some(b"1")),
            RequestProtocol::Unknown
        );
        for method in [&b"PUT"[..], b"HEAD", b"OPTIONS", b"post", b""] {
            assert_eq!(
                classify(
                    method,
                    b"/s/M?encoding=json&message=x",
                    Some(b"application/proto"),
                    None
                ),
                RequestProtocol::Unknown
            );
        }
    }

    #[test]
    fn classifies_gets() {
        let get = |target: &[u8]| classify(b"GET", target, None, None);
        assert_eq!(
            get(b"/s/M?connect=v1&encoding=proto&base64=1&message=CgM"),
            connect(CallKind::UnaryGet, Codec::Proto)
        );
        assert_eq!(
            get(b"/s/M?message=%7B%7D&encoding=JSON&other=1"),
            connect(CallKind::UnaryGet, Codec::Json)
        );
        // Not Connect at all: the caller's own routes (health) or 405.
        assert_eq!(get(b"/healthz"), RequestProtocol::Unknown);
        assert_eq!(get(b"/s/M?a=1&b=2"), RequestProtocol::Unknown);
        assert_eq!(get(b"/s/M?"), RequestProtocol::Unknown);
        // Connect, but refused before any call.
        for target in [
            &b"/s/M?connect=v1&message=x"[..],
            b"/s/M?encoding=json",
            b"/s/M?connect=v2&encoding=json&message=x",
            b"/s/M?encoding=json&encoding=proto&message=x",
            b"/s/M?encoding=json&message=x&message=y",
            b"/s/M?encoding=%ZZ&message=x",
        ] {
            assert!(
                matches!(get(target), RequestProtocol::ConnectRefused(..)),
                "{target:?}"
            );
        }
    }

    #[test]
    fn content_types_and_paths() {
        let call = |kind, codec| ConnectCall { kind, codec };
        let thrift = Codec::Other(Bytes::from_static(b"thrift"));
        let cases = [
            (
                call(CallKind::Unary, Codec::Proto),
                "application/grpc+proto",
                "application/proto",
            ),
            (
                call(CallKind::UnaryGet, Codec::Json),
                "application/grpc+json",
                "application/json",
            ),
            (
                call(CallKind::Streaming, Codec::Proto),
                "application/grpc+proto",
                "application/connect+proto",
            ),
            (
                call(CallKind::Streaming, Codec::Json),
                "application/grpc+json",
                "application/connect+json",
            ),
            (
                call(CallKind::Unary, thrift.clone()),
                "application/grpc+thrift",
                "application/thrift",
            ),
            (
                call(CallKind::Streaming, thrift),
                "application/grpc+thrift",
                "application/connect+thrift",
            ),
        ];
        for (call, upstream, response) in cases {
            assert_eq!(call.upstream_content_type(), upstream);
            assert_eq!(call.response_content_type(), response);
        }
        let target = Bytes::from_static(b"/s/M?encoding=json&message=x");
        let get = call(CallKind::UnaryGet, Codec::Json);
        assert_eq!(upstream_path(&get, &target), "/s/M");
        assert_eq!(upstream_path(&get, &Bytes::from_static(b"/s/M")), "/s/M");
        assert_eq!(
            upstream_path(&call(CallKind::Unary, Codec::Json), &target),
            target
        );
        assert_eq!(query_of(b"/a?b?c"), b"b?c");
        assert_eq!(query_of(b"/a"), b"");
    }
}
