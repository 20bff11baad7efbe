//! One downstream HTTP/1.1 connection: read a request, answer it locally or run it as a gRPC
//! call, write the answer back, repeat while the connection is kept alive.
//!
//! The order of work for a gRPC-Web call:
//! 1. [`Connection::read_head`] reads until [`crate::http1::parse_request_head`] has a whole head
//!    (header read timeout once the first byte arrived, idle timeout before).
//! 2. [`Connection::respond`] routes: CORS preflights and the health path are answered here; a
//!    POST with a gRPC-Web content type becomes a call; anything else gets 405/415.
//! 3. [`Connection::proxy`] reads what body is buffered ([`crate::http1::BodyReader`]), translates
//!    the head ([`crate::translate`], and [`crate::connect`] for a Connect call) and runs the
//!    call ([`crate::call::run`]) with an [`H1Exchange`] as its downstream, which writes the
//!    response as it comes.
//!
//! A downstream protocol error gets an HTTP status and the connection closes, since the byte
//! stream can no longer be trusted.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use monoio::buf::IoBufMut;
use tracing::debug;

use super::connect_side::ConnectSide;
use super::http1_exchange::{H1Exchange, ReplyTo};
use crate::access_log;
use crate::call::{self, Body, CallRequest, End, Outcome};
use crate::coarse_timer::CoarseTimer;
use crate::connect::adapter::{Reply as ConnectReply, RequestBody};
use crate::connect::{self, CallKind, ConnectCall, ConnectError, RequestProtocol};
use crate::context::WorkerContext;
use crate::error::{Error, Reply};
use crate::frame_watch;
use crate::grpc_web::{self, WebContentType, WebReply};
use crate::http1::{
    finish_head, parse_request_head, write_content_length, write_header, write_status_line,
    BodyKind, BodyReader, Method, Output, RequestHead, Version,
};
use crate::stats::WorkerStats;
use crate::status::{encode_grpc_message, Code};
use crate::translate;
use crate::transport::{self, Transport};

/// A read is only issued with at least this much free room in the buffer.
const READ_ROOM_MIN_BYTES: usize = 1024;
/// How long an idle keep-alive connection stays open once a drain begins: long enough for a
/// request the client is already sending to arrive and be answered with `Connection: close`
/// (closing at once would race it, and a browser does not retry a POST).
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

const GRPC_WEB_PROTO: &[u8] = b"application/grpc-web+proto";

/// Serve one accepted connection until it closes. When its first bytes are the HTTP/2
/// connection preface, the stream and the bytes read so far are handed back instead, for the
/// HTTP/2 server (h2c with prior knowledge).
pub async fn serve<S: Transport>(
    stream: S,
    peer: SocketAddr,
    context: &Rc<WorkerContext>,
) -> Option<(S, Bytes)> {
    let mut connection = Connection {
        received: Cell::new(0),
        sent: 0,
        consumed_mark: 0,
        log: RequestLog::default(),
        buf: BytesMut::new(),
        out: Output::default(),
        timer: context.timers.timer(),
        stream,
        context: context.clone(),
        first: true,
    };
    if connection.run().await == Ended::Http2 {
        let Connection { stream, buf, .. } = connection;
        return Some((stream, buf.freeze()));
    }
    debug!(%peer, "downstream connection closed");
    None
}

/// How the HTTP/1.1 loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Closed,
    /// The connection began with the HTTP/2 preface.
    Http2,
}

/// What reading a request head found.
enum ReadHead {
    Head(RequestHead),
    /// The client closed, or stayed idle past the keep-alive timeout between requests, which
    /// needs no answer.
    Closed,
    /// The connection's first bytes are the HTTP/2 preface.
    Http2,
}

pub(super) struct Connection<S> {
    pub(super) stream: S,
    /// Bytes read from and written to this client, for the access log.
    received: Cell<u64>,
    sent: u64,
    /// `received` less what was still buffered when the previous request ended: where this
    /// request's bytes start.
    consumed_mark: u64,
    /// What the access log records about the request being handled.
    log: RequestLog,
    pub(super) context: Rc<WorkerContext>,
    /// Bytes read from the client and not yet consumed; heads and bodies are split off its front.
    pub(super) buf: BytesMut,
    pub(super) out: Output,
    /// The connection's coarse timer, for whatever it waits on at the time.
    pub(super) timer: CoarseTimer,
    /// No request has been read yet: the HTTP/2 preface may still come.
    first: bool,
}

