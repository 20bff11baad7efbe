//! One gRPC call through the proxy, whatever protocol the client spoke.
//!
//! A downstream protocol (gRPC-Web over HTTP/1.1 today; HTTP/2, native gRPC and Connect plug in
//! the same way) parses its request, translates the head ([`crate::translate`]) and hands the
//! call three things: the upstream head ([`CallRequest`]), the part of the body it already has
//! ([`Body`]), and itself as the [`Downstream`]: the source of the rest of the body and the sink
//! of the response. [`run`] then does everything that does not depend on the framing:
//!
//! 1. pick an endpoint (`endpoints::Balancer` over the current snapshot, skipping unhealthy and
//!    ejected ones) and start the HTTP/2 stream on this worker's pool ([`crate::upstream`]);
//! 2. send the body: a body already complete goes out with the head; otherwise pieces are
//!    pumped as they arrive, each waiting for HTTP/2 send capacity, while the response is
//!    relayed (full duplex);
//! 3. relay the response as events ([`Downstream::head`], [`Downstream::data`],
//!    [`Downstream::trailers`], or [`Downstream::trailers_only`]), gathering what is ready and
//!    flushing when the upstream has nothing more, and giving HTTP/2 flow-control credit back
//!    only once the bytes reached the client;
//! 4. watch the call's deadline and the client: an expired `grpc-timeout` or a client that went
//!    away resets the upstream stream;
//! 5. retry what provably was not processed ([`crate::retry`]), and record each attempt's
//!    outcome for outlier ejection;
//! 6. end every call with a status: the upstream's, or one the proxy decides
//!    ([`Downstream::fail`]), counted in the worker's statistics.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::header::{self, HeaderMap};
use http::response::Parts;
use http::{Request, Uri};
use tracing::debug;

use crate::context::WorkerContext;
use crate::endpoints::Tried;
use crate::error::{Error, Side};
use crate::retry::{retry_safe, retry_same_endpoint, RetryGuard};
use crate::status::{parse_status, Code};
use crate::upstream::{self, Call};

/// The upstream request head of a call. The first attempt takes the translated headers as they
/// are; a retry (rare) has them translated again rather than every call paying for a copy it
/// almost never needs.
pub struct CallRequest<'a> {
    uri: Uri,
    first: std::cell::Cell<Option<HeaderMap>>,
    rebuild: &'a dyn Fn() -> HeaderMap,
    deadline: Option<Instant>,
}

impl<'a> CallRequest<'a> {
    /// `headers` for the first attempt; `rebuild` makes them again for a retry. `deadline` is
    /// the call's effective deadline, already reflected in the headers' `grpc-timeout`.
    pub fn new(
        uri: Uri,
        headers: HeaderMap,
        rebuild: &'a dyn Fn() -> HeaderMap,
        deadline: Option<Instant>,
    ) -> Self {
        CallRequest {
            uri,
            first: std::cell::Cell::new(Some(headers)),
            rebuild,
            deadline,
        }
    }

    fn build(&self) -> Request<()> {
        let headers = self.first.take().unwrap_or_else(|| (self.rebuild)());
        let mut request = Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        request
    }
}

/// The request body as the call starts: what the downstream already has, and whether that is
/// all of it. A complete body is kept (a reference, not a copy) so that a call the upstream
/// provably did not process can be sent again; a streamed body cannot be replayed.
pub struct Body {
    pub first: Bytes,
    pub complete: bool,
}

/// A piece of the request body after the first.
pub struct BodyPiece {
    pub data: Bytes,
    /// The body ends with this piece.
    pub last: bool,
}

/// What the client did while the call waited.
pub enum ClientEvent {
    /// More of the request body.
    Body(BodyPiece),
    /// The client went away (closed the connection, reset the stream).
    Gone,
    /// The client broke its protocol or the body's limits; the call ends with this error.
    Failed(Error),
}

