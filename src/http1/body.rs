//! A gRPC-Web request body read off an HTTP/1.1 connection's buffer, sans-IO: Content-Length or
//! chunked framing, then base64 decoding for `application/grpc-web-text`.
//!
//! The connection loop reads bytes into its buffer; [`BodyReader::drain_buffered`] splits off
//! whatever body bytes are there (slices of the buffer, not copies, in binary mode) and says when
//! the body ended. Anything after the body's end stays in the buffer: it is the next pipelined
//! request.

use bytes::{Bytes, BytesMut};

use super::chunked::{ChunkEvent, ChunkedDecoder};
use super::head::{BodyKind, Http1Error, RequestHead};
use crate::grpc_web::Base64Decoder;

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Chunked framing was broken, or the body exceeded its limit.
    Framing(Http1Error),
    /// A grpc-web-text body that is not valid base64.
    BadBase64,
}

impl From<Http1Error> for BodyError {
    fn from(e: Http1Error) -> Self {
        BodyError::Framing(e)
    }
}

/// Reads one request body from the connection's buffer.
pub struct BodyReader {
    framing: Framing,
    /// Text mode: the decoder and the decoded bytes not yet handed out.
    text: Option<(Base64Decoder, BytesMut)>,
    complete: bool,
}

enum Framing {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
}

impl BodyReader {
    /// A reader for `head`'s body. A Content-Length above `body_bytes_max` is refused here,
    /// before any of it is read; a chunked body is refused once it grows past the limit.
    pub fn new(head: &RequestHead, body_bytes_max: u64, text: bool) -> Result<Self, BodyError> {
        let framing = match head.body {
            BodyKind::Empty => Framing::Length { remaining: 0 },
            BodyKind::Length(n) if n > body_bytes_max => {
                return Err(BodyError::Framing(Http1Error::BodyTooLarge))
            }
            BodyKind::Length(n) => Framing::Length { remaining: n },
            BodyKind::Chunked => Framing::Chunked(ChunkedDecoder::new(body_bytes_max)),
        };
        let complete = matches!(framing, Framing::Length { remaining: 0 });
        Ok(BodyReader {
            framing,
            text: text.then(|| (Base64Decoder::new(), BytesMut::new())),
            complete,
        })
    }

    /// Whether the whole body has been handed out.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Take all body bytes currently in `buf` (split off, not copied) and, in text mode, decode
    /// them. Sets [`Self::complete`] when the body's end was reached. An empty result with the
    /// body incomplete means more bytes must be read.
    pub fn drain_buffered(&mut self, buf: &mut BytesMut) -> Result<Bytes, BodyError> {
        let raw = self.drain_framed(buf)?;
        let Some((decoder, decoded)) = &mut self.text else {
            return Ok(raw.into());
        };
        for piece in &raw.0 {
            decoder
                .decode(piece, decoded)
                .map_err(|_| BodyError::BadBase64)?;
        }
        if self.complete {
            decoder.finish(decoded).map_err(|_| BodyError::BadBase64)?;
        }
        Ok(decoded.split().freeze())
    }

