//! The Connect error and end-of-stream JSON, written by hand, sans-IO.
//!
//! The proxy writes exactly two JSON shapes (the protocol's "Error and EndStreamResponse"):
//!
//! ```text
//! {"code":"unavailable","message":"overloaded","details":[{"type":"google.rpc.RetryInfo","value":"CgIIPA"}]}
//! {"error":{…},"metadata":{"acme-operation-cost":["237"]}}
//! ```
//!
//! Pulling a JSON library into the proxy for that is not worth its weight, so they are written
//! here, compactly and in a fixed order: `message` and `details` are left out when empty, as
//! connect-go and connect-es do; metadata keys are lower-case and sorted (connect-go's
//! encoding of a Go map sorts them too), each with its values in the order received. Strings
//! are escaped as JSON requires (`"`, `\` and every control character below U+0020);
//! everything else, non-ASCII included, is written as UTF-8. Bytes that are not UTF-8 (an
//! upstream may send any `obs-text` in a header) become U+FFFD, so the output is always valid
//! JSON in valid UTF-8.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

use super::status_details::Detail;
use super::{code_name, Code};

/// A Connect error, as written in JSON.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFields<'a> {
    pub code: Code,
    /// UTF-8 text (anything else is replaced); empty means no `message` key.
    pub message: &'a [u8],
    pub details: &'a [Detail<'a>],
}

/// Append the error object: `{"code":…,"message":…,"details":[…]}`.
pub fn write_error(out: &mut Vec<u8>, error: &ErrorFields<'_>) {
    out.extend_from_slice(b"{\"code\":\"");
    out.extend_from_slice(code_name(error.code).as_bytes());
    out.push(b'"');
    if !error.message.is_empty() {
        out.extend_from_slice(b",\"message\":");
        write_string(out, error.message);
    }
    if !error.details.is_empty() {
        out.extend_from_slice(b",\"details\":[");
        for (index, detail) in error.details.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"type\":");
            write_string(out, detail.type_name());
            out.extend_from_slice(b",\"value\":\"");
            write_base64(out, detail.value);
            out.extend_from_slice(b"\"}");
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Append the end-of-stream object: `{"error":…,"metadata":{…}}`, `{}` for a success without
/// trailing metadata. `metadata` is `(name, value)` pairs in the order received; names are
/// grouped, lower-cased and sorted.
pub fn write_end_stream(
    out: &mut Vec<u8>,
    error: Option<&ErrorFields<'_>>,
    metadata: &[(&[u8], &[u8])],
) {
    out.push(b'{');
    if let Some(error) = error {
        out.extend_from_slice(b"\"error\":");
        write_error(out, error);
    }
    if !metadata.is_empty() {
        if error.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"metadata\":");
        write_metadata(out, metadata);
    }
    out.push(b'}');
}

/// `{"name":["value",…],…}`. Sorting indices keeps this O(n log n) however many trailers an
/// upstream sends, and a stable sort keeps each name's values in their order.
fn write_metadata(out: &mut Vec<u8>, metadata: &[(&[u8], &[u8])]) {
    let mut order: Vec<usize> = (0..metadata.len()).collect();
    order.sort_by(|&a, &b| compare_lowercase(metadata[a].0, metadata[b].0));
    out.push(b'{');
    let mut previous: Option<&[u8]> = None;
    for &index in &order {
        let (name, value) = metadata[index];
        match previous {
            Some(last) if last.eq_ignore_ascii_case(name) => out.push(b','),
            _ => {
                if previous.is_some() {
                    out.extend_from_slice(b"],");
                }
                write_lowercase_string(out, name);
                out.extend_from_slice(b":[");
                previous = Some(name);
            }
        }
        write_string(out, value);
    }
    if previous.is_some() {
        out.push(b']');
    }
    out.push(b'}');
}

fn compare_lowercase(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

fn write_lowercase_string(out: &mut Vec<u8>, name: &[u8]) {
    if name.iter().any(u8::is_ascii_uppercase) {
        write_string(out, &name.to_ascii_lowercase());
    } else {
        write_string(out, name);
    }
}

/// Append `text` as a JSON string.
pub fn write_string(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    for chunk in text.utf8_chunks() {
        write_escaped(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(
                char::REPLACEMENT_CHARACTER
                    .encode_utf8(&mut [0; 4])
                    .as_bytes(),
            );
        }
    }
    out.push(b'"');
}

/// Escape valid UTF-8: only ASCII needs escaping, so this works byte by byte and copies the
/// runs between escapes whole.
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run_start = 0;
    for (index, &byte) in text.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[run_start..index]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(short);
        }
        run_start = index + 1;
    }
    out.extend_from_slice(&text[run_start..]);
}

