//! The upstream gRPC response translated into the Connect response, sans-IO.
//!
//! A gRPC response is a head (`:status 200`, `content-type: application/grpc…`, metadata),
//! length-prefixed messages, and trailers carrying `grpc-status`; or, when the call fails at
//! once, a single "trailers-only" head. Connect answers:
//!
//! - **unary**: one HTTP response whose status depends on the outcome: `200` with the bare
//!   message, the head's metadata as headers and the trailers' as `trailer-…` headers; or the
//!   error's HTTP status with the JSON error. Since the trailers decide the status line,
//!   nothing can be written before they arrive: [`UnaryResponse`] holds the (single, bounded)
//!   message and the head's metadata until then, and hands back a [`CompleteResponse`].
//! - **streaming**: `200` with `application/connect+<codec>` and the metadata at once, the
//!   messages relayed as they come (a gRPC message *is* a Connect envelope, once its flags are
//!   checked), and the end-of-stream envelope (flag `0x02`, JSON `{"error":…,"metadata":…}`)
//!   built from the trailers: [`StreamingResponse`].
//!
//! The status comes from `grpc-status` (a code outside gRPC's table is `unknown`); the message
//! from `grpc-message`, percent-decoded (an invalid escape leaves it as received, which
//! `PROTOCOL-HTTP2.md` prefers to losing it), or else from the `google.rpc.Status` in
//! `grpc-status-details-bin`, whose details become the error's `details`. A details trailer that
//! does not decode is dropped and the error stands without details (connect-go turns the whole
//! error into `internal` instead; the backend's code is the more useful thing to keep).
//! Replies that are not gRPC at all map by HTTP status ([`super::code_from_http_status`]).
//!
//! Metadata is every response header except the gRPC transport's own (`grpc-…`), Connect's
//! reserved `connect-…`, pseudo-headers, and the ones that describe the HTTP message itself
//! (`content-type`, `content-length`, `content-encoding`, hop-by-hop headers, `trailer`). A
//! trailers-only reply's fields are trailers, so its metadata is trailing metadata.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use super::envelope::{
    peek_message_prefix, take_payload, EnvelopeRelay, FLAG_COMPRESSED, FLAG_END_STREAM,
};
use super::json::{self, ErrorFields};
use super::request::FRAME_PREFIX_BYTES;
use super::status_details;
use super::{before_semicolon, code_from_http_status, hex_value, http_status};
use super::{strip_prefix_ignore_case, trim_ows};
use super::{CallKind, Code, ConnectCall, ConnectError};

/// A response header: lower-case name, value.
pub type Header = (Bytes, Bytes);

/// A whole response, decided at once: a unary call's, or a stream that ended with its head.
/// The caller adds its framing (`content-length` or chunking, `connection`) and CORS headers,
/// exposing [`header_names`](Self::header_names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteResponse {
    pub status: u16,
    /// In order, `content-type` first; names lower-case.
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl CompleteResponse {
    pub fn header_names(&self) -> impl Iterator<Item = &[u8]> {
        self.headers.iter().map(|(name, _)| &name[..])
    }
}

