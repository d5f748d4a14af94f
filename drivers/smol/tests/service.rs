//! The gateway as a service, over real TCP and TLS 1.3 on loopback: session caps, the
//! idle timeout and keepalives, revocation ending live sessions, and legitimate agents
//! getting through a slot attack. Every load here targets 127.0.0.0/8, is bounded in
//! count and time, and stops by itself.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boarding::client::SavedKeyring;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{
    Agent, AgentConfig, AgentSession, AgentStream, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore,
    MemoryStore, Serving, Store, echo, os_rng,
};
use smol::Async;
use smol::io::AsyncWriteExt;
use smol::net::TcpListener;

mod common;

use common::{id, stats_eventually};

fn run<F: Future<Output = ()>>(f: F) {
    common::run_within(Duration::from_secs(90), f);
}

async fn start(config: GatewayConfig) -> (Gateway<MemoryStore>, Serving, String) {
    let gateway = Gateway::open(MemoryStore::new(), config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = gateway.serve(listener, echo).unwrap();
    let addr = serving.local_addr().to_string();
    (gateway, serving, addr)
}

async fn unlimited_token(gateway: &Gateway<MemoryStore>) -> BootstrapToken {
    let token = BootstrapToken::generate(&mut os_rng());
    assert!(gateway.store().insert_token(TokenRecord::new(token.clone(), None, 0)).await.unwrap());
    token
}

async fn joined(
    agent: &Agent,
    gateway: &Gateway<MemoryStore>,
    addr: &str,
    token: &BootstrapToken,
    name: &str,
) -> SavedKeyring {
    let keyrings = MemoryKeyringStore::new();
    let session = agent.join(addr, token.clone(), &[gateway.pin()], id(name), &keyrings).await.unwrap();
    session.close().await.unwrap();
    keyrings.load_keyring().await.unwrap().unwrap()
}

async fn ping(session: &mut AgentSession<AgentStream>, msg: &[u8]) {
    session.send(msg).await.unwrap();
    assert_eq!(session.recv().await.unwrap().as_deref(), Some(msg));
}

/// `recv` with a bound: `None` if nothing came within `within`.
async fn recv_within(
    session: &mut AgentSession<AgentStream>,
    within: Duration,
) -> Option<Result<Option<Vec<u8>>, boarding_smol::Error>> {
    smol::future::or(async { Some(session.recv().await) }, async {
        smol::Timer::after(within).await;
        None
    })
    .await
}

#[test]
fn the_per_client_session_cap_closes_the_extra_session() {
    run(async {
        let config = GatewayConfig { max_sessions_per_client: 2, ..GatewayConfig::default() };
        let (gateway, serving, addr) = start(config).await;
        let token = unlimited_token(&gateway).await;
        let agent = Agent::default();
        let saved = joined(&agent, &gateway, &addr, &token, "capped").await;

        let mut first = agent.connect_with(&addr, saved.clone()).await.unwrap();
        let mut second = agent.connect_with(&addr, saved.clone()).await.unwrap();
        ping(&mut first, b"one").await;
        ping(&mut second, b"two").await;
        // The third is established by the handshake, then closed at once.
        let mut third = agent.connect_with(&addr, saved.clone()).await.unwrap();
        assert_eq!(third.recv().await.unwrap(), None, "an authenticated close, at once");
        assert_eq!(stats_eventually(&gateway, |s| s.over_session_cap == 1).await.over_session_cap, 1);
        // Another client is not affected by this one's cap.
        let other = joined(&agent, &gateway, &addr, &token, "other").await;
        let mut other = agent.connect_with(&addr, other).await.unwrap();
        ping(&mut other, b"other").await;
        // Closing one frees a place.
        first.close().await.unwrap();
        let mut fourth = None;
        for _ in 0..50 {
            let mut session = agent.connect_with(&addr, saved.clone()).await.unwrap();
            session.send(b"four").await.unwrap();
            if let Ok(Some(reply)) = session.recv().await {
                assert_eq!(reply, b"four");
                fourth = Some(session);
                break;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert!(fourth.is_some(), "a session fits again once one closed");
        serving.shutdown().await;
    });
}

#[test]
fn keepalives_keep_an_idle_session_and_the_idle_timeout_ends_a_silent_one() {
    run(async {
        let config = GatewayConfig { idle_timeout: Duration::from_millis(400), ..GatewayConfig::default() };
        let (gateway, serving, addr) = start(config).await;
        let token = unlimited_token(&gateway).await;
        let chatty = Agent::new(AgentConfig { keepalive: Duration::from_millis(100), ..AgentConfig::default() });
        let silent = Agent::new(AgentConfig { keepalive: Duration::from_secs(3600), ..AgentConfig::default() });
        let saved = joined(&chatty, &gateway, &addr, &token, "idle").await;

        // Waiting in recv three idle timeouts long: the keepalives keep it open.
        let mut kept = chatty.connect_with(&addr, saved.clone()).await.unwrap();
        assert!(recv_within(&mut kept, Duration::from_millis(1200)).await.is_none(), "nothing arrives");
        ping(&mut kept, b"still here").await;

        // Without keepalives, the gateway closes it after its idle timeout.
        let mut dropped = silent.connect_with(&addr, saved).await.unwrap();
        let started = Instant::now();
        let outcome = recv_within(&mut dropped, Duration::from_secs(5)).await;
        assert!(matches!(outcome, Some(Ok(None))), "an authenticated close: {outcome:?}");
        assert!(started.elapsed() >= Duration::from_millis(350), "not before the timeout");
        assert!(stats_eventually(&gateway, |s| s.idle >= 1).await.idle >= 1);
        serving.shutdown().await;
    });
}

#[test]
fn revoking_a_client_closes_its_live_sessions_within_a_second() {
    run(async {
        let (gateway, serving, addr) = start(GatewayConfig::default()).await;
        let token = unlimited_token(&gateway).await;
        let agent = Agent::default();
        let revoked = joined(&agent, &gateway, &addr, &token, "revoked").await;
        let kept = joined(&agent, &gateway, &addr, &token, "kept").await;
        let mut a = agent.connect_with(&addr, revoked.clone()).await.unwrap();
        let mut b = agent.connect_with(&addr, revoked.clone()).await.unwrap();
        let mut c = agent.connect_with(&addr, kept).await.unwrap();
        for s in [&mut a, &mut b, &mut c] {
            ping(s, b"before").await;
        }

        let started = Instant::now();
        assert_eq!(gateway.session_count(), 3);
        assert_eq!(gateway.revoke_client(id("revoked")).await.unwrap(), (true, 2));
        // The revoked sessions leave the global count (and its cap) at once.
        assert_eq!(gateway.session_count(), 1);
        for s in [&mut a, &mut b] {
            let outcome = recv_within(s, Duration::from_secs(1)).await;
            assert!(matches!(outcome, Some(Ok(None))), "closed with an authenticated close: {outcome:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(1), "within a second: {:?}", started.elapsed());
        ping(&mut c, b"after").await;
        // And it cannot come back.
        let err = agent.connect_with(&addr, revoked).await.unwrap_err();
        assert!(matches!(err, boarding_smol::Error::UnknownClient { .. }), "{err:?}");
        assert!(stats_eventually(&gateway, |s| s.revoked == 2).await.revoked == 2);
        serving.shutdown().await;
    });
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<Async<std::net::TcpStream>> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    bind(&fd, &SocketAddrV4::new(from, 0))?;
    connect(&fd, &to)?;
    Async::new(std::net::TcpStream::from(fd))
}

/// The first flight of a real TLS 1.3 client: a ClientHello the gateway accepts as
/// progress, after which the flooder goes silent.
fn client_hello(pin: boarding::pin::Pin) -> Vec<u8> {
    let verifier = Arc::new(boarding_smol::tls::PinVerifier::new(vec![pin]));
    let config = boarding_smol::tls::client_config(verifier).unwrap();
    let name = rustls::pki_types::ServerName::try_from(boarding_smol::tls::SERVER_NAME).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Keeps `count` connections from `from` open, reopening each as the gateway drops it,
/// at most `rate` opens per second, until `stop`. With `hello`, each first sends it.
async fn hold_slots(
    from: Ipv4Addr,
    to: SocketAddr,
    count: usize,
    rate: u32,
    hello: Option<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut open: Vec<Async<std::net::TcpStream>> = Vec::new();
    let mut opened = 0usize;
    let pause = Duration::from_secs(1) / rate.max(1);
    while !stop.load(Ordering::Relaxed) {
        // Forget connections the gateway closed (a zero-byte read, or an error).
        let mut alive = Vec::with_capacity(open.len());
        for stream in open {
            let mut probe = [0u8; 1];
            match stream.get_ref().peek(&mut probe) {
                Ok(n) if n > 0 => alive.push(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive.push(stream),
                _ => {}
            }
        }
        open = alive;
        if open.len() < count
            && let Ok(mut stream) = connect_from(from, to)
        {
            if let Some(hello) = &hello {
                let _ = stream.write_all(hello).await;
            }
            open.push(stream);
            opened += 1;
        }
        smol::Timer::after(pause).await;
    }
    opened
}

#[test]
fn legitimate_agents_get_through_a_slot_attack() {
    run(async {
        let config = GatewayConfig {
            max_handshakes: 32,
            max_handshakes_per_source: 16,
            hello_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            ..GatewayConfig::default()
        };
        let (gateway, serving, addr) = start(config).await;
        let to: SocketAddr = addr.parse().unwrap();
        let token = unlimited_token(&gateway).await;
        let agent = Agent::default();
        let saved = joined(&agent, &gateway, &addr, &token, "legit-0").await;

        // Silent connections from one address, reopened at 100/s; ClientHellos that
        // then stall from another. Together they fill all 32 handshake slots.
        let stop = Arc::new(AtomicBool::new(false));
        let silent = smol::spawn(hold_slots(Ipv4Addr::new(127, 0, 0, 2), to, 200, 100, None, stop.clone()));
        let hello = client_hello(gateway.pin());
        let flood = smol::spawn(hold_slots(Ipv4Addr::new(127, 0, 0, 3), to, 200, 100, Some(hello), stop.clone()));
        smol::Timer::after(Duration::from_millis(1500)).await;

        // Legitimate resumes and joins from 127.0.0.1 meanwhile.
        const RESUMES: usize = 40;
        const JOINS: usize = 10;
        let mut ok = 0usize;
        let mut latencies = Vec::new();
        for i in 0..RESUMES + JOINS {
            let started = Instant::now();
            let outcome = if i < RESUMES {
                agent.connect_with(&addr, saved.clone()).await.map(drop)
            } else {
                let keyrings = MemoryKeyringStore::new();
                agent.join(&addr, token.clone(), &[gateway.pin()], id(&format!("legit-{i}")), &keyrings).await.map(drop)
            };
            latencies.push(started.elapsed());
            match outcome {
                Ok(()) => ok += 1,
                Err(e) => eprintln!("legitimate attempt {i} failed: {e}"),
            }
            // Time for the attackers to refill the slots the last attempt freed.
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (silent_opened, flood_opened) = (silent.await, flood.await);
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        let p99 = latencies[latencies.len() * 99 / 100];
        let stats = gateway.stats();
        eprintln!(
            "slot attack: {ok}/{} legitimate succeeded, p50 {p50:?}, p99 {p99:?}; attacker opened {silent_opened} \
             silent and {flood_opened} hello connections; gateway {stats:?}",
            RESUMES + JOINS
        );
        assert_eq!(ok, RESUMES + JOINS, "every legitimate join and resume got through");
        assert!(stats.evicted >= 1, "silent handshakes were evicted for them: {stats:?}");
        assert!(stats.refused >= 1, "the per-source cap refused the attackers' extra connections: {stats:?}");
        serving.shutdown().await;
    });
}

/// A store that, while `hold` is set, answers a keyring lookup from the store it wraps
/// and then waits for `release` before handing the answer back: the window between a
/// resume's lookup and its session's registration, held open.
struct HeldLookups {
    inner: MemoryStore,
    hold: AtomicBool,
    looked_up: smol::channel::Sender<()>,
    release: smol::channel::Receiver<()>,
}

impl Store for HeldLookups {
    async fn answer(
        &self,
        request: boarding::storage::StorageRequest,
    ) -> Result<boarding::storage::StorageAnswer, boarding_smol::StoreError> {
        let lookup = matches!(request, boarding::storage::StorageRequest::LookupKeyring { .. });
        let answer = self.inner.answer(request).await;
        if lookup && self.hold.swap(false, Ordering::SeqCst) {
            let _ = self.looked_up.send(()).await;
            let _ = self.release.recv().await;
        }
        answer
    }
    async fn identity_or_insert(
        &self,
        candidate: boarding::identity::ServerIdentity,
    ) -> Result<boarding::identity::ServerIdentity, boarding_smol::StoreError> {
        self.inner.identity_or_insert(candidate).await
    }
    async fn insert_token(&self, record: TokenRecord) -> Result<bool, boarding_smol::StoreError> {
        self.inner.insert_token(record).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, boarding_smol::StoreError> {
        self.inner.tokens().await
    }
    async fn revoke_token(&self, id: boarding::token::TokenId) -> Result<bool, boarding_smol::StoreError> {
        self.inner.revoke_token(id).await
    }
    async fn clients(&self) -> Result<Vec<boarding::storage::KeyringRecord>, boarding_smol::StoreError> {
        self.inner.clients().await
    }
    async fn revoke_client(&self, id: boarding::identity::ClientId) -> Result<bool, boarding_smol::StoreError> {
        self.inner.revoke_client(id).await
    }
}

#[test]
fn a_revocation_during_a_resume_closes_the_session_it_establishes() {
    run(async {
        let (looked_up, at_lookup) = smol::channel::bounded(1);
        let (release, released) = smol::channel::bounded(1);
        let store =
            HeldLookups { inner: MemoryStore::new(), hold: AtomicBool::new(false), looked_up, release: released };
        let gateway = Gateway::open(store, GatewayConfig::default()).await.unwrap();
        let token = BootstrapToken::generate(&mut os_rng());
        assert!(gateway.store().insert_token(TokenRecord::new(token.clone(), None, 0)).await.unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, echo).unwrap();
        let addr = serving.local_addr().to_string();
        let agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        let keyrings = MemoryKeyringStore::new();
        agent.join(&addr, token, &[gateway.pin()], id("racing"), &keyrings).await.unwrap().close().await.unwrap();
        let saved = keyrings.load_keyring().await.unwrap().unwrap();

        // The resume's lookup finds the keyring; the revocation lands before the resume
        // completes, so it has no session to end.
        gateway.store().hold.store(true, Ordering::SeqCst);
        let resuming = smol::spawn({
            let (agent, addr) = (agent.clone(), addr.clone());
            async move { agent.connect_with(&addr, saved).await }
        });
        at_lookup.recv().await.unwrap();
        assert_eq!(gateway.revoke_client(id("racing")).await.unwrap(), (true, 0));
        release.send(()).await.unwrap();

        // The agent proved the keyring it looked up, but the gateway's completion check
        // finds it gone: the resume is refused after the agent's last message, so the
        // refusal is the first thing its session receives, instead of an echo.
        let mut session = resuming.await.unwrap();
        let outcome = recv_within(&mut session, Duration::from_secs(5)).await;
        let refused = match outcome {
            Some(Err(e)) => e,
            other => panic!("the revoked client's resume was not refused: {other:?}"),
        };
        assert_eq!(refused.peer_alert(), Some(boarding::Alert::BadProof), "{refused}");
        assert_eq!(gateway.session_count(), 0);
        serving.shutdown().await;
    });
}
