//! One downstream HTTP/2 connection: h2c with prior knowledge on the cleartext port, and (with
//! TLS) ALPN `h2`. Every stream is one request, answered locally (CORS preflight, health path,
//! refusals) or run as a call through [`crate::call`] with an [`H2Exchange`] as its downstream:
//! gRPC-Web (binary or text) and native gRPC alike.
//!
//! The connection is driven by [`serve`], which accepts streams and spawns a task per stream on
//! the worker, and also:
//! - closes the connection with `GOAWAY(ENHANCE_YOUR_CALM)` when the client floods it
//!   ([`crate::frame_watch`], fed by [`ServerIo`] with every byte read);
//! - closes an idle connection (no stream open for `--http2-idle-timeout-ms`) with a graceful
//!   GOAWAY, and a dead one (a PING unanswered for `--http2-keepalive-timeout-ms`);
//! - on drain, sends the two-step graceful GOAWAY (RFC 9113 §6.8: first with the highest stream
//!   id, then, a round trip later, with the last one accepted), lets open streams finish and
//!   closes when the last one does, so new calls go to another proxy and none fails.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use monoio_compat::StreamWrapper;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::connect_side::ConnectSide;
use super::http2_exchange::{H2Exchange, Kind};
use crate::access_log;
use crate::call::{self, Body, CallRequest, End};
use crate::coarse_timer::CoarseTimer;
use crate::connect::adapter::{Reply as ConnectReply, RequestBody};
use crate::connect::{self, CallKind, ConnectCall, ConnectError, RequestProtocol};
use crate::context::WorkerContext;
use crate::error::Error;
use crate::frame_watch::{Flood, FrameWatch, SentFrames};
use crate::grpc_web::{self, WebReply};
use crate::stats::WorkerStats;
use crate::status::Code;
use crate::translate;
use crate::transport::Transport;

/// Serve an HTTP/2 connection whose first bytes, `received`, were already read (the preface,
/// when h2c was recognised by it).
pub async fn serve<S: Transport + Unpin + 'static>(
    stream: S,
    received: Bytes,
    peer: SocketAddr,
    context: Rc<WorkerContext>,
) {
    let flood = Rc::new(FloodSignal::default());
    let io = ServerIo {
        inner: StreamWrapper::new(stream),
        received,
        watch: FrameWatch::default(),
        flood: flood.clone(),
        sent: SentFrames::default(),
        stats: context.stats.clone(),
    };
    let settings = &context.limits.http2;
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(settings.streams_max)
        .max_header_list_size(settings.header_list_bytes_max)
        .initial_window_size(settings.stream_window_bytes)
        .initial_connection_window_size(settings.connection_window_bytes)
        .max_frame_size(settings.frame_bytes_max)
        .handshake::<_, Bytes>(io);
    let mut timer = context.timers.timer();
    let deadline = Instant::now() + context.limits.header_read_timeout;
    let connection = monoio::select! {
        connection = handshake => connection,
        _ = timer.at(deadline) => {
            debug!(%peer, "HTTP/2 preface or SETTINGS not received in time");
            return;
        }
    };
    let connection = match connection {
        Ok(connection) => connection,
        Err(e) => {
            debug!(%peer, error = %e, "HTTP/2 handshake failed");
            context.stats.http2_protocol_errors.add(1);
            return;
        }
    };
    context.stats.http2_connections.add(1);
    Driver {
        connection,
        context: context.clone(),
        flood,
        streams: Rc::new(Streams::default()),
        timer,
        keepalive_timer: context.timers.timer(),
    }
    .run(peer)
    .await;
    debug!(%peer, "downstream HTTP/2 connection closed");
}

type Connection<S> = h2::server::Connection<ServerIo<S>, Bytes>;

/// Drives one connection: accepts streams and watches floods, idleness, liveness and the drain.
struct Driver<S: Transport + Unpin + 'static> {
    connection: Connection<S>,
    context: Rc<WorkerContext>,
    flood: Rc<FloodSignal>,
    streams: Rc<Streams>,
    /// For the idle timeout.
    timer: CoarseTimer,
    /// For the keepalive PINGs.
    keepalive_timer: CoarseTimer,
}