/// Whether the connection can take another request after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

impl<S: Transport> Connection<S> {
    async fn run(&mut self) -> Ended {
        loop {
            let head = match self.read_head().await {
                Ok(ReadHead::Head(head)) => head,
                Ok(ReadHead::Closed) => return Ended::Closed,
                Ok(ReadHead::Http2) => return Ended::Http2,
                Err(error) => {
                    let reply_to = ReplyTo {
                        started: Instant::now(),
                        version: Version::Http11,
                        keep_alive: false,
                        origin: None,
                        grpc: None,
                    };
                    self.count_refusal(&error);
                    self.write_error(&error, &reply_to, false);
                    let _ = self.flush().await;
                    return Ended::Closed;
                }
            };
            self.first = false;
            // Boxed: a request's state (upstream call, body reader, response relay) is KiBs,
            // and keeping it out of the connection's own future means an idle keep-alive
            // connection costs only its read loop and buffer (docs/benchmarks.md, memory). The
            // head stays here, where it costs no room: the error path above is larger.
            if Box::pin(self.handle(&head)).await == Next::Close {
                return Ended::Closed;
            }
        }
    }

    /// Read until a whole request head is buffered.
    async fn read_head(&mut self) -> Result<ReadHead, Error> {
        let limits = &self.context.limits;
        let mut head_deadline =
            (!self.buf.is_empty()).then(|| Instant::now() + limits.header_read_timeout);
        loop {
            let preface = match self.first {
                true => frame_watch::is_preface(&self.buf),
                false => Some(false),
            };
            match preface {
                Some(true) => return Ok(ReadHead::Http2),
                // Possibly the start of the preface: nothing to parse yet.
                None if !self.buf.is_empty() => {}
                _ => {
                    if let Some(head) = parse_request_head(&mut self.buf, &limits.head)? {
                        return Ok(ReadHead::Head(head));
                    }
                }
            }
            let idle = head_deadline.is_none();
            let deadline = match head_deadline {
                Some(deadline) => deadline,
                None if self.context.draining.get() => Instant::now() + DRAIN_IDLE_GRACE,
                None => Instant::now() + limits.idle_timeout,
            };
            // Between requests the connection holds no buffer: it waits for readiness, which
            // needs none, and only then takes its read buffer (nginx frees its buffers on idle
            // connections the same way). An io_uring read would own the buffer while it waits.
            let release = self.buf.is_empty();
            if release {
                self.buf = BytesMut::new();
                self.out.release();
            }
            let read_buffer_bytes = limits.read_buffer_bytes;
            let (stream, buf) = (&mut self.stream, &mut self.buf);
            let (stats, received) = (&self.context.stats, &self.received);
            let read = async move {
                if release {
                    stream.readable().await?;
                    buf.reserve(read_buffer_bytes);
                }
                read_more(stream, buf, stats, received).await
            };
            let mut read = std::pin::pin!(read);
            let timed_out = monoio::select! {
                read = &mut read => Some(read),
                _ = self.timer.at(deadline) => None,
                _ = drain_began(&self.context, idle) => {
                    // An idle connection gets a short grace: a request already on its way is
                    // still answered (with `Connection: close`); silence closes it.
                    monoio::select! {
                        read = &mut read => Some(read),
                        _ = self.timer.at(Instant::now() + DRAIN_IDLE_GRACE) => None,
                    }
                }
            };
            match timed_out {
                Some(Ok(0)) | Some(Err(_)) => return Ok(ReadHead::Closed),
                Some(Ok(_)) => {
                    head_deadline
                        .get_or_insert_with(|| Instant::now() + limits.header_read_timeout);
                }
                None if idle => return Ok(ReadHead::Closed),
                None => return Err(Error::RequestTimeout),
            }
        }
    }

