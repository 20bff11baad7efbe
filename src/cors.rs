//! CORS decisions for gRPC-Web, answered by the proxy, sans-IO.
//!
//! A browser page may only call a gRPC-Web service on another origin if the responses carry the
//! right `Access-Control-*` headers, and every call with custom metadata is preceded by an
//! `OPTIONS` preflight. Answering both here, from one [`CorsPolicy`] built at start-up, keeps
//! preflights off the backends and keeps the rules in one place (the Fetch standard, §3.2 "CORS
//! protocol"; `PROTOCOL-WEB.md` "CORS preflight"). The functions take header values and return
//! header lists; they never see a socket.
//!
//! Values copied from the request into the response (the `Origin`, and the preflight's
//! `Access-Control-Request-Headers`) are checked first: a value with CR, LF, NUL or any other
//! byte outside its grammar, or longer than [`ECHO_VALUE_BYTES_MAX`], is never reflected.
//!
//! Where ringway deliberately differs from Envoy's `cors` filter:
//! - a preflight is answered `204` (Envoy: `200`), and a preflight from a missing or refused
//!   origin gets `403` instead of being forwarded to the backend;
//! - with any origin allowed and no credentials the answer is a literal `*` (cacheable by
//!   anyone, nothing reflected); the origin is echoed, with `vary: origin`, only when it must be
//!   (a list matched, or credentials are allowed). Envoy always echoes and never sends `vary`;
//! - with credentials and any origin, the opaque origin `null` (sandboxed iframes, `file:`
//!   pages) is refused rather than granted credentialed access;
//! - `access-control-expose-headers` on actual responses also lists the response's own custom
//!   metadata, so the browser lets the grpc-web client read it (Envoy sends the fixed list).

use crate::field::{is_tchar, trim_ows};
use bytes::Bytes;

/// Longest request value (`Origin`, `Access-Control-Request-Headers`) that is reflected into a
/// response, in bytes, and longest `access-control-expose-headers` value built. Browsers send
/// far less; the bound keeps a hostile request from inflating every response.
pub const ECHO_VALUE_BYTES_MAX: usize = 8 * 1024;

/// Which origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowOrigin {
    /// `*`: any origin.
    Any,
    /// Exact origins (`https://app.example.com`), compared case-insensitively on scheme and host.
    List(Vec<Bytes>),
}

/// The effective CORS policy, built once from flags.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub allow_origin: AllowOrigin,
    pub allow_credentials: bool,
    /// `Access-Control-Allow-Methods` value, e.g. `GET, PUT, DELETE, POST, OPTIONS`.
    pub allow_methods: Bytes,
    /// `None`: echo the preflight's `Access-Control-Request-Headers`. `Some`: this fixed list.
    pub allow_headers: Option<Bytes>,
    /// `Access-Control-Expose-Headers` base list, e.g. `grpc-status,grpc-message`.
    pub expose_headers: Bytes,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age_s: u64,
}

impl Default for CorsPolicy {
    /// The Envoy config this replaces: origin `*`, methods `GET, PUT, DELETE, POST, OPTIONS`,
    /// echoed allow-headers, expose `grpc-status,grpc-message`, max-age 1728000, no credentials.
    fn default() -> Self {
        CorsPolicy {
            allow_origin: AllowOrigin::Any,
            allow_credentials: false,
            allow_methods: Bytes::from_static(b"GET, PUT, DELETE, POST, OPTIONS"),
            allow_headers: None,
            expose_headers: Bytes::from_static(b"grpc-status,grpc-message"),
            max_age_s: 1_728_000,
        }
    }
}

/// The answer to a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// 204 when the origin is allowed (browsers accept any 2xx), 403 when it is not.
    pub status: u16,
    /// Response headers (name, value) in a fixed order; empty for a refused origin.
    pub headers: Vec<(&'static [u8], Bytes)>,
}

const ALLOW_ORIGIN: &[u8] = b"access-control-allow-origin";
const ALLOW_CREDENTIALS: &[u8] = b"access-control-allow-credentials";
const ALLOW_METHODS: &[u8] = b"access-control-allow-methods";
const ALLOW_HEADERS: &[u8] = b"access-control-allow-headers";
const MAX_AGE: &[u8] = b"access-control-max-age";
const EXPOSE_HEADERS: &[u8] = b"access-control-expose-headers";
const VARY: &[u8] = b"vary";

