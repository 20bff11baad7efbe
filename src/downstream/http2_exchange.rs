//! One call on an HTTP/2 stream, as the call path sees it, for both protocols a stream can
//! carry:
//!
//! - **native gRPC**: the response passes through as it is (head, DATA, real trailers);
//! - **gRPC-Web**: the response head gets the client's content type and the CORS headers, the
//!   body is base64-encoded in text mode, and the trailers become the final `0x80` frame.
//!
//! Flow control holds end to end in both directions. A request body piece is taken from h2 (and
//! its window credit returned to the client) only when the call asks for the next one, which is
//! after the previous one got upstream capacity; response bytes go out as the client's window
//! grants capacity, and the call returns the upstream's credit only after that. A client that
//! stops reading for `--idle-timeout-ms` has its stream reset.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HeaderMap, HeaderValue};
use http::response::Parts;

use super::connect_side::ConnectSide;
use super::http2::response_with;
use crate::call::{BodyPiece, ClientEvent, Downstream, End};
use crate::coarse_timer::CoarseTimer;
use crate::connect::adapter::{Reply, ReplyOut, RequestBody};
use crate::connect::{self, ConnectCall};
use crate::context::WorkerContext;
use crate::error::Error;
use crate::grpc_web::{self, Base64Decoder, WebContentType, WebReply};
use crate::http1::Http1Error;
use crate::status::{encode_grpc_message, Code};

/// Output gathered beyond this is written before more is taken from the upstream.
const OUTPUT_FULL_BYTES: usize = 64 * 1024;

/// Which protocol a stream speaks.
pub(super) enum Kind {
    Web {
        request: WebContentType,
        reply: WebReply,
        origin: Option<Bytes>,
    },
    Native {
        content_type: HeaderValue,
    },
    Connect {
        call: ConnectCall,
        origin: Option<Bytes>,
    },
}

impl Kind {
    /// The content type the upstream gets: the client's own for native gRPC, its gRPC
    /// equivalent for gRPC-Web.
    pub fn upstream_content_type(&self) -> HeaderValue {
        match self {
            Kind::Web { request, .. } => HeaderValue::from_maybe_shared(request.upstream.clone())
                .expect("a classified content type is a valid header value"),
            Kind::Native { content_type } => content_type.clone(),
            Kind::Connect { call, .. } => {
                HeaderValue::from_maybe_shared(call.upstream_content_type())
                    .expect("a Connect codec name is a valid header value")
            }
        }
    }
}

/// The downstream side of one call on an HTTP/2 stream.
pub(super) struct H2Exchange {
    context: Rc<WorkerContext>,
    kind: Kind,
    recv: RecvStream,
    /// A Connect call's body translation and reply.
    connect: Option<ConnectSide>,
    /// The client's END_STREAM was seen.
    body_complete: bool,
    body_bytes: u64,
    /// Text mode: the request body's base64 decoder.
    decoder: Option<Base64Decoder>,
    respond: SendResponse<Bytes>,
    send: Option<SendStream<Bytes>>,
    /// Response bytes waiting for the client's window.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Native gRPC: trailers to send once the pending bytes are out.
    trailers: Option<HeaderMap>,
    /// gRPC-Web: end the stream once the pending bytes are out.
    end_after_data: bool,
    /// The stream was ended.
    ended: bool,
    /// The stream cannot be written any more (the client reset it, or the connection ended).
    broken: bool,
    timer: CoarseTimer,
    read_deadline: Option<Instant>,
    /// When the whole body must have arrived (`--request-body-timeout-ms`).
    body_deadline: Option<Instant>,
    http_status: u16,
    bytes_out: u64,
}

impl H2Exchange {
    pub fn new(
        context: Rc<WorkerContext>,
        kind: Kind,
        recv: RecvStream,
        respond: SendResponse<Bytes>,
    ) -> Self {
        let text = matches!(&kind, Kind::Web { request, .. } if request.text);
        // A Connect call answers even a refusal in Connect's terms; its body translation is
        // set once the head is translated (`set_connect`).
        let connect = match &kind {
            Kind::Connect { call, .. } => Some(ConnectSide::new(
                RequestBody::None,
                Reply::new(call.clone(), context.limits.body_bytes_max as usize),
            )),
            _ => None,
        };
        let body_deadline = context.limits.body_deadline(Instant::now());
        H2Exchange {
            timer: context.timers.timer(),
            context,
            kind,
            connect,
            body_complete: recv.is_end_stream(),
            recv,
            body_bytes: 0,
            decoder: text.then(Base64Decoder::new),
            respond,
            send: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            trailers: None,
            end_after_data: false,
            ended: false,
            broken: false,
            read_deadline: None,
            body_deadline,
            http_status: 200,
            bytes_out: 0,
        }
    }

