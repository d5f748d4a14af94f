//! End-to-end tests over real TCP and TLS 1.3 on 127.0.0.1, with real redb files.

use std::sync::Arc;
use std::time::Duration;

use boarding::Alert;
use boarding::channel::Side;
use boarding::error::{PeerMisbehaved, ReceivedAlert};
use boarding::identity::{ClientId, ServerIdentity};
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{
    Agent, Error, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore, MemoryStore, RedbKeyringStore, RedbStore,
    Serving, Store, echo, os_rng, unix_now,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

mod common;

use common::{id, stats_eventually};

/// Every test body runs under this deadline so a hang fails instead of blocking CI.
fn run<F: Future<Output = ()>>(f: F) {
    common::run_within(Duration::from_secs(60), f);
}

async fn start<S: Store>(gateway: &Gateway<S>) -> (Serving, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = gateway.serve(listener, echo).unwrap();
    let addr = serving.local_addr().to_string();
    (serving, addr)
}

async fn token<S: Store>(gateway: &Gateway<S>, expires_at: Option<u64>, uses: u32) -> BootstrapToken {
    let token = BootstrapToken::generate(&mut os_rng());
    let record = TokenRecord::new(token.clone(), expires_at, uses).with_label("role", "worker").unwrap();
    assert!(gateway.store().insert_token(record).await.unwrap());
    token
}

async fn ping<IO: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin, P>(
    session: &mut boarding_smol::Session<IO, P>,
    msg: &[u8],
) {
    session.send(msg).await.unwrap();
    assert_eq!(session.recv().await.unwrap().as_deref(), Some(msg));
}

#[test]
fn join_resume_and_echo_with_redb() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let gateway = Gateway::open(RedbStore::gateway_in(dir.path().join("gw")).unwrap(), GatewayConfig::default())
            .await
            .unwrap();
        let token = token(&gateway, Some(unix_now() + 600), 1).await;
        let (serving, addr) = start(&gateway).await;
        let keyrings = RedbKeyringStore::agent_in(dir.path().join("agent")).unwrap();
        let agent = Agent::default();

        let mut session = agent.join(&addr, token.clone(), &[gateway.pin()], id("node-1"), &keyrings).await.unwrap();
        assert!(!session.peer().resumed);
        assert_eq!(session.peer().server_pin, gateway.pin());
        ping(&mut session, b"hello").await;
        ping(&mut session, &vec![7u8; 60_000]).await;
        session.close().await.unwrap();

        let saved = keyrings.load_keyring().await.unwrap().expect("the keyring was stored");
        assert_eq!(saved.client_id, id("node-1"));
        assert_eq!(saved.token_id, token.id());

        for _ in 0..3 {
            let mut session = agent.connect(&addr, &keyrings).await.unwrap();
            assert!(session.peer().resumed);
            ping(&mut session, b"again").await;
            session.close().await.unwrap();
        }
        let clients = gateway.store().clients().await.unwrap();
        assert_eq!(clients.len(), 1);
        assert!(clients[0].confirmed);
        assert_eq!(clients[0].labels.get("role").map(String::as_str), Some("worker"));
        let tokens = gateway.store().tokens().await.unwrap();
        assert_eq!(tokens[0].use_count, 1);
        serving.shutdown().await;
    });
}

#[test]
fn the_application_sees_the_verified_client() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let token = token(&gateway, None, 0).await;
        let (seen_tx, seen_rx) = smol::channel::unbounded();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway
            .serve(listener, move |session| {
                let seen_tx = seen_tx.clone();
                async move {
                    let _ = seen_tx.send(session.peer().clone()).await;
                    echo(session).await
                }
            })
            .unwrap();
        let addr = serving.local_addr().to_string();
        let keyrings = MemoryKeyringStore::new();
        let mut session =
            Agent::default().join(&addr, token.clone(), &[gateway.pin()], id("node-7"), &keyrings).await.unwrap();
        ping(&mut session, b"x").await;
        session.close().await.unwrap();
        let peer = seen_rx.recv().await.unwrap();
        assert_eq!(peer.client_id(), &id("node-7"));
        assert_eq!(peer.token_id(), token.id());
        assert_eq!(peer.labels().get("role").map(String::as_str), Some("worker"));
        assert!(!peer.resumed());
        serving.shutdown().await;
    });
}

