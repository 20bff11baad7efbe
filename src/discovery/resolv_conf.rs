//! `/etc/resolv.conf` as glibc reads it, and the candidate names glibc's search rules derive from
//! a host name.
//!
//! A pod's DNS behaviour is defined by what its libc does with the file the kubelet writes, so
//! this follows glibc's `res_init` and `res_search` rather than inventing rules: keywords at the
//! start of a line, `#`/`;` comment lines, at most three nameservers, `domain` and `search`
//! replacing each other (the last wins), `options` clamped to glibc's own maxima. Sans-IO: it takes
//! the file's bytes (or the `RES_OPTIONS` text) and returns values; reading the file is the
//! resolver's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// glibc's `MAXNS`: later `nameserver` lines are ignored.
pub const NAMESERVERS_MAX: usize = 3;
/// glibc's historical `MAXDNSRCH`: later search domains are ignored.
pub const SEARCH_DOMAINS_MAX: usize = 6;
/// glibc's historical search-list buffer: each domain costs its length plus one separator.
pub const SEARCH_CHARS_MAX: usize = 256;
/// glibc's `RES_MAXNDOTS`.
pub const NDOTS_MAX: u8 = 15;
/// glibc's `RES_MAXRETRANS`, in seconds.
pub const TIMEOUT_S_MAX: u32 = 30;
/// glibc's `RES_MAXRETRY`.
pub const ATTEMPTS_MAX: u32 = 5;
/// Bytes of the file that are read; the rest is ignored. Real files are a few hundred bytes, so
/// this only bounds the cost of a hostile or corrupt file.
pub const FILE_BYTES_MAX: usize = 64 * 1024;
/// The port of every `nameserver` line (the file has no syntax for another).
pub const DNS_PORT: u16 = 53;
/// Longest domain name in presentation form without the trailing dot (RFC 1035's 255 wire
/// bytes).
pub const NAME_CHARS_MAX: usize = 253;
/// Longest label (RFC 1035).
pub const LABEL_CHARS_MAX: usize = 63;

/// The resolver settings of one `resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// Never empty: glibc queries the loopback address when the file names no server.
    pub nameservers: Vec<SocketAddr>,
    /// Search domains, without trailing dots, in order.
    pub search: Vec<String>,
    /// Names with at least this many dots are tried as-is before the search list.
    pub ndots: u8,
    /// Per-attempt timeout in seconds.
    pub timeout_s: u32,
    /// Rounds over the nameserver list.
    pub attempts: u32,
    /// `options rotate`. Parsed for completeness; discovery always rotates (see `resolver`).
    pub rotate: bool,
}

impl Default for ResolvConf {
    /// glibc's defaults when the file is missing: the local server, no search list, `ndots:1`,
    /// `timeout:5`, `attempts:2`.
    fn default() -> Self {
        ResolvConf {
            nameservers: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT))],
            search: Vec::new(),
            ndots: 1,
            timeout_s: 5,
            attempts: 2,
            rotate: false,
        }
    }
}

impl ResolvConf {
    /// Parse a `resolv.conf`. Never fails: like glibc, lines it does not understand are skipped,
    /// so a hostile or corrupt file yields the defaults rather than an error.
    pub fn parse(bytes: &[u8]) -> ResolvConf {
        let bytes = &bytes[..bytes.len().min(FILE_BYTES_MAX)];
        let mut conf = ResolvConf {
            nameservers: Vec::new(),
            ..ResolvConf::default()
        };
        for line in bytes.split(|b| *b == b'\n') {
            // A line that is not UTF-8 cannot hold a valid keyword, address or domain.
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            conf.parse_line(line);
        }
        if conf.nameservers.is_empty() {
            conf.nameservers = ResolvConf::default().nameservers;
        }
        conf
    }

    fn parse_line(&mut self, line: &str) {
        if line.starts_with(['#', ';']) {
            return;
        }
        if let Some(rest) = keyword(line, "nameserver") {
            let address = tokens(rest).next().and_then(parse_nameserver);
            if let Some(address) = address {
                if self.nameservers.len() < NAMESERVERS_MAX {
                    self.nameservers.push(address);
                }
            }
        } else if let Some(rest) = keyword(line, "domain") {
            // `domain` and `search` replace each other; glibc keeps whichever comes last.
            if let Some(domain) = tokens(rest).next().and_then(normalise_domain) {
                self.search = vec![domain];
            }
        } else if let Some(rest) = keyword(line, "search") {
            self.search = parse_search(rest);
        } else if let Some(rest) = keyword(line, "options") {
            self.apply_options(rest);
        }
    }

