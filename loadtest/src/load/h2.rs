//! The HTTP/2 mode's IO: connections opened with prior knowledge (h2c), or over TLS with ALPN
//! `h2` for an HTTPS target, each shared by the `--streams` call loops of one connection
//! index, driven by the `h2` crate on the thread's monoio runtime through monoio-compat (as
//! ringway's upstream pool does). With `--connection-per-call` each call opens its own
//! connection and closes it (GOAWAY) once its stream has ended.
//!
//! A connection opens when its first call is due; call loops arriving while it connects wait
//! for that one connect and share its outcome. It is forgotten when it ends (the peer closed
//! it, or sent GOAWAY and finished) or refuses a new stream, and the next call opens a new one.
//! A call the server provably did not process is sent once more, on a new connection: the
//! connection was gone before the request went out, or the server refused the stream
//! (REFUSED_STREAM) or excluded it by GOAWAY. That is the only retry, as in the HTTP/1.1 mode.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::Reason;
use tokio::sync::Notify;
use tracing::debug;

use super::tls::Stream;
use super::wire::{ErrorKind, BODY_BYTES_MAX, HEAD_BYTES_MAX};
use super::wire_h2::{self, H2Response};
use super::worker::{connect, keep_pod, Attempt, Local, CONNECT_BACKOFF_MIN};

/// The stream window the generator advertises: large enough that a 1 MiB reply needs no
/// WINDOW_UPDATE round trip, small enough to bound what a stalled stream buffers.
const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// The connection window: shared by every stream of the connection.
const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// One HTTP/2 connection of a thread and the call loops that share it.
pub(super) struct H2Connection {
    /// The live connection's handle and its number; `None` before the first connect and after
    /// the connection ended or refused a stream.
    send: RefCell<Option<(u64, SendRequest<Bytes>)>>,
    /// Connect attempts finished (successful or not); a connection's number is the count at its
    /// connect.
    attempts: Cell<u64>,
    connecting: Cell<bool>,
    /// Woken when a connect attempt ends.
    connect_ended: Notify,
    /// Whether a connection's driver task is running (the connection is open or closing).
    driving: Cell<bool>,
    /// Set at the end of the run: no new connection is opened.
    closed: Cell<bool>,
}

impl H2Connection {
    pub fn new() -> Rc<H2Connection> {
        Rc::new(H2Connection {
            send: RefCell::new(None),
            attempts: Cell::new(0),
            connecting: Cell::new(false),
            connect_ended: Notify::new(),
            driving: Cell::new(false),
            closed: Cell::new(false),
        })
    }

    /// The run is over: drop the connection's handle so that h2 closes it (GOAWAY) once its
    /// streams have ended, after writing what is queued, such as the resets of abandoned
    /// calls. [`H2Connection::is_open`] tells when that is done.
    pub fn close(&self) {
        self.closed.set(true);
        self.send.borrow_mut().take();
    }

    pub fn is_open(&self) -> bool {
        self.driving.get()
    }

    /// The live connection, connecting if there is none. A call loop that finds a connect
    /// under way waits for it: one connect serves every stream of the connection.
    async fn sender(
        self: &Rc<Self>,
        local: &Local,
    ) -> Result<(u64, SendRequest<Bytes>), ErrorKind> {
        loop {
            if let Some((number, send)) = self.send.borrow().as_ref() {
                return Ok((*number, send.clone()));
            }
            if self.closed.get() {
                return Err(ErrorKind::Connect);
            }
            if self.connecting.get() {
                let waited_for = self.attempts.get();
                // Single-threaded: nothing runs between the check and the first poll, which
                // registers the waiter, so the wake-up cannot be missed.
                self.connect_ended.notified().await;
                if self.send.borrow().is_none() && self.attempts.get() != waited_for {
                    // The connect this loop waited for failed; it counts as this call's too.
                    return Err(ErrorKind::Connect);
                }
                continue;
            }
            return self.connect(local).await;
        }
    }