/// The client side of one call, implemented once per downstream protocol and framing.
///
/// The response methods only gather output; [`Downstream::flush`] writes it. The call flushes
/// whenever the upstream has nothing more ready, or when [`Downstream::output_full`] says so.
// Not `Send`: a call lives on one worker thread, so the futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Downstream {
    /// Wait for the client: its next body piece when `want_body` (only while the body is not
    /// complete), or its going away. Must be safe to drop at any point: the call drops it
    /// whenever an upstream event comes first.
    async fn client_event(&mut self, want_body: bool) -> ClientEvent;

    /// The upstream's response head, for a response with a body to follow.
    fn head(&mut self, head: &Parts);
    /// Response bytes as the upstream sent them (gRPC length-prefixed messages, in arbitrary
    /// pieces). An error ends the call (a protocol whose translation cannot carry these
    /// bytes; the downstream has then decided its answer, and `fail` writes it).
    fn data(&mut self, data: Bytes) -> Result<(), Error>;
    /// The upstream's trailers; `grpc-status` is among them. The response ends here.
    fn trailers(&mut self, trailers: &HeaderMap);
    /// A response that is only a head carrying `grpc-status` (trailers-only). The response
    /// ends here.
    fn trailers_only(&mut self, head: &Parts);
    /// End the call with `error` instead: as a trailers-only reply (or the framing's own error
    /// reply) when `head_sent` is false, in the trailers otherwise. Returns what the client is
    /// told: an HTTP refusal or a gRPC status.
    fn fail(&mut self, error: &Error, head_sent: bool) -> End;

    /// Whether output is gathered and not yet written.
    fn has_output(&self) -> bool;
    /// Whether enough output is gathered that it must be written before more is taken.
    fn output_full(&self) -> bool;
    /// Write what is gathered. An error means the client is gone.
    async fn flush(&mut self) -> Result<(), Error>;
}

/// How a call ended, for the downstream's connection handling and access log.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    /// The endpoint of the last attempt, if one was picked.
    pub upstream: Option<SocketAddr>,
    /// Whether the whole request body was taken from the client.
    pub body_complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client was told this grpc-status (the upstream's, or the proxy's).
    Status(u32),
    /// The downstream's protocol was broken before the response began; the client was answered
    /// with this HTTP status and the connection must close.
    Refused(u16),
    /// The client went away; the upstream stream was cancelled.
    ClientGone,
}

/// Run one call to its end. `started` is when the request head was parsed (for the duration
/// histogram).
pub async fn run<D: Downstream>(
    context: &Rc<WorkerContext>,
    request: &CallRequest<'_>,
    body: Body,
    downstream: &mut D,
    started: Instant,
) -> Outcome {
    let _active = context.retries.call_started();
    let mut call = CallState {
        context,
        deadline: request
            .deadline
            .map(|d| Box::pin(monoio::time::sleep_until(d.into()))),
        head_sent: false,
        body_complete: body.complete,
        upstream: None,
        headers_due: None,
    };
    let result = call.attempts(request, body, downstream).await;
    let end = match result {
        Ok(status) => {
            context.stats.call_finished(status, started.elapsed());
            End::Status(status)
        }
        Err(Error::ClientClosed(e)) => {
            // Nothing can be answered; the call counts as cancelled by the client.
            debug!(error = %e, "client went away during the call");
            context
                .stats
                .call_finished(Code::Cancelled as u32, started.elapsed());
            End::ClientGone
        }
        Err(error) => {
            debug!(error = %error, "call failed");
            call.fail(&error, downstream, started).await
        }
    };
    Outcome {
        end,
        upstream: call.upstream,
        body_complete: call.body_complete,
    }
}

