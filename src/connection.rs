//! One downstream HTTP/1.1 connection: read a request, answer it locally or proxy it as a gRPC
//! call over HTTP/2, write the answer back, repeat while the connection is kept alive.
//!
//! The order of work for a gRPC-Web call, all in this file:
//! 1. [`Downstream::read_head`] reads until `http1::parse_request_head` has a whole head (header
//!    read timeout once the first byte arrived, idle timeout before).
//! 2. [`Downstream::handle`] routes: CORS preflight and health checks are answered here; a POST
//!    with a gRPC-Web content type becomes a call; anything else gets 405/415.
//! 3. [`Downstream::proxy`] picks an endpoint, starts the HTTP/2 stream with the translated head,
//!    and streams the request body (a slice of the read buffer, base64-decoded in text mode).
//! 4. [`Downstream::relay_response`] turns upstream events into HTTP/1.1 output: response head,
//!    one chunk per DATA frame as soon as it arrives, and the trailers as the final `0x80` frame.
//!    Output is gathered as `Bytes` slices and written with one vectored write whenever the
//!    upstream has nothing more ready, so a unary call costs one write.
//!
//! Every call ends in a status the client can read: errors before the response head become a
//! trailers-only reply, errors after it a trailer frame. A downstream protocol error gets an HTTP
//! status and the connection closes, since the byte stream can no longer be trusted.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use monoio::buf::{IoBufMut, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use tracing::debug;

use crate::access_log;
use crate::coarse_timer::CoarseTimer;
use crate::endpoints::Tried;
use crate::error::{Error, Reply};
use crate::grpc_web::{self, Base64Decoder, WebContentType};
use crate::http1::{self, BodyKind, ChunkEvent, ChunkedDecoder, Method, RequestHead, Version};
use crate::stats::WorkerStats;
use crate::upstream::{self, Call};
use crate::worker::{RetryGuard, WorkerContext};

/// A read is only issued with at least this much free room in the buffer.
const READ_ROOM_MIN_BYTES: usize = 1024;
/// Output is flushed once this much is gathered, even if the upstream has more ready, so a fast
/// upstream cannot make a slow client's buffer grow: flow control then holds the upstream.
const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// At most this many slices per vectored write (well under IOV_MAX = 1024).
const OUTPUT_SLICES_MAX: usize = 256;
/// How long an idle keep-alive connection stays open once a drain begins: long enough for a
/// request the client is already sending to arrive and be answered with `Connection: close`
/// (closing at once would race it, and a browser does not retry a POST).
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);
/// A call that has waited this long for its upstream starts watching the client socket, so a
/// client that went away cancels the upstream stream. Fast calls never pay for the watch.
const CLIENT_WATCH_DELAY: Duration = Duration::from_millis(20);

const CRLF: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
const GRPC_WEB_PROTO: &[u8] = b"application/grpc-web+proto";

/// A connection counted as active from its accept until its task ends or is dropped. Counting at
/// accept rather than when the task first runs matters to a drain: a connection accepted just
/// before the listener closed, whose task has not run yet, is waited for (and answered with
/// `Connection: close`) instead of being dropped unanswered when the worker exits.
pub struct ActiveConnection(Arc<WorkerStats>);

impl ActiveConnection {
    pub fn new(stats: &Arc<WorkerStats>) -> Self {
        stats.connections_accepted.add(1);
        stats.connections_active.add(1);
        ActiveConnection(stats.clone())
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connections_active.sub(1);
    }
}

/// Serve one accepted connection until it closes.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Rc<WorkerContext>,
    active: ActiveConnection,
) {
    let mut downstream = Downstream {
        received: Cell::new(0),
        sent: 0,
        consumed_mark: 0,
        log: RequestLog::default(),
        buf: BytesMut::with_capacity(context.limits.read_buffer_bytes),
        out: Output::default(),
        timer: context.timers.timer(),
        stream,
        context,
    };
    downstream.run().await;
    drop(active);
    debug!(%peer, "downstream connection closed");
}

struct Downstream {
    stream: TcpStream,
    /// Bytes read from and written to this client, for the access log.
    received: Cell<u64>,
    sent: u64,
    /// `received` less what was still buffered when the previous request ended: where this
    /// request's bytes start.
    consumed_mark: u64,
    /// What the access log records about the request being handled.
    log: RequestLog,
    context: Rc<WorkerContext>,
    /// Bytes read from the client and not yet consumed; heads and bodies are split off its front.
    buf: BytesMut,
    out: Output,
    /// The connection's coarse timer, for whatever it waits on at the time.
    timer: CoarseTimer,
}

/// Whether the connection can take another request after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// The parts of a request that shape its response.
struct ReplyTo {
    /// When the request head was parsed, for the call-duration histogram.
    started: Instant,
    version: Version,
    keep_alive: bool,
    origin: Option<Bytes>,
    /// `Some` once the request was accepted as a gRPC-Web call.
    grpc: Option<GrpcReply>,
}

struct GrpcReply {
    text: bool,
    content_type: Bytes,
}