    pub fn body_complete(&self) -> bool {
        self.body_complete
    }

    /// Set a Connect call's body translation and reply, once its head was translated.
    pub fn set_connect(&mut self, connect: Option<ConnectSide>) {
        if connect.is_some() {
            self.connect = connect;
        }
    }

    /// The HTTP status the client was answered with.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// Request body bytes received and response bytes sent, for the access log.
    pub fn bytes(&self) -> (u64, u64) {
        (self.body_bytes, self.bytes_out)
    }

    /// The request body that already arrived with the head, taken without waiting: a unary
    /// call's body usually did, and then goes upstream with the head in one write.
    pub fn first_body(&mut self) -> Result<Bytes, Error> {
        let mut first = BytesMut::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while !self.body_complete {
            match self.recv.poll_data(&mut cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let data = self.accept_piece(data)?;
                    first.extend_from_slice(&data);
                }
                Poll::Ready(None) => self.body_complete = true,
                Poll::Ready(Some(Err(_))) | Poll::Pending => break,
            }
            self.body_complete |= self.recv.is_end_stream();
        }
        if self.body_complete {
            self.finish_decoding(&mut first)?;
        }
        match &mut self.connect {
            Some(connect) => Ok(connect.body.piece(first.freeze(), self.body_complete)?),
            None => Ok(first.freeze()),
        }
    }

    /// Count, limit, give the client its window back, and decode one piece of request body.
    fn accept_piece(&mut self, data: Bytes) -> Result<Bytes, Error> {
        let _ = self.recv.flow_control().release_capacity(data.len());
        self.body_bytes += data.len() as u64;
        if self.body_bytes > self.context.limits.body_bytes_max {
            return Err(Error::Http1(Http1Error::BodyTooLarge));
        }
        match &mut self.decoder {
            None => Ok(data),
            Some(decoder) => {
                let mut decoded = BytesMut::with_capacity(data.len() / 4 * 3 + 3);
                decoder
                    .decode(&data, &mut decoded)
                    .map_err(|_| Error::BadBase64)?;
                Ok(decoded.freeze())
            }
        }
    }

    fn finish_decoding(&mut self, out: &mut BytesMut) -> Result<(), Error> {
        match &mut self.decoder {
            Some(decoder) => decoder.finish(out).map_err(|_| Error::BadBase64),
            None => Ok(()),
        }
    }

    /// The client's next body piece, within the body read timeout.
    async fn body_piece(&mut self) -> Result<BodyPiece, ClientEvent> {
        let (limits, body_deadline) = (&self.context.limits, self.body_deadline);
        let deadline = *self
            .read_deadline
            .get_or_insert_with(|| limits.body_read_deadline(Instant::now(), body_deadline));
        let (recv, send, respond) = (&mut self.recv, &mut self.send, &mut self.respond);
        let data = monoio::select! {
            data = poll_fn(|cx| recv.poll_data(cx)) => data,
            _ = self.timer.at(deadline) => return Err(ClientEvent::Failed(Error::RequestTimeout)),
            _ = poll_fn(|cx| poll_client_reset(send, respond, cx)) => return Err(ClientEvent::Gone),
        };
        self.read_deadline = None;
        let data = match data {
            Some(Ok(data)) => self.accept_piece(data).map_err(ClientEvent::Failed)?,
            None => Bytes::new(),
            Some(Err(_)) => return Err(ClientEvent::Gone),
        };
        self.body_complete = self.recv.is_end_stream();
        let data = match &self.decoder {
            Some(_) if self.body_complete => {
                let mut tail = BytesMut::from(&data[..]);
                self.finish_decoding(&mut tail)
                    .map_err(ClientEvent::Failed)?;
                tail.freeze()
            }
            _ => data,
        };
        let data = match &mut self.connect {
            Some(connect) => connect
                .body
                .piece(data, self.body_complete)
                .map_err(|e| ClientEvent::Failed(e.into()))?,
            None => data,
        };
        Ok(BodyPiece {
            data,
            last: self.body_complete,
        })
    }

    /// Resolve when the client resets the stream or its connection ends.
    async fn reset(&mut self) {
        let (send, respond) = (&mut self.send, &mut self.respond);
        poll_fn(|cx| poll_client_reset(send, respond, cx)).await
    }

    /// After the response ended before the request did: read the rest of the request body and
    /// drop it, so the client can finish sending (RFC 9113 §8.1) instead of having its stream
    /// reset. Bounded by the body limit and the body read timeout; past them the stream is
    /// reset with NO_ERROR, which the RFC provides for exactly this.
    pub async fn finish_request_body(&mut self) {
        while !self.body_complete {
            let read_timeout = self.context.limits.header_read_timeout;
            let deadline = Instant::now() + read_timeout;
            let recv = &mut self.recv;
            let data = monoio::select! {
                data = poll_fn(|cx| recv.poll_data(cx)) => data,
                _ = self.timer.at(deadline) => None,
            };
            match data {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.body_bytes += data.len() as u64;
                    if self.body_bytes > self.context.limits.body_bytes_max {
                        break;
                    }
                    self.body_complete = self.recv.is_end_stream();
                }
                Some(Err(_)) => return,
                None => {
                    self.body_complete = self.recv.is_end_stream();
                    if !self.body_complete {
                        break;
                    }
                }
            }
        }
        if !self.body_complete {
            self.respond.send_reset(h2::Reason::NO_ERROR);
        }
    }

    /// Answer a request refused before its call started; the grpc-status it got, if any.
    pub async fn refuse(&mut self, error: &Error, started: Instant) -> Option<u32> {
        let status = match self.fail(error, false) {
            End::Refused(status) => {
                self.context.stats.local_http(status);
                None
            }
            End::Status(code) => {
                self.context.stats.call_finished(code, started.elapsed());
                Some(code)
            }
            End::ClientGone => None,
        };
        let _ = self.flush().await;
        status
    }

    fn send_head(&mut self, response: http::Response<()>, end_of_stream: bool) {
        self.http_status = response.status().as_u16();
        match self.respond.send_response(response, end_of_stream) {
            Ok(send) => self.send = Some(send),
            // The client reset the stream or the connection ended; flush reports it.
            Err(_) => self.broken = true,
        }
        self.ended |= end_of_stream;
    }

    /// A response head for a gRPC response: the upstream's metadata, and for gRPC-Web the
    /// client's content type and the CORS headers.
    fn response_head(&self, parts: &Parts) -> http::Response<()> {
        let mut response = http::Response::new(());
        let headers = response.headers_mut();
        match &self.kind {
            Kind::Native { .. } | Kind::Connect { .. } => {
                for (name, value) in &parts.headers {
                    if is_passed_response_header(name.as_str()) {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
            Kind::Web { reply, origin, .. } => {
                let content_type = HeaderValue::from_maybe_shared(reply.content_type.clone())
                    .expect("a classified content type is a valid header value");
                headers.insert(http::header::CONTENT_TYPE, content_type);
                let metadata = || {
                    parts
                        .headers
                        .iter()
                        .filter(|(name, _)| grpc_web::is_forwardable_response_header(name))
                };
                for (name, value) in metadata() {
                    headers.append(name.clone(), value.clone());
                }
                let cors = self.context.cors.actual_headers(
                    origin.as_ref(),
                    metadata().map(|(name, _)| name.as_str().as_bytes()),
                );
                append_bytes(headers, cors.iter().map(|(n, v)| (*n, &v[..])));
            }
        }
        response
    }

    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.pending_bytes += data.len();
            self.pending.push_back(data);
        }
    }

    fn text(&self) -> bool {
        matches!(&self.kind, Kind::Web { reply, .. } if reply.text)
    }

    /// A gRPC-Web body piece: base64 in text mode, as it is otherwise.
    fn web_piece(&self, data: Bytes) -> Bytes {
        if !self.text() {
            return data;
        }
        let mut encoded = BytesMut::with_capacity(data.len().div_ceil(3) * 4);
        grpc_web::encode_base64_flush(&data, &mut encoded);
        encoded.freeze()
    }

    /// Send one pending piece as the client's window allows.
    async fn send_piece(&mut self, mut piece: Bytes, last: bool) -> Result<(), Error> {
        let idle_timeout = self.context.limits.idle_timeout;
        let deadline = Instant::now() + idle_timeout;
        let send = self.send.as_mut().ok_or_else(stream_gone)?;
        while !piece.is_empty() {
            send.reserve_capacity(piece.len());
            let granted = monoio::select! {
                granted = poll_fn(|cx| send.poll_capacity(cx)) => granted,
                _ = self.timer.at(deadline) => {
                    // The client stopped reading: it cannot pin the stream and its buffers.
                    send.send_reset(h2::Reason::CANCEL);
                    return Err(Error::ClientClosed(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client did not read its response within the idle timeout",
                    )));
                }
            };
            let granted = match granted {
                Some(Ok(granted)) if granted > 0 => granted,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(stream_gone()),
            };
            let chunk = piece.split_to(granted.min(piece.len()));
            self.bytes_out += chunk.len() as u64;
            send.send_data(chunk, last && piece.is_empty())
                .map_err(|_| stream_gone())?;
        }
        Ok(())
    }

    /// End the stream with `grpc-status`/`grpc-message`: trailers-only before the head (an
    /// HTTP status for a gRPC-Web protocol error), trailers (or the trailer frame) after it.
    fn fail_with(&mut self, code: Code, message: &str, head_sent: bool) {
        let mut encoded = Vec::with_capacity(message.len());
        encode_grpc_message(message, &mut encoded);
        let status: (&[u8], &[u8]) = (b"grpc-status", code.as_str().as_bytes());
        let message: (&[u8], &[u8]) = (b"grpc-message", &encoded);
        match (&self.kind, head_sent) {
            (Kind::Native { .. } | Kind::Connect { .. }, false) => {
                let head = [
                    (&b"content-type"[..], &b"application/grpc"[..]),
                    status,
                    message,
                ];
                self.send_head(response_with(200, head), true);
            }
            (Kind::Native { .. } | Kind::Connect { .. }, true) => {
                let mut trailers = HeaderMap::new();
                append_bytes(&mut trailers, [status, message]);
                self.trailers = Some(trailers);
            }
            (Kind::Web { reply, origin, .. }, false) => {
                let cors = self.context.cors.actual_headers(origin.as_ref(), []);
                let content_type = reply.content_type.clone();
                let head = [(&b"content-type"[..], &content_type[..]), status, message]
                    .into_iter()
                    .chain(cors.iter().map(|(n, v)| (*n, &v[..])));
                self.send_head(response_with(200, head), true);
            }
            (Kind::Web { .. }, true) => {
                let mut frame = BytesMut::with_capacity(64);
                grpc_web::encode_trailer_frame([status, message], &mut frame);
                let frame = self.web_piece(frame.freeze());
                self.push(frame);
                self.end_after_data = true;
            }
        }
    }
}

