//! A gateway killed with SIGKILL in a loop while agents join and resume: no confirmed
//! keyring is lost, no token is charged twice, and the database opens cleanly each time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{Agent, AgentConfig, KeyringStore, RedbKeyringStore, RedbStore, Store, os_rng};
use common::{GatewayProcess, ok};

const AGENTS: usize = 6;
const KILLS: usize = 6;

#[derive(Clone)]
struct TestAgent {
    id: ClientId,
    token: BootstrapToken,
    keyrings: RedbKeyringStore,
}

fn agent() -> Agent {
    Agent::new(AgentConfig {
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        ..AgentConfig::default()
    })
}

/// Joins if the agent has no keyring yet, else resumes; then one echo. `Ok(())` only if
/// everything completed.
async fn visit(addr: &str, pin: Pin, a: &TestAgent) -> Result<(), String> {
    let stored = a.keyrings.load_keyring().await.map_err(|e| e.to_string())?;
    let mut session = match stored {
        None => agent().join(addr, a.token.clone(), &[pin], a.id.clone(), &a.keyrings).await,
        Some(saved) => agent().connect_with(addr, saved).await,
    }
    .map_err(|e| e.to_string())?;
    session.send(b"ping").await.map_err(|e| e.to_string())?;
    match session.recv().await.map_err(|e| e.to_string())? {
        Some(reply) if reply == b"ping" => {}
        other => return Err(format!("unexpected reply {other:?}")),
    }
    session.close().await.map_err(|e| e.to_string())
}

/// Opens the gateway database exclusively (it must open cleanly after a SIGKILL) and
/// checks the invariants against what the agents hold.
async fn check(db: &Path, agents: &[TestAgent]) -> usize {
    let store = RedbStore::open(db).expect("the database opens cleanly after SIGKILL");
    let (tokens, keyrings) = store.snapshot().await.expect("every record decodes");
    let mut joined = 0;
    for a in agents {
        let token = tokens.iter().find(|t| t.id() == a.token.id()).expect("tokens are never lost");
        let at_gateway: Vec<_> = keyrings.iter().filter(|k| k.client_id == a.id).collect();
        assert!(token.use_count <= 1, "a one-use token was charged {} times", token.use_count);
        assert_eq!(
            usize::try_from(token.use_count).unwrap(),
            at_gateway.len(),
            "a charge and its keyring are written together"
        );
        if let Some(saved) = a.keyrings.load_keyring().await.unwrap() {
            let record = at_gateway.first().unwrap_or_else(|| panic!("{}: the gateway lost its keyring", a.id));
            assert_eq!(record.keyring.id(), saved.keyring.id(), "{}: the gateway holds the agent's keyring", a.id);
            joined += 1;
        }
    }
    joined
}

#[test]
fn sigkill_loop_loses_nothing_and_charges_once() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let gw_dir = dir.path().join("gw");
    let pin: Pin = ok(&["gateway", "init", "--data-dir", gw_dir.to_str().unwrap()]).trim().parse().unwrap();
    let db = gw_dir.join(boarding_smol::GATEWAY_DB);

    let agents: Vec<TestAgent> = smol::block_on(async {
        let store = RedbStore::open_shared(&db).unwrap();
        let mut agents = Vec::new();
        for i in 0..AGENTS {
            let token = BootstrapToken::generate(&mut os_rng());
            assert!(store.insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap());
            let keyrings = RedbKeyringStore::agent_in(dir.path().join(format!("agent-{i}"))).unwrap();
            agents.push(TestAgent { id: ClientId::new(&format!("node-{i}")).unwrap(), token, keyrings });
        }
        agents
    });

    let mut completed_any = 0;
    for round in 0..KILLS {
        let gateway = GatewayProcess::start(&gw_dir);
        assert_eq!(gateway.pin, pin.to_string(), "the identity survives SIGKILL");
        let addr = gateway.addr.clone();
        // Start every agent at once; kill the gateway part-way through (later each round).
        let delay = Duration::from_millis(5 + 40 * round as u64);
        let visits: Vec<_> = agents
            .iter()
            .map(|a| {
                let (a, addr) = (a.clone(), addr.clone());
                smol::spawn(async move { visit(&addr, pin, &a).await })
            })
            .collect();
        let results = common::kill_during(gateway, delay, visits);
        completed_any += results.iter().filter(|r| r.is_ok()).count();
        let joined = smol::block_on(check(&db, &agents));
        eprintln!("round {round}: killed after {delay:?}; {joined}/{AGENTS} agents hold a keyring");
        assert!(started.elapsed() < Duration::from_secs(90), "bounded in time");
    }

    // A last, undisturbed run: every agent joins (retrying with its token) or resumes.
    let gateway = GatewayProcess::start(&gw_dir);
    let addr = gateway.addr.clone();
    smol::block_on(async {
        for a in &agents {
            visit(&addr, pin, a).await.unwrap_or_else(|e| panic!("{}: {e}", a.id));
        }
    });
    gateway.kill();
    let joined = smol::block_on(check(&db, &agents));
    assert_eq!(joined, AGENTS);
    smol::block_on(async {
        let store = RedbStore::open(&db).unwrap();
        let (tokens, keyrings) = store.snapshot().await.unwrap();
        assert!(tokens.iter().all(|t| t.use_count == 1), "every token charged exactly once");
        assert!(keyrings.iter().all(|k| k.confirmed), "every keyring confirmed after a resume");
    });
    eprintln!("{completed_any} visits completed while the gateway was being killed");
}
