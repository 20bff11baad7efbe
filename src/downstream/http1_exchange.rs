//! A gRPC-Web call on an HTTP/1.1 connection, as the call path sees it: the rest of the request
//! body comes from the connection's buffer and socket, and the response goes out as an HTTP/1.1
//! response with a chunked gRPC-Web body (binary or base64 text) ending in the trailer frame.
//!
//! While the call waits with the request body complete, the exchange watches the client socket
//! (after a short delay, so fast calls never pay for it): a client that closed cancels the call,
//! and a pipelined next request is kept in the buffer for later.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderMap;
use http::response::Parts;

use super::connect_side::ConnectSide;
use super::http1::{write_connection_header, Connection};
use crate::call::{BodyPiece, ClientEvent, Downstream, End};
use crate::connect::{self, adapter::ReplyOut};
use crate::error::Error;
use crate::grpc_web::{is_forwardable_response_header, WebReply};
use crate::http1::{
    finish_head, write_content_length, write_header, write_status_line, BodyReader, Version,
};
use crate::status::Code;
use crate::transport::Transport;

/// A call that has waited this long for its upstream starts watching the client socket, so a
/// client that went away cancels the upstream stream. Fast calls never pay for the watch.
const CLIENT_WATCH_DELAY: Duration = Duration::from_millis(20);

/// The parts of a request that shape its response.
pub(super) struct ReplyTo {
    /// When the request head was parsed, for the call-duration histogram.
    pub started: Instant,
    pub version: Version,
    pub keep_alive: bool,
    pub origin: Option<Bytes>,
    /// `Some` once the request was accepted as a gRPC-Web call.
    pub grpc: Option<WebReply>,
}

/// One call's downstream side on an HTTP/1.1 connection: gRPC-Web, or Connect when `connect`
/// is set.
pub(super) struct H1Exchange<'c, S> {
    conn: &'c mut Connection<S>,
    reply_to: &'c ReplyTo,
    text: bool,
    body: BodyReader,
    connect: Option<ConnectSide>,
    /// When the body read in progress times out; set when a read starts waiting.
    read_deadline: Option<Instant>,
    /// When the whole body must have arrived (`--request-body-timeout-ms`).
    body_deadline: Option<Instant>,
    watch: Watch,
    /// A response head with a body to follow was written.
    streamed: bool,
}

/// Watching the client socket during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Not yet: the delay starts at the call's first wait.
    Pending,
    /// The socket is watched from this instant (`CLIENT_WATCH_DELAY` into the wait).
    From(Instant),
    /// The socket is watched.
    On,
    /// The client pipelined a head's worth of bytes; stop reading until this call ends.
    Off,
}

impl<'c, S: Transport> H1Exchange<'c, S> {
    pub fn new(
        conn: &'c mut Connection<S>,
        reply_to: &'c ReplyTo,
        body: BodyReader,
        connect: Option<ConnectSide>,
    ) -> Self {
        let body_deadline = conn.context.limits.body_deadline(reply_to.started);
        H1Exchange {
            conn,
            text: reply_to.grpc.as_ref().is_some_and(|g| g.text),
            reply_to,
            body,
            connect,
            read_deadline: None,
            body_deadline,
            watch: Watch::Pending,
            streamed: false,
        }
    }

    /// Whether a response head with a body to follow was written.
    pub fn streamed(&self) -> bool {
        self.streamed
    }

    /// A Connect call's HTTP status and code as answered, and whether its body was cut off.
    pub fn connect_outcome(&self) -> Option<(u16, Code, bool)> {
        self.connect
            .as_ref()
            .map(|c| (c.http_status, c.code, c.aborted))
    }

    fn chunked(&self) -> bool {
        self.reply_to.version == Version::Http11
    }