    async fn handle(&mut self, head: &RequestHead) -> Next {
        let logged = self
            .context
            .access_log
            .borrow()
            .is_some()
            .then_some(self.sent);
        self.log = RequestLog::default();
        let started = Instant::now();
        let next = self.respond(head, started).await;
        // Bytes still buffered belong to the next (pipelined) request.
        let consumed = self.received.get() - self.buf.len() as u64;
        let consumed_before = std::mem::replace(&mut self.consumed_mark, consumed);
        if let Some(sent) = logged {
            let entry = access_log::Entry {
                method: &method_name(&head.method),
                path: &head.path,
                http_status: self.log.http_status,
                grpc_status: self.log.grpc_status,
                upstream: self.log.upstream,
                duration: started.elapsed(),
                bytes_in: consumed - consumed_before,
                bytes_out: self.sent - sent,
            };
            if let Some(log) = self.context.access_log.borrow_mut().as_mut() {
                log.record(&entry);
            }
        }
        next
    }

    /// Answer one request; `started` is when its head was parsed (for the duration metrics).
    async fn respond(&mut self, head: &RequestHead, started: Instant) -> Next {
        self.context.stats.requests.add(1);
        let mut reply_to = ReplyTo {
            started,
            version: head.version,
            // A draining proxy answers this request, then closes.
            keep_alive: head.keep_alive && !self.context.draining.get(),
            origin: find_header(head, b"origin"),
            grpc: None,
        };
        let result = match head.method {
            Method::Options => self.preflight(head, &reply_to).await,
            Method::Get | Method::Head if head.path == self.context.limits.health_path => {
                self.health(head, &reply_to).await
            }
            _ => match self.classify(head) {
                Route::Web(content_type) => {
                    let accept = find_header(head, b"accept");
                    reply_to.grpc = Some(WebReply::new(&content_type, accept.as_deref()));
                    self.proxy(head, Plan::Web(content_type), &reply_to).await
                }
                Route::Connect(call) => self.proxy_connect(head, call, &reply_to).await,
                Route::ConnectRefused(call, error) => {
                    self.refuse_connect(head, &call, &error.into(), &reply_to)
                        .await
                }
                Route::Unsupported if head.method == Method::Post => {
                    Err(Error::UnsupportedMediaType)
                }
                Route::Unsupported => Err(Error::MethodNotAllowed),
            },
        };
        match result {
            Ok(next) => next,
            Err(Error::ClientClosed(_)) => {
                // nginx's "client closed request": nothing could be answered.
                self.log.http_status = 499;
                Next::Close
            }
            Err(error) => {
                debug!(error = %error, "request refused");
                self.count_refusal(&error);
                self.write_error(&error, &reply_to, false);
                let _ = self.flush().await;
                Next::Close
            }
        }
    }

    /// CORS preflight, answered here and never forwarded.
    async fn preflight(&mut self, head: &RequestHead, reply_to: &ReplyTo) -> Result<Next, Error> {
        let request_headers = find_header(head, b"access-control-request-headers");
        let answer = self
            .context
            .cors
            .preflight(reply_to.origin.as_ref(), request_headers.as_ref());
        self.context.stats.preflight(answer.status);
        self.log.http_status = answer.status;
        let next = body_free_next(head, reply_to);
        let head_out = self.out.scratch();
        write_status_line(head_out, head.version, answer.status);
        for (name, value) in &answer.headers {
            write_header(head_out, name, value);
        }
        // RFC 9110 §8.6: a 204 carries no Content-Length; a 403 needs one to keep the connection.
        if answer.status != 204 {
            write_header(head_out, b"content-length", b"0");
        }
        write_connection_header(head_out, head.version, next == Next::KeepAlive);
        finish_head(head_out);
        self.flush().await.map_err(Error::ClientClosed)?;
        Ok(next)
    }

    /// The health path, for load balancers that probe the data port.
    async fn health(&mut self, head: &RequestHead, reply_to: &ReplyTo) -> Result<Next, Error> {
        self.log.http_status = 200;
        let next = body_free_next(head, reply_to);
        let cors = self
            .context
            .cors
            .actual_headers(reply_to.origin.as_ref(), []);
        let head_out = self.out.scratch();
        write_status_line(head_out, head.version, 200);
        write_header(head_out, b"content-type", b"text/plain");
        write_header(head_out, b"content-length", b"3");
        for (name, value) in &cors {
            write_header(head_out, name, value);
        }
        write_connection_header(head_out, head.version, next == Next::KeepAlive);
        finish_head(head_out);
        if head.method != Method::Head {
            self.out.push_static(b"ok\n");
        }
        self.flush().await.map_err(Error::ClientClosed)?;
        Ok(next)
    }