/// A call's state across its attempts.
struct CallState<'c> {
    context: &'c Rc<WorkerContext>,
    /// `grpc-timeout` is the one deadline kept precisely: boxed, and made only when the client
    /// sent one (monoio's `Sleep` is 640 bytes; see coarse_timer).
    deadline: Option<Pin<Box<monoio::time::Sleep>>>,
    /// The response head was given to the downstream: a failure must go in the trailers, and
    /// the call can no longer be retried.
    head_sent: bool,
    body_complete: bool,
    upstream: Option<SocketAddr>,
    /// When the attempt in progress must have its response headers
    /// (`--response-headers-timeout-ms`).
    headers_due: Option<Instant>,
}

impl CallState<'_> {
    /// Attempt the call until it ends, retrying what the upstream provably did not process.
    /// `Ok` carries the upstream's grpc-status, already relayed to the client.
    async fn attempts<D: Downstream>(
        &mut self,
        request: &CallRequest<'_>,
        body: Body,
        downstream: &mut D,
    ) -> Result<u32, Error> {
        // A body wholly in memory can be sent again; a streamed one cannot.
        let replayable = body.complete;
        let end_of_stream = body.complete && body.first.is_empty();
        let mut retry: Option<(SocketAddr, RetryGuard)> = None;
        let mut tried = Tried::new();
        let mut body = Some(body);
        loop {
            let (addr, call) = match self.start(request, end_of_stream, &tried).await {
                Ok(started) => started,
                Err((Some(addr), error)) => {
                    self.upstream = Some(addr);
                    tried.push(addr);
                    self.record(addr, &error);
                    if self.moves_on(&error, &tried) {
                        self.context.stats.retries.add(1);
                        continue;
                    }
                    retry = Some((addr, self.retry_after(&error, addr, &retry).ok_or(error)?));
                    continue;
                }
                Err((None, error)) => return Err(error),
            };
            self.upstream = Some(addr);
            tried.push(addr);
            let this_body = match &body {
                Some(b) if replayable => Body {
                    first: b.first.clone(),
                    complete: true,
                },
                _ => body
                    .take()
                    .expect("a streamed body is sent once: no retry after it"),
            };
            let relayed = self.exchange(call, this_body, downstream).await;
            match &relayed {
                Ok(status) if *status == Code::Unavailable as u32 => {
                    self.record_failure(addr, "UNAVAILABLE".into())
                }
                Ok(_) => self.record_success(addr),
                Err(error) => self.record(addr, error),
            }
            match relayed {
                // Refused before any processing (REFUSED_STREAM, above a GOAWAY's last stream
                // id) and nothing given to the client yet: safe to send elsewhere.
                Err(error) if replayable && !self.head_sent => {
                    retry = Some((addr, self.retry_after(&error, addr, &retry).ok_or(error)?));
                }
                result => return result,
            }
        }
    }

    /// Whether an attempt that reached no upstream (refused, timed out, no SETTINGS) moves on to
    /// an untried endpoint for free: it loaded no backend, and the endpoint that failed is out
    /// of this worker's rotation now, so the moves are bounded by the set (and by `Tried`).
    fn moves_on(&self, error: &Error, tried: &Tried) -> bool {
        upstream::reached_no_upstream(error)
            && !tried.is_full()
            && tried.leaves_untried(&self.context.directory.current())
    }

    /// Permission to try again after `error` from `addr`: the error must be retry-safe, there
    /// must be somewhere it can succeed, and the per-call limit and the worker's budget must
    /// allow it.
    fn retry_after(
        &self,
        error: &Error,
        addr: SocketAddr,
        previous: &Option<(SocketAddr, RetryGuard)>,
    ) -> Option<RetryGuard> {
        let somewhere = retry_safe(error)
            && (retry_same_endpoint(error)
                || self
                    .context
                    .directory
                    .current()
                    .endpoints
                    .iter()
                    .any(|e| *e != addr));
        if !somewhere {
            return None;
        }
        let attempts = previous.as_ref().map_or(0, |(_, guard)| guard.attempt);
        let granted = self.context.retries.try_retry(attempts + 1);
        if granted.is_some() {
            self.context.stats.retries.add(1);
        }
        granted
    }

    /// Pick an endpoint (one not in `tried` when there is one) and start the upstream stream.
    /// On failure, the endpoint that failed is returned with the error, for a retry elsewhere.
    async fn start(
        &self,
        request: &CallRequest<'_>,
        end_of_stream: bool,
        tried: &Tried,
    ) -> Result<(SocketAddr, Call), (Option<SocketAddr>, Error)> {
        let addr = self.pick(tried).ok_or((None, Error::NoEndpoint))?;
        self.context
            .pool
            .start_call(addr, || request.build(), end_of_stream)
            .await
            .map(|call| (addr, call))
            .map_err(|error| (Some(addr), error))
    }

    /// An eligible endpoint of the current set: passing active health checks and available on
    /// this worker (not refused on any worker, not unreachable here, not ejected); one the call
    /// has not tried when there is one. The snapshots are read through guards (no reference
    /// count bump on a shared cache line) and released before the call waits for anything.
    fn pick(&self, tried: &Tried) -> Option<SocketAddr> {
        let context = self.context;
        let set = context.directory.current();
        context.reconcile(&set);
        let unhealthy = context.health.current_unhealthy();
        let refused = context.refused.load();
        let eligible = |addr: SocketAddr| {
            (unhealthy.is_empty() || !unhealthy.contains(&addr))
                && context.pool.available(addr, &refused)
        };
        context
            .balancer
            .pick(&set, tried, eligible, |addr| context.pool.in_flight(addr))
    }

    /// Send the body and relay the response of one attempt. `Ok` carries the grpc-status the
    /// upstream ended the call with, relayed to the client.
    async fn exchange<D: Downstream>(
        &mut self,
        call: Call,
        body: Body,
        downstream: &mut D,
    ) -> Result<u32, Error> {
        let Call {
            response,
            body: mut send,
            lease,
        } = call;
        let mut relay = Relay {
            upstream: Upstream::Head(response),
            unreleased_bytes: 0,
        };
        self.headers_due = self
            .context
            .limits
            .response_headers_timeout
            .map(|timeout| Instant::now() + timeout);
        let result = self.relay(&mut relay, &mut send, body, downstream).await;
        if result.is_err() {
            // Whatever happened, the upstream stream must not run on without us.
            send.send_reset(h2::Reason::CANCEL);
        }
        let status = result?;
        drop(lease);
        downstream.flush().await?;
        Ok(status)
    }

    /// Pump the body and hand the response to the downstream as it arrives: what is ready is
    /// gathered, and written when the upstream has nothing more (or enough is gathered).
    async fn relay<D: Downstream>(
        &mut self,
        relay: &mut Relay,
        send: &mut SendStream<Bytes>,
        body: Body,
        downstream: &mut D,
    ) -> Result<u32, Error> {
        let mut pump = Pump::start(send, body)?;
        loop {
            let event = match poll_now(&mut relay.upstream) {
                Some(event) => event,
                None if downstream.has_output() => {
                    relay.flush(downstream).await?;
                    continue;
                }
                None => match self
                    .wait(&mut relay.upstream, &mut pump, send, downstream)
                    .await
                {
                    Waited::Upstream(event) => event,
                    Waited::Pumped(Ok(())) => continue,
                    // The upstream answered before it read the whole body and closed its side
                    // with NO_ERROR (RFC 9113 §8.1): it wants no more body; its response goes
                    // on.
                    Waited::Pumped(Err(Error::H2(e)))
                        if e.reason() == Some(h2::Reason::NO_ERROR) =>
                    {
                        pump = Pump::Done;
                        continue;
                    }
                    Waited::Pumped(Err(error)) => return Err(error),
                    Waited::ClientGone => return Err(client_gone()),
                },
            };
            if let Some(status) = self.on_event(event, relay, downstream)? {
                return Ok(status);
            }
            if downstream.output_full() {
                relay.flush(downstream).await?;
            }
        }
    }

    /// Hand one upstream event to the downstream; `Some` with the grpc-status when the
    /// response ended with it.
    fn on_event<D: Downstream>(
        &mut self,
        event: UpstreamEvent,
        relay: &mut Relay,
        downstream: &mut D,
    ) -> Result<Option<u32>, Error> {
        match event {
            UpstreamEvent::Headers(response) => {
                let (parts, recv) = response.into_parts();
                match classify_head(&parts, recv.is_end_stream()) {
                    Head::Streaming => {
                        downstream.head(&parts);
                        self.head_sent = true;
                        relay.upstream = Upstream::Body(recv);
                        Ok(None)
                    }
                    Head::TrailersOnly(status) => {
                        downstream.trailers_only(&parts);
                        Ok(Some(status))
                    }
                    Head::NotGrpc(status) => Err(Error::UpstreamHttpStatus(status)),
                    Head::NoStatus => Err(Error::UpstreamProtocol(
                        "upstream ended the call without grpc-status",
                    )),
                }
            }
            UpstreamEvent::Data(data) => {
                relay.unreleased_bytes += data.len();
                downstream.data(data)?;
                Ok(None)
            }
            UpstreamEvent::Trailers(trailers) => {
                let trailers = trailers.unwrap_or_default();
                let status = trailers.get("grpc-status").ok_or(Error::UpstreamProtocol(
                    "upstream trailers carry no grpc-status",
                ))?;
                let status = parse_status(status.as_bytes());
                downstream.trailers(&trailers);
                Ok(Some(status))
            }
            UpstreamEvent::Failed(error) => Err(error),
        }
    }

    /// Wait for the next upstream event, the call's deadline, the client (its next body piece,
    /// or its going away), or HTTP/2 capacity for the body piece in hand.
    async fn wait<D: Downstream>(
        &mut self,
        upstream: &mut Upstream,
        pump: &mut Pump,
        send: &mut SendStream<Bytes>,
        downstream: &mut D,
    ) -> Waited {
        let want_body = matches!(pump, Pump::Waiting);
        let headers_due = match upstream {
            Upstream::Head(_) => self.headers_due,
            Upstream::Body(_) => None,
        };
        monoio::select! {
            event = poll_fn(|cx| poll_upstream(upstream, cx)) => Waited::Upstream(event),
            _ = sleep_until(headers_due) => {
                Waited::Upstream(UpstreamEvent::Failed(Error::ResponseHeadersTimeout))
            }
            _ = wait_deadline(&mut self.deadline) => {
                Waited::Upstream(UpstreamEvent::Failed(Error::DeadlineExceeded))
            }
            _ = self.context.drain_expired() => Waited::Upstream(UpstreamEvent::Failed(Error::Shutdown)),
            client = downstream.client_event(want_body) => match client {
                ClientEvent::Body(piece) => {
                    self.body_complete = piece.last;
                    Waited::Pumped(pump.take(piece, send))
                }
                ClientEvent::Gone => Waited::ClientGone,
                ClientEvent::Failed(error) => Waited::Pumped(Err(error)),
            },
            sent = pump.send_with_capacity(send) => Waited::Pumped(sent),
        }
    }

    /// End the call with `error`: tell the client, and count it.
    async fn fail<D: Downstream>(
        &self,
        error: &Error,
        downstream: &mut D,
        started: Instant,
    ) -> End {
        let end = downstream.fail(error, self.head_sent);
        match end {
            End::Refused(status) => self.context.stats.local_http(status),
            End::Status(code) => self.context.stats.call_finished(code, started.elapsed()),
            End::ClientGone => {}
        }
        match downstream.flush().await {
            Ok(()) => end,
            Err(_) => End::ClientGone,
        }
    }

    /// Count a failed attempt against `addr` when the error says something about the
    /// endpoint's health (connect failures, UNAVAILABLE from upstream), and as a success
    /// otherwise.
    fn record(&self, addr: SocketAddr, error: &Error) {
        if error.side() == Side::Upstream && error.code() == Code::Unavailable {
            self.record_failure(addr, error.to_string());
        } else {
            self.record_success(addr);
        }
    }

    fn record_failure(&self, addr: SocketAddr, reason: String) {
        let set_len = self.context.directory.current().endpoints.len();
        self.context.pool.record_outcome(addr, Err(reason), set_len);
    }

    fn record_success(&self, addr: SocketAddr) {
        self.context.pool.record_outcome(addr, Ok(()), 0);
    }
}