#[test]
fn wrong_pin_is_refused_with_both_pins_shown() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let token = token(&gateway, None, 1).await;
        let (serving, addr) = start(&gateway).await;
        let wrong = ServerIdentity::from_seed([3; 32]).pin();
        let keyrings = MemoryKeyringStore::new();
        let err = Agent::default().join(&addr, token.clone(), &[wrong], id("node-1"), &keyrings).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::PinMismatch { layer: "TLS certificate", .. }), "{err:?}");
        assert!(text.contains(&gateway.pin().to_string()) && text.contains(&wrong.to_string()), "{text}");
        assert!(keyrings.load_keyring().await.unwrap().is_none());
        // The token was not spent: the right pin still joins.
        let session = Agent::default().join(&addr, token, &[wrong, gateway.pin()], id("node-1"), &keyrings).await;
        session.unwrap().close().await.unwrap();
        serving.shutdown().await;
    });
}

#[test]
fn protocol_level_pin_check_works_without_tls() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let token = token(&gateway, None, 1).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gw = gateway.clone();
        let server = smol::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            gw.handshake(stream).await.map(|_| ())
        });
        let wrong = ServerIdentity::from_seed([4; 32]).pin();
        let stream = TcpStream::connect(addr).await.unwrap();
        let err = boarding_smol::agent::join(stream, token, &[wrong], id("n"), &MemoryKeyringStore::new(), 1024, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PinMismatch { layer: "protocol identity", .. }), "{err:?}");
        assert!(err.to_string().contains(&gateway.pin().to_string()));
        let server_err = server.await.unwrap_err();
        assert!(
            matches!(
                server_err,
                Error::Handshake {
                    source: boarding::Error::PeerAlert(ReceivedAlert::Known(Alert::BadIdentity)),
                    side: Side::Server
                }
            ),
            "{server_err:?}"
        );
    });
}

async fn refused_with(addr: &str, pin: Pin, token: BootstrapToken, client: &str) -> Alert {
    let err = Agent::default().join(addr, token, &[pin], id(client), &MemoryKeyringStore::new()).await.unwrap_err();
    err.peer_alert().unwrap_or_else(|| panic!("expected an alert, got {err}"))
}

#[test]
fn expired_exhausted_revoked_and_unknown_tokens() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let (serving, addr) = start(&gateway).await;
        let pin = gateway.pin();

        let expired = token(&gateway, Some(unix_now().saturating_sub(1)), 1).await;
        assert_eq!(refused_with(&addr, pin, expired, "a").await, Alert::ExpiredToken);

        let once = token(&gateway, None, 1).await;
        let s = Agent::default().join(&addr, once.clone(), &[pin], id("b"), &MemoryKeyringStore::new()).await.unwrap();
        s.close().await.unwrap();
        assert_eq!(refused_with(&addr, pin, once, "c").await, Alert::ExhaustedToken);

        let revoked = token(&gateway, None, 5).await;
        assert!(gateway.store().revoke_token(revoked.id()).await.unwrap());
        assert_eq!(refused_with(&addr, pin, revoked, "d").await, Alert::UnknownToken);

        let never_issued = BootstrapToken::generate(&mut os_rng());
        assert_eq!(refused_with(&addr, pin, never_issued, "e").await, Alert::UnknownToken);

        // The agent is told why, as a typed alert.
        let err = Agent::default()
            .join(&addr, token(&gateway, Some(1), 1).await, &[pin], id("f"), &MemoryKeyringStore::new())
            .await
            .unwrap_err();
        assert_eq!(err.peer_alert(), Some(Alert::ExpiredToken), "{err}");
        assert_eq!(stats_eventually(&gateway, |s| s.established == 1).await.established, 1);
        serving.shutdown().await;
    });
}

#[test]
fn eight_agents_race_for_a_one_use_token() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let gateway = Gateway::open(RedbStore::gateway_in(dir.path().join("gw")).unwrap(), GatewayConfig::default())
            .await
            .unwrap();
        let token = token(&gateway, None, 1).await;
        let (serving, addr) = start(&gateway).await;
        let pin = gateway.pin();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (addr, token) = (addr.clone(), token.clone());
                smol::spawn(async move {
                    let keyrings = MemoryKeyringStore::new();
                    let joined =
                        Agent::default().join(&addr, token, &[pin], id(&format!("racer-{i}")), &keyrings).await;
                    match joined {
                        Ok(session) => {
                            session.close().await.unwrap();
                            Ok(())
                        }
                        Err(e) => Err(e.peer_alert()),
                    }
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await {
                Ok(()) => wins += 1,
                Err(alert) => assert_eq!(alert, Some(Alert::ExhaustedToken)),
            }
        }
        assert_eq!(wins, 1, "exactly one agent wins");
        let (tokens, keyrings) = gateway.store().snapshot().await.unwrap();
        assert_eq!(tokens[0].use_count, 1);
        assert_eq!(keyrings.len(), 1);
        serving.shutdown().await;
    });
}