/// Response headers a browser shows scripts without being told (the CORS-safelisted response
/// header names), plus hop-by-hop, framing and CORS headers that are meaningless to expose.
const NEVER_EXPOSED: &[&[u8]] = &[
    b"cache-control",
    b"content-language",
    b"content-length",
    b"content-type",
    b"expires",
    b"last-modified",
    b"pragma",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"date",
    b"server",
    b"content-encoding",
    b"set-cookie",
    b"vary",
];

/// How the allow-origin header is answered for one request.
enum OriginAnswer<'a> {
    /// `*`: nothing from the request is reflected.
    Wildcard,
    /// The request's own `Origin`, which then varies the response.
    Echo(&'a Bytes),
}

impl CorsPolicy {
    /// Decide a preflight `OPTIONS` from its `Origin` and `Access-Control-Request-Headers`.
    pub fn preflight(&self, origin: Option<&Bytes>, request_headers: Option<&Bytes>) -> Preflight {
        let Some(answer) = self.answer_origin(origin) else {
            return Preflight {
                status: 403,
                headers: Vec::new(),
            };
        };
        let allow_headers = match &self.allow_headers {
            Some(fixed) => Some(fixed.clone()).filter(|v| !v.is_empty()),
            None => request_headers.filter(|v| is_header_list(v)).cloned(),
        };
        // A cache in front of us must not hand one origin's (or one header list's) answer to
        // another request, so the response names every request header it was derived from.
        let vary: &'static [u8] = match (
            &answer,
            self.allow_headers.is_none() && allow_headers.is_some(),
        ) {
            (OriginAnswer::Echo(_), true) => b"origin, access-control-request-headers",
            (OriginAnswer::Echo(_), false) => b"origin",
            (OriginAnswer::Wildcard, true) => b"access-control-request-headers",
            (OriginAnswer::Wildcard, false) => b"",
        };

        let mut headers = Vec::with_capacity(8);
        headers.push((ALLOW_ORIGIN, origin_value(&answer)));
        if !vary.is_empty() {
            headers.push((VARY, Bytes::from_static(vary)));
        }
        headers.push((ALLOW_METHODS, self.allow_methods.clone()));
        if let Some(value) = allow_headers {
            headers.push((ALLOW_HEADERS, value));
        }
        headers.push((MAX_AGE, Bytes::from(self.max_age_s.to_string())));
        if self.allow_credentials {
            headers.push((ALLOW_CREDENTIALS, Bytes::from_static(b"true")));
        }
        if !self.expose_headers.is_empty() {
            headers.push((EXPOSE_HEADERS, self.expose_headers.clone()));
        }
        Preflight {
            status: 204,
            headers,
        }
    }

    /// Headers for an actual (non-preflight) response, local errors included.
    /// `response_header_names` are the names of the response's own custom headers/metadata;
    /// they are exposed in addition to `expose_headers` (deduplicated, lower-case).
    /// Returns nothing when the request had no `Origin` or the origin is not allowed.
    ///
    /// Names that are not HTTP tokens, pseudo-headers, and the headers in [`NEVER_EXPOSED`]
    /// are skipped; the list stops growing at [`ECHO_VALUE_BYTES_MAX`].
    pub fn actual_headers<'a>(
        &self,
        origin: Option<&Bytes>,
        response_header_names: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<(&'static [u8], Bytes)> {
        let Some(answer) = self.answer_origin(origin) else {
            return Vec::new();
        };
        let mut headers = Vec::with_capacity(4);
        let echoed = matches!(answer, OriginAnswer::Echo(_));
        headers.push((ALLOW_ORIGIN, origin_value(&answer)));
        if echoed {
            headers.push((VARY, Bytes::from_static(b"origin")));
        }
        if self.allow_credentials {
            headers.push((ALLOW_CREDENTIALS, Bytes::from_static(b"true")));
        }
        let expose = self.expose_list(response_header_names);
        if !expose.is_empty() {
            headers.push((EXPOSE_HEADERS, expose));
        }
        headers
    }

    /// `None` when the origin is missing, malformed or not allowed.
    fn answer_origin<'o>(&self, origin: Option<&'o Bytes>) -> Option<OriginAnswer<'o>> {
        let origin = origin.filter(|o| is_origin(o))?;
        match &self.allow_origin {
            // With credentials the Fetch standard forbids `*`, so the origin is echoed; the
            // opaque origin `null` is refused then, since granting it credentials would hand
            // them to any sandboxed iframe or local file.
            AllowOrigin::Any if self.allow_credentials => {
                (&origin[..] != b"null").then_some(OriginAnswer::Echo(origin))
            }
            AllowOrigin::Any => Some(OriginAnswer::Wildcard),
            AllowOrigin::List(allowed) => allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(origin))
                .then_some(OriginAnswer::Echo(origin)),
        }
    }

    /// The configured expose list plus the response's own header names, without allocating
    /// when nothing new is added.
    fn expose_list<'a>(&self, names: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
        let mut extended: Option<Vec<u8>> = None;
        for name in names {
            if !is_exposable(name) || self.lists_name(extended.as_deref(), name) {
                continue;
            }
            let list = extended.get_or_insert_with(|| self.expose_headers.to_vec());
            if list.len() + 1 + name.len() > ECHO_VALUE_BYTES_MAX {
                break;
            }
            if !list.is_empty() {
                list.push(b',');
            }
            list.extend(name.iter().map(u8::to_ascii_lowercase));
        }
        match extended {
            Some(list) => Bytes::from(list),
            None => self.expose_headers.clone(),
        }
    }

    fn lists_name(&self, extended: Option<&[u8]>, name: &[u8]) -> bool {
        let list = extended.unwrap_or(&self.expose_headers);
        list.split(|&b| b == b',')
            .any(|item| trim_ows(item).eq_ignore_ascii_case(name))
    }
}