    /// Which protocol a request that is not a local route speaks.
    fn classify(&self, head: &RequestHead) -> Route {
        let protocol = connect::classify(
            &method_name(&head.method),
            &head.path,
            head.content_type.as_deref(),
            find_header(head, b"connect-protocol-version").as_deref(),
        );
        match protocol {
            RequestProtocol::GrpcWeb => match head
                .content_type
                .as_deref()
                .and_then(grpc_web::classify_content_type)
            {
                Some(content_type) if head.method == Method::Post => Route::Web(content_type),
                _ => Route::Unsupported,
            },
            RequestProtocol::Connect(call) => Route::Connect(call),
            RequestProtocol::ConnectRefused(call, error) => Route::ConnectRefused(call, error),
            // Native gRPC needs HTTP/2.
            RequestProtocol::Grpc | RequestProtocol::Unknown => Route::Unsupported,
        }
    }

    /// Run one Connect call; anything refused on the way is answered as a Connect error.
    async fn proxy_connect(
        &mut self,
        head: &RequestHead,
        call: ConnectCall,
        reply_to: &ReplyTo,
    ) -> Result<Next, Error> {
        let path = connect::upstream_path(&call, &head.path);
        if call.kind == CallKind::UnaryGet && !self.context.limits.connect_get_allowed(&path) {
            return self
                .refuse_connect(head, &call, &GET_NOT_ALLOWED, reply_to)
                .await;
        }
        match self
            .proxy(head, Plan::Connect(call.clone()), reply_to)
            .await
        {
            Err(error @ Error::ClientClosed(_)) => Err(error),
            Err(error) => self.refuse_connect(head, &call, &error, reply_to).await,
            ok => ok,
        }
    }

    /// Answer a Connect request refused before its call with a Connect error; the connection
    /// goes on only when the request had no body left unread.
    async fn refuse_connect(
        &mut self,
        head: &RequestHead,
        call: &ConnectCall,
        error: &Error,
        reply_to: &ReplyTo,
    ) -> Result<Next, Error> {
        let response = connect::response::error_response(call, error.code(), &error.message());
        self.context
            .stats
            .call_finished(error.code() as u32, reply_to.started.elapsed());
        self.log.http_status = response.status;
        self.log.grpc_status = Some(error.code() as u32);
        let next = body_free_next(head, reply_to);
        let cors = self
            .context
            .cors
            .actual_headers(reply_to.origin.as_ref(), response.header_names());
        let head_out = self.out.scratch();
        write_status_line(head_out, head.version, response.status);
        for (name, value) in &response.headers {
            write_header(head_out, name, value);
        }
        for (name, value) in &cors {
            write_header(head_out, name, value);
        }
        write_content_length(head_out, response.body.len());
        write_connection_header(head_out, head.version, next == Next::KeepAlive);
        finish_head(head_out);
        self.out.push(response.body);
        self.flush().await.map_err(Error::ClientClosed)?;
        Ok(next)
    }