    /// Apply `options` tokens, as found after `options` in the file or in `RES_OPTIONS`.
    /// Unknown options (`edns0`, `single-request`, …) and malformed values are ignored.
    pub fn apply_options(&mut self, text: &str) {
        for option in tokens(text) {
            if option == "rotate" {
                self.rotate = true;
            } else if let Some(n) = option_value(option, "ndots:") {
                self.ndots = n.min(u32::from(NDOTS_MAX)) as u8;
            } else if let Some(n) = option_value(option, "timeout:") {
                // glibc would accept 0 and then wait no time at all; one second is the floor.
                self.timeout_s = n.clamp(1, TIMEOUT_S_MAX);
            } else if let Some(n) = option_value(option, "attempts:") {
                self.attempts = n.clamp(1, ATTEMPTS_MAX);
            }
        }
    }

    /// Replace the search list, as glibc does with the `LOCALDOMAIN` environment variable.
    pub fn set_search(&mut self, text: &str) {
        self.search = parse_search(text);
    }
}

/// The rest of `line` after `name` and a space or tab, as glibc's `MATCH` macro requires.
fn keyword<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?;
    rest.starts_with([' ', '\t']).then_some(rest)
}

fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split([' ', '\t']).filter(|t| !t.is_empty())
}

/// `ndots:5` → 5. Only plain decimal digits; an absurdly long number saturates.
fn option_value(option: &str, prefix: &str) -> Option<u32> {
    let digits = option.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<u32>().unwrap_or(u32::MAX))
}

fn parse_search(text: &str) -> Vec<String> {
    let mut search = Vec::new();
    let mut chars = 0;
    for domain in tokens(text).filter_map(normalise_domain) {
        if search.len() == SEARCH_DOMAINS_MAX || chars + domain.len() + 1 > SEARCH_CHARS_MAX {
            break;
        }
        chars += domain.len() + 1;
        search.push(domain);
    }
    search
}

/// A nameserver address: IPv4, or IPv6 with an optional numeric `%scope`. Interface names as
/// scopes (`fe80::1%eth0`) need an `if_nametoindex` call, which a parser does not make; such lines
/// are skipped, and link-local DNS servers do not occur in pods.
fn parse_nameserver(token: &str) -> Option<SocketAddr> {
    if let Ok(ip) = token.parse::<Ipv4Addr>() {
        return Some(SocketAddr::from((ip, DNS_PORT)));
    }
    let (ip, scope) = match token.split_once('%') {
        Some((ip, scope)) => (ip, scope.parse::<u32>().ok()?),
        None => (token, 0),
    };
    let ip = ip.parse::<Ipv6Addr>().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope)))
}

/// A search domain without its trailing dot, or `None` for the root or an invalid name.
fn normalise_domain(token: &str) -> Option<String> {
    let domain = token.strip_suffix('.').unwrap_or(token);
    is_valid_name(domain).then(|| domain.to_string())
}