impl Downstream {
    async fn run(&mut self) {
        loop {
            let head = match self.read_head().await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(error) => {
                    let reply_to = ReplyTo {
                        started: Instant::now(),
                        version: Version::Http11,
                        keep_alive: false,
                        origin: None,
                        grpc: None,
                    };
                    let _ = self.reply_error(&error, &reply_to, false).await;
                    return;
                }
            };
            // Boxed: a request's state (upstream call, body reader, response relay) is KiBs,
            // and keeping it out of the connection's own future means an idle keep-alive
            // connection costs only its read loop and buffer (docs/benchmarks.md, memory). The
            // head stays here, where it costs no room: the error path above is larger.
            if Box::pin(self.handle(&head)).await == Next::Close {
                return;
            }
        }
    }

    /// Read until a whole request head is buffered. `Ok(None)`: the client closed or stayed
    /// idle past the keep-alive timeout between requests, which needs no answer.
    async fn read_head(&mut self) -> Result<Option<RequestHead>, Error> {
        let limits = &self.context.limits;
        let mut head_deadline =
            (!self.buf.is_empty()).then(|| Instant::now() + limits.header_read_timeout);
        loop {
            if let Some(head) = http1::parse_request_head(&mut self.buf, &limits.head)? {
                return Ok(Some(head));
            }
            let idle = head_deadline.is_none();
            let deadline = match head_deadline {
                Some(deadline) => deadline,
                None if self.context.draining.get() => Instant::now() + DRAIN_IDLE_GRACE,
                None => Instant::now() + limits.idle_timeout,
            };
            let read = read_more(
                &mut self.stream,
                &mut self.buf,
                &self.context.stats,
                &self.received,
            );
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
                Some(Ok(0)) | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => {
                    head_deadline
                        .get_or_insert_with(|| Instant::now() + limits.header_read_timeout);
                }
                None if idle => return Ok(None),
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
        let origin = find_header(head, b"origin");
        self.context.stats.requests.add(1);
        let mut reply_to = ReplyTo {
            started,
            version: head.version,
            // A draining proxy answers this request, then closes.
            keep_alive: head.keep_alive && !self.context.draining.get(),
            origin,
            grpc: None,
        };
        let result = match head.method {
            Method::Options => {
                self.context.stats.preflights.add(1);
                self.preflight(head, &reply_to).await
            }
            Method::Get | Method::Head if head.path == self.context.limits.health_path => {
                self.health(head, &reply_to).await
            }
            Method::Post => match head
                .content_type
                .as_deref()
                .and_then(grpc_web::classify_content_type)
            {
                Some(content_type) => {
                    let text = content_type.text
                        || find_header(head, b"accept").is_some_and(|a| grpc_web::accepts_text(&a));
                    reply_to.grpc = Some(GrpcReply {
                        text,
                        content_type: text_aware_content_type(&content_type, text),
                    });
                    self.proxy(head, &content_type, &reply_to).await
                }
                None => Err(CallFailure::before_body(Error::UnsupportedMediaType)),
            },
            _ => Err(CallFailure::before_body(Error::MethodNotAllowed)),
        };
        match result {
            Ok(next) => next,
            Err(CallFailure {
                error: Error::ClientClosed(_),
                ..
            }) => {
                // nginx's "client closed request": nothing could be answered.
                self.log.http_status = 499;
                Next::Close
            }
            Err(CallFailure {
                error,
                body_consumed,
                headers_sent,
            }) => {
                debug!(error = %error, "request failed");
                match self.reply_error(&error, &reply_to, headers_sent).await {
                    Ok(()) if body_consumed && reply_to.keep_alive && is_grpc_reply(&error) => {
                        Next::KeepAlive
                    }
                    _ => Next::Close,
                }
            }
        }
    }

    /// CORS preflight, answered here and never forwarded.
    async fn preflight(
        &mut self,
        head: &RequestHead,
        reply_to: &ReplyTo,
    ) -> Result<Next, CallFailure> {
        let request_headers = find_header(head, b"access-control-request-headers");
        let answer = self
            .context
            .cors
            .preflight(reply_to.origin.as_ref(), request_headers.as_ref());
        self.log.http_status = answer.status;
        let next = body_free_next(head, reply_to);
        let head_out = self.out.scratch();
        http1::write_status_line(head_out, head.version, answer.status);
        for (name, value) in &answer.headers {
            http1::write_header(head_out, name, value);
        }
        // RFC 9110 §8.6: a 204 carries no Content-Length; a 403 needs one to keep the connection.
        if answer.status != 204 {
            http1::write_header(head_out, b"content-length", b"0");
        }
        write_connection_header(head_out, head.version, next == Next::KeepAlive);
        http1::finish_head(head_out);
        self.flush().await.map_err(CallFailure::client_gone)?;
        Ok(next)
    }

    /// The health path, for load balancers that probe the data port.
    async fn health(
        &mut self,
        head: &RequestHead,
        reply_to: &ReplyTo,
    ) -> Result<Next, CallFailure> {
        self.log.http_status = 200;
        let next = body_free_next(head, reply_to);
        let cors = self
            .context
            .cors
            .actual_headers(reply_to.origin.as_ref(), []);
        let head_out = self.out.scratch();
        http1::write_status_line(head_out, head.version, 200);
        http1::write_header(head_out, b"content-type", b"text/plain");
        http1::write_header(head_out, b"content-length", b"3");
        for (name, value) in &cors {
            http1::write_header(head_out, name, value);
        }
        write_connection_header(head_out, head.version, next == Next::KeepAlive);
        http1::finish_head(head_out);
        if head.method != Method::Head {
            self.out.push_static(b"ok\n");
        }
        self.flush().await.map_err(CallFailure::client_gone)?;
        Ok(next)
    }

    /// Proxy one gRPC-Web call.
    async fn proxy(
        &mut self,
        head: &RequestHead,
        content_type: &WebContentType,
        reply_to: &ReplyTo,
    ) -> Result<Next, CallFailure> {
        let limits = &self.context.limits;
        if let BodyKind::Length(length) = head.body {
            if length > limits.body_bytes_max {
                return Err(CallFailure::before_body(Error::Http1(
                    http1::Http1Error::BodyTooLarge,
                )));
            }
        }
        let deadline = call_deadline(head, limits.grpc_timeout_max);
        let mut body = BodyReader::new(head, limits.body_bytes_max, content_type.text);
        // Whatever part of the body is already buffered goes out with the request head.
        let first = body
            .drain_buffered(&mut self.buf)
            .map_err(CallFailure::before_body)?;
        if head.expect_continue && !body.complete {
            self.out.push_static(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await.map_err(CallFailure::client_gone)?;
        }

        let request =
            UpstreamRequest::new(head, content_type, deadline).map_err(|e| CallFailure {
                body_consumed: body.complete,
                ..CallFailure::before_body(e)
            })?;
        let end_of_stream = body.complete && first.is_empty();
        // A body wholly in memory is kept (a reference, not a copy) so that a call the upstream
        // provably did not process can be sent again; a streamed body cannot be replayed.
        let replayable = body.complete;
        let _call_guard = self.context.retries.call_started();
        let mut timers = CallTimers::new(deadline);
        let mut retry: Option<(SocketAddr, RetryGuard)> = None;
        let mut tried = Tried::new();
        loop {
            let started = self.start_call(&request, end_of_stream, &tried).await;
            if let Err((Some(addr), error)) = &started {
                self.record(*addr, error);
            }
            if let Ok((addr, _)) | Err((Some(addr), _)) = &started {
                self.log.upstream = Some(*addr);
                tried.push(*addr);
            }
            let (addr, mut call) = match started {
                Ok(started) => started,
                Err((Some(_), error)) if self.moves_on(&error, &tried) => {
                    self.context.stats.retries.add(1);
                    continue;
                }
                Err((Some(addr), error)) if self.may_retry_on(&error, addr) => {
                    match self.retry_guard(&retry) {
                        Some(guard) => {
                            retry = Some((addr, guard));
                            continue;
                        }
                        None => return Err(CallFailure::after_start(error, body.complete)),
                    }
                }
                Err((_, error)) => return Err(CallFailure::after_start(error, body.complete)),
            };
            if !end_of_stream {
                let sent = self
                    .send_body(&mut call.body, &mut body, first.clone(), &mut timers)
                    .await;
                if let Err(error) = sent {
                    call.body.send_reset(h2::Reason::CANCEL);
                    return Err(CallFailure::after_start(error, body.complete));
                }
            }
            let relayed = self.relay_response(call, reply_to, &mut timers).await;
            match &relayed {
                Ok(done) if done.status == grpc_web::Code::Unavailable as u32 => {
                    self.record_failure(addr, "UNAVAILABLE".into())
                }
                Ok(_) => self.record_success(addr),
                Err(failure) => self.record(addr, &failure.error),
            }
            match relayed.map(|done| done.next) {
                // Refused before any processing (REFUSED_STREAM, above a GOAWAY's last stream
                // id) and nothing written to the client yet: safe to send elsewhere.
                Err(failure)
                    if replayable
                        && !failure.headers_sent
                        && self.may_retry_on(&failure.error, addr) =>
                {
                    match self.retry_guard(&retry) {
                        Some(guard) => retry = Some((addr, guard)),
                        None => return Err(failure),
                    }
                }
                result => return result,
            }
        }
    }

    /// Count a failed call against `addr` when the error says something about the endpoint's
    /// health (connect failures, UNAVAILABLE from upstream), and as a success otherwise.
    fn record(&self, addr: SocketAddr, error: &Error) {
        let about_endpoint = error.side() == crate::error::Side::Upstream
            && matches!(
                error.reply(),
                Reply::Grpc {
                    code: grpc_web::Code::Unavailable,
                    ..
                }
            );
        if about_endpoint {
            self.record_failure(addr, error.to_string());
        } else {
            self.record_success(addr);
        }
    }

    fn record_failure(&self, addr: SocketAddr, reason: String) {
        let set_len = self.context.directory.snapshot().endpoints.len();
        self.context.pool.record_outcome(addr, Err(reason), set_len);
    }

    fn record_success(&self, addr: SocketAddr) {
        self.context.pool.record_outcome(addr, Ok(()), 0);
    }

    /// Whether an attempt that reached no upstream (refused, timed out, no SETTINGS) moves on to
    /// an untried endpoint for free: it loaded no backend, and the endpoint that failed is out
    /// of this worker's rotation now, so the moves are bounded by the set (and by `Tried`).
    fn moves_on(&self, error: &Error, tried: &Tried) -> bool {
        upstream::reached_no_upstream(error)
            && !tried.is_full()
            && tried.leaves_untried(&self.context.directory.snapshot())
    }

    /// Whether `error` from `addr` may be retried, and somewhere it can succeed.
    fn may_retry_on(&self, error: &Error, addr: SocketAddr) -> bool {
        if !error.retry_safe() {
            return false;
        }
        error.retry_same_endpoint()
            || self
                .context
                .directory
                .snapshot()
                .endpoints
                .iter()
                .any(|e| *e != addr)
    }

    /// Permission for one more attempt, within the per-call limit and the worker's budget.
    fn retry_guard(&self, previous: &Option<(SocketAddr, RetryGuard)>) -> Option<RetryGuard> {
        let attempts = previous.as_ref().map_or(0, |(_, guard)| guard.attempt);
        let granted = self.context.retries.try_retry(attempts + 1);
        if granted.is_some() {
            self.context.stats.retries.add(1);
        }
        granted
    }

    /// Pick an endpoint (one not in `tried` when there is one) and start the upstream stream.
    /// On failure, the endpoint that failed is returned with the error, for a retry elsewhere.
    async fn start_call(
        &self,
        request: &UpstreamRequest<'_>,
        end_of_stream: bool,
        tried: &Tried,
    ) -> Result<(SocketAddr, Call), (Option<SocketAddr>, Error)> {
        let context = &self.context;
        let set = context.directory.snapshot();
        context.reconcile(&set);
        // Eligible: passing active health checks and available on this worker (not refused,
        // unreachable or ejected). The common case, where nothing is out, skips the
        // per-endpoint checks.
        let unhealthy = context.health.unhealthy();
        let picked = {
            let refused = context.refused.load();
            let eligible = |addr: SocketAddr| {
                (unhealthy.is_empty() || !unhealthy.contains(&addr))
                    && context.pool.available(addr, &refused)
            };
            context
                .balancer
                .pick(&set, tried, eligible, |addr| context.pool.in_flight(addr))
        };
        let addr = picked.ok_or((None, Error::NoEndpoint))?;
        context
            .pool
            .start_call(addr, || request.build(), end_of_stream)
            .await
            .map(|call| (addr, call))
            .map_err(|error| (Some(addr), error))
    }

    /// Stream the request body upstream: first what was buffered with the head, then the rest as
    /// it arrives, each piece waiting for HTTP/2 send capacity so a slow upstream holds the client
    /// back instead of filling memory.
    async fn send_body(
        &mut self,
        upstream: &mut SendStream<Bytes>,
        body: &mut BodyReader,
        first: Bytes,
        timers: &mut CallTimers,
    ) -> Result<(), Error> {
        if body.complete {
            // Already in memory and bounded by the body limit: no need to wait for capacity.
            return upstream.send_data(first, true).map_err(Error::H2);
        }
        send_with_capacity(upstream, first, false).await?;
        let read_timeout = self.context.limits.header_read_timeout;
        while !body.complete {
            let piece = body.drain_buffered(&mut self.buf)?;
            if !piece.is_empty() || body.complete {
                send_with_capacity(upstream, piece, body.complete).await?;
                continue;
            }
            let read = read_more(
                &mut self.stream,
                &mut self.buf,
                &self.context.stats,
                &self.received,
            );
            let read = monoio::select! {
                read = read => read,
                _ = self.timer.at(Instant::now() + read_timeout) => return Err(Error::RequestTimeout),
                _ = wait_deadline(&mut timers.deadline) => return Err(Error::DeadlineExceeded),
            };
            match read {
                Ok(n) if n > 0 => {}
                // The client went away mid-body: nobody is left to answer.
                _ => return Err(Error::RequestTimeout),
            }
        }
        Ok(())
    }

    /// Relay the upstream's response to the client as it arrives.
    async fn relay_response(
        &mut self,
        call: Call,
        reply_to: &ReplyTo,
        timers: &mut CallTimers,
    ) -> Result<Relayed, CallFailure> {
        let Call {
            response,
            body: mut upstream_body,
            lease,
        } = call;
        let grpc = reply_to
            .grpc
            .as_ref()
            .expect("relay_response is only called for gRPC calls");
        let mut upstream = UpstreamState::Head(response);
        let mut headers_sent = false;
        let mut unreleased_bytes = 0usize;
        let chunked = reply_to.version == Version::Http11;
        // The loop ends with the upstream's grpc-status.
        let status = loop {
            let event = match poll_now(&mut upstream) {
                Some(event) => event,
                None if !self.out.is_empty() => {
                    self.flush().await.map_err(CallFailure::client_gone)?;
                    release(&mut upstream, &mut unreleased_bytes);
                    continue;
                }
                None => self.wait_event(&mut upstream, timers).await,
            };
            match event {
                Event::Headers(response) => {
                    match self.response_head(response, reply_to, grpc, chunked) {
                        HeadOutcome::Streaming(recv) => {
                            headers_sent = true;
                            upstream = UpstreamState::Body(recv);
                        }
                        HeadOutcome::TrailersOnly { status } => break parse_status(&status),
                        HeadOutcome::NotGrpc(status) => {
                            upstream_body.send_reset(h2::Reason::CANCEL);
                            return Err(CallFailure::after_body(
                                Error::UpstreamHttpStatus(status),
                                false,
                            ));
                        }
                        HeadOutcome::Failed(error) => {
                            return Err(CallFailure::after_body(error, false));
                        }
                    }
                }
                Event::Data(data) => {
                    unreleased_bytes += data.len();
                    self.out.body_piece(data, grpc.text, chunked);
                    if self.out.len_bytes() >= OUTPUT_FLUSH_BYTES
                        || self.out.slices() >= OUTPUT_SLICES_MAX
                    {
                        self.flush().await.map_err(CallFailure::client_gone)?;
                        release(&mut upstream, &mut unreleased_bytes);
                    }
                }
                Event::Trailers(trailers) => {
                    let trailers = trailers.unwrap_or_default();
                    let Some(status) = trailers.get("grpc-status") else {
                        let error =
                            Error::UpstreamProtocol("upstream trailers carry no grpc-status");
                        return Err(CallFailure::after_body(error, headers_sent));
                    };
                    let status = parse_status(status.as_bytes());
                    self.out.trailer_frame(
                        trailers
                            .iter()
                            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
                        grpc.text,
                        chunked,
                    );
                    break status;
                }
                Event::Failed(error) => {
                    upstream_body.send_reset(h2::Reason::CANCEL);
                    return Err(CallFailure::after_body(error, headers_sent));
                }
                Event::ClientGone => {
                    upstream_body.send_reset(h2::Reason::CANCEL);
                    // The client left: nothing to say about the endpoint.
                    self.context.stats.call_finished(
                        grpc_web::Code::Cancelled as u32,
                        reply_to.started.elapsed(),
                    );
                    self.log.http_status = 499;
                    self.log.grpc_status = Some(grpc_web::Code::Cancelled as u32);
                    return Ok(Relayed {
                        next: Next::Close,
                        status: grpc_web::Code::Cancelled as u32,
                    });
                }
            }
        };
        drop(lease);
        self.flush().await.map_err(CallFailure::client_gone)?;
        // A close-delimited HTTP/1.0 body ends only when the connection does.
        let keep_alive = reply_to.keep_alive && (chunked || !headers_sent);
        self.context
            .stats
            .call_finished(status, reply_to.started.elapsed());
        self.log.http_status = 200;
        self.log.grpc_status = Some(status);
        Ok(Relayed {
            next: if keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            },
            status,
        })
    }

    /// Wait for the next upstream event, the call's deadline, or (after a short delay) the client
    /// socket becoming readable, which means it closed or pipelined its next request.
    async fn wait_event(&mut self, upstream: &mut UpstreamState, timers: &mut CallTimers) -> Event {
        if timers.watch == Watch::Pending {
            timers.watch = Watch::From(Instant::now() + CLIENT_WATCH_DELAY);
        }
        loop {
            let watch_from = match timers.watch {
                Watch::From(at) => Some(at),
                _ => None,
            };
            let readable = monoio::select! {
                event = poll_fn(|cx| poll_upstream(upstream, cx)) => return event,
                _ = wait_deadline(&mut timers.deadline) => return Event::Failed(Error::DeadlineExceeded),
                _ = wait_until(&mut self.timer, watch_from) => {
                    timers.watch = Watch::On;
                    continue;
                }
                readable = client_readable(timers.watch, &self.stream) => readable,
            };
            if readable.is_err() {
                return Event::ClientGone;
            }
            // Readable: either EOF (the client left) or its next pipelined request, which stays
            // in the buffer. The read drained the socket, so watching goes on (a later close is
            // still noticed) until the buffer holds a whole head's worth: past that the client
            // is not waiting for this call, and reading on would only grow the buffer.
            match read_more(
                &mut self.stream,
                &mut self.buf,
                &self.context.stats,
                &self.received,
            )
            .await
            {
                Ok(0) | Err(_) => return Event::ClientGone,
                Ok(_) if self.buf.len() >= self.context.limits.head.header_bytes_max => {
                    timers.watch = Watch::Off
                }
                Ok(_) => {}
            }
        }
    }

    /// Write the response head for an upstream response; decide how the call continues.
    fn response_head(
        &mut self,
        response: http::Response<RecvStream>,
        reply_to: &ReplyTo,
        grpc: &GrpcReply,
        chunked: bool,
    ) -> HeadOutcome {
        let (parts, recv) = response.into_parts();
        let is_grpc = parts.status == http::StatusCode::OK
            && parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc {
            return HeadOutcome::NotGrpc(parts.status.as_u16());
        }
        let trailers_only = recv.is_end_stream();
        if trailers_only && !parts.headers.contains_key("grpc-status") {
            return HeadOutcome::Failed(Error::UpstreamProtocol(
                "upstream ended the call without grpc-status",
            ));
        }
        let metadata = || {
            parts
                .headers
                .iter()
                .filter(|(name, _)| is_forwardable_response_header(name))
        };
        let cors = self.context.cors.actual_headers(
            reply_to.origin.as_ref(),
            metadata().map(|(name, _)| name.as_str().as_bytes()),
        );
        let head_out = self.out.scratch();
        http1::write_status_line(head_out, reply_to.version, 200);
        http1::write_header(head_out, b"content-type", &grpc.content_type);
        for (name, value) in metadata() {
            http1::write_header(head_out, name.as_str().as_bytes(), value.as_bytes());
        }
        for (name, value) in &cors {
            http1::write_header(head_out, name, value);
        }
        if trailers_only {
            http1::write_header(head_out, b"content-length", b"0");
            write_connection_header(head_out, reply_to.version, reply_to.keep_alive);
            http1::finish_head(head_out);
            let status = parts
                .headers
                .get("grpc-status")
                .map_or(Vec::new(), |s| s.as_bytes().to_vec());
            return HeadOutcome::TrailersOnly { status };
        }
        if chunked {
            http1::write_header(head_out, b"transfer-encoding", b"chunked");
        }
        write_connection_header(head_out, reply_to.version, reply_to.keep_alive && chunked);
        http1::finish_head(head_out);
        HeadOutcome::Streaming(recv)
    }

    /// The one place local answers are written, from [`Error::reply`].
    async fn reply_error(
        &mut self,
        error: &Error,
        reply_to: &ReplyTo,
        headers_sent: bool,
    ) -> std::io::Result<()> {
        let chunked = reply_to.version == Version::Http11;
        match error.reply() {
            Reply::Http { status, reason } => {
                self.context.stats.local_http(status);
                self.log.http_status = status;
                let cors = self
                    .context
                    .cors
                    .actual_headers(reply_to.origin.as_ref(), []);
                let head_out = self.out.scratch();
                http1::write_status_line(head_out, reply_to.version, status);
                http1::write_header(head_out, b"content-type", b"text/plain");
                http1::write_content_length(head_out, reason.len() + 1);
                for (name, value) in &cors {
                    http1::write_header(head_out, name, value);
                }
                http1::write_header(head_out, b"connection", b"close");
                http1::finish_head(head_out);
                head_out.extend_from_slice(reason.as_bytes());
                head_out.extend_from_slice(b"\n");
            }
            Reply::Grpc { code, message } => {
                self.context
                    .stats
                    .call_finished(code as u32, reply_to.started.elapsed());
                self.log.http_status = 200;
                self.log.grpc_status = Some(code as u32);
                let mut encoded_message = Vec::with_capacity(message.len());
                grpc_web::encode_grpc_message(&message, &mut encoded_message);
                let status: (&[u8], &[u8]) = (b"grpc-status", code.as_str().as_bytes());
                let message: (&[u8], &[u8]) = (b"grpc-message", &encoded_message);
                let text = reply_to.grpc.as_ref().is_some_and(|g| g.text);
                if headers_sent {
                    self.out.trailer_frame([status, message], text, chunked);
                } else {
                    let cors = self
                        .context
                        .cors
                        .actual_headers(reply_to.origin.as_ref(), []);
                    let content_type = reply_to
                        .grpc
                        .as_ref()
                        .map_or(GRPC_WEB_PROTO, |g| &g.content_type[..]);
                    let head_out = self.out.scratch();
                    http1::write_status_line(head_out, reply_to.version, 200);
                    http1::write_header(head_out, b"content-type", content_type);
                    http1::write_header(head_out, status.0, status.1);
                    http1::write_header(head_out, message.0, message.1);
                    for (name, value) in &cors {
                        http1::write_header(head_out, name, value);
                    }
                    http1::write_header(head_out, b"content-length", b"0");
                    write_connection_header(head_out, reply_to.version, reply_to.keep_alive);
                    http1::finish_head(head_out);
                }
            }
        }
        self.flush().await
    }

    /// Write what is gathered. A client that stops reading for the idle timeout is dropped, so
    /// it cannot pin the connection, its buffers and an upstream stream forever.
    async fn flush(&mut self) -> std::io::Result<()> {
        let bytes = self.out.len_bytes() as u64;
        self.context.stats.bytes_sent.add(bytes);
        self.sent += bytes;
        let idle_timeout = self.context.limits.idle_timeout;
        let fd = self.stream.as_raw_fd();
        let write = self.out.flush(&mut self.stream);
        let mut write = std::pin::pin!(write);
        monoio::select! {
            result = &mut write => result,
            _ = self.timer.at(Instant::now() + idle_timeout) => {
                // The write must not be dropped while in flight: with io_uring the kernel may
                // still read the buffers it owns. Shutting the socket down makes it fail now.
                // SAFETY: `fd` is this connection's open socket; shutdown does not close it.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                let _ = write.await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client did not read its response within the idle timeout",
                ))
            }
        }
    }
}

