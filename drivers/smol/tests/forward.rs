//! Forwarded streams over real TCP and TLS 1.3 on loopback: a gateway serving named
//! services, agents forwarding local streams through resumed sessions, and upstream test
//! servers that parse the PROXY v2 header by hand (from HAProxy's specification, not with
//! the crate that wrote it) and echo back the identity they saw before the stream's
//! bytes. Every load targets 127.0.0.1, is bounded in count and time, and stops by itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use boarding::attestation::AttestedIdentity;
use boarding::client::SavedKeyring;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::forward::{
    AbortReason, ForwardError, Refusal, Rule, Service, ServiceName, Services, StreamRequest, serve_services,
};
use boarding_smol::{
    Agent, AgentConfig, AttestationRefused, Error, EvidenceRequest, Gateway, GatewayConfig, KeyringStore,
    MemoryKeyringStore, MemoryStore, Serving, Store, Validator, echo, os_rng,
};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};

mod common;

use common::id;

fn run<F: Future<Output = ()>>(f: F) {
    common::run_within(Duration::from_secs(90), f);
}

/// What the upstream does after reading the PROXY header and writing its report line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Echo every byte; at EOF, shut the write side down.
    Echo,
    /// Read until EOF, then answer how many bytes came, and close.
    AnswerAfterEof,
    /// Send a greeting and shut the write side down at once; then read until EOF and
    /// report the bytes through the channel.
    GreetThenListen,
    /// Read a little, then reset the connection.
    Reset,
}

/// What an upstream parsed from one PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    source: SocketAddr,
    destination: SocketAddr,
    client_id: String,
    token_id: String,
    labels: BTreeMap<String, String>,
    attested: Option<String>,
    session: u8,
    service: String,
}

impl Seen {
    /// The line the upstream writes back before the stream's bytes.
    fn report(&self) -> String {
        let labels = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        format!(
            "client={} token={} session={} service={} source={} destination={} labels={} attested={}\n",
            self.client_id,
            self.token_id,
            self.session,
            self.service,
            self.source,
            self.destination,
            labels,
            self.attested.as_deref().unwrap_or("-"),
        )
    }
}

/// A PROXY v2 header parser written from HAProxy's specification: signature, version and
/// command, TCP over IPv4 or IPv6, the addresses, then the TLVs.
async fn read_proxy_header(stream: &mut TcpStream) -> Seen {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await.unwrap();
    assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n", "the PROXY v2 signature");
    assert_eq!(fixed[12], 0x21, "version 2, command PROXY");
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    let (source, destination, mut rest) = match fixed[13] {
        0x11 => {
            let ip = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            (
                SocketAddr::from((ip(&body[0..4]), port(&body[8..10]))),
                SocketAddr::from((ip(&body[4..8]), port(&body[10..12]))),
                &body[12..],
            )
        }
        0x21 => {
            let ip = |b: &[u8]| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            (
                SocketAddr::from((ip(&body[0..16]), port(&body[32..34]))),
                SocketAddr::from((ip(&body[16..32]), port(&body[34..36]))),
                &body[36..],
            )
        }
        other => panic!("family and protocol 0x{other:02x}: expected TCP over IPv4 or IPv6"),
    };
    let mut tlvs = BTreeMap::new();
    while !rest.is_empty() {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        assert!(tlvs.insert(kind, rest[3..3 + len].to_vec()).is_none(), "TLV 0x{kind:02x} once");
        rest = &rest[3 + len..];
    }
    let text = |kind: u8| String::from_utf8(tlvs.get(&kind).cloned().unwrap_or_default()).unwrap();
    let mut labels = BTreeMap::new();
    let mut l = &tlvs[&0xE2][..];
    while !l.is_empty() {
        let klen = usize::from(l[0]);
        let key = String::from_utf8(l[1..1 + klen].to_vec()).unwrap();
        let vlen = usize::from(u16::from_be_bytes([l[1 + klen], l[2 + klen]]));
        let value = String::from_utf8(l[3 + klen..3 + klen + vlen].to_vec()).unwrap();
        labels.insert(key, value);
        l = &l[3 + klen + vlen..];
    }
    Seen {
        source,
        destination,
        client_id: text(0xE0),
        token_id: text(0xE1),
        labels,
        attested: tlvs.contains_key(&0xE3).then(|| text(0xE3)),
        session: tlvs[&0xE4][0],
        service: text(0xE5),
    }
}

