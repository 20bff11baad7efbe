//! A real HTTP/2 client for the tests (the `h2` crate on a tokio runtime of its own): h2c with
//! prior knowledge to ringway, native gRPC or gRPC-Web on its streams.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use ringway::grpc_web::Base64Decoder;
use ringway::testing::{Frame, FrameParser};

/// How long a client waits for a response before the test fails (a hang, not a timing check).
pub const H2_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/2 connection to the proxy.
pub struct H2Client {
    pub runtime: tokio::runtime::Runtime,
    pub send: SendRequest<Bytes>,
}

/// What came back on one stream.
#[derive(Debug, Default)]
pub struct H2Response {
    pub status: u16,
    pub headers: HeaderMap,
    /// The DATA frames, as received.
    pub data: Vec<Bytes>,
    pub trailers: Option<HeaderMap>,
    /// The stream was reset (by the proxy) with this reason.
    pub reset: Option<h2::Reason>,
}

impl H2Client {
    pub fn connect(addr: SocketAddr) -> H2Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let send = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).unwrap();
            let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
            tokio::spawn(async move {
                let _ = connection.await;
            });
            send
        });
        H2Client { runtime, send }
    }

    /// One call: `headers` on a POST to `path`, the whole `body` with END_STREAM, and the
    /// response read to its end.
    pub fn call(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> H2Response {
        let request = request("POST", path, headers);
        let body = Bytes::copy_from_slice(body);
        let send = self.send.clone();
        self.runtime.block_on(async move {
            tokio::time::timeout(H2_TIMEOUT, exchange(send, request, vec![body]))
                .await
                .expect("response within the test timeout")
        })
    }

    /// A native gRPC unary call with one message.
    pub fn grpc_unary(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        message: &[u8],
    ) -> H2Response {
        let mut all = vec![
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
        ];
        all.extend_from_slice(headers);
        self.call(path, &all, &super::grpc_frame(message))
    }

    /// A gRPC-Web (binary) unary call with one message.
    pub fn web_unary(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        message: &[u8],
    ) -> H2Response {
        let mut all = vec![
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ];
        all.extend_from_slice(headers);
        self.call(path, &all, &super::grpc_frame(message))
    }
}

pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://test.local{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

/// Send `request` with `pieces` as its body (END_STREAM on the last), then read the response.
pub async fn exchange(
    mut send: SendRequest<Bytes>,
    request: Request<()>,
    pieces: Vec<Bytes>,
) -> H2Response {
    send = send.ready().await.expect("connection ready");
    let end_with_head = pieces.iter().all(|p| p.is_empty());
    let (response, mut body) = send
        .send_request(request, end_with_head)
        .expect("request sent");
    if !end_with_head {
        let count = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            body.send_data(piece, i + 1 == count).expect("body sent");
        }
    }
    read_response(response).await
}

pub async fn read_response(response: h2::client::ResponseFuture) -> H2Response {
    let response = match response.await {
        Ok(response) => response,
        Err(e) => {
            return H2Response {
                reset: e.reason(),
                ..Default::default()
            }
        }
    };
    let (parts, mut recv) = response.into_parts();
    let mut out = H2Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        ..Default::default()
    };
    while let Some(data) = recv.data().await {
        match data {
            Ok(data) => {
                let _ = recv.flow_control().release_capacity(data.len());
                out.data.push(data);
            }
            Err(e) => {
                out.reset = e.reason();
                return out;
            }
        }
    }
    match recv.trailers().await {
        Ok(trailers) => out.trailers = trailers,
        Err(e) => out.reset = e.reason(),
    }
    out
}

impl H2Response {
    pub fn body(&self) -> Vec<u8> {
        self.data.iter().flat_map(|d| d.to_vec()).collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
    }

    /// Native gRPC: grpc-status from the trailers, or from the head of a trailers-only reply.
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailer("grpc-status")
            .or_else(|| self.header("grpc-status"))
            .and_then(|s| s.parse().ok())
    }

    /// The body's gRPC (or gRPC-Web) frames, base64-decoded first for grpc-web-text.
    pub fn frames(&self) -> Vec<Frame> {
        let mut raw = BytesMut::new();
        if self
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/grpc-web-text"))
        {
            Base64Decoder::new()
                .decode(&self.body(), &mut raw)
                .expect("valid base64");
        } else {
            raw.extend_from_slice(&self.body());
        }
        let mut parser = FrameParser::new(64 * 1024 * 1024);
        let mut frames = Vec::new();
        while let Some(frame) = parser.parse(&mut raw).expect("well-formed frames") {
            frames.push(frame);
        }
        assert!(raw.is_empty(), "trailing bytes after the last frame");
        frames
    }

    /// The messages of the body.
    pub fn messages(&self) -> Vec<Bytes> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message { data, .. } => Some(data),
                Frame::Trailers(_) => None,
            })
            .collect()
    }

    /// gRPC-Web: the fields of the final trailer frame.
    pub fn web_trailers(&self) -> Vec<(String, String)> {
        match self.frames().last() {
            Some(Frame::Trailers(fields)) => fields
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn web_trailer(&self, name: &str) -> Option<String> {
        self.web_trailers()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}