/// A failed request: the error, and what it means for the connection.
struct CallFailure {
    error: Error,
    /// The whole request body was read, so the next request starts at the front of the buffer.
    body_consumed: bool,
    /// The response head went out; a gRPC error must be sent as a trailer frame.
    headers_sent: bool,
}

impl CallFailure {
    fn before_body(error: Error) -> Self {
        CallFailure {
            error,
            body_consumed: false,
            headers_sent: false,
        }
    }
    fn after_body(error: Error, headers_sent: bool) -> Self {
        CallFailure {
            error,
            body_consumed: true,
            headers_sent,
        }
    }
    /// A failure once the request head was accepted: whether the connection can go on depends
    /// on whether the body was read to its end.
    fn after_start(error: Error, body_consumed: bool) -> Self {
        CallFailure {
            error,
            body_consumed,
            headers_sent: false,
        }
    }
    fn client_gone(e: std::io::Error) -> Self {
        CallFailure::before_body(Error::ClientClosed(e))
    }
}

fn is_grpc_reply(error: &Error) -> bool {
    matches!(error.reply(), Reply::Grpc { .. })
}

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

/// A call relayed to its end: what comes next on the connection, and whether the upstream
/// answered UNAVAILABLE (which counts against it for outlier ejection).
struct Relayed {
    next: Next,
    /// The upstream's grpc-status.
    status: u32,
}

