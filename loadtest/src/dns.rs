//! An authoritative DNS server over UDP and TCP whose records a test changes while traffic
//! flows.
//!
//! ringway discovers the pods of a Kubernetes *headless* Service by resolving its name to every
//! pod IP. To test discovery without Kubernetes (stale endpoints after scale-down, slow pickup
//! after scale-up, a server that stops answering), tests and the scale harness run this server
//! in-process and play the part of CoreDNS: [`DnsServerHandle::set_addrs`] scales a Service,
//! [`DnsServerHandle::remove`] deletes it, [`DnsServerHandle::set_mode`] breaks the server.
//!
//! # What it answers
//!
//! The server is authoritative for the zones in [`DnsServerConfig::zones`] and holds, per
//! name, one list of IP addresses: `A` queries are answered with its IPv4 addresses and `AAAA`
//! queries with its IPv6 addresses, in the order given (`ANY` gets both). Names compare
//! case-insensitively and are always absolute (a missing trailing dot is implied).
//!
//! | Query                                           | Answer                           |
//! |-------------------------------------------------|----------------------------------|
//! | a name with addresses of the asked family       | `NOERROR`, `AA`, the records     |
//! | an existing name\* without records of that type | `NOERROR`, `AA`, zone `SOA` only |
//! | `SOA` at a zone apex                            | `NOERROR`, `AA`, the `SOA`       |
//! | a name under a zone that does not exist         | `NXDOMAIN`, `AA`, zone `SOA`     |
//! | a name outside every zone, or a class but `IN`  | `REFUSED`                        |
//! | an opcode other than `QUERY`                    | `NOTIMP`                         |
//! | anything but one well-formed question           | `FORMERR`, no question           |
//! | shorter than a header, or a response            | nothing                          |
//!
//! \* A name exists if it is set (even to no addresses), a zone apex, or a parent of a set name
//! (`svc.cluster.local.` when `a.default.svc.cluster.local.` is set); its negative answer is
//! NODATA.
//!
//! The `SOA`'s TTL and `MINIMUM` are the negative-caching TTL (RFC 2308); its serial counts
//! record changes. There are no `NS` records. A query with an EDNS OPT record gets one back
//! (advertising [`DnsServerConfig::edns_payload_bytes_max`]); EDNS versions above 0 get
//! `BADVERS`.
//!
//! # Truncation
//!
//! Over UDP a response larger than the limit — [`DnsServerConfig::udp_payload_bytes_max`]
//! (512 by default, as RFC 1035 sets), or for a query carrying EDNS the client's advertised
//! size (at least 512) capped by [`DnsServerConfig::edns_payload_bytes_max`] — is cut down to
//! the answers that fit, whole records only, with `TC` set so the client retries over TCP.
//! Over TCP (2-byte length prefix, any number of queries per connection, answered in order)
//! everything is sent, up to the 65,535-byte message limit (see [`ADDRS_PER_NAME_MAX`]).
//!
//! # Faults and observation
//!
//! [`DnsServerHandle::set_mode`] (or [`DnsServerHandle::set_mode_for`] one transport) makes the
//! server answer `SERVFAIL` or `REFUSED` to everything, or drop every query so clients time
//! out. [`DnsServerHandle::stats`] counts queries per transport and per name;
//! [`DnsServerHandle::recent_queries`] keeps the last [`RECENT_QUERIES_MAX`] queries with their
//! source address, so a test can check that a resolver uses a fresh source port per query.
//!
//! # Shape
//!
//! [`DnsServer::start`] binds UDP and TCP on the same port synchronously, then serves on its
//! own thread with a current-thread tokio runtime. Turning bytes into a response is sans-IO
//! ([`parse_request`] → [`Zones::respond`] or [`fault_response`] → [`encode_within`]), so unit
//! tests feed it hostile bytes directly; the socket loops only move bytes and count.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_proto::ProtoError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tracing::debug;

/// Largest UDP response to a query without EDNS, by default (RFC 1035 §4.2.1).
pub const UDP_PAYLOAD_BYTES_MAX_DEFAULT: u16 = 512;
/// Largest UDP response to a query with EDNS, by default: the 2020 DNS flag day value, which
/// avoids IP fragmentation on common paths.
pub const EDNS_PAYLOAD_BYTES_MAX_DEFAULT: u16 = 1232;
/// Largest DNS message over TCP: the length prefix is 16 bits.
pub const TCP_MESSAGE_BYTES_MAX: usize = u16::MAX as usize;
/// Largest UDP query read; anything longer is cut by the kernel and then fails to parse.
pub const UDP_QUERY_BYTES_MAX: usize = 4096;
/// TCP connections served at once by default; further connections are closed at accept.
pub const TCP_CONNECTIONS_MAX_DEFAULT: usize = 256;
/// How long a TCP connection may sit without a complete query before it is closed, by
/// default (RFC 7766 §6.2.3 asks servers to time out idle connections, typically in seconds).
pub const TCP_IDLE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Most addresses one name may hold. hickory compresses only the first 120 names of a message
/// (a guard against quadratic work), so each later record repeats its owner name in full: 1000
/// AAAA records of `user-service.default.svc.cluster.local.` take 61 KB, within the 65,535
/// bytes of a TCP message. Much longer names can still overflow it; then the TCP answer is
/// cut and carries TC like a UDP one.
pub const ADDRS_PER_NAME_MAX: usize = 1000;
/// Most distinct query names counted in [`DnsStats::queries_by_name`]; names beyond it are
/// counted in [`DnsStats::queries_other_names`] so a flood of random names cannot grow memory.
pub const NAMES_COUNTED_MAX: usize = 4096;
/// How many queries [`DnsServerHandle::recent_queries`] remembers.
pub const RECENT_QUERIES_MAX: usize = 256;
/// How often binding port 0 retries when UDP got a port that TCP cannot have.
const BIND_ATTEMPTS_MAX: usize = 64;
/// SOA timers, as CoreDNS's kubernetes plugin sets them; no secondary ever reads them.
const SOA_REFRESH_S: i32 = 7200;
const SOA_RETRY_S: i32 = 1800;
const SOA_EXPIRE_S: i32 = 86400;
/// How often [`DnsServerHandle::wait_for_stats`] looks at the counters.
const STATS_POLL_MS: u64 = 5;
/// The TC flag in the third byte of a DNS header.
const TC_BIT: u8 = 0b0000_0010;
/// Pause after a failed `accept` or `recv_from` so a persistent error (EMFILE) cannot spin.
const SOCKET_ERROR_PAUSE_MS: u64 = 5;

