//! DNS messages for discovery: encoding one address query and judging what comes back.
//!
//! Sans-IO: bytes in, a verdict out. Everything that arrives on a resolver socket goes through
//! [`judge_reply`] before it can change the endpoint set, so this is where spoofed, stray and
//! malformed datagrams are told apart from answers. hickory-proto does the wire format; this
//! module decides what a reply means for discovery.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData};

/// Re-exported so that callers (tests, fuzz targets) can name query types without depending on
/// hickory-proto themselves.
pub use hickory_proto::rr::RecordType;

/// The UDP payload size advertised with EDNS(0): the DNS Flag Day 2020 value, which avoids IP
/// fragmentation on every common path. A headless Service of ~70 IPv4 pods fits; larger answers
/// come back truncated and are fetched over TCP.
pub const UDP_PAYLOAD_BYTES: u16 = 1232;
/// Largest DNS message over any transport (the TCP length prefix is 16 bits), and the size of the
/// receive buffer, so a datagram is never silently cut.
pub const MESSAGE_BYTES_MAX: usize = 65_535;
/// Addresses kept from one answer. A 64 KiB message cannot hold many more A records than this;
/// the limit keeps the endpoint set bounded whatever a server sends.
pub const ANSWER_ADDRESSES_MAX: usize = 4096;
/// CNAME hops followed inside one answer before it counts as holding no addresses.
pub const CNAME_CHAIN_MAX: usize = 8;
/// Size of the fixed DNS header.
const HEADER_BYTES: usize = 12;

/// One outstanding query: what a reply must echo to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    pub name: Name,
    pub record_type: RecordType,
}

impl Question {
    /// A query for `name`, which must be fully qualified (see `resolv_conf::candidates`).
    pub fn new(id: u16, name: &str, record_type: RecordType) -> Result<Question, String> {
        let name = Name::from_ascii(name).map_err(|e| format!("invalid name {name:?}: {e}"))?;
        if !name.is_fqdn() {
            return Err(format!("name {name} is not fully qualified"));
        }
        Ok(Question {
            id,
            name,
            record_type,
        })
    }

    /// The query on the wire: recursion desired, EDNS(0) with [`UDP_PAYLOAD_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut message = Message::new(self.id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(self.name.clone(), self.record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD_BYTES);
        message.set_edns(edns);
        message
            .to_vec()
            .map_err(|e| format!("cannot encode a query for {}: {e}", self.name))
    }
}

/// What an accepted reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// NOERROR with addresses of the asked type for the name (directly or through CNAMEs).
    /// Sorted, deduplicated, at most [`ANSWER_ADDRESSES_MAX`]; `ttl_s` is the smallest TTL on the
    /// path to them.
    Addresses { ips: Vec<IpAddr>, ttl_s: u32 },
    /// NOERROR without such addresses: the name exists but has none of this type.
    NoData { negative_ttl_s: Option<u32> },
    /// NXDOMAIN: the name does not exist.
    NxDomain { negative_ttl_s: Option<u32> },
    /// The TC bit: the answer did not fit, ask again over TCP. Its contents are not used.
    Truncated,
    /// SERVFAIL, REFUSED, FORMERR, NOTIMP or another error code: this server cannot answer now.
    ServerError(ResponseCode),
}

/// Why a datagram was not accepted as the reply to a [`Question`]. The caller keeps waiting for
/// the real reply; these are logged at debug only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    Malformed(String),
    WrongId(u16),
    NotAResponse,
    WrongOpcode,
    WrongQuestion,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::Malformed(e) => write!(f, "malformed message: {e}"),
            Ignored::WrongId(id) => write!(f, "unexpected message id {id}"),
            Ignored::NotAResponse => f.write_str("not a response"),
            Ignored::WrongOpcode => f.write_str("not a QUERY response"),
            Ignored::WrongQuestion => f.write_str("question does not match"),
        }
    }
}