/// A grpc-status header value as a number; anything unreadable counts as UNKNOWN.
fn parse_status(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(grpc_web::Code::Unknown as u32)
}

enum HeadOutcome {
    Streaming(RecvStream),
    /// The upstream's whole answer was its headers; `status` is its grpc-status.
    TrailersOnly {
        status: Vec<u8>,
    },
    NotGrpc(u16),
    Failed(Error),
}

/// Where the upstream response stands.
enum UpstreamState {
    Head(ResponseFuture),
    Body(RecvStream),
}

enum Event {
    Headers(http::Response<RecvStream>),
    Data(Bytes),
    Trailers(Option<HeaderMap>),
    Failed(Error),
    ClientGone,
}

fn poll_upstream(state: &mut UpstreamState, cx: &mut Context<'_>) -> Poll<Event> {
    match state {
        UpstreamState::Head(response) => Pin::new(response).poll(cx).map(|result| match result {
            Ok(response) => Event::Headers(response),
            Err(e) => Event::Failed(Error::H2(e)),
        }),
        UpstreamState::Body(recv) => match recv.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => Poll::Ready(Event::Data(data)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Event::Failed(Error::H2(e))),
            Poll::Ready(None) => recv.poll_trailers(cx).map(|result| match result {
                Ok(trailers) => Event::Trailers(trailers),
                Err(e) => Event::Failed(Error::H2(e)),
            }),
            Poll::Pending => Poll::Pending,
        },
    }
}