/// How a server listens and what it serves. Build with [`DnsServerConfig::new`] or
/// [`Default`] and adjust fields.
#[derive(Clone, Debug)]
pub struct DnsServerConfig {
    /// Address for both UDP and TCP, e.g. `127.0.0.1:0` (port 0 picks a port free for both;
    /// see [`DnsServerHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Zones served authoritatively, e.g. `cluster.local`; names outside all of them are
    /// `REFUSED`. The most specific zone containing a name is the one whose SOA it gets.
    pub zones: Vec<String>,
    /// TTL of address records without a per-name TTL, in seconds.
    pub ttl_s: u32,
    /// TTL and `MINIMUM` of the SOA sent with NODATA and NXDOMAIN, i.e. how long resolvers
    /// cache a negative answer, in seconds.
    pub negative_ttl_s: u32,
    /// Largest UDP response to a query without EDNS. Lower it (even below 512) to force
    /// truncation with few records.
    pub udp_payload_bytes_max: u16,
    /// Largest UDP response to a query with EDNS, whatever the client advertises; also the
    /// size the server advertises. Lower it too to force truncation for EDNS clients.
    pub edns_payload_bytes_max: u16,
    /// TCP connections served at once.
    pub tcp_connections_max: usize,
    /// Idle time after which a TCP connection is closed, in milliseconds.
    pub tcp_idle_timeout_ms: u64,
}

impl DnsServerConfig {
    /// A config for `listen` serving `zones`, with defaults for everything else.
    pub fn new(listen: SocketAddr, zones: &[&str]) -> Self {
        DnsServerConfig {
            listen,
            zones: zones.iter().map(|zone| zone.to_string()).collect(),
            ttl_s: 5,
            negative_ttl_s: 5,
            udp_payload_bytes_max: UDP_PAYLOAD_BYTES_MAX_DEFAULT,
            edns_payload_bytes_max: EDNS_PAYLOAD_BYTES_MAX_DEFAULT,
            tcp_connections_max: TCP_CONNECTIONS_MAX_DEFAULT,
            tcp_idle_timeout_ms: TCP_IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Default for DnsServerConfig {
    /// `127.0.0.1:0`, serving `cluster.local`.
    fn default() -> Self {
        DnsServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), &["cluster.local"])
    }
}

/// The transport a query arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// How the server treats well-formed and malformed queries; switchable while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the records.
    #[default]
    Normal,
    /// Answer every query `SERVFAIL`.
    ServFail,
    /// Answer nothing at all, so the client times out (TCP connections stay open).
    Drop,
    /// Answer every query `REFUSED`.
    Refused,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::ServFail => 1,
            Mode::Drop => 2,
            Mode::Refused => 3,
        }
    }

    fn from_u8(value: u8) -> Mode {
        match value {
            1 => Mode::ServFail,
            2 => Mode::Drop,
            3 => Mode::Refused,
            _ => Mode::Normal,
        }
    }
}

/// Queries counted for one name, per transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameQueries {
    pub udp: u64,
    pub tcp: u64,
}

impl NameQueries {
    /// UDP plus TCP.
    pub fn total(&self) -> u64 {
        self.udp + self.tcp
    }
}

/// A snapshot of the server's counters (since start or [`DnsServerHandle::reset_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Well-formed queries (one question) received over UDP, whatever the mode.
    pub udp_queries: u64,
    /// Well-formed queries received over TCP, whatever the mode.
    pub tcp_queries: u64,
    /// Well-formed queries per lowercase absolute name (`user-service.default.svc.cluster.local.`).
    pub queries_by_name: BTreeMap<String, NameQueries>,
    /// Queries for names beyond the first [`NAMES_COUNTED_MAX`] distinct ones.
    pub queries_other_names: u64,
    /// Messages answered `FORMERR` or `NOTIMP` (bad question count, undecodable, other opcode).
    pub rejected: u64,
    /// Packets ignored without an answer: shorter than a header, or responses.
    pub ignored: u64,
    /// Queries left unanswered because of [`Mode::Drop`].
    pub dropped: u64,
    /// Responses sent with `TC` set (over TCP only when an answer exceeds 65,535 bytes).
    pub truncated: u64,
    /// TCP connections accepted (including ones closed at once for being over the limit).
    pub tcp_connections_accepted: u64,
    /// TCP connections open right now.
    pub tcp_connections_open: u64,
}

impl DnsStats {
    /// The counts for `name` (any case, trailing dot optional); zero if never asked.
    pub fn queries_for(&self, name: &str) -> NameQueries {
        self.queries_by_name
            .get(&stats_key(name))
            .copied()
            .unwrap_or_default()
    }
}

/// One query as received, for [`DnsServerHandle::recent_queries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryRecord {
    pub transport: Transport,
    /// The client's address and source port.
    pub source: SocketAddr,
    /// The DNS message ID.
    pub id: u16,
    /// Lowercase absolute name.
    pub name: String,
    pub query_type: RecordType,
}

