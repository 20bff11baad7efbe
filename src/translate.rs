//! Request head translation, sans-IO: a downstream request head becomes the HTTP/2 head of the
//! upstream gRPC call.
//!
//! Whatever the client spoke, the upstream sees `:method POST`, `:scheme http`, `:authority`
//! from the client's `Host`, `:path` as sent, `content-type: application/grpc…` (the same
//! `+suffix`), `te: trailers`, the client's metadata, and `grpc-timeout` carrying the call's
//! effective deadline (the client's, capped by `--grpc-timeout-max-ms`). Hop-by-hop headers
//! (RFC 9110 §7.6.1), and those named in `Connection`, never travel upstream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::error::Error;
use crate::field::list_elements;
use crate::http1::{BodyKind, RequestHead};
use crate::status::Code;

/// Parse a `grpc-timeout` header value (`1*8DIGIT` then one of `H M S m u n`).
///
/// `0` is accepted (a deadline that has already passed) although the spec asks for a positive
/// integer: honouring it is safer than ignoring the deadline, and grpc-go and grpc-core accept
/// it too. Eight digits of hours fit easily in a `Duration`; the arithmetic saturates anyway.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    const DIGITS_MAX: usize = 8;
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A request's `grpc-timeout` header: none, a valid timeout, or a call refused with
/// INVALID_ARGUMENT. A malformed value (`1Z`, `-1S`, empty, more than 8 digits) is refused
/// rather than ignored, so a client never runs without the deadline it believes it set (the
/// spec allows at most 8 digits; grpc-go refuses such a value too).
pub fn grpc_timeout_header(value: Option<&[u8]>) -> Result<Option<Duration>, Error> {
    match value {
        None => Ok(None),
        Some(value) => parse_grpc_timeout(value).map(Some).ok_or(BAD_GRPC_TIMEOUT),
    }
}

/// The answer to a malformed `grpc-timeout`.
pub const BAD_GRPC_TIMEOUT: Error = Error::Refused {
    code: Code::InvalidArgument,
    message: "malformed grpc-timeout: 1 to 8 digits and a unit (H, M, S, m, u or n)",
};

/// A call's deadline from the timeout the client asked for (however its protocol said it),
/// capped by `cap`, counted from `now`.
pub fn deadline_after(
    asked: Option<Duration>,
    cap: Option<Duration>,
    now: Instant,
) -> Option<Instant> {
    let timeout = match (asked, cap) {
        (Some(asked), Some(cap)) => Some(asked.min(cap)),
        (asked, None) => asked,
        (None, cap) => cap,
    }?;
    Some(now + timeout)
}

/// The time left until `deadline` as a `grpc-timeout` value, so the upstream sees the capped
/// deadline.
pub fn grpc_timeout_value(deadline: Instant, now: Instant) -> HeaderValue {
    let remaining_ms = deadline
        .saturating_duration_since(now)
        .as_millis()
        .clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{remaining_ms}m"))
        .expect("digits and 'm' are a valid header value")
}

/// The upstream URI of an HTTP/1.1 request: `http://<Host><path>`.
pub fn http1_uri(head: &RequestHead) -> Result<Uri, Error> {
    http1_uri_with_path(head, head.path.clone())
}

/// The upstream URI of an HTTP/1.1 request with `target` as its request target (a Connect
/// GET's without its query). An absolute-form target names the authority itself: RFC 9112
/// §3.2.2 has the server ignore `Host` then, so the upstream's `:authority` is the target's.
pub fn http1_uri_with_path(head: &RequestHead, target: Bytes) -> Result<Uri, Error> {
    let (authority, path) = match split_absolute(&target) {
        Some((authority, path)) => (authority, path),
        None => (
            head.host.clone().ok_or_else(|| malformed("missing host"))?,
            target,
        ),
    };
    let path =
        PathAndQuery::from_maybe_shared(path).map_err(|_| malformed("bad request target"))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority =
        Some(Authority::from_maybe_shared(authority).map_err(|_| malformed("bad host"))?);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).map_err(|_| malformed("bad request target"))
}