/// Unpadded standard base64, as the protocol asks for detail values.
fn write_base64(out: &mut Vec<u8>, value: &[u8]) {
    let start = out.len();
    // Four characters per three bytes, rounded up: room for the unpadded encoding.
    out.resize(start + value.len().div_ceil(3) * 4, 0);
    let written = STANDARD_NO_PAD
        .encode_slice(value, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_json(code: Code, message: &[u8], details: &[Detail<'_>]) -> String {
        let mut out = Vec::new();
        write_error(
            &mut out,
            &ErrorFields {
                code,
                message,
                details,
            },
        );
        String::from_utf8(out).expect("always UTF-8")
    }

    fn string_json(text: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(&mut out, text);
        String::from_utf8(out).expect("always UTF-8")
    }

    #[test]
    fn errors_byte_exact() {
        assert_eq!(
            error_json(Code::Unavailable, b"", &[]),
            r#"{"code":"unavailable"}"#
        );
        assert_eq!(
            error_json(Code::Unimplemented, b"svc/M is not implemented", &[]),
            r#"{"code":"unimplemented","message":"svc/M is not implemented"}"#
        );
        let retry = Detail {
            type_url: b"type.googleapis.com/google.rpc.RetryInfo",
            value: b"\x0a\x02\x08\x3c",
        };
        let other = Detail {
            type_url: b"acme.Quote\"d",
            value: b"",
        };
        assert_eq!(
            error_json(
                Code::Unavailable,
                b"overloaded: back off and retry",
                &[retry, other]
            ),
            concat!(
                r#"{"code":"unavailable","message":"overloaded: back off and retry","#,
                r#""details":[{"type":"google.rpc.RetryInfo","value":"CgIIPA"},"#,
                r#"{"type":"acme.Quote\"d","value":""}]}"#
            )
        );
        // OK is never an error; should it reach here it reads as unknown.
        assert_eq!(error_json(Code::Ok, b"", &[]), r#"{"code":"unknown"}"#);
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string_json(b""), r#""""#);
        assert_eq!(string_json(br#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(string_json(b"\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(
            string_json(b"\x00\x01\x1f\x7f"),
            "\"\\u0000\\u0001\\u001f\x7f\""
        );
        assert_eq!(string_json("é✓😀".as_bytes()), "\"é✓😀\"");
        // U+2028 is legal in JSON and kept as UTF-8; `/` needs no escape.
        assert_eq!(string_json("a\u{2028}/b".as_bytes()), "\"a\u{2028}/b\"");
        // Not UTF-8: each bad sequence is one replacement character.
        assert_eq!(string_json(b"a\xffb\xc3"), "\"a\u{fffd}b\u{fffd}\"");
        assert_eq!(string_json(b"\xed\xa0\x80"), "\"\u{fffd}\u{fffd}\u{fffd}\"");
        assert_eq!(string_json(b"\xf0\x9f\x98"), "\"\u{fffd}\"");
    }

    #[test]
    fn end_stream_byte_exact() {
        let mut out = Vec::new();
        write_end_stream(&mut out, None, &[]);
        assert_eq!(out, b"{}");

        let mut out = Vec::new();
        let error = ErrorFields {
            code: Code::Unavailable,
            message: b"",
            details: &[],
        };
        write_end_stream(&mut out, Some(&error), &[]);
        assert_eq!(out, br#"{"error":{"code":"unavailable"}}"#);

        let mut out = Vec::new();
        let metadata: [(&[u8], &[u8]); 5] = [
            (b"x-b", b"1"),
            (b"Acme-Operation-Cost", b"237"),
            (b"x-b", b"2"),
            (b"x-a-bin", b"AAEC"),
            (b"acme-operation-cost", b"\"q\""),
        ];
        write_end_stream(&mut out, Some(&error), &metadata);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"error":{"code":"unavailable"},"metadata":{"#,
                r#""acme-operation-cost":["237","\"q\""],"x-a-bin":["AAEC"],"x-b":["1","2"]}}"#
            )
        );

        let mut out = Vec::new();
        write_end_stream(&mut out, None, &[(b"k", b"v")]);
        assert_eq!(out, br#"{"metadata":{"k":["v"]}}"#);
    }

    #[test]
    fn many_metadata_entries_stay_linearithmic() {
        let names: Vec<Vec<u8>> = (0..20_000)
            .map(|i| format!("k{}", i % 1000).into_bytes())
            .collect();
        let metadata: Vec<(&[u8], &[u8])> =
            names.iter().map(|n| (n.as_slice(), &b"v"[..])).collect();
        let mut out = Vec::new();
        write_end_stream(&mut out, None, &metadata);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\"k").count(), 1000);
        assert_eq!(text.matches("\"v\"").count(), 20_000);
    }
}