/// Why a record could not be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The name is not a valid DNS name.
    InvalidName(String),
    /// The name is under none of the served zones, so it would never be answered.
    OutsideZones(String),
    /// More than [`ADDRS_PER_NAME_MAX`] addresses.
    TooManyAddrs(usize),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::InvalidName(name) => write!(f, "invalid DNS name {name:?}"),
            RecordError::OutsideZones(name) => write!(f, "{name} is outside every served zone"),
            RecordError::TooManyAddrs(count) => {
                write!(
                    f,
                    "{count} addresses, at most {ADDRS_PER_NAME_MAX} per name"
                )
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// The served data: zones, addresses per name, TTLs. Every response in [`Mode::Normal`] is
/// computed from it by [`Zones::respond`].
#[derive(Clone, Debug)]
pub struct Zones {
    /// Zone apexes, most labels first so the first match is the most specific zone.
    apexes: Vec<Name>,
    addrs: HashMap<Name, Vec<IpAddr>>,
    ttl_s_by_name: HashMap<Name, u32>,
    ttl_s: u32,
    negative_ttl_s: u32,
    /// SOA serial: bumped on every change of addresses.
    serial: u32,
    edns_payload_bytes_max: u16,
}

impl Zones {
    /// Empty zones; errors if a zone is not a valid name.
    pub fn new(config: &DnsServerConfig) -> Result<Zones, RecordError> {
        let mut apexes = config
            .zones
            .iter()
            .map(|zone| parse_name(zone))
            .collect::<Result<Vec<_>, _>>()?;
        apexes.sort_by_key(|apex| std::cmp::Reverse(apex.num_labels()));
        apexes.dedup();
        Ok(Zones {
            apexes,
            addrs: HashMap::new(),
            ttl_s_by_name: HashMap::new(),
            ttl_s: config.ttl_s,
            negative_ttl_s: config.negative_ttl_s,
            serial: 1,
            edns_payload_bytes_max: config.edns_payload_bytes_max,
        })
    }

    /// Replaces the addresses of `name` (an empty list leaves the name existing with no
    /// records: NODATA).
    pub fn set_addrs(&mut self, name: &str, addrs: Vec<IpAddr>) -> Result<(), RecordError> {
        if addrs.len() > ADDRS_PER_NAME_MAX {
            return Err(RecordError::TooManyAddrs(addrs.len()));
        }
        let name = self.served_name(name)?;
        self.addrs.insert(name, addrs);
        self.serial = self.serial.wrapping_add(1);
        Ok(())
    }

    /// Deletes `name`; returns whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let Ok(name) = parse_name(name) else {
            return false;
        };
        let existed = self.addrs.remove(&name).is_some();
        if existed {
            self.serial = self.serial.wrapping_add(1);
        }
        existed
    }

    /// The addresses of `name`, if it is set.
    pub fn addrs(&self, name: &str) -> Option<Vec<IpAddr>> {
        let name = parse_name(name).ok()?;
        self.addrs.get(&name).cloned()
    }

    /// Sets the TTL of `name`'s records, overriding the default, whether or not `name` is set
    /// now (the override outlives [`Zones::remove`]).
    pub fn set_ttl(&mut self, name: &str, ttl_s: u32) -> Result<(), RecordError> {
        let name = self.served_name(name)?;
        self.ttl_s_by_name.insert(name, ttl_s);
        Ok(())
    }

    /// Sets the TTL of every name without its own override.
    pub fn set_ttl_default(&mut self, ttl_s: u32) {
        self.ttl_s = ttl_s;
    }

    /// Sets the negative-caching TTL (the SOA's TTL and `MINIMUM`).
    pub fn set_negative_ttl(&mut self, ttl_s: u32) {
        self.negative_ttl_s = ttl_s;
    }

    /// The response to a well-formed query (see [`parse_request`]) in [`Mode::Normal`]; a
    /// message without a question gets `FORMERR`.
    pub fn respond(&self, request: &Message) -> Message {
        let mut response = response_to(request);
        let Some(query) = request.queries.first() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        if let Some(edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(self.edns_payload_bytes_max);
            response.edns = Some(ours);
            if edns.version() > 0 {
                response.metadata.response_code = ResponseCode::BADVERS;
                return response;
            }
        }
        let Some(apex) = self.apex_of(&query.name) else {
            response.metadata.response_code = ResponseCode::Refused;
            return response;
        };
        if query.query_class != DNSClass::IN {
            response.metadata.response_code = ResponseCode::Refused;
            return response;
        }
        response.metadata.authoritative = true;
        response.answers = self.answers(&query.name, query.query_type, apex);
        if response.answers.is_empty() {
            if !self.exists(&query.name, apex) {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            response.authorities.push(self.soa(apex));
        }
        response
    }

    fn answers(&self, name: &Name, query_type: RecordType, apex: &Name) -> Vec<Record> {
        let mut answers = Vec::new();
        if name == apex && matches!(query_type, RecordType::SOA | RecordType::ANY) {
            answers.push(self.soa(apex));
        }
        let Some(addrs) = self.addrs.get(name) else {
            return answers;
        };
        let ttl_s = self.ttl_s_by_name.get(name).copied().unwrap_or(self.ttl_s);
        for addr in addrs {
            let data = match (addr, query_type) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            // The owner name is the question's, so a client asking in another case gets its
            // own spelling back, as RFC 4343 expects.
            answers.push(Record::from_rdata(name.clone(), ttl_s, data));
        }
        answers
    }

    /// Whether `name` exists: the apex, a set name, or an empty non-terminal above one
    /// (`svc.cluster.local.` exists when `a.default.svc.cluster.local.` is set).
    fn exists(&self, name: &Name, apex: &Name) -> bool {
        name == apex
            || self.addrs.contains_key(name)
            || self.addrs.keys().any(|set| name.zone_of(set))
    }

    fn apex_of(&self, name: &Name) -> Option<&Name> {
        self.apexes.iter().find(|apex| apex.zone_of(name))
    }

    fn soa(&self, apex: &Name) -> Record {
        let label = |prefix: &str| {
            Name::from_ascii(prefix)
                .and_then(|label| label.append_domain(apex))
                // A zone apex near the 255-byte limit leaves no room for a prefix; the root
                // name is a valid, if uninformative, stand-in.
                .unwrap_or_else(|_| Name::root())
        };
        let soa = SOA::new(
            label("ns"),
            label("hostmaster"),
            self.serial,
            SOA_REFRESH_S,
            SOA_RETRY_S,
            SOA_EXPIRE_S,
            self.negative_ttl_s,
        );
        Record::from_rdata(apex.clone(), self.negative_ttl_s, RData::SOA(soa))
    }

    fn served_name(&self, name: &str) -> Result<Name, RecordError> {
        let parsed = parse_name(name)?;
        match self.apex_of(&parsed) {
            Some(_) => Ok(parsed),
            None => Err(RecordError::OutsideZones(parsed.to_ascii())),
        }
    }
}