/// The upstream URI of an HTTP/2 request: `http://<:authority><:path>`, with `Host` standing in
/// for a missing `:authority` (RFC 9113 §8.3.1).
pub fn h2_uri(uri: &Uri, headers: &HeaderMap) -> Result<Uri, Error> {
    let path = uri
        .path_and_query()
        .filter(|p| p.as_str().starts_with('/'))
        .cloned()
        .ok_or_else(|| malformed("bad :path"))?;
    h2_uri_from(uri, headers, path)
}

/// [`h2_uri`] with `path` as the `:path` (a Connect GET's target without its query).
pub fn h2_uri_with_path(uri: &Uri, headers: &HeaderMap, path: Bytes) -> Result<Uri, Error> {
    let path = PathAndQuery::from_maybe_shared(path).map_err(|_| malformed("bad :path"))?;
    h2_uri_from(uri, headers, path)
}

fn h2_uri_from(uri: &Uri, headers: &HeaderMap, path: PathAndQuery) -> Result<Uri, Error> {
    let authority = match uri.authority() {
        Some(authority) => authority.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .ok_or_else(|| malformed("missing :authority"))?;
            Authority::from_maybe_shared(Bytes::copy_from_slice(host.as_bytes()))
                .map_err(|_| malformed("bad host"))?
        }
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).map_err(|_| malformed("bad request target"))
}

/// The upstream headers of an HTTP/2 request: the client's metadata (HTTP/2 has no hop-by-hop
/// headers left to drop but `te`), `content-type` set to `upstream_content_type`,
/// `te: trailers`, and `grpc-timeout` for `deadline`. Values are shared, not copied.
pub fn h2_headers(
    headers: &HeaderMap,
    upstream_content_type: &HeaderValue,
    deadline: Option<Instant>,
) -> HeaderMap {
    h2_headers_with(headers, upstream_content_type, deadline, |_| false, &[])
}

/// [`h2_headers`] for a protocol that drops more of the client's headers (`also_dropped`)
/// and adds its own (`added`).
pub fn h2_headers_with(
    headers: &HeaderMap,
    upstream_content_type: &HeaderValue,
    deadline: Option<Instant>,
    also_dropped: impl Fn(&[u8]) -> bool,
    added: &[(HeaderName, HeaderValue)],
) -> HeaderMap {
    let adding = 2 + usize::from(deadline.is_some()) + added.len();
    let mut upstream = HeaderMap::with_capacity(headers.len() + adding);
    for (name, value) in headers {
        let name_bytes = name.as_str().as_bytes();
        if !is_dropped_request_header(name_bytes) && !also_dropped(name_bytes) {
            upstream.append(name.clone(), value.clone());
        }
    }
    upstream.insert(header::CONTENT_TYPE, upstream_content_type.clone());
    upstream.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(deadline) = deadline {
        upstream.insert("grpc-timeout", grpc_timeout_value(deadline, Instant::now()));
    }
    for (name, value) in added {
        upstream.insert(name.clone(), value.clone());
    }
    upstream
}

/// The upstream headers of an HTTP/1.1 request: hop-by-hop ones (and those named in
/// `Connection`) dropped, metadata passed on, `content-type` set to `upstream_content_type`,
/// `te: trailers`, and `grpc-timeout` for `deadline`.
pub fn http1_headers(
    head: &RequestHead,
    upstream_content_type: &Bytes,
    deadline: Option<Instant>,
) -> Result<HeaderMap, Error> {
    http1_headers_with(head, upstream_content_type, deadline, |_| false, &[])
}

