//! ringway: a thread-per-core gRPC-Web load balancer on io_uring.
//!
//! The request path, in order: [`server`] starts one [`worker`] per core, which accepts →
//! [`downstream`] reads and parses the request ([`http1`]) and translates it ([`grpc_web`],
//! [`cors`], [`translate`]) → [`call`] picks an endpoint ([`endpoints`]), makes the HTTP/2 call
//! ([`upstream`]) with its retries ([`retry`]), and hands the response back to [`downstream`],
//! which writes it. What a worker's connections share is in [`context`]; errors and their statuses in
//! [`error`] and [`status`]. The control plane is [`discovery`] and [`health`]; operations are
//! [`admin`], [`stats`] and [`access_log`].

pub mod access_log;
pub mod admin;
pub mod call;
pub mod coarse_timer;
pub mod config;
pub mod connect;
pub mod context;
pub mod cors;
pub mod discovery;
pub mod downstream;
pub mod endpoints;
pub mod error;
pub mod field;
pub mod frame_watch;
pub mod grpc_web;
pub mod health;
pub mod http1;
pub mod log;
pub mod refused;
pub mod retry;
pub mod server;
pub mod stats;
pub mod status;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod tls;
pub mod translate;
pub mod transport;
pub mod upstream;
pub mod worker;
