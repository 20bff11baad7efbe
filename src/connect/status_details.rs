//! `grpc-status-details-bin` read into a Connect error's `details`, sans-IO.
//!
//! gRPC servers attach rich error details (`google.rpc.RetryInfo`, `BadRequest`, …) as a
//! base64 `google.rpc.Status` protobuf in the `grpc-status-details-bin` trailer; Connect carries
//! the same `google.protobuf.Any` values in its JSON error as `{"type": …, "value": base64}`.
//! The proxy has no protobuf library and needs none: this is a hand-written reader for exactly
//! the two messages involved,
//!
//! ```text
//! message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
//! message Any    { string type_url = 1; bytes value = 2; }
//! ```
//!
//! following the protobuf wire format: unknown fields are skipped, a repeated scalar field
//! keeps its last value, groups (wire types 3 and 4, deprecated and never used here) and
//! undefined wire types are refused. Every length is checked against what is left, varints are
//! at most ten bytes, and the number of details kept is bounded, so no input makes it panic,
//! loop or allocate beyond its own size. The result borrows from the decoded bytes.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Longest `grpc-status-details-bin` value decoded, in bytes of base64. HTTP/2 header lists
/// are bounded well below this already (h2 defaults to 16 KiB); the bound keeps the proxy's
/// work independent of that setting.
pub const DETAILS_BIN_BYTES_MAX: usize = 64 * 1024;

/// Details kept from one status; further ones are dropped. Servers attach one or two.
pub const DETAILS_MAX: usize = 32;

/// A `google.rpc.Status`, borrowed from its encoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RpcStatus<'a> {
    pub code: i32,
    pub message: &'a [u8],
    pub details: Vec<Detail<'a>>,
}

/// A `google.protobuf.Any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Detail<'a> {
    pub type_url: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Detail<'a> {
    /// The fully-qualified message name Connect's `type` wants: the type URL after its last
    /// `/` (`type.googleapis.com/google.rpc.RetryInfo` → `google.rpc.RetryInfo`), as connect-go
    /// takes it.
    pub fn type_name(&self) -> &'a [u8] {
        match self.type_url.iter().rposition(|&b| b == b'/') {
            Some(slash) => &self.type_url[slash + 1..],
            None => self.type_url,
        }
    }
}

/// Why a status could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ProtoError {}

/// Decode the base64 of a `grpc-status-details-bin` value (standard alphabet, padded or not, as
/// gRPC requires implementations to accept). `None` when it is not base64 or longer than
/// [`DETAILS_BIN_BYTES_MAX`].
pub fn decode_details_bin(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() > DETAILS_BIN_BYTES_MAX {
        return None;
    }
    STANDARD_INDIFFERENT.decode(value).ok()
}

/// Padded or unpadded, lenient on unused trailing bits, as connect-go's `DecodeBinaryHeader`.
const STANDARD_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Read a `google.rpc.Status` from its protobuf encoding.
pub fn parse_status(bytes: &[u8]) -> Result<RpcStatus<'_>, ProtoError> {
    let mut status = RpcStatus::default();
    let mut reader = Reader { rest: bytes };
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            // int32 is encoded as a varint of its sign-extended 64-bit value; truncating to
            // 32 bits gives it back, as every protobuf runtime does.
            (1, Value::Varint(code)) => status.code = code as i32,
            (2, Value::Bytes(message)) => status.message = message,
            (3, Value::Bytes(any)) => {
                let detail = parse_any(any)?;
                if status.details.len() < DETAILS_MAX {
                    status.details.push(detail);
                }
            }
            (1..=3, _) => {
                return Err(ProtoError(
                    "google.rpc.Status field with the wrong wire type",
                ))
            }
            _ => {}
        }
    }
    Ok(status)
}