    /// Run one call: take the buffered part of the body, translate the head, and let the call
    /// relay the response through an [`H1Exchange`].
    async fn proxy(
        &mut self,
        head: &RequestHead,
        plan: Plan,
        reply_to: &ReplyTo,
    ) -> Result<Next, Error> {
        let limits = &self.context.limits;
        let text = matches!(&plan, Plan::Web(content_type) if content_type.text);
        let mut body = BodyReader::new(head, limits.body_bytes_max, text)?;
        let head_plan = HeadPlan::new(head, &plan, limits)?;
        let deadline =
            translate::deadline_after(head_plan.timeout, limits.grpc_timeout_max, Instant::now());
        // Whatever part of the body is already buffered goes out with the request head.
        let raw_first = body.drain_buffered(&mut self.buf)?;
        let mut connect = head_plan.connect_side(&plan, head, limits.body_bytes_max as usize)?;
        let first = match (&mut connect, &head_plan.get_body) {
            (_, Some(get_body)) => get_body.clone(),
            (Some(side), None) => side.body.piece(raw_first, body.complete())?,
            (None, None) => raw_first,
        };
        if head.expect_continue && !body.complete() {
            self.out.push_static(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await.map_err(Error::ClientClosed)?;
        }
        let uri = translate::http1_uri_with_path(head, head_plan.path.clone())?;
        let headers = head_plan.headers(head, deadline)?;
        let rebuild = || {
            head_plan
                .headers(head, deadline)
                .expect("the same head translated without error the first time")
        };
        let request = CallRequest::new(uri, headers, &rebuild, deadline);
        let complete = body.complete();
        let started = reply_to.started;
        let context = self.context.clone();
        let mut exchange = H1Exchange::new(self, reply_to, body, connect);
        let outcome = call::run(
            &context,
            &request,
            Body { first, complete },
            &mut exchange,
            started,
        )
        .await;
        let streamed = exchange.streamed();
        let connect = exchange.connect_outcome();
        let next = self.after_call(&outcome, reply_to, streamed);
        Ok(match connect {
            Some((status, _, aborted)) => {
                if outcome.end != End::ClientGone {
                    self.log.http_status = status;
                }
                if aborted {
                    Next::Close
                } else {
                    next
                }
            }
            None => next,
        })
    }

    /// Log how a call ended, and decide whether the connection goes on.
    fn after_call(&mut self, outcome: &Outcome, reply_to: &ReplyTo, streamed: bool) -> Next {
        self.log.upstream = outcome.upstream;
        match outcome.end {
            End::Status(status) => {
                self.log.http_status = 200;
                self.log.grpc_status = Some(status);
                // A close-delimited HTTP/1.0 body ends only when the connection does, and a
                // body the client is still sending cannot be skipped.
                let chunked = reply_to.version == Version::Http11;
                if reply_to.keep_alive && outcome.body_complete && (chunked || !streamed) {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
            End::Refused(status) => {
                self.log.http_status = status;
                Next::Close
            }
            End::ClientGone => {
                self.log.http_status = 499;
                self.log.grpc_status = Some(Code::Cancelled as u32);
                Next::Close
            }
        }
    }

    /// Count a request refused with an HTTP status before any call started.
    fn count_refusal(&mut self, error: &Error) {
        if let Some(status) = error.http_status() {
            self.context.stats.local_http(status);
        }
    }

    /// The one place local answers are written, from [`Error::reply`]: an HTTP error (the
    /// connection closes after it), or a gRPC status as a trailers-only reply, or as the
    /// trailer frame when the response head was already sent.
    pub(super) fn write_error(&mut self, error: &Error, reply_to: &ReplyTo, head_sent: bool) {
        match error.reply() {
            // Once the response has begun, only a gRPC status can end it.
            Reply::Http { .. } if head_sent => {
                self.write_grpc_status(error.code(), &error.message(), reply_to, head_sent)
            }
            Reply::Http { status, reason } => self.write_http_error(status, reason, reply_to),
            Reply::Grpc { code, message } => {
                self.write_grpc_status(code, &message, reply_to, head_sent)
            }
        }
    }

    fn write_http_error(&mut self, status: u16, reason: &str, reply_to: &ReplyTo) {
        self.log.http_status = status;
        let cors = self
            .context
            .cors
            .actual_headers(reply_to.origin.as_ref(), []);
        let head_out = self.out.scratch();
        write_status_line(head_out, reply_to.version, status);
        write_header(head_out, b"content-type", b"text/plain");
        write_content_length(head_out, reason.len() + 1);
        for (name, value) in &cors {
            write_header(head_out, name, value);
        }
        write_header(head_out, b"connection", b"close");
        finish_head(head_out);
        head_out.extend_from_slice(reason.as_bytes());
        head_out.extend_from_slice(b"\n");
    }

    fn write_grpc_status(
        &mut self,
        code: Code,
        message: &str,
        reply_to: &ReplyTo,
        head_sent: bool,
    ) {
        let chunked = reply_to.version == Version::Http11;
        let mut encoded_message = Vec::with_capacity(message.len());
        encode_grpc_message(message, &mut encoded_message);
        let status: (&[u8], &[u8]) = (b"grpc-status", code.as_str().as_bytes());
        let message: (&[u8], &[u8]) = (b"grpc-message", &encoded_message);
        let text = reply_to.grpc.as_ref().is_some_and(|g| g.text);
        if head_sent {
            self.out.trailer_frame([status, message], text, chunked);
            return;
        }
        let cors = self
            .context
            .cors
            .actual_headers(reply_to.origin.as_ref(), []);
        let content_type = reply_to
            .grpc
            .as_ref()
            .map_or(GRPC_WEB_PROTO, |g| &g.content_type[..]);
        let head_out = self.out.scratch();
        write_status_line(head_out, reply_to.version, 200);
        write_header(head_out, b"content-type", content_type);
        write_header(head_out, status.0, status.1);
        write_header(head_out, message.0, message.1);
        for (name, value) in &cors {
            write_header(head_out, name, value);
        }
        write_header(head_out, b"content-length", b"0");
        write_connection_header(head_out, reply_to.version, reply_to.keep_alive);
        finish_head(head_out);
    }

    /// Write what is gathered. A client that stops reading for the idle timeout is dropped, so
    /// it cannot pin the connection, its buffers and an upstream stream forever.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        let bytes = self.out.len_bytes() as u64;
        self.context.stats.bytes_sent.add(bytes);
        self.sent += bytes;
        let idle_timeout = self.context.limits.idle_timeout;
        let fd = self.stream.as_raw_fd();
        let write = self.out.flush(&mut self.stream);
        let mut write = std::pin::pin!(write);
        let timed_out = monoio::select! {
            result = &mut write => return result,
            _ = self.timer.at(Instant::now() + idle_timeout) => true,
        };
        debug_assert!(timed_out);
        // The write must not be dropped while in flight: with io_uring the kernel may still
        // read the buffers it owns. Shutting the socket down makes it fail now.
        transport::shutdown_now(fd);
        let _ = write.await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read its response within the idle timeout",
        ))
    }