/// What the upstream's response head says about the call.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A gRPC response whose messages and trailers follow.
    Streaming,
    /// The whole answer is this head; it carries this grpc-status.
    TrailersOnly(u32),
    /// Not a gRPC response: this HTTP status, or a content type that is not gRPC.
    NotGrpc(u16),
    /// A gRPC head that ends the stream without a grpc-status.
    NoStatus,
}

fn classify_head(parts: &Parts, end_stream: bool) -> Head {
    let is_grpc = parts.status == http::StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return Head::NotGrpc(parts.status.as_u16());
    }
    if !end_stream {
        return Head::Streaming;
    }
    match parts.headers.get("grpc-status") {
        Some(status) => Head::TrailersOnly(parse_status(status.as_bytes())),
        None => Head::NoStatus,
    }
}

/// The request body's way upstream during one attempt.
enum Pump {
    /// Everything was handed to h2.
    Done,
    /// Waiting for the client's next piece.
    Waiting,
    /// A piece (or its rest) waiting for HTTP/2 send capacity.
    Pending { data: Bytes, last: bool },
}

impl Pump {
    /// Start the body: a complete body goes out at once (already in memory and bounded by the
    /// body limit, so there is no need to wait for capacity); a partial one starts pumping.
    fn start(send: &mut SendStream<Bytes>, body: Body) -> Result<Pump, Error> {
        match body {
            Body {
                first,
                complete: true,
            } if first.is_empty() => Ok(Pump::Done), // END_STREAM went with the head
            Body {
                first,
                complete: true,
            } => {
                send.send_data(first, true).map_err(Error::H2)?;
                Ok(Pump::Done)
            }
            Body { first, .. } if first.is_empty() => Ok(Pump::Waiting),
            Body { first, .. } => Ok(Pump::Pending {
                data: first,
                last: false,
            }),
        }
    }