    async fn connect(
        self: &Rc<Self>,
        local: &Local,
    ) -> Result<(u64, SendRequest<Bytes>), ErrorKind> {
        // Ends the attempt however the connect ends, the call's timeout dropping it included,
        // so that waiters never wait for a connect nobody is making.
        let attempt = ConnectAttempt(self);
        self.connecting.set(true);
        let result = handshake(local).await;
        drop(attempt);
        let (send, connection) = result?;
        let number = self.attempts.get();
        *self.send.borrow_mut() = Some((number, send.clone()));
        let this = self.clone();
        self.driving.set(true);
        monoio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "HTTP/2 connection ended");
            }
            this.forget(number);
            // A newer connection's driver may be running; only the live one counts.
            if this.send.borrow().is_none() {
                this.driving.set(false);
            }
        });
        Ok((number, send))
    }

    /// Forgets connection `number` (it ended, or refused a stream) so the next call opens a
    /// new one; a newer connection is kept.
    fn forget(&self, number: u64) {
        let mut send = self.send.borrow_mut();
        if send.as_ref().is_some_and(|(live, _)| *live == number) {
            *send = None;
        }
    }
}

/// A connect under way; dropping it ends the attempt and wakes the waiters.
struct ConnectAttempt<'a>(&'a H2Connection);

impl Drop for ConnectAttempt<'_> {
    fn drop(&mut self) {
        self.0.connecting.set(false);
        self.0.attempts.set(self.0.attempts.get() + 1);
        self.0.connect_ended.notify_waiters();
    }
}

type Handshake = (
    SendRequest<Bytes>,
    h2::client::Connection<monoio_compat::StreamWrapper<Stream>, Bytes>,
);

/// TCP (and TLS), then the HTTP/2 preface and SETTINGS.
async fn handshake(local: &Local) -> Result<Handshake, ErrorKind> {
    let stream = connect(local).await?;
    let io = monoio_compat::StreamWrapper::new(stream);
    let streams = local.plan.config.streams;
    h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_header_list_size(HEAD_BYTES_MAX as u32)
        // Until the server's SETTINGS arrive, allow every stream the run asks for; the server's
        // own limit applies from then on (h2 makes `ready` wait for a free stream).
        .initial_max_send_streams(streams)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|error| {
            debug!(target = %local.plan.config.target, %error, "HTTP/2 handshake failed");
            ErrorKind::Connect
        })
}

/// One call loop's place on a shared connection, with its reused buffers.
pub(super) struct H2Slot {
    connection: Rc<H2Connection>,
    /// The response's DATA bytes of the current call.
    body: Vec<u8>,
    scratch: Vec<u8>,
    /// The last call's pod name, reused across calls so naming a pod allocates nothing.
    pub pod: String,
    pub connect_backoff: Duration,
}

/// How one attempt at a call ended.
enum Outcome {
    /// The request never went out (the connection was gone) or the server provably did not
    /// process it: safe to send again. The error is the call's if it was the last attempt.
    Unprocessed(ErrorKind),
    /// The connection failed under the call; the call failed with it.
    ConnectionLost(ErrorKind),
    Done(Attempt),
}

impl H2Slot {
    pub fn new(connection: Rc<H2Connection>) -> H2Slot {
        H2Slot {
            connection,
            body: Vec::new(),
            scratch: Vec::new(),
            pod: String::new(),
            connect_backoff: CONNECT_BACKOFF_MIN,
        }
    }

    /// One call: a stream on the connection (opened if needed), the request, the whole
    /// response, its judgement.
    pub async fn call(&mut self, local: &Local) -> Attempt {
        for attempt in 0..2 {
            let (number, send) = match self.connection.sender(local).await {
                Ok(live) => live,
                Err(kind) => return Attempt::failed(kind),
            };
            self.connect_backoff = CONNECT_BACKOFF_MIN;
            match self.exchange(send, local).await {
                Outcome::Done(result) => {
                    if local.plan.config.connection_per_call {
                        // The last handle goes: h2 sends GOAWAY and closes the connection.
                        self.connection.forget(number);
                    }
                    return result;
                }
                Outcome::ConnectionLost(kind) => {
                    self.connection.forget(number);
                    return Attempt::failed(kind);
                }
                Outcome::Unprocessed(kind) => {
                    self.connection.forget(number);
                    if attempt == 1 {
                        return Attempt::failed(kind);
                    }
                }
            }
        }
        // The second attempt returns from the loop.
        Attempt::failed(ErrorKind::Io)
    }

