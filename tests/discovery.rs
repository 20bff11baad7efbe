//! DNS discovery against a real DNS responder on loopback.
//!
//! The responder below is deliberately small: UDP and TCP on one port, answers scripted per name
//! and type (addresses, NXDOMAIN, NODATA, SERVFAIL, silence, truncation, spoof-like replies), and
//! a log of every query with its transport, source address and id. `ringway_load::dns` (the
//! project's authoritative test server) will replace it. Timings are short so the tests run in
//! seconds; every wait has a generous upper bound and fails with a message instead of hanging,
//! and no test asserts how fast anything is.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ringway::discovery::{self, DiscoveryConfig, DiscoveryHandle, DnsFamily, UpstreamTarget};
use ringway::endpoints::EndpointDirectory;

/// What the responder does for one name and type.
#[derive(Debug, Clone)]
enum Script {
    Addresses(Vec<IpAddr>),
    NxDomain,
    NoData,
    ServFail,
    Silence,
    /// TC over UDP; the addresses over TCP.
    Truncate(Vec<IpAddr>),
    /// First a reply with the wrong id, then the right one.
    WrongIdFirst(Vec<IpAddr>),
    /// The right reply, but sent from another port (as an off-path spoofer would).
    FromOtherPort(Vec<IpAddr>),
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    record_type: RecordType,
    tcp: bool,
    source: SocketAddr,
    id: u16,
}

#[derive(Default)]
struct Shared {
    script: Mutex<HashMap<(String, RecordType), Script>>,
    seen: Mutex<Vec<Seen>>,
    silent: AtomicBool,
    stop: AtomicBool,
}

/// A scripted DNS responder on 127.0.0.1, UDP and TCP on the same port.
struct Responder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Responder {
    fn start() -> Responder {
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a loopback port free for both UDP and TCP");
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        let threads = vec![
            std::thread::spawn({
                let shared = shared.clone();
                move || serve_udp(&udp, &shared)
            }),
            std::thread::spawn({
                let shared = shared.clone();
                move || serve_tcp(&tcp, &shared)
            }),
        ];
        Responder {
            addr,
            shared,
            threads,
        }
    }

    fn set(&self, name: &str, record_type: RecordType, script: Script) {
        let key = (name.to_ascii_lowercase(), record_type);
        self.shared.script.lock().unwrap().insert(key, script);
    }

    fn set_a(&self, name: &str, ips: &[&str]) {
        self.set(name, RecordType::A, Script::Addresses(ips_of(ips)));
    }

    /// Answer nothing at all, as a dead server behind a firewall would.
    fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn ips_of(ips: &[&str]) -> Vec<IpAddr> {
    ips.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn serve_udp(socket: &UdpSocket, shared: &Shared) {
    let mut buf = vec![0u8; 65_535];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((len, source)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some((query, script)) = accept_query(&buf[..len], source, false, shared) else {
            continue;
        };
        match script {
            Script::Silence => {}
            Script::Truncate(_) => {
                let mut reply = reply_to(&query, &Script::NoData);
                reply.metadata.truncation = true;
                let _ = socket.send_to(&reply.to_vec().unwrap(), source);
            }
            Script::WrongIdFirst(ips) => {
                let mut wrong = reply_to(
                    &query,
                    &Script::Addresses(vec!["192.0.2.66".parse().unwrap()]),
                );
                wrong.metadata.id = query.metadata.id.wrapping_add(1);
                let _ = socket.send_to(&wrong.to_vec().unwrap(), source);
                let right = reply_to(&query, &Script::Addresses(ips));
                let _ = socket.send_to(&right.to_vec().unwrap(), source);
            }
            Script::FromOtherPort(ips) => {
                let other = UdpSocket::bind("127.0.0.1:0").unwrap();
                let reply = reply_to(&query, &Script::Addresses(ips));
                let _ = other.send_to(&reply.to_vec().unwrap(), source);
            }
            script => {
                let _ = socket.send_to(&reply_to(&query, &script).to_vec().unwrap(), source);
            }
        }
    }
}

fn serve_tcp(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((mut stream, source)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = answer_tcp(&mut stream, source, shared);
    }
}

fn answer_tcp(stream: &mut TcpStream, source: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix)?;
    let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut query)?;
    let Some((query, script)) = accept_query(&query, source, true, shared) else {
        return Ok(());
    };
    let script = match script {
        Script::Truncate(ips) | Script::WrongIdFirst(ips) | Script::FromOtherPort(ips) => {
            Script::Addresses(ips)
        }
        Script::Silence => return Ok(()),
        other => other,
    };
    let reply = reply_to(&query, &script).to_vec().unwrap();
    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&reply);
    stream.write_all(&framed)
}

