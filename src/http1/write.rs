//! HTTP/1.x response heads and chunk-size lines, written piece by piece into a `BytesMut`
//! without building header lists or allocating.

use bytes::{BufMut, BytesMut};

use super::head::Version;

/// The canonical reason phrase for the statuses ringway answers with; "Unknown" for others.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Append `HTTP/1.x <status> <reason>\r\n`: the first piece of a head written piece by piece,
/// so callers never build a header list.
pub fn write_status_line(out: &mut BytesMut, version: Version, status: u16) {
    out.put_slice(match version {
        Version::Http10 => b"HTTP/1.0 ",
        Version::Http11 => b"HTTP/1.1 ",
    });
    put_decimal(out, u64::from(status));
    out.put_u8(b' ');
    out.put_slice(reason_phrase(status).as_bytes());
    out.put_slice(b"\r\n");
}

/// Append `name: value\r\n`.
///
/// A header whose name or value contains CR, LF or NUL is skipped: values can come from a
/// backend, and writing them would let it split our response in two.
pub fn write_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    if has_line_break_or_nul(name) || has_line_break_or_nul(value) {
        return;
    }
    out.reserve(name.len() + value.len() + 4);
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Append `content-length: <n>\r\n` without allocating.
pub fn write_content_length(out: &mut BytesMut, length: usize) {
    out.put_slice(b"content-length: ");
    put_decimal(out, length as u64);
    out.put_slice(b"\r\n");
}

/// Append the blank line that ends a head.
pub fn finish_head(out: &mut BytesMut) {
    out.put_slice(b"\r\n");
}

fn has_line_break_or_nul(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// Write `n` in decimal without allocating.
fn put_decimal(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

/// The chunk-size line for a chunk of `len` bytes (`"<hex>\r\n"`), into a small stack buffer.
/// Returns the buffer and how many of its bytes are the line. 18 bytes fit a 64-bit length.
pub fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut line = [0u8; 18];
    let digit_count = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in line[..digit_count].iter_mut().enumerate() {
        let shift = 4 * (digit_count - 1 - i);
        *slot = HEX_DIGITS[(len >> shift) & 0xf];
    }
    line[digit_count] = b'\r';
    line[digit_count + 1] = b'\n';
    (line, digit_count + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::Http1Error;
    use crate::testing::encode_response_head;

    // ---- responses ----

    #[test]
    fn encodes_response_heads() {
        let mut out = BytesMut::new();
        encode_response_head(
            &mut out,
            Version::Http11,
            200,
            &[
                (b"content-type", b"application/grpc-web+proto"),
                (b"transfer-encoding", b"chunked"),
            ],
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        out.clear();
        encode_response_head(&mut out, Version::Http10, 431, &[]);
        assert_eq!(
            &out[..],
            b"HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n"
        );
        out.clear();
        encode_response_head(&mut out, Version::Http11, 599, &[]);
        assert_eq!(&out[..], b"HTTP/1.1 599 Unknown\r\n\r\n");
        out.clear();
        encode_response_head(&mut out, Version::Http11, 7, &[]);
        assert_eq!(&out[..], b"HTTP/1.1 7 Unknown\r\n\r\n");
    }

    #[test]
    fn response_headers_cannot_split_the_response() {
        let mut out = BytesMut::new();
        encode_response_head(
            &mut out,
            Version::Http11,
            502,
            &[
                (b"x-a", b"1\r\n\r\nHTTP/1.1 200 OK"),
                (b"x\nb", b"2"),
                (b"x-c", b"3\0"),
                (b"x-d", b"4"),
            ],
        );
        assert_eq!(&out[..], b"HTTP/1.1 502 Bad Gateway\r\nx-d: 4\r\n\r\n");
    }

    #[test]
    fn every_error_maps_to_a_status_and_reason() {
        let errors = [
            Http1Error::Malformed("bad header name"),
            Http1Error::Smuggling("content-length with transfer-encoding"),
            Http1Error::HeadTooLarge,
            Http1Error::BadChunk("bad chunk size"),
            Http1Error::BodyTooLarge,
            Http1Error::NotImplemented("unsupported transfer coding"),
            Http1Error::ExpectationFailed,
        ];
        let statuses: Vec<u16> = errors.iter().map(Http1Error::status).collect();
        assert_eq!(statuses, [400, 400, 431, 400, 413, 501, 417]);
        for error in &errors {
            assert!(!error.reason().is_empty());
            assert_ne!(reason_phrase(error.status()), "Unknown");
        }
    }
}
