//! HTTP field syntax (RFC 9110 §5), shared by every parser and encoder that checks a header
//! name or value: tokens, field-value bytes, optional whitespace and comma-separated lists.

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`: the only bytes allowed in a header name. Never empty.
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| is_tchar(b))
}

/// A byte allowed in a field value (RFC 9110 §5.5): HTAB, SP, visible ASCII and obs-text. No
/// other control byte, so no CR, LF, NUL or DEL.
pub fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Whether every byte of `value` is a field-value byte.
pub fn is_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| is_field_byte(b))
}

/// Trim optional whitespace (SP and HTAB, RFC 9110 §5.6.3) from both ends.
pub fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Split a comma-separated field value (RFC 9110 §5.6.1) into elements trimmed of optional
/// whitespace. Empty elements are yielded too; each caller decides what they mean.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&byte| byte == b',').map(trim_ows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token(b"x-grpc-web") && is_token(b"!#$%&'*+-.^_`|~09azAZ"));
        for bad in [
            &b""[..],
            b"a b",
            b"a:b",
            b"a\r",
            b"\x80",
            b"a(b)",
            b"a/b",
            b"\"a\"",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn field_values() {
        assert!(is_field_value(b"Bearer a.b c\t\x80\xff"));
        assert!(is_field_value(b""));
        for byte in (0u8..0x20).filter(|b| *b != b'\t').chain([0x7f]) {
            assert!(!is_field_byte(byte), "{byte:#x}");
            assert!(!is_field_value(&[b'a', byte]), "{byte:#x}");
        }
    }

    #[test]
    fn whitespace_and_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(trim_ows(b""), b"");
        let elements: Vec<_> = list_elements(b"keep-alive, X-A ,,\tupgrade").collect();
        assert_eq!(elements, [&b"keep-alive"[..], b"X-A", b"", b"upgrade"]);
        assert_eq!(list_elements(b"").collect::<Vec<_>>(), [&b""[..]]);
    }
}
