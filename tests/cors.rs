//! CORS: preflights answered by the proxy (never forwarded), the allow/expose headers on actual
//! responses and on local error replies, and each CORS flag.

mod common;

use std::net::SocketAddr;

use common::*;

const ORIGIN: &str = "https://app.example";

fn preflight_request(origin: Option<&str>, request_headers: &str) -> Vec<u8> {
    let origin = origin.map_or(String::new(), |o| format!("origin: {o}\r\n"));
    format!(
        "OPTIONS {UNARY} HTTP/1.1\r\nhost: test.local\r\n{origin}\
         access-control-request-method: POST\r\n\
         access-control-request-headers: {request_headers}\r\n\r\n"
    )
    .into_bytes()
}

/// The CORS headers of a response (and `vary`), in the order sent.
fn cors_headers(response: &Response) -> Vec<(&str, &str)> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-") || n == "vary")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// Send a preflight on a connection, read the answer, and check the connection stays usable.
fn preflight(proxy: SocketAddr, origin: Option<&str>, request_headers: &str) -> Response {
    let mut client = Reader::new(connect(proxy));
    client.write(&preflight_request(origin, request_headers));
    let response = client.read_response();
    client.write(b"GET /healthz HTTP/1.1\r\nhost: test.local\r\n\r\n");
    assert_eq!(client.read_response().body, b"ok\n");
    response
}

/// The default policy answers a preflight locally: any origin, the default methods and
/// max-age, and the requested headers echoed.
#[test]
fn default_preflight_is_answered_locally() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let response = preflight(
            proxy.local_addr(),
            Some(ORIGIN),
            "x-grpc-web,content-type,x-custom",
        );
        assert_eq!(response.status, 204);
        assert_eq!(
            cors_headers(&response),
            [
                ("access-control-allow-origin", "*"),
                ("vary", "access-control-request-headers"),
                (
                    "access-control-allow-methods",
                    "GET, PUT, DELETE, POST, OPTIONS"
                ),
                (
                    "access-control-allow-headers",
                    "x-grpc-web,content-type,x-custom"
                ),
                ("access-control-max-age", "1728000"),
                ("access-control-expose-headers", "grpc-status,grpc-message"),
            ]
        );
        assert_eq!(backend.stats().calls_started, 0);
    });
}

/// RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204 response.
#[test]
fn preflight_204_has_no_content_length() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let proxy = start_proxy(driver, &[backend.local_addr()], &[]);
        let response = preflight(proxy.local_addr(), Some(ORIGIN), "x-grpc-web");
        assert_eq!(response.status, 204);
        assert_eq!(response.header("content-length"), None, "{}", response.head);
    });
}

/// An origin list: listed origins are echoed (with `vary: origin`), others get a bare 403 to
/// the preflight and no CORS headers on actual responses.
#[test]
fn allow_origins_list() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = [
            "--cors-allow-origins",
            "https://a.example,https://app.example",
        ];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let allowed = preflight(proxy.local_addr(), Some(ORIGIN), "x-grpc-web");
        assert_eq!(allowed.status, 204);
        assert_eq!(
            cors_headers(&allowed)[..2],
            [
                ("access-control-allow-origin", ORIGIN),
                ("vary", "origin, access-control-request-headers"),
            ]
        );

        let mut client = Reader::new(connect(proxy.local_addr()));
        client.write(&preflight_request(
            Some("https://evil.example"),
            "x-grpc-web",
        ));
        assert_eq!(
            client.read_raw_head(),
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"
        );
        client.write(&grpc_web_request(
            UNARY,
            &[("origin", "https://evil.example")],
            &grpc_frame(b"m"),
        ));
        assert_echo(&client.read_response(), "b", &[b"m"]);
        let counted = totals(&proxy);
        assert_eq!(counted.preflights, 1, "only the allowed preflight");
        let forbidden = ringway::stats::LOCAL_HTTP_STATUSES
            .iter()
            .position(|s| *s == 403)
            .unwrap();
        assert_eq!(
            counted.local_http[forbidden], 1,
            "the refused one, as a 403"
        );

        client.write(&grpc_web_request(
            UNARY,
            &[("origin", ORIGIN)],
            &grpc_frame(b"m"),
        ));
        assert_eq!(
            client.read_response().head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\
             access-control-allow-origin: https://app.example\r\nvary: origin\r\n\
             access-control-expose-headers: grpc-status,grpc-message,x-backend\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(backend.stats().calls_started, 2);
    });
}

