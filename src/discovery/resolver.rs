//! The stub resolver the discovery thread uses: asks nameservers over UDP (TCP when an answer is
//! truncated) with plain blocking std sockets, and walks a host's search candidates.
//!
//! It runs only on the control-plane thread, never on a worker, so blocking with timeouts is the
//! simplest correct design. The candidate walk ([`walk`]) is sans-IO: it takes a query function,
//! which lets the glibc ordering and the stop-or-move-on rules be unit-tested without sockets.
//! The socket side exists to make off-path spoofing and one dead server cheap to survive: a fresh
//! socket (so a fresh kernel-chosen source port) and a random id per query, replies checked
//! against the exact server address and question, and a start server that rotates per query.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tracing::debug;

use super::message::{self, Question, Reply, ANSWER_ADDRESSES_MAX, MESSAGE_BYTES_MAX};
use super::random_u64;

/// How long a nameserver that timed out or failed goes to the back of the order. Rotation alone
/// would still start one query in N at a dead server (and with A and AAAA asked for one target
/// and two servers, always the same query); the penalty makes a dead server cost one timeout per
/// period rather than one per refresh, while it is still tried last, and again once the period
/// ends, so a recovered server comes back.
pub const SERVER_PENALTY: Duration = Duration::from_secs(30);

/// Longest single blocking wait, so a shutdown request is noticed within this time even while a
/// query waits out a multi-second timeout.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// A definitive answer for one name and record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addresses { ips: Vec<IpAddr>, ttl_s: u32 },
    NoData { negative_ttl_s: Option<u32> },
    NxDomain { negative_ttl_s: Option<u32> },
}

/// What resolving a host came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The first candidate name with addresses: its addresses (A and/or AAAA, sorted, at most
    /// [`ANSWER_ADDRESSES_MAX`]) and the smallest TTL among them.
    Addresses {
        name: String,
        ips: Vec<IpAddr>,
        ttl_s: u32,
    },
    /// Every candidate was NXDOMAIN or NODATA: the DNS says there are no endpoints.
    Empty { negative_ttl_s: Option<u32> },
}