/// Whether a response header is passed to the client as metadata (leading, or trailing).
pub fn is_forwarded_response_header(name: &[u8]) -> bool {
    const NOT_METADATA: &[&[u8]] = &[
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
    ];
    !(name.is_empty()
        || name[0] == b':'
        || strip_prefix_ignore_case(name, b"grpc-").is_some()
        || strip_prefix_ignore_case(name, b"connect-").is_some()
        || NOT_METADATA.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// The answer to a call that failed before the upstream's response head (refused by the proxy,
/// no endpoint, connect failure, deadline…): a unary call's JSON error with its HTTP status, or
/// a stream's `200` holding only the end-of-stream envelope.
pub fn error_response(call: &ConnectCall, code: Code, message: &str) -> CompleteResponse {
    let error = CallError::local(code, message);
    if call.is_streaming() {
        return stream_ended_at_head(call.response_content_type(), None, Some(&error), &[]);
    }
    let mut headers = Vec::with_capacity(2);
    headers.push(static_header(b"content-type", b"application/json"));
    if call.kind == CallKind::UnaryGet {
        headers.push(static_header(b"vary", b"accept-encoding"));
    }
    unary_error(&error, headers)
}

/// The unary side: collects the upstream response until its trailers decide the answer.
#[derive(Debug)]
pub struct UnaryResponse {
    content_type: Bytes,
    get: bool,
    message_bytes_max: usize,
    /// The head's metadata, copied: it is written after the trailers arrive.
    leading: Vec<Header>,
    /// `grpc-encoding` of the response, unless `identity`.
    encoding: Option<Bytes>,
    accept_encoding: Option<Bytes>,
    /// A message frame cut by a DATA frame boundary.
    partial: BytesMut,
    message: Option<(bool, Bytes)>,
}

impl UnaryResponse {
    /// `message_bytes_max` bounds the response message held (and so the memory of a call).
    pub fn new(call: &ConnectCall, message_bytes_max: usize) -> Self {
        UnaryResponse {
            content_type: call.response_content_type(),
            get: call.kind == CallKind::UnaryGet,
            message_bytes_max,
            leading: Vec::new(),
            encoding: None,
            accept_encoding: None,
            partial: BytesMut::new(),
            message: None,
        }
    }

    /// The upstream's response head. `end_of_stream` says the stream ended with it (a
    /// trailers-only reply). `Some` when that decided the call (trailers-only, or not a gRPC
    /// reply); `None` when the body and trailers follow.
    pub fn head<'a, I>(
        &mut self,
        status: u16,
        headers: I,
        end_of_stream: bool,
    ) -> Option<CompleteResponse>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let head = read_fields(headers);
        if let Some(error) = not_grpc(status, &head, end_of_stream) {
            return Some(self.error_reply(&error, &[]));
        }
        self.accept_encoding = head.accept_encoding.map(Bytes::copy_from_slice);
        if end_of_stream {
            return Some(self.finish(&head));
        }
        self.encoding = head.encoding.map(Bytes::copy_from_slice);
        self.leading = head
            .metadata
            .iter()
            .map(|&(n, v)| metadata_header(b"", n, v))
            .collect();
        None
    }

    /// A DATA frame of the response. `Err` when it ends the call (more than one message, a
    /// message over the limit, a broken frame): cancel the upstream stream and send that.
    pub fn data(&mut self, data: Bytes) -> Result<(), CompleteResponse> {
        self.take_frames(data)
            .map_err(|error| self.error_reply(&CallError::local(error.code, error.message), &[]))
    }

    fn take_frames(&mut self, mut data: Bytes) -> Result<(), ConnectError> {
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(&data);
            data = self.partial.split().freeze();
        }
        let compressed_allowed = self.encoding.is_some();
        while !data.is_empty() {
            let prefix = peek_message_prefix(&data, self.message_bytes_max, compressed_allowed)
                .map_err(|e| e.from_upstream())?;
            match prefix {
                Some((flags, len)) if data.len() - FRAME_PREFIX_BYTES >= len => {
                    let payload = take_payload(&mut data, len);
                    if self.message.is_some() {
                        return Err(EXTRA_MESSAGE);
                    }
                    self.message = Some((flags & FLAG_COMPRESSED != 0, payload));
                }
                // A frame not all here yet; its prefix, as far as it goes, was checked, so
                // what is held is bounded by the message limit.
                _ => {
                    self.partial.extend_from_slice(&data);
                    break;
                }
            }
        }
        Ok(())
    }

    /// The upstream's trailers: the call is decided.
    pub fn trailers<'a, I>(&mut self, trailers: I) -> CompleteResponse
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let fields = read_fields(trailers);
        self.finish(&fields)
    }

    /// The call failed after the head (reset, deadline, the upstream stream ended without
    /// trailers…): the error, with whatever leading metadata had arrived.
    pub fn failed(&mut self, code: Code, message: &str) -> CompleteResponse {
        self.error_reply(&CallError::local(code, message), &[])
    }

    fn finish(&mut self, fields: &Fields<'_>) -> CompleteResponse {
        if let Some(error) = fields.error() {
            return self.error_reply(&error, &fields.metadata);
        }
        let outcome = match self.message.take() {
            _ if !self.partial.is_empty() => Err(CUT_MESSAGE),
            None => Err(NO_MESSAGE),
            Some((true, _)) if self.encoding.is_none() => Err(COMPRESSED_WITHOUT_ENCODING),
            Some(message) => Ok(message),
        };
        match outcome {
            Ok((compressed, message)) => self.success(compressed, message, &fields.metadata),
            Err(error) => self.error_reply(
                &CallError::local(error.code, error.message),
                &fields.metadata,
            ),
        }
    }

    fn success(
        &mut self,
        compressed: bool,
        message: Bytes,
        trailing: &[(&[u8], &[u8])],
    ) -> CompleteResponse {
        let mut headers = Vec::with_capacity(4 + self.leading.len() + trailing.len());
        headers.push((
            Bytes::from_static(b"content-type"),
            self.content_type.clone(),
        ));
        if let (true, Some(encoding)) = (compressed, &self.encoding) {
            headers.push((Bytes::from_static(b"content-encoding"), encoding.clone()));
        }
        self.push_common(&mut headers, trailing);
        CompleteResponse {
            status: 200,
            headers,
            body: message,
        }
    }

    fn error_reply(
        &mut self,
        error: &CallError<'_>,
        trailing: &[(&[u8], &[u8])],
    ) -> CompleteResponse {
        let mut headers = Vec::with_capacity(3 + self.leading.len() + trailing.len());
        headers.push(static_header(b"content-type", b"application/json"));
        self.push_common(&mut headers, trailing);
        unary_error(error, headers)
    }

    /// What success and error answers share: the accepted encodings, `vary` for a GET, and
    /// the metadata.
    fn push_common(&mut self, headers: &mut Vec<Header>, trailing: &[(&[u8], &[u8])]) {
        if let Some(accept) = &self.accept_encoding {
            headers.push((Bytes::from_static(b"accept-encoding"), accept.clone()));
        }
        if self.get {
            // The body depends on the client's accept-encoding, and a GET may be cached.
            headers.push(static_header(b"vary", b"accept-encoding"));
        }
        headers.append(&mut self.leading);
        headers.extend(
            trailing
                .iter()
                .map(|&(n, v)| metadata_header(b"trailer-", n, v)),
        );
    }
}

const EXTRA_MESSAGE: ConnectError = ConnectError::new(
    Code::Unimplemented,
    "upstream sent more than one response message to a unary call",
);
const NO_MESSAGE: ConnectError = ConnectError::new(
    Code::Unimplemented,
    "upstream sent no response message to a unary call",
);
const CUT_MESSAGE: ConnectError =
    ConnectError::new(Code::Internal, "upstream ended the call inside a message");
const COMPRESSED_WITHOUT_ENCODING: ConnectError = ConnectError::new(
    Code::Internal,
    "upstream sent a compressed message without grpc-encoding",
);

/// How a stream's head was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamingHead {
    /// Write `200` with these headers, then relay the body.
    Stream(Vec<Header>),
    /// The call ended with its head (trailers-only, or not a gRPC reply): write this whole
    /// response.
    Complete(CompleteResponse),
}

/// How a stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Write this end-of-stream envelope as the last bytes of the body, then end it cleanly.
    Envelope(Bytes),
    /// The client already holds part of an envelope, so no well-formed ending is possible:
    /// end the body abruptly (HTTP/1.1: close without the last chunk; HTTP/2: `RST_STREAM`)
    /// so that the client reports an error instead of a truncated success.
    Abort,
}