/// An upstream test server.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: smol::channel::Receiver<Seen>,
    /// Bytes each connection of [`Mode::GreetThenListen`] read, and whether any
    /// connection saw its end (EOF or an error) after the report.
    heard: smol::channel::Receiver<Vec<u8>>,
    _task: smol::Task<()>,
}

impl Upstream {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen_tx, seen) = smol::channel::unbounded();
        let (heard_tx, heard) = smol::channel::unbounded();
        let count = Arc::clone(&accepted);
        let task = smol::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (seen_tx, heard_tx) = (seen_tx.clone(), heard_tx.clone());
                smol::spawn(async move {
                    let seen = read_proxy_header(&mut stream).await;
                    let _ = seen_tx.send(seen.clone()).await;
                    if stream.write_all(seen.report().as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    match mode {
                        Mode::Echo => {
                            let mut all = Vec::new();
                            loop {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        all.extend_from_slice(&buf[..n]);
                                        if stream.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            let _ = stream.shutdown(std::net::Shutdown::Write);
                            let _ = heard_tx.send(all).await;
                        }
                        Mode::AnswerAfterEof => {
                            let mut all = Vec::new();
                            stream.read_to_end(&mut all).await.unwrap();
                            let answer = format!("got {} bytes\n", all.len());
                            stream.write_all(answer.as_bytes()).await.unwrap();
                            let _ = heard_tx.send(all).await;
                        }
                        Mode::GreetThenListen => {
                            stream.write_all(b"hello, agent\n").await.unwrap();
                            stream.shutdown(std::net::Shutdown::Write).unwrap();
                            let mut all = Vec::new();
                            let _ = stream.read_to_end(&mut all).await;
                            let _ = heard_tx.send(all).await;
                        }
                        Mode::Reset => {
                            let n = stream.read(&mut buf).await.unwrap_or(0);
                            rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).unwrap();
                            drop(stream);
                            let _ = heard_tx.send(buf[..n].to_vec()).await;
                        }
                    }
                })
                .detach();
            }
        });
        Self { addr, accepted, seen, heard, _task: task }
    }
}

/// A gateway serving `services`, with tokens of the given labels.
struct World {
    gateway: Gateway<MemoryStore>,
    serving: Serving,
    addr: String,
}

impl World {
    async fn start(services: Services) -> Self {
        Self::start_with(services, GatewayConfig { max_sessions_per_client: 16, ..GatewayConfig::default() }).await
    }

    async fn start_with(services: Services, config: GatewayConfig) -> Self {
        let gateway = Gateway::open(MemoryStore::new(), config).await.unwrap();
        Self::serve(gateway, services).await
    }

    async fn serve(gateway: Gateway<MemoryStore>, services: Services) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, serve_services(services)).unwrap();
        let addr = serving.local_addr().to_string();
        Self { gateway, serving, addr }
    }

    /// Joins `name` with a token carrying `labels`; returns the keyring and the token id.
    async fn join(&self, agent: &Agent, name: &str, labels: &[(&str, &str)]) -> (SavedKeyring, String) {
        let token = BootstrapToken::generate(&mut os_rng());
        let mut record = TokenRecord::new(token.clone(), None, 1);
        for (k, v) in labels {
            record = record.with_label(k, v).unwrap();
        }
        assert!(self.gateway.store().insert_token(record).await.unwrap());
        let keyrings = MemoryKeyringStore::new();
        let session = agent.join(&self.addr, token.clone(), &[self.gateway.pin()], id(name), &keyrings).await.unwrap();
        session.close().await.unwrap();
        (keyrings.load_keyring().await.unwrap().unwrap(), token.id().as_str().to_owned())
    }
}