    /// The framed body bytes now available: one slice for Content-Length; for chunked, the
    /// slices of every chunk piece buffered (joined only if there are several).
    fn drain_framed(&mut self, buf: &mut BytesMut) -> Result<RawPieces, BodyError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_request_head, HeadLimits};

    const LIMITS: HeadLimits = HeadLimits {
        header_bytes_max: 8 * 1024,
        header_count_max: 64,
    };

    /// Parse `head` off the front of `wire` and return it with the rest of the buffer.
    fn split(wire: &[u8]) -> (RequestHead, BytesMut) {
        let mut buf = BytesMut::from(wire);
        let head = parse_request_head(&mut buf, &LIMITS)
            .expect("valid head")
            .expect("whole head");
        (head, buf)
    }

    fn length_request(body: &[u8]) -> Vec<u8> {
        let mut wire = format!(
            "POST /s/M HTTP/1.1\r\nhost: h\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        wire
    }

    const CHUNKED_HEAD: &[u8] =
        b"POST /s/M HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n";

    /// Feed `rest` to the reader `step` bytes at a time, as reads would; collect the body.
    fn read_all(reader: &mut BodyReader, rest: &[u8], step: usize) -> Result<Vec<u8>, BodyError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in rest.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            body.extend_from_slice(&reader.drain_buffered(&mut buf)?);
            if reader.complete() {
                break;
            }
        }
        if rest.is_empty() {
            body.extend_from_slice(&reader.drain_buffered(&mut buf)?);
        }
        Ok(body)
    }

    #[test]
    fn content_length_body_is_a_slice_of_the_buffer() {
        let (head, mut buf) = split(&length_request(b"\0\0\0\0\x03abc"));
        let start = buf.as_ptr();
        let mut reader = BodyReader::new(&head, 1024, false).unwrap();
        let body = reader.drain_buffered(&mut buf).unwrap();
        assert_eq!(&body[..], b"\0\0\0\0\x03abc");
        assert_eq!(body.as_ptr(), start, "no copy in binary mode");
        assert!(reader.complete());
    }

    #[test]
    fn pipelined_bytes_after_the_body_stay_in_the_buffer() {
        let mut wire = length_request(b"abc");
        wire.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (head, mut buf) = split(&wire);
        let mut reader = BodyReader::new(&head, 1024, false).unwrap();
        assert_eq!(&reader.drain_buffered(&mut buf).unwrap()[..], b"abc");
        assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\n");
        // Once complete, nothing more is taken.
        assert!(reader.drain_buffered(&mut buf).unwrap().is_empty());
        assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\n");
    }

    #[test]
    fn body_split_at_every_read_size_is_the_same() {
        let body: Vec<u8> = (0..200u8).collect();
        let mut chunked = Vec::new();
        for piece in body.chunks(37) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        for step in 1..=chunked.len() {
            let (head, _) = split(&length_request(&body));
            let wire_body = &length_request(&body)[length_request(&body).len() - body.len()..];
            let mut reader = BodyReader::new(&head, 1024, false).unwrap();
            assert_eq!(read_all(&mut reader, wire_body, step).unwrap(), body);
            assert!(reader.complete());

            let (head, _) = split(CHUNKED_HEAD);
            let mut reader = BodyReader::new(&head, 1024, false).unwrap();
            assert_eq!(
                read_all(&mut reader, &chunked, step).unwrap(),
                body,
                "{step}"
            );
            assert!(reader.complete(), "{step}");
        }
    }

    #[test]
    fn several_chunks_in_one_read_are_joined() {
        let (head, mut buf) = split(CHUNKED_HEAD);
        buf.extend_from_slice(b"2\r\nab\r\n3\r\ncde\r\n");
        let mut reader = BodyReader::new(&head, 1024, false).unwrap();
        assert_eq!(&reader.drain_buffered(&mut buf).unwrap()[..], b"abcde");
        assert!(!reader.complete());
        buf.extend_from_slice(b"0\r\n\r\n");
        assert!(reader.drain_buffered(&mut buf).unwrap().is_empty());
        assert!(reader.complete());
    }

    #[test]
    fn empty_body_is_complete_at_once() {
        let (head, mut buf) = split(b"POST /s/M HTTP/1.1\r\nhost: h\r\n\r\n");
        let mut reader = BodyReader::new(&head, 0, false).unwrap();
        assert!(reader.complete());
        assert!(reader.drain_buffered(&mut buf).unwrap().is_empty());
    }

    #[test]
    fn text_mode_decodes_across_reads_and_padding_in_the_middle() {
        // Two independently padded quanta ("AAAAAAM=" is 00 00 00 00 03, "YWJj" is abc),
        // split at every byte.
        let text = b"AAAAAAM=YWJj";
        for step in 1..=text.len() {
            let (head, _) = split(&length_request(text));
            let mut reader = BodyReader::new(&head, 1024, true).unwrap();
            assert_eq!(
                read_all(&mut reader, text, step).unwrap(),
                b"\0\0\0\0\x03abc",
                "{step}"
            );
        }
    }

    #[test]
    fn text_mode_refuses_bad_base64_and_a_truncated_end() {
        for bad in [&b"AA!A"[..], b"A", b"AAAAA===", b"====", b"AA=A"] {
            let (head, mut buf) = split(&length_request(bad));
            let mut reader = BodyReader::new(&head, 1024, true).unwrap();
            assert!(
                matches!(reader.drain_buffered(&mut buf), Err(BodyError::BadBase64)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn length_over_the_limit_is_refused_before_reading() {
        let (head, _) = split(&length_request(&[0; 11]));
        assert!(matches!(
            BodyReader::new(&head, 10, false),
            Err(BodyError::Framing(Http1Error::BodyTooLarge))
        ));
        assert!(BodyReader::new(&head, 11, false).is_ok());
    }

    #[test]
    fn chunked_body_over_the_limit_is_refused() {
        let (head, mut buf) = split(CHUNKED_HEAD);
        buf.extend_from_slice(b"6\r\nabcdef\r\n");
        let mut reader = BodyReader::new(&head, 5, false).unwrap();
        assert!(matches!(
            reader.drain_buffered(&mut buf),
            Err(BodyError::Framing(Http1Error::BodyTooLarge))
        ));
    }

    #[test]
    fn bad_chunk_framing_is_an_error_not_a_guess() {
        for bad in [&b"zz\r\n"[..], b"1\nx\r\n", b"1\r\nxy", b"-1\r\n"] {
            let (head, mut buf) = split(CHUNKED_HEAD);
            buf.extend_from_slice(bad);
            let mut reader = BodyReader::new(&head, 1024, false).unwrap();
            assert!(
                matches!(reader.drain_buffered(&mut buf), Err(BodyError::Framing(_))),
                "{bad:?}"
            );
        }
    }
}
