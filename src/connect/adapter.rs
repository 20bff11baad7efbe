//! The two sides of a Connect call as a downstream exchange drives them, sans-IO: the request
//! body on its way to the gRPC upstream ([`RequestBody`]), and the upstream's gRPC response
//! events turned into what the client's framing must write ([`Reply`], [`ReplyOut`]).
//!
//! An exchange (HTTP/1.1 or HTTP/2) feeds the call's events in and writes what comes out; it
//! never looks inside a Connect message. Unary responses are decided by their trailers (an
//! error changes the HTTP status), so [`Reply`] holds a unary answer until then; streams pass
//! message by message.

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::response::Parts;

use super::envelope::EnvelopeRelay;
use super::request::{unary_frame_prefix, UnaryBody};
use super::response::{
    error_response, CompleteResponse, Header, StreamEnd, StreamingHead, StreamingResponse,
    UnaryResponse,
};
use super::{CallKind, Code, ConnectCall, ConnectError};

/// How a Connect request body becomes the upstream's gRPC body.
#[derive(Debug)]
pub enum RequestBody {
    /// A unary body of known length: the frame prefix goes in front of its first bytes, and
    /// the rest streams through unbuffered.
    Prefixed(Option<[u8; 5]>),
    /// A unary body of unknown length (chunked, or HTTP/2 without `content-length`): held,
    /// bounded, until it ends, then framed.
    Gathered(Option<UnaryBody>),
    /// A stream's body: envelopes checked and passed through as gRPC frames.
    Envelopes(EnvelopeRelay),
    /// A GET: the body is the query's message, already framed.
    None,
}

impl RequestBody {
    /// The body handling for `call`. `content_length` is the body's length when the framing
    /// announced it; `compressed` follows the request's `grpc-encoding`; `message_bytes_max`
    /// bounds a message.
    pub fn new(
        call: &ConnectCall,
        content_length: Option<u64>,
        compressed: bool,
        message_bytes_max: usize,
    ) -> Result<RequestBody, ConnectError> {
        Ok(match (call.kind, content_length) {
            (CallKind::UnaryGet, _) => RequestBody::None,
            (CallKind::Unary, Some(len)) => RequestBody::Prefixed(Some(unary_frame_prefix(
                len,
                compressed,
                message_bytes_max,
            )?)),
            (CallKind::Unary, None) => {
                RequestBody::Gathered(Some(UnaryBody::new(compressed, message_bytes_max)))
            }
            (CallKind::Streaming, _) => {
                RequestBody::Envelopes(EnvelopeRelay::messages(message_bytes_max, compressed))
            }
        })
    }

    /// The upstream bytes for the next piece of the client's body; `last` when the body ends
    /// with it. A gathered body yields nothing until its end.
    pub fn piece(&mut self, data: Bytes, last: bool) -> Result<Bytes, ConnectError> {
        match self {
            RequestBody::None => Ok(Bytes::new()),
            RequestBody::Prefixed(prefix) => match prefix.take() {
                Some(prefix) => {
                    let mut framed = BytesMut::with_capacity(prefix.len() + data.len());
                    framed.extend_from_slice(&prefix);
                    framed.extend_from_slice(&data);
                    Ok(framed.freeze())
                }
                None => Ok(data),
            },
            RequestBody::Gathered(gathered) => {
                let body = gathered.as_mut().ok_or(FINISHED)?;
                body.push(&data)?;
                match last {
                    true => gathered.take().ok_or(FINISHED)?.finish(),
                    false => Ok(Bytes::new()),
                }
            }
            RequestBody::Envelopes(relay) => {
                let mut out = Vec::new();
                relay.relay(data, &mut out).map_err(|e| e.from_client())?;
                if last {
                    relay.finish().map_err(|e| e.from_client())?;
                }
                Ok(join(out))
            }
        }
    }
}

const FINISHED: ConnectError = ConnectError::new(Code::Internal, "request body after its end");

