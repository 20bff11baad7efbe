//! Shared test harness: start ringway in-process on loopback under a chosen io driver, talk to
//! it with a raw HTTP/1.1 client that writes exact bytes, and parse what comes back (status,
//! headers, chunked body, gRPC-Web frames) strictly, so a framing mistake fails the test.

#![allow(dead_code)]

pub mod browser;
pub mod certs_for_server;
pub mod h2client;
pub mod https;
pub mod node;
pub mod pki;
pub mod rawh2;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringway::config::Config;
use ringway::grpc_web::Base64Decoder;
use ringway::server::Server;
use ringway::stats::Totals;
use ringway::testing::{Frame, FrameParser};
use ringway_load::backend::{Backend, BackendConfig, BackendHandle};

/// Both io drivers; every integration test runs under each, as monoio's own CI does.
pub const DRIVERS: [&str; 2] = ["uring", "epoll"];

/// How long a raw client waits for bytes before the test fails (a hang, not a timing check).
pub const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Start ringway on 127.0.0.1:0 with one worker, the given driver and upstreams, plus extra flags.
/// The in-process proxy's counters, all workers added up.
pub fn totals(proxy: &Server) -> Totals {
    Totals::sum(proxy.view().worker_stats.iter().map(|w| w.as_ref()))
}

pub fn start_proxy(driver: &str, upstreams: &[SocketAddr], extra: &[&str]) -> Server {
    let upstreams: Vec<String> = upstreams.iter().map(|a| a.to_string()).collect();
    let upstreams: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    start_proxy_targets(driver, &upstreams, extra)
}

/// Like [`start_proxy`], with upstream targets as text, so names (`user-service:9001`, resolved
/// by DNS discovery) may be given as well as addresses.
pub fn start_proxy_targets(driver: &str, upstreams: &[&str], extra: &[&str]) -> Server {
    start_proxy_workers(driver, upstreams, 1, extra)
}

/// Like [`start_proxy_targets`], with `workers` workers.
pub fn start_proxy_workers(
    driver: &str,
    upstreams: &[&str],
    workers: usize,
    extra: &[&str],
) -> Server {
    let upstream = upstreams.join(",");
    let workers = workers.to_string();
    let mut args = vec![
        "ringway",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        &workers,
        "--io-driver",
        driver,
        "--upstream",
        &upstream,
    ];
    args.extend_from_slice(extra);
    let config = Config::from_args(args).expect("test flags parse");
    Server::start(&config).expect("proxy starts")
}

/// Start a backend named `name` on `listen` (e.g. "127.0.0.2:0"), adjusted by `adjust`. The
/// shutdown grace is short so a test ending with a call still parked in the backend stops fast.
pub fn start_backend_with(
    listen: &str,
    name: &str,
    adjust: impl FnOnce(&mut BackendConfig),
) -> BackendHandle {
    let mut config = BackendConfig::new(listen.parse().expect("backend address"), name);
    config.shutdown_grace_ms = 100;
    adjust(&mut config);
    Backend::start(config).expect("backend starts")
}

/// A default backend on 127.0.0.1, named `name`.
pub fn start_backend(name: &str) -> BackendHandle {
    start_backend_with("127.0.0.1:0", name, |_| {})
}

/// An address where nothing listens: bind an ephemeral port, then release it.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to proxy");
    stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A gRPC length-prefixed message frame.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// A binary gRPC-Web unary request with a Content-Length body.
pub fn grpc_web_request(path: &str, extra_headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut headers = vec![("x-grpc-web", "1")];
    headers.extend_from_slice(extra_headers);
    post(path, "application/grpc-web+proto", &headers, body)
}