/// A stream the client opened: its request and the handle to answer it.
type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

/// What ended one wait of the driver. `Accepted` is large, but a wake lives only for one turn
/// of the loop, on the stack.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Accepted(Accepted),
    Flood(Flood),
    Drain,
    Idle,
    StreamsChanged,
    Dead(&'static str),
}

impl<S: Transport + Unpin + 'static> Driver<S> {
    async fn run(mut self, peer: SocketAddr) {
        let settings = self.context.limits.http2.clone();
        let ping = settings
            .keepalive_interval
            .and_then(|_| self.connection.ping_pong());
        // One keepalive future for the connection's whole life, polled by every turn of the
        // loop: a future made anew per turn was dropped whenever a stream came or went between
        // a PING and its PONG, which left h2's one PING slot taken, so the next PING was
        // refused ("send_ping while pending") and a busy, healthy connection was closed with
        // its streams.
        let mut keepalive = std::pin::pin!(keepalive(ping, &mut self.keepalive_timer, &settings));
        let mut draining = false;
        // The connection is being shut down for a flood; only flushing the GOAWAY remains.
        let mut closing = false;
        if self.context.draining.get() {
            self.connection.graceful_shutdown();
            draining = true;
        }
        loop {
            let idle_deadline = (self.streams.open.get() == 0 && !draining)
                .then(|| self.streams.idle_since.get() + settings.idle_timeout);
            let wake = monoio::select! {
                accepted = self.connection.accept() => Wake::Accepted(accepted),
                flood = self.flood.tripped(closing) => Wake::Flood(flood),
                _ = drain_began(&self.context, draining) => Wake::Drain,
                _ = wait_until(&mut self.timer, idle_deadline) => Wake::Idle,
                _ = self.streams.changed.notified() => Wake::StreamsChanged,
                reason = &mut keepalive => Wake::Dead(reason),
            };
            match wake {
                Wake::Accepted(Some(Ok((request, respond)))) => {
                    let guard = StreamGuard::new(&self.streams);
                    let context = self.context.clone();
                    monoio::spawn(async move {
                        serve_stream(request, respond, context).await;
                        drop(guard);
                    });
                }
                Wake::Accepted(Some(Err(e))) => {
                    debug!(%peer, error = %e, "HTTP/2 connection error");
                    if e.reason().is_some_and(|r| r != h2::Reason::NO_ERROR) {
                        self.context.stats.http2_protocol_errors.add(1);
                    }
                    return;
                }
                Wake::Accepted(None) => return,
                Wake::Flood(kind) => {
                    debug!(%peer, flood = kind.name(), "HTTP/2 flood: GOAWAY(ENHANCE_YOUR_CALM)");
                    self.context.stats.http2_flood(kind);
                    self.connection
                        .abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    // Streams in flight end with the connection; accept() now flushes the
                    // GOAWAY and returns when the connection is closed.
                    closing = true;
                    draining = true;
                }
                Wake::Drain | Wake::Idle => {
                    self.connection.graceful_shutdown();
                    draining = true;
                }
                Wake::StreamsChanged => {}
                Wake::Dead(reason) => {
                    debug!(%peer, reason, "HTTP/2 client gone");
                    return;
                }
            }
        }
    }
}

/// The open streams of one connection, for the idle timeout.
#[derive(Default)]
struct Streams {
    open: Cell<usize>,
    /// When the last stream closed (or the connection opened).
    idle_since: IdleSince,
    /// Woken when the last open stream closes, so the idle timeout starts.
    changed: tokio::sync::Notify,
}

struct IdleSince(Cell<Instant>);

impl Default for IdleSince {
    fn default() -> Self {
        IdleSince(Cell::new(Instant::now()))
    }
}

impl IdleSince {
    fn get(&self) -> Instant {
        self.0.get()
    }
}

