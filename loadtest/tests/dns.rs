//! The test DNS server against a hand-made client over real UDP and TCP sockets: answers,
//! negative answers, truncation, live changes, fault modes, counters and hostile packets.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ringway_load::dns::{DnsServer, DnsServerConfig, DnsServerHandle, Mode, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const SERVICE: &str = "user-service.default.svc.cluster.local.";
/// How long a client waits before deciding the server did not answer.
const NO_ANSWER_MS: u64 = 300;

fn start() -> DnsServerHandle {
    start_with(|_| {})
}

fn start_with(adjust: impl FnOnce(&mut DnsServerConfig)) -> DnsServerHandle {
    let mut config = DnsServerConfig::new("127.0.0.1:0".parse().unwrap(), &["cluster.local"]);
    adjust(&mut config);
    DnsServer::start(config).expect("DNS server starts")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn query(name: &str, query_type: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        query_type,
    ));
    message
}

/// Sends `bytes` from a fresh socket; the reply's bytes, or `None` after [`NO_ANSWER_MS`].
async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buffer = vec![0u8; 65536];
    let received = tokio::time::timeout(
        Duration::from_millis(NO_ANSWER_MS),
        socket.recv_from(&mut buffer),
    )
    .await;
    let (len, from) = received.ok()?.unwrap();
    assert_eq!(from, server, "reply comes from the queried address");
    Some(buffer[..len].to_vec())
}

async fn udp_query(server: SocketAddr, request: &Message) -> Option<Message> {
    let reply = udp_exchange(server, &request.to_vec().unwrap()).await?;
    let response = Message::from_vec(&reply).expect("reply decodes");
    assert_eq!(response.metadata.id, request.metadata.id);
    Some(response)
}

async fn udp_ask(server: SocketAddr, name: &str, query_type: RecordType) -> Message {
    udp_query(server, &query(name, query_type))
        .await
        .expect("server answers over UDP")
}

/// Writes one length-prefixed message.
async fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.unwrap();
}

/// Reads one length-prefixed message, or `None` if the server closes or stays silent.
async fn tcp_receive(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.ok()?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut message).await.ok()?;
        Some(message)
    };
    tokio::time::timeout(Duration::from_millis(NO_ANSWER_MS), read)
        .await
        .ok()?
}

async fn tcp_query(stream: &mut TcpStream, request: &Message) -> Option<Message> {
    tcp_send(stream, &request.to_vec().unwrap()).await;
    let response = Message::from_vec(&tcp_receive(stream).await?).expect("reply decodes");
    assert_eq!(response.metadata.id, request.metadata.id);
    Some(response)
}

async fn tcp_ask(server: SocketAddr, name: &str, query_type: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_query(&mut stream, &query(name, query_type))
        .await
        .expect("server answers over TCP")
}

async fn ask(
    transport: Transport,
    server: SocketAddr,
    name: &str,
    query_type: RecordType,
) -> Message {
    match transport {
        Transport::Udp => udp_ask(server, name, query_type).await,
        Transport::Tcp => tcp_ask(server, name, query_type).await,
    }
}

fn answer_ips(response: &Message) -> Vec<IpAddr> {
    response
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            other => panic!("unexpected answer {other:?}"),
        })
        .collect()
}

fn assert_soa_authority(response: &Message, ttl_s: u32) {
    assert_eq!(response.authorities.len(), 1, "{response}");
    let soa = &response.authorities[0];
    assert_eq!(soa.name, Name::from_ascii("cluster.local.").unwrap());
    assert_eq!(soa.ttl, ttl_s);
    match &soa.data {
        RData::SOA(data) => assert_eq!(data.minimum, ttl_s),
        other => panic!("authority is not an SOA: {other:?}"),
    }
}

#[tokio::test]
async fn a_and_aaaa_come_from_one_list_by_family() {
    let dns = start();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2", "fd00::2", "127.0.0.3"]))
        .unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        let a = ask(transport, dns.local_addr(), SERVICE, RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative, "AA is set");
        assert!(!a.metadata.truncation);
        assert!(a.metadata.recursion_desired, "RD is copied");
        assert!(!a.metadata.recursion_available);
        assert_eq!(a.queries, query(SERVICE, RecordType::A).queries);
        assert_eq!(answer_ips(&a), ips(&["127.0.0.2", "127.0.0.3"]));
        assert!(a.answers.iter().all(|record| record.ttl == 5));
        assert!(a
            .answers
            .iter()
            .all(|record| record.name.to_ascii() == SERVICE));
        assert!(a.authorities.is_empty());

        let aaaa = ask(transport, dns.local_addr(), SERVICE, RecordType::AAAA).await;
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_ips(&aaaa), ips(&["fd00::2"]));
    }
}