/// [`http1_headers`] for a protocol that drops more of the client's headers (`also_dropped`)
/// and adds its own (`added`: a Connect call's `grpc-encoding`, for one).
pub fn http1_headers_with(
    head: &RequestHead,
    upstream_content_type: &Bytes,
    deadline: Option<Instant>,
    also_dropped: impl Fn(&[u8]) -> bool,
    added: &[(HeaderName, HeaderValue)],
) -> Result<HeaderMap, Error> {
    let nominated = connection_nominated(head);
    // Sized for what is sent, without a pass of its own: the head's field count less the fields
    // the parser already found and that are never forwarded (Host, Content-Type, a body's
    // framing header), plus what is added. An upper bound: other dropped fields still count. A
    // HeaderMap entry is over 100 bytes and lives until h2 has written the HEADERS frame;
    // sizing by the whole head doubled its allocation.
    let known_dropped = usize::from(head.host.is_some())
        + usize::from(head.content_type.is_some())
        + usize::from(!matches!(head.body, BodyKind::Empty));
    let adding = 2 + usize::from(deadline.is_some()) + added.len();
    let mut headers =
        HeaderMap::with_capacity(head.headers.len().saturating_sub(known_dropped) + adding);
    for h in &head.headers {
        if is_dropped_request_header(&h.name)
            || also_dropped(&h.name)
            || nominated.iter().any(|n| n.eq_ignore_ascii_case(&h.name))
        {
            continue;
        }
        let name = HeaderName::from_bytes(&h.name).map_err(|_| malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(h.value.clone())
            .map_err(|_| malformed("bad header value"))?;
        headers.append(name, value);
    }
    let content_type = HeaderValue::from_maybe_shared(upstream_content_type.clone())
        .map_err(|_| malformed("bad content-type"))?;
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(deadline) = deadline {
        headers.insert("grpc-timeout", grpc_timeout_value(deadline, Instant::now()));
    }
    for (name, value) in added {
        headers.insert(name.clone(), value.clone());
    }
    Ok(headers)
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed(reason)
}

/// Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
fn connection_nominated(head: &RequestHead) -> Vec<&[u8]> {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|h| list_elements(&h.value))
        .filter(|token| !token.is_empty())
        .collect()
}

/// An absolute-form target (`http://host/path`) split into its authority and its path (`/`
/// when it has none); `None` for any other form.
fn split_absolute(target: &Bytes) -> Option<(Bytes, Bytes)> {
    let after_scheme = target.windows(3).position(|w| w == b"://")? + 3;
    let rest = &target[after_scheme..];
    let path_start = rest.iter().position(|b| matches!(b, b'/' | b'?'));
    let authority_end = after_scheme + path_start.unwrap_or(rest.len());
    let authority = target.slice(after_scheme..authority_end);
    let path = match path_start {
        Some(_) if target[authority_end] == b'/' => target.slice(authority_end..),
        Some(_) => {
            // `http://host?query`: the path is `/` and the query follows it.
            let mut path = Vec::with_capacity(1 + target.len() - authority_end);
            path.push(b'/');
            path.extend_from_slice(&target[authority_end..]);
            Bytes::from(path)
        }
        None => Bytes::from_static(b"/"),
    };
    Some((authority, path))
}

