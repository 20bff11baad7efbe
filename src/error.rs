//! The proxy's one error type, and the one place it is mapped to what the client sees.
//!
//! Errors come from three sides (pingora-error's split): the downstream client sent something
//! we refuse, the upstream failed, or we ran out of something locally. Downstream errors are
//! answered with an HTTP status and the connection is closed, because after a malformed request
//! the byte stream cannot be trusted. Everything that happens once a well-formed call was
//! accepted ends in a gRPC status the client's library can read, never a bare HTTP error.
//!
//! Classifying an error ([`Error::side`], [`Error::http_status`], [`Error::code`]) never
//! formats a string: the request path classifies every failed call (for outlier ejection and
//! the counters), and only the reply to the client needs the message ([`Error::message`]).
//! Which errors may be retried is decided in `retry.rs`.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::http1::{BodyError, Http1Error};
use crate::status::{code_from_h2_reason, code_from_http_status, Code};

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
    /// A request whose head cannot be turned into an upstream call (no authority, a target
    /// that is not a path, a header the upstream could not carry).
    Malformed(&'static str),
    /// The request head or body did not arrive within the read timeout.
    RequestTimeout,
    /// A POST whose content type is not gRPC-Web.
    UnsupportedMediaType,
    /// A method other than POST (and OPTIONS preflights, and the health path's GET/HEAD).
    MethodNotAllowed,
    /// A grpc-web-text body that is not valid base64.
    BadBase64,
    /// A request its protocol's translation refused (a Connect request with a bad envelope,
    /// timeout or query, a message over the limit): answered with this status in the
    /// protocol's own terms.
    Refused { code: Code, message: &'static str },
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
    /// The proxy's drain timeout passed while the call still ran.
    Shutdown,
    /// The upstream sent no response headers within `--response-headers-timeout-ms`.
    ResponseHeadersTimeout,
}

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP error status with a short reason as the body; the connection closes after it.
    Http { status: u16, reason: &'static str },
    /// A gRPC status, as trailers-only (HTTP 200) or as the final trailers.
    Grpc { code: Code, message: String },
}

impl Error {
    pub fn side(&self) -> Side {
        match self {
            Error::Http1(_)
            | Error::Malformed(_)
            | Error::RequestTimeout
            | Error::UnsupportedMediaType
            | Error::MethodNotAllowed
            | Error::BadBase64
            | Error::Refused { .. }
            | Error::ClientClosed(_) => Side::Downstream,
            Error::PoolExhausted
            | Error::PendingTimeout
            | Error::DeadlineExceeded
            | Error::Shutdown => Side::Internal,
            Error::NoEndpoint
            | Error::Connect(_)
            | Error::ConnectTimeout
            | Error::H2(_)
            | Error::UpstreamHttpStatus(_)
            | Error::UpstreamProtocol(_)
            | Error::ResponseHeadersTimeout => Side::Upstream,
        }
    }

    /// The HTTP status of an error answered with one (the downstream's protocol errors), or
    /// `None` for the errors that end a call with a gRPC status.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Http1(e) => Some(e.status()),
            Error::Malformed(_) => Some(400),
            Error::RequestTimeout => Some(408),
            Error::UnsupportedMediaType => Some(415),
            Error::MethodNotAllowed => Some(405),
            Error::BadBase64 => Some(400),
            Error::ClientClosed(_) => Some(400),
            _ => None,
        }
    }

    /// The gRPC status an error ends a call with (grpc/grpc doc/http-grpc-status-mapping.md
    /// and PROTOCOL-HTTP2.md). Errors answered with an HTTP status map as the HTTP status
    /// would, for protocols that can only carry a gRPC status at that point.
    pub fn code(&self) -> Code {
        match self {
            Error::NoEndpoint
            | Error::Connect(_)
            | Error::ConnectTimeout
            | Error::PendingTimeout
            | Error::Shutdown
            | Error::ResponseHeadersTimeout => Code::Unavailable,
            Error::PoolExhausted | Error::Http1(Http1Error::BodyTooLarge) => {
                Code::ResourceExhausted
            }
            Error::H2(e) => h2_code(e),
            Error::UpstreamHttpStatus(status) => code_from_http_status(*status),
            Error::UpstreamProtocol(_) => Code::Internal,
            Error::DeadlineExceeded => Code::DeadlineExceeded,
            Error::ClientClosed(_) => Code::Cancelled,
            Error::RequestTimeout => Code::DeadlineExceeded,
            Error::Http1(_)
            | Error::Malformed(_)
            | Error::UnsupportedMediaType
            | Error::MethodNotAllowed => Code::Internal,
            Error::BadBase64 => Code::InvalidArgument,
            Error::Refused { code, .. } => *code,
        }
    }

    /// The text the client is told: the HTTP reason, or the `grpc-message`.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Error::Http1(e) => e.reason().into(),
            Error::Malformed(reason) => (*reason).into(),
            Error::RequestTimeout => "request not received in time".into(),
            Error::UnsupportedMediaType => {
                "content-type must be application/grpc-web or application/grpc-web-text".into()
            }
            Error::MethodNotAllowed => "gRPC-Web calls use POST".into(),
            Error::BadBase64 => "grpc-web-text body is not valid base64".into(),
            Error::Refused { message, .. } => (*message).into(),
            Error::ClientClosed(_) => "client closed the connection".into(),
            Error::NoEndpoint => "no healthy upstream".into(),
            Error::Connect(e) => format!("upstream connect error: {e}").into(),
            Error::ConnectTimeout => "upstream connect timeout".into(),
            Error::PoolExhausted => "upstream connection pool and queue are full".into(),
            Error::PendingTimeout => "timed out waiting for an upstream stream".into(),
            Error::H2(e) => h2_message(e).into(),
            Error::UpstreamHttpStatus(status) => {
                format!("upstream returned HTTP {status} without gRPC status").into()
            }
            Error::UpstreamProtocol(what) => (*what).into(),
            Error::DeadlineExceeded => "deadline exceeded".into(),
            Error::Shutdown => "proxy shutting down: its drain timeout passed".into(),
            Error::ResponseHeadersTimeout => "upstream sent no response headers in time".into(),
        }
    }

    /// The single mapping from error to client-visible status.
    pub fn reply(&self) -> Reply {
        match self.http_status() {
            Some(status) => Reply::Http {
                status,
                reason: match self.message() {
                    Cow::Borrowed(reason) => reason,
                    // Every HTTP-class error's reason is a static string.
                    Cow::Owned(_) => "request refused",
                },
            },
            None => Reply::Grpc {
                code: self.code(),
                message: self.message().into_owned(),
            },
        }
    }
}

