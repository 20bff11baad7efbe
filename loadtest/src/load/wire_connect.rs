//! The Connect protocol's unary calls, sans-IO: the request every call sends (over HTTP/1.1 as
//! bytes, over HTTP/2 through `wire_h2::RequestHead`), and the one outcome of a response.
//!
//! A Connect unary call (connectrpc.com/docs/protocol) is a `POST` with
//! `content-type: application/proto`, `connect-protocol-version: 1` and the bare message as the
//! body: no 5-byte frame, no trailers. Success is HTTP 200 with `application/proto` and the
//! bare reply message; an error is a non-200 status with a JSON body `{"code": "unavailable",
//! "message": …}`. Judged as strictly as the gRPC modes: a 200 of another content type is
//! `malformed`, an error names its code as `grpc_<CODE>` (the same names the gRPC modes count),
//! and a non-200 without a Connect error body is `http_<status>`.

use serde::Deserialize;

use super::wire::{ContentType, ErrorKind};

/// The request's content type: protobuf, binary.
pub const CONTENT_TYPE: &str = "application/proto";
/// The protocol version header every Connect request carries.
pub const PROTOCOL_VERSION_HEADER: (&str, &str) = ("connect-protocol-version", "1");

/// The request body of every call: the bare message of `payload_bytes` bytes (the same
/// pattern, `i % 251`, as the gRPC modes' framed message).
pub fn encode_body(payload_bytes: usize) -> Vec<u8> {
    (0..payload_bytes).map(|i| (i % 251) as u8).collect()
}

/// One complete HTTP/1.1 request, built once per run: `POST method`, keep-alive, the Connect
/// headers, `metadata`, the bare message.
pub fn encode_request(
    method: &str,
    host: &str,
    payload_bytes: usize,
    metadata: &[(String, String)],
) -> Vec<u8> {
    let body = encode_body(payload_bytes);
    let (version_name, version) = PROTOCOL_VERSION_HEADER;
    let mut request = format!(
        "POST {method} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {CONTENT_TYPE}\r\n\
         {version_name}: {version}\r\nuser-agent: ringway-load\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in metadata {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The part of a Connect error body the verdict needs.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
}

/// The one outcome of a complete Connect unary response.
pub fn judge(status: u16, content_type: ContentType, body: &[u8]) -> Result<(), ErrorKind> {
    if status == 200 {
        // The body is the bare reply message; any length is one message, the empty one too.
        return match content_type {
            ContentType::Proto => Ok(()),
            _ => Err(ErrorKind::Malformed),
        };
    }
    if content_type != ContentType::Json {
        return Err(ErrorKind::HttpStatus(status));
    }
    let code = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { code: Some(code) }) => code,
        _ => return Err(ErrorKind::HttpStatus(status)),
    };
    // The protocol says a client treats a code it does not know as `unknown`.
    Err(ErrorKind::Grpc(code_number(&code).unwrap_or(2)))
}

/// The gRPC status number of a Connect error code name (the same codes, in snake case).
pub fn code_number(name: &str) -> Option<u32> {
    const CODES: [&str; 16] = [
        "canceled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    CODES
        .iter()
        .position(|code| *code == name)
        .map(|index| index as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_bare_message_with_the_connect_headers() {
        let meta = vec![("authorization".to_owned(), "Bearer x".to_owned())];
        let request = encode_request("/a.B/C", "lb:443", 3, &meta);
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("POST /a.B/C HTTP/1.1\r\nhost: lb:443\r\n"));
        assert!(text.contains("content-type: application/proto\r\n"));
        assert!(text.contains("connect-protocol-version: 1\r\n"));
        assert!(text.contains("authorization: Bearer x\r\n"));
        assert!(!text.contains("grpc"));
        assert!(
            request.ends_with(b"content-length: 3\r\nauthorization: Bearer x\r\n\r\n\x00\x01\x02")
        );
        assert_eq!(encode_body(0), Vec::<u8>::new());
    }

    #[test]
    fn success_is_a_200_with_a_proto_body_of_any_length() {
        assert_eq!(judge(200, ContentType::Proto, b"\x0a\x01x"), Ok(()));
        assert_eq!(judge(200, ContentType::Proto, b""), Ok(()));
        for other in [ContentType::Json, ContentType::GrpcWeb, ContentType::Other] {
            assert_eq!(judge(200, other, b"x"), Err(ErrorKind::Malformed));
        }
    }

    #[test]
    fn errors_name_their_code_or_the_http_status() {
        let body = br#"{"code":"unavailable","message":"down","details":[]}"#;
        assert_eq!(
            judge(503, ContentType::Json, body),
            Err(ErrorKind::Grpc(14))
        );
        let body = br#"{"code":"canceled"}"#;
        assert_eq!(judge(499, ContentType::Json, body), Err(ErrorKind::Grpc(1)));
        let body = br#"{"code":"unauthenticated"}"#;
        assert_eq!(
            judge(401, ContentType::Json, body),
            Err(ErrorKind::Grpc(16))
        );
        // A code the client does not know is `unknown`.
        let body = br#"{"code":"sideways"}"#;
        assert_eq!(judge(500, ContentType::Json, body), Err(ErrorKind::Grpc(2)));
        // Not a Connect error: the HTTP status is what is known.
        for body in [
            &b"{}"[..],
            b"[1]",
            b"not json",
            b"",
            br#"{"code":7}"#,
            b"\xff\xfe",
        ] {
            assert_eq!(
                judge(502, ContentType::Json, body),
                Err(ErrorKind::HttpStatus(502)),
                "{body:?}"
            );
        }
        assert_eq!(
            judge(404, ContentType::Other, br#"{"code":"not_found"}"#),
            Err(ErrorKind::HttpStatus(404))
        );
    }

    #[test]
    fn every_code_has_its_number() {
        assert_eq!(code_number("canceled"), Some(1));
        assert_eq!(code_number("unimplemented"), Some(12));
        assert_eq!(code_number("unauthenticated"), Some(16));
        assert_eq!(code_number("cancelled"), None);
        assert_eq!(code_number("OK"), None);
    }
}