/// Decode and log a query; `None` if it is not one or the responder is silent.
fn accept_query(
    bytes: &[u8],
    source: SocketAddr,
    tcp: bool,
    shared: &Shared,
) -> Option<(Message, Script)> {
    let query = Message::from_vec(bytes).ok()?;
    let question = query.queries.first()?;
    let name = question.name().to_ascii().to_ascii_lowercase();
    let record_type = question.query_type();
    shared.seen.lock().unwrap().push(Seen {
        name: name.clone(),
        record_type,
        tcp,
        source,
        id: query.metadata.id,
    });
    if shared.silent.load(Ordering::SeqCst) {
        return None;
    }
    let script = shared.script.lock().unwrap();
    let found = script.get(&(name.clone(), record_type)).cloned();
    // A name scripted for another type exists: NODATA. A name never scripted: NXDOMAIN.
    let script = found.unwrap_or_else(|| {
        if script.keys().any(|(n, _)| *n == name) {
            Script::NoData
        } else {
            Script::NxDomain
        }
    });
    Some((query, script))
}

fn reply_to(query: &Message, script: &Script) -> Message {
    let question = &query.queries[0];
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.add_query(question.clone());
    match script {
        Script::Addresses(ips) => {
            for ip in ips {
                let data = match ip {
                    IpAddr::V4(v4) if question.query_type() == RecordType::A => RData::A(A(*v4)),
                    IpAddr::V6(v6) if question.query_type() == RecordType::AAAA => {
                        RData::AAAA(AAAA(*v6))
                    }
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(question.name().clone(), 5, data));
            }
        }
        Script::NxDomain | Script::NoData => {
            if matches!(script, Script::NxDomain) {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            let zone = Name::from_ascii("test.").unwrap();
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, 5);
            reply.add_authority(Record::from_rdata(zone, 5, RData::SOA(soa)));
        }
        _ => reply.metadata.response_code = ResponseCode::ServFail,
    }
    reply
}

// --- helpers ---

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A resolv.conf for one test, removed on drop.
struct ResolvConfFile(PathBuf);