use std::future::Future;

/// Poll the upstream once without waiting: what is already there is gathered before a flush.
fn poll_now(state: &mut UpstreamState) -> Option<Event> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match poll_upstream(state, &mut cx) {
        Poll::Ready(event) => Some(event),
        Poll::Pending => None,
    }
}

/// Give HTTP/2 flow-control credit back once relayed bytes were written to the client.
fn release(state: &mut UpstreamState, unreleased_bytes: &mut usize) {
    if let UpstreamState::Body(recv) = state {
        if *unreleased_bytes > 0 {
            let _ = recv.flow_control().release_capacity(*unreleased_bytes);
        }
    }
    *unreleased_bytes = 0;
}

/// Fire at `deadline` (coarsely), or never.
async fn wait_until(timer: &mut CoarseTimer, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => timer.at(deadline).await,
        None => std::future::pending().await,
    }
}

/// A call's deadline and the state of the client watch, kept across attempts.
struct CallTimers {
    /// `grpc-timeout` is the one deadline kept precisely: boxed, and made only when the client
    /// sent one (monoio's `Sleep` is 640 bytes; see coarse_timer).
    deadline: Option<Pin<Box<monoio::time::Sleep>>>,
    watch: Watch,
}

async fn wait_deadline(deadline: &mut Option<Pin<Box<monoio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Watching the client socket during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Not yet: the delay starts at the call's first wait.
    Pending,
    /// The socket is watched from this instant (`CLIENT_WATCH_DELAY` into the call).
    From(Instant),
    /// The socket is watched.
    On,
    /// The client pipelined a head's worth of bytes; stop reading until this call ends.
    Off,
}

