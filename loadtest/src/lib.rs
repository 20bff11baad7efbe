//! ringway-load: the test backend pods, DNS server and load generator for ringway.

pub mod backend;