/// Decide whether `bytes` is the reply to `question` and what it says.
///
/// Accepted only with the query's id, the QR bit, opcode QUERY and the exact question (name
/// compared case-insensitively, type, class IN). An error reply may leave the question section
/// empty, since a server that could not parse the query may not be able to echo it; an error only
/// sends the caller to the next server, so accepting it cannot poison the endpoint set.
pub fn judge_reply(bytes: &[u8], question: &Question) -> Result<Reply, Ignored> {
    // Check the id before decoding the rest: stray datagrams are dropped without parsing them.
    if bytes.len() < HEADER_BYTES {
        return Err(Ignored::Malformed(format!("{} bytes", bytes.len())));
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    if id != question.id {
        return Err(Ignored::WrongId(id));
    }
    let message = Message::from_vec(bytes).map_err(|e| Ignored::Malformed(e.to_string()))?;
    if message.metadata.message_type != MessageType::Response {
        return Err(Ignored::NotAResponse);
    }
    if message.metadata.op_code != OpCode::Query {
        return Err(Ignored::WrongOpcode);
    }
    let rcode = message.metadata.response_code;
    let is_answer = matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain);
    let echoes = match message.queries.as_slice() {
        [] => !is_answer,
        [query] => {
            query.name() == &question.name
                && query.query_type() == question.record_type
                && query.query_class() == DNSClass::IN
        }
        _ => false,
    };
    if !echoes {
        return Err(Ignored::WrongQuestion);
    }
    if message.metadata.truncation {
        return Ok(Reply::Truncated);
    }
    Ok(match rcode {
        ResponseCode::NoError => addresses(&message, question),
        ResponseCode::NXDomain => Reply::NxDomain {
            negative_ttl_s: negative_ttl(&message),
        },
        other => Reply::ServerError(other),
    })
}