#[test]
fn agents_resume_after_a_gateway_restart_and_revoked_clients_cannot() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let agents: Vec<(ClientId, RedbKeyringStore)> = (0..3)
            .map(|i| {
                (id(&format!("node-{i}")), RedbKeyringStore::agent_in(dir.path().join(format!("agent-{i}"))).unwrap())
            })
            .collect();
        let pin;
        {
            let gateway =
                Gateway::open(RedbStore::gateway_in(dir.path().join("gw")).unwrap(), GatewayConfig::default())
                    .await
                    .unwrap();
            pin = gateway.pin();
            let token = token(&gateway, None, 3).await;
            let (serving, addr) = start(&gateway).await;
            for (client, keyrings) in &agents {
                let s = Agent::default().join(&addr, token.clone(), &[pin], client.clone(), keyrings).await.unwrap();
                s.close().await.unwrap();
            }
            serving.shutdown().await;
        }
        // A new gateway process on the same data directory: same identity, same keyrings.
        let gateway = Gateway::open(RedbStore::gateway_in(dir.path().join("gw")).unwrap(), GatewayConfig::default())
            .await
            .unwrap();
        assert_eq!(gateway.pin(), pin, "the identity survives a restart");
        let (serving, addr) = start(&gateway).await;
        for (_, keyrings) in &agents {
            let mut s = Agent::default().connect(&addr, keyrings).await.unwrap();
            ping(&mut s, b"after restart").await;
            s.close().await.unwrap();
        }
        assert!(gateway.store().revoke_client(id("node-1")).await.unwrap());
        let err = Agent::default().connect(&addr, &agents[1].1).await.unwrap_err();
        // The decoy's MAC fails at a gateway whose key matched the pin: the client is unknown.
        assert!(
            matches!(&err, Error::UnknownClient { client_id, .. } if client_id.as_str() == "node-1"),
            "a revoked client sees the decoy's MAC fail: {err:?}"
        );
        // The others are unaffected.
        Agent::default().connect(&addr, &agents[2].1).await.unwrap().close().await.unwrap();
        serving.shutdown().await;
    });
}

#[test]
fn a_silent_client_hits_the_handshake_deadline() {
    run(async {
        let config = GatewayConfig { handshake_timeout: Duration::from_millis(300), ..GatewayConfig::default() };
        let gateway = Gateway::open(MemoryStore::new(), config).await.unwrap();
        // Directly: the error names the deadline.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let err = gateway.accept(stream).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("did not complete within 300ms"), "{err}");

        // Through the accept loop: the silent client is disconnected, others are served.
        let (serving, addr) = start(&gateway).await;
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        let token = token(&gateway, None, 1).await;
        let s =
            Agent::default().join(&addr, token, &[gateway.pin()], id("n"), &MemoryKeyringStore::new()).await.unwrap();
        s.close().await.unwrap();
        let mut buf = [0u8; 64];
        let n = smol::future::or(async { silent.read(&mut buf).await.unwrap_or(0) }, async {
            smol::Timer::after(Duration::from_secs(10)).await;
            usize::MAX
        })
        .await;
        assert_eq!(n, 0, "the gateway closed the silent connection");
        assert_eq!(stats_eventually(&gateway, |s| s.failed == 1).await.failed, 1);
        serving.shutdown().await;
    });
}

