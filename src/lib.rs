//! ringway: a thread-per-core gRPC-Web load balancer on io_uring.
//!
//! The request path, in order: [`worker`] accepts → [`connection`] reads and parses HTTP/1.1
//! ([`http1`]) and translates gRPC-Web ([`grpc_web`], [`cors`]) → [`endpoints`] picks an endpoint →
//! [`upstream`] makes the HTTP/2 call → [`connection`] writes the answer back.

pub mod access_log;
pub mod admin;
pub mod coarse_timer;
pub mod config;
pub mod connection;
pub mod cors;
pub mod discovery;
pub mod endpoints;
pub mod error;
pub mod grpc_web;
pub mod health;
pub mod http1;
pub mod refused;
pub mod stats;
pub mod upstream;
pub mod worker;