/// The streaming side: relays the messages and ends with the end-of-stream envelope.
#[derive(Debug)]
pub struct StreamingResponse {
    content_type: Bytes,
    message_bytes_max: usize,
    relay: EnvelopeRelay,
}

impl StreamingResponse {
    /// `message_bytes_max` bounds each relayed message (the relay holds none of them).
    pub fn new(call: &ConnectCall, message_bytes_max: usize) -> Self {
        StreamingResponse {
            content_type: call.response_content_type(),
            message_bytes_max,
            relay: EnvelopeRelay::messages(message_bytes_max, false),
        }
    }

    /// The upstream's response head; `end_of_stream` as for [`UnaryResponse::head`].
    pub fn head<'a, I>(&mut self, status: u16, headers: I, end_of_stream: bool) -> StreamingHead
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let head = read_fields(headers);
        let accept = head.accept_encoding;
        if let Some(error) = not_grpc(status, &head, end_of_stream) {
            let end = stream_ended_at_head(self.content_type.clone(), accept, Some(&error), &[]);
            return StreamingHead::Complete(end);
        }
        if end_of_stream {
            let error = head.error();
            let end = stream_ended_at_head(
                self.content_type.clone(),
                accept,
                error.as_ref(),
                &head.metadata,
            );
            return StreamingHead::Complete(end);
        }
        self.relay = EnvelopeRelay::messages(self.message_bytes_max, head.encoding.is_some());
        let mut headers = Vec::with_capacity(3 + head.metadata.len());
        headers.push((
            Bytes::from_static(b"content-type"),
            self.content_type.clone(),
        ));
        if let Some(encoding) = head.encoding {
            headers.push((
                Bytes::from_static(b"connect-content-encoding"),
                Bytes::copy_from_slice(encoding),
            ));
        }
        if let Some(accept) = accept {
            headers.push((
                Bytes::from_static(b"connect-accept-encoding"),
                Bytes::copy_from_slice(accept),
            ));
        }
        headers.extend(
            head.metadata
                .iter()
                .map(|&(n, v)| metadata_header(b"", n, v)),
        );
        StreamingHead::Stream(headers)
    }

    /// A DATA frame of the response: pushes the pieces to forward to `out` (see
    /// [`EnvelopeRelay::relay`]). `Err` when the upstream broke the framing: forward `out`, then
    /// end the stream as told, and cancel the upstream stream.
    pub fn data(&mut self, data: Bytes, out: &mut Vec<Bytes>) -> Result<(), StreamEnd> {
        self.relay.relay(data, out).map_err(|error| {
            let error = error.from_upstream();
            self.end(Some(&CallError::local(error.code, error.message)), &[])
        })
    }

    /// The upstream's trailers: the end-of-stream envelope.
    pub fn trailers<'a, I>(&mut self, trailers: I) -> StreamEnd
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let fields = read_fields(trailers);
        let error = fields.error();
        // An upstream that stopped inside a message and then reported success still failed.
        let cut = CallError::local(CUT_MESSAGE.code, CUT_MESSAGE.message);
        let error = match (self.relay.finish(), error) {
            (Ok(()), error) => error,
            (Err(_), Some(error)) => Some(error),
            (Err(_), None) => Some(cut),
        };
        self.end(error.as_ref(), &fields.metadata)
    }

    /// The call failed after the head was written (reset, deadline, the upstream stream ended
    /// without trailers…). Before the head, use [`error_response`].
    pub fn failed(&mut self, code: Code, message: &str) -> StreamEnd {
        self.end(Some(&CallError::local(code, message)), &[])
    }

    fn end(&self, error: Option<&CallError<'_>>, metadata: &[(&[u8], &[u8])]) -> StreamEnd {
        if !self.relay.at_boundary() {
            return StreamEnd::Abort;
        }
        StreamEnd::Envelope(end_stream_envelope(error, metadata))
    }
}

/// A stream answered entirely by its head: `200`, its content type, the end-of-stream envelope.
fn stream_ended_at_head(
    content_type: Bytes,
    accept_encoding: Option<&[u8]>,
    error: Option<&CallError<'_>>,
    metadata: &[(&[u8], &[u8])],
) -> CompleteResponse {
    let mut headers = vec![(Bytes::from_static(b"content-type"), content_type)];
    if let Some(accept) = accept_encoding {
        headers.push((
            Bytes::from_static(b"connect-accept-encoding"),
            Bytes::copy_from_slice(accept),
        ));
    }
    CompleteResponse {
        status: 200,
        headers,
        body: end_stream_envelope(error, metadata),
    }
}

/// The end-of-stream envelope: flag `0x02`, length, JSON.
fn end_stream_envelope(error: Option<&CallError<'_>>, metadata: &[(&[u8], &[u8])]) -> Bytes {
    let mut out = vec![0u8; FRAME_PREFIX_BYTES];
    match error {
        Some(error) => {
            error.with_fields(|fields| json::write_end_stream(&mut out, Some(fields), metadata))
        }
        None => json::write_end_stream(&mut out, None, metadata),
    }
    let Ok(len) = u32::try_from(out.len() - FRAME_PREFIX_BYTES) else {
        // Over 4 GiB of trailers cannot be framed; no h2 peer gets near it, but a forged
        // length would desynchronise the client.
        let oversized = CallError::local(Code::Internal, "upstream trailers too large to relay");
        return end_stream_envelope(Some(&oversized), &[]);
    };
    let [a, b, c, d] = len.to_be_bytes();
    out[..FRAME_PREFIX_BYTES].copy_from_slice(&[FLAG_END_STREAM, a, b, c, d]);
    Bytes::from(out)
}

