//! The HTTP/2 mode's wire format, sans-IO: the request head every call sends, and the one
//! outcome of a response as the `h2` crate hands it over (status, headers, the DATA bytes,
//! trailers).
//!
//! gRPC-Web over HTTP/2 is judged exactly as over HTTP/1.1 (`wire::judge_grpc_web`: the
//! trailers are the body's last frame). Native gRPC has real HTTP/2 trailers instead, and is
//! judged here as strictly: the content type, every length-prefixed message complete, no
//! trailer frame in the body, `grpc-status` from the trailers or, for a trailers-only response
//! (END_STREAM on the HEADERS frame, so no body and no trailers), from the headers.

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Uri};

use super::wire::{self, CallKind, ContentType, ErrorKind, GrpcWebResponse, Mode, Verdict};
use super::wire_connect;

/// Which gRPC protocol the HTTP/2 mode speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// gRPC-Web (`application/grpc-web+proto`, or `-text` in text mode), trailers in the body,
    /// as browsers send it over HTTP/2.
    #[default]
    GrpcWeb,
    /// Native gRPC (`application/grpc`, `te: trailers`), trailers as HTTP/2 trailers.
    Grpc,
    /// Connect unary calls (`application/proto`, the bare message; errors as JSON with an
    /// HTTP status), over HTTP/1.1 or HTTP/2; judged in `wire_connect.rs`.
    Connect,
}

/// The head every call of a run sends, built once; [`RequestHead::request`] makes each call's.
#[derive(Clone, Debug)]
pub struct RequestHead {
    uri: Uri,
    headers: HeaderMap,
}

