//! What the HTTPS and Connect tests share: a test CA with an ECDSA P-256 server certificate
//! made at run time, and a real TLS server (rustls through tokio-rustls) that terminates TLS
//! with ALPN `h2` and `http/1.1` and relays the plaintext to a cleartext server chosen by the
//! protocol the client negotiated, counting what each handshake agreed on.

#![allow(dead_code)] // each test file uses its own part of this

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// The name in the server certificate (with 127.0.0.1).
pub const SERVER_NAME: &str = "ringway.test";

/// A CA and a server certificate it signed.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The CA as PEM, for `--ca-file`.
    pub ca_pem: String,
}

impl Pki {
    /// A CA and an ECDSA P-256 leaf for `names`.
    pub fn new(names: &[&str]) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringway-load test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_pem = ca.pem();
        let ca_der = ca.der().clone();
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = leaf_params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca: ca_der.clone(),
            chain: vec![leaf.der().clone(), ca_der],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            ca_pem,
        }
    }

    /// The usual test PKI: a certificate for [`SERVER_NAME`] and 127.0.0.1.
    pub fn standard() -> Pki {
        Pki::new(&[SERVER_NAME, "127.0.0.1"])
    }

    /// Writes the CA's PEM to a fresh file and returns its path.
    pub fn write_ca(&self, name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("ringway-load-{name}-{}-ca.pem", std::process::id()));
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

/// What the relay saw, for the tests to check.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub handshakes: u64,
    pub resumed: u64,
    /// ALPN protocol of each handshake (`-` for none).
    pub alpn: Vec<String>,
    pub sni: Vec<String>,
}

/// A TLS server on 127.0.0.1 relaying `h2` connections to `h2_upstream` and all others to
/// `http1_upstream`.
pub struct TlsRelay {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

impl TlsRelay {
    /// Offers `alpn` (most preferred first) with the certificate of `pki`.
    pub fn start(
        pki: &Pki,
        alpn: &[&[u8]],
        http1_upstream: Option<SocketAddr>,
        h2_upstream: Option<SocketAddr>,
    ) -> TlsRelay {
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
        .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((socket, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let record = record.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        let (_, conn) = tls.get_ref();
                        let alpn = conn.alpn_protocol().map(|p| p.to_vec());
                        {
                            let mut seen = record.lock().unwrap();
                            seen.handshakes += 1;
                            seen.resumed += u64::from(
                                conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                            );
                            seen.alpn.push(
                                alpn.as_deref()
                                    .map_or("-".into(), |p| String::from_utf8_lossy(p).into()),
                            );
                            seen.sni.push(conn.server_name().unwrap_or("-").to_owned());
                        }
                        let upstream = match alpn.as_deref() {
                            Some(b"h2") => h2_upstream,
                            _ => http1_upstream,
                        };
                        let Some(upstream) = upstream else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        TlsRelay { addr, seen }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

/// The request message every call of the generator sends by default: 16 bytes, `i % 251`.
pub fn expected_message(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i % 251) as u8).collect()
}

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A reply as a tiny server makes it: status, headers, body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The reply to one request, by protocol (told by the content type). A Connect request is
/// checked as the protocol defines it (`application/proto`, `connect-protocol-version: 1`, the
/// bare 16-byte message, no gRPC headers); a wrong one gets a Connect `invalid_argument`
/// error, so a generator that sends the wrong thing cannot pass. `x-misbehave` picks a Connect
/// failure: `unavailable` (503 with the JSON error), `not-json` (502, text), `wrong-type` (200
/// with a gRPC-Web content type).
pub fn reply(header: &dyn Fn(&str) -> Option<String>, body: &[u8], pod: &str) -> Reply {
    let content_type = header("content-type").unwrap_or_default();
    if content_type.starts_with("application/grpc-web") {
        return Reply {
            status: 200,
            headers: vec![
                ("content-type", "application/grpc-web+proto".into()),
                ("x-backend", pod.into()),
            ],
            body: [
                frame(0, b"0123456789abcdef"),
                frame(0x80, b"grpc-status:0\r\n"),
            ]
            .concat(),
        };
    }
    let connect_error = |status: u16, code: &str, message: &str| Reply {
        status,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-backend", pod.into()),
        ],
        body: format!(r#"{{"code":"{code}","message":"{message}"}}"#).into_bytes(),
    };
    let problems = [
        (content_type != "application/proto", "content type"),
        (
            header("connect-protocol-version").as_deref() != Some("1"),
            "protocol version",
        ),
        (body != expected_message(16).as_slice(), "body"),
        (
            header("x-grpc-web").is_some() || header("te").is_some(),
            "gRPC headers",
        ),
    ];
    if let Some((_, what)) = problems.iter().find(|(bad, _)| *bad) {
        return connect_error(400, "invalid_argument", &format!("bad {what}"));
    }
    match header("x-misbehave").unwrap_or_default().as_str() {
        "unavailable" => connect_error(503, "unavailable", "down"),
        "not-json" => Reply {
            status: 502,
            headers: vec![("content-type", "text/plain".into())],
            body: b"bad gateway".to_vec(),
        },
        "wrong-type" => Reply {
            status: 200,
            headers: vec![("content-type", "application/grpc-web+proto".into())],
            body: b"\x0a\x01x".to_vec(),
        },
        _ => Reply {
            status: 200,
            headers: vec![
                ("content-type", "application/proto".into()),
                ("x-backend", pod.into()),
            ],
            // A protobuf message: field 1, 16 bytes.
            body: [&[0x0a, 0x10][..], b"0123456789abcdef"].concat(),
        },
    }
}

/// An HTTP/1.1 keep-alive server answering with [`reply`] from pod `pod-1`, on std threads.
pub fn http1_server() -> SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.trim_end().split_once(':') {
                            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                        }
                    }
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.clone())
                    };
                    let length: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = reply(&header, &body, "pod-1");
                    let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
                    for (name, value) in &reply.headers {
                        out.push_str(&format!("{name}: {value}\r\n"));
                    }
                    out.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
                    let mut bytes = out.into_bytes();
                    bytes.extend_from_slice(&reply.body);
                    if writer.write_all(&bytes).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An HTTP/2 server (h2c, prior knowledge) answering with [`reply`] from pod `pod-h2`.
pub fn h2_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(h2_connection(socket));
            }
        });
    });
    addr
}

async fn h2_connection(socket: tokio::net::TcpStream) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        tokio::spawn(async move {
            let (parts, mut body) = request.into_parts();
            let mut received = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                received.extend_from_slice(&chunk);
            }
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let reply = reply(&header, &received, "pod-h2");
            let mut response = http::Response::builder().status(reply.status);
            for (name, value) in &reply.headers {
                response = response.header(*name, value.as_str());
            }
            let Ok(response) = response.body(()) else {
                return;
            };
            if let Ok(mut stream) = respond.send_response(response, false) {
                let _ = stream.send_data(reply.body.into(), true);
            }
        });
    }
}