/// A host name or domain in presentation form without a trailing dot: 1 to 253 characters, labels
/// of 1 to 63 letters, digits, `-` or `_` (the underscore appears in SRV-style names).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_CHARS_MAX
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= LABEL_CHARS_MAX
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `text` is a literal IP address, which is never looked up.
pub fn is_ip_literal(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// The fully qualified names (each with a trailing dot) glibc's `res_search` would query for
/// `host`, in order:
/// - a name with a trailing dot is absolute: only itself;
/// - a name with at least `ndots` dots is tried as-is first, then with each search domain;
/// - otherwise with each search domain first, then as-is.
///
/// Candidates longer than a domain name may be are dropped, as are repeats.
pub fn candidates(host: &str, conf: &ResolvConf) -> Vec<String> {
    if let Some(absolute) = host.strip_suffix('.') {
        return if is_valid_name(absolute) {
            vec![host.to_string()]
        } else {
            Vec::new()
        };
    }
    let as_is = format!("{host}.");
    let searched = conf.search.iter().map(|domain| format!("{host}.{domain}."));
    let dots = host.bytes().filter(|b| *b == b'.').count();
    let ordered: Vec<String> = if dots >= usize::from(conf.ndots) {
        std::iter::once(as_is).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(as_is)).collect()
    };
    let mut out: Vec<String> = Vec::with_capacity(ordered.len());
    for name in ordered {
        let fits = is_valid_name(&name[..name.len() - 1]);
        if fits && !out.iter().any(|seen| seen.eq_ignore_ascii_case(&name)) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBERNETES: &str = "search default.svc.cluster.local svc.cluster.local cluster.local\n\
                              nameserver 10.96.0.10\n\
                              options ndots:5\n";

    fn ns(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn kubernetes_file() {
        let conf = ResolvConf::parse(KUBERNETES.as_bytes());
        assert_eq!(conf.nameservers, vec![ns("10.96.0.10:53")]);
        assert_eq!(
            conf.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(conf.ndots, 5);
        assert_eq!((conf.timeout_s, conf.attempts, conf.rotate), (5, 2, false));
    }

    #[test]
    fn empty_or_missing_means_glibc_defaults() {
        assert_eq!(ResolvConf::parse(b""), ResolvConf::default());
        assert_eq!(
            ResolvConf::parse(b"# only a comment\n").nameservers,
            [ns("127.0.0.1:53")]
        );
    }

    #[test]
    fn nameservers_v4_v6_scope_and_max_three() {
        let conf = ResolvConf::parse(
            b"nameserver 10.0.0.1\nnameserver\t2001:db8::53 # trailing words ignored\n\
              nameserver fe80::1%eth0\nnameserver fe80::1%2\nnameserver 10.0.0.4\n",
        );
        assert_eq!(
            conf.nameservers,
            [
                ns("10.0.0.1:53"),
                ns("[2001:db8::53]:53"),
                ns("[fe80::1%2]:53")
            ]
        );
    }

    #[test]
    fn bad_nameserver_lines_are_skipped() {
        let conf = ResolvConf::parse(
            b"nameserver 10.0.0.256\nnameserver dns.example\nnameserver\nnameserver \n\
              nameserver 10.0.0.1:5353\nnameserver [::1]\nnameservers 10.0.0.9\n\
              \x20nameserver 10.0.0.8\n\tnameserver 10.0.0.7\nnameserver 10.0.0.2\n",
        );
        assert_eq!(conf.nameservers, [ns("10.0.0.2:53")]);
    }

    #[test]
    fn comments_and_keyword_boundaries() {
        let conf = ResolvConf::parse(
            b"#nameserver 10.0.0.1\n;nameserver 10.0.0.2\nsearchx a.example\n\
              search\tb.example\r\nnameserver 10.0.0.3\r\n",
        );
        assert_eq!(conf.nameservers, [ns("10.0.0.3:53")]);
        assert_eq!(conf.search, ["b.example"]);
    }

    #[test]
    fn domain_and_search_last_one_wins() {
        let conf = ResolvConf::parse(b"search a.example b.example\ndomain c.example.\n");
        assert_eq!(conf.search, ["c.example"]);
        let conf = ResolvConf::parse(b"domain c.example\nsearch a.example b.example.\n");
        assert_eq!(conf.search, ["a.example", "b.example"]);
        // An empty `domain` line does not clear the list.
        let conf = ResolvConf::parse(b"search a.example\ndomain \n");
        assert_eq!(conf.search, ["a.example"]);
    }

    #[test]
    fn search_limits_six_domains_and_256_chars() {
        let conf = ResolvConf::parse(b"search a b c d e f g h\n");
        assert_eq!(conf.search, ["a", "b", "c", "d", "e", "f"]);
        let long = "x".repeat(63);
        let line = format!("search {long}.{long} {long}.{long} {long}\n");
        let conf = ResolvConf::parse(line.as_bytes());
        // 128 + 128 = 256 is full, so the third domain does not fit.
        assert_eq!(conf.search.len(), 2);
    }

    #[test]
    fn search_skips_invalid_domains() {
        let long_label = "y".repeat(64);
        let line =
            format!("search ok.example . bad..example {long_label}.example caf\u{e9}.example #\n");
        assert_eq!(ResolvConf::parse(line.as_bytes()).search, ["ok.example"]);
    }

    #[test]
    fn options_values_and_clamps() {
        let conf = ResolvConf::parse(b"options ndots:99 timeout:0 attempts:100 rotate edns0\n");
        assert_eq!(conf.ndots, NDOTS_MAX);
        assert_eq!(conf.timeout_s, 1);
        assert_eq!(conf.attempts, ATTEMPTS_MAX);
        assert!(conf.rotate);
        let conf = ResolvConf::parse(
            b"options ndots:-1 ndots: ndots:x timeout:99999999999999999999 attempts:3\n",
        );
        assert_eq!(conf.ndots, 1);
        assert_eq!(conf.timeout_s, TIMEOUT_S_MAX);
        assert_eq!(conf.attempts, 3);
        let mut conf = ResolvConf::default();
        conf.apply_options("ndots:0 timeout:2");
        assert_eq!((conf.ndots, conf.timeout_s), (0, 2));
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![0xff, 0xfe, b'\n', 0],
            b"nameserver \xff\xfe\nsearch \xc3\n".to_vec(),
            b"options ndots:\xff\n\n\n\r\r\r".to_vec(),
            vec![b'\n'; 100_000],
            b"search "
                .iter()
                .chain([b'a'; 200_000].iter())
                .copied()
                .collect(),
        ];
        inputs.push(b"nameserver 10.0.0.1\n".repeat(10_000));
        for input in inputs {
            let conf = ResolvConf::parse(&input);
            assert!(!conf.nameservers.is_empty());
            assert!(conf.nameservers.len() <= NAMESERVERS_MAX);
            assert!(conf.search.len() <= SEARCH_DOMAINS_MAX);
        }
    }

    #[test]
    fn a_file_beyond_the_byte_limit_is_cut() {
        let mut text = vec![b'#'; FILE_BYTES_MAX];
        text.extend_from_slice(b"\nnameserver 10.0.0.1\n");
        assert_eq!(ResolvConf::parse(&text).nameservers, [ns("127.0.0.1:53")]);
    }

    fn kube() -> ResolvConf {
        ResolvConf::parse(KUBERNETES.as_bytes())
    }

    #[test]
    fn candidates_kubernetes_short_name_searches_first() {
        assert_eq!(
            candidates("user-service", &kube()),
            [
                "user-service.default.svc.cluster.local.",
                "user-service.svc.cluster.local.",
                "user-service.cluster.local.",
                "user-service.",
            ]
        );
        // Four dots is still below ndots:5, so even a full service name searches first.
        assert_eq!(
            candidates("user-service.prod.svc.cluster.local", &kube())[0],
            "user-service.prod.svc.cluster.local.default.svc.cluster.local."
        );
    }

    #[test]
    fn candidates_with_enough_dots_go_as_is_first() {
        let mut conf = kube();
        conf.ndots = 1;
        assert_eq!(
            candidates("user-service.prod", &conf),
            [
                "user-service.prod.",
                "user-service.prod.default.svc.cluster.local.",
                "user-service.prod.svc.cluster.local.",
                "user-service.prod.cluster.local.",
            ]
        );
        conf.ndots = 0;
        assert_eq!(candidates("api", &conf)[0], "api.");
    }

    #[test]
    fn candidates_absolute_name_is_only_itself() {
        assert_eq!(
            candidates("user-service.prod.svc.cluster.local.", &kube()),
            ["user-service.prod.svc.cluster.local."]
        );
        assert!(candidates("bad..name.", &kube()).is_empty());
    }

    #[test]
    fn candidates_without_search_list_and_too_long_and_repeats() {
        assert_eq!(candidates("api", &ResolvConf::default()), ["api."]);
        let mut conf = ResolvConf::default();
        let label = "z".repeat(63);
        let long_domain = format!("{label}.{label}.{label}");
        conf.search = vec![long_domain, "example".into(), "EXAMPLE".into()];
        let host = format!("{label}.a");
        // host + long_domain is 258 characters: dropped; the second `example` repeats the first.
        assert_eq!(
            candidates(&host, &conf),
            [format!("{host}."), format!("{host}.example.")]
        );
    }

    #[test]
    fn name_validation() {
        assert!(is_valid_name("user-service"));
        assert!(is_valid_name("_grpc._tcp.example"));
        assert!(is_valid_name("a.".repeat(126).trim_end_matches('.')));
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            ".a",
            "a b",
            "a/b",
            "a:b",
            "ü.example",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(&"a.".repeat(127)));
        assert!(is_ip_literal("::1") && is_ip_literal("10.0.0.1") && !is_ip_literal("10.0.0"));
    }
}