fn parse_any(bytes: &[u8]) -> Result<Detail<'_>, ProtoError> {
    let mut detail = Detail::default();
    let mut reader = Reader { rest: bytes };
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Bytes(type_url)) => detail.type_url = type_url,
            (2, Value::Bytes(value)) => detail.value = value,
            (1 | 2, _) => {
                return Err(ProtoError(
                    "google.protobuf.Any field with the wrong wire type",
                ))
            }
            _ => {}
        }
    }
    Ok(detail)
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64, which no field read here uses.
    Fixed,
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next field number and value; `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, ProtoError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(ProtoError("protobuf field number 0"));
        }
        let value = match key & 0x7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| TRUNCATED)?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.skip(4)?,
            _ => return Err(ProtoError("protobuf group or undefined wire type")),
        };
        Ok(Some((field, value)))
    }

    /// A base-128 varint of at most ten bytes whose value fits 64 bits.
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for (index, &byte) in self.rest.iter().enumerate().take(10) {
            let bits = u64::from(byte & 0x7f);
            // The tenth byte holds bit 63 only.
            if index == 9 && bits > 1 {
                return Err(ProtoError("protobuf varint overflows 64 bits"));
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[index + 1..];
                return Ok(value);
            }
        }
        Err(if self.rest.len() < 10 {
            TRUNCATED
        } else {
            ProtoError("protobuf varint longer than ten bytes")
        })
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtoError> {
        if len > self.rest.len() {
            return Err(TRUNCATED);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn skip(&mut self, len: usize) -> Result<Value<'a>, ProtoError> {
        self.take(len).map(|_| Value::Fixed)
    }
}

const TRUNCATED: ProtoError = ProtoError("protobuf message ends inside a field");

/// The encoding of `code: 14 message: "overloaded" details { [google.rpc.RetryInfo]
/// { retry_delay { seconds: 60 } } }`: the protocol's own error example, whose detail value
/// it gives as `CgIIPA`.
#[cfg(test)]
pub(crate) const RETRY_STATUS: &[u8] = b"\x08\x0e\x12\x0aoverloaded\x1a\x30\x0a\x28type.googleapis.com/google.rpc.RetryInfo\x12\x04\x0a\x02\x08\x3c";

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(field: u64, value: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }

    fn any(type_url: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, type_url, &mut out);
        bytes_field(2, value, &mut out);
        out
    }

    #[test]
    fn reads_a_real_status() {
        let status = parse_status(RETRY_STATUS).unwrap();
        assert_eq!(status.code, 14);
        assert_eq!(status.message, b"overloaded");
        assert_eq!(status.details.len(), 1);
        assert_eq!(status.details[0].type_name(), b"google.rpc.RetryInfo");
        assert_eq!(status.details[0].value, b"\x0a\x02\x08\x3c");
        assert_eq!(STANDARD_NO_PAD.encode(status.details[0].value), "CgIIPA");
        let encoded = STANDARD_NO_PAD.encode(RETRY_STATUS);
        assert_eq!(
            decode_details_bin(encoded.as_bytes()).as_deref(),
            Some(RETRY_STATUS)
        );
        let padded = STANDARD.encode(RETRY_STATUS);
        assert_eq!(
            decode_details_bin(padded.as_bytes()).as_deref(),
            Some(RETRY_STATUS)
        );
    }

    #[test]
    fn skips_unknown_fields_and_keeps_the_last_scalar() {
        let mut message = Vec::new();
        varint(1 << 3, &mut message);
        varint(5, &mut message);
        // Unknown fields of every wire type the reader knows.
        varint(9 << 3, &mut message);
        varint(u64::MAX, &mut message);
        varint(10 << 3 | 1, &mut message);
        message.extend_from_slice(&[0; 8]);
        varint(11 << 3 | 5, &mut message);
        message.extend_from_slice(&[0; 4]);
        bytes_field(12, b"ignored", &mut message);
        bytes_field(3, &any(b"a/b/c.D", b"v"), &mut message);
        // A negative int32 is ten bytes; the last code wins.
        varint(1 << 3, &mut message);
        varint(-3i64 as u64, &mut message);
        bytes_field(2, b"first", &mut message);
        bytes_field(2, b"second", &mut message);
        let status = parse_status(&message).unwrap();
        assert_eq!(status.code, -3);
        assert_eq!(status.message, b"second");
        assert_eq!(
            status.details,
            vec![Detail {
                type_url: b"a/b/c.D",
                value: b"v"
            }]
        );
        assert_eq!(status.details[0].type_name(), b"c.D");
        assert_eq!(
            Detail {
                type_url: b"no.slash",
                value: b""
            }
            .type_name(),
            b"no.slash"
        );
        assert_eq!(
            Detail {
                type_url: b"trailing/",
                value: b""
            }
            .type_name(),
            b""
        );
        assert_eq!(parse_status(b""), Ok(RpcStatus::default()));
    }

    #[test]
    fn bounds_the_details_kept() {
        let mut message = Vec::new();
        for _ in 0..DETAILS_MAX + 10 {
            bytes_field(3, &any(b"t", b"v"), &mut message);
        }
        assert_eq!(parse_status(&message).unwrap().details.len(), DETAILS_MAX);
    }

    #[test]
    fn refuses_hostile_encodings() {
        let mut long_length = Vec::new();
        varint(2 << 3 | 2, &mut long_length);
        varint(u64::MAX, &mut long_length);
        let mut wrong_any = Vec::new();
        bytes_field(3, b"\x08\x01", &mut wrong_any);
        let refused: [&[u8]; 13] = [
            b"\x08",                                             // varint cut short
            b"\x08\x80\x80",                                     // varint cut short
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",     // overflows 64 bits
            b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", // eleven bytes
            b"\x12\x05abc",                                      // length past the end
            &long_length,
            b"\x00\x01",     // field number 0
            b"\x0b",         // start group
            b"\x0c",         // end group
            b"\x0e",         // wire type 6
            b"\x0a\x00",     // code as bytes
            b"\x19\0\0\0\0", // fixed64 cut short
            &wrong_any,      // Any.type_url as a varint
        ];
        for input in refused {
            assert!(parse_status(input).is_err(), "{input:?}");
        }
        // The largest legal varint is fine.
        assert!(parse_status(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").is_ok());
    }

    #[test]
    fn refuses_bad_base64() {
        for bad in [&b"!!!!"[..], b"A", b"AAAAA", b"AA=A", b"AA\nAA", b"-_-_"] {
            assert_eq!(decode_details_bin(bad), None, "{bad:?}");
        }
        let long = vec![b'A'; DETAILS_BIN_BYTES_MAX + 4];
        assert_eq!(decode_details_bin(&long), None);
        assert_eq!(decode_details_bin(b"").as_deref(), Some(&b""[..]));
    }
}