/// Counts one stream as open until it drops.
struct StreamGuard(Rc<Streams>);

impl StreamGuard {
    fn new(streams: &Rc<Streams>) -> Self {
        streams.open.set(streams.open.get() + 1);
        StreamGuard(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let streams = &self.0;
        streams.open.set(streams.open.get() - 1);
        if streams.open.get() == 0 {
            streams.idle_since.0.set(Instant::now());
            streams.changed.notify_waiters();
        }
    }
}

/// Send a PING every interval; return why the client is considered gone when one is not
/// answered within the timeout. Pending forever when keepalive is off. Must not be dropped
/// before the connection ends (see `Driver::run`).
async fn keepalive(
    ping: Option<h2::PingPong>,
    timer: &mut CoarseTimer,
    settings: &crate::config::Http2Settings,
) -> &'static str {
    let (Some(mut ping), Some(interval)) = (ping, settings.keepalive_interval) else {
        return std::future::pending().await;
    };
    loop {
        timer.at(Instant::now() + interval).await;
        let deadline = Instant::now() + settings.keepalive_timeout;
        monoio::select! {
            pong = ping.ping(h2::Ping::opaque()) => {
                if pong.is_err() {
                    return "keepalive PING failed";
                }
            }
            _ = timer.at(deadline) => return "keepalive PING unanswered",
        }
    }
}

/// Resolves when the worker's drain begins (once); never when already draining.
async fn drain_began(context: &WorkerContext, draining: bool) {
    if draining {
        return std::future::pending().await;
    }
    if context.draining.get() {
        return;
    }
    context.drain_started.notified().await
}

/// Fire at `deadline` (coarsely), or never.
async fn wait_until(timer: &mut CoarseTimer, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => timer.at(deadline).await,
        None => std::future::pending().await,
    }
}

/// Set by [`ServerIo`] when the frame watch finds a flood; the driver waits on it.
#[derive(Default)]
struct FloodSignal {
    flood: Cell<Option<Flood>>,
    waker: Cell<Option<Waker>>,
}

