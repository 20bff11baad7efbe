//! CORS decisions for gRPC-Web, answered by the proxy, sans-IO.
//!
//! CONTRACT (skeleton; the implementation replaces these bodies).

use bytes::Bytes;

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
        todo!()
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

impl CorsPolicy {
    /// Decide a preflight `OPTIONS` from its `Origin` and `Access-Control-Request-Headers`.
    pub fn preflight(&self, origin: Option<&Bytes>, request_headers: Option<&Bytes>) -> Preflight {
        let _ = (origin, request_headers);
        todo!()
    }

    /// Headers for an actual (non-preflight) response, local errors included.
    /// `response_header_names` are the names of the response's own custom headers/metadata;
    /// they are exposed in addition to `expose_headers` (deduplicated, lower-case).
    /// Returns nothing when the request had no `Origin` or the origin is not allowed.
    pub fn actual_headers<'a>(
        &self,
        origin: Option<&Bytes>,
        response_header_names: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<(&'static [u8], Bytes)> {
        let _ = (origin, response_header_names);
        todo!()
    }
}