/// An absolute name from text; a missing trailing dot is implied.
fn parse_name(name: &str) -> Result<Name, RecordError> {
    let mut parsed =
        Name::from_ascii(name).map_err(|_| RecordError::InvalidName(name.to_owned()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The key of [`DnsStats::queries_by_name`] for a name given as text.
fn stats_key(name: &str) -> String {
    let mut key = name.to_ascii_lowercase();
    if !key.ends_with('.') {
        key.push('.');
    }
    key
}

/// What a received message is, before any mode or data is applied.
#[derive(Debug)]
pub enum Request {
    /// A query with exactly one question.
    Query(Message),
    /// Not answerable: the ready `FORMERR`/`NOTIMP` response (no question echoed).
    Reject(Message),
    /// Not worth an answer: too short for a header, or a response.
    Ignore,
}

/// Classifies a received message. Never panics, whatever the bytes.
pub fn parse_request(bytes: &[u8]) -> Request {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return Request::Ignore;
    };
    if header.metadata.message_type == MessageType::Response {
        // Answering responses could make two servers answer each other forever.
        return Request::Ignore;
    }
    let reject = |code| {
        let mut response = Message::response(header.metadata.id, header.metadata.op_code);
        response.metadata.recursion_desired = header.metadata.recursion_desired;
        response.metadata.response_code = code;
        Request::Reject(response)
    };
    if header.metadata.op_code != OpCode::Query {
        return reject(ResponseCode::NotImp);
    }
    match Message::from_vec(bytes) {
        Ok(message) if message.queries.len() == 1 => Request::Query(message),
        Ok(_) | Err(_) => reject(ResponseCode::FormErr),
    }
}

/// A response skeleton echoing `request`'s ID, opcode, RD and CD bits, question and nothing
/// else.
fn response_to(request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.queries = request.queries.clone();
    response
}

/// The answer to a well-formed query in a fault mode; `None` for [`Mode::Drop`], and for
/// [`Mode::Normal`], which [`Zones::respond`] answers.
pub fn fault_response(request: &Message, mode: Mode) -> Option<Message> {
    let code = match mode {
        Mode::ServFail => ResponseCode::ServFail,
        Mode::Refused => ResponseCode::Refused,
        Mode::Normal | Mode::Drop => return None,
    };
    let mut response = response_to(request);
    response.metadata.response_code = code;
    if request.edns.is_some() {
        response.edns = Some(Edns::new());
    }
    Some(response)
}

/// The largest UDP response to `request` under `config`.
pub fn udp_limit_bytes(config: &DnsServerConfig, request: &Message) -> usize {
    let limit = match &request.edns {
        // RFC 6891 §6.2.5: an advertised size below 512 is treated as 512.
        Some(edns) => edns
            .max_payload()
            .max(512)
            .min(config.edns_payload_bytes_max),
        None => config.udp_payload_bytes_max,
    };
    usize::from(limit)
}

/// Encodes `response` in at most `limit_bytes` if it can: when the whole message is larger, it
/// keeps the longest prefix of answers that fits, drops authority and additional records
/// (keeping OPT) and sets `TC`. A message that does not fit even without answers is sent
/// anyway, so a test limit below the size of the question still gets a `TC` answer. Returns the
/// bytes and whether `TC` was set.
pub fn encode_within(
    mut response: Message,
    limit_bytes: usize,
) -> Result<(Vec<u8>, bool), ProtoError> {
    let whole = response.to_vec()?;
    if whole.len() <= limit_bytes {
        // hickory's encoder stops at 65,535 bytes on its own and then sets TC itself.
        let truncated = whole[2] & TC_BIT != 0;
        return Ok((whole, truncated));
    }
    response.metadata.truncation = true;
    response.authorities.clear();
    response.additionals.clear();
    let answers = std::mem::take(&mut response.answers);
    // Binary search for the answer count: `fits` answers fit (zero by assumption, see above),
    // `too_many` do not (all of them, as measured).
    let (mut fits, mut too_many) = (0, answers.len());
    while too_many - fits > 1 {
        let middle = fits + (too_many - fits) / 2;
        response.answers = answers[..middle].to_vec();
        if response.to_vec()?.len() <= limit_bytes {
            fits = middle;
        } else {
            too_many = middle;
        }
    }
    response.answers = answers[..fits].to_vec();
    Ok((response.to_vec()?, true))
}

/// The bytes to send back for `bytes` received over `transport` from `source`, or `None` to
/// stay silent. Counts everything in `shared`.
fn answer_bytes(
    shared: &Shared,
    transport: Transport,
    source: SocketAddr,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let mode = shared.mode(transport);
    let request = match parse_request(bytes) {
        Request::Query(request) => request,
        Request::Reject(response) => {
            let code = response.metadata.response_code;
            debug!(?transport, %source, bytes = bytes.len(), %code, "rejected DNS message");
            let mut stats = lock(&shared.stats);
            if mode == Mode::Drop {
                stats.counters.dropped += 1;
                return None;
            }
            stats.counters.rejected += 1;
            return response.to_vec().ok();
        }
        Request::Ignore => {
            debug!(?transport, %source, bytes = bytes.len(), "ignored DNS message");
            lock(&shared.stats).counters.ignored += 1;
            return None;
        }
    };
    if let Some(question) = request.queries.first() {
        let id = request.metadata.id;
        lock(&shared.stats).count_query(transport, source, id, question);
    }
    let response = match mode {
        Mode::Normal => lock(&shared.zones).respond(&request),
        Mode::Drop => {
            lock(&shared.stats).counters.dropped += 1;
            return None;
        }
        Mode::ServFail | Mode::Refused => fault_response(&request, mode)?,
    };
    let limit_bytes = match transport {
        Transport::Udp => udp_limit_bytes(&shared.config, &request),
        Transport::Tcp => TCP_MESSAGE_BYTES_MAX,
    };
    match encode_within(response, limit_bytes) {
        Ok((reply, truncated)) => {
            if truncated {
                lock(&shared.stats).counters.truncated += 1;
            }
            Some(reply)
        }
        Err(error) => {
            // Only a message too large even for TCP gets here; ADDRS_PER_NAME_MAX prevents it.
            debug!(?transport, %source, %error, "DNS response not encodable");
            None
        }
    }
}

/// Entry point: see [`DnsServer::start`].
pub struct DnsServer;

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (the same port for both) now, then serves on a new
    /// thread with its own current-thread tokio runtime until the handle is shut down or
    /// dropped. Errors if a zone is not a valid name or binding fails.
    pub fn start(config: DnsServerConfig) -> io::Result<DnsServerHandle> {
        let zones = Zones::new(&config)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let (udp, tcp) = bind_pair(config.listen)?;
        let local_addr = udp.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (udp, tcp) = {
            // Registering the sockets with tokio needs its runtime's context.
            let _context = runtime.enter();
            (UdpSocket::from_std(udp)?, TcpListener::from_std(tcp)?)
        };
        let shared = Arc::new(Shared {
            config,
            zones: Mutex::new(zones),
            stats: Mutex::new(StatsState::default()),
            modes: [AtomicU8::new(0), AtomicU8::new(0)],
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dns-{}", local_addr.port()))
            .spawn(move || {
                runtime.block_on(serve(udp, tcp, thread_shared, stop_rx));
                // Dropping the runtime drops every connection task, closing its socket.
                drop(runtime);
            })?;
        Ok(DnsServerHandle {
            local_addr,
            shared,
            stop: stop_tx,
            thread: Mutex::new(Some(thread)),
        })
    }
}

/// Controls a running server; every method may be called while queries flow. Dropping it
/// shuts the server down.
pub struct DnsServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl DnsServerHandle {
    /// The bound address, the same for UDP and TCP (with the real port when `listen` used 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the addresses of `name` (e.g. `user-service.default.svc.cluster.local.`); the
    /// next query sees the new list. An empty list makes the name exist with no records.
    pub fn set_addrs(&self, name: &str, addrs: Vec<IpAddr>) -> Result<(), RecordError> {
        lock(&self.shared.zones).set_addrs(name, addrs)
    }

    /// Deletes `name`, so queries for it get NXDOMAIN; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        lock(&self.shared.zones).remove(name)
    }

    /// The addresses `name` is set to, if any.
    pub fn addrs(&self, name: &str) -> Option<Vec<IpAddr>> {
        lock(&self.shared.zones).addrs(name)
    }

    /// Sets the TTL of `name`'s records, overriding [`DnsServerHandle::set_ttl_default`].
    pub fn set_ttl(&self, name: &str, ttl_s: u32) -> Result<(), RecordError> {
        lock(&self.shared.zones).set_ttl(name, ttl_s)
    }

    /// Sets the TTL of every name without its own [`DnsServerHandle::set_ttl`].
    pub fn set_ttl_default(&self, ttl_s: u32) {
        lock(&self.shared.zones).set_ttl_default(ttl_s)
    }

    /// Sets how long NODATA and NXDOMAIN answers may be cached (the SOA's TTL and `MINIMUM`).
    pub fn set_negative_ttl(&self, ttl_s: u32) {
        lock(&self.shared.zones).set_negative_ttl(ttl_s)
    }

    /// Sets the mode of both transports.
    pub fn set_mode(&self, mode: Mode) {
        self.set_mode_for(Transport::Udp, mode);
        self.set_mode_for(Transport::Tcp, mode);
    }

    /// Sets the mode of one transport, e.g. drop UDP only so clients must fall back to TCP.
    pub fn set_mode_for(&self, transport: Transport, mode: Mode) {
        self.shared.modes[transport_index(transport)].store(mode.to_u8(), Ordering::Relaxed);
    }

    /// The current mode of `transport`.
    pub fn mode(&self, transport: Transport) -> Mode {
        self.shared.mode(transport)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DnsStats {
        lock(&self.shared.stats).counters.clone()
    }

    /// Polls the counters every 5 ms until `done` holds or `timeout` passes; returns the last
    /// snapshot either way. Needs a tokio timer (any tokio runtime). For a test waiting until
    /// a resolver has asked again, e.g. `|stats| stats.queries_for(name).total() >= 3`.
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        done: impl Fn(&DnsStats) -> bool,
    ) -> DnsStats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) || Instant::now() >= deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(STATS_POLL_MS)).await;
        }
    }

    /// Zeroes the counters (not `tcp_connections_open`) and forgets recent queries.
    pub fn reset_stats(&self) {
        let mut stats = lock(&self.shared.stats);
        let open = stats.counters.tcp_connections_open;
        *stats = StatsState::default();
        stats.counters.tcp_connections_open = open;
    }

    /// The last [`RECENT_QUERIES_MAX`] well-formed queries, oldest first.
    pub fn recent_queries(&self) -> Vec<QueryRecord> {
        lock(&self.shared.stats).recent.iter().cloned().collect()
    }

    /// The source ports of the recent queries over `transport`, oldest first.
    pub fn recent_source_ports(&self, transport: Transport) -> Vec<u16> {
        lock(&self.shared.stats)
            .recent
            .iter()
            .filter(|query| query.transport == transport)
            .map(|query| query.source.port())
            .collect()
    }

    /// Stops serving: closes both sockets and every TCP connection, and returns once the
    /// server thread has exited. Idempotent.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                debug!("DNS server thread panicked");
            }
        }
    }
}

