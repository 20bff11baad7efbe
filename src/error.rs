//! The proxy's one error type, and the one place it is mapped to what the client sees.
//!
//! Errors come from three sides (pingora-error's split): the downstream client sent something
//! we refuse, the upstream failed, or we ran out of something locally. Downstream errors are
//! answered with an HTTP status and the connection is closed, because after a malformed request
//! the byte stream cannot be trusted. Everything that happens once a well-formed gRPC-Web call
//! was accepted ends in a gRPC status the browser's client can read, never a bare HTTP error.

use std::fmt;
use std::io;

use crate::grpc_web::{code_from_h2_reason, code_from_http_status, Code};
use crate::http1::Http1Error;

/// Which side an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug)]
pub enum Error {
    // --- downstream: answered with an HTTP status, then the connection closes ---
    /// The HTTP/1.1 head or body framing was refused.
    Http1(Http1Error),
    /// The request head or body did not arrive within the read timeout.
    RequestTimeout,
    /// A POST whose content type is not gRPC-Web.
    UnsupportedMediaType,
    /// A method other than POST (and OPTIONS preflights, and the health path's GET/HEAD).
    MethodNotAllowed,
    /// A grpc-web-text body that is not valid base64.
    BadBase64,
    /// The client closed the connection or a write to it failed; nothing can be answered.
    ClientClosed(io::Error),

    // --- upstream and local: answered with a gRPC status ---
    /// The endpoint set is empty.
    NoEndpoint,
    /// TCP connect or HTTP/2 handshake failed; nothing was sent.
    Connect(io::Error),
    /// TCP connect did not finish within the connect timeout; nothing was sent.
    ConnectTimeout,
    /// Every connection to the endpoint is full and so is the wait queue.
    PoolExhausted,
    /// A call waited for a stream slot longer than the pending timeout.
    PendingTimeout,
    /// The HTTP/2 layer failed: a RST_STREAM, GOAWAY or connection error.
    H2(h2::Error),
    /// The upstream answered with a non-gRPC HTTP reply.
    UpstreamHttpStatus(u16),
    /// The upstream broke the gRPC protocol (no grpc-status, stream closed early).
    UpstreamProtocol(&'static str),
    /// The call's grpc-timeout expired.
    DeadlineExceeded,
}

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP error status with a short reason as the body; the connection closes after it.
    Http { status: u16, reason: &'static str },
    /// A gRPC status, as trailers-only (HTTP 200) or as the final trailer frame.
    Grpc { code: Code, message: String },
}

impl Error {
    pub fn side(&self) -> Side {
        match self {
            Error::Http1(_)
            | Error::RequestTimeout
            | Error::UnsupportedMediaType
            | Error::MethodNotAllowed
            | Error::BadBase64
            | Error::ClientClosed(_) => Side::Downstream,
            Error::PoolExhausted | Error::PendingTimeout | Error::DeadlineExceeded => {
                Side::Internal
            }
            Error::NoEndpoint
            | Error::Connect(_)
            | Error::ConnectTimeout
            | Error::H2(_)
            | Error::UpstreamHttpStatus(_)
            | Error::UpstreamProtocol(_) => Side::Upstream,
        }
    }

    /// Whether the request provably never reached the upstream application, so another endpoint
    /// may be tried without risking a duplicate call.
    pub fn retry_safe(&self) -> bool {
        match self {
            Error::Connect(_) | Error::ConnectTimeout => true,
            // REFUSED_STREAM is the peer's promise that it did not process the stream
            // (RFC 9113 §8.7), and a GOAWAY refusal means the stream was never opened.
            Error::H2(e) => e.reason() == Some(h2::Reason::REFUSED_STREAM) || e.is_go_away(),
            _ => false,
        }
    }

    /// Whether a retry may go to the same endpoint: a stream refused on one connection can
    /// succeed on a fresh one, but an endpoint that refused the connection is in backoff.
    pub fn retry_same_endpoint(&self) -> bool {
        matches!(self, Error::H2(_))
    }

    /// The single mapping from error to client-visible status (grpc/grpc
    /// doc/http-grpc-status-mapping.md and PROTOCOL-HTTP2.md).
    pub fn reply(&self) -> Reply {
        let grpc = |code: Code, message: String| Reply::Grpc { code, message };
        match self {
            Error::Http1(e) => Reply::Http {
                status: e.status(),
                reason: e.reason(),
            },
            Error::RequestTimeout => Reply::Http {
                status: 408,
                reason: "request not received in time",
            },
            Error::UnsupportedMediaType => Reply::Http {
                status: 415,
                reason: "content-type must be application/grpc-web or application/grpc-web-text",
            },
            Error::MethodNotAllowed => Reply::Http {
                status: 405,
                reason: "gRPC-Web calls use POST",
            },
            Error::BadBase64 => Reply::Http {
                status: 400,
                reason: "grpc-web-text body is not valid base64",
            },
            Error::ClientClosed(_) => Reply::Http {
                status: 400,
                reason: "client closed the connection",
            },
            Error::NoEndpoint => grpc(Code::Unavailable, "no healthy upstream".into()),
            Error::Connect(e) => grpc(Code::Unavailable, format!("upstream connect error: {e}")),
            Error::ConnectTimeout => grpc(Code::Unavailable, "upstream connect timeout".into()),
            Error::PoolExhausted => grpc(
                Code::ResourceExhausted,
                "upstream connection pool and queue are full".into(),
            ),
            Error::PendingTimeout => grpc(
                Code::Unavailable,
                "timed out waiting for an upstream stream".into(),
            ),
            Error::H2(e) => h2_reply(e),
            Error::UpstreamHttpStatus(status) => grpc(
                code_from_http_status(*status),
                format!("upstream returned HTTP {status} without gRPC status"),
            ),
            Error::UpstreamProtocol(what) => grpc(Code::Internal, (*what).to_string()),
            Error::DeadlineExceeded => grpc(Code::DeadlineExceeded, "deadline exceeded".into()),
        }
    }
}

fn h2_reply(e: &h2::Error) -> Reply {
    let (code, message) = match e.reason() {
        Some(reason) if e.is_go_away() && reason == h2::Reason::NO_ERROR => (
            Code::Unavailable,
            "upstream connection closed (GOAWAY)".to_string(),
        ),
        Some(reason) => (
            code_from_h2_reason(reason.into()),
            format!("upstream reset the stream: {reason:?}"),
        ),
        // An IO error or a local library error: the connection broke under the call.
        None => (Code::Unavailable, format!("upstream connection error: {e}")),
    };
    Reply::Grpc { code, message }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reply() {
            Reply::Http { status, reason } => write!(f, "HTTP {status}: {reason}"),
            Reply::Grpc { code, message } => write!(f, "{}: {message}", code.name()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::ClientClosed(e) => Some(e),
            Error::H2(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Http1Error> for Error {
    fn from(e: Http1Error) -> Self {
        Error::Http1(e)
    }
}

impl From<h2::Error> for Error {
    fn from(e: h2::Error) -> Self {
        Error::H2(e)
    }
}