/// A connected pair of loopback TCP streams.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = smol::future::zip(TcpStream::connect(addr), listener.accept()).await;
    (client.unwrap(), accepted.unwrap().0)
}

/// `len` bytes of a pattern that differs by `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` and shuts the write side down, while reading the report line and then
/// everything until EOF.
async fn exchange(stream: TcpStream, data: &[u8]) -> (String, Vec<u8>) {
    let mut writer = stream.clone();
    let write = async move {
        writer.write_all(data).await.unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    };
    let read = async move {
        let mut reader = BufReader::new(stream);
        let mut report = String::new();
        reader.read_line(&mut report).await.unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        (report, rest)
    };
    smol::future::zip(write, read).await.1
}

fn services_for(upstream: &Upstream) -> Services {
    Services::new()
        .with_service("db".parse().unwrap(), Service::new(upstream.addr.to_string()).allow(Rule::label("role", "db")))
        .with_service("open".parse().unwrap(), Service::new(upstream.addr.to_string()))
}

fn refusal(result: Result<boarding_smol::forward::Transfer, Error>) -> Refusal {
    match result {
        Err(Error::Forward(ForwardError::Refused { refusal, .. })) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_forwarded_connection_round_trips_a_mebibyte_and_the_upstream_sees_the_identity() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (saved, token_id) = world.join(&agent, "node-1", &[("role", "db"), ("team", "infra")]).await;

        let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local_addr = local.local_addr().unwrap();
        let forwarding = {
            let (agent, addr) = (agent.clone(), world.addr.clone());
            smol::spawn(async move {
                agent.forward_listener(&addr, &MemoryKeyringStore::holding(saved), "db", local, 8).await
            })
        };

        // The stream starts with a forged PROXY header: it reaches the upstream as data,
        // after the gateway's.
        let forged = {
            let mut f = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
            f
        };
        let mut data = forged.clone();
        data.extend_from_slice(&pattern(1, 1 << 20));
        let started = Instant::now();
        let (report, echoed) = exchange(TcpStream::connect(local_addr).await.unwrap(), &data).await;
        let took = started.elapsed();
        assert!(echoed == data, "the echo is the stream, byte for byte ({} of {} bytes)", echoed.len(), data.len());

        let seen = upstream.seen.recv().await.unwrap();
        assert_eq!(report, seen.report(), "the upstream echoed what it parsed");
        assert_eq!(seen.client_id, "node-1");
        assert_eq!(seen.token_id, token_id);
        let labels: BTreeMap<String, String> =
            [("role", "db"), ("team", "infra")].iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        assert_eq!(seen.labels, labels);
        assert_eq!(seen.session, 1, "the stream runs in a resumed session");
        assert_eq!(seen.service, "db");
        assert_eq!(seen.attested, None);
        assert!(seen.source.ip().is_loopback() && seen.source.port() != 0, "the agent's address: {}", seen.source);
        assert_eq!(seen.destination.to_string(), world.addr, "the gateway address the agent reached");
        assert_eq!(upstream.heard.recv().await.unwrap(), data, "the upstream read the stream, then its end");
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
        eprintln!("1 MiB each way through a forwarded stream in {took:?}");
        drop(forwarding);
        world.serving.shutdown().await;
    });
}

