//! `resolv.conf` parsing and candidate names: never panic, always within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::discovery::resolv_conf::{self, ResolvConf};

fuzz_target!(|data: &[u8]| {
    let conf = ResolvConf::parse(data);
    assert!(!conf.nameservers.is_empty() && conf.nameservers.len() <= resolv_conf::NAMESERVERS_MAX);
    assert!(conf.search.len() <= resolv_conf::SEARCH_DOMAINS_MAX);
    assert!(conf.ndots <= resolv_conf::NDOTS_MAX);
    // The first line doubles as a host name to expand.
    if let Some(host) = data.split(|b| *b == b'\n').next() {
        if let Ok(host) = std::str::from_utf8(host) {
            for name in resolv_conf::candidates(host, &conf) {
                assert!(name.ends_with('.') && name.len() <= resolv_conf::NAME_CHARS_MAX + 1);
            }
        }
    }
});