#[tokio::test]
async fn a_name_without_the_asked_family_is_nodata_with_soa() {
    let dns = start_with(|config| config.negative_ttl_s = 7);
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();
    let response = udp_ask(dns.local_addr(), SERVICE, RecordType::AAAA).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    assert_soa_authority(&response, 7);

    // A name set to no addresses at all exists too, and so do its parents.
    dns.set_addrs("empty.default.svc.cluster.local", vec![])
        .unwrap();
    for name in [
        "empty.default.svc.cluster.local.",
        "default.svc.cluster.local.",
    ] {
        let response = udp_ask(dns.local_addr(), name, RecordType::A).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(response.answers.is_empty());
        assert_soa_authority(&response, 7);
    }
}

#[tokio::test]
async fn an_unknown_name_in_the_zone_is_nxdomain_with_soa() {
    let dns = start();
    dns.set_negative_ttl(3);
    let response = udp_ask(
        dns.local_addr(),
        "gone.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    assert_soa_authority(&response, 3);
}

#[tokio::test]
async fn a_name_outside_the_zones_is_refused() {
    let dns = start();
    for name in ["example.com.", "cluster.local.example.com.", "."] {
        let response = udp_ask(dns.local_addr(), name, RecordType::A).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(!response.metadata.authoritative);
        assert!(response.answers.is_empty() && response.authorities.is_empty());
    }
    assert!(dns.set_addrs("a.example.com.", ips(&["10.0.0.1"])).is_err());
}

#[tokio::test]
async fn names_are_case_insensitive_and_echo_the_asked_case() {
    let dns = start();
    dns.set_addrs(
        "User-Service.Default.SVC.cluster.local",
        ips(&["127.0.0.2"]),
    )
    .unwrap();
    let asked = "USER-SERVICE.default.svc.CLUSTER.local.";
    let response = udp_ask(dns.local_addr(), asked, RecordType::A).await;
    assert_eq!(answer_ips(&response), ips(&["127.0.0.2"]));
    assert_eq!(response.answers[0].name.to_ascii(), asked);
    assert_eq!(response.queries[0].name.to_ascii(), asked);
    assert_eq!(dns.addrs(SERVICE), Some(ips(&["127.0.0.2"])));
    assert_eq!(dns.stats().queries_for(SERVICE).udp, 1);
    assert_eq!(
        dns.stats()
            .queries_for("user-service.DEFAULT.svc.cluster.local")
            .udp,
        1
    );
}

#[tokio::test]
async fn records_and_ttls_change_while_queries_flow() {
    let dns = start();
    let server = dns.local_addr();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();

    // A client hammering the name while the test scales the Service: every answer is one of
    // the states the test set, never an error or a mix.
    let hammer = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..200 {
            let response = udp_ask(server, SERVICE, RecordType::A).await;
            seen.push((response.metadata.response_code, answer_ips(&response)));
        }
        seen
    });
    for round in 0..20u8 {
        let addrs: Vec<IpAddr> = (2..3 + round % 4)
            .map(|i| IpAddr::from([127, 0, 0, i]))
            .collect();
        dns.set_addrs(SERVICE, addrs).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    dns.remove(SERVICE);
    for (code, answer) in hammer.await.unwrap() {
        match code {
            ResponseCode::NoError => {
                assert!(!answer.is_empty() && answer.len() <= 4);
                let expected: Vec<IpAddr> = (0..answer.len() as u8)
                    .map(|i| IpAddr::from([127, 0, 0, 2 + i]))
                    .collect();
                assert_eq!(answer, expected);
            }
            ResponseCode::NXDomain => assert!(answer.is_empty()),
            other => panic!("unexpected {other}"),
        }
    }

    // The next query sees each change.
    let response = udp_ask(server, SERVICE, RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(!dns.remove(SERVICE), "already removed");
    dns.set_addrs(SERVICE, ips(&["127.0.0.9"])).unwrap();
    let response = udp_ask(server, SERVICE, RecordType::A).await;
    assert_eq!(answer_ips(&response), ips(&["127.0.0.9"]));

    dns.set_ttl_default(30);
    assert_eq!(
        udp_ask(server, SERVICE, RecordType::A).await.answers[0].ttl,
        30
    );
    dns.set_ttl(SERVICE, 1).unwrap();
    assert_eq!(
        udp_ask(server, SERVICE, RecordType::A).await.answers[0].ttl,
        1
    );
    dns.set_addrs("other.default.svc.cluster.local.", ips(&["127.0.0.8"]))
        .unwrap();
    let other = udp_ask(server, "other.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(other.answers[0].ttl, 30, "a per-name TTL stays on its name");
    dns.set_ttl_default(0);
    assert_eq!(
        udp_ask(server, SERVICE, RecordType::A).await.answers[0].ttl,
        1
    );
}

#[tokio::test]
async fn a_hundred_pods_truncate_over_udp_and_answer_fully_over_tcp() {
    let dns = start();
    let pods: Vec<IpAddr> = (1..=100).map(|i| IpAddr::from([127, 0, 1, i])).collect();
    dns.set_addrs(SERVICE, pods.clone()).unwrap();

    let udp = udp_ask(dns.local_addr(), SERVICE, RecordType::A).await;
    assert!(udp.metadata.truncation, "TC over UDP");
    assert!(udp.to_vec().unwrap().len() <= 512);
    let partial = answer_ips(&udp);
    assert!(!partial.is_empty() && partial.len() < 100);
    assert_eq!(
        partial[..],
        pods[..partial.len()],
        "whole records, in order"
    );

    // With EDNS the client's size counts, capped by the server's 1232 bytes.
    let mut request = query(SERVICE, RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    request.edns = Some(edns);
    let reply = udp_exchange(dns.local_addr(), &request.to_vec().unwrap())
        .await
        .unwrap();
    assert!(
        reply.len() > 512 && reply.len() <= 1232,
        "{} bytes",
        reply.len()
    );
    let response = Message::from_vec(&reply).unwrap();
    assert!(response.metadata.truncation);
    assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(1232));

    let tcp = tcp_ask(dns.local_addr(), SERVICE, RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(answer_ips(&tcp), pods);
    assert_eq!(dns.stats().truncated, 2);
}

#[tokio::test]
async fn a_low_udp_limit_forces_truncation_with_few_records() {
    let dns = start_with(|config| {
        config.udp_payload_bytes_max = 100;
        config.edns_payload_bytes_max = 100;
    });
    dns.set_addrs(SERVICE, ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]))
        .unwrap();
    let udp = udp_ask(dns.local_addr(), SERVICE, RecordType::A).await;
    assert!(udp.metadata.truncation);
    assert!(udp.answers.len() < 3);
    let mut with_edns = query(SERVICE, RecordType::A);
    with_edns.edns = Some(Edns::new());
    let udp = udp_query(dns.local_addr(), &with_edns).await.unwrap();
    assert!(udp.metadata.truncation);
    let tcp = tcp_ask(dns.local_addr(), SERVICE, RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 3);
}

#[tokio::test]
async fn one_tcp_connection_carries_many_queries_even_pipelined() {
    let dns = start();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();
    let mut stream = TcpStream::connect(dns.local_addr()).await.unwrap();
    for _ in 0..3 {
        let response = tcp_query(&mut stream, &query(SERVICE, RecordType::A))
            .await
            .unwrap();
        assert_eq!(answer_ips(&response), ips(&["127.0.0.2"]));
    }
    // Three queries in one write are answered in order.
    let requests: Vec<Message> = ["a.cluster.local.", SERVICE, "example.com."]
        .iter()
        .map(|name| query(name, RecordType::A))
        .collect();
    let mut burst = Vec::new();
    for request in &requests {
        let bytes = request.to_vec().unwrap();
        burst.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        burst.extend_from_slice(&bytes);
    }
    stream.write_all(&burst).await.unwrap();
    let mut codes = Vec::new();
    for request in &requests {
        let response = Message::from_vec(&tcp_receive(&mut stream).await.unwrap()).unwrap();
        assert_eq!(response.metadata.id, request.metadata.id);
        codes.push(response.metadata.response_code);
    }
    assert_eq!(
        codes,
        [
            ResponseCode::NXDomain,
            ResponseCode::NoError,
            ResponseCode::Refused
        ]
    );
    let stats = dns.stats();
    assert_eq!(stats.tcp_queries, 6);
    assert_eq!(stats.tcp_connections_accepted, 1);
    assert_eq!(stats.tcp_connections_open, 1);
}

#[tokio::test]
async fn fault_modes_switch_live_and_per_transport() {
    let dns = start();
    let server = dns.local_addr();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();
    let mut stream = TcpStream::connect(server).await.unwrap();

    for (mode, code) in [
        (Mode::ServFail, ResponseCode::ServFail),
        (Mode::Refused, ResponseCode::Refused),
    ] {
        dns.set_mode(mode);
        assert_eq!(dns.mode(Transport::Udp), mode);
        let udp = udp_ask(server, SERVICE, RecordType::A).await;
        let tcp = tcp_query(&mut stream, &query(SERVICE, RecordType::A))
            .await
            .unwrap();
        for response in [udp, tcp] {
            assert_eq!(response.metadata.response_code, code);
            assert!(response.answers.is_empty());
            assert!(!response.metadata.authoritative);
            assert_eq!(response.queries, query(SERVICE, RecordType::A).queries);
        }
    }

    dns.set_mode(Mode::Drop);
    assert!(udp_query(server, &query(SERVICE, RecordType::A))
        .await
        .is_none());
    assert!(tcp_query(&mut stream, &query(SERVICE, RecordType::A))
        .await
        .is_none());
    assert!(
        udp_exchange(server, b"garbage that is not DNS")
            .await
            .is_none(),
        "Drop is silent even to malformed queries"
    );

    // Drop UDP only: the client must fall back to TCP, which still answers.
    dns.set_mode(Mode::Normal);
    dns.set_mode_for(Transport::Udp, Mode::Drop);
    assert_eq!(dns.mode(Transport::Tcp), Mode::Normal);
    assert!(udp_query(server, &query(SERVICE, RecordType::A))
        .await
        .is_none());
    let mut fresh = TcpStream::connect(server).await.unwrap();
    let tcp = tcp_query(&mut fresh, &query(SERVICE, RecordType::A))
        .await
        .unwrap();
    assert_eq!(answer_ips(&tcp), ips(&["127.0.0.2"]));

    dns.set_mode_for(Transport::Udp, Mode::Normal);
    let udp = udp_ask(server, SERVICE, RecordType::A).await;
    assert_eq!(answer_ips(&udp), ips(&["127.0.0.2"]));
    assert_eq!(dns.stats().dropped, 4);
}

#[tokio::test]
async fn counts_queries_per_transport_and_name_and_remembers_source_ports() {
    let dns = start();
    let server = dns.local_addr();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fixed_port = socket.local_addr().unwrap().port();
    let mut buffer = [0u8; 512];
    for _ in 0..2 {
        socket
            .send_to(&query(SERVICE, RecordType::A).to_vec().unwrap(), server)
            .await
            .unwrap();
        socket.recv_from(&mut buffer).await.unwrap();
    }
    udp_ask(server, SERVICE, RecordType::AAAA).await;
    udp_ask(server, "nope.cluster.local.", RecordType::A).await;
    tcp_ask(server, SERVICE, RecordType::A).await;

    let stats = dns.stats();
    assert_eq!(stats.udp_queries, 4);
    assert_eq!(stats.tcp_queries, 1);
    assert_eq!(stats.queries_for(SERVICE).udp, 3);
    assert_eq!(stats.queries_for(SERVICE).tcp, 1);
    assert_eq!(stats.queries_for(SERVICE).total(), 4);
    assert_eq!(stats.queries_for("nope.cluster.local.").udp, 1);

    let ports = dns.recent_source_ports(Transport::Udp);
    assert_eq!(ports.len(), 4);
    assert_eq!(
        ports[..2],
        [fixed_port, fixed_port],
        "same socket, same port"
    );
    assert_ne!(ports[2], fixed_port, "a fresh socket gets a fresh port");
    let recent = dns.recent_queries();
    assert_eq!(recent.len(), 5);
    assert_eq!(recent[2].query_type, RecordType::AAAA);
    assert_eq!(recent[4].transport, Transport::Tcp);
    assert_eq!(recent[4].name, SERVICE);

    // A query from another task is seen by a waiting test.
    let asker = tokio::spawn(async move { udp_ask(server, SERVICE, RecordType::A).await });
    let stats = dns
        .wait_for_stats(Duration::from_secs(5), |stats| stats.udp_queries == 5)
        .await;
    assert_eq!(stats.queries_for(SERVICE).udp, 4);
    asker.await.unwrap();
    let unchanged = dns
        .wait_for_stats(Duration::from_millis(20), |stats| stats.udp_queries > 5)
        .await;
    assert_eq!(unchanged.udp_queries, 5, "gives up after the timeout");

    dns.reset_stats();
    assert_eq!(dns.stats().udp_queries, 0);
    assert!(dns.recent_queries().is_empty());
}

#[tokio::test]
async fn malformed_packets_never_stop_the_server() {
    let dns = start();
    let server = dns.local_addr();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();
    let good = query(SERVICE, RecordType::A).to_vec().unwrap();

    // Shorter than a header: ignored.
    assert!(udp_exchange(server, &[0x12]).await.is_none());
    // A header with no question, a question cut short, a label running past the end, two
    // questions: FORMERR with the query's ID.
    let mut two = query(SERVICE, RecordType::A);
    two.add_query(hickory_proto::op::Query::query(Name::root(), RecordType::A));
    let mut overrun = good[..12].to_vec();
    overrun.extend_from_slice(&[63, b'a', b'b']);
    for bad in [
        good[..12].to_vec(),
        good[..good.len() - 3].to_vec(),
        overrun,
        two.to_vec().unwrap(),
    ] {
        let reply = udp_exchange(server, &bad).await.expect("FORMERR");
        let response = Message::from_vec(&reply).unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(response.metadata.id, u16::from_be_bytes([bad[0], bad[1]]));
    }
    // A response is never answered.
    let mut not_a_query = good.clone();
    not_a_query[2] |= 0x80;
    assert!(udp_exchange(server, &not_a_query).await.is_none());
    // Garbage of every length up to 64 bytes.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for len in 0..64usize {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len * 11) as u8).collect();
        socket.send_to(&junk, server).await.unwrap();
    }

    // Over TCP a malformed message gets FORMERR and the connection goes on.
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_send(
        &mut stream,
        &[0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff],
    )
    .await;
    let response = Message::from_vec(&tcp_receive(&mut stream).await.unwrap()).unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(response.metadata.id, 0xabcd);
    let response = tcp_query(&mut stream, &query(SERVICE, RecordType::A))
        .await
        .unwrap();
    assert_eq!(answer_ips(&response), ips(&["127.0.0.2"]));
    // A zero length closes the connection; a length promising more than is sent, then EOF,
    // just ends it.
    stream.write_all(&[0, 0]).await.unwrap();
    assert!(tcp_receive(&mut stream).await.is_none());
    let mut short = TcpStream::connect(server).await.unwrap();
    short.write_all(&[0x01, 0x00, 1, 2, 3]).await.unwrap();
    short.shutdown().await.unwrap();
    drop(short);

    let response = udp_ask(server, SERVICE, RecordType::A).await;
    assert_eq!(answer_ips(&response), ips(&["127.0.0.2"]));
    let response = tcp_ask(server, SERVICE, RecordType::A).await;
    assert_eq!(answer_ips(&response), ips(&["127.0.0.2"]));
    assert!(dns.stats().rejected >= 5);
}