impl CallTimers {
    fn new(deadline: Option<Instant>) -> Self {
        CallTimers {
            deadline: deadline.map(|d| Box::pin(monoio::time::sleep_until(d.into()))),
            watch: Watch::Pending,
        }
    }
}

async fn client_readable(watch: Watch, stream: &TcpStream) -> std::io::Result<()> {
    if watch != Watch::On {
        return std::future::pending().await;
    }
    stream.readable(false).await
}

/// Resolves when the worker's drain begins, for an idle connection; never otherwise.
async fn drain_began(context: &WorkerContext, idle: bool) {
    if !idle || context.draining.get() {
        return std::future::pending().await;
    }
    context.drain_started.notified().await
}

/// Read more bytes from the client into the free room at the end of `buf`.
async fn read_more(
    stream: &mut TcpStream,
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

/// Send `data` once HTTP/2 grants capacity for it, piece by piece.
async fn send_with_capacity(
    upstream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end_of_stream: bool,
) -> Result<(), Error> {
    while !data.is_empty() {
        upstream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| upstream.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            Some(Err(e)) => return Err(Error::H2(e)),
            None => {
                return Err(Error::UpstreamProtocol(
                    "upstream closed the stream while receiving the request",
                ))
            }
        };
        let piece = data.split_to(granted.min(data.len()));
        upstream
            .send_data(piece, end_of_stream && data.is_empty())
            .map_err(Error::H2)?;
    }
    if end_of_stream && data.is_empty() {
        // Zero-length DATA with END_STREAM when the last piece was already sent.
        let _ = upstream.send_data(Bytes::new(), true);
    }
    Ok(())
}

/// The call's deadline from `grpc-timeout`, capped by `--grpc-timeout-max-ms`.
fn call_deadline(head: &RequestHead, cap: Option<Duration>) -> Option<Instant> {
    let asked = find_header(head, b"grpc-timeout").and_then(|v| grpc_web::parse_grpc_timeout(&v));
    let timeout = match (asked, cap) {
        (Some(asked), Some(cap)) => Some(asked.min(cap)),
        (asked, None) => asked,
        (None, cap) => cap,
    }?;
    Some(Instant::now() + timeout)
}