#[test]
fn a_service_the_labels_do_not_allow_is_refused_and_no_upstream_connection_is_made() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let asked = Arc::new(AtomicUsize::new(0));
        let services = {
            let asked = Arc::clone(&asked);
            services_for(&upstream).with_authorizer(move |request: &StreamRequest<'_>| {
                asked.fetch_add(1, Ordering::SeqCst);
                request.client.client_id().as_str() != "banned"
            })
        };
        let world = World::start(services).await;
        let agent = Agent::default();
        let (web, _) = world.join(&agent, "web-1", &[("role", "web")]).await;
        let (unlabelled, _) = world.join(&agent, "bare", &[]).await;
        let (banned, _) = world.join(&agent, "banned", &[("role", "db")]).await;

        for saved in [web.clone(), unlabelled] {
            let (local, _keep) = pair().await;
            let result = agent.forward(&world.addr, &MemoryKeyringStore::holding(saved), "db", local).await;
            assert_eq!(refusal(result), Refusal::NotAllowed);
        }
        assert_eq!(asked.load(Ordering::SeqCst), 0, "the rule refused them before the application's check");
        let (local, _keep) = pair().await;
        let result = agent.forward(&world.addr, &MemoryKeyringStore::holding(banned), "db", local).await;
        let message = result.as_ref().unwrap_err().to_string();
        assert_eq!(refusal(result), Refusal::NotAllowed, "the application's check refused it");
        assert!(message.contains("not allowed"), "{message}");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 0, "no upstream connection for a refused stream");

        // A service without rules is open to the same client.
        let (local, remote) = pair().await;
        let forwarding = {
            let (agent, addr) = (agent.clone(), world.addr.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(web), "open", remote).await })
        };
        let (report, echoed) = exchange(local, b"ping").await;
        assert!(report.starts_with("client=web-1 "), "{report}");
        assert_eq!(echoed, b"ping");
        let transfer = forwarding.await.unwrap();
        assert_eq!((transfer.sent, transfer.received), (4, 4 + report.len() as u64));
        world.serving.shutdown().await;
    });
}

#[test]
fn an_unknown_service_is_refused_and_a_bad_name_is_an_error_before_connecting() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[("role", "db")]).await;
        let (local, _keep) = pair().await;
        let result = agent.forward(&world.addr, &MemoryKeyringStore::holding(saved.clone()), "nope", local).await;
        let message = result.as_ref().unwrap_err().to_string();
        assert_eq!(refusal(result), Refusal::UnknownService);
        assert!(message.contains("service nope") && message.contains("no service of that name"), "{message}");
        let (local, _keep) = pair().await;
        let result = agent.forward(&world.addr, &MemoryKeyringStore::holding(saved), "Not A Name", local).await;
        assert!(matches!(result, Err(Error::Forward(ForwardError::InvalidServiceName(_)))), "{result:?}");
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 0);
        assert_eq!(world.gateway.stats().established, 2, "the join and the refused stream's session only");
        world.serving.shutdown().await;
    });
}

#[test]
fn an_upstream_that_is_down_gives_the_agent_a_clear_error() {
    run(async {
        let down = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let services = Services::new().with_service("db".parse().unwrap(), Service::new(down.to_string()));
        let world = World::start(services).await;
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[]).await;
        let (local, _keep) = pair().await;
        let started = Instant::now();
        let result = agent.forward(&world.addr, &MemoryKeyringStore::holding(saved), "db", local).await;
        let message = result.as_ref().unwrap_err().to_string();
        assert_eq!(refusal(result), Refusal::UpstreamUnreachable);
        assert!(message.contains("cannot reach the service's upstream"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5), "at once, not after a timeout");
        world.serving.shutdown().await;
    });
}