/// A gRPC-Web POST with the given content type, extra headers and a Content-Length body.
pub fn post(
    path: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test.local\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The head of a gRPC-Web POST with a chunked body (the chunks follow, see [`chunk`]).
pub fn post_chunked_head(
    path: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test.local\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n"
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// One chunk of a chunked body; an empty `data` is the last chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A whole chunked body: one chunk per piece, then the last chunk.
pub fn chunked_body(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        out.extend_from_slice(&chunk(piece));
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The exact gRPC-Web trailer frame for `fields`: flag 0x80, length, `name:value\r\n` lines.
pub fn trailer_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let block: String = fields.iter().map(|(n, v)| format!("{n}:{v}\r\n")).collect();
    let mut frame = vec![0x80];
    frame.extend_from_slice(&(block.len() as u32).to_be_bytes());
    frame.extend_from_slice(block.as_bytes());
    frame
}

/// The exact bytes of a local HTTP error reply: text body `reason` plus a newline, then close.
pub fn local_error(status_line: &str, reason: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
}

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The head exactly as received, status line to blank line included.
    pub head: String,
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// How the body was delimited: "chunked", "length" or "close".
    pub framing: &'static str,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's gRPC-Web frames (text mode: base64-decoded first).
    pub fn frames(&self) -> Vec<Frame> {
        let raw = if self
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/grpc-web-text"))
        {
            let mut decoded = BytesMut::new();
            let mut decoder = Base64Decoder::new();
            decoder
                .decode(&self.body, &mut decoded)
                .expect("valid base64");
            decoder.finish(&mut decoded).expect("valid base64 end");
            decoded
        } else {
            BytesMut::from(&self.body[..])
        };
        parse_frames(raw)
    }

    /// Message payloads, in order.
    pub fn messages(&self) -> Vec<Bytes> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message { data, .. } => Some(data),
                Frame::Trailers(_) => None,
            })
            .collect()
    }

    /// The trailer frame's fields, lower-case names.
    pub fn trailers(&self) -> Vec<(String, String)> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Trailers(t) => Some(t),
                Frame::Message { .. } => None,
            })
            .flatten()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    pub fn trailer(&self, name: &str) -> Option<String> {
        self.trailers()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// grpc-status from the trailer frame, or from the headers for a trailers-only reply.
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailer("grpc-status")
            .or_else(|| self.header("grpc-status").map(str::to_owned))
            .map(|s| s.parse().expect("numeric grpc-status"))
    }
}

pub fn parse_frames(mut raw: BytesMut) -> Vec<Frame> {
    let mut parser = FrameParser::new(64 * 1024 * 1024);
    let mut frames = Vec::new();
    while let Some(frame) = parser.parse(&mut raw).expect("well-formed gRPC-Web frames") {
        frames.push(frame);
    }
    assert!(
        raw.is_empty(),
        "trailing bytes after the last frame: {raw:?}"
    );
    frames
}

/// Reads responses from one connection, keeping bytes that belong to the next response. The
/// connection is TCP, or TLS over it (see [`https`]).
pub struct Reader<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Reader<S> {
    pub fn new(stream: S) -> Self {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
        // A TLS stream may hold the last record until flushed.
        self.stream.flush().expect("write to proxy");
    }