/// Why a host could not be resolved. The last good endpoints stay in service (serve stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    /// The candidate name being asked when resolution stopped.
    pub name: String,
    pub record_type: RecordType,
    /// The nameserver whose failure ended resolution, if one was reached.
    pub server: Option<SocketAddr>,
    pub reason: Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No reply within the attempt timeout.
    Timeout,
    /// The server answered with an error code (SERVFAIL, REFUSED, …).
    ServerError(ResponseCode),
    /// A truncated answer even over TCP.
    TruncatedOverTcp,
    /// A socket error (connection refused, network unreachable, …).
    Io(io::ErrorKind, String),
    /// The whole-resolve time budget ran out.
    DeadlineExceeded,
    /// The host has no valid candidate name.
    InvalidName(String),
    /// Discovery is shutting down.
    Cancelled,
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.record_type)?;
        if let Some(server) = self.server {
            write!(f, " via {server}")?;
        }
        match &self.reason {
            Failure::Timeout => f.write_str(": timed out"),
            Failure::ServerError(rcode) => write!(f, ": server answered {rcode}"),
            Failure::TruncatedOverTcp => f.write_str(": truncated answer over TCP"),
            Failure::Io(_, e) => write!(f, ": {e}"),
            Failure::DeadlineExceeded => f.write_str(": resolve time budget exhausted"),
            Failure::InvalidName(e) => write!(f, ": {e}"),
            Failure::Cancelled => f.write_str(": cancelled"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Walk `candidates` in order, asking each for every type in `types`, as glibc's `res_search`
/// does: stop at the first candidate with addresses; NXDOMAIN and NODATA move on to the next
/// candidate; any error stops the walk.
///
/// Stopping on SERVFAIL or a timeout is a deliberate departure from glibc, which moves on after a
/// SERVFAIL: in a pod, the first candidate is usually the right one
/// (`svc.default.svc.cluster.local`), and falling through to `svc.` after a transient failure
/// would turn a blip into a wrong answer (someone else's `svc`) or an empty set.
///
/// With both A and AAAA asked, an error on either is an error for the candidate: publishing only
/// the family that answered would drop the other family's endpoints on a transient failure.
pub fn walk<F>(
    candidates: &[String],
    types: &[RecordType],
    mut ask: F,
) -> Result<Resolution, ResolveError>
where
    F: FnMut(&str, RecordType) -> Result<Answer, ResolveError>,
{
    let mut negative_ttl_s: Option<u32> = None;
    let mut min_negative = |ttl: Option<u32>| {
        negative_ttl_s = match (negative_ttl_s, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    };
    for name in candidates {
        let mut ips = Vec::new();
        let mut ttl_s = u32::MAX;
        for &record_type in types {
            match ask(name, record_type)? {
                Answer::Addresses {
                    ips: found,
                    ttl_s: t,
                } => {
                    ips.extend(found);
                    ttl_s = ttl_s.min(t);
                }
                Answer::NoData { negative_ttl_s } => min_negative(negative_ttl_s),
                Answer::NxDomain { negative_ttl_s } => {
                    // The name does not exist, so it has no records of any other type either.
                    min_negative(negative_ttl_s);
                    break;
                }
            }
        }
        if !ips.is_empty() {
            ips.sort_unstable();
            ips.dedup();
            ips.truncate(ANSWER_ADDRESSES_MAX);
            return Ok(Resolution::Addresses {
                name: name.clone(),
                ips,
                ttl_s,
            });
        }
    }
    Ok(Resolution::Empty { negative_ttl_s })
}

/// Where and how long to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    pub nameservers: Vec<SocketAddr>,
    /// Wait for one reply from one server.
    pub attempt_timeout: Duration,
    /// Rounds over `nameservers`.
    pub attempts: u32,
}

/// The blocking resolver. Holds the rotation position, which servers failed recently, and a
/// reused receive buffer.
#[derive(Debug)]
pub struct Resolver {
    next_server: usize,
    /// Servers that failed, with when their penalty ends; at most one entry per server.
    penalties: Vec<(SocketAddr, Instant)>,
    buffer: Vec<u8>,
}

/// The order in which to try `servers` for one query: round robin from `start`, then the
/// penalised servers moved to the back (keeping their relative order), so they are tried last
/// rather than never.
pub fn server_order(
    servers: &[SocketAddr],
    start: usize,
    is_penalised: impl Fn(SocketAddr) -> bool,
) -> Vec<SocketAddr> {
    let n = servers.len();
    if n == 0 {
        return Vec::new();
    }
    let first = start % n;
    let rotated = (0..n).map(|i| servers[(first + i) % n]);
    let (mut healthy, penalised): (Vec<_>, Vec<_>) = rotated.partition(|s| !is_penalised(*s));
    healthy.extend(penalised);
    healthy
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver {
            // Start at a random server so that many replicas of ringway restarted together do
            // not all begin with the first nameserver.
            next_server: random_u64() as usize,
            penalties: Vec::new(),
            buffer: vec![0; MESSAGE_BYTES_MAX],
        }
    }

    /// Resolve `candidates` (from `resolv_conf::candidates`) for `types`, giving up at
    /// `deadline`, or as soon as `cancel` is set.
    pub fn resolve(
        &mut self,
        candidates: &[String],
        types: &[RecordType],
        settings: &ResolverSettings,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<Resolution, ResolveError> {
        walk(candidates, types, |name, record_type| {
            self.query(name, record_type, settings, deadline, cancel)
        })
    }

    /// Ask for one name and type until a server gives a definitive answer: up to `attempts`
    /// rounds over the nameservers in [`server_order`], starting one server further on at each
    /// query.
    pub fn query(
        &mut self,
        name: &str,
        record_type: RecordType,
        settings: &ResolverSettings,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<Answer, ResolveError> {
        let error = |server, reason| ResolveError {
            name: name.to_string(),
            record_type,
            server,
            reason,
        };
        let servers = &settings.nameservers;
        if servers.is_empty() {
            let reason = Failure::Io(io::ErrorKind::NotFound, "no nameservers".into());
            return Err(error(None, reason));
        }
        let now = Instant::now();
        self.penalties
            .retain(|(s, until)| *until > now && servers.contains(s));
        let order = server_order(servers, self.next_server, |server| {
            self.penalties.iter().any(|(s, _)| *s == server)
        });
        self.next_server = self.next_server.wrapping_add(1);
        let mut last = error(None, Failure::DeadlineExceeded);
        for round in 0..settings.attempts.max(1) as usize {
            for &server in &order {
                if cancel.load(Ordering::Relaxed) {
                    return Err(error(Some(server), Failure::Cancelled));
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(last);
                }
                let question = Question::new(random_u64() as u16, name, record_type)
                    .map_err(|e| error(None, Failure::InvalidName(e)))?;
                let limits = (settings.attempt_timeout, deadline);
                match self.exchange(server, &question, limits, cancel) {
                    Ok(answer) => {
                        self.penalties.retain(|(s, _)| *s != server);
                        return Ok(answer);
                    }
                    Err(reason) => {
                        debug!(%server, name, %record_type, round, reason = ?reason, "dns attempt failed");
                        if reason == Failure::Cancelled {
                            return Err(error(Some(server), reason));
                        }
                        self.penalise(server);
                        last = error(Some(server), reason);
                    }
                }
            }
        }
        Err(last)
    }

    fn penalise(&mut self, server: SocketAddr) {
        let until = Instant::now() + SERVER_PENALTY;
        match self.penalties.iter_mut().find(|(s, _)| *s == server) {
            Some(entry) => entry.1 = until,
            None => self.penalties.push((server, until)),
        }
    }

    /// One attempt against one server: UDP, then TCP if the UDP answer was truncated. Each
    /// exchange may take `attempt_timeout`, and neither may run past the resolve's `deadline`.
    fn exchange(
        &mut self,
        server: SocketAddr,
        question: &Question,
        (attempt_timeout, deadline): (Duration, Instant),
        cancel: &AtomicBool,
    ) -> Result<Answer, Failure> {
        let query = question.encode().map_err(Failure::InvalidName)?;
        let udp_deadline = deadline.min(Instant::now() + attempt_timeout);
        let reply = match self.exchange_udp(server, question, &query, udp_deadline, cancel)? {
            Reply::Truncated => {
                debug!(%server, name = %question.name, "truncated over UDP, retrying over TCP");
                // The TCP exchange gets its own attempt timeout: the UDP one may be nearly spent.
                let tcp_deadline = deadline.min(Instant::now() + attempt_timeout);
                match self.exchange_tcp(server, question, &query, tcp_deadline, cancel)? {
                    Reply::Truncated => return Err(Failure::TruncatedOverTcp),
                    reply => reply,
                }
            }
            reply => reply,
        };
        match reply {
            Reply::Addresses { ips, ttl_s } => Ok(Answer::Addresses { ips, ttl_s }),
            Reply::NoData { negative_ttl_s } => Ok(Answer::NoData { negative_ttl_s }),
            Reply::NxDomain { negative_ttl_s } => Ok(Answer::NxDomain { negative_ttl_s }),
            Reply::ServerError(rcode) => Err(Failure::ServerError(rcode)),
            Reply::Truncated => Err(Failure::TruncatedOverTcp),
        }
    }

    /// Send `query` from a fresh socket (a fresh ephemeral source port) and wait for a datagram
    /// from exactly `server` that [`message::judge_reply`] accepts; anything else is dropped.
    fn exchange_udp(
        &mut self,
        server: SocketAddr,
        question: &Question,
        query: &[u8],
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<Reply, Failure> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(io_failure)?;
        // Connecting makes the kernel drop datagrams from other peers and report ICMP port
        // unreachable as ECONNREFUSED, so a server that is down fails fast instead of timing out.
        socket.connect(server).map_err(io_failure)?;
        socket.send(query).map_err(io_failure)?;
        loop {
            wait_slice(deadline, cancel, |timeout| {
                socket.set_read_timeout(Some(timeout))
            })?;
            let (len, from) = match socket.recv_from(&mut self.buffer) {
                Ok(received) => received,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(io_failure(e)),
            };
            // Checked again although the socket is connected: it is the rule this function
            // promises, and it must not depend on socket options.
            if from.ip() != server.ip() || from.port() != server.port() {
                debug!(%server, %from, "dns reply from unexpected address ignored");
                continue;
            }
            match message::judge_reply(&self.buffer[..len], question) {
                Ok(reply) => return Ok(reply),
                Err(ignored) => debug!(%server, reason = %ignored, "dns datagram ignored"),
            }
        }
    }

    /// RFC 1035 §4.2.2 DNS over TCP: a 2-byte length prefix each way.
    fn exchange_tcp(
        &mut self,
        server: SocketAddr,
        question: &Question,
        query: &[u8],
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<Reply, Failure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::Timeout);
        }
        let mut stream = TcpStream::connect_timeout(&server, remaining).map_err(io_failure)?;
        stream.set_nodelay(true).map_err(io_failure)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        stream
            .set_write_timeout(Some(remaining.max(Duration::from_millis(1))))
            .map_err(io_failure)?;
        // `query` is at most a few hundred bytes, far below the 16-bit length limit.
        let mut framed = Vec::with_capacity(2 + query.len());
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).map_err(io_failure)?;
        let mut prefix = [0u8; 2];
        read_exact_by(&mut stream, &mut prefix, deadline, cancel)?;
        let len = usize::from(u16::from_be_bytes(prefix));
        let reply = &mut self.buffer[..len];
        read_exact_by(&mut stream, reply, deadline, cancel)?;
        message::judge_reply(reply, question).map_err(|ignored| {
            // Over TCP the peer is the server itself, so a reply that does not match is a broken
            // server rather than noise to wait past.
            Failure::Io(io::ErrorKind::InvalidData, ignored.to_string())
        })
    }
}