impl RequestHead {
    /// `POST {scheme}://{authority}{method}` (`https` with `tls`) with the protocol's headers
    /// and `metadata`, which must have passed `wire::check_metadata`.
    pub fn new(
        method: &str,
        authority: &str,
        protocol: Protocol,
        mode: Mode,
        metadata: &[(String, String)],
        tls: bool,
    ) -> Result<RequestHead, String> {
        let uri = Uri::builder()
            .scheme(if tls { "https" } else { "http" })
            .authority(authority)
            .path_and_query(method)
            .build()
            .map_err(|e| {
                format!("cannot make a request URI of {authority:?} and {method:?}: {e}")
            })?;
        let mut headers = HeaderMap::new();
        let fixed: &[(&str, &str)] = match (protocol, mode) {
            (Protocol::Grpc, _) => &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("user-agent", "ringway-load"),
            ],
            (Protocol::Connect, _) => &[
                ("content-type", wire_connect::CONTENT_TYPE),
                wire_connect::PROTOCOL_VERSION_HEADER,
                ("user-agent", "ringway-load"),
            ],
            (Protocol::GrpcWeb, mode) => {
                let content_type = wire::encode_body(mode, 0).0;
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert("accept", HeaderValue::from_static(content_type));
                &[("x-grpc-web", "1"), ("x-user-agent", "ringway-load")]
            }
        };
        for (name, value) in fixed {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        for (name, value) in metadata {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("metadata name {name:?} is not a header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("metadata value for {name:?} is not a header value"))?;
            headers.append(name, value);
        }
        Ok(RequestHead { uri, headers })
    }

    /// One call's request head.
    pub fn request(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// A complete HTTP/2 response, as the h2 client delivers it.
#[derive(Clone, Copy, Debug)]
pub struct H2Response<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    /// The DATA frames' bytes, concatenated.
    pub body: &'a [u8],
    /// The trailers; `None` for a trailers-only response or a body that ended without them.
    pub trailers: Option<&'a HeaderMap>,
}

/// The one outcome of a complete HTTP/2 response, and the pod that answered (the backend
/// header in the headers, else in the trailers or gRPC-Web trailer frame).
pub fn judge<'a>(
    response: H2Response<'a>,
    protocol: Protocol,
    mode: Mode,
    call: CallKind,
    backend_header: &str,
    scratch: &'a mut Vec<u8>,
) -> (Result<(), ErrorKind>, Option<&'a str>) {
    match protocol {
        Protocol::GrpcWeb => {
            let content_type = header(response.headers, CONTENT_TYPE.as_str())
                .map_or(ContentType::Other, ContentType::classify);
            let web = GrpcWebResponse {
                status: response.status,
                content_type,
                grpc_status: header(response.headers, "grpc-status"),
                pod: header(response.headers, backend_header),
                body: response.body,
            };
            let Verdict { result, pod } =
                wire::judge_grpc_web(web, mode, call, backend_header, scratch);
            (result, pod)
        }
        Protocol::Grpc => {
            let pod = header(response.headers, backend_header)
                .or_else(|| response.trailers.and_then(|t| header(t, backend_header)));
            (judge_grpc(response, call), pod)
        }
        Protocol::Connect => {
            let content_type = header(response.headers, CONTENT_TYPE.as_str())
                .map_or(ContentType::Other, ContentType::classify);
            let result = wire_connect::judge(response.status, content_type, response.body);
            (result, header(response.headers, backend_header))
        }
    }
}

/// A header's value as trimmed text; `None` if absent or not visible ASCII.
pub fn header<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    map.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn judge_grpc(response: H2Response<'_>, call: CallKind) -> Result<(), ErrorKind> {
    if response.status != 200 {
        return Err(ErrorKind::HttpStatus(response.status));
    }
    let content_type = response
        .headers
        .get(CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    if !content_type.is_some_and(is_grpc_content_type) {
        return Err(ErrorKind::Malformed);
    }
    let messages = count_messages(response.body)?;
    let status = match response.trailers {
        Some(trailers) => trailers.get("grpc-status"),
        // Trailers-only: the status is in the headers, and there is nothing else.
        None if response.body.is_empty() => response.headers.get("grpc-status"),
        None => None,
    };
    let status = status.ok_or(ErrorKind::MissingTrailers)?;
    let status = status.to_str().map_err(|_| ErrorKind::Malformed)?;
    let status = wire::parse_grpc_status(status.trim())?;
    if status != 0 {
        return Err(ErrorKind::Grpc(status));
    }
    if call == CallKind::Unary && messages != 1 {
        return Err(ErrorKind::Malformed);
    }
    Ok(())
}

/// `application/grpc`, alone or with a `+subtype` or parameters.
fn is_grpc_content_type(value: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    value
        .get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        && matches!(value.get(PREFIX.len()), None | Some(b'+' | b';'))
}

/// Counts the length-prefixed messages of a native gRPC body: flag 0 (or 1, compressed) and a
/// big-endian length, each complete. Any other flag (a gRPC-Web trailer frame, 0x80, included)
/// is malformed here.
fn count_messages(mut body: &[u8]) -> Result<u64, ErrorKind> {
    let mut messages = 0;
    while !body.is_empty() {
        let Some(header) = body.get(..5) else {
            return Err(ErrorKind::Malformed);
        };
        if header[0] > 1 {
            return Err(ErrorKind::Malformed);
        }
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        body = body
            .get(5..)
            .and_then(|rest| rest.get(length..))
            .ok_or(ErrorKind::Malformed)?;
        messages += 1;
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "x-backend";

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn grpc(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        trailers: Option<&HeaderMap>,
        call: CallKind,
    ) -> (Result<(), ErrorKind>, Option<String>) {
        let response = H2Response {
            status,
            headers,
            body,
            trailers,
        };
        let mut scratch = Vec::new();
        let (result, pod) = judge(
            response,
            Protocol::Grpc,
            Mode::Binary,
            call,
            POD,
            &mut scratch,
        );
        (result, pod.map(str::to_owned))
    }

    #[test]
    fn native_grpc_ok_names_the_pod_from_headers_or_trailers() {
        let headers = map(&[("content-type", "application/grpc"), ("x-backend", "pod-1")]);
        let ok = map(&[("grpc-status", "0")]);
        let body = frame(0, b"hello");
        let verdict = grpc(200, &headers, &body, Some(&ok), CallKind::Unary);
        assert_eq!(verdict, (Ok(()), Some("pod-1".into())));
        let headers = map(&[("content-type", "application/grpc+proto")]);
        let trailers = map(&[("grpc-status", "0"), ("x-backend", "pod-2")]);
        let verdict = grpc(200, &headers, &body, Some(&trailers), CallKind::Unary);
        assert_eq!(verdict, (Ok(()), Some("pod-2".into())));
        let two = [frame(0, b"a"), frame(1, b"b")].concat();
        let verdict = grpc(200, &headers, &two, Some(&ok), CallKind::ServerStream);
        assert_eq!(verdict.0, Ok(()));
        assert_eq!(
            grpc(200, &headers, &two, Some(&ok), CallKind::Unary).0,
            Err(ErrorKind::Malformed)
        );
    }

    #[test]
    fn native_grpc_statuses_trailers_only_and_missing_trailers() {
        let headers = map(&[("content-type", "application/grpc")]);
        let body = frame(0, b"x");
        let unavailable = map(&[("grpc-status", "14")]);
        assert_eq!(
            grpc(200, &headers, &body, Some(&unavailable), CallKind::Unary).0,
            Err(ErrorKind::Grpc(14))
        );
        let trailers_only = map(&[("content-type", "application/grpc"), ("grpc-status", "12")]);
        assert_eq!(
            grpc(200, &trailers_only, b"", None, CallKind::Unary).0,
            Err(ErrorKind::Grpc(12))
        );
        // Trailers-only OK carries no message: fine for a stream, not for a unary call.
        let ok_only = map(&[("content-type", "application/grpc"), ("grpc-status", "0")]);
        assert_eq!(
            grpc(200, &ok_only, b"", None, CallKind::ServerStream).0,
            Ok(())
        );
        assert_eq!(
            grpc(200, &ok_only, b"", None, CallKind::Unary).0,
            Err(ErrorKind::Malformed)
        );
        // A body that ends without trailers; trailers without grpc-status; a status in the
        // headers does not stand in for trailers after a body.
        for (h, t) in [
            (&headers, None),
            (&headers, Some(&map(&[("x-other", "1")]))),
            (&ok_only, None),
        ] {
            assert_eq!(
                grpc(200, h, &body, t, CallKind::Unary).0,
                Err(ErrorKind::MissingTrailers)
            );
        }
        assert_eq!(
            grpc(503, &headers, b"", None, CallKind::Unary).0,
            Err(ErrorKind::HttpStatus(503))
        );
    }

    #[test]
    fn native_grpc_hostile_responses_are_malformed() {
        let headers = map(&[("content-type", "application/grpc")]);
        let ok = map(&[("grpc-status", "0")]);
        let bodies: Vec<Vec<u8>> = vec![
            frame(0, b"hello")[..7].to_vec(), // cut message
            vec![0, 0, 0],                    // cut header
            [frame(0, b"x"), frame(0x80, b"grpc-status:0")].concat(), // gRPC-Web trailer frame
            frame(2, b"x"),                   // unknown flag
            vec![0, 0xff, 0xff, 0xff, 0xff, 1], // huge length
        ];
        for (index, body) in bodies.iter().enumerate() {
            let verdict = grpc(200, &headers, body, Some(&ok), CallKind::ServerStream);
            assert_eq!(verdict.0, Err(ErrorKind::Malformed), "case {index}");
        }
        for status in ["zero", "-1", "", "99999999999", "1 2"] {
            let trailers: HeaderMap = [(
                HeaderName::from_static("grpc-status"),
                HeaderValue::from_str(status).unwrap(),
            )]
            .into_iter()
            .collect();
            let verdict = grpc(
                200,
                &headers,
                &frame(0, b"x"),
                Some(&trailers),
                CallKind::Unary,
            );
            assert_eq!(verdict.0, Err(ErrorKind::Malformed), "{status:?}");
        }
        for content_type in [
            "application/grpc-web",
            "text/plain",
            "application/grpcx",
            "",
        ] {
            let headers: HeaderMap = [(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap())]
                .into_iter()
                .collect();
            let verdict = grpc(200, &headers, &frame(0, b"x"), Some(&ok), CallKind::Unary);
            assert_eq!(verdict.0, Err(ErrorKind::Malformed), "{content_type:?}");
        }
        let verdict = grpc(
            200,
            &HeaderMap::new(),
            &frame(0, b"x"),
            Some(&ok),
            CallKind::Unary,
        );
        assert_eq!(verdict.0, Err(ErrorKind::Malformed));
        assert!(is_grpc_content_type(b"Application/GRPC;charset=x"));
    }

    #[test]
    fn grpc_web_over_h2_is_judged_as_over_http1() {
        let headers = map(&[
            ("content-type", "application/grpc-web+proto"),
            ("x-backend", "pod-3"),
        ]);
        let body = [frame(0, b"m"), frame(0x80, b"grpc-status:0\r\n")].concat();
        let response = H2Response {
            status: 200,
            headers: &headers,
            body: &body,
            trailers: None,
        };
        let mut scratch = Vec::new();
        let verdict = judge(
            response,
            Protocol::GrpcWeb,
            Mode::Binary,
            CallKind::Unary,
            POD,
            &mut scratch,
        );
        assert_eq!(verdict, (Ok(()), Some("pod-3")));
        let verdict = judge(
            response,
            Protocol::GrpcWeb,
            Mode::Text,
            CallKind::Unary,
            POD,
            &mut scratch,
        );
        assert_eq!(verdict.0, Err(ErrorKind::Malformed));
        let trailers_only = map(&[
            ("content-type", "application/grpc-web+proto"),
            ("grpc-status", "7"),
        ]);
        let response = H2Response {
            status: 200,
            headers: &trailers_only,
            body: b"",
            trailers: None,
        };
        let verdict = judge(
            response,
            Protocol::GrpcWeb,
            Mode::Binary,
            CallKind::Unary,
            POD,
            &mut scratch,
        );
        assert_eq!(verdict, (Err(ErrorKind::Grpc(7)), None));
    }

    #[test]
    fn connect_over_h2_is_judged_by_status_content_type_and_error_json() {
        let mut scratch = Vec::new();
        let mut verdict = |status, headers: &HeaderMap, body: &[u8]| {
            let response = H2Response {
                status,
                headers,
                body,
                trailers: None,
            };
            let (result, pod) = judge(
                response,
                Protocol::Connect,
                Mode::Binary,
                CallKind::Unary,
                POD,
                &mut scratch,
            );
            (result, pod.map(str::to_owned))
        };
        let ok = map(&[
            ("content-type", "application/proto"),
            ("x-backend", "pod-c"),
        ]);
        assert_eq!(
            verdict(200, &ok, b"\x0a\x00"),
            (Ok(()), Some("pod-c".into()))
        );
        let json = map(&[("content-type", "application/json")]);
        let error = br#"{"code":"resource_exhausted","message":"slow down"}"#;
        assert_eq!(verdict(429, &json, error), (Err(ErrorKind::Grpc(8)), None));
        assert_eq!(verdict(200, &json, b"{}").0, Err(ErrorKind::Malformed));
        assert_eq!(
            verdict(503, &map(&[]), b"").0,
            Err(ErrorKind::HttpStatus(503))
        );
    }

    #[test]
    fn stream_resets_are_named_by_their_code() {
        assert_eq!(ErrorKind::StreamReset(7).name(), "reset_REFUSED_STREAM");
        assert_eq!(ErrorKind::StreamReset(8).name(), "reset_CANCEL");
        assert_eq!(
            ErrorKind::StreamReset(0xd).name(),
            "reset_HTTP_1_1_REQUIRED"
        );
        assert_eq!(ErrorKind::StreamReset(0xe).name(), "reset_14");
    }

    #[test]
    fn request_heads() {
        let metadata = vec![("authorization".to_owned(), "Bearer x".to_owned())];
        let head = RequestHead::new(
            "/a.B/C",
            "lb:8080",
            Protocol::Grpc,
            Mode::Binary,
            &metadata,
            false,
        )
        .unwrap();
        let request = head.request();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().to_string(), "http://lb:8080/a.B/C");
        assert_eq!(request.headers()["content-type"], "application/grpc");
        assert_eq!(request.headers()["te"], "trailers");
        assert_eq!(request.headers()["authorization"], "Bearer x");
        let head =
            RequestHead::new("/a.B/C", "lb", Protocol::GrpcWeb, Mode::Text, &[], true).unwrap();
        let request = head.request();
        assert_eq!(
            request.headers()["content-type"],
            "application/grpc-web-text+proto"
        );
        assert_eq!(request.headers()["x-grpc-web"], "1");
        assert!(!request.headers().contains_key("te"));
        assert_eq!(request.uri().scheme_str(), Some("https"));
        let head =
            RequestHead::new("/a.B/C", "lb", Protocol::Connect, Mode::Binary, &[], false).unwrap();
        let request = head.request();
        assert_eq!(request.headers()["content-type"], "application/proto");
        assert_eq!(request.headers()["connect-protocol-version"], "1");
        assert!(!request.headers().contains_key("te"));
        let bad = |method, authority| {
            RequestHead::new(method, authority, Protocol::Grpc, Mode::Binary, &[], false).is_err()
        };
        assert!(bad("/a b", "lb"));
        assert!(bad("/a", "l b"));
    }
}