fn origin_value(answer: &OriginAnswer<'_>) -> Bytes {
    match answer {
        OriginAnswer::Wildcard => Bytes::from_static(b"*"),
        OriginAnswer::Echo(origin) => (*origin).clone(),
    }
}

/// An `Origin` we are willing to compare and reflect: visible ASCII without spaces (the
/// serialisation `scheme://host[:port]` or `null` has nothing else), non-empty and bounded.
fn is_origin(origin: &[u8]) -> bool {
    !origin.is_empty()
        && origin.len() <= ECHO_VALUE_BYTES_MAX
        && origin.iter().all(|&b| b.is_ascii_graphic())
}

/// `Access-Control-Request-Headers` as browsers send it: header names separated by commas and
/// optional whitespace. Anything else (CR, LF, NUL, quotes, ...) is not reflected at all.
fn is_header_list(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= ECHO_VALUE_BYTES_MAX
        && value
            .iter()
            .all(|&b| is_tchar(b) || matches!(b, b',' | b' ' | b'\t'))
}

fn is_exposable(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && !name
            .get(..b"access-control-".len())
            .is_some_and(|p| p.eq_ignore_ascii_case(b"access-control-"))
        && !NEVER_EXPOSED.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// RFC 9110 §5.6.2 `tchar`. A pseudo-header's `:` is not one, so `:status` is never exposed.
#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn get<'h>(headers: &'h [(&'static [u8], Bytes)], name: &str) -> Option<&'h [u8]> {
        headers
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| &v[..])
    }

    fn list_policy(credentials: bool) -> CorsPolicy {
        CorsPolicy {
            allow_origin: AllowOrigin::List(vec![b("https://app.example.com")]),
            allow_credentials: credentials,
            ..CorsPolicy::default()
        }
    }

    #[test]
    fn default_policy_preflight_matches_envoy_config() {
        let policy = CorsPolicy::default();
        let answer = policy.preflight(
            Some(&b("https://app.example.com")),
            Some(&b("x-grpc-web,content-type,x-user-agent")),
        );
        assert_eq!(answer.status, 204);
        let names: Vec<&[u8]> = answer.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                ALLOW_ORIGIN,
                VARY,
                ALLOW_METHODS,
                ALLOW_HEADERS,
                MAX_AGE,
                EXPOSE_HEADERS
            ]
        );
        let h = &answer.headers;
        assert_eq!(get(h, "access-control-allow-origin"), Some(&b"*"[..]));
        assert_eq!(get(h, "vary"), Some(&b"access-control-request-headers"[..]));
        assert_eq!(
            get(h, "access-control-allow-methods"),
            Some(&b"GET, PUT, DELETE, POST, OPTIONS"[..])
        );
        assert_eq!(
            get(h, "access-control-allow-headers"),
            Some(&b"x-grpc-web,content-type,x-user-agent"[..])
        );
        assert_eq!(get(h, "access-control-max-age"), Some(&b"1728000"[..]));
        assert_eq!(
            get(h, "access-control-expose-headers"),
            Some(&b"grpc-status,grpc-message"[..])
        );
        assert_eq!(get(h, "access-control-allow-credentials"), None);
    }

    #[test]
    fn preflight_without_request_headers_omits_allow_headers() {
        let answer = CorsPolicy::default().preflight(Some(&b("https://a.example")), None);
        assert_eq!(answer.status, 204);
        assert_eq!(get(&answer.headers, "access-control-allow-headers"), None);
        assert_eq!(get(&answer.headers, "vary"), None);
    }

    #[test]
    fn preflight_fixed_allow_headers() {
        let policy = CorsPolicy {
            allow_headers: Some(b("content-type,x-grpc-web")),
            ..list_policy(false)
        };
        let answer = policy.preflight(
            Some(&b("https://app.example.com")),
            Some(&b("x-something-else")),
        );
        assert_eq!(
            get(&answer.headers, "access-control-allow-headers"),
            Some(&b"content-type,x-grpc-web"[..])
        );
        assert_eq!(get(&answer.headers, "vary"), Some(&b"origin"[..]));
    }

    #[test]
    fn list_and_credentials_echo_the_origin() {
        for credentials in [false, true] {
            let policy = list_policy(credentials);
            // Matching ignores case, but the request's own bytes are echoed, as browsers
            // compare the answer with what they sent.
            let origin = b("HTTPS://App.Example.com");
            let answer = policy.preflight(Some(&origin), None);
            assert_eq!(answer.status, 204);
            let h = &answer.headers;
            assert_eq!(get(h, "access-control-allow-origin"), Some(&origin[..]));
            assert_eq!(get(h, "vary"), Some(&b"origin"[..]));
            let creds = get(h, "access-control-allow-credentials");
            assert_eq!(creds, credentials.then_some(&b"true"[..]));
        }
        let any_with_credentials = CorsPolicy {
            allow_credentials: true,
            ..CorsPolicy::default()
        };
        let origin = b("https://x.example");
        let h = any_with_credentials.actual_headers(Some(&origin), []);
        assert_eq!(get(&h, "access-control-allow-origin"), Some(&origin[..]));
        assert_eq!(get(&h, "vary"), Some(&b"origin"[..]));
        assert_eq!(
            get(&h, "access-control-allow-credentials"),
            Some(&b"true"[..])
        );
    }

    #[test]
    fn refused_origins_get_403_and_no_headers() {
        let policy = list_policy(true);
        let long = Bytes::from(vec![b'a'; ECHO_VALUE_BYTES_MAX + 1]);
        let refused = [
            None,
            Some(b("")),
            Some(b("https://evil.example")),
            Some(b("https://app.example.com.evil.example")),
            Some(b("https://app.example.co")),
            Some(b("null")),
            Some(b("https://app.example.com\r\nset-cookie: x=1")),
            Some(long),
        ];
        for origin in &refused {
            let answer = policy.preflight(origin.as_ref(), Some(&b("x-a")));
            assert_eq!(answer.status, 403, "{origin:?}");
            assert!(answer.headers.is_empty(), "{origin:?}");
            assert!(policy
                .actual_headers(origin.as_ref(), [&b"x-a"[..]])
                .is_empty());
        }
        // `null` is refused with credentials even when any origin is allowed ...
        let any_credentials = CorsPolicy {
            allow_credentials: true,
            ..CorsPolicy::default()
        };
        assert_eq!(
            any_credentials.preflight(Some(&b("null")), None).status,
            403
        );
        // ... but without credentials `*` reflects nothing, so it may have its answer.
        assert_eq!(
            CorsPolicy::default()
                .preflight(Some(&b("null")), None)
                .status,
            204
        );
        // Malformed origins are refused even when any origin is allowed.
        for origin in ["a b", "x\0y", "x\ny", "\u{e9}"] {
            let origin = Bytes::copy_from_slice(origin.as_bytes());
            assert_eq!(
                CorsPolicy::default().preflight(Some(&origin), None).status,
                403
            );
        }
    }

    #[test]
    fn hostile_request_headers_are_never_reflected() {
        let policy = CorsPolicy::default();
        let origin = b("https://a.example");
        let long = Bytes::from(vec![b'x'; ECHO_VALUE_BYTES_MAX + 1]);
        for value in [
            b("x-a\r\nset-cookie: pwned=1"),
            b("x-a\nx-b"),
            b("x-a\rx-b"),
            b("x-a\0"),
            b("x-a, \"quoted\""),
            b(""),
            long,
        ] {
            let answer = policy.preflight(Some(&origin), Some(&value));
            assert_eq!(answer.status, 204);
            assert_eq!(
                get(&answer.headers, "access-control-allow-headers"),
                None,
                "{value:?}"
            );
            for (_, v) in &answer.headers {
                assert!(!v.iter().any(|&c| matches!(c, b'\r' | b'\n' | 0)));
            }
        }
        let ok = b("X-Grpc-Web, content-type ,\tx-user-agent");
        let answer = policy.preflight(Some(&origin), Some(&ok));
        assert_eq!(
            get(&answer.headers, "access-control-allow-headers"),
            Some(&ok[..])
        );
    }

    #[test]
    fn actual_headers_expose_custom_metadata() {
        let policy = CorsPolicy::default();
        let origin = b("https://a.example");
        let names: [&[u8]; 14] = [
            b"X-Custom",
            b"x-custom",
            b"grpc-status",
            b"GRPC-MESSAGE",
            b"content-type",
            b"Content-Length",
            b"date",
            b"server",
            b"transfer-encoding",
            b":status",
            b"access-control-allow-origin",
            b"x-evil\r\nset-cookie",
            b"",
            b"trace-bin",
        ];
        let h = policy.actual_headers(Some(&origin), names);
        assert_eq!(get(&h, "access-control-allow-origin"), Some(&b"*"[..]));
        assert_eq!(get(&h, "vary"), None);
        assert_eq!(
            get(&h, "access-control-expose-headers"),
            Some(&b"grpc-status,grpc-message,x-custom,trace-bin"[..])
        );
    }

    #[test]
    fn actual_headers_without_custom_names_reuse_the_configured_list() {
        let policy = CorsPolicy::default();
        let h = policy.actual_headers(Some(&b("https://a.example")), []);
        let expose = &h.iter().find(|(n, _)| *n == EXPOSE_HEADERS).unwrap().1;
        // Same backing storage: nothing was allocated for the common case.
        assert_eq!(expose.as_ptr(), policy.expose_headers.as_ptr());
        assert!(policy.actual_headers(None, [&b"x-a"[..]]).is_empty());
    }

    #[test]
    fn expose_list_is_bounded_and_handles_an_empty_base() {
        let policy = CorsPolicy {
            expose_headers: Bytes::new(),
            ..CorsPolicy::default()
        };
        let h = policy.actual_headers(Some(&b("https://a.example")), [&b"x-a"[..], b"x-b"]);
        assert_eq!(
            get(&h, "access-control-expose-headers"),
            Some(&b"x-a,x-b"[..])
        );
        assert_eq!(
            policy
                .actual_headers(Some(&b("https://a.example")), [])
                .len(),
            1
        );

        let names: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("x-h{i}").into_bytes())
            .collect();
        let h = CorsPolicy::default().actual_headers(
            Some(&b("https://a.example")),
            names.iter().map(Vec::as_slice),
        );
        let expose = get(&h, "access-control-expose-headers").unwrap();
        assert!(expose.len() <= ECHO_VALUE_BYTES_MAX);
        assert!(expose.len() > ECHO_VALUE_BYTES_MAX - 16);
        assert!(expose.starts_with(b"grpc-status,grpc-message,x-h0,x-h1,"));
    }
}
