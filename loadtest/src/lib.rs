//! ringway-load: the test backend pods, DNS server and load generator for ringway.
//!
//! ringway's integration tests start [`backend::Backend`]s and a [`dns::DnsServer`]
//! in-process; the `ringway-load` binary runs the same backend as a standalone pod
//! (`ringway-load backend …`), the same DNS server (`ringway-load dns …`) and the load
//! generator (`ringway-load run …`, library API in [`load`]). [`clients`] launches the real
//! gRPC client programs the tests use.

pub mod backend;
pub mod checks;
pub mod clients;
pub mod demo;
pub mod dns;
pub mod load;
pub mod pods;
pub mod proxy;
pub mod scenario;
pub mod stop;
