//! gRPC status codes and every mapping onto them, in one place.
//!
//! A call that ringway proxies ends in a gRPC status whatever went wrong, so the client's gRPC
//! library can read it. This module holds the codes (grpc/grpc `doc/statuscodes.md`) with their
//! numbers and names, and the three mappings the proxy needs:
//!
//! - an upstream reply that is not gRPC, by its HTTP status
//!   ([`code_from_http_status`], `doc/http-grpc-status-mapping.md`);
//! - an upstream `RST_STREAM` or `GOAWAY` error code ([`code_from_h2_reason`],
//!   `doc/PROTOCOL-HTTP2.md`);
//! - a `grpc-status` header value as the upstream sent it ([`parse_status`]).
//!
//! [`encode_grpc_message`] percent-encodes a status message for `grpc-message`. Every
//! downstream protocol (gRPC-Web, native gRPC, Connect) uses these; `error.rs` maps ringway's own
//! errors onto them.

/// gRPC status codes used by the proxy (grpc/grpc doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code, indexed by its number.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The decimal string sent in `grpc-status` (`"14"`).
    pub fn as_str(self) -> &'static str {
        const DECIMAL: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        DECIMAL[self as usize]
    }

    /// Upper-case name (`"UNAVAILABLE"`), for logs and reports.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES[self as usize]
    }

    pub fn from_u32(code: u32) -> Option<Code> {
        CODES.get(usize::try_from(code).ok()?).copied()
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// gRPC status for an upstream reply that is not gRPC, by HTTP status
/// (doc/http-grpc-status-mapping.md). The table includes 431 → INTERNAL.
pub fn code_from_http_status(status: u16) -> Code {
    match status {
        400 | 431 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// gRPC status for an upstream RST_STREAM / GOAWAY error code (doc/PROTOCOL-HTTP2.md, "Errors").
///
/// The doc gives STREAM_CLOSED no mapping (there is no stream left to fail) and does not list
/// HTTP_1_1_REQUIRED; both become INTERNAL, as in grpc-go. Codes the doc does not know become
/// UNKNOWN, again as grpc-go does. FLOW_CONTROL_ERROR follows the doc (INTERNAL), not grpc-go
/// (RESOURCE_EXHAUSTED).
pub fn code_from_h2_reason(reason: u32) -> Code {
    match reason {
        // NO_ERROR: an explicit OK status should have been sent instead.
        0x0 => Code::Internal,
        // PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
        // FRAME_SIZE_ERROR.
        0x1..=0x6 => Code::Internal,
        // REFUSED_STREAM: nothing was processed, so the call may be retried elsewhere.
        0x7 => Code::Unavailable,
        // CANCEL, sent by a server.
        0x8 => Code::Cancelled,
        // COMPRESSION_ERROR, CONNECT_ERROR.
        0x9 | 0xa => Code::Internal,
        // ENHANCE_YOUR_CALM: the exhausted resource is bandwidth.
        0xb => Code::ResourceExhausted,
        // INADEQUATE_SECURITY.
        0xc => Code::PermissionDenied,
        // HTTP_1_1_REQUIRED.
        0xd => Code::Internal,
        _ => Code::Unknown,
    }
}

/// Percent-encode a status message for `grpc-message` (PROTOCOL-HTTP2.md: bytes outside
/// 0x20..=0x7E and `%` are percent-encoded).
pub fn encode_grpc_message(message: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0F)]]);
        }
    }
}

/// A `grpc-status` header value as a number; anything unreadable counts as UNKNOWN.
pub fn parse_status(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(Code::Unknown as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        for n in 0..=16u32 {
            let code = Code::from_u32(n).unwrap();
            assert_eq!(code as u32, n);
            assert_eq!(code.as_str(), n.to_string());
        }
        assert_eq!(Code::from_u32(17), None);
        assert_eq!(Code::from_u32(u32::MAX), None);
        assert_eq!(Code::Unavailable.as_str(), "14");
        assert_eq!(Code::Unavailable.name(), "UNAVAILABLE");
        assert_eq!(Code::Cancelled.name(), "CANCELLED");
        assert_eq!(Code::Unauthenticated.name(), "UNAUTHENTICATED");
    }

    #[test]
    fn http_status_mapping() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (431, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (500, Code::Unknown),
            (0, Code::Unknown),
            (u16::MAX, Code::Unknown),
        ];
        for (status, code) in table {
            assert_eq!(code_from_http_status(status), code, "{status}");
        }
    }

    #[test]
    fn h2_reason_mapping() {
        let table = [
            (0x0, Code::Internal),
            (0x1, Code::Internal),
            (0x2, Code::Internal),
            (0x3, Code::Internal),
            (0x4, Code::Internal),
            (0x5, Code::Internal),
            (0x6, Code::Internal),
            (0x7, Code::Unavailable),
            (0x8, Code::Cancelled),
            (0x9, Code::Internal),
            (0xa, Code::Internal),
            (0xb, Code::ResourceExhausted),
            (0xc, Code::PermissionDenied),
            (0xd, Code::Internal),
            (0xe, Code::Unknown),
            (u32::MAX, Code::Unknown),
        ];
        for (reason, code) in table {
            assert_eq!(code_from_h2_reason(reason), code, "{reason:#x}");
        }
    }

    #[test]
    fn grpc_message_percent_encoding() {
        let mut out = Vec::new();
        encode_grpc_message("a b%c~\r\n\u{7f}é\u{0}", &mut out);
        assert_eq!(out, b"a b%25c~%0D%0A%7F%C3%A9%00");
        out.clear();
        encode_grpc_message("", &mut out);
        assert!(out.is_empty());
    }
    #[test]
    fn status_values_from_upstream() {
        assert_eq!(parse_status(b"0"), 0);
        assert_eq!(parse_status(b" 14 "), 14);
        assert_eq!(parse_status(b"99"), 99);
        for bad in [&b""[..], b"x", b"-1", b"1.0", b"\xff", b"99999999999"] {
            assert_eq!(parse_status(bad), Code::Unknown as u32, "{bad:?}");
        }
    }
}