#[tokio::test]
async fn shutdown_closes_both_transports_and_never_hangs() {
    let dns = start();
    let server = dns.local_addr();
    dns.set_addrs(SERVICE, ips(&["127.0.0.2"])).unwrap();
    // A client holding a TCP connection open must not delay shutdown.
    let mut idle = TcpStream::connect(server).await.unwrap();
    tcp_query(&mut idle, &query(SERVICE, RecordType::A))
        .await
        .unwrap();
    dns.shutdown();
    dns.shutdown();
    assert!(udp_query(server, &query(SERVICE, RecordType::A))
        .await
        .is_none());
    assert!(TcpStream::connect(server).await.is_err());
    let mut buffer = [0u8; 1];
    assert_eq!(
        idle.read(&mut buffer).await.unwrap_or(0),
        0,
        "connection closed"
    );
    drop(dns);
}

#[test]
fn start_rejects_bad_zones_and_busy_ports() {
    let config = DnsServerConfig::new("127.0.0.1:0".parse().unwrap(), &["bad..zone"]);
    assert!(DnsServer::start(config).is_err());

    let first = start();
    let config = DnsServerConfig::new(first.local_addr(), &["cluster.local"]);
    assert!(DnsServer::start(config).is_err(), "port taken");
    // Dropping the handle without shutdown also stops the server.
    drop(first);
}