    /// Read what the client sent since, without waiting (see [`Transport::try_read`]).
    pub(super) fn try_read(&mut self) -> std::io::Result<usize> {
        let n = self.stream.try_read(&mut self.buf, READ_ROOM_MIN_BYTES)?;
        self.context.stats.bytes_received.add(n as u64);
        self.received.set(self.received.get() + n as u64);
        Ok(n)
    }
}

/// Where a request that is not a local route goes.
enum Route {
    Web(WebContentType),
    Connect(ConnectCall),
    ConnectRefused(ConnectCall, ConnectError),
    /// 415 for a POST, 405 otherwise.
    Unsupported,
}

/// How a call's request is translated.
enum Plan {
    Web(WebContentType),
    Connect(ConnectCall),
}

/// The upstream head of a call, decided once and built for each attempt.
struct HeadPlan {
    path: Bytes,
    content_type: Bytes,
    timeout: Option<std::time::Duration>,
    /// Headers the protocol adds (a Connect call's encodings).
    added: Vec<(HeaderName, HeaderValue)>,
    /// The client's headers the protocol consumes, besides the hop-by-hop ones.
    connect: bool,
    /// A Connect GET's body, from its query.
    get_body: Option<Bytes>,
    grpc_encoding: bool,
}

impl HeadPlan {
    fn new(
        head: &RequestHead,
        plan: &Plan,
        limits: &crate::config::DownstreamLimits,
    ) -> Result<HeadPlan, Error> {
        match plan {
            Plan::Web(content_type) => Ok(HeadPlan {
                path: head.path.clone(),
                content_type: content_type.upstream.clone(),
                timeout: translate::grpc_timeout_header(
                    find_header(head, b"grpc-timeout").as_deref(),
                )?,
                added: Vec::new(),
                connect: false,
                get_body: None,
                grpc_encoding: false,
            }),
            Plan::Connect(call) => {
                let translated = connect::request::translate_request_head(
                    call,
                    connect::query_of(&head.path),
                    head.headers.iter().map(|h| (&h.name[..], &h.value[..])),
                    limits.body_bytes_max as usize,
                )?;
                let mut added = Vec::new();
                for (name, value) in [
                    ("grpc-encoding", &translated.grpc_encoding),
                    ("grpc-accept-encoding", &translated.grpc_accept_encoding),
                ] {
                    if let Some(value) = value {
                        let value = HeaderValue::from_maybe_shared(value.clone())
                            .map_err(|_| Error::Malformed("bad encoding header"))?;
                        added.push((HeaderName::from_static(name), value));
                    }
                }
                Ok(HeadPlan {
                    path: connect::upstream_path(call, &head.path),
                    content_type: translated.content_type,
                    timeout: translated.timeout,
                    added,
                    connect: true,
                    grpc_encoding: translated.grpc_encoding.is_some(),
                    get_body: translated.get_body,
                })
            }
        }
    }