fn h2_code(e: &h2::Error) -> Code {
    match e.reason() {
        Some(reason) if e.is_go_away() && reason == h2::Reason::NO_ERROR => Code::Unavailable,
        Some(reason) => code_from_h2_reason(reason.into()),
        // An IO error or a local library error: the connection broke under the call.
        None => Code::Unavailable,
    }
}

fn h2_message(e: &h2::Error) -> String {
    match e.reason() {
        Some(reason) if e.is_go_away() && reason == h2::Reason::NO_ERROR => {
            "upstream connection closed (GOAWAY)".to_string()
        }
        Some(reason) => format!("upstream reset the stream: {reason:?}"),
        None => format!("upstream connection error: {e}"),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.http_status() {
            Some(status) => write!(f, "HTTP {status}: {}", self.message()),
            None => write!(f, "{}: {}", self.code().name(), self.message()),
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

impl From<crate::connect::ConnectError> for Error {
    fn from(e: crate::connect::ConnectError) -> Self {
        Error::Refused {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<BodyError> for Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Framing(e) => Error::Http1(e),
            BodyError::BadBase64 => Error::BadBase64,
        }
    }
}

impl From<h2::Error> for Error {
    fn from(e: h2::Error) -> Self {
        Error::H2(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_errors_are_http_replies_with_static_reasons() {
        let errors = [
            Error::Http1(Http1Error::HeadTooLarge),
            Error::RequestTimeout,
            Error::UnsupportedMediaType,
            Error::MethodNotAllowed,
            Error::BadBase64,
            Error::ClientClosed(io::ErrorKind::BrokenPipe.into()),
        ];
        let statuses: Vec<u16> = errors.iter().filter_map(Error::http_status).collect();
        assert_eq!(statuses, [431, 408, 415, 405, 400, 400]);
        for error in &errors {
            assert_eq!(error.side(), Side::Downstream);
            assert!(matches!(error.message(), Cow::Borrowed(_)), "{error:?}");
            assert!(matches!(error.reply(), Reply::Http { .. }));
        }
    }

    #[test]
    fn upstream_and_local_errors_are_grpc_statuses() {
        let table = [
            (Error::NoEndpoint, Code::Unavailable),
            (
                Error::Connect(io::ErrorKind::ConnectionRefused.into()),
                Code::Unavailable,
            ),
            (Error::ConnectTimeout, Code::Unavailable),
            (Error::PoolExhausted, Code::ResourceExhausted),
            (Error::PendingTimeout, Code::Unavailable),
            (Error::UpstreamHttpStatus(503), Code::Unavailable),
            (Error::UpstreamHttpStatus(404), Code::Unimplemented),
            (Error::UpstreamProtocol("no grpc-status"), Code::Internal),
            (Error::DeadlineExceeded, Code::DeadlineExceeded),
            (Error::ResponseHeadersTimeout, Code::Unavailable),
            (
                Error::H2(h2::Error::from(h2::Reason::REFUSED_STREAM)),
                Code::Unavailable,
            ),
            (
                Error::H2(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM)),
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in table {
            assert_eq!(error.http_status(), None, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
            match error.reply() {
                Reply::Grpc {
                    code: replied,
                    message,
                } => {
                    assert_eq!(replied, code);
                    assert!(!message.is_empty());
                }
                other => panic!("{error:?} replied {other:?}"),
            }
        }
    }

    #[test]
    fn display_names_the_status() {
        assert_eq!(
            Error::UpstreamHttpStatus(502).to_string(),
            "UNAVAILABLE: upstream returned HTTP 502 without gRPC status"
        );
        assert_eq!(
            Error::MethodNotAllowed.to_string(),
            "HTTP 405: gRPC-Web calls use POST"
        );
    }
}