/// Fill `buf` from `stream`, giving up at `deadline` however slowly the peer drips bytes.
fn read_exact_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    let mut filled = 0;
    while filled < buf.len() {
        wait_slice(deadline, cancel, |timeout| {
            stream.set_read_timeout(Some(timeout))
        })?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(io_failure(e));
            }
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e)),
        }
    }
    Ok(())
}

/// Before each blocking wait: stop if cancelled or past `deadline`, else bound the wait to the
/// time left and at most [`WAIT_SLICE`].
fn wait_slice(
    deadline: Instant,
    cancel: &AtomicBool,
    set_timeout: impl FnOnce(Duration) -> io::Result<()>,
) -> Result<(), Failure> {
    if cancel.load(Ordering::Relaxed) {
        return Err(Failure::Cancelled);
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Failure::Timeout);
    }
    // A zero timeout means "block forever" to std, hence the 1 ms floor.
    set_timeout(remaining.min(WAIT_SLICE).max(Duration::from_millis(1))).map_err(io_failure)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn io_failure(e: io::Error) -> Failure {
    Failure::Io(e.kind(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn fail(name: &str, reason: Failure) -> ResolveError {
        ResolveError {
            name: name.into(),
            record_type: RecordType::A,
            server: Some("10.0.0.53:53".parse().unwrap()),
            reason,
        }
    }

    /// Run `walk` with scripted answers; returns its result and the questions asked, in order.
    fn run(
        candidates: &[&str],
        types: &[RecordType],
        script: impl Fn(&str, RecordType) -> Result<Answer, ResolveError>,
    ) -> (Result<Resolution, ResolveError>, Vec<String>) {
        let mut asked = Vec::new();
        let result = walk(&names(candidates), types, |name, t| {
            asked.push(format!("{name} {t}"));
            script(name, t)
        });
        (result, asked)
    }

    const NX: Answer = Answer::NxDomain {
        negative_ttl_s: Some(30),
    };
    const A_AND_AAAA: &[RecordType] = &[RecordType::A, RecordType::AAAA];

    #[test]
    fn first_candidate_with_addresses_wins() {
        let (result, asked) = run(&["a.ns.", "a.", "b."], &[RecordType::A], |name, _| {
            Ok(match name {
                "a.ns." => NX,
                _ => Answer::Addresses {
                    ips: vec![ip(2), ip(1)],
                    ttl_s: 7,
                },
            })
        });
        assert_eq!(asked, ["a.ns. A", "a. A"]);
        assert_eq!(
            result,
            Ok(Resolution::Addresses {
                name: "a.".into(),
                ips: vec![ip(1), ip(2)],
                ttl_s: 7
            })
        );
    }

    #[test]
    fn nxdomain_and_nodata_everywhere_is_authoritatively_empty() {
        let (result, asked) = run(&["a.ns.", "a."], A_AND_AAAA, |name, _| {
            Ok(match name {
                "a.ns." => NX,
                _ => Answer::NoData {
                    negative_ttl_s: Some(5),
                },
            })
        });
        // NXDOMAIN skips the other type of the same name; NODATA does not.
        assert_eq!(asked, ["a.ns. A", "a. A", "a. AAAA"]);
        assert_eq!(
            result,
            Ok(Resolution::Empty {
                negative_ttl_s: Some(5)
            })
        );
    }

    #[test]
    fn servfail_or_timeout_stops_the_walk() {
        for reason in [
            Failure::ServerError(ResponseCode::ServFail),
            Failure::Timeout,
        ] {
            let (result, asked) = run(&["a.ns.", "a."], &[RecordType::A], |name, _| {
                Err(fail(name, reason.clone()))
            });
            assert_eq!(asked, ["a.ns. A"]);
            assert_eq!(result, Err(fail("a.ns.", reason)));
        }
    }

    #[test]
    fn both_families_are_merged_and_an_error_on_either_is_an_error() {
        let (result, _) = run(&["a."], A_AND_AAAA, |_, t| {
            Ok(Answer::Addresses {
                ips: vec![if t == RecordType::A {
                    ip(1)
                } else {
                    IpAddr::from(Ipv6Addr::LOCALHOST)
                }],
                ttl_s: if t == RecordType::A { 9 } else { 3 },
            })
        });
        assert_eq!(
            result,
            Ok(Resolution::Addresses {
                name: "a.".into(),
                ips: vec![ip(1), IpAddr::from(Ipv6Addr::LOCALHOST)],
                ttl_s: 3
            })
        );
        let (result, _) = run(&["a.", "b."], A_AND_AAAA, |name, t| match t {
            RecordType::A => Ok(Answer::Addresses {
                ips: vec![ip(1)],
                ttl_s: 9,
            }),
            _ => Err(fail(name, Failure::Timeout)),
        });
        assert_eq!(result, Err(fail("a.", Failure::Timeout)));
    }

    #[test]
    fn no_candidates_is_empty_and_addresses_are_capped() {
        let (result, asked) = run(&[], &[RecordType::A], |_, _| unreachable!());
        assert!(asked.is_empty());
        assert_eq!(
            result,
            Ok(Resolution::Empty {
                negative_ttl_s: None
            })
        );
        let many: Vec<IpAddr> = (0..3000u32)
            .map(|i| IpAddr::from((i << 8).to_be_bytes()))
            .collect();
        let (result, _) = run(&["a."], A_AND_AAAA, |_, t| {
            let ips = match t {
                RecordType::A => many.clone(),
                _ => many
                    .iter()
                    .map(|ip| {
                        IpAddr::from(match ip {
                            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                            IpAddr::V6(v6) => *v6,
                        })
                    })
                    .collect(),
            };
            Ok(Answer::Addresses { ips, ttl_s: 1 })
        });
        match result {
            Ok(Resolution::Addresses { ips, .. }) => assert_eq!(ips.len(), ANSWER_ADDRESSES_MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_order_rotates_and_puts_penalised_servers_last() {
        let servers: Vec<SocketAddr> = ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let [a, b, c] = [servers[0], servers[1], servers[2]];
        assert_eq!(server_order(&servers, 0, |_| false), [a, b, c]);
        assert_eq!(server_order(&servers, 1, |_| false), [b, c, a]);
        assert_eq!(server_order(&servers, usize::MAX, |_| false), [a, b, c]);
        // A dead first server is no longer first, whatever the rotation.
        for start in 0..3 {
            assert_eq!(server_order(&servers, start, |s| s == a).last(), Some(&a));
        }
        assert_eq!(server_order(&servers, 2, |s| s != b), [b, c, a]);
        assert!(server_order(&[], 5, |_| false).is_empty());
    }

    #[test]
    fn error_messages_name_the_server_and_reason() {
        let e = fail(
            "api.default.svc.cluster.local.",
            Failure::ServerError(ResponseCode::ServFail),
        );
        assert_eq!(
            e.to_string(),
            "api.default.svc.cluster.local. A via 10.0.0.53:53: server answered Server Failure"
        );
        let e = fail("a.", Failure::Timeout);
        assert_eq!(e.to_string(), "a. A via 10.0.0.53:53: timed out");
    }
}