#[test]
fn garbage_and_tls_without_the_protocol_are_rejected_and_the_gateway_keeps_serving() {
    run(async {
        let config = GatewayConfig { handshake_timeout: Duration::from_secs(3), ..GatewayConfig::default() };
        let gateway = Gateway::open(MemoryStore::new(), config).await.unwrap();

        // Garbage instead of TLS, directly: a clear error.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let err = gateway.accept(stream).await.unwrap_err();
        assert!(err.to_string().contains("not a Boarding agent speaking TLS 1.3"), "{err}");

        // TLS 1.3 that does not speak Boarding, directly: a clear protocol error.
        let (err, ()) = smol::future::zip(
            async {
                let (stream, _) = listener.accept().await.unwrap();
                gateway.accept(stream).await
            },
            async {
                let mut tls = tls_client(addr, gateway.pin()).await;
                tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
                tls.flush().await.unwrap();
                let mut reply = Vec::new();
                let _ = tls.read_to_end(&mut reply).await;
                // The gateway answers with an unauthenticated Alert frame (type 0x15).
                assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
            },
        )
        .await;
        let err = err.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Handshake {
                    source: boarding::Error::PeerMisbehaved(PeerMisbehaved::Malformed(_)),
                    side: Side::Server
                }
            ),
            "{err:?}"
        );

        // Through the accept loop, with a real agent in between.
        let (serving, addr) = start(&gateway).await;
        let token = token(&gateway, None, 0).await;
        for round in 0..3 {
            let mut g = TcpStream::connect(&addr).await.unwrap();
            g.write_all(b"\x00\x01 definitely not TLS\r\n").await.unwrap();
            let mut t = tls_client(addr.parse().unwrap(), gateway.pin()).await;
            t.write_all(&[0x01, 0, 0, 0, 3, 9, 9, 9]).await.unwrap();
            t.flush().await.unwrap();
            let client = id(&format!("good-{round}"));
            let mut s = Agent::default()
                .join(&addr, token.clone(), &[gateway.pin()], client, &MemoryKeyringStore::new())
                .await
                .unwrap();
            ping(&mut s, b"still serving").await;
            s.close().await.unwrap();
            let mut sink = Vec::new();
            let _ = g.read_to_end(&mut sink).await;
            let _ = t.read_to_end(&mut sink).await;
        }
        let stats = stats_eventually(&gateway, |s| s.established == 3 && s.failed == 6).await;
        assert_eq!(stats.established, 3);
        assert_eq!(stats.failed, 6, "{stats:?}");
        serving.shutdown().await;
    });
}

/// A TLS 1.3 client with the gateway's pin but no Boarding protocol.
async fn tls_client(addr: std::net::SocketAddr, pin: Pin) -> futures_rustls::client::TlsStream<TcpStream> {
    let verifier = Arc::new(boarding_smol::tls::PinVerifier::new(vec![pin]));
    let config = boarding_smol::tls::client_config(verifier).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(boarding_smol::tls::SERVER_NAME).unwrap();
    futures_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap()
}

#[test]
fn handshake_cap_frame_cap_and_graceful_shutdown() {
    run(async {
        let config = GatewayConfig {
            max_handshakes: 1,
            max_payload: 1024,
            handshake_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_millis(500),
            ..GatewayConfig::default()
        };
        let gateway = Gateway::open(MemoryStore::new(), config).await.unwrap();
        let token = token(&gateway, None, 0).await;
        let (serving, addr) = start(&gateway).await;

        // One silent connection takes the only handshake slot; an agent's connection
        // evicts it (it never sent a ClientHello) and joins.
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        smol::Timer::after(Duration::from_millis(100)).await;
        let mut session = Agent::default()
            .join(&addr, token.clone(), &[gateway.pin()], id("y"), &MemoryKeyringStore::new())
            .await
            .expect("a legitimate join evicts a silent connection");
        assert_eq!(stats_eventually(&gateway, |s| s.evicted == 1).await.evicted, 1);
        let mut buf = [0u8; 1];
        assert_eq!(silent.read(&mut buf).await.unwrap_or(0), 0, "the evicted connection was closed");

        // A message over the gateway's frame cap ends the session on the gateway side.
        ping(&mut session, &[1u8; 1024]).await;
        session.send(&[2u8; 2000]).await.unwrap();
        assert!(session.recv().await.is_err(), "the gateway dropped the session");

        // Graceful shutdown finishes although a session is still open (grace, then cancel).
        let mut open =
            Agent::default().join(&addr, token, &[gateway.pin()], id("z"), &MemoryKeyringStore::new()).await.unwrap();
        ping(&mut open, b"open").await;
        serving.shutdown().await;
        assert_eq!(open.recv().await.unwrap(), None, "shutdown closed the session with an authenticated close");
        assert!(TcpStream::connect(&addr).await.is_err(), "no longer listening");
    });
}

