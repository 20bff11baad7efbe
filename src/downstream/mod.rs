//! Downstream connections: the client side of the proxy. A worker hands every accepted
//! connection to [`serve`]; each protocol's connection loop parses requests, answers what it can
//! locally, and runs calls through [`crate::call`] with an exchange of its own as the call's
//! `Downstream`.
//!
//! - `http1.rs`: HTTP/1.1 with gRPC-Web (`http1_exchange.rs` is the call's side of it).

mod http1;
mod http1_exchange;

pub use http1::serve;