impl Drop for DnsServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// State shared by the handle and the server thread.
struct Shared {
    config: DnsServerConfig,
    zones: Mutex<Zones>,
    stats: Mutex<StatsState>,
    /// [`Mode`] per transport, indexed by [`transport_index`].
    modes: [AtomicU8; 2],
}

impl Shared {
    fn mode(&self, transport: Transport) -> Mode {
        Mode::from_u8(self.modes[transport_index(transport)].load(Ordering::Relaxed))
    }
}

fn transport_index(transport: Transport) -> usize {
    match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

#[derive(Default)]
struct StatsState {
    counters: DnsStats,
    recent: VecDeque<QueryRecord>,
}

impl StatsState {
    fn count_query(&mut self, transport: Transport, source: SocketAddr, id: u16, query: &Query) {
        let name = query.name.to_lowercase().to_ascii();
        let counters = &mut self.counters;
        match transport {
            Transport::Udp => counters.udp_queries += 1,
            Transport::Tcp => counters.tcp_queries += 1,
        }
        let tracked = counters.queries_by_name.len() < NAMES_COUNTED_MAX
            || counters.queries_by_name.contains_key(&name);
        if tracked {
            let entry = counters.queries_by_name.entry(name.clone()).or_default();
            match transport {
                Transport::Udp => entry.udp += 1,
                Transport::Tcp => entry.tcp += 1,
            }
        } else {
            counters.queries_other_names += 1;
        }
        if self.recent.len() == RECENT_QUERIES_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(QueryRecord {
            transport,
            source,
            id,
            name,
            query_type: query.query_type,
        });
    }
}

/// Locks a mutex, ignoring poisoning: every critical section leaves its data consistent, and
/// a panicking test thread must not take the server down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Binds UDP and TCP on the same address. With port 0 the kernel picks the UDP port, which
/// may be taken for TCP; then it tries again with another.
fn bind_pair(listen: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut attempt = 0;
    loop {
        let udp = std::net::UdpSocket::bind(listen)?;
        let port = udp.local_addr()?.port();
        match std::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(error)
                if listen.port() == 0
                    && error.kind() == io::ErrorKind::AddrInUse
                    && attempt + 1 < BIND_ATTEMPTS_MAX =>
            {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let udp_loop = serve_udp(udp, shared.clone());
    let tcp_loop = serve_tcp(tcp, shared);
    tokio::select! {
        _ = udp_loop => {}
        _ = tcp_loop => {}
        // An error means the handle is gone, which also means stop.
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

async fn serve_udp(udp: UdpSocket, shared: Arc<Shared>) {
    let mut buffer = vec![0u8; UDP_QUERY_BYTES_MAX];
    loop {
        let (len, source) = match udp.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                debug!(%error, "DNS UDP receive failed");
                tokio::time::sleep(Duration::from_millis(SOCKET_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let Some(reply) = answer_bytes(&shared, Transport::Udp, source, &buffer[..len]) else {
            continue;
        };
        if let Err(error) = udp.send_to(&reply, source).await {
            debug!(%source, %error, "DNS UDP send failed");
        }
    }
}

async fn serve_tcp(tcp: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(SOCKET_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        {
            let mut stats = lock(&shared.stats);
            stats.counters.tcp_connections_accepted += 1;
            let open = stats.counters.tcp_connections_open;
            if open >= shared.config.tcp_connections_max as u64 {
                debug!(%peer, open, "DNS TCP connection over the limit, closed");
                continue;
            }
            stats.counters.tcp_connections_open += 1;
        }
        tokio::spawn(serve_connection(stream, peer, shared.clone()));
    }
}

/// Answers length-prefixed queries in order until the peer closes, sends garbage framing, or
/// stays idle for [`DnsServerConfig::tcp_idle_timeout_ms`].
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _open = OpenConnection(&shared);
    let idle = Duration::from_millis(shared.config.tcp_idle_timeout_ms);
    let mut query = Vec::new();
    let mut reply_framed = Vec::new();
    loop {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len == 0 {
            debug!(%peer, "DNS TCP zero-length message, closing");
            return;
        }
        query.resize(len, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let Some(reply) = answer_bytes(&shared, Transport::Tcp, peer, &query) else {
            continue;
        };
        // `encode_within` keeps replies within TCP_MESSAGE_BYTES_MAX, so the length fits.
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        reply_framed.clear();
        reply_framed.extend_from_slice(&reply_len.to_be_bytes());
        reply_framed.extend_from_slice(&reply);
        if let Err(error) = stream.write_all(&reply_framed).await {
            debug!(%peer, %error, "DNS TCP write failed");
            return;
        }
    }
}

/// Decrements the open-connection count when a connection task ends, however it ends
/// (including being dropped with the runtime at shutdown).
struct OpenConnection<'a>(&'a Shared);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        let mut stats = lock(&self.0.stats);
        stats.counters.tcp_connections_open = stats.counters.tcp_connections_open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Zones {
        let mut zones = Zones::new(&DnsServerConfig::default()).unwrap();
        zones
            .set_addrs(
                "svc-a.default.svc.cluster.local.",
                vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            )
            .unwrap();
        zones
    }

    fn query(name: &str, query_type: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), query_type));
        message
    }

    fn parse(bytes: &[u8]) -> Message {
        match parse_request(bytes) {
            Request::Query(message) => message,
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn answers_each_family_from_one_list() {
        let zones = zones();
        let a = zones.respond(&query("svc-a.default.svc.cluster.local.", RecordType::A));
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative);
        assert!(a.metadata.recursion_desired);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data, RData::A(A::new(10, 0, 0, 1)));
        assert_eq!(a.answers[0].ttl, 5);
        let aaaa = zones.respond(&query("SVC-A.default.svc.cluster.local.", RecordType::AAAA));
        assert_eq!(aaaa.answers.len(), 1);
        assert_eq!(
            aaaa.answers[0].data,
            RData::AAAA(AAAA("fd00::1".parse().unwrap()))
        );
        let any = zones.respond(&query("svc-a.default.svc.cluster.local.", RecordType::ANY));
        assert_eq!(any.answers.len(), 2);
    }

    #[test]
    fn negative_answers_carry_the_zone_soa() {
        let mut zones = zones();
        zones
            .set_addrs("empty.default.svc.cluster.local", vec![])
            .unwrap();
        for (name, code) in [
            ("svc-a.default.svc.cluster.local.", ResponseCode::NoError),
            ("empty.default.svc.cluster.local.", ResponseCode::NoError),
            ("svc.cluster.local.", ResponseCode::NoError),
            ("cluster.local.", ResponseCode::NoError),
            ("nope.default.svc.cluster.local.", ResponseCode::NXDomain),
            ("x.svc-a.default.svc.cluster.local.", ResponseCode::NXDomain),
        ] {
            let response = zones.respond(&query(name, RecordType::MX));
            assert_eq!(response.metadata.response_code, code, "{name}");
            assert!(response.answers.is_empty(), "{name}");
            assert_eq!(response.authorities.len(), 1, "{name}");
            assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
            assert_eq!(
                response.authorities[0].name,
                Name::from_ascii("cluster.local.").unwrap()
            );
        }
    }

    #[test]
    fn outside_the_zones_is_refused_without_aa() {
        let response = zones().respond(&query("example.com.", RecordType::A));
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        assert!(!response.metadata.authoritative);
        assert!(response.authorities.is_empty());
    }

    #[test]
    fn most_specific_zone_wins() {
        let config =
            DnsServerConfig::new("127.0.0.1:0".parse().unwrap(), &["local", "cluster.local."]);
        let zones = Zones::new(&config).unwrap();
        let response = zones.respond(&query("nope.cluster.local.", RecordType::A));
        assert_eq!(
            response.authorities[0].name,
            Name::from_ascii("cluster.local.").unwrap()
        );
    }

    #[test]
    fn records_outside_the_zones_or_too_many_are_refused() {
        let mut zones = zones();
        assert!(matches!(
            zones.set_addrs("a.example.com", vec![]),
            Err(RecordError::OutsideZones(_))
        ));
        assert!(matches!(
            zones.set_addrs("a..cluster.local", vec![]),
            Err(RecordError::InvalidName(_))
        ));
        let many = vec![IpAddr::from([10, 0, 0, 1]); ADDRS_PER_NAME_MAX + 1];
        assert_eq!(
            zones.set_addrs("a.cluster.local", many),
            Err(RecordError::TooManyAddrs(ADDRS_PER_NAME_MAX + 1))
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        assert!(matches!(parse_request(&[]), Request::Ignore));
        assert!(matches!(parse_request(&[0; 11]), Request::Ignore));
        // A header alone: no question.
        assert!(matches!(parse_request(&[0; 12]), Request::Reject(_)));
        let good = query("svc-a.default.svc.cluster.local.", RecordType::A)
            .to_vec()
            .unwrap();
        for end in 12..good.len() {
            match parse_request(&good[..end]) {
                Request::Reject(response) => {
                    assert_eq!(response.metadata.response_code, ResponseCode::FormErr)
                }
                other => panic!("prefix of {end} bytes: {other:?}"),
            }
        }
        // Every single-byte corruption of a good query classifies without panicking.
        for index in 0..good.len() {
            for value in [0x00, 0x3f, 0xc0, 0xff] {
                let mut bad = good.clone();
                bad[index] = value;
                if let Request::Query(message) = parse_request(&bad) {
                    let _ = zones().respond(&message);
                }
            }
        }
        // A name compression pointer to itself.
        let mut looped = good[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse_request(&looped), Request::Reject(_)));
    }

    #[test]
    fn mutated_packets_never_panic() {
        // A deterministic xorshift stream mutating a good query with EDNS: a few bytes
        // overwritten, then cut short or extended, so most packets get past the header.
        let zones = zones();
        let mut good = query("svc-a.default.svc.cluster.local.", RecordType::A);
        good.edns = Some(Edns::new());
        let good = good.to_vec().unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut packet = good.clone();
            for _ in 0..1 + next() % 3 {
                let index = next() % packet.len();
                packet[index] = next() as u8;
            }
            match next() % 4 {
                0 => packet.truncate(next() % (good.len() + 1)),
                1 => packet.extend((0..next() % 32).map(|_| next() as u8)),
                _ => {}
            }
            if let Request::Query(request) = parse_request(&packet) {
                parsed += 1;
                let _ = encode_within(zones.respond(&request), 64);
                let _ = fault_response(&request, Mode::ServFail).map(|m| m.to_vec());
            }
        }
        assert!(parsed > 1_000, "only {parsed} mutated packets parsed");
    }

    #[test]
    fn responses_and_other_opcodes_are_not_served() {
        let mut response = query("a.cluster.local.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        assert!(matches!(
            parse_request(&response.to_vec().unwrap()),
            Request::Ignore
        ));
        let mut notify = query("a.cluster.local.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        match parse_request(&notify.to_vec().unwrap()) {
            Request::Reject(response) => {
                assert_eq!(response.metadata.response_code, ResponseCode::NotImp)
            }
            other => panic!("{other:?}"),
        }
        let mut two = query("a.cluster.local.", RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii("b.cluster.local.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(
            parse_request(&two.to_vec().unwrap()),
            Request::Reject(_)
        ));
    }

    #[test]
    fn truncation_keeps_whole_records_and_sets_tc() {
        let mut zones = zones();
        let addrs = (0..100u8).map(|i| IpAddr::from([10, 1, 0, i])).collect();
        zones.set_addrs("big.cluster.local", addrs).unwrap();
        let request = parse(&query("big.cluster.local.", RecordType::A).to_vec().unwrap());
        let (whole, truncated) =
            encode_within(zones.respond(&request), TCP_MESSAGE_BYTES_MAX).unwrap();
        assert!(!truncated);
        assert_eq!(Message::from_vec(&whole).unwrap().answers.len(), 100);
        let (cut, truncated) = encode_within(zones.respond(&request), 512).unwrap();
        assert!(truncated);
        assert!(cut.len() <= 512);
        let cut = Message::from_vec(&cut).unwrap();
        assert!(cut.metadata.truncation);
        assert!(!cut.answers.is_empty() && cut.answers.len() < 100);
        assert_eq!(
            cut.answers[..],
            Message::from_vec(&whole).unwrap().answers[..cut.answers.len()]
        );
        // The most addresses a name may hold fit one TCP message, even as AAAA of a typical
        // Service name.
        let service = "user-service.default.svc.cluster.local.";
        let v6 = (0..ADDRS_PER_NAME_MAX as u16)
            .map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        zones.set_addrs(service, v6).unwrap();
        let request = parse(&query(service, RecordType::AAAA).to_vec().unwrap());
        let (whole, truncated) =
            encode_within(zones.respond(&request), TCP_MESSAGE_BYTES_MAX).unwrap();
        assert!(!truncated);
        let whole = Message::from_vec(&whole).unwrap();
        assert_eq!(whole.answers.len(), ADDRS_PER_NAME_MAX);
        assert!(!whole.metadata.truncation);
        // With a 200-byte name they do not: the TCP answer is cut and says so.
        let label = "a".repeat(60);
        let long = format!("{label}.{label}.{label}.cluster.local.");
        let v6 = (0..ADDRS_PER_NAME_MAX as u16)
            .map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        zones.set_addrs(&long, v6).unwrap();
        let request = parse(&query(&long, RecordType::AAAA).to_vec().unwrap());
        let (cut, truncated) =
            encode_within(zones.respond(&request), TCP_MESSAGE_BYTES_MAX).unwrap();
        assert!(truncated);
        let cut = Message::from_vec(&cut).unwrap();
        assert!(cut.metadata.truncation);
        assert!(cut.answers.len() < ADDRS_PER_NAME_MAX);
        // A limit below the question still answers, with TC and no records.
        let (tiny, truncated) = encode_within(zones.respond(&request), 1).unwrap();
        assert!(truncated);
        assert!(Message::from_vec(&tiny).unwrap().answers.is_empty());
    }

    #[test]
    fn udp_limit_follows_edns() {
        let config = DnsServerConfig::default();
        let mut request = query("a.cluster.local.", RecordType::A);
        assert_eq!(udp_limit_bytes(&config, &request), 512);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        request.edns = Some(edns.clone());
        assert_eq!(udp_limit_bytes(&config, &request), 1232);
        edns.set_max_payload(100);
        request.edns = Some(edns);
        assert_eq!(udp_limit_bytes(&config, &request), 512);
    }

    #[test]
    fn edns_is_echoed_and_future_versions_get_badvers() {
        let zones = zones();
        let mut request = query("svc-a.default.svc.cluster.local.", RecordType::A);
        request.edns = Some(Edns::new());
        let response = zones.respond(&request);
        assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(1232));
        let mut edns = Edns::new();
        edns.set_version(1);
        request.edns = Some(edns);
        let bytes = zones.respond(&request).to_vec().unwrap();
        // The 12-bit code 16 means BADVERS with OPT (hickory decodes it as its twin BADSIG).
        let code = Message::from_vec(&bytes).unwrap().metadata.response_code;
        assert_eq!(u16::from(code), 16);
    }

    #[test]
    fn fault_modes_echo_the_question() {
        let request = query("svc-a.default.svc.cluster.local.", RecordType::A);
        let servfail = fault_response(&request, Mode::ServFail).unwrap();
        assert_eq!(servfail.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(servfail.queries, request.queries);
        assert_eq!(servfail.metadata.id, request.metadata.id);
        assert!(fault_response(&request, Mode::Drop).is_none());
    }
}
