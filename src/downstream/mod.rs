//! Downstream connections: the client side of the proxy. A worker hands every accepted
//! connection to [`serve`]; each protocol's connection loop parses requests, answers what it can
//! locally, and runs calls through [`crate::call`] with an exchange of its own as the call's
//! `Downstream`.
//!
//! - `http1.rs`: HTTP/1.1 with gRPC-Web (`http1_exchange.rs` is the call's side of it). Every
//!   cleartext connection starts here; one that opens with the HTTP/2 preface is handed over.
//! - `http2.rs`: HTTP/2 (h2c with prior knowledge, or ALPN `h2` over TLS), gRPC-Web and native
//!   gRPC on the same streams (`http2_exchange.rs`).
//!
//! TLS connections ([`serve_tls`]) go through the handshake first ([`crate::tls`]), then to
//! the same two loops over the TLS stream.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use monoio::net::TcpStream;
use tracing::debug;

use crate::context::{ActiveConnection, WorkerContext};
use crate::tls::{self, Acceptor, Alpn};
use crate::transport::Transport;

mod connect_side;
mod http1;
mod http1_exchange;
mod http2;
mod http2_exchange;

/// Serve one accepted cleartext connection until it closes: HTTP/1.1, or HTTP/2 when it begins
/// with the connection preface (the same port serves both, like Envoy's `codec_type: auto`).
pub async fn serve<S: Transport + Unpin + 'static>(
    stream: S,
    peer: SocketAddr,
    context: Rc<WorkerContext>,
    active: ActiveConnection,
) {
    if let Some((stream, received)) = http1::serve(stream, peer, &context).await {
        // Boxed, like every path that is not the idle HTTP/1.1 loop: a task's future is as
        // large as its largest state, and each connection is one task, so an HTTP/2 server
        // inline here would cost every HTTP/1.1 connection its size (KiBs) while it sits idle.
        Box::pin(http2::serve(stream, received, peer, context)).await;
    }
    drop(active);
}

/// Serve one accepted TLS connection: the handshake (under `--tls-handshake-timeout-ms`, every
/// outcome counted), then HTTP/2 when ALPN chose `h2`, HTTP/1.1 otherwise (a client that offered
/// no ALPN included).
pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    context: Rc<WorkerContext>,
    acceptor: Rc<Acceptor>,
    active: ActiveConnection,
) {
    let accepted = match Box::pin(tls::accept(stream, &acceptor, &context.stats.tls)).await {
        Ok(accepted) => accepted,
        Err(error) => {
            debug!(%peer, %error, "TLS connection not accepted");
            return;
        }
    };
    match accepted.alpn {
        Alpn::H2 => Box::pin(http2::serve(accepted.stream, Bytes::new(), peer, context)).await,
        Alpn::Http1 => {
            // A client that offered no ALPN may still open with the HTTP/2 preface (prior
            // knowledge); it is served as HTTP/2.
            if let Some((stream, received)) = http1::serve(accepted.stream, peer, &context).await {
                Box::pin(http2::serve(stream, received, peer, context)).await;
            }
        }
    }
    drop(active);
}