impl H2Exchange {
    /// Write what a Connect reply produced; returns the Connect code the response carries when
    /// it ended with it.
    fn write_connect(&mut self, out: ReplyOut) -> Code {
        let origin = match &self.kind {
            Kind::Connect { origin, .. } => origin.clone(),
            _ => None,
        };
        match out {
            ReplyOut::Nothing => {}
            ReplyOut::Complete(response) => {
                let cors = self
                    .context
                    .cors
                    .actual_headers(origin.as_ref(), response.header_names());
                let head = response
                    .headers
                    .iter()
                    .map(|(n, v)| (&n[..], &v[..]))
                    .chain(cors.iter().map(|(n, v)| (*n, &v[..])));
                let empty = response.body.is_empty();
                self.send_head(response_with(response.status, head), empty);
                if let Some(connect) = &mut self.connect {
                    connect.http_status = response.status;
                    connect.code = connect::adapter::code_of(&response.body);
                }
                if !empty {
                    self.push(response.body);
                    self.end_after_data = true;
                }
            }
            ReplyOut::Head(headers) => {
                let cors = self
                    .context
                    .cors
                    .actual_headers(origin.as_ref(), headers.iter().map(|(n, _)| &n[..]));
                let head = headers
                    .iter()
                    .map(|(n, v)| (&n[..], &v[..]))
                    .chain(cors.iter().map(|(n, v)| (*n, &v[..])));
                self.send_head(response_with(200, head), false);
            }
            ReplyOut::Body(pieces) => {
                for piece in pieces {
                    self.push(piece);
                }
            }
            ReplyOut::End(envelope) => {
                if let Some(connect) = &mut self.connect {
                    connect.code = connect::adapter::code_of(&envelope);
                }
                self.push(envelope);
                self.end_after_data = true;
            }
            ReplyOut::Abort => {
                if let Some(connect) = &mut self.connect {
                    connect.aborted = true;
                }
                match &mut self.send {
                    Some(send) => send.send_reset(h2::Reason::INTERNAL_ERROR),
                    None => self.respond.send_reset(h2::Reason::INTERNAL_ERROR),
                }
                self.ended = true;
            }
        }
        self.connect.as_ref().map_or(Code::Ok, |c| c.code)
    }
}