    /// Take the client's next piece; an empty last piece ends the stream at once.
    fn take(&mut self, piece: BodyPiece, send: &mut SendStream<Bytes>) -> Result<(), Error> {
        *self = if piece.data.is_empty() {
            if piece.last {
                send.send_data(Bytes::new(), true).map_err(Error::H2)?;
                Pump::Done
            } else {
                Pump::Waiting
            }
        } else {
            Pump::Pending {
                data: piece.data,
                last: piece.last,
            }
        };
        Ok(())
    }

    /// Send the piece in hand as HTTP/2 grants capacity for it, so a slow upstream holds the
    /// client back instead of filling memory. Pending forever when there is no piece in hand.
    async fn send_with_capacity(&mut self, send: &mut SendStream<Bytes>) -> Result<(), Error> {
        let Pump::Pending { data, last } = self else {
            return std::future::pending().await;
        };
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            Some(Err(e)) => return Err(Error::H2(e)),
            None => {
                return Err(Error::UpstreamProtocol(
                    "upstream closed the stream while receiving the request",
                ))
            }
        };
        let piece = data.split_to(granted.min(data.len()));
        let end = *last && data.is_empty();
        send.send_data(piece, end).map_err(Error::H2)?;
        if data.is_empty() {
            *self = if *last { Pump::Done } else { Pump::Waiting };
        }
        Ok(())
    }
}