/// With credentials the origin is echoed, never `*`, and `vary: origin` is sent.
#[test]
fn allow_credentials() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = ["--cors-allow-credentials"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let response = preflight(proxy.local_addr(), Some(ORIGIN), "x-grpc-web");
        assert_eq!(
            cors_headers(&response),
            [
                ("access-control-allow-origin", ORIGIN),
                ("vary", "origin, access-control-request-headers"),
                (
                    "access-control-allow-methods",
                    "GET, PUT, DELETE, POST, OPTIONS"
                ),
                ("access-control-allow-headers", "x-grpc-web"),
                ("access-control-max-age", "1728000"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "grpc-status,grpc-message"),
            ]
        );
        let actual = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[("origin", ORIGIN)], &grpc_frame(b"m")),
        );
        assert_eq!(
            cors_headers(&actual),
            [
                ("access-control-allow-origin", ORIGIN),
                ("vary", "origin"),
                ("access-control-allow-credentials", "true"),
                (
                    "access-control-expose-headers",
                    "grpc-status,grpc-message,x-backend"
                ),
            ]
        );
    });
}

/// A fixed allow-headers list is sent whatever the preflight asks for, and then nothing
/// varies with the request.
#[test]
fn fixed_allow_headers() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let flags = ["--cors-allow-headers", "x-grpc-web,content-type"];
        let proxy = start_proxy(driver, &[backend.local_addr()], &flags);
        let response = preflight(proxy.local_addr(), Some(ORIGIN), "x-other,x-more");
        assert_eq!(
            cors_headers(&response),
            [
                ("access-control-allow-origin", "*"),
                (
                    "access-control-allow-methods",
                    "GET, PUT, DELETE, POST, OPTIONS"
                ),
                ("access-control-allow-headers", "x-grpc-web,content-type"),
                ("access-control-max-age", "1728000"),
                ("access-control-expose-headers", "grpc-status,grpc-message"),
            ]
        );
    });
}

/// Actual responses expose the configured list plus the response's own metadata names.
#[test]
fn expose_headers_on_actual_responses() {
    for_each_driver(|driver| {
        let backend = start_backend("b");
        let default = start_proxy(driver, &[backend.local_addr()], &[]);
        let request = grpc_web_request(
            UNARY,
            &[("origin", ORIGIN), ("x-echo-color", "blue")],
            &grpc_frame(b"m"),
        );
        let response = roundtrip(default.local_addr(), &request);
        assert_eq!(
            response.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\nx-backend: b\r\n\
             x-echo-color: blue\r\naccess-control-allow-origin: *\r\n\
             access-control-expose-headers: grpc-status,grpc-message,x-backend,x-echo-color\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(response.body, echo_body(&[b"m"]));
        drop(default);

        let flags = ["--cors-expose-headers", "x-a,x-b"];
        let custom = start_proxy(driver, &[backend.local_addr()], &flags);
        let response = roundtrip(custom.local_addr(), &request);
        assert_eq!(
            response.header("access-control-expose-headers"),
            Some("x-a,x-b,x-backend,x-echo-color")
        );
    });
}

/// Local replies carry CORS headers too, or the browser would hide the error from the page.
#[test]
fn local_error_replies_carry_cors_headers() {
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, &[closed_port()], &[]);
        let reason = "content-type must be application/grpc-web or application/grpc-web-text";
        let mut client = Reader::new(connect(proxy.local_addr()));
        // (`application/json` is a Connect call; `application/xml` without
        // `connect-protocol-version` is nobody's.)
        client.write(&post(
            UNARY,
            "application/xml",
            &[("origin", ORIGIN)],
            b"<x/>",
        ));
        assert_eq!(
            String::from_utf8_lossy(&client.read_to_end()),
            format!(
                "HTTP/1.1 415 Unsupported Media Type\r\ncontent-type: text/plain\r\n\
                 content-length: {}\r\naccess-control-allow-origin: *\r\n\
                 access-control-expose-headers: grpc-status,grpc-message\r\n\
                 connection: close\r\n\r\n{reason}\n",
                reason.len() + 1
            )
        );
        let unavailable = roundtrip(
            proxy.local_addr(),
            &grpc_web_request(UNARY, &[("origin", ORIGIN)], &grpc_frame(b"m")),
        );
        assert_eq!(
            unavailable.head,
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ngrpc-status: 14\r\n\
             grpc-message: upstream connect error: Connection refused (os error 111)\r\n\
             access-control-allow-origin: *\r\n\
             access-control-expose-headers: grpc-status,grpc-message\r\n\
             content-length: 0\r\n\r\n"
        );
    });
}