impl Downstream for H2Exchange {
    async fn client_event(&mut self, want_body: bool) -> ClientEvent {
        if want_body && !self.body_complete {
            return match self.body_piece().await {
                Ok(piece) => ClientEvent::Body(piece),
                Err(event) => event,
            };
        }
        self.reset().await;
        ClientEvent::Gone
    }

    fn head(&mut self, head: &Parts) {
        if let Some(connect) = &mut self.connect {
            let out = connect.reply.head(head, false);
            self.write_connect(out);
            return;
        }
        let response = self.response_head(head);
        self.send_head(response, false);
    }

    fn data(&mut self, data: Bytes) -> Result<(), Error> {
        if let Some(connect) = &mut self.connect {
            let out = connect.data(data)?;
            self.write_connect(out);
            return Ok(());
        }
        let data = match self.kind {
            Kind::Web { .. } => self.web_piece(data),
            _ => data,
        };
        self.push(data);
        Ok(())
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(connect) = &mut self.connect {
            let out = connect.reply.trailers(trailers);
            self.write_connect(out);
            return;
        }
        match self.kind {
            Kind::Native { .. } | Kind::Connect { .. } => self.trailers = Some(trailers.clone()),
            Kind::Web { .. } => {
                let mut frame = BytesMut::with_capacity(64);
                grpc_web::encode_trailer_frame(
                    trailers
                        .iter()
                        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
                    &mut frame,
                );
                let frame = self.web_piece(frame.freeze());
                self.push(frame);
                self.end_after_data = true;
            }
        }
    }