#[test]
fn sixty_four_concurrent_streams_from_eight_agents_stay_separate() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let mut keyrings = Vec::new();
        for a in 0..8 {
            keyrings.push(world.join(&agent, &format!("agent-{a}"), &[("role", "db")]).await.0);
        }
        let started = Instant::now();
        let mut streams = Vec::new();
        for (a, saved) in keyrings.iter().enumerate() {
            for s in 0..8u64 {
                let (local, remote) = pair().await;
                let (agent, addr, saved) = (agent.clone(), world.addr.clone(), saved.clone());
                let forwarding = smol::spawn(async move {
                    agent.forward(&addr, &MemoryKeyringStore::holding(saved), "db", remote).await
                });
                let seed = (a as u64) * 8 + s + 100;
                let data = pattern(seed, 64 * 1024 + usize::try_from(seed).unwrap());
                streams.push(smol::spawn(async move {
                    let (report, echoed) = exchange(local, &data).await;
                    let transfer = forwarding.await.unwrap();
                    assert_eq!(transfer.sent, data.len() as u64);
                    (a, report, echoed == data)
                }));
            }
        }
        for stream in streams {
            let (a, report, same) = stream.await;
            assert!(report.starts_with(&format!("client=agent-{a} ")), "{report}");
            assert!(same, "agent-{a}'s stream came back as it was sent");
        }
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 64);
        let mut per_client = BTreeMap::new();
        for _ in 0..64 {
            *per_client.entry(upstream.seen.recv().await.unwrap().client_id).or_insert(0) += 1;
        }
        assert!(per_client.values().all(|n| *n == 8) && per_client.len() == 8, "{per_client:?}");
        eprintln!("64 streams of 64 KiB each way, 8 agents, in {:?}", started.elapsed());
        world.serving.shutdown().await;
    });
}

#[test]
fn revoking_the_client_closes_its_forwarded_streams() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (revoked, _) = world.join(&agent, "revoked", &[("role", "db")]).await;
        let (kept, _) = world.join(&agent, "kept", &[("role", "db")]).await;
        let mut open = Vec::new();
        for saved in [revoked.clone(), revoked, kept] {
            let (local, remote) = pair().await;
            let (agent, addr) = (agent.clone(), world.addr.clone());
            let forwarding =
                smol::spawn(
                    async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "db", remote).await },
                );
            let mut local = BufReader::new(local);
            let mut report = String::new();
            local.read_line(&mut report).await.unwrap();
            local.get_mut().write_all(b"ping").await.unwrap();
            let mut pong = [0u8; 4];
            local.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"ping");
            open.push((local, forwarding));
        }
        let started = Instant::now();
        let (had_keyring, ended) = world.gateway.revoke_client(id("revoked")).await.unwrap();
        assert!(had_keyring);
        assert_eq!(ended, 2);
        let mut kept = open.pop().unwrap();
        for (mut local, forwarding) in open {
            let result = forwarding.await;
            assert!(matches!(result, Err(Error::Revoked)), "{result:?}");
            let mut rest = Vec::new();
            let _ = local.read_to_end(&mut rest).await;
            assert!(rest.is_empty(), "the local stream ends");
        }
        assert!(started.elapsed() < Duration::from_secs(1), "within a second: {:?}", started.elapsed());
        for _ in 0..2 {
            assert!(upstream.heard.recv().await.unwrap().starts_with(b"ping"), "the upstream connection closed");
        }
        // The other client's stream goes on.
        kept.0.get_mut().write_all(b"still").await.unwrap();
        let mut still = [0u8; 5];
        kept.0.read_exact(&mut still).await.unwrap();
        assert_eq!(&still, b"still");
        kept.0.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        assert!(kept.1.await.is_ok());
        world.serving.shutdown().await;
    });
}

#[test]
fn half_close_the_agent_shuts_its_write_side_and_the_upstream_still_answers() {
    run(async {
        let upstream = Upstream::start(Mode::AnswerAfterEof).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[("role", "db")]).await;
        let (local, remote) = pair().await;
        let forwarding = {
            let (agent, addr) = (agent.clone(), world.addr.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "db", remote).await })
        };
        let request = pattern(7, 100_000);
        let (report, answer) = exchange(local, &request).await;
        assert!(report.starts_with("client=node-1 "), "{report}");
        assert_eq!(answer, b"got 100000 bytes\n", "the answer came after the upstream saw EOF");
        assert_eq!(upstream.heard.recv().await.unwrap(), request);
        let transfer = forwarding.await.unwrap();
        assert_eq!(transfer.sent, 100_000);
        world.serving.shutdown().await;
    });
}