impl FloodSignal {
    fn trip(&self, flood: Flood) {
        if self.flood.get().is_none() {
            self.flood.set(Some(flood));
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    /// Resolves with the flood found; never once `handled`.
    async fn tripped(&self, handled: bool) -> Flood {
        if handled {
            return std::future::pending().await;
        }
        poll_fn(|cx| match self.flood.get() {
            Some(flood) => Poll::Ready(flood),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// The connection's byte stream as h2 reads it: the bytes already received first, then the
/// socket; every byte goes past the frame watch. Once a flood was found nothing more is read,
/// so the GOAWAY is the last thing the client gets.
pub(super) struct ServerIo<S> {
    inner: StreamWrapper<S>,
    received: Bytes,
    watch: FrameWatch,
    flood: Rc<FloodSignal>,
    /// What h2 writes goes past this too, to count the resets and GOAWAYs sent.
    sent: SentFrames,
    stats: Arc<WorkerStats>,
}

impl<S: Transport + Unpin + 'static> AsyncRead for ServerIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.flood.flood.get().is_some() {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        if !this.received.is_empty() {
            let n = this.received.len().min(buf.remaining());
            buf.put_slice(&this.received[..n]);
            this.received.advance(n);
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        if let Some(flood) = this.watch.observe(&buf.filled()[before..], Instant::now()) {
            this.flood.trip(flood);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Transport + Unpin + 'static> AsyncWrite for ServerIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            let stats = &this.stats;
            this.sent
                .observe(&buf[..n], &mut |sent| stats.http2_sent(sent));
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serve one stream: route it, answer it, log it.
async fn serve_stream(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    context: Rc<WorkerContext>,
) {
    let started = Instant::now();
    context.stats.requests.add(1);
    context.stats.http2_streams.add(1);
    let (parts, body) = request.into_parts();
    let mut log = StreamLog::default();
    route(&parts, body, respond, &context, started, &mut log).await;
    let logged = context.access_log.borrow().is_some();
    if logged {
        let method = Bytes::copy_from_slice(parts.method.as_str().as_bytes());
        let path = parts.uri.path_and_query().map_or_else(Bytes::new, |p| {
            Bytes::copy_from_slice(p.as_str().as_bytes())
        });
        let entry = access_log::Entry {
            method: &method,
            path: &path,
            http_status: log.http_status,
            grpc_status: log.grpc_status,
            upstream: log.upstream,
            duration: started.elapsed(),
            bytes_in: log.bytes_in,
            bytes_out: log.bytes_out,
        };
        if let Some(access_log) = context.access_log.borrow_mut().as_mut() {
            access_log.record(&entry);
        }
    }
}

/// What the access log says about one stream.
#[derive(Debug, Default)]
pub(super) struct StreamLog {
    pub http_status: u16,
    pub grpc_status: Option<u32>,
    pub upstream: Option<SocketAddr>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

async fn route(
    parts: &http::request::Parts,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    context: &Rc<WorkerContext>,
    started: Instant,
    log: &mut StreamLog,
) {
    let origin = header_bytes(&parts.headers, "origin");
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    let kind = match (&parts.method, content_type) {
        (&Method::OPTIONS, _) => {
            let request_headers = header_bytes(&parts.headers, "access-control-request-headers");
            let answer = context
                .cors
                .preflight(origin.as_ref(), request_headers.as_ref());
            context.stats.preflight(answer.status);
            log.http_status = answer.status;
            let headers = answer.headers.iter().map(|(n, v)| (*n, &v[..]));
            local_response(&mut respond, answer.status, headers, Bytes::new());
            return;
        }
        (&Method::GET | &Method::HEAD, _)
            if parts.uri.path().as_bytes() == context.limits.health_path =>
        {
            log.http_status = 200;
            let cors = context.cors.actual_headers(origin.as_ref(), []);
            let headers = [(&b"content-type"[..], &b"text/plain"[..])]
                .into_iter()
                .chain(cors.iter().map(|(n, v)| (*n, &v[..])));
            let body = if parts.method == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from_static(b"ok\n")
            };
            local_response(&mut respond, 200, headers, body);
            return;
        }
        _ => match classify(parts) {
            Classified::Kind(kind) => kind,
            Classified::ConnectRefused(call, error) => {
                let error = Error::from(error);
                let mut exchange = H2Exchange::new(
                    context.clone(),
                    Kind::Connect { call, origin },
                    body,
                    respond,
                );
                log.grpc_status = exchange.refuse(&error, started).await;
                log.http_status = exchange.http_status();
                return;
            }
            Classified::Unsupported if parts.method == Method::POST => {
                return refuse(
                    &mut respond,
                    context,
                    &Error::UnsupportedMediaType,
                    origin,
                    log,
                )
            }
            Classified::Unsupported => {
                return refuse(&mut respond, context, &Error::MethodNotAllowed, origin, log)
            }
        },
    };
    proxy(parts, body, respond, kind, context, started, log).await;
}

/// What a stream that is not a local route speaks.
enum Classified {
    Kind(Kind),
    ConnectRefused(ConnectCall, ConnectError),
    /// 415 for a POST, 405 otherwise.
    Unsupported,
}

fn classify(parts: &http::request::Parts) -> Classified {
    let headers = &parts.headers;
    let content_type = headers.get(http::header::CONTENT_TYPE);
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let protocol = connect::classify(
        parts.method.as_str().as_bytes(),
        target.as_bytes(),
        content_type.map(HeaderValue::as_bytes),
        headers
            .get("connect-protocol-version")
            .map(HeaderValue::as_bytes),
    );
    let post = parts.method == Method::POST;
    let origin = header_bytes(headers, "origin");
    match (protocol, content_type) {
        (RequestProtocol::GrpcWeb, Some(ct)) if post => {
            match grpc_web::classify_content_type(ct.as_bytes()) {
                Some(web) => {
                    let accept = header_bytes(headers, "accept");
                    let reply = WebReply::new(&web, accept.as_deref());
                    Classified::Kind(Kind::Web {
                        request: web,
                        reply,
                        origin,
                    })
                }
                None => Classified::Unsupported,
            }
        }
        (RequestProtocol::Grpc, Some(ct)) if post && grpc_web::is_native_grpc(ct.as_bytes()) => {
            Classified::Kind(Kind::Native {
                content_type: ct.clone(),
            })
        }
        (RequestProtocol::Connect(call), _) => Classified::Kind(Kind::Connect { call, origin }),
        (RequestProtocol::ConnectRefused(call, error), _) => {
            Classified::ConnectRefused(call, error)
        }
        _ => Classified::Unsupported,
    }
}

/// The upstream head of a stream's call, decided once and built for each attempt.
struct HeadPlan {
    uri: http::Uri,
    content_type: HeaderValue,
    timeout: Option<std::time::Duration>,
    /// Headers the protocol adds (a Connect call's encodings).
    added: Vec<(http::header::HeaderName, HeaderValue)>,
    connect: bool,
}

impl HeadPlan {
    fn new(
        parts: &http::request::Parts,
        kind: &Kind,
        context: &WorkerContext,
    ) -> Result<(HeadPlan, Option<ConnectSide>, Option<Bytes>), Error> {
        let grpc_timeout = || {
            translate::grpc_timeout_header(parts.headers.get("grpc-timeout").map(|v| v.as_bytes()))
        };
        let Kind::Connect { call, .. } = kind else {
            let plan = HeadPlan {
                uri: translate::h2_uri(&parts.uri, &parts.headers)?,
                content_type: kind.upstream_content_type(),
                timeout: grpc_timeout()?,
                added: Vec::new(),
                connect: false,
            };
            return Ok((plan, None, None));
        };
        let target = parts.uri.path_and_query().map_or_else(
            || Bytes::from_static(b"/"),
            |p| Bytes::copy_from_slice(p.as_str().as_bytes()),
        );
        let path = connect::upstream_path(call, &target);
        let limits = &context.limits;
        if call.kind == CallKind::UnaryGet && !limits.connect_get_allowed(&path) {
            return Err(GET_NOT_ALLOWED);
        }
        let message_bytes_max = limits.body_bytes_max as usize;
        let translated = connect::request::translate_request_head(
            call,
            connect::query_of(&target),
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
            message_bytes_max,
        )?;
        let mut added = Vec::new();
        for (name, value) in [
            ("grpc-encoding", &translated.grpc_encoding),
            ("grpc-accept-encoding", &translated.grpc_accept_encoding),
        ] {
            if let Some(value) = value {
                let value = HeaderValue::from_maybe_shared(value.clone())
                    .map_err(|_| Error::Malformed("bad encoding header"))?;
                added.push((http::header::HeaderName::from_static(name), value));
            }
        }
        let content_length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = RequestBody::new(
            call,
            content_length,
            translated.grpc_encoding.is_some(),
            message_bytes_max,
        )?;
        let side = ConnectSide::new(body, ConnectReply::new(call.clone(), message_bytes_max));
        let plan = HeadPlan {
            uri: translate::h2_uri_with_path(&parts.uri, &parts.headers, path)?,
            content_type: HeaderValue::from_maybe_shared(translated.content_type)
                .map_err(|_| Error::Malformed("bad content-type"))?,
            timeout: translated.timeout,
            added,
            connect: true,
        };
        Ok((plan, Some(side), translated.get_body))
    }

    fn headers(&self, parts: &http::request::Parts, deadline: Option<Instant>) -> http::HeaderMap {
        let connect = self.connect;
        translate::h2_headers_with(
            &parts.headers,
            &self.content_type,
            deadline,
            |name| connect && connect::request::is_dropped_request_header(name),
            &self.added,
        )
    }
}

/// A Connect GET to a method not allowed by `--connect-get-allow`.
const GET_NOT_ALLOWED: Error = Error::Refused {
    code: Code::Unimplemented,
    message: "GET is not enabled for this method (--connect-get-allow)",
};

/// Run one stream as a call.
async fn proxy(
    parts: &http::request::Parts,
    body: RecvStream,
    respond: SendResponse<Bytes>,
    kind: Kind,
    context: &Rc<WorkerContext>,
    started: Instant,
    log: &mut StreamLog,
) {
    let planned = HeadPlan::new(parts, &kind, context);
    let mut exchange = H2Exchange::new(context.clone(), kind, body, respond);
    let (plan, get_body) = match planned {
        Ok((plan, connect, get_body)) => {
            exchange.set_connect(connect);
            (plan, get_body)
        }
        Err(error) => {
            log.grpc_status = exchange.refuse(&error, started).await;
            log.http_status = exchange.http_status();
            return;
        }
    };
    let deadline = translate::deadline_after(
        plan.timeout,
        context.limits.grpc_timeout_max,
        Instant::now(),
    );
    let first = match (get_body, exchange.first_body()) {
        (_, Err(error)) => {
            log.grpc_status = exchange.refuse(&error, started).await;
            log.http_status = exchange.http_status();
            return;
        }
        (Some(get_body), Ok(_)) => get_body,
        (None, Ok(first)) => first,
    };
    let headers = plan.headers(parts, deadline);
    let rebuild = || plan.headers(parts, deadline);
    let request = CallRequest::new(plan.uri.clone(), headers, &rebuild, deadline);
    let complete = exchange.body_complete();
    let outcome = call::run(
        context,
        &request,
        Body { first, complete },
        &mut exchange,
        started,
    )
    .await;
    log.upstream = outcome.upstream;
    log.http_status = exchange.http_status();
    log.grpc_status = match outcome.end {
        End::Status(status) => Some(status),
        End::Refused(_) => None,
        End::ClientGone => {
            log.http_status = 499;
            Some(Code::Cancelled as u32)
        }
    };
    if outcome.end != End::ClientGone {
        // A response that ended before the request did: let the client finish sending
        // (RFC 9113 §8.1) instead of resetting its stream.
        exchange.finish_request_body().await;
    }
    (log.bytes_in, log.bytes_out) = exchange.bytes();
}

/// Answer a request that is not a call with an HTTP error status and its reason.
fn refuse(
    respond: &mut SendResponse<Bytes>,
    context: &WorkerContext,
    error: &Error,
    origin: Option<Bytes>,
    log: &mut StreamLog,
) {
    let status = error.http_status().unwrap_or(400);
    context.stats.local_http(status);
    log.http_status = status;
    let cors = context.cors.actual_headers(origin.as_ref(), []);
    let headers = [(&b"content-type"[..], &b"text/plain"[..])]
        .into_iter()
        .chain(cors.iter().map(|(n, v)| (*n, &v[..])));
    let mut reason = error.message().into_owned().into_bytes();
    reason.push(b'\n');
    local_response(respond, status, headers, Bytes::from(reason));
}

/// Send a whole local response: head, then the body if any, ending the stream.
pub(super) fn local_response<'a>(
    respond: &mut SendResponse<Bytes>,
    status: u16,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: Bytes,
) {
    let response = response_with(status, headers);
    match respond.send_response(response, body.is_empty()) {
        Ok(mut send) if !body.is_empty() => {
            // Small and bounded: sent without waiting for capacity.
            let _ = send.send_data(body, true);
        }
        Ok(_) => {}
        Err(e) => debug!(error = %e, "local HTTP/2 response not sent"),
    }
}

/// A response head with `status` and `headers`; headers h2 would refuse are left out.
pub(super) fn response_with<'a>(
    status: u16,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let map = response.headers_mut();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    response
}

fn header_bytes(headers: &HeaderMap, name: &str) -> Option<Bytes> {
    headers
        .get(name)
        .map(|v| Bytes::copy_from_slice(v.as_bytes()))
}