    fn trailers_only(&mut self, head: &Parts) {
        if let Some(connect) = &mut self.connect {
            let out = connect.reply.head(head, true);
            self.write_connect(out);
            return;
        }
        let response = self.response_head(head);
        self.send_head(response, true);
    }

    fn fail(&mut self, error: &Error, head_sent: bool) -> End {
        if let Some(connect) = &mut self.connect {
            let out = connect.fail(error, head_sent);
            let code = self.write_connect(out);
            return End::Status(code as u32);
        }
        match (error.http_status(), &self.kind, head_sent) {
            // A gRPC-Web client reads HTTP errors as the HTTP/1.1 path sends them.
            (Some(status), Kind::Web { origin, .. }, false) => {
                let cors = self.context.cors.actual_headers(origin.as_ref(), []);
                let mut reason = error.message().into_owned().into_bytes();
                reason.push(b'\n');
                let head = [(&b"content-type"[..], &b"text/plain"[..])]
                    .into_iter()
                    .chain(cors.iter().map(|(n, v)| (*n, &v[..])));
                self.send_head(response_with(status, head), false);
                self.push(Bytes::from(reason));
                self.end_after_data = true;
                End::Refused(status)
            }
            // Native gRPC clients read a gRPC status whatever went wrong.
            _ => {
                self.fail_with(error.code(), &error.message(), head_sent);
                End::Status(error.code() as u32)
            }
        }
    }

    fn has_output(&self) -> bool {
        !self.pending.is_empty() || self.trailers.is_some() || (self.end_after_data && !self.ended)
    }

    fn output_full(&self) -> bool {
        self.pending_bytes >= OUTPUT_FULL_BYTES
    }

    async fn flush(&mut self) -> Result<(), Error> {
        while let Some(piece) = self.pending.pop_front() {
            self.pending_bytes -= piece.len();
            let last = self.end_after_data && self.pending.is_empty();
            self.send_piece(piece, last).await?;
            if last {
                self.ended = true;
            }
        }
        if self.end_after_data && !self.ended {
            let send = self.send.as_mut().ok_or_else(stream_gone)?;
            send.send_data(Bytes::new(), true)
                .map_err(|_| stream_gone())?;
            self.ended = true;
        }
        if let Some(trailers) = self.trailers.take() {
            let send = self.send.as_mut().ok_or_else(stream_gone)?;
            send.send_trailers(trailers).map_err(|_| stream_gone())?;
            self.ended = true;
        }
        if self.broken {
            return Err(stream_gone());
        }
        Ok(())
    }
}

/// Response headers a native gRPC response passes on: all but those HTTP/2 does not allow
/// (connection-specific ones) and the length, which the proxy does not promise.
fn is_passed_response_header(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "content-length"
    )
}

fn append_bytes<'a>(
    headers: &mut HeaderMap,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
}

/// Ready when the client reset the stream or its connection ended. Before the response head
/// the reset is read from the `SendResponse`, after it from the `SendStream` (h2 refuses the
/// former once the head is sent).
fn poll_client_reset(
    send: &mut Option<SendStream<Bytes>>,
    respond: &mut SendResponse<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let reset = match send {
        Some(send) => send.poll_reset(cx),
        None => respond.poll_reset(cx),
    };
    reset.map(|_| ())
}

fn stream_gone() -> Error {
    Error::ClientClosed(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the client reset the stream or closed the connection",
    ))
}