#[test]
fn half_close_the_upstream_shuts_its_write_side_and_still_hears_the_agent() {
    run(async {
        let upstream = Upstream::start(Mode::GreetThenListen).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[("role", "db")]).await;
        let (local, remote) = pair().await;
        let forwarding = {
            let (agent, addr) = (agent.clone(), world.addr.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "db", remote).await })
        };
        let mut reader = BufReader::new(local.clone());
        let mut report = String::new();
        reader.read_line(&mut report).await.unwrap();
        let mut greeting = Vec::new();
        reader.read_to_end(&mut greeting).await.unwrap();
        assert_eq!(greeting, b"hello, agent\n", "then EOF: the upstream's write side is shut");
        // The other direction still runs.
        let mut writer = local;
        writer.write_all(b"after your end").await.unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(upstream.heard.recv().await.unwrap(), b"after your end");
        assert!(forwarding.await.is_ok());
        world.serving.shutdown().await;
    });
}

#[test]
fn an_upstream_that_resets_mid_stream_aborts_the_agents_stream() {
    run(async {
        let upstream = Upstream::start(Mode::Reset).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[("role", "db")]).await;
        let (mut local, remote) = pair().await;
        let forwarding = {
            let (agent, addr) = (agent.clone(), world.addr.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "db", remote).await })
        };
        local.write_all(b"first").await.unwrap();
        let result = forwarding.await;
        match result {
            Err(Error::Forward(ForwardError::Aborted { peer: "gateway", reason: AbortReason::UpstreamFailed })) => {}
            other => panic!("expected the gateway's abort, got {other:?}"),
        }
        world.serving.shutdown().await;
    });
}

#[test]
fn keepalives_keep_an_idle_forwarded_stream_open() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let config = GatewayConfig { idle_timeout: Duration::from_millis(400), ..GatewayConfig::default() };
        let world = World::start_with(services_for(&upstream), config).await;
        let agent = Agent::new(AgentConfig { keepalive: Duration::from_millis(100), ..AgentConfig::default() });
        let (saved, _) = world.join(&agent, "node-1", &[("role", "db")]).await;
        let (local, remote) = pair().await;
        let forwarding = {
            let (agent, addr) = (agent.clone(), world.addr.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "db", remote).await })
        };
        let mut local = BufReader::new(local);
        let mut report = String::new();
        local.read_line(&mut report).await.unwrap();
        smol::Timer::after(Duration::from_millis(1200)).await;
        local.get_mut().write_all(b"still here").await.unwrap();
        let mut back = [0u8; 10];
        local.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"still here", "three idle timeouts later");
        local.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        assert!(forwarding.await.is_ok());
        assert_eq!(world.gateway.stats().idle, 0);
        world.serving.shutdown().await;
    });
}

#[test]
fn a_gateway_that_only_echoes_is_reported_as_not_forwarding() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, echo).unwrap();
        let addr = serving.local_addr().to_string();
        let world = World { gateway, serving, addr };
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[]).await;
        let (local, _keep) = pair().await;
        let result = agent.forward(&world.addr, &MemoryKeyringStore::holding(saved), "db", local).await;
        let message = result.as_ref().unwrap_err().to_string();
        assert!(matches!(result, Err(Error::Forward(ForwardError::NotForwarding { .. }))), "{result:?}");
        assert!(message.contains("does not serve forwarded streams"), "{message}");
        world.serving.shutdown().await;
    });
}

/// A validator that attests every joining client as `node-7.example`, whatever its
/// evidence (the attestation tests check real evidence; here only the name matters).
struct NameEveryone;

impl Validator for NameEveryone {
    fn validate(&self, _: &EvidenceRequest<'_>) -> Result<Option<AttestedIdentity>, AttestationRefused> {
        Ok(Some(AttestedIdentity::new("node-7.example").unwrap()))
    }
}