fn join(pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.into_iter().next().expect("length checked"),
        _ => {
            let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in &pieces {
                joined.extend_from_slice(piece);
            }
            joined.freeze()
        }
    }
}

/// What the client's framing writes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOut {
    /// Nothing yet: a unary answer waits for its trailers.
    Nothing,
    /// A whole response (status, headers, body); the response ends with it.
    Complete(CompleteResponse),
    /// A stream's head: `200` with these headers; body pieces follow.
    Head(Vec<Header>),
    /// Body pieces of a stream.
    Body(Vec<Bytes>),
    /// The stream's last bytes (the end-of-stream envelope); the response ends with them.
    End(Bytes),
    /// End the body abruptly (the client holds part of an envelope): HTTP/1.1 closes the
    /// connection without the last chunk, HTTP/2 resets the stream.
    Abort,
}

/// The response side of one Connect call.
#[derive(Debug)]
pub struct Reply {
    call: ConnectCall,
    side: Side,
}

#[derive(Debug)]
enum Side {
    Unary(UnaryResponse),
    Streaming(StreamingResponse),
}

impl Reply {
    /// `message_bytes_max` bounds a unary response message held until its trailers, and each
    /// streamed message.
    pub fn new(call: ConnectCall, message_bytes_max: usize) -> Reply {
        let side = match call.kind {
            CallKind::Streaming => {
                Side::Streaming(StreamingResponse::new(&call, message_bytes_max))
            }
            CallKind::Unary | CallKind::UnaryGet => {
                Side::Unary(UnaryResponse::new(&call, message_bytes_max))
            }
        };
        Reply { call, side }
    }

    pub fn call(&self) -> &ConnectCall {
        &self.call
    }

    /// The upstream's response head; `end_of_stream` for a trailers-only reply.
    pub fn head(&mut self, head: &Parts, end_of_stream: bool) -> ReplyOut {
        let status = head.status.as_u16();
        let fields = pairs(&head.headers);
        match &mut self.side {
            Side::Unary(unary) => match unary.head(status, fields, end_of_stream) {
                Some(complete) => ReplyOut::Complete(complete),
                None => ReplyOut::Nothing,
            },
            Side::Streaming(stream) => match stream.head(status, fields, end_of_stream) {
                StreamingHead::Stream(headers) => ReplyOut::Head(headers),
                StreamingHead::Complete(complete) => ReplyOut::Complete(complete),
            },
        }
    }

    /// Response bytes from the upstream. `Err` carries the response's end when these bytes
    /// broke the call (a second unary message, a message over the limit, broken framing): the
    /// upstream stream must be cancelled.
    pub fn data(&mut self, data: Bytes) -> Result<ReplyOut, ReplyOut> {
        match &mut self.side {
            Side::Unary(unary) => unary
                .data(data)
                .map(|()| ReplyOut::Nothing)
                .map_err(ReplyOut::Complete),
            Side::Streaming(stream) => {
                let mut out = Vec::new();
                match stream.data(data, &mut out) {
                    Ok(()) => Ok(ReplyOut::Body(out)),
                    // What was relayed before the break still goes out, then the end.
                    Err(end) => Err(stream_end(end, out)),
                }
            }
        }
    }

    /// The upstream's trailers: the end of the response.
    pub fn trailers(&mut self, trailers: &HeaderMap) -> ReplyOut {
        let fields = pairs(trailers);
        match &mut self.side {
            Side::Unary(unary) => ReplyOut::Complete(unary.trailers(fields)),
            Side::Streaming(stream) => stream_end(stream.trailers(fields), Vec::new()),
        }
    }

    /// The call failed with `code`: before the head (`head_sent` false) a whole error
    /// response, after it the stream's end.
    pub fn failed(&mut self, code: Code, message: &str, head_sent: bool) -> ReplyOut {
        match &mut self.side {
            Side::Unary(unary) => ReplyOut::Complete(unary.failed(code, message)),
            Side::Streaming(_) if !head_sent => {
                ReplyOut::Complete(error_response(&self.call, code, message))
            }
            Side::Streaming(stream) => stream_end(stream.failed(code, message), Vec::new()),
        }
    }
}