fn find_header(head: &RequestHead, name: &[u8]) -> Option<Bytes> {
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

/// The response content type: the request's own, or its text variant (same `+suffix`) when the
/// client asked for text with `Accept`.
fn text_aware_content_type(content_type: &WebContentType, text: bool) -> Bytes {
    if !text || content_type.text {
        return content_type.response.clone();
    }
    let suffix =
        &content_type.upstream[b"application/grpc".len().min(content_type.upstream.len())..];
    let mut text_type = BytesMut::with_capacity(32 + suffix.len());
    text_type.extend_from_slice(b"application/grpc-web-text");
    text_type.extend_from_slice(suffix);
    text_type.freeze()
}

fn write_connection_header(out: &mut BytesMut, version: Version, keep_alive: bool) {
    match (version, keep_alive) {
        (Version::Http11, false) => http1::write_header(out, b"connection", b"close"),
        (Version::Http10, true) => http1::write_header(out, b"connection", b"keep-alive"),
        _ => {}
    }
}

/// Response headers that are passed on to the client as initial metadata.
fn is_forwardable_response_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-type"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// Request headers that never travel upstream: hop-by-hop ones (RFC 9110 §7.6.1) and the ones
/// the translation replaces.
fn is_dropped_request_header(name: &[u8]) -> bool {
    const DROPPED: &[&[u8]] = &[
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"content-length",
        b"expect",
        b"content-type",
        b"grpc-timeout",
    ];
    DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// The upstream request head, translated from the downstream one. The first attempt takes the
/// translated headers as they are; a retry (rare) translates them again rather than every call
/// paying for a copy it almost never needs.
struct UpstreamRequest<'a> {
    head: &'a RequestHead,
    content_type: &'a WebContentType,
    deadline: Option<Instant>,
    uri: Uri,
    first: std::cell::Cell<Option<HeaderMap>>,
}

impl<'a> UpstreamRequest<'a> {
    fn new(
        head: &'a RequestHead,
        content_type: &'a WebContentType,
        deadline: Option<Instant>,
    ) -> Result<Self, Error> {
        let authority = head.host.clone().ok_or_else(|| malformed("missing host"))?;
        let path = PathAndQuery::from_maybe_shared(origin_form(&head.path))
            .map_err(|_| malformed("bad request target"))?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority =
            Some(Authority::from_maybe_shared(authority).map_err(|_| malformed("bad host"))?);
        parts.path_and_query = Some(path);
        let uri = Uri::from_parts(parts).map_err(|_| malformed("bad request target"))?;
        let headers = translate_headers(head, content_type, deadline)?;
        Ok(UpstreamRequest {
            head,
            content_type,
            deadline,
            uri,
            first: std::cell::Cell::new(Some(headers)),
        })
    }

    fn build(&self) -> Request<()> {
        let headers = self.first.take().unwrap_or_else(|| {
            translate_headers(self.head, self.content_type, self.deadline)
                .expect("the same head translated without error in new()")
        });
        let mut request = Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        request
    }
}

fn malformed(reason: &'static str) -> Error {
    Error::Http1(http1::Http1Error::Malformed(reason))
}

/// The upstream headers: hop-by-hop ones (and those named in `Connection`) dropped, metadata
/// passed on, `content-type: application/grpc…`, `te: trailers`, and the effective deadline.
fn translate_headers(
    head: &RequestHead,
    content_type: &WebContentType,
    deadline: Option<Instant>,
) -> Result<HeaderMap, Error> {
    let nominated = connection_nominated(head);
    // Sized for what is sent, without a pass of its own: the head's field count less the fields
    // the parser already found and that are never forwarded (Host, Content-Type, a body's
    // framing header), plus what is added. An upper bound: other dropped fields still count. A
    // HeaderMap entry is over 100 bytes and lives until h2 has written the HEADERS frame;
    // sizing by the whole head doubled its allocation.
    let known_dropped = usize::from(head.host.is_some())
        + usize::from(head.content_type.is_some())
        + usize::from(!matches!(head.body, BodyKind::Empty));
    let added = 2 + usize::from(deadline.is_some());
    let mut headers =
        HeaderMap::with_capacity(head.headers.len().saturating_sub(known_dropped) + added);
    for h in &head.headers {
        if is_dropped_request_header(&h.name)
            || nominated.iter().any(|n| n.eq_ignore_ascii_case(&h.name))
        {
            continue;
        }
        let name = HeaderName::from_bytes(&h.name).map_err(|_| malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(h.value.clone())
            .map_err(|_| malformed("bad header value"))?;
        headers.append(name, value);
    }
    let content_type = HeaderValue::from_maybe_shared(content_type.upstream.clone())
        .map_err(|_| malformed("bad content-type"))?;
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(deadline) = deadline {
        headers.insert("grpc-timeout", grpc_timeout_value(deadline));
    }
    Ok(headers)
}

/// The remaining time as a `grpc-timeout` value, so the upstream sees the capped deadline.
fn grpc_timeout_value(deadline: Instant) -> HeaderValue {
    let remaining_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{remaining_ms}m"))
        .expect("digits and 'm' are a valid header value")
}

/// Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
fn connection_nominated(head: &RequestHead) -> Vec<&[u8]> {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|h| http1::list_elements(&h.value))
        .filter(|token| !token.is_empty())
        .collect()
}

/// An absolute-form target (`http://host/path`) is reduced to its path for `:path`.
fn origin_form(target: &Bytes) -> Bytes {
    if target.starts_with(b"/") {
        return target.clone();
    }
    let after_scheme = target
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |i| i + 3);
    match target[after_scheme..].iter().position(|b| *b == b'/') {
        Some(slash) => target.slice(after_scheme + slash..),
        None => Bytes::from_static(b"/"),
    }
}

/// Reads a request body from the connection's buffer: Content-Length or chunked, optionally
/// base64-decoded (grpc-web-text).
struct BodyReader {
    framing: Framing,
    text: Option<(Base64Decoder, BytesMut)>,
    complete: bool,
}

enum Framing {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
}

impl BodyReader {
    fn new(head: &RequestHead, body_bytes_max: u64, text: bool) -> Self {
        let framing = match head.body {
            BodyKind::Empty => Framing::Length { remaining: 0 },
            BodyKind::Length(n) => Framing::Length { remaining: n },
            BodyKind::Chunked => Framing::Chunked(ChunkedDecoder::new(body_bytes_max)),
        };
        let complete = matches!(framing, Framing::Length { remaining: 0 });
        BodyReader {
            framing,
            text: text.then(|| (Base64Decoder::new(), BytesMut::new())),
            complete,
        }
    }

    /// Take all body bytes currently in `buf` (split off, not copied) and, in text mode, decode
    /// them. Sets `complete` when the body's end was reached.
    fn drain_buffered(&mut self, buf: &mut BytesMut) -> Result<Bytes, Error> {
        let raw = self.drain_framed(buf)?;
        let Some((decoder, decoded)) = &mut self.text else {
            return Ok(raw.into());
        };
        for piece in &raw {
            decoder
                .decode(piece, decoded)
                .map_err(|_| Error::BadBase64)?;
        }
        if self.complete {
            decoder.finish(decoded).map_err(|_| Error::BadBase64)?;
        }
        Ok(decoded.split().freeze())
    }