    async fn exchange(&mut self, send: SendRequest<Bytes>, local: &Local) -> Outcome {
        let plan = &local.plan;
        let Some(head) = plan.h2_head.as_ref() else {
            return Outcome::Done(Attempt::failed(ErrorKind::Malformed));
        };
        // An error before the request is handed to h2 means it never left: the connection is
        // gone (or going), and a new one may carry the call.
        let Ok(mut send) = send.ready().await else {
            return Outcome::Unprocessed(ErrorKind::Io);
        };
        let Ok((response, mut request_body)) = send.send_request(head.request(), false) else {
            return Outcome::Unprocessed(ErrorKind::Io);
        };
        local.tally.borrow_mut().calls_sent += 1;
        // Small bodies fit the initial window; a larger one is queued by h2 and sent as the
        // server's window allows.
        if let Err(error) = request_body.send_data(local.h2_body.clone(), true) {
            return failed_before_response(&error);
        }
        let response = match response.await {
            Ok(response) => response,
            Err(error) => return failed_before_response(&error),
        };
        let (parts, mut recv) = response.into_parts();
        let backend_header = &plan.config.backend_header;
        let pod_in_headers = wire_h2::header(&parts.headers, backend_header);
        self.body.clear();
        while let Some(chunk) = recv.data().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => return self.failed_mid_response(&error, pod_in_headers),
            };
            let _ = recv.flow_control().release_capacity(chunk.len());
            if self.body.len() + chunk.len() > BODY_BYTES_MAX {
                // Dropping the stream resets it (CANCEL); the connection carries on.
                return self.done(Err(ErrorKind::TooLarge), pod_in_headers);
            }
            self.body.extend_from_slice(&chunk);
        }
        let trailers = match recv.trailers().await {
            Ok(trailers) => trailers,
            Err(error) => return self.failed_mid_response(&error, pod_in_headers),
        };
        let response = H2Response {
            status: parts.status.as_u16(),
            headers: &parts.headers,
            body: &self.body,
            trailers: trailers.as_ref(),
        };
        let config = &plan.config;
        let (result, pod) = wire_h2::judge(
            response,
            config.protocol,
            config.mode,
            config.call,
            backend_header,
            &mut self.scratch,
        );
        Outcome::Done(Attempt {
            result,
            named_pod: keep_pod(&mut self.pod, pod),
        })
    }

    fn done(&mut self, result: Result<(), ErrorKind>, pod: Option<&str>) -> Outcome {
        Outcome::Done(Attempt {
            result,
            named_pod: keep_pod(&mut self.pod, pod),
        })
    }

    /// The response had begun (headers arrived, naming the pod) when the stream or the
    /// connection failed.
    fn failed_mid_response(&mut self, error: &h2::Error, pod: Option<&str>) -> Outcome {
        let kind = error_kind(error);
        let named_pod = keep_pod(&mut self.pod, pod);
        if is_connection_error(error) {
            return Outcome::ConnectionLost(kind);
        }
        Outcome::Done(Attempt {
            result: Err(kind),
            named_pod,
        })
    }
}

/// Before any response: a stream the server did not process can be sent again; otherwise the
/// call failed, and with it the connection if the error was the connection's.
fn failed_before_response(error: &h2::Error) -> Outcome {
    // RFC 9113 section 8.7: REFUSED_STREAM, and streams above a received GOAWAY's last stream
    // id (which h2 fails with that GOAWAY), were not processed.
    let refused = error.is_reset() && error.reason() == Some(Reason::REFUSED_STREAM);
    if error.is_remote() && (refused || error.is_go_away()) {
        return Outcome::Unprocessed(error_kind(error));
    }
    if is_connection_error(error) {
        return Outcome::ConnectionLost(error_kind(error));
    }
    Outcome::Done(Attempt::failed(error_kind(error)))
}

fn is_connection_error(error: &h2::Error) -> bool {
    error.is_io() || error.is_go_away()
}

/// A reset from the server is named by its code; anything else is the connection's `io`.
fn error_kind(error: &h2::Error) -> ErrorKind {
    match error.reason() {
        Some(reason) if error.is_reset() && error.is_remote() => {
            ErrorKind::StreamReset(u32::from(reason))
        }
        _ => ErrorKind::Io,
    }
}
