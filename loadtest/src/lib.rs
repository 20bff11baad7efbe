//! ringway-load: the test backend pods, DNS server and load generator for ringway.
//!
//! ringway's integration tests start [`backend::Backend`]s in-process; the `ringway-load`
//! binary runs the same backend as a standalone pod (`ringway-load backend …`).

pub mod backend;
