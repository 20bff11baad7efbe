//! HTTP/1.1 as browsers speak it to ringway, sans-IO: request heads, bodies and response
//! framing.
//!
//! Browsers speak gRPC-Web to ringway over HTTP/1.1. This module turns the bytes at the front of a
//! connection's read buffer into a [`RequestHead`] and, for chunked uploads, into body data. It
//! also writes response heads and chunk-size lines. It never touches a socket: the connection loop
//! reads into a `BytesMut`, calls in here, and acts on what comes back. The fuzz targets and the
//! unit tests below call the same functions on plain byte buffers.
//!
//! Three properties matter more than anything else here:
//!
//! - **No request smuggling.** A proxy that frames a body differently from the hop in front of it
//!   can be made to see two requests where that hop saw one. We answer every ambiguity in
//!   RFC 9112 §6 with a rejection instead of a guess: Content-Length together with
//!   Transfer-Encoding, disagreeing Content-Lengths, transfer codings other than a single
//!   `chunked`, obsolete line folding, whitespace before a header's colon, and bare LF line
//!   endings (in the head and in chunk framing) all end the connection with a 4xx/5xx.
//! - **Zero copy.** A parsed head is split off the read buffer and frozen once; the path and every
//!   header name and value are `Bytes` slices of it. Chunk data is split off the buffer too.
//! - **Bounded work and memory.** The head is parsed only within `header_bytes_max`, header fields
//!   are capped, chunk-size lines and the trailer section have fixed byte limits, and decoded body
//!   bytes are capped by `body_bytes_max`. Nothing panics on any input.

//!
//! The pieces: the head parser (`head.rs`), chunked bodies (`chunked.rs`), the body reader with
//! base64 text mode (`body.rs`), response writing (`write.rs`) and the vectored output
//! (`output.rs`, whose `flush` is the one function here that does IO). The connection loop that
//! uses them is `downstream/http1.rs`.

mod body;
mod chunked;
mod head;
mod output;
mod write;

pub use body::{BodyError, BodyReader};
pub use chunked::{
    ChunkEvent, ChunkedDecoder, CHUNK_SIZE_LINE_BYTES_MAX, TRAILER_SECTION_BYTES_MAX,
};
pub use head::{
    parse_request_head, BodyKind, HeadLimits, Header, Http1Error, Method, RequestHead, Version,
    HEADER_COUNT_CAP,
};
pub use output::{Output, OUTPUT_FLUSH_BYTES, OUTPUT_SLICES_MAX};
pub use write::{
    chunk_size_line, finish_head, reason_phrase, write_content_length, write_header,
    write_status_line,
};
