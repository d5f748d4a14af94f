//! Keyring rotation with real processes: the README's "Keys that move" commands as
//! written, and SIGKILL of the gateway and of the agent in the middle of rotations,
//! after which every agent still gets in and no clone is suspected.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::storage::KeyringRecord;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{Agent, AgentConfig, KeyringStore, RedbKeyringStore, RedbStore, Store, os_rng};
use common::{BIN, GatewayProcess, ok, readme_block, run_readme_commands};

fn clients_json(gw: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["clients", "list", "--data-dir", gw.to_str().unwrap(), "-o", "json"])).unwrap()
}

#[test]
fn the_readme_rotation_and_clone_commands_run_as_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gw = d.join("gw");
    ok(&["gateway", "init", "--data-dir", gw.to_str().unwrap()]);
    let gateway = GatewayProcess::start(&gw);
    let (commands, outputs) = readme_block("### Keys that move: rotation and clone detection");
    assert_eq!(commands.len(), 7, "{commands:?}");
    run_readme_commands(d, &commands, &outputs, &gateway);
    // What the list shows: node-3 rotated, one clone suspicion.
    let clients = clients_json(&gw);
    let node = clients.as_array().unwrap().iter().find(|c| c["client_id"] == "node-3").expect("node-3 is listed");
    assert!(node["rotated_at"].is_u64(), "{node}");
    assert_eq!(node["rotation_requested"], false, "{node}");
    assert_eq!(node["retired_keyrings"], 1, "{node}");
    assert_eq!(node["clone_suspected"]["count"], 1, "{node}");
    // The stolen copy is refused again, with the error the README quotes.
    let o = common::boarding(&[
        "agent",
        "send",
        "--gateway",
        &gateway.addr,
        "--data-dir",
        d.join("stolen").to_str().unwrap(),
        "again",
    ]);
    assert_eq!(o.status.code(), Some(4));
    let said = common::stderr(&o);
    assert!(
        said.contains(&format!(
            "the gateway at {} refused client node-3's keyring as one it has rotated away from: another copy of this \
             keyring resumed first, so a clone is suspected",
            gateway.addr
        )),
        "{said}"
    );
    assert_eq!(clients_json(&gw)[0]["clone_suspected"]["count"], 2);
    gateway.kill();
}

const AGENTS: usize = 4;
const ROUNDS: usize = 8;

#[derive(Clone)]
struct TestAgent {
    id: ClientId,
    keyrings: RedbKeyringStore,
}

fn agent() -> Agent {
    Agent::new(AgentConfig {
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        retries: 0,
        ..AgentConfig::default()
    })
}

/// A resume through the agent's store (a rotation is stored there), then one echo.
async fn visit(addr: &str, a: &TestAgent) -> Result<(), String> {
    let mut session = agent().connect(addr, &a.keyrings).await.map_err(|e| e.to_string())?;
    session.send(b"ping").await.map_err(|e| e.to_string())?;
    match session.recv().await.map_err(|e| e.to_string())? {
        Some(reply) if reply == b"ping" => {}
        other => return Err(format!("unexpected reply {other:?}")),
    }
    session.close().await.map_err(|e| e.to_string())
}

/// The gateway's records, read after it died (the database must open cleanly).
fn records(db: &Path) -> Vec<KeyringRecord> {
    smol::block_on(async {
        let store = RedbStore::open(db).expect("the database opens cleanly after SIGKILL");
        store.snapshot().await.expect("every record decodes").1
    })
}

/// Each agent's stored keyrings include the one the gateway holds, and nobody is
/// suspected of being a clone. Returns how many rotations the gateway has committed.
fn check(db: &Path, agents: &[TestAgent]) -> usize {
    let records = records(db);
    let mut rotations = 0;
    for a in agents {
        let record = records.iter().find(|r| r.client_id == a.id).expect("the gateway keeps the keyring");
        let saved = smol::block_on(a.keyrings.load_keyring()).unwrap().expect("the agent keeps its keyring");
        assert!(
            saved.offered().contains(&record.keyring.id()),
            "{}: the agent holds the gateway's current keyring (it would be locked out)",
            a.id
        );
        assert!(record.clone_suspected.is_none(), "{}: an honest agent is never suspected", a.id);
        rotations += record.retired.len();
    }
    rotations
}