    fn headers(
        &self,
        head: &RequestHead,
        deadline: Option<Instant>,
    ) -> Result<http::HeaderMap, Error> {
        let connect = self.connect;
        translate::http1_headers_with(
            head,
            &self.content_type,
            deadline,
            |name| connect && connect::request::is_dropped_request_header(name),
            &self.added,
        )
    }

    /// A Connect call's side of the exchange: its body translation and reply.
    fn connect_side(
        &self,
        plan: &Plan,
        head: &RequestHead,
        message_bytes_max: usize,
    ) -> Result<Option<ConnectSide>, Error> {
        let Plan::Connect(call) = plan else {
            return Ok(None);
        };
        let content_length = match head.body {
            BodyKind::Empty => Some(0),
            BodyKind::Length(n) => Some(n),
            BodyKind::Chunked => None,
        };
        let body = RequestBody::new(call, content_length, self.grpc_encoding, message_bytes_max)?;
        let reply = ConnectReply::new(call.clone(), message_bytes_max);
        Ok(Some(ConnectSide::new(body, reply)))
    }
}

/// A Connect GET to a method not allowed by `--connect-get-allow`.
const GET_NOT_ALLOWED: Error = Error::Refused {
    code: Code::Unimplemented,
    message: "GET is not enabled for this method (--connect-get-allow)",
};

/// What the access log says about one request.
#[derive(Debug, Default)]
struct RequestLog {
    http_status: u16,
    grpc_status: Option<u32>,
    upstream: Option<SocketAddr>,
}

fn method_name(method: &Method) -> Bytes {
    Bytes::from_static(match method {
        Method::Get => b"GET",
        Method::Post => b"POST",
        Method::Options => b"OPTIONS",
        Method::Head => b"HEAD",
        Method::Put => b"PUT",
        Method::Delete => b"DELETE",
        Method::Other(other) => return other.clone(),
    })
}

/// Resolves when the worker's drain begins, for an idle connection; never otherwise.
async fn drain_began(context: &WorkerContext, idle: bool) {
    if !idle || context.draining.get() {
        return std::future::pending().await;
    }
    context.drain_started.notified().await
}

/// Read more bytes from the client into the free room at the end of `buf`.
async fn read_more<S: Transport>(
    stream: &mut S,
    buf: &mut BytesMut,
    stats: &WorkerStats,
    received: &Cell<u64>,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_ROOM_MIN_BYTES {
        buf.reserve(READ_ROOM_MIN_BYTES.max(buf.len()));
    }
    let owned = std::mem::take(buf);
    let (len, capacity) = (owned.len(), owned.capacity());
    let (result, slice) = stream.read(owned.slice_mut(len..capacity)).await;
    *buf = slice.into_inner();
    if let Ok(n) = result {
        stats.bytes_received.add(n as u64);
        received.set(received.get() + n as u64);
    }
    result
}

pub(super) fn find_header(head: &RequestHead, name: &[u8]) -> Option<Bytes> {
    head.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
}

/// A request without a body can keep the connection; one with a body we did not read cannot.
fn body_free_next(head: &RequestHead, reply_to: &ReplyTo) -> Next {
    if reply_to.keep_alive && head.body == BodyKind::Empty {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

pub(super) fn write_connection_header(out: &mut BytesMut, version: Version, keep_alive: bool) {
    match (version, keep_alive) {
        (Version::Http11, false) => write_header(out, b"connection", b"close"),
        (Version::Http10, true) => write_header(out, b"connection", b"keep-alive"),
        _ => {}
    }
}