/// A unary error answer: the error's HTTP status and JSON body, after `headers`.
fn unary_error(error: &CallError<'_>, headers: Vec<Header>) -> CompleteResponse {
    let mut body = Vec::with_capacity(64 + error.message.len());
    error.with_fields(|fields| json::write_error(&mut body, fields));
    CompleteResponse {
        status: http_status(error.code),
        headers,
        body: Bytes::from(body),
    }
}

fn static_header(name: &'static [u8], value: &'static [u8]) -> Header {
    (Bytes::from_static(name), Bytes::from_static(value))
}

/// A metadata header under `prefix` (`""` or `"trailer-"`), name lower-cased.
fn metadata_header(prefix: &[u8], name: &[u8], value: &[u8]) -> Header {
    let mut full = Vec::with_capacity(prefix.len() + name.len());
    full.extend_from_slice(prefix);
    full.extend(name.iter().map(u8::to_ascii_lowercase));
    (Bytes::from(full), Bytes::copy_from_slice(value))
}

/// The call's error, before it is written.
#[derive(Debug, Clone)]
struct CallError<'a> {
    code: Code,
    /// Decoded text.
    message: Cow<'a, [u8]>,
    /// `grpc-status-details-bin` as received (base64).
    details_bin: Option<&'a [u8]>,
}

impl<'a> CallError<'a> {
    fn local(code: Code, message: &'a str) -> Self {
        // OK is not an error; a caller passing it has lost the real code.
        let code = if code == Code::Ok {
            Code::Unknown
        } else {
            code
        };
        CallError {
            code,
            message: Cow::Borrowed(message.as_bytes()),
            details_bin: None,
        }
    }

    /// Decode the details, then hand the error's JSON fields to `write`.
    fn with_fields<R>(&self, write: impl FnOnce(&ErrorFields<'_>) -> R) -> R {
        let decoded = self
            .details_bin
            .and_then(status_details::decode_details_bin);
        let status = decoded
            .as_deref()
            .and_then(|bytes| status_details::parse_status(bytes).ok());
        let (message, details) = match &status {
            Some(status) if self.message.is_empty() => (status.message, &status.details[..]),
            Some(status) => (&self.message[..], &status.details[..]),
            None => (&self.message[..], &[][..]),
        };
        write(&ErrorFields {
            code: self.code,
            message,
            details,
        })
    }
}

/// What a head or trailer section says.
#[derive(Debug, Default)]
struct Fields<'a> {
    grpc_content_type: bool,
    encoding: Option<&'a [u8]>,
    accept_encoding: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    message: Option<&'a [u8]>,
    details_bin: Option<&'a [u8]>,
    metadata: Vec<(&'a [u8], &'a [u8])>,
}

/// One pass over a head or trailers (the first of repeated gRPC fields counts).
fn read_fields<'a, I>(pairs: I) -> Fields<'a>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut fields = Fields::default();
    for (name, value) in pairs {
        if name.eq_ignore_ascii_case(b"content-type") {
            fields.grpc_content_type |= is_grpc_content_type(value);
        } else if is_forwarded_response_header(name) {
            fields.metadata.push((name, value));
        } else if let Some(slot) = fields.grpc_slot(name) {
            slot.get_or_insert(value);
        }
    }
    if fields
        .encoding
        .is_some_and(|e| e.is_empty() || e.eq_ignore_ascii_case(b"identity"))
    {
        fields.encoding = None;
    }
    fields
}

impl<'a> Fields<'a> {
    fn grpc_slot(&mut self, name: &[u8]) -> Option<&mut Option<&'a [u8]>> {
        let slots: [(&[u8], &mut Option<&'a [u8]>); 5] = [
            (b"grpc-encoding", &mut self.encoding),
            (b"grpc-accept-encoding", &mut self.accept_encoding),
            (b"grpc-status", &mut self.status),
            (b"grpc-message", &mut self.message),
            (b"grpc-status-details-bin", &mut self.details_bin),
        ];
        slots
            .into_iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, slot)| slot)
    }

    /// The call's error; `None` for `grpc-status: 0`.
    fn error(&self) -> Option<CallError<'a>> {
        let Some(status) = self.status else {
            return Some(CallError::local(
                Code::Internal,
                "upstream ended the call without grpc-status",
            ));
        };
        let code = grpc_code(status);
        if code == Code::Ok {
            return None;
        }
        Some(CallError {
            code,
            message: self
                .message
                .map_or(Cow::Borrowed(&[][..]), decode_grpc_message),
            details_bin: self.details_bin,
        })
    }
}

/// `grpc-status` as a code: decimal digits naming one of gRPC's codes; anything else is
/// `unknown`, as gRPC clients read it.
fn grpc_code(value: &[u8]) -> Code {
    let value = trim_ows(value);
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return Code::Unknown;
    }
    let number = value
        .iter()
        .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0'));
    u32::try_from(number)
        .ok()
        .and_then(Code::from_u32)
        .unwrap_or(Code::Unknown)
}

/// Percent-decode `grpc-message`. An invalid escape leaves the whole value as received:
/// `PROTOCOL-HTTP2.md` says a receiver must not drop the message over it.
fn decode_grpc_message(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != b'%' {
            decoded.push(byte);
            rest = tail;
            continue;
        }
        match tail {
            [high, low, after @ ..] => match (hex_value(*high), hex_value(*low)) {
                (Some(high), Some(low)) => {
                    decoded.push(high << 4 | low);
                    rest = after;
                }
                _ => return Cow::Borrowed(raw),
            },
            _ => return Cow::Borrowed(raw),
        }
    }
    Cow::Owned(decoded)
}

/// `application/grpc`, optionally `+codec` or parameters, in any case.
fn is_grpc_content_type(value: &[u8]) -> bool {
    let media = trim_ows(before_semicolon(value));
    matches!(
        strip_prefix_ignore_case(media, b"application/grpc"),
        Some([] | [b'+', ..])
    )
}