#[test]
fn a_gateway_killed_in_the_middle_of_rotations_locks_no_agent_out() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gw");
    ok(&["gateway", "init", "--data-dir", gw.to_str().unwrap()]);
    let db = gw.join(boarding_smol::GATEWAY_DB);
    let tokens: Vec<BootstrapToken> = smol::block_on(async {
        let store = RedbStore::open_shared(&db).unwrap();
        let mut tokens = Vec::new();
        for _ in 0..AGENTS {
            let token = BootstrapToken::generate(&mut os_rng());
            assert!(store.insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap());
            tokens.push(token);
        }
        tokens
    });
    // Every keyring is a second old at each round, so every resume rotates.
    let serve = ["--rotate-after", "1s"];
    let gateway = GatewayProcess::start_with(&gw, &serve);
    let pin: Pin = gateway.pin.parse().unwrap();
    let agents: Vec<TestAgent> = smol::block_on(async {
        let mut agents = Vec::new();
        for (i, token) in tokens.into_iter().enumerate() {
            let a = TestAgent {
                id: ClientId::new(&format!("node-{i}")).unwrap(),
                keyrings: RedbKeyringStore::agent_in(dir.path().join(format!("agent-{i}"))).unwrap(),
            };
            let session = agent().join(&gateway.addr, token, &[pin], a.id.clone(), &a.keyrings).await.unwrap();
            session.close().await.unwrap();
            agents.push(a);
        }
        agents
    });
    gateway.kill();

    let mut completed = 0;
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(1_100));
        let gateway = GatewayProcess::start_with(&gw, &serve);
        let addr = gateway.addr.clone();
        // Every agent resumes at once; the gateway dies part-way (later each round).
        let delay = Duration::from_millis(2 + 6 * round as u64);
        let visits: Vec<_> = agents
            .iter()
            .map(|a| {
                let (a, addr) = (a.clone(), addr.clone());
                smol::spawn(async move { visit(&addr, &a).await })
            })
            .collect();
        let results = common::kill_during(gateway, delay, visits);
        completed += results.iter().filter(|r| r.is_ok()).count();
        let rotations = check(&db, &agents);
        eprintln!("round {round}: killed after {delay:?}; {rotations} rotations committed so far");
        assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
    }

    // Undisturbed: every agent gets in (completing any rotation left in doubt), twice.
    std::thread::sleep(Duration::from_millis(1_100));
    let gateway = GatewayProcess::start_with(&gw, &serve);
    smol::block_on(async {
        for a in &agents {
            visit(&gateway.addr, a).await.unwrap_or_else(|e| panic!("{}: {e}", a.id));
            visit(&gateway.addr, a).await.unwrap_or_else(|e| panic!("{}: {e}", a.id));
        }
    });
    gateway.kill();
    let rotations = check(&db, &agents);
    assert!(rotations >= AGENTS, "every agent rotated at least once ({rotations} rotations)");
    eprintln!("{completed} visits completed while the gateway was being killed; {rotations} rotations");
}

#[test]
fn an_agent_killed_in_the_middle_of_rotations_is_never_locked_out() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (gw, agent_dir) = (dir.path().join("gw"), dir.path().join("agent"));
    let (gw_s, agent_s) = (gw.to_str().unwrap(), agent_dir.to_str().unwrap());
    ok(&["gateway", "init", "--data-dir", gw_s]);
    let gateway = GatewayProcess::start(&gw);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ok(&["token", "create", "--data-dir", gw_s])).unwrap();
    ok(&[
        "agent",
        "join",
        "--gateway",
        &gateway.addr,
        "--pin",
        &gateway.pin,
        "--token-file",
        token_file.to_str().unwrap(),
        "--id",
        "node-1",
        "--data-dir",
        agent_s,
    ]);
    let mut in_doubt = 0;
    for round in 0..16u64 {
        ok(&["clients", "rotate", "--data-dir", gw_s, "node-1"]);
        // `agent send` from its start; SIGKILL after 0 to 75 ms, across its resume.
        let mut child = Command::new(BIN)
            .args(["agent", "send", "--gateway", &gateway.addr, "--data-dir", agent_s, "ping"])
            .env("BOARDING_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 * round));
        let _ = child.kill();
        let _ = child.wait();
        // What the killed agent left on its disk (the database must open cleanly).
        let stored = smol::block_on(async {
            let store = RedbKeyringStore::agent_in(&agent_dir).expect("the agent's database opens after SIGKILL");
            store.load_keyring().await.unwrap().expect("the keyring is never lost")
        });
        in_doubt += usize::from(stored.rotated_from.is_some());
        // The next agent gets in, whatever the killed one got to.
        let reply = ok(&["agent", "send", "--gateway", &gateway.addr, "--data-dir", agent_s, "still here"]);
        assert_eq!(reply.trim(), "still here", "round {round}");
        // Once more without a rotation asked: the agent keeps the one keyring the gateway
        // holds, so the next round starts from a settled state.
        ok(&["agent", "send", "--gateway", &gateway.addr, "--data-dir", agent_s, "settled"]);
        let clients = clients_json(&gw);
        assert!(clients[0]["clone_suspected"].is_null(), "round {round}: {clients}");
        assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
    }
    let clients = clients_json(&gw);
    assert!(clients[0]["retired_keyrings"].as_u64().unwrap() >= 1, "{clients}");
    eprintln!("16 agents killed; {in_doubt} had stored a rotation (both keyrings) when killed");
    gateway.kill();
}