#[test]
fn an_attested_name_rule_admits_the_attested_client_in_its_join_and_its_resumes() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let services = Services::new().with_service(
            "attested".parse().unwrap(),
            Service::new(upstream.addr.to_string()).allow(Rule::attested_name("node-7.example")),
        );
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let world = World::serve(gateway.with_validator(NameEveryone), services).await;
        let token = BootstrapToken::generate(&mut os_rng());
        let record = TokenRecord::new(token.clone(), None, 1).with_label("role", "db").unwrap();
        world.gateway.store().insert_token(record).await.unwrap();
        let agent = Agent::default();
        let keyrings = MemoryKeyringStore::new();
        // The stream runs in the join's own session, which carries the attested identity.
        let session = agent.join(&world.addr, token, &[world.gateway.pin()], id("node-7"), &keyrings).await.unwrap();
        let (local, remote) = pair().await;
        let service = ServiceName::new("attested").unwrap();
        let forwarding = smol::spawn(async move { boarding_smol::forward::forward(session, &service, remote).await });
        let (report, echoed) = exchange(local, b"attested").await;
        assert_eq!(echoed, b"attested");
        assert!(forwarding.await.is_ok());
        let seen = upstream.seen.recv().await.unwrap();
        assert_eq!(report, seen.report());
        assert_eq!(seen.attested.as_deref(), Some("node-7.example"));
        assert_eq!(seen.session, 0, "a join's session");
        assert_eq!(seen.labels.get("role").map(String::as_str), Some("db"));
        // A resumed session carries the identity attested at the join that created its
        // keyring: the rule matches it too, and the header says it is a resume.
        let saved = keyrings.load_keyring().await.unwrap().unwrap();
        let (local, remote) = pair().await;
        let forwarding = smol::spawn({
            let (agent, addr) = (agent.clone(), world.addr.clone());
            async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "attested", remote).await }
        });
        let (report, echoed) = exchange(local, b"resumed").await;
        assert_eq!(echoed, b"resumed");
        assert!(forwarding.await.is_ok());
        let seen = upstream.seen.recv().await.unwrap();
        assert_eq!(report, seen.report());
        assert_eq!(seen.attested.as_deref(), Some("node-7.example"));
        assert_eq!(seen.session, 1, "a resumed session");
        world.serving.shutdown().await;
    });
}

#[test]
fn the_gateway_answers_other_versions_and_malformed_requests_and_aborts_on_a_violation() {
    run(async {
        let upstream = Upstream::start(Mode::Echo).await;
        let world = World::start(services_for(&upstream)).await;
        let agent = Agent::default();
        let (saved, _) = world.join(&agent, "node-1", &[]).await;
        for (request, code) in [
            (&[0x01, 0x02, 0x02, b'd', b'b'][..], 5u8),
            (&[0x03, b'x'][..], 6),
            (&[0x01, 0x01, 0x02, b'D', b'B'][..], 6),
            (&[0x09][..], 6),
        ] {
            let mut session = agent.connect_with(&world.addr, saved.clone()).await.unwrap();
            session.send(request).await.unwrap();
            assert_eq!(session.recv().await.unwrap(), Some(vec![0x02, 0x01, code]), "{request:?}");
            assert_eq!(session.recv().await.unwrap(), None, "then the gateway's Close");
        }
        // Once the stream runs, an out-of-place message is a violation: Abort, then Close.
        let mut session = agent.connect_with(&world.addr, saved).await.unwrap();
        session.send(&[0x01, 0x01, 0x04, b'o', b'p', b'e', b'n']).await.unwrap();
        assert_eq!(session.recv().await.unwrap(), Some(vec![0x02, 0x01, 0x00]));
        session.send(&[0x02, 0x01, 0x00]).await.unwrap();
        let mut last = Vec::new();
        while let Some(message) = session.recv().await.unwrap() {
            last = message;
        }
        assert_eq!(last, [0x05, 0x05], "Abort (Violation) before the Close");
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1, "only the accepted stream reached the upstream");
        world.serving.shutdown().await;
    });
}