/// The error for a client that went away while its call ran.
fn client_gone() -> Error {
    Error::ClientClosed(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the client went away during the call",
    ))
}

/// What ended a wait.
enum Waited {
    Upstream(UpstreamEvent),
    /// The body moved on (or failed to).
    Pumped(Result<(), Error>),
    ClientGone,
}

/// One attempt's response: where it stands, and the flow-control credit not yet given back.
struct Relay {
    upstream: Upstream,
    /// Bytes handed to the downstream but not yet written to the client.
    unreleased_bytes: usize,
}

impl Relay {
    /// Write what the downstream gathered, then give the HTTP/2 flow-control credit for those
    /// bytes back: a client that reads slowly holds the upstream back, instead of filling
    /// memory.
    async fn flush<D: Downstream>(&mut self, downstream: &mut D) -> Result<(), Error> {
        downstream.flush().await?;
        if let Upstream::Body(recv) = &mut self.upstream {
            if self.unreleased_bytes > 0 {
                let _ = recv.flow_control().release_capacity(self.unreleased_bytes);
            }
        }
        self.unreleased_bytes = 0;
        Ok(())
    }
}

/// Where the upstream response stands.
enum Upstream {
    Head(ResponseFuture),
    Body(RecvStream),
}

enum UpstreamEvent {
    Headers(http::Response<RecvStream>),
    Data(Bytes),
    Trailers(Option<HeaderMap>),
    Failed(Error),
}

