//! Keyring rotation through the smol gateway and agent over real TCP and TLS 1.3 on
//! loopback: the agent stores each rotation before it confirms, a copy of an old keyring
//! is told `RetiredKeyring` and counted, a resume with no store to keep a rotation in is
//! abandoned without harm, and concurrent resumes of one agent never trip over each other.

use std::time::Duration;

use boarding::Alert;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{
    Agent, Error, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore, MemoryStore, Serving, Store, echo, os_rng,
};
use smol::net::TcpListener;

mod common;

use common::id;

fn run<F: Future<Output = ()>>(f: F) {
    common::run_within(Duration::from_secs(60), f);
}

async fn start() -> (Gateway<MemoryStore>, Serving, String, MemoryKeyringStore) {
    let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = gateway.serve(listener, echo).unwrap();
    let addr = serving.local_addr().to_string();
    let token = BootstrapToken::generate(&mut os_rng());
    assert!(gateway.store().insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap());
    let keyrings = MemoryKeyringStore::new();
    let session = Agent::default().join(&addr, token, &[gateway.pin()], id("node-1"), &keyrings).await.unwrap();
    session.close().await.unwrap();
    (gateway, serving, addr, keyrings)
}

async fn current(gateway: &Gateway<MemoryStore>) -> boarding::storage::KeyringRecord {
    gateway.store().clients().await.unwrap().into_iter().next().expect("node-1 has a record")
}

#[test]
fn a_rotation_is_stored_by_the_agent_and_a_copy_of_the_old_keyring_is_refused_and_counted() {
    run(async {
        let (gateway, _serving, addr, keyrings) = start().await;
        let old = keyrings.load_keyring().await.unwrap().unwrap();
        let stolen = MemoryKeyringStore::holding(old.clone());
        assert!(gateway.request_rotation(id("node-1")).await.unwrap());
        assert!(!gateway.request_rotation(id("nobody")).await.unwrap());

        let agent = Agent::default();
        let mut session = agent.connect(&addr, &keyrings).await.unwrap();
        assert!(session.peer().rotated);
        session.send(b"after").await.unwrap();
        assert_eq!(session.recv().await.unwrap().as_deref(), Some(&b"after"[..]));
        session.close().await.unwrap();
        let stored = keyrings.load_keyring().await.unwrap().unwrap();
        assert_eq!(stored.rotated_from.as_ref(), Some(&old.keyring), "both kept until a resume shows which");
        assert_eq!(current(&gateway).await.keyring, stored.keyring);

        // The next resume settles: the agent keeps the new keyring alone.
        agent.connect(&addr, &keyrings).await.unwrap().close().await.unwrap();
        let settled = keyrings.load_keyring().await.unwrap().unwrap();
        assert_eq!((settled.keyring, settled.rotated_from), (stored.keyring, None));

        // The copy: its handshake ends, and the refusal comes where the first frame would.
        let mut session = Agent::default().connect(&addr, &stolen).await.unwrap();
        let refused = session.recv().await.expect_err("a clone's session carries nothing");
        assert_eq!(refused.peer_alert(), Some(Alert::RetiredKeyring), "{refused}");
        let stats = common::stats_eventually(&gateway, |s| s.clones_suspected == 1).await;
        assert_eq!((stats.rotated, stats.clones_suspected), (1, 1));
        let metrics = gateway.encode_metrics().await.unwrap();
        assert!(metrics.contains("boarding_keyrings_rotated_total 1"), "{metrics}");
        assert!(metrics.contains("boarding_clones_suspected_total 1"), "{metrics}");
        assert!(metrics.contains("outcome=\"retired_keyring\""), "{metrics}");
        let suspicion = current(&gateway).await.clone_suspected.expect("recorded");
        assert_eq!((suspicion.count, suspicion.keyring_id), (1, old.keyring.id()));
        // The owner carries on.
        agent.connect(&addr, &keyrings).await.unwrap().close().await.unwrap();
    });
}

#[test]
fn a_resume_with_no_store_for_the_rotation_is_abandoned_and_changes_nothing() {
    run(async {
        let (gateway, _serving, addr, keyrings) = start().await;
        let saved = keyrings.load_keyring().await.unwrap().unwrap();
        assert!(gateway.request_rotation(id("node-1")).await.unwrap());
        let err = Agent::default().connect_with(&addr, saved.clone()).await.expect_err("nowhere to keep it");
        assert!(matches!(err, Error::RotationUnstored { .. }), "{err}");
        let record = current(&gateway).await;
        assert_eq!(record.keyring, saved.keyring, "nothing rotated");
        assert!(record.rotation_requested && record.clone_suspected.is_none());
        // Through the store, the same keyring rotates.
        let session = Agent::default().connect(&addr, &keyrings).await.unwrap();
        assert!(session.peer().rotated);
        session.close().await.unwrap();
    });
}

#[test]
fn concurrent_resumes_of_one_agent_rotate_once_and_suspect_nobody() {
    run(async {
        let (gateway, _serving, addr, keyrings) = start().await;
        assert!(gateway.request_rotation(id("node-1")).await.unwrap());
        let (agent, keyrings) = (Agent::default(), std::sync::Arc::new(keyrings));
        // Six resumes of one agent at once: its own lock orders their handshakes, so the
        // first rotates and the others start from the keyring it stored.
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (agent, keyrings, addr) = (agent.clone(), keyrings.clone(), addr.clone());
                smol::spawn(async move {
                    let mut session = agent.connect(&addr, &*keyrings).await.unwrap();
                    session.send(b"x").await.unwrap();
                    assert_eq!(session.recv().await.unwrap().as_deref(), Some(&b"x"[..]));
                    let rotated = session.peer().rotated;
                    session.close().await.unwrap();
                    rotated
                })
            })
            .collect();
        let mut rotated = 0;
        for task in tasks {
            rotated += usize::from(task.await);
        }
        assert_eq!(rotated, 1);
        let record = current(&gateway).await;
        assert!(record.clone_suspected.is_none());
        let stored = keyrings.load_keyring().await.unwrap().unwrap();
        assert!(stored.offered().contains(&record.keyring.id()));
    });
}