/// Request headers that never travel upstream: hop-by-hop ones (RFC 9110 §7.6.1) and the ones
/// the translation replaces.
pub fn is_dropped_request_header(name: &[u8]) -> bool {
    const DROPPED: &[&[u8]] = &[
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"content-length",
        b"expect",
        b"content-type",
        b"grpc-timeout",
    ];
    DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_request_head, HeadLimits};
    use bytes::BytesMut;

    const LIMITS: HeadLimits = HeadLimits {
        header_bytes_max: 8 * 1024,
        header_count_max: 64,
    };

    fn head(wire: &str) -> RequestHead {
        parse_request_head(&mut BytesMut::from(wire.as_bytes()), &LIMITS)
            .expect("valid head")
            .expect("whole head")
    }

    fn upstream(wire: &str) -> (Uri, HeaderMap) {
        let head = head(wire);
        let ct = Bytes::from_static(b"application/grpc+proto");
        (
            http1_uri(&head).unwrap(),
            http1_headers(&head, &ct, None).unwrap(),
        )
    }

    #[test]
    fn browser_head_becomes_a_grpc_head() {
        let (uri, headers) = upstream(
            "POST /pkg.Svc/Method?x=1 HTTP/1.1\r\nHost: api.example.com\r\n\
             Content-Type: application/grpc-web+proto\r\nContent-Length: 5\r\n\
             X-Grpc-Web: 1\r\nX-User-Meta: a\r\nX-User-Meta: b\r\nAuthorization: Bearer t\r\n\r\n",
        );
        assert_eq!(uri, "http://api.example.com/pkg.Svc/Method?x=1");
        assert_eq!(headers["content-type"], "application/grpc+proto");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["authorization"], "Bearer t");
        let meta: Vec<_> = headers.get_all("x-user-meta").iter().collect();
        assert_eq!(meta, ["a", "b"]);
        for dropped in ["host", "content-length", "grpc-timeout"] {
            assert!(!headers.contains_key(dropped), "{dropped}");
        }
        assert_eq!(
            headers.keys_len(),
            5,
            "x-grpc-web, meta, authorization, ct, te: {headers:?}"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_nominated_headers_are_dropped() {
        let (_, headers) = upstream(
            "POST /s/M HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret , ,Upgrade\r\n\
             Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\nTrailer: x\r\nUpgrade: h2c\r\n\
             X-Secret: s\r\nExpect: 100-continue\r\nX-Kept: k\r\n\r\n",
        );
        let names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept", "content-type", "te"]);
        assert_eq!(headers["te"], "trailers", "the client's TE is replaced");
    }

    #[test]
    fn absolute_form_target_names_the_authority() {
        for (target, authority, path) in [
            ("http://other.example/pkg.S/M", "other.example", "/pkg.S/M"),
            ("http://other.example", "other.example", "/"),
            ("https://a:1/x?y", "a:1", "/x?y"),
            ("http://a?y", "a", "/?y"),
        ] {
            let (uri, _) = upstream(&format!("POST {target} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert_eq!(uri.path_and_query().unwrap().as_str(), path, "{target}");
            // RFC 9112 §3.2.2: the target's authority, not Host's.
            assert_eq!(uri.authority().unwrap().as_str(), authority, "{target}");
        }
    }

    #[test]
    fn hostile_heads_are_refused_not_forwarded() {
        // HTTP/1.0 may omit Host; the upstream needs an authority.
        let no_host = head("POST /s/M HTTP/1.0\r\n\r\n");
        assert!(matches!(http1_uri(&no_host), Err(Error::Malformed(_))));
        let bad_host = head("POST /s/M HTTP/1.1\r\nHost: a b\r\n\r\n");
        assert!(matches!(http1_uri(&bad_host), Err(Error::Malformed(_))));
        let empty_host = head("POST /s/M HTTP/1.1\r\nHost:\r\n\r\n");
        assert!(matches!(http1_uri(&empty_host), Err(Error::Malformed(_))));
    }

    /// The header as a call sees it: its deadline capped by `--grpc-timeout-max-ms`.
    fn call_deadline(
        grpc_timeout: Option<&[u8]>,
        cap: Option<Duration>,
        now: Instant,
    ) -> Option<Instant> {
        deadline_after(grpc_timeout_header(grpc_timeout).unwrap(), cap, now)
    }

    #[test]
    fn malformed_grpc_timeouts_are_refused_not_ignored() {
        for bad in [
            &b"1Z"[..],
            b"-1S",
            b"",
            b"S",
            b"123456789S",
            b"1.5S",
            b" 1S",
            b"1s",
        ] {
            assert_eq!(
                grpc_timeout_header(Some(bad)).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
        assert_eq!(
            grpc_timeout_header(Some(b"99999999H")).unwrap(),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(grpc_timeout_header(None).unwrap(), None);
    }

    #[test]
    fn deadline_is_capped_and_forwarded_as_remaining_time() {
        let now = Instant::now();
        let cap = Some(Duration::from_secs(10));
        assert_eq!(
            call_deadline(Some(b"5S"), cap, now),
            Some(now + Duration::from_secs(5))
        );
        assert_eq!(
            call_deadline(Some(b"1H"), cap, now),
            Some(now + Duration::from_secs(10))
        );
        assert_eq!(
            call_deadline(None, cap, now),
            Some(now + Duration::from_secs(10))
        );
        assert_eq!(call_deadline(None, None, now), None);
        let deadline = now + Duration::from_millis(1500);
        assert_eq!(grpc_timeout_value(deadline, now), "1500m");
        assert_eq!(grpc_timeout_value(now, now), "1m", "never zero or negative");
        let far = now + Duration::from_secs(1_000_000_000);
        assert_eq!(
            grpc_timeout_value(far, now),
            "99999999m",
            "at most 8 digits"
        );

        let head = head("POST /s/M HTTP/1.1\r\nHost: h\r\ngrpc-timeout: 1H\r\n\r\n");
        let ct = Bytes::from_static(b"application/grpc");
        let headers =
            http1_headers(&head, &ct, Some(Instant::now() + Duration::from_secs(2))).unwrap();
        let sent = headers["grpc-timeout"].to_str().unwrap();
        assert!(
            sent.ends_with('m') && sent.len() <= 5,
            "{sent}: the capped deadline, not 1H"
        );
    }

    #[test]
    fn grpc_timeout() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout(b"0m"), Some(Duration::ZERO));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            &b""[..],
            b"S",
            b"1",
            b"123456789S",
            b"1s",
            b"1h",
            b"1 S",
            b" 1S",
            b"-1S",
            b"+1S",
            b"1.5S",
            b"\xff\xffS",
            b"1SS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
    #[test]
    fn h2_request_keeps_its_authority_path_and_metadata() {
        let request = http::Request::builder()
            .method("POST")
            .uri("https://api.example.com/pkg.Svc/M?x=1")
            .header("content-type", "application/grpc-web+proto")
            .header("te", "trailers")
            .header("grpc-timeout", "1H")
            .header("x-meta", "a")
            .header("x-meta", "b")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let uri = h2_uri(&parts.uri, &parts.headers).unwrap();
        assert_eq!(uri, "http://api.example.com/pkg.Svc/M?x=1");
        let ct = HeaderValue::from_static("application/grpc+proto");
        let deadline = Instant::now() + Duration::from_secs(3);
        let headers = h2_headers(&parts.headers, &ct, Some(deadline));
        assert_eq!(headers["content-type"], "application/grpc+proto");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers.get_all("x-meta").iter().count(), 2);
        assert!(!headers.contains_key("content-length"));
        let timeout = headers["grpc-timeout"].to_str().unwrap();
        assert!(timeout.ends_with('m') && timeout.len() <= 5, "{timeout}");
    }

    #[test]
    fn h2_request_without_authority_uses_host_or_is_refused() {
        let host_only = http::Request::builder()
            .uri("/pkg.Svc/M")
            .header("host", "h.example")
            .body(())
            .unwrap();
        let (parts, ()) = host_only.into_parts();
        assert_eq!(
            h2_uri(&parts.uri, &parts.headers).unwrap(),
            "http://h.example/pkg.Svc/M"
        );
        let neither = http::Request::builder().uri("/pkg.Svc/M").body(()).unwrap();
        let (parts, ()) = neither.into_parts();
        assert!(matches!(
            h2_uri(&parts.uri, &parts.headers),
            Err(Error::Malformed(_))
        ));
        let asterisk = http::Request::builder()
            .uri("*")
            .header("host", "h")
            .body(())
            .unwrap();
        let (parts, ()) = asterisk.into_parts();
        assert!(matches!(
            h2_uri(&parts.uri, &parts.headers),
            Err(Error::Malformed(_))
        ));
    }
}