impl ResolvConfFile {
    fn new(test: &str, text: &str) -> ResolvConfFile {
        let path = std::env::temp_dir().join(format!(
            "ringway-discovery-{test}-{}.conf",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        ResolvConfFile(path)
    }
}

impl Drop for ResolvConfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fast settings: 50 ms refresh, no jitter, one 300 ms attempt per server, A records only.
fn config(
    servers: &[SocketAddr],
    targets: &[&str],
    resolv_conf: &ResolvConfFile,
) -> DiscoveryConfig {
    DiscoveryConfig {
        targets: targets.iter().map(|t| t.parse().unwrap()).collect(),
        dns_servers: servers.to_vec(),
        family: DnsFamily::V4,
        refresh_interval: Duration::from_millis(50),
        jitter: 0.0,
        attempt_timeout: Some(Duration::from_millis(300)),
        attempts: Some(1),
        resolve_timeout: Duration::from_secs(3),
        startup_timeout: Duration::from_secs(5),
        stale_max: Duration::from_secs(60),
        resolv_conf: resolv_conf.0.clone(),
        ..DiscoveryConfig::default()
    }
}

fn start(config: DiscoveryConfig) -> (Arc<EndpointDirectory>, DiscoveryHandle) {
    init_tracing();
    let directory = Arc::new(EndpointDirectory::new(Vec::new()));
    let handle = discovery::spawn(config, directory.clone()).expect("discovery starts");
    (directory, handle)
}

fn endpoints(directory: &EndpointDirectory) -> Vec<String> {
    directory
        .snapshot()
        .endpoints
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// Poll `check` until it holds; fail the test after 10 s (a hang, not a speed check).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_endpoints(directory: &EndpointDirectory, expected: &[&str]) {
    wait_until(&format!("endpoints are {expected:?}"), || {
        endpoints(directory) == expected
    });
}

const EMPTY_RESOLV_CONF: &str = "options ndots:1\n";

// --- tests ---

#[test]
fn name_resolves_before_spawn_returns_and_follows_changes() {
    let dns = Responder::start();
    dns.set_a("api.test.", &["10.0.0.2", "10.0.0.1"]);
    let conf = ResolvConfFile::new("changes", EMPTY_RESOLV_CONF);
    let (directory, handle) = start(config(
        &[dns.addr],
        &["api.test.:9000", "127.0.0.1:7000"],
        &conf,
    ));
    // Resolved before spawn returned: no window with an empty set.
    assert_eq!(
        endpoints(&directory),
        ["10.0.0.1:9000", "10.0.0.2:9000", "127.0.0.1:7000"]
    );
    let generation = directory.snapshot().generation;

    // Scale-up and scale-down are picked up on the next refresh.
    dns.set_a("api.test.", &["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    wait_for_endpoints(
        &directory,
        &[
            "10.0.0.2:9000",
            "10.0.0.3:9000",
            "10.0.0.4:9000",
            "127.0.0.1:7000",
        ],
    );
    dns.set_a("api.test.", &["10.0.0.4"]);
    wait_for_endpoints(&directory, &["10.0.0.4:9000", "127.0.0.1:7000"]);
    assert_eq!(directory.snapshot().generation, generation + 2);

    // The status snapshot is stored right after the publish.
    wait_until("the status shows the last publish", || {
        handle.status().endpoints_generation == generation + 2
    });
    let status = handle.status();
    let api = &status.targets[0];
    assert_eq!(
        api.target,
        "api.test.:9000".parse::<UpstreamTarget>().unwrap()
    );
    assert_eq!(api.addresses, ["10.0.0.4:9000".parse().unwrap()]);
    assert_eq!(api.generation, 3);
    assert_eq!(api.resolved_name.as_deref(), Some("api.test."));
    assert!(api.last_success.is_some());
    assert_eq!((api.consecutive_failures, api.stale), (0, false));
    assert_eq!(
        status.targets[1].addresses,
        ["127.0.0.1:7000".parse().unwrap()]
    );
    handle.shutdown();
}

#[test]
fn each_query_has_a_fresh_source_port_and_random_id() {
    let dns = Responder::start();
    dns.set_a("api.test.", &["10.0.0.1"]);
    let conf = ResolvConfFile::new("ports", EMPTY_RESOLV_CONF);
    let (_directory, handle) = start(config(&[dns.addr], &["api.test.:9000"], &conf));
    wait_until("ten queries were made", || dns.seen().len() >= 10);
    drop(handle);
    let seen = dns.seen();
    let ports: HashSet<u16> = seen.iter().map(|s| s.source.port()).collect();
    let ids: HashSet<u16> = seen.iter().map(|s| s.id).collect();
    // The kernel may hand out the same ephemeral port twice by chance; more would mean reuse.
    assert!(
        ports.len() >= seen.len() - 1,
        "ports {ports:?} for {} queries",
        seen.len()
    );
    assert!(
        ids.len() >= seen.len() - 1,
        "ids {ids:?} for {} queries",
        seen.len()
    );
    assert!(seen.iter().all(|s| !s.tcp && s.source.ip().is_loopback()));
}

#[test]
fn rotation_skips_a_silent_first_nameserver() {
    let silent = Responder::start();
    silent.set_silent(true);
    let good = Responder::start();
    good.set_a("api.test.", &["10.0.0.1"]);
    let conf = ResolvConfFile::new("rotation", EMPTY_RESOLV_CONF);
    let mut config = config(&[silent.addr, good.addr], &["api.test.:9000"], &conf);
    // Long enough that a stall on the silent server would show as a failure: one attempt per
    // server, and the whole resolve may only take two attempt timeouts.
    config.attempt_timeout = Some(Duration::from_millis(200));
    config.resolve_timeout = Duration::from_millis(450);
    let (directory, handle) = start(config);
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000"]);
    wait_until("twelve refreshes answered", || good.seen().len() >= 12);
    let status = handle.status();
    drop(handle);
    let (to_silent, to_good) = (silent.seen().len(), good.seen().len());
    // The silent server was tried (rotation reached it), then went to the back of the order after
    // its timeout: one stall, not one per refresh.
    assert!(to_silent >= 1, "the silent server was never tried");
    assert!(
        to_silent <= 2,
        "{to_silent} queries to the silent server, {to_good} to the good one"
    );
    assert_eq!(status.targets[0].consecutive_failures, 0);
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000"]);
}

#[test]
fn a_refused_port_fails_over_at_once() {
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let good = Responder::start();
    good.set_a("api.test.", &["10.0.0.1"]);
    let conf = ResolvConfFile::new("refused", EMPTY_RESOLV_CONF);
    let mut config = config(&[closed_addr, good.addr], &["api.test.:9000"], &conf);
    config.attempt_timeout = Some(Duration::from_secs(30));
    config.startup_timeout = Duration::from_secs(20);
    let (directory, handle) = start(config);
    // Had the closed port been waited out, the 30 s attempt would outlast the startup wait.
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000"]);
    wait_until("five refreshes answered", || good.seen().len() >= 5);
    assert_eq!(handle.status().targets[0].consecutive_failures, 0);
}

#[test]
fn truncated_answer_is_fetched_over_tcp() {
    let dns = Responder::start();
    dns.set(
        "big.test.",
        RecordType::A,
        Script::Truncate(ips_of(&["10.0.0.1", "10.0.0.2"])),
    );
    let conf = ResolvConfFile::new("tc", EMPTY_RESOLV_CONF);
    let (directory, handle) = start(config(&[dns.addr], &["big.test.:9000"], &conf));
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000", "10.0.0.2:9000"]);
    drop(handle);
    let seen = dns.seen();
    assert!(!seen[0].tcp && seen[1].tcp, "{seen:?}");
    assert_eq!(
        (seen[0].name.as_str(), seen[1].name.as_str()),
        ("big.test.", "big.test.")
    );
}

#[test]
fn replies_with_a_wrong_id_or_from_another_port_are_ignored() {
    let dns = Responder::start();
    dns.set(
        "api.test.",
        RecordType::A,
        Script::WrongIdFirst(ips_of(&["10.0.0.1"])),
    );
    dns.set(
        "spoofed.test.",
        RecordType::A,
        Script::FromOtherPort(ips_of(&["10.0.0.66"])),
    );
    let conf = ResolvConfFile::new("spoof", EMPTY_RESOLV_CONF);
    let (directory, handle) = start(config(
        &[dns.addr],
        &["api.test.:9000", "spoofed.test.:9000"],
        &conf,
    ));
    // The wrong-id reply (192.0.2.66) was skipped and the right one taken; the reply from another
    // port never counted, so the spoofed name only ever failed.
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000"]);
    let status = handle.status();
    let spoofed = &status.targets[1];
    assert!(spoofed.consecutive_failures >= 1);
    let error = spoofed.last_error.as_deref().unwrap();
    assert!(
        error.contains("timed out") && error.contains(&dns.addr.to_string()),
        "{error}"
    );
}

#[test]
fn search_list_and_ndots_decide_the_candidate_order() {
    let dns = Responder::start();
    // `api` has no dot (< ndots:2): search domains first, then as-is.
    dns.set("api.ns1.test.", RecordType::A, Script::NxDomain);
    dns.set("api.ns2.test.", RecordType::A, Script::NoData);
    dns.set_a("api.", &["10.0.0.1"]);
    // `db.x.y` has two dots: as-is first, which answers.
    dns.set_a("db.x.y.", &["10.0.0.2"]);
    dns.set_a("db.x.y.ns1.test.", &["10.0.0.99"]);
    let conf = ResolvConfFile::new(
        "search",
        "nameserver 192.0.2.1\nsearch ns1.test ns2.test\noptions ndots:2\n",
    );
    let (directory, handle) = start(config(&[dns.addr], &["api:9000", "db.x.y:9001"], &conf));
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000", "10.0.0.2:9001"]);
    drop(handle);
    let names: Vec<String> = dns.seen().iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names[..4],
        ["api.ns1.test.", "api.ns2.test.", "api.", "db.x.y."],
        "queries in order: {names:?}"
    );
    assert!(!names.contains(&"db.x.y.ns1.test.".to_string()));
}

#[test]
fn servfail_on_a_candidate_does_not_fall_through_to_the_next() {
    let dns = Responder::start();
    dns.set("svc.ns1.test.", RecordType::A, Script::ServFail);
    // Somebody else's `svc`: must not be taken because the right name failed transiently.
    dns.set_a("svc.", &["192.0.2.99"]);
    let conf = ResolvConfFile::new("servfail", "search ns1.test\noptions ndots:5\n");
    let (directory, handle) = start(config(&[dns.addr], &["svc:9000"], &conf));
    wait_until("two failures", || {
        handle.status().targets[0].consecutive_failures >= 2
    });
    assert!(endpoints(&directory).is_empty());
    let error = handle.status().targets[0].last_error.clone().unwrap();
    assert!(
        error.contains("svc.ns1.test.") && error.contains("Server Failure"),
        "{error}"
    );
    drop(handle);
    assert!(dns.seen().iter().all(|s| s.name == "svc.ns1.test."));
}

#[test]
fn dual_stack_family_all_asks_a_and_aaaa() {
    let dns = Responder::start();
    dns.set_a("api.test.", &["10.0.0.1"]);
    dns.set(
        "api.test.",
        RecordType::AAAA,
        Script::Addresses(ips_of(&["fd00::1"])),
    );
    dns.set_a("v4only.test.", &["10.0.0.2"]);
    let conf = ResolvConfFile::new("dual", EMPTY_RESOLV_CONF);
    let mut config = config(&[dns.addr], &["api.test.:9000", "v4only.test.:9001"], &conf);
    config.family = DnsFamily::All;
    let (directory, handle) = start(config);
    // The v4-only name answers NODATA for AAAA, which is not an error.
    assert_eq!(
        endpoints(&directory),
        ["10.0.0.1:9000", "10.0.0.2:9001", "[fd00::1]:9000"]
    );
    drop(handle);
    let asked: HashSet<(String, RecordType)> = dns
        .seen()
        .into_iter()
        .map(|s| (s.name, s.record_type))
        .collect();
    for name in ["api.test.", "v4only.test."] {
        for record_type in [RecordType::A, RecordType::AAAA] {
            assert!(
                asked.contains(&(name.to_string(), record_type)),
                "{name} {record_type}"
            );
        }
    }
}

#[test]
fn resolver_errors_keep_the_last_set_until_stale_max() {
    let dns = Responder::start();
    dns.set_a("api.test.", &["10.0.0.1", "10.0.0.2"]);
    let conf = ResolvConfFile::new("stale", EMPTY_RESOLV_CONF);
    let mut config = config(&[dns.addr], &["api.test.:9000", "127.0.0.1:7000"], &conf);
    config.attempt_timeout = Some(Duration::from_millis(100));
    config.stale_max = Duration::from_secs(3);
    let stale_max = config.stale_max;
    let (directory, handle) = start(config);
    let all = ["10.0.0.1:9000", "10.0.0.2:9000", "127.0.0.1:7000"];
    assert_eq!(endpoints(&directory), all);

    // SERVFAIL: kept.
    dns.set("api.test.", RecordType::A, Script::ServFail);
    wait_until("a failure", || {
        handle.status().targets[0].consecutive_failures >= 1
    });
    assert_eq!(endpoints(&directory), all);
    assert!(handle.status().targets[0].stale);
    dns.set_a("api.test.", &["10.0.0.1", "10.0.0.2"]);
    wait_until("recovery", || {
        handle.status().targets[0].consecutive_failures == 0
    });

    // Silence: kept while failing, then dropped once stale for stale_max; static stays.
    let silenced_at = Instant::now();
    dns.set_silent(true);
    wait_until("two failures", || {
        handle.status().targets[0].consecutive_failures >= 2
    });
    assert_eq!(endpoints(&directory), all);
    let status = handle.status();
    assert!(status.targets[0].stale);
    assert!(status.targets[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("timed out"));
    wait_for_endpoints(&directory, &["127.0.0.1:7000"]);
    assert!(
        silenced_at.elapsed() >= stale_max,
        "dropped before stale_max"
    );
    wait_until("the status shows the drop", || {
        let status = handle.status();
        status.targets[0].addresses.is_empty() && !status.targets[0].stale
    });

    // DNS back: the set comes back.
    dns.set_silent(false);
    wait_for_endpoints(&directory, &all);
}

#[test]
fn authoritative_empty_answer_empties_the_set() {
    let dns = Responder::start();
    dns.set_a("api.test.", &["10.0.0.1"]);
    dns.set_a("other.test.", &["10.0.0.2"]);
    let conf = ResolvConfFile::new("empty", EMPTY_RESOLV_CONF);
    let (directory, handle) = start(config(
        &[dns.addr],
        &["api.test.:9000", "other.test.:9001"],
        &conf,
    ));
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000", "10.0.0.2:9001"]);

    // NXDOMAIN (the Service was deleted): emptied on the next refresh, not served stale.
    dns.set("api.test.", RecordType::A, Script::NxDomain);
    wait_for_endpoints(&directory, &["10.0.0.2:9001"]);
    // NODATA (a headless Service scaled to zero): the same.
    dns.set("other.test.", RecordType::A, Script::NoData);
    dns.set("other.test.", RecordType::AAAA, Script::NoData);
    wait_for_endpoints(&directory, &[]);
    wait_until("the status shows both empty", || {
        handle
            .status()
            .targets
            .iter()
            .all(|t| t.addresses.is_empty() && t.consecutive_failures == 0 && !t.stale)
    });
}

#[test]
fn silent_dns_at_startup_is_bounded_and_shutdown_is_prompt() {
    let dns = Responder::start();
    dns.set("api.test.", RecordType::A, Script::Silence);
    let conf = ResolvConfFile::new("startup", EMPTY_RESOLV_CONF);
    let mut config = config(&[dns.addr], &["api.test.:9000", "127.0.0.1:7000"], &conf);
    config.attempt_timeout = Some(Duration::from_secs(60));
    config.resolve_timeout = Duration::from_secs(60);
    config.startup_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let (directory, handle) = start(config);
    // These bounds catch a hang (a wait for the 60 s timeout), they do not measure speed.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(endpoints(&directory).is_empty(), "nothing published yet");
    wait_until("the query reached the server", || !dns.seen().is_empty());
    let stopping = Instant::now();
    handle.shutdown();
    assert!(stopping.elapsed() < Duration::from_secs(30));
}

#[test]
fn resolv_conf_nameserver_is_used_without_an_override() {
    // resolv.conf cannot name a port, so the responder cannot be reached through it; the query
    // to 127.0.0.1:53 proves the file's nameserver was used (and nothing listens there, or the
    // local server answers NXDOMAIN for this name: either way no addresses).
    let conf = ResolvConfFile::new("noverride", "nameserver 127.0.0.1\noptions timeout:1\n");
    let mut config = config(&[], &["nonexistent-ringway-test.invalid.:9000"], &conf);
    config.attempt_timeout = None;
    config.resolve_timeout = Duration::from_millis(500);
    let (directory, handle) = start(config);
    assert!(endpoints(&directory).is_empty());
    let status = handle.status();
    let target = &status.targets[0];
    let tried_port_53 = target
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("127.0.0.1:53"))
        || target.last_success.is_some();
    assert!(tried_port_53, "{target:?}");
}

#[test]
fn a_rewritten_resolv_conf_is_read_again() {
    let dns = Responder::start();
    dns.set_a("api.ns1.test.", &["10.0.0.1"]);
    dns.set_a("api.ns2.test.", &["10.0.0.2"]);
    let conf = ResolvConfFile::new("reload", "search ns1.test\noptions ndots:5\n");
    let (directory, _handle) = start(config(&[dns.addr], &["api:9000"], &conf));
    assert_eq!(endpoints(&directory), ["10.0.0.1:9000"]);
    // Make sure the new file gets a different modification time even on a coarse clock.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&conf.0, "search ns2.test\noptions ndots:5\n").unwrap();
    let modified = std::fs::metadata(&conf.0).unwrap().modified().unwrap();
    let later = modified + Duration::from_secs(1);
    std::fs::File::options()
        .write(true)
        .open(&conf.0)
        .unwrap()
        .set_modified(later)
        .unwrap();
    wait_for_endpoints(&directory, &["10.0.0.2:9000"]);
}