#[test]
fn tls_prefers_the_hybrid_post_quantum_key_exchange() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let token = token(&gateway, None, 0).await;
        let (serving, addr) = start(&gateway).await;
        let session =
            Agent::default().join(&addr, token, &[gateway.pin()], id("pq"), &MemoryKeyringStore::new()).await.unwrap();
        let (_, tls) = session.stream().get_ref();
        assert_eq!(tls.negotiated_key_exchange_group().map(|g| g.name()), Some(rustls::NamedGroup::X25519MLKEM768));
        assert_eq!(tls.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        session.close().await.unwrap();
        serving.shutdown().await;
    });
}

/// A relay that terminates the agent's TLS with a certificate of its own (whose key the
/// agent pins, as a certificate that chains to a pinned CA key would pass), opens its own
/// TLS session to the gateway, and copies the plaintext both ways: what channel binding
/// (`spec/PROTOCOL.md` §6.1) stops. Returns its address and the pin of its key.
async fn tls_relay(gateway: String, gateway_pin: Pin) -> (String, Pin) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec![boarding_smol::tls::SERVER_NAME.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let relay_pin = Pin::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&key));
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut server = rustls::ServerConfig::builder_with_provider(boarding_smol::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
    server.alpn_protocols = vec![boarding_smol::tls::ALPN.to_vec()];
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(server));
    let verifier = Arc::new(boarding_smol::tls::PinVerifier::new(vec![gateway_pin]));
    let connector = futures_rustls::TlsConnector::from(boarding_smol::tls::client_config(verifier).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    smol::spawn(async move {
        while let Ok((agent_side, _)) = listener.accept().await {
            let (acceptor, connector, gateway) = (acceptor.clone(), connector.clone(), gateway.clone());
            smol::spawn(async move {
                let Ok(agent_tls) = acceptor.accept(agent_side).await else { return };
                let Ok(upstream) = TcpStream::connect(&gateway).await else { return };
                let name = rustls::pki_types::ServerName::try_from(boarding_smol::tls::SERVER_NAME).unwrap();
                let Ok(gateway_tls) = connector.connect(name, upstream).await else { return };
                let (agent_read, agent_write) = smol::io::split(agent_tls);
                let (gateway_read, gateway_write) = smol::io::split(gateway_tls);
                let up = smol::io::copy(agent_read, gateway_write);
                let down = smol::io::copy(gateway_read, agent_write);
                let _ = smol::future::zip(up, down).await;
            })
            .detach();
        }
    })
    .detach();
    (addr, relay_pin)
}

#[test]
fn a_handshake_relayed_between_two_tls_sessions_fails_and_charges_nothing() {
    run(async {
        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let token = token(&gateway, None, 1).await;
        let (serving, addr) = start(&gateway).await;
        let (relay, relay_pin) = tls_relay(addr.clone(), gateway.pin()).await;
        let pins = [gateway.pin(), relay_pin];
        let agent = Agent::new(boarding_smol::AgentConfig { retries: 0, ..Default::default() });
        let keyrings = MemoryKeyringStore::new();
        // The relay passes the agent's TLS check and relays the gateway's identity, but the
        // two TLS sessions export different bindings: the gateway's challenge signs another
        // transcript than the agent's.
        let err = agent.join(&relay, token.clone(), &pins, id("relayed"), &keyrings).await.unwrap_err();
        assert!(
            matches!(err.protocol(), Some(boarding::Error::PeerMisbehaved(PeerMisbehaved::TranscriptMismatch))),
            "{err:?}"
        );
        assert!(keyrings.load_keyring().await.unwrap().is_none());
        assert_eq!(gateway.store().tokens().await.unwrap()[0].use_count, 0, "the relayed join was charged");
        // Directly, the same agent joins; then a resume through the relay fails too.
        agent.join(&addr, token, &pins, id("relayed"), &keyrings).await.unwrap().close().await.unwrap();
        let saved = keyrings.load_keyring().await.unwrap().unwrap();
        let err = agent.connect_with(&relay, saved.clone()).await;
        // The resume's TLS check pins the gateway key alone, which the relay lacks.
        assert!(matches!(err, Err(Error::PinMismatch { layer: "TLS certificate", .. })), "{err:?}");
        agent.connect_with(&addr, saved).await.unwrap().close().await.unwrap();
        serving.shutdown().await;
    });
}