    /// Read more; returns false on EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            // TLS: the server closed the TCP connection without a close_notify alert.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            // A signal landed on this thread (the proxy's io_uring workers share the process).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) => panic!("reading from proxy: {e}"),
        }
    }

    /// Bytes until `delimiter` (included), reading as needed.
    pub fn read_until(&mut self, delimiter: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, delimiter) {
                return self.buf.drain(..at + delimiter.len()).collect();
            }
            assert!(
                self.fill(),
                "EOF before {delimiter:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "EOF with {} of {n} bytes", self.buf.len());
        }
        self.buf.drain(..n).collect()
    }

    /// Everything until the peer closes.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// The raw head of the next response, status line to blank line included.
    pub fn read_raw_head(&mut self) -> String {
        String::from_utf8(self.read_until(b"\r\n\r\n")).expect("ASCII head")
    }

    /// Assert the peer closed the connection without sending anything more.
    pub fn assert_closed(&mut self) {
        let rest = self.read_to_end();
        assert!(
            rest.is_empty(),
            "expected close, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// One chunk of a chunked body: `Some(data)`, or `None` for the last chunk (and its CRLF).
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.read_until(b"\r\n");
        let size = usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).unwrap(), 16)
            .expect("hex chunk size");
        if size == 0 {
            assert_eq!(
                self.read_exact(2),
                b"\r\n",
                "no trailer section after the last chunk"
            );
            return None;
        }
        let data = self.read_exact(size);
        assert_eq!(self.read_exact(2), b"\r\n", "chunk data ends with CRLF");
        Some(data)
    }

    /// The next whole response. Skips nothing: a `100 Continue` is returned as its own response.
    pub fn read_response(&mut self) -> Response {
        let head = self.read_raw_head();
        let (version, status, headers) = parse_head(&head);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let (body, framing) = if status == 100 || status == 204 {
            (Vec::new(), "length")
        } else if get("transfer-encoding").as_deref() == Some("chunked") {
            let mut body = Vec::new();
            while let Some(chunk) = self.read_chunk() {
                body.extend_from_slice(&chunk);
            }
            (body, "chunked")
        } else if let Some(length) = get("content-length") {
            (
                self.read_exact(length.parse().expect("numeric content-length")),
                "length",
            )
        } else {
            (self.read_to_end(), "close")
        };
        Response {
            head,
            version,
            status,
            headers,
            body,
            framing,
        }
    }
}

fn parse_head(head: &str) -> (String, u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap().to_owned();
    let status = parts.next().unwrap().parse().expect("numeric status");
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line has a colon");
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (version, status, headers)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Send one request on a fresh connection and read one response.
pub fn roundtrip(proxy: SocketAddr, request: &[u8]) -> Response {
    let mut reader = Reader::new(connect(proxy));
    reader.write(request);
    reader.read_response()
}

/// Poll `check` until it holds, for at most `limit`: waits for an effect, never measures speed.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    check()
}

/// Run `scenario` under each io driver in turn; the driver is printed first, so a failure's
/// captured output says which one failed.
pub fn for_each_driver(mut scenario: impl FnMut(&str)) {
    for driver in DRIVERS {
        eprintln!("--- io driver: {driver}");
        scenario(driver);
    }
}

/// A unary method of the test backend: echoes the request frames.
pub const UNARY: &str = "/test.Echo/Unary";
/// A server-streaming method of the test backend (see `x-stream-count`).
pub const SERVER_STREAM: &str = "/test.Echo/ServerStream";

/// The head ringway writes for a streamed (chunked) gRPC-Web response from backend `name`.
pub fn streaming_head(content_type: &str, name: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
}

/// The decoded body of a successful echo of `messages`: their frames, then `grpc-status:0`.
pub fn echo_body(messages: &[&[u8]]) -> Vec<u8> {
    let mut body: Vec<u8> = messages.iter().flat_map(|m| grpc_frame(m)).collect();
    body.extend_from_slice(&trailer_frame(&[("grpc-status", "0")]));
    body
}

/// Assert `response` is a successful binary echo of `messages` from backend `name`, with the
/// exact head and body bytes.
pub fn assert_echo(response: &Response, name: &str, messages: &[&[u8]]) {
    assert_eq!(
        response.head,
        streaming_head("application/grpc-web+proto", name)
    );
    assert_eq!(response.body, echo_body(messages));
}

/// Start a server stream that stalls after its first message (the backend waits a minute before
/// the next) and read up to that message: the call is then in flight with nothing to send.
/// Returns the client, positioned after the first message's chunk, and the raw response head.
pub fn stalled_stream(proxy: SocketAddr) -> (Reader, String) {
    let mut client = Reader::new(connect(proxy));
    let headers = [("x-stream-count", "2"), ("x-stream-interval-ms", "60000")];
    client.write(&grpc_web_request(
        SERVER_STREAM,
        &headers,
        &grpc_frame(b"tick"),
    ));
    let head = client.read_raw_head();
    assert_eq!(client.read_chunk().unwrap(), grpc_frame(b"tick"));
    (client, head)
}

/// A process under test (the real binary), killed if the test ends (or fails) before it exits.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}