/// A stream's end as framing output, after any pieces still to forward.
fn stream_end(end: StreamEnd, before: Vec<Bytes>) -> ReplyOut {
    match end {
        StreamEnd::Envelope(envelope) if before.is_empty() => ReplyOut::End(envelope),
        StreamEnd::Envelope(envelope) => {
            let mut all = before;
            all.push(envelope);
            ReplyOut::End(join(all))
        }
        StreamEnd::Abort => ReplyOut::Abort,
    }
}

fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
}

/// The status code a Connect response body carries, for the counters and the access log: the
/// `code` of its JSON error (a unary error body, or a stream's end-of-stream envelope), OK
/// when there is none. The JSON is ringway's own, with `code` written unescaped and first
/// inside its object, and every string value escaped, so the first `"code":"` is the code.
pub fn code_of(body: &[u8]) -> Code {
    const KEY: &[u8] = b"\"code\":\"";
    let Some(at) = body.windows(KEY.len()).position(|w| w == KEY) else {
        return Code::Ok;
    };
    let rest = &body[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    super::code_from_name(&rest[..end]).unwrap_or(Code::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Codec;

    fn call(kind: CallKind) -> ConnectCall {
        ConnectCall {
            kind,
            codec: Codec::Proto,
        }
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn parts(status: u16, headers: &[(&'static str, &'static str)]) -> Parts {
        let mut response = http::Response::builder().status(status);
        for (n, v) in headers {
            response = response.header(*n, *v);
        }
        response.body(()).unwrap().into_parts().0
    }

    fn trailers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(*n, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_unary_body_of_known_length_is_framed_in_front_and_streamed() {
        let mut body = RequestBody::new(&call(CallKind::Unary), Some(5), false, 1024).unwrap();
        assert_eq!(
            &body.piece(Bytes::from_static(b"he"), false).unwrap()[..],
            b"\0\0\0\0\x05he"
        );
        assert_eq!(
            &body.piece(Bytes::from_static(b"llo"), true).unwrap()[..],
            b"llo"
        );
        assert!(RequestBody::new(&call(CallKind::Unary), Some(2000), false, 1024).is_err());
    }

    #[test]
    fn a_unary_body_of_unknown_length_is_gathered_then_framed_and_bounded() {
        let mut body = RequestBody::new(&call(CallKind::Unary), None, false, 8).unwrap();
        assert!(body
            .piece(Bytes::from_static(b"abc"), false)
            .unwrap()
            .is_empty());
        assert_eq!(
            &body.piece(Bytes::from_static(b"de"), true).unwrap()[..],
            b"\0\0\0\0\x05abcde"
        );
        assert!(
            body.piece(Bytes::from_static(b"x"), true).is_err(),
            "nothing after the end"
        );
        let mut big = RequestBody::new(&call(CallKind::Unary), None, false, 4).unwrap();
        let error = big.piece(Bytes::from_static(b"12345"), false).unwrap_err();
        assert_eq!(error.code, Code::ResourceExhausted);
    }

    #[test]
    fn a_stream_body_passes_envelopes_and_refuses_broken_ones() {
        let mut body = RequestBody::new(&call(CallKind::Streaming), None, false, 64).unwrap();
        let envelope = frame(b"msg");
        let (a, b) = envelope.split_at(3);
        let mut out = body
            .piece(Bytes::copy_from_slice(a), false)
            .unwrap()
            .to_vec();
        out.extend_from_slice(&body.piece(Bytes::copy_from_slice(b), true).unwrap());
        assert_eq!(out, envelope);
        // The end-of-stream flag (0x02) from a client, and an envelope cut by the end.
        let mut bad = RequestBody::new(&call(CallKind::Streaming), None, false, 64).unwrap();
        assert!(bad
            .piece(Bytes::from_static(b"\x02\0\0\0\0"), true)
            .is_err());
        let mut cut = RequestBody::new(&call(CallKind::Streaming), None, false, 64).unwrap();
        assert!(cut
            .piece(Bytes::from_static(b"\0\0\0\0\x09abc"), true)
            .is_err());
    }

    #[test]
    fn a_unary_reply_waits_for_the_trailers() {
        let mut reply = Reply::new(call(CallKind::Unary), 1024);
        let head = parts(
            200,
            &[("content-type", "application/grpc+proto"), ("x-meta", "m")],
        );
        assert_eq!(reply.head(&head, false), ReplyOut::Nothing);
        assert_eq!(reply.data(Bytes::from(frame(b"ok"))), Ok(ReplyOut::Nothing));
        let ReplyOut::Complete(done) =
            reply.trailers(&trailers(&[("grpc-status", "0"), ("x-t", "t")]))
        else {
            panic!("a whole response");
        };
        assert_eq!((done.status, &done.body[..]), (200, &b"ok"[..]));
        let names: Vec<_> = done.header_names().collect();
        assert!(names.contains(&&b"x-meta"[..]) && names.contains(&&b"trailer-x-t"[..]));
        assert_eq!(code_of(&done.body), Code::Ok);
    }

    #[test]
    fn a_unary_error_becomes_json_with_its_http_status() {
        let mut reply = Reply::new(call(CallKind::Unary), 1024);
        let head = parts(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "5")],
        );
        let ReplyOut::Complete(done) = reply.head(&head, true) else {
            panic!("trailers-only decides the call");
        };
        assert_eq!(done.status, 404);
        assert!(std::str::from_utf8(&done.body)
            .unwrap()
            .contains("\"code\":\"not_found\""));
        assert_eq!(code_of(&done.body), Code::NotFound);
        let mut second = Reply::new(call(CallKind::Unary), 1024);
        second.head(&parts(200, &[("content-type", "application/grpc")]), false);
        let mut two = frame(b"a");
        two.extend(frame(b"b"));
        assert!(matches!(
            second.data(Bytes::from(two)),
            Err(ReplyOut::Complete(_))
        ));
    }

    #[test]
    fn a_stream_reply_relays_then_ends_with_the_envelope() {
        let mut reply = Reply::new(call(CallKind::Streaming), 1024);
        let head = parts(200, &[("content-type", "application/grpc+proto")]);
        assert!(matches!(reply.head(&head, false), ReplyOut::Head(_)));
        let envelope = frame(b"m1");
        assert_eq!(
            reply.data(Bytes::from(envelope.clone())),
            Ok(ReplyOut::Body(vec![Bytes::from(envelope)]))
        );
        let ReplyOut::End(end) = reply.trailers(&trailers(&[("grpc-status", "0")])) else {
            panic!("the end-of-stream envelope");
        };
        assert_eq!(end[0], 0x02);
        assert_eq!(code_of(&end), Code::Ok);
        // A failure after the head, mid-message: only an abort is honest.
        let mut cut = Reply::new(call(CallKind::Streaming), 1024);
        cut.head(&head, false);
        assert!(cut.data(Bytes::from_static(b"\0\0\0\0\x09ab")).is_ok());
        assert_eq!(cut.failed(Code::Unavailable, "gone", true), ReplyOut::Abort);
        // A failure before the head: 200 and only the end-of-stream envelope.
        let mut early = Reply::new(call(CallKind::Streaming), 1024);
        let ReplyOut::Complete(done) = early.failed(Code::Unavailable, "no upstream", false) else {
            panic!("a whole response");
        };
        assert_eq!((done.status, done.body[0]), (200, 0x02));
        assert_eq!(code_of(&done.body), Code::Unavailable);
    }
}