fn poll_upstream(state: &mut Upstream, cx: &mut Context<'_>) -> Poll<UpstreamEvent> {
    match state {
        Upstream::Head(response) => Pin::new(response).poll(cx).map(|result| match result {
            Ok(response) => UpstreamEvent::Headers(response),
            Err(e) => UpstreamEvent::Failed(Error::H2(e)),
        }),
        Upstream::Body(recv) => match recv.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => Poll::Ready(UpstreamEvent::Data(data)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(UpstreamEvent::Failed(Error::H2(e))),
            Poll::Ready(None) => recv.poll_trailers(cx).map(|result| match result {
                Ok(trailers) => UpstreamEvent::Trailers(trailers),
                Err(e) => UpstreamEvent::Failed(Error::H2(e)),
            }),
            Poll::Pending => Poll::Pending,
        },
    }
}

/// Poll the upstream once without waiting: what is already there is gathered before a flush.
fn poll_now(state: &mut Upstream) -> Option<UpstreamEvent> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match poll_upstream(state, &mut cx) {
        Poll::Ready(event) => Some(event),
        Poll::Pending => None,
    }
}

/// Resolves at `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => monoio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn wait_deadline(deadline: &mut Option<Pin<Box<monoio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16, headers: &[(&'static str, &'static str)]) -> Parts {
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response.body(()).unwrap().into_parts().0
    }

    #[test]
    fn response_heads_are_classified_by_status_type_and_end() {
        let grpc = [("content-type", "application/grpc+proto")];
        assert_eq!(classify_head(&parts(200, &grpc), false), Head::Streaming);
        assert_eq!(
            classify_head(&parts(200, &[grpc[0], ("grpc-status", "5")]), true),
            Head::TrailersOnly(5)
        );
        assert_eq!(
            classify_head(&parts(200, &[grpc[0], ("grpc-status", "x")]), true),
            Head::TrailersOnly(Code::Unknown as u32)
        );
        assert_eq!(classify_head(&parts(200, &grpc), true), Head::NoStatus);
        assert_eq!(classify_head(&parts(503, &grpc), false), Head::NotGrpc(503));
        assert_eq!(
            classify_head(&parts(200, &[("content-type", "text/html")]), false),
            Head::NotGrpc(200)
        );
        assert_eq!(classify_head(&parts(200, &[]), true), Head::NotGrpc(200));
    }
}