    /// Read the client's next body piece: what is buffered, else what arrives next, within
    /// the body read timeout. Only readiness is awaited, so dropping this loses nothing.
    async fn body_piece(&mut self) -> Result<BodyPiece, Error> {
        loop {
            let data = self
                .body
                .drain_buffered(&mut self.conn.buf)
                .map_err(Error::from)?;
            if !data.is_empty() || self.body.complete() {
                self.read_deadline = None;
                let last = self.body.complete();
                let data = match &mut self.connect {
                    Some(connect) => connect.body.piece(data, last)?,
                    None => data,
                };
                return Ok(BodyPiece { data, last });
            }
            let (limits, body_deadline) = (&self.conn.context.limits, self.body_deadline);
            let deadline = *self
                .read_deadline
                .get_or_insert_with(|| limits.body_read_deadline(Instant::now(), body_deadline));
            let conn = &mut *self.conn;
            let readable = monoio::select! {
                readable = conn.stream.readable() => readable,
                _ = conn.timer.at(deadline) => return Err(Error::RequestTimeout),
            };
            readable.map_err(Error::ClientClosed)?;
            match conn.try_read() {
                // The client went away mid-body: nobody is left to answer.
                Ok(0) => {
                    return Err(Error::ClientClosed(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "client closed the connection mid-body",
                    )))
                }
                Ok(_) => self.read_deadline = None,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::ClientClosed(e)),
            }
        }
    }

    /// Resolve when the client closes. Readable means either EOF or its next pipelined
    /// request, which stays in the buffer; watching goes on (a later close is still noticed)
    /// until the buffer holds a whole head's worth: past that the client is not waiting for
    /// this call, and reading on would only grow the buffer.
    async fn watch_client(&mut self) {
        if self.watch == Watch::Pending {
            self.watch = Watch::From(Instant::now() + CLIENT_WATCH_DELAY);
        }
        loop {
            match self.watch {
                Watch::From(at) => {
                    self.conn.timer.at(at).await;
                    self.watch = Watch::On;
                }
                Watch::Pending | Watch::Off => return std::future::pending().await,
                Watch::On => {
                    if self.conn.stream.readable().await.is_err() {
                        return;
                    }
                    match self.conn.try_read() {
                        Ok(0) => return,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                        Ok(_) => {
                            if self.conn.buf.len() >= self.conn.context.limits.head.header_bytes_max
                            {
                                self.watch = Watch::Off;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The response head for an upstream head: 200, the client's content type, the upstream's
    /// metadata and the CORS headers; then either an empty body (trailers-only) or a chunked
    /// one to follow.
    fn write_head(&mut self, parts: &Parts, trailers_only: bool) {
        let reply_to = self.reply_to;
        let chunked = self.chunked();
        let metadata = || {
            parts
                .headers
                .iter()
                .filter(|(name, _)| is_forwardable_response_header(name))
        };
        let cors = self.conn.context.cors.actual_headers(
            reply_to.origin.as_ref(),
            metadata().map(|(name, _)| name.as_str().as_bytes()),
        );
        let content_type = &reply_to
            .grpc
            .as_ref()
            .expect("an exchange is only made for gRPC-Web calls")
            .content_type;
        // A body the client is still sending cannot be skipped: the connection closes after.
        let keep_alive = reply_to.keep_alive && self.body.complete();
        let head_out = self.conn.out.scratch();
        write_status_line(head_out, reply_to.version, 200);
        write_header(head_out, b"content-type", content_type);
        for (name, value) in metadata() {
            write_header(head_out, name.as_str().as_bytes(), value.as_bytes());
        }
        for (name, value) in &cors {
            write_header(head_out, name, value);
        }
        if trailers_only {
            write_header(head_out, b"content-length", b"0");
            write_connection_header(head_out, reply_to.version, keep_alive);
        } else {
            if chunked {
                write_header(head_out, b"transfer-encoding", b"chunked");
            }
            write_connection_header(head_out, reply_to.version, keep_alive && chunked);
        }
        finish_head(head_out);
    }
}

impl<S: Transport> H1Exchange<'_, S> {
    /// Write what a Connect reply produced; returns the Connect code the response carries
    /// when it ended with it.
    fn write_connect(&mut self, out: ReplyOut) -> Code {
        let reply_to = self.reply_to;
        let chunked = self.chunked();
        let Some(connect) = &mut self.connect else {
            return Code::Ok;
        };
        match out {
            ReplyOut::Nothing => {}
            ReplyOut::Complete(response) => {
                connect.http_status = response.status;
                connect.code = connect::adapter::code_of(&response.body);
                let keep_alive = reply_to.keep_alive && self.body.complete();
                let cors = self
                    .conn
                    .context
                    .cors
                    .actual_headers(reply_to.origin.as_ref(), response.header_names());
                let head_out = self.conn.out.scratch();
                write_status_line(head_out, reply_to.version, response.status);
                for (name, value) in &response.headers {
                    write_header(head_out, name, value);
                }
                for (name, value) in &cors {
                    write_header(head_out, name, value);
                }
                write_content_length(head_out, response.body.len());
                write_connection_header(head_out, reply_to.version, keep_alive);
                finish_head(head_out);
                self.conn.out.push(response.body);
            }
            ReplyOut::Head(headers) => {
                let keep_alive = reply_to.keep_alive && self.body.complete() && chunked;
                let cors = self.conn.context.cors.actual_headers(
                    reply_to.origin.as_ref(),
                    headers.iter().map(|(n, _)| &n[..]),
                );
                let head_out = self.conn.out.scratch();
                write_status_line(head_out, reply_to.version, 200);
                for (name, value) in &headers {
                    write_header(head_out, name, value);
                }
                for (name, value) in &cors {
                    write_header(head_out, name, value);
                }
                if chunked {
                    write_header(head_out, b"transfer-encoding", b"chunked");
                }
                write_connection_header(head_out, reply_to.version, keep_alive);
                finish_head(head_out);
                self.streamed = true;
            }
            ReplyOut::Body(pieces) => {
                for piece in pieces {
                    self.conn.out.body_piece(piece, false, chunked);
                }
            }
            ReplyOut::End(envelope) => {
                connect.code = connect::adapter::code_of(&envelope);
                self.conn.out.body_piece(envelope, false, chunked);
                if chunked {
                    self.conn.out.push_static(b"0\r\n\r\n");
                }
            }
            ReplyOut::Abort => connect.aborted = true,
        }
        connect.code
    }
}

impl<S: Transport> Downstream for H1Exchange<'_, S> {
    async fn client_event(&mut self, want_body: bool) -> ClientEvent {
        if !self.body.complete() {
            if !want_body {
                // The socket carries body bytes: it can only be read as body.
                return std::future::pending().await;
            }
            return match self.body_piece().await {
                Ok(piece) => ClientEvent::Body(piece),
                Err(Error::ClientClosed(_)) => ClientEvent::Gone,
                Err(error) => ClientEvent::Failed(error),
            };
        }
        self.watch_client().await;
        ClientEvent::Gone
    }

    fn head(&mut self, head: &Parts) {
        if let Some(connect) = &mut self.connect {
            let out = connect.reply.head(head, false);
            self.write_connect(out);
            return;
        }
        self.write_head(head, false);
        self.streamed = true;
    }

    fn data(&mut self, data: Bytes) -> Result<(), Error> {
        if let Some(connect) = &mut self.connect {
            let out = connect.data(data)?;
            self.write_connect(out);
            return Ok(());
        }
        let chunked = self.chunked();
        self.conn.out.body_piece(data, self.text, chunked);
        Ok(())
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(connect) = &mut self.connect {
            let out = connect.reply.trailers(trailers);
            self.write_connect(out);
            return;
        }
        let chunked = self.chunked();
        self.conn.out.trailer_frame(
            trailers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
            self.text,
            chunked,
        );
    }

    fn trailers_only(&mut self, head: &Parts) {
        if let Some(connect) = &mut self.connect {
            let out = connect.reply.head(head, true);
            self.write_connect(out);
            return;
        }
        self.write_head(head, true);
    }

    fn fail(&mut self, error: &Error, head_sent: bool) -> End {
        if let Some(connect) = &mut self.connect {
            let out = connect.fail(error, head_sent);
            let code = self.write_connect(out);
            return End::Status(code as u32);
        }
        self.conn.write_error(error, self.reply_to, head_sent);
        // An HTTP status is only written before the response began.
        match error.http_status() {
            Some(status) if !head_sent => End::Refused(status),
            _ => End::Status(error.code() as u32),
        }
    }

    fn has_output(&self) -> bool {
        !self.conn.out.is_empty()
    }

    fn output_full(&self) -> bool {
        self.conn.out.is_full()
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.conn.flush().await.map_err(Error::ClientClosed)
    }
}