/// The error for a reply that is not a gRPC response at all: a non-200 status (by the HTTP to
/// code table), or a 200 without a gRPC content type. A trailers-only reply that left its
/// content type out but carries `grpc-status` is taken as gRPC.
fn not_grpc(status: u16, head: &Fields<'_>, end_of_stream: bool) -> Option<CallError<'static>> {
    if status != 200 {
        let message = format!("upstream returned HTTP {status} instead of a gRPC response");
        return Some(CallError {
            code: code_from_http_status(status),
            message: Cow::Owned(message.into_bytes()),
            details_bin: None,
        });
    }
    if head.grpc_content_type || (end_of_stream && head.status.is_some()) {
        return None;
    }
    Some(CallError::local(
        Code::Unknown,
        "upstream returned a response without a gRPC content type",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::status_details::RETRY_STATUS;
    use crate::connect::Codec;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine as _;

    const MAX: usize = 64;

    fn call(kind: CallKind) -> ConnectCall {
        ConnectCall {
            kind,
            codec: Codec::Proto,
        }
    }

    fn frame(flags: u8, payload: &[u8]) -> Bytes {
        let mut out = vec![flags];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    fn pairs<'a>(list: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    fn headers(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    const GRPC_HEAD: &[(&str, &str)] = &[("content-type", "application/grpc+proto")];

    fn unary_call(
        kind: CallKind,
        head: &[(&str, &str)],
        body: &[Bytes],
        trailers: &[(&str, &str)],
    ) -> CompleteResponse {
        let mut unary = UnaryResponse::new(&call(kind), MAX);
        assert_eq!(unary.head(200, pairs(head), false), None);
        for data in body {
            if let Err(done) = unary.data(data.clone()) {
                return done;
            }
        }
        unary.trailers(pairs(trailers))
    }

    fn text(body: &Bytes) -> &str {
        std::str::from_utf8(body).expect("JSON is UTF-8")
    }

    #[test]
    fn unary_success_byte_exact() {
        let message = frame(0, b"\x0a\x03abc");
        let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
        let head = [
            ("content-type", "application/grpc"),
            ("grpc-accept-encoding", "gzip"),
            ("grpc-encoding", "identity"),
            ("x-request-id", "r1"),
            ("X-Upper", "U"),
        ];
        assert_eq!(unary.head(200, pairs(&head), false), None);
        unary.data(message.clone()).unwrap();
        let response = unary.trailers(pairs(&[
            ("grpc-status", "0"),
            ("grpc-message", ""),
            ("acme-operation-cost", "237"),
            ("x-bin", "AAEC"),
        ]));
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers,
            headers(&[
                ("content-type", "application/proto"),
                ("accept-encoding", "gzip"),
                ("x-request-id", "r1"),
                ("x-upper", "U"),
                ("trailer-acme-operation-cost", "237"),
                ("trailer-x-bin", "AAEC"),
            ])
        );
        assert_eq!(response.body, "\x0a\x03abc");
        // One DATA frame holding the frame: the body is a slice of it, not a copy.
        assert_eq!(response.body.as_ptr(), message[5..].as_ptr());
    }

    #[test]
    fn unary_message_cut_anywhere() {
        let wire = [frame(0, b"hello world").to_vec()].concat();
        for piece in 1..=wire.len() {
            let body: Vec<Bytes> = wire.chunks(piece).map(Bytes::copy_from_slice).collect();
            let response = unary_call(CallKind::Unary, GRPC_HEAD, &body, &[("grpc-status", "0")]);
            assert_eq!(response.status, 200, "piece {piece}");
            assert_eq!(response.body, "hello world");
        }
    }

    #[test]
    fn unary_compressed_response() {
        let head = [
            ("content-type", "application/grpc"),
            ("grpc-encoding", "gzip"),
        ];
        let response = unary_call(
            CallKind::Unary,
            &head,
            &[frame(1, b"\x1f\x8b")],
            &[("grpc-status", "0")],
        );
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers[1],
            (
                Bytes::from_static(b"content-encoding"),
                Bytes::from_static(b"gzip")
            )
        );
        assert_eq!(response.body, &b"\x1f\x8b"[..]);
        // The encoding is named, but this message is not compressed: no content-encoding.
        let response = unary_call(
            CallKind::Unary,
            &head,
            &[frame(0, b"x")],
            &[("grpc-status", "0")],
        );
        assert!(!response.header_names().any(|n| n == b"content-encoding"));
        // A compressed flag with no encoding is the upstream's protocol error.
        let response = unary_call(
            CallKind::Unary,
            GRPC_HEAD,
            &[frame(1, b"x")],
            &[("grpc-status", "0")],
        );
        assert_eq!(response.status, 500);
        assert_eq!(
            text(&response.body),
            r#"{"code":"internal","message":"upstream sent an invalid gRPC message frame"}"#
        );
    }

    #[test]
    fn unary_error_with_details_byte_exact() {
        let details = STANDARD_NO_PAD.encode(RETRY_STATUS);
        let trailers = [
            ("grpc-status", "14"),
            ("grpc-message", "overloaded: back off and retry %E2%9C%93"),
            ("grpc-status-details-bin", details.as_str()),
            ("acme-operation-cost", "237"),
        ];
        let head = [("content-type", "application/grpc"), ("x-request-id", "r1")];
        let response = unary_call(CallKind::Unary, &head, &[frame(0, b"ignored")], &trailers);
        assert_eq!(response.status, 503);
        assert_eq!(
            response.headers,
            headers(&[
                ("content-type", "application/json"),
                ("x-request-id", "r1"),
                ("trailer-acme-operation-cost", "237"),
            ])
        );
        assert_eq!(
            text(&response.body),
            concat!(
                r#"{"code":"unavailable","message":"overloaded: back off and retry ✓","#,
                r#""details":[{"type":"google.rpc.RetryInfo","value":"CgIIPA"}]}"#
            )
        );
        // Without grpc-message, the Status message stands in.
        let trailers = [
            ("grpc-status", "14"),
            ("grpc-status-details-bin", details.as_str()),
        ];
        let response = unary_call(CallKind::Unary, GRPC_HEAD, &[], &trailers);
        assert!(text(&response.body)
            .starts_with(r#"{"code":"unavailable","message":"overloaded","details":"#));
        // Details that do not decode are dropped; the error stands.
        for bad in ["!!!", "CAE", "CgIIPA", "/w"] {
            let trailers = [("grpc-status", "5"), ("grpc-status-details-bin", bad)];
            let response = unary_call(CallKind::Unary, GRPC_HEAD, &[], &trailers);
            assert_eq!(response.status, 404, "{bad}");
            assert_eq!(text(&response.body), r#"{"code":"not_found"}"#, "{bad}");
        }
    }

    #[test]
    fn unary_trailers_only() {
        let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
        let head = [
            ("content-type", "application/grpc"),
            ("grpc-status", "7"),
            ("grpc-message", "no%20way"),
            ("x-reason", "policy"),
        ];
        let response = unary.head(200, pairs(&head), true).unwrap();
        assert_eq!(response.status, 403);
        // A trailers-only reply's metadata is trailing metadata.
        assert_eq!(
            response.headers,
            headers(&[
                ("content-type", "application/json"),
                ("trailer-x-reason", "policy")
            ])
        );
        assert_eq!(
            text(&response.body),
            r#"{"code":"permission_denied","message":"no way"}"#
        );
        // OK with no message breaks unary cardinality; a missing content type is tolerated.
        let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
        let response = unary
            .head(200, pairs(&[("grpc-status", "0")]), true)
            .unwrap();
        assert_eq!(response.status, 501);
        assert_eq!(
            text(&response.body),
            r#"{"code":"unimplemented","message":"upstream sent no response message to a unary call"}"#
        );
    }

    #[test]
    fn unary_cardinality_and_limits() {
        let two = [frame(0, b"a"), frame(0, b"b")];
        let response = unary_call(CallKind::Unary, GRPC_HEAD, &two, &[("grpc-status", "0")]);
        assert_eq!(response.status, 501);
        assert!(text(&response.body).contains("more than one response message"));
        // Refused from the prefix, before the body is held.
        let huge = Bytes::from_static(b"\x00\x00\x00\x00\x41");
        let response = unary_call(CallKind::Unary, GRPC_HEAD, &[huge], &[("grpc-status", "0")]);
        assert_eq!(response.status, 429);
        assert!(text(&response.body).starts_with(r#"{"code":"resource_exhausted""#));
        let at_limit = frame(0, &[b'x'; MAX]);
        let response = unary_call(
            CallKind::Unary,
            GRPC_HEAD,
            &[at_limit],
            &[("grpc-status", "0")],
        );
        assert_eq!((response.status, response.body.len()), (200, MAX));
        for flags in [0x02, 0x80, 0x81, 0xff] {
            let response = unary_call(
                CallKind::Unary,
                GRPC_HEAD,
                &[frame(flags, b"")],
                &[("grpc-status", "0")],
            );
            assert_eq!(response.status, 500, "{flags:#x}");
        }
        let cut = [frame(0, b"abc").slice(..6)];
        let response = unary_call(CallKind::Unary, GRPC_HEAD, &cut, &[("grpc-status", "0")]);
        assert_eq!(
            text(&response.body),
            r#"{"code":"internal","message":"upstream ended the call inside a message"}"#
        );
        // The upstream's own error wins over what its body lacked.
        let response = unary_call(CallKind::Unary, GRPC_HEAD, &cut, &[("grpc-status", "4")]);
        assert_eq!(response.status, 504);
    }

    #[test]
    fn unary_hostile_statuses() {
        for status in ["", "abc", "-1", "17", "99999999999", "1 4", "0x1"] {
            let response = unary_call(CallKind::Unary, GRPC_HEAD, &[], &[("grpc-status", status)]);
            assert_eq!(text(&response.body), r#"{"code":"unknown"}"#, "{status:?}");
            assert_eq!(response.status, 500);
        }
        let response = unary_call(
            CallKind::Unary,
            GRPC_HEAD,
            &[frame(0, b"m")],
            &[("x-only", "1")],
        );
        assert_eq!(response.status, 500);
        assert_eq!(
            text(&response.body),
            r#"{"code":"internal","message":"upstream ended the call without grpc-status"}"#
        );
        assert!(response.header_names().any(|n| n == b"trailer-x-only"));
        // A broken escape leaves the message as sent; control bytes are escaped in JSON.
        for (raw, json) in [
            ("50%", r#""50%""#),
            ("%zz%41", r#""%zz%41""#),
            ("a%0Ab%22", r#""a\nb\"""#),
            ("%FF", "\"\u{fffd}\""),
        ] {
            let trailers = [("grpc-status", "3"), ("grpc-message", raw)];
            let response = unary_call(CallKind::Unary, GRPC_HEAD, &[], &trailers);
            assert_eq!(
                text(&response.body),
                format!(r#"{{"code":"invalid_argument","message":{json}}}"#)
            );
        }
        // The first of repeated gRPC fields counts.
        let trailers = [("grpc-status", "5"), ("Grpc-Status", "0")];
        assert_eq!(
            unary_call(CallKind::Unary, GRPC_HEAD, &[], &trailers).status,
            404
        );
    }

    #[test]
    fn unary_non_grpc_replies() {
        let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
        let response = unary
            .head(503, pairs(&[("content-type", "text/html")]), false)
            .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(
            text(&response.body),
            r#"{"code":"unavailable","message":"upstream returned HTTP 503 instead of a gRPC response"}"#
        );
        let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
        let response = unary.head(404, pairs(GRPC_HEAD), true).unwrap();
        assert_eq!(response.status, 501);
        for content_type in ["text/html", "application/grpc-web", "application/grpcx", ""] {
            let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
            let response = unary
                .head(200, pairs(&[("content-type", content_type)]), false)
                .unwrap();
            assert_eq!(response.status, 500, "{content_type:?}");
            assert!(text(&response.body).starts_with(r#"{"code":"unknown""#));
        }
    }

    #[test]
    fn get_responses_vary_on_accept_encoding() {
        let response = unary_call(
            CallKind::UnaryGet,
            GRPC_HEAD,
            &[frame(0, b"m")],
            &[("grpc-status", "0")],
        );
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers,
            headers(&[
                ("content-type", "application/proto"),
                ("vary", "accept-encoding")
            ])
        );
        let response = unary_call(CallKind::UnaryGet, GRPC_HEAD, &[], &[("grpc-status", "5")]);
        assert!(response.header_names().any(|n| n == b"vary"));
        // Cache directives the backend sets pass as metadata.
        let head = [
            ("content-type", "application/grpc"),
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
        ];
        let response = unary_call(
            CallKind::UnaryGet,
            &head,
            &[frame(0, b"m")],
            &[("grpc-status", "0")],
        );
        assert_eq!(
            response.headers[2],
            (
                Bytes::from_static(b"cache-control"),
                Bytes::from_static(b"max-age=60")
            )
        );
        assert_eq!(response.headers[3].0, "etag");
    }

    #[test]
    fn local_failures() {
        let mut unary = UnaryResponse::new(&call(CallKind::Unary), MAX);
        let head = [("content-type", "application/grpc"), ("x-request-id", "r1")];
        assert_eq!(unary.head(200, pairs(&head), false), None);
        let response = unary.failed(Code::DeadlineExceeded, "deadline exceeded");
        assert_eq!(response.status, 504);
        assert_eq!(
            response.headers,
            headers(&[("content-type", "application/json"), ("x-request-id", "r1")])
        );
        assert_eq!(
            text(&response.body),
            r#"{"code":"deadline_exceeded","message":"deadline exceeded"}"#
        );

        let response = error_response(
            &call(CallKind::Unary),
            Code::Unavailable,
            "no healthy upstream",
        );
        assert_eq!(response.status, 503);
        assert_eq!(
            response.headers,
            headers(&[("content-type", "application/json")])
        );
        assert_eq!(
            text(&response.body),
            r#"{"code":"unavailable","message":"no healthy upstream"}"#
        );
        let response = error_response(&call(CallKind::UnaryGet), Code::InvalidArgument, "");
        assert_eq!(response.status, 400);
        assert_eq!(
            response.headers,
            headers(&[
                ("content-type", "application/json"),
                ("vary", "accept-encoding")
            ])
        );
        assert_eq!(text(&response.body), r#"{"code":"invalid_argument"}"#);
        // OK is never an error.
        assert_eq!(
            error_response(&call(CallKind::Unary), Code::Ok, "").status,
            500
        );

        let response = error_response(&call(CallKind::Streaming), Code::Cancelled, "x");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers,
            headers(&[("content-type", "application/connect+proto")])
        );
        let json = br#"{"error":{"code":"canceled","message":"x"}}"#;
        assert_eq!(
            &response.body[..5],
            &[&[0x02u8][..], &(json.len() as u32).to_be_bytes()].concat()[..]
        );
        assert_eq!(&response.body[5..], json);
    }

    fn eos(json: &str) -> Bytes {
        let mut out = vec![0x02];
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        Bytes::from(out)
    }

    fn stream(head: &[(&str, &str)]) -> StreamingResponse {
        let mut streaming = StreamingResponse::new(&call(CallKind::Streaming), MAX);
        assert!(matches!(
            streaming.head(200, pairs(head), false),
            StreamingHead::Stream(_)
        ));
        streaming
    }

    #[test]
    fn streaming_success_byte_exact() {
        let mut streaming = StreamingResponse::new(&call(CallKind::Streaming), MAX);
        let head = [
            ("content-type", "application/grpc"),
            ("grpc-encoding", "gzip"),
            ("grpc-accept-encoding", "gzip,br"),
            ("x-request-id", "r1"),
        ];
        assert_eq!(
            streaming.head(200, pairs(&head), false),
            StreamingHead::Stream(headers(&[
                ("content-type", "application/connect+proto"),
                ("connect-content-encoding", "gzip"),
                ("connect-accept-encoding", "gzip,br"),
                ("x-request-id", "r1"),
            ]))
        );
        let wire = [frame(0, b"one"), frame(1, b"two")].concat();
        let mut forwarded = Vec::new();
        for piece in wire.chunks(3) {
            let mut out = Vec::new();
            streaming
                .data(Bytes::copy_from_slice(piece), &mut out)
                .unwrap();
            out.iter().for_each(|p| forwarded.extend_from_slice(p));
        }
        assert_eq!(forwarded, wire);
        let end = streaming.trailers(pairs(&[
            ("grpc-status", "0"),
            ("x-cost", "1"),
            ("x-cost", "2"),
        ]));
        assert_eq!(
            end,
            StreamEnd::Envelope(eos(r#"{"metadata":{"x-cost":["1","2"]}}"#))
        );
        let mut plain = stream(GRPC_HEAD);
        assert_eq!(
            plain.trailers(pairs(&[("grpc-status", "0")])),
            StreamEnd::Envelope(eos("{}"))
        );
    }

    #[test]
    fn streaming_error_end() {
        let details = STANDARD_NO_PAD.encode(RETRY_STATUS);
        let mut streaming = stream(GRPC_HEAD);
        let trailers = [
            ("grpc-status", "14"),
            ("grpc-message", "overloaded"),
            ("grpc-status-details-bin", details.as_str()),
            ("acme-operation-cost", "237"),
        ];
        assert_eq!(
            streaming.trailers(pairs(&trailers)),
            StreamEnd::Envelope(eos(concat!(
                r#"{"error":{"code":"unavailable","message":"overloaded","#,
                r#""details":[{"type":"google.rpc.RetryInfo","value":"CgIIPA"}]},"#,
                r#""metadata":{"acme-operation-cost":["237"]}}"#
            )))
        );
    }

    #[test]
    fn streaming_ended_by_the_head() {
        let mut streaming = StreamingResponse::new(&call(CallKind::Streaming), MAX);
        let head = [
            ("content-type", "application/grpc"),
            ("grpc-status", "16"),
            ("grpc-accept-encoding", "gzip"),
            ("x-reason", "token expired"),
        ];
        let StreamingHead::Complete(response) = streaming.head(200, pairs(&head), true) else {
            panic!("trailers-only must complete the stream");
        };
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers,
            headers(&[
                ("content-type", "application/connect+proto"),
                ("connect-accept-encoding", "gzip")
            ])
        );
        assert_eq!(
            response.body,
            eos(
                r#"{"error":{"code":"unauthenticated"},"metadata":{"x-reason":["token expired"]}}"#
            )
        );
        // A server stream may end with no message and OK.
        let mut streaming = StreamingResponse::new(&call(CallKind::Streaming), MAX);
        let head = [("content-type", "application/grpc"), ("grpc-status", "0")];
        let StreamingHead::Complete(response) = streaming.head(200, pairs(&head), true) else {
            panic!("trailers-only must complete the stream");
        };
        assert_eq!(response.body, eos("{}"));
        // Not gRPC: still a 200 stream, the error in its end.
        let mut streaming = StreamingResponse::new(&call(CallKind::Streaming), MAX);
        let StreamingHead::Complete(response) = streaming.head(502, pairs(&[]), false) else {
            panic!("a non-gRPC reply must complete the stream");
        };
        assert_eq!(response.status, 200);
        assert_eq!(
            response.body,
            eos(
                r#"{"error":{"code":"unavailable","message":"upstream returned HTTP 502 instead of a gRPC response"}}"#
            )
        );
    }

    #[test]
    fn streaming_refuses_a_broken_upstream_frame() {
        for bad in [
            frame(0x80, b"grpc-status:0"),
            frame(0x02, b"{}"),
            frame(0x01, b"z"),
            frame(0, &[0; MAX + 1]),
        ] {
            let mut streaming = stream(GRPC_HEAD);
            let wire = Bytes::from([frame(0, b"ok").to_vec(), bad.to_vec()].concat());
            let mut out = Vec::new();
            let Err(StreamEnd::Envelope(end)) = streaming.data(wire, &mut out) else {
                panic!("{bad:?} must end the stream");
            };
            // The good message is forwarded; nothing of the bad one; then the end.
            assert_eq!(out.concat(), frame(0, b"ok").to_vec());
            let json = std::str::from_utf8(&end[5..]).unwrap();
            assert!(json.starts_with(r#"{"error":{"code":""#), "{json}");
            assert!(
                json.contains("internal") || json.contains("resource_exhausted"),
                "{json}"
            );
        }
    }

    #[test]
    fn streaming_ends_cut_inside_a_message() {
        // Inside a payload: the client holds part of an envelope, so only an abort is honest.
        let mut streaming = stream(GRPC_HEAD);
        streaming
            .data(frame(0, b"abcdef").slice(..7), &mut Vec::new())
            .unwrap();
        assert_eq!(
            streaming.trailers(pairs(&[("grpc-status", "0")])),
            StreamEnd::Abort
        );
        assert_eq!(
            streaming.failed(Code::Cancelled, "client went away"),
            StreamEnd::Abort
        );
        // Only a held prefix: nothing partial was forwarded, so the end is well-formed.
        let mut streaming = stream(GRPC_HEAD);
        let mut out = Vec::new();
        streaming
            .data(Bytes::from_static(b"\x00\x00"), &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(
            streaming.trailers(pairs(&[("grpc-status", "0")])),
            StreamEnd::Envelope(eos(
                r#"{"error":{"code":"internal","message":"upstream ended the call inside a message"}}"#
            ))
        );
        let mut streaming = stream(GRPC_HEAD);
        streaming
            .data(Bytes::from_static(b"\x00\x00"), &mut Vec::new())
            .unwrap();
        assert_eq!(
            streaming.trailers(pairs(&[("grpc-status", "10")])),
            StreamEnd::Envelope(eos(r#"{"error":{"code":"aborted"}}"#))
        );
        let mut streaming = stream(GRPC_HEAD);
        assert_eq!(
            streaming.failed(Code::DeadlineExceeded, ""),
            StreamEnd::Envelope(eos(r#"{"error":{"code":"deadline_exceeded"}}"#))
        );
    }

    #[test]
    fn forwarded_response_headers() {
        for name in [
            "x-request-id",
            "cache-control",
            "etag",
            "set-cookie",
            "date",
            "vary",
            "trailer-x",
        ] {
            assert!(is_forwarded_response_header(name.as_bytes()), "{name}");
        }
        for name in [
            "content-type",
            "Content-Length",
            "content-encoding",
            "grpc-status",
            "grpc-message",
            "grpc-encoding",
            "Grpc-Status-Details-Bin",
            "grpc-trace-bin",
            "connect-content-encoding",
            "connection",
            "transfer-encoding",
            "te",
            "trailer",
            ":status",
            "",
        ] {
            assert!(!is_forwarded_response_header(name.as_bytes()), "{name}");
        }
    }
}