    /// The framed body bytes now available: one slice for Content-Length; for chunked, the
    /// slices of every chunk piece buffered (joined only if there are several).
    fn drain_framed(&mut self, buf: &mut BytesMut) -> Result<RawPieces, Error> {
        match &mut self.framing {
            Framing::Length { remaining } => {
                let take = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= take as u64;
                self.complete = *remaining == 0;
                Ok(RawPieces::one(buf.split_to(take).freeze()))
            }
            Framing::Chunked(decoder) => {
                let mut pieces = RawPieces::default();
                while let Some(event) = decoder.decode(buf)? {
                    match event {
                        ChunkEvent::Data(data) => pieces.push(data),
                        ChunkEvent::End => {
                            self.complete = true;
                            break;
                        }
                    }
                }
                Ok(pieces)
            }
        }
    }
}

/// Body slices from one drain; usually one.
#[derive(Default)]
struct RawPieces(Vec<Bytes>);

impl RawPieces {
    fn one(bytes: Bytes) -> Self {
        RawPieces(vec![bytes])
    }
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.0.push(bytes);
        }
    }
}

impl<'a> IntoIterator for &'a RawPieces {
    type Item = &'a Bytes;
    type IntoIter = std::slice::Iter<'a, Bytes>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<RawPieces> for Bytes {
    fn from(pieces: RawPieces) -> Bytes {
        match pieces.0.len() {
            0 => Bytes::new(),
            1 => pieces.0.into_iter().next().expect("length checked"),
            _ => {
                // Several chunks arrived in one read: join them so the upstream gets one DATA
                // frame instead of one per client chunk.
                let mut joined = BytesMut::with_capacity(pieces.0.iter().map(Bytes::len).sum());
                for piece in &pieces.0 {
                    joined.extend_from_slice(piece);
                }
                joined.freeze()
            }
        }
    }
}

/// Response bytes gathered for one vectored write: slices of upstream DATA frames (never
/// copied in binary mode) interleaved with small framing bytes written into `scratch`.
#[derive(Default)]
struct Output {
    slices: IoSlices,
    scratch: BytesMut,
}

impl Output {
    /// Room for head and framing bytes; they are sealed into a slice before the next data slice.
    fn scratch(&mut self) -> &mut BytesMut {
        // 512 bytes hold a typical response head, chunk framing and trailer frame; the
        // allocation lives until the response is written, so in-flight calls each hold one.
        if self.scratch.capacity() - self.scratch.len() < 256 {
            self.scratch.reserve(512);
        }
        &mut self.scratch
    }

    fn seal_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.slices.push(self.scratch.split().freeze());
        }
    }

    fn push(&mut self, bytes: Bytes) {
        self.seal_scratch();
        self.slices.push(bytes);
    }

    fn push_static(&mut self, bytes: &'static [u8]) {
        self.push(Bytes::from_static(bytes));
    }

    /// One upstream DATA frame as response body: a chunk of its own in HTTP/1.1, base64-encoded
    /// in text mode (each flush padded, so the client can decode it without waiting for more).
    fn body_piece(&mut self, data: Bytes, text: bool, chunked: bool) {
        if data.is_empty() {
            return;
        }
        if text {
            let mut encoded = BytesMut::with_capacity(data.len().div_ceil(3) * 4);
            grpc_web::encode_base64_flush(&data, &mut encoded);
            self.chunk(encoded.freeze(), chunked);
        } else {
            self.chunk(data, chunked);
        }
    }

    fn chunk(&mut self, data: Bytes, chunked: bool) {
        if chunked {
            let (line, len) = http1::chunk_size_line(data.len());
            self.scratch().extend_from_slice(&line[..len]);
            self.push(data);
            self.scratch().extend_from_slice(CRLF);
        } else {
            self.push(data);
        }
    }

    /// The trailers as the final gRPC-Web frame, then the end of the chunked body.
    fn trailer_frame<'a>(
        &mut self,
        trailers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        text: bool,
        chunked: bool,
    ) {
        let mut frame = BytesMut::with_capacity(64);
        grpc_web::encode_trailer_frame(trailers, &mut frame);
        self.body_piece(frame.freeze(), text, chunked);
        if chunked {
            self.scratch().extend_from_slice(LAST_CHUNK);
        }
    }

    fn is_empty(&self) -> bool {
        self.slices.bufs.is_empty() && self.scratch.is_empty()
    }

    fn len_bytes(&self) -> usize {
        self.slices.bufs.iter().map(Bytes::len).sum::<usize>() + self.scratch.len()
    }

    fn slices(&self) -> usize {
        self.slices.bufs.len()
    }

    /// Write everything gathered with vectored writes, resuming after partial writes.
    ///
    /// monoio 0.2.4's `write_vectored_all` does not advance the iovec base after a partial
    /// write (`IoVecMeta::consume` discards `iov_base.add(amt)`), which cut large responses to
    /// slow readers; this loop advances the `Bytes` slices themselves instead.
    async fn flush(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        self.seal_scratch();
        let mut slices = std::mem::take(&mut self.slices);
        let mut result = Ok(());
        while !slices.bufs.is_empty() {
            slices.prepare();
            let (written, returned) = stream.writev(slices).await;
            slices = returned;
            match written {
                Ok(0) => {
                    result = Err(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => slices.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        slices.clear();
        self.slices = slices;
        // Give the scratch allocation back rather than keep it per idle connection; the next
        // response allocates a fresh one.
        self.scratch = BytesMut::new();
        result
    }
}

/// Owned `Bytes` plus the iovecs pointing into them, handed to the io driver as one value so
/// the memory stays alive until the kernel is done with it.
#[derive(Default)]
struct IoSlices {
    iovecs: Vec<libc::iovec>,
    bufs: Vec<Bytes>,
}

impl IoSlices {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.bufs.push(bytes);
        }
    }

    fn prepare(&mut self) {
        self.iovecs.clear();
        self.iovecs.extend(self.bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
    }

    /// Drop the first `written` bytes: whole slices, then the front of a partly written one.
    fn advance(&mut self, mut written: usize) {
        let done = self
            .bufs
            .iter()
            .take_while(|b| {
                let whole = b.len() <= written;
                if whole {
                    written -= b.len();
                }
                whole
            })
            .count();
        self.bufs.drain(..done);
        if written > 0 {
            bytes::Buf::advance(&mut self.bufs[0], written);
        }
    }

    fn clear(&mut self) {
        self.iovecs.clear();
        self.bufs.clear();
    }
}

// SAFETY: the iovecs point into `bufs`, whose heap memory does not move or change while the
// value is owned by the driver (Bytes are immutable and `bufs` is not touched during the write).
unsafe impl IoVecBuf for IoSlices {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}