/// The addresses for the question's name in the answer section, following a CNAME chain from the
/// name (records for any other owner are ignored, so a reply cannot smuggle in addresses for a
/// name that was not asked).
fn addresses(message: &Message, question: &Question) -> Reply {
    let mut owner = &question.name;
    let mut ttl_s = u32::MAX;
    for _ in 0..=CNAME_CHAIN_MAX {
        let mut ips = Vec::new();
        let mut ips_ttl_s = u32::MAX;
        let mut next = None;
        for record in message.answers.iter().filter(|r| &r.name == owner) {
            if record.dns_class != DNSClass::IN {
                continue;
            }
            let ip = match (&record.data, question.record_type) {
                (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
                (RData::AAAA(aaaa), RecordType::AAAA) => IpAddr::V6(aaaa.0),
                (RData::CNAME(target), _) => {
                    next.get_or_insert((&target.0, record.ttl));
                    continue;
                }
                _ => continue,
            };
            if !is_connectable(ip) {
                continue;
            }
            ips_ttl_s = ips_ttl_s.min(record.ttl);
            ips.push(ip);
        }
        if !ips.is_empty() {
            ips.sort_unstable();
            ips.dedup();
            ips.truncate(ANSWER_ADDRESSES_MAX);
            return Reply::Addresses {
                ips,
                ttl_s: ttl_s.min(ips_ttl_s),
            };
        }
        let Some((target, cname_ttl_s)) = next else {
            break;
        };
        owner = target;
        ttl_s = ttl_s.min(cname_ttl_s);
    }
    Reply::NoData {
        negative_ttl_s: negative_ttl(message),
    }
}

/// Whether an address can be an upstream endpoint at all. `0.0.0.0`, `::`, multicast and the
/// IPv4 broadcast address can only come from a broken or hostile zone; connecting to them would
/// fail or reach this host, so they are dropped rather than published.
fn is_connectable(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

/// RFC 2308: a negative answer is cached for the smaller of the SOA record's TTL and its MINIMUM.
fn negative_ttl(message: &Message) -> Option<u32> {
    message
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::Record;

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn question() -> Question {
        Question::new(0x1234, "api.default.svc.cluster.local.", RecordType::A).unwrap()
    }

    /// A NOERROR response to `question()`, to be edited by each test.
    fn response() -> Message {
        let q = question();
        let mut m = Message::response(q.id, OpCode::Query);
        m.add_query(Query::query(q.name, q.record_type));
        m
    }

    fn a(owner: &str, ttl: u32, last: u8) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::new(10, 0, 0, last))))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let data = SOA::new(name("ns."), name("host."), 1, 1, 1, 1, minimum);
        Record::from_rdata(name("cluster.local."), ttl, RData::SOA(data))
    }

    fn judge(m: &Message) -> Result<Reply, Ignored> {
        judge_reply(&m.to_vec().unwrap(), &question())
    }

    #[test]
    fn query_round_trips() {
        let q = Question::new(7, "x.example.", RecordType::AAAA).unwrap();
        let m = Message::from_vec(&q.encode().unwrap()).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.message_type, MessageType::Query);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name(), &name("x.example."));
        assert_eq!(m.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), UDP_PAYLOAD_BYTES);
        assert!(Question::new(7, "relative.example", RecordType::A).is_err());
        assert!(Question::new(7, "bad..name.", RecordType::A).is_err());
    }

    #[test]
    fn addresses_sorted_deduplicated_min_ttl() {
        let mut m = response();
        let owner = "API.default.svc.cluster.local.";
        m.add_answer(a(owner, 30, 3));
        m.add_answer(a(owner, 10, 2));
        m.add_answer(a(owner, 30, 3));
        // Not the asked name: must not be taken.
        m.add_answer(a("evil.example.", 1, 66));
        let aaaa = RData::AAAA(AAAA(Ipv6Addr::LOCALHOST));
        m.add_answer(Record::from_rdata(name(owner), 1, aaaa));
        assert_eq!(
            judge(&m),
            Ok(Reply::Addresses {
                ips: vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()],
                ttl_s: 10
            })
        );
    }

    #[test]
    fn unconnectable_addresses_are_dropped() {
        let mut m = response();
        let owner = "api.default.svc.cluster.local.";
        for ip in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1]] {
            m.add_answer(Record::from_rdata(name(owner), 5, RData::A(A(ip.into()))));
        }
        assert_eq!(
            judge(&m),
            Ok(Reply::NoData {
                negative_ttl_s: None
            })
        );
        m.add_answer(a(owner, 5, 1));
        assert_eq!(
            judge(&m),
            Ok(Reply::Addresses {
                ips: vec![[10, 0, 0, 1].into()],
                ttl_s: 5
            })
        );
    }

    #[test]
    fn cname_chain_is_followed_and_bounded() {
        let mut m = response();
        let cname = |from: &str, to: &str, ttl| {
            Record::from_rdata(name(from), ttl, RData::CNAME(CNAME(name(to))))
        };
        m.add_answer(cname("api.default.svc.cluster.local.", "b.example.", 5));
        m.add_answer(cname("b.example.", "c.example.", 60));
        m.add_answer(a("c.example.", 30, 9));
        assert_eq!(
            judge(&m),
            Ok(Reply::Addresses {
                ips: vec![[10, 0, 0, 9].into()],
                ttl_s: 5
            })
        );
        // A loop ends as "no addresses" rather than spinning.
        let mut m = response();
        m.add_answer(cname("api.default.svc.cluster.local.", "b.example.", 5));
        m.add_answer(cname("b.example.", "api.default.svc.cluster.local.", 5));
        assert_eq!(
            judge(&m),
            Ok(Reply::NoData {
                negative_ttl_s: None
            })
        );
    }

    #[test]
    fn nodata_and_nxdomain_with_negative_ttl() {
        let mut m = response();
        m.add_authority(soa(30, 5));
        assert_eq!(
            judge(&m),
            Ok(Reply::NoData {
                negative_ttl_s: Some(5)
            })
        );
        m.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(
            judge(&m),
            Ok(Reply::NxDomain {
                negative_ttl_s: Some(5)
            })
        );
    }

    #[test]
    fn server_errors_and_truncation() {
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
            ResponseCode::NotImp,
        ] {
            let mut m = response();
            m.metadata.response_code = rcode;
            assert_eq!(judge(&m), Ok(Reply::ServerError(rcode)));
            // Error replies may omit the question.
            m.queries.clear();
            assert_eq!(judge(&m), Ok(Reply::ServerError(rcode)));
        }
        let mut m = response();
        m.add_answer(a("api.default.svc.cluster.local.", 5, 1));
        m.metadata.truncation = true;
        assert_eq!(judge(&m), Ok(Reply::Truncated));
    }

    #[test]
    fn mismatches_are_ignored() {
        let mut m = response();
        m.metadata.id = 0x4321;
        assert_eq!(judge(&m), Err(Ignored::WrongId(0x4321)));

        let mut m = response();
        m.metadata.message_type = MessageType::Query;
        assert_eq!(judge(&m), Err(Ignored::NotAResponse));

        let mut m = response();
        m.metadata.op_code = OpCode::Status;
        assert_eq!(judge(&m), Err(Ignored::WrongOpcode));

        let mut m = response();
        m.queries = vec![Query::query(name("other.example."), RecordType::A)];
        assert_eq!(judge(&m), Err(Ignored::WrongQuestion));

        let mut m = response();
        m.queries = vec![Query::query(question().name, RecordType::AAAA)];
        assert_eq!(judge(&m), Err(Ignored::WrongQuestion));

        let mut m = response();
        let mut q = Query::query(question().name, RecordType::A);
        q.set_query_class(DNSClass::CH);
        m.queries = vec![q];
        assert_eq!(judge(&m), Err(Ignored::WrongQuestion));

        let mut m = response();
        m.add_query(Query::query(question().name, RecordType::A));
        assert_eq!(judge(&m), Err(Ignored::WrongQuestion));

        // An answer (NOERROR / NXDOMAIN) must echo the question.
        let mut m = response();
        m.queries.clear();
        assert_eq!(judge(&m), Err(Ignored::WrongQuestion));
        m.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(judge(&m), Err(Ignored::WrongQuestion));
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        let q = question();
        let good = {
            let mut m = response();
            m.add_answer(a("api.default.svc.cluster.local.", 5, 1));
            m.to_vec().unwrap()
        };
        assert!(judge_reply(&[], &q).is_err());
        assert!(judge_reply(&good[..11], &q).is_err());
        // Every prefix and every single-byte corruption: judged without panicking.
        for len in 0..good.len() {
            let _ = judge_reply(&good[..len], &q);
        }
        for i in 0..good.len() {
            for byte in [0x00, 0xc0, 0xff] {
                let mut bad = good.clone();
                bad[i] = byte;
                let _ = judge_reply(&bad, &q);
            }
        }
        // A compression pointer to itself, with the header claiming many records.
        let mut looped = good[..12].to_vec();
        looped[4..12].copy_from_slice(&[0, 1, 0xff, 0xff, 0, 0, 0, 0]);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(judge_reply(&looped, &q).is_err());
    }

    #[test]
    fn answer_addresses_are_capped() {
        let mut m = response();
        for i in 0..(ANSWER_ADDRESSES_MAX as u32 + 100) {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            let owner = name("api.default.svc.cluster.local.");
            m.add_answer(Record::from_rdata(owner, 5, RData::A(A(ip))));
        }
        // So many records do not fit a 64 KiB message (hickory would set TC), so the cap is
        // checked on the decoded form.
        match addresses(&m, &question()) {
            Reply::Addresses { ips, .. } => assert_eq!(ips.len(), ANSWER_ADDRESSES_MAX),
            other => panic!("{other:?}"),
        }
    }
}
