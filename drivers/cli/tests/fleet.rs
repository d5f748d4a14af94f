//! Gateway replicas on etcd: real `boarding gateway serve --store etcd` processes on
//! loopback, real etcd members (one, or a cluster of three), agents in this process.
//! Every wait is bounded.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_etcd::testing::{EtcdCluster, EtcdMember};
use boarding_etcd::{EtcdConfig, EtcdStore, SealingKey};
use boarding_smol::{Agent, AgentConfig, KeyringStore, MemoryKeyringStore, Store, StoreError, os_rng};
use common::{BIN, stderr, stdout};

/// A fleet's settings: where etcd is, its prefix and its sealing key file.
struct Fleet {
    endpoints: String,
    prefix: String,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn new(endpoints: &[String]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("sealing.key");
        SealingKey::create_file(&key_file).unwrap();
        let prefix = format!("/boarding/fleet-{}-{}/", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        Self { endpoints: endpoints.join(","), prefix, key_file, _dir: dir }
    }

    /// The `--store etcd` options.
    fn args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            self.endpoints.clone(),
            "--etcd-prefix".into(),
            self.prefix.clone(),
            "--etcd-sealing-key".into(),
            self.key_file.display().to_string(),
        ]
    }

    /// A store of this fleet in this process, to set up tokens and check counts.
    fn store(&self) -> EtcdStore {
        let key = SealingKey::load(&self.key_file).unwrap();
        let config = EtcdConfig::new(self.endpoints.split(','), key).with_prefix(&self.prefix).with_runtime_threads(1);
        smol::block_on(EtcdStore::connect(config)).unwrap()
    }

    /// Runs `boarding ARGS --store etcd …` in an empty directory; its output.
    fn boarding(&self, args: &[&str]) -> std::process::Output {
        let cwd = tempfile::tempdir().unwrap();
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(self.args());
        let out = Command::new(BIN)
            .args(&all)
            .current_dir(cwd.path())
            .env_remove("BOARDING_GATEWAY_DIR")
            .env("BOARDING_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let left: Vec<_> = fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "boarding {args:?} --store etcd wrote into its working directory: {left:?}");
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.boarding(args);
        assert!(out.status.success(), "boarding {args:?} failed:\n{}\n{}", stdout(&out), stderr(&out));
        stdout(&out)
    }
}

/// A `boarding gateway serve --store etcd` replica; its log in a file.
struct Replica {
    child: Child,
    addr: String,
    pin: Pin,
    metrics: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(fleet: &Fleet, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gateway.log");
        let mut child = Command::new(BIN)
            .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--handshake-timeout", "5s"])
            .args(fleet.args())
            .args(extra)
            .current_dir(dir.path())
            .env_remove("BOARDING_GATEWAY_DIR")
            .env("BOARDING_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let rx = common::stdout_lines(&mut child);
        let (mut addr, mut pin, mut metrics) = (None, None, None);
        while addr.is_none() {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
                panic!("the replica did not start: {}", fs::read_to_string(&log).unwrap_or_default());
            };
            if let Some(p) = line.strip_prefix("pin: ") {
                pin = Some(p.parse().unwrap());
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = Some(a.to_owned());
            }
            if let Some(m) = line.strip_prefix("metrics on http://").and_then(|m| m.strip_suffix("/metrics")) {
                metrics = Some(m.to_owned());
            }
        }
        Self { child, addr: addr.unwrap(), pin: pin.unwrap(), metrics, log, _dir: dir }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn agent() -> Agent {
    Agent::new(AgentConfig {
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(10),
        retries: 0,
        ..AgentConfig::default()
    })
}

fn client(id: &str) -> ClientId {
    ClientId::new(id).unwrap()
}

fn one_use_token(store: &EtcdStore, uses: u32) -> BootstrapToken {
    let token = BootstrapToken::generate(&mut os_rng());
    assert!(smol::block_on(store.insert_token(TokenRecord::new(token.clone(), None, uses))).unwrap());
    token
}

fn use_count(store: &EtcdStore, token: &BootstrapToken) -> u32 {
    let tokens = smol::block_on(store.tokens()).unwrap();
    tokens.iter().find(|t| t.id() == token.id()).map_or(0, |t| t.use_count)
}

/// Joins, then one echo: the session works.
async fn join_and_echo(
    addr: &str,
    pin: Pin,
    token: BootstrapToken,
    id: ClientId,
    keyrings: &MemoryKeyringStore,
) -> Result<(), String> {
    let mut session = agent().join(addr, token, &[pin], id, keyrings).await.map_err(|e| e.to_string())?;
    session.send(b"ping").await.map_err(|e| e.to_string())?;
    let reply = session.recv().await.map_err(|e| e.to_string())?;
    assert_eq!(reply.as_deref(), Some(&b"ping"[..]));
    session.close().await.map_err(|e| e.to_string())
}

async fn resume_and_echo(addr: &str, keyrings: &MemoryKeyringStore) -> Result<(), String> {
    let mut session = agent().connect(addr, keyrings).await.map_err(|e| e.to_string())?;
    session.send(b"again").await.map_err(|e| e.to_string())?;
    let reply = session.recv().await.map_err(|e| e.to_string())?;
    assert_eq!(reply.as_deref(), Some(&b"again"[..]));
    session.close().await.map_err(|e| e.to_string())
}

/// Runs `f` and fails the test if it takes longer than `limit`.
fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(async { Some(f.await) }, async {
        smol::Timer::after(limit).await;
        None
    }))
    .unwrap_or_else(|| panic!("{what} took longer than {limit:?}"))
}

/// `GET /metrics`: the body.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Holds a resumed session open on `addr` and reports when the gateway ends it.
fn hold_session(addr: String, keyrings: &MemoryKeyringStore) -> (mpsc::Receiver<()>, mpsc::Receiver<Instant>) {
    let saved = smol::block_on(keyrings.load_keyring()).unwrap().expect("the agent joined");
    let (ready_tx, ready) = mpsc::channel();
    let (ended_tx, ended) = mpsc::channel();
    std::thread::spawn(move || {
        smol::block_on(async {
            let mut session = agent().connect_with(&addr, saved).await.unwrap();
            session.send(b"hold").await.unwrap();
            assert_eq!(session.recv().await.unwrap().as_deref(), Some(&b"hold"[..]));
            let _ = ready_tx.send(());
            // Returns when the gateway closes the session (or after the test gave up).
            let _ = smol::future::or(async { session.recv().await.map(drop).map_err(drop) }, async {
                smol::Timer::after(Duration::from_secs(30)).await;
                Err(())
            })
            .await;
            let _ = ended_tx.send(Instant::now());
        });
    });
    (ready, ended)
}

#[test]
fn three_replicas_share_tokens_keyrings_and_revocations() {
    let started = Instant::now();
    let member = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::new(&[member.endpoint().to_owned()]);
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(&fleet, if i == 0 { &["--metrics-listen", "127.0.0.1:0"] } else { &[] }))
        .collect();
    assert!(replicas.iter().all(|r| r.pin == replicas[0].pin), "the replicas share one identity");
    let pin = replicas[0].pin;
    let store = fleet.store();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();

    // 16 agents race one one-use token, spread over the three replicas.
    const RACERS: usize = 16;
    for rep in 0..20 {
        let token = one_use_token(&store, 1);
        let outcomes = bounded(Duration::from_secs(30), "a race", async {
            let racers: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (addr, token) = (addrs[i % addrs.len()].clone(), token.clone());
                    smol::spawn(async move {
                        let id = client(&format!("r{rep}-a{i}"));
                        agent().join(&addr, token, &[pin], id, &MemoryKeyringStore::new()).await.map(drop)
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for racer in racers {
                outcomes.push(racer.await);
            }
            outcomes
        });
        let winners = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(winners, 1, "repetition {rep}: exactly one of {RACERS} joins: {outcomes:?}");
        for failure in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            let message = failure.to_string();
            assert!(message.contains("no uses left") || message.contains("xhausted"), "repetition {rep}: {message}");
        }
        assert_eq!(use_count(&store, &token), 1, "repetition {rep}: charged once");
    }
    eprintln!("20 races of {RACERS} agents over 3 replicas in {:?}", started.elapsed());

    // Joined through A, resumes through B and C.
    let token = one_use_token(&store, 1);
    let keyrings = MemoryKeyringStore::new();
    bounded(Duration::from_secs(30), "join and resumes", async {
        join_and_echo(&addrs[0], pin, token.clone(), client("roamer"), &keyrings).await.unwrap();
        resume_and_echo(&addrs[1], &keyrings).await.unwrap();
        resume_and_echo(&addrs[2], &keyrings).await.unwrap();
    });

    // The operator commands on etcd, with no data directory.
    let created = fleet.ok(&["token", "create", "--uses", "2", "--ttl", "1h", "--description", "fleet"]);
    let cli_token: BootstrapToken = created.trim().parse().unwrap();
    let listed = fleet.ok(&["token", "list", "-o", "json"]);
    assert!(listed.contains(cli_token.id().as_str()) && !listed.contains(&cli_token.to_string()), "{listed}");
    assert_eq!(fleet.ok(&["gateway", "pin"]).trim(), pin.to_string());
    let joined = MemoryKeyringStore::new();
    bounded(Duration::from_secs(30), "a join with a token from the CLI", async {
        join_and_echo(&addrs[2], pin, cli_token.clone(), client("from-cli"), &joined).await.unwrap();
    });
    let clients = fleet.ok(&["clients", "list", "-o", "json"]);
    assert!(clients.contains("from-cli") && clients.contains("roamer"), "{clients}");
    // A mistyped prefix is no fleet at all.
    let mut wrong = fleet.args();
    wrong[5] = "/boarding/no-such-fleet/".into();
    let out = Command::new(BIN).args(["token", "list"]).args(&wrong).env("BOARDING_LOG", "warn").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("no fleet under the prefix"), "{}", stderr(&out));

    // Revoking on any machine ends the client's session on another replica within a second.
    let (ready, ended) = hold_session(addrs[1].clone(), &keyrings);
    ready.recv_timeout(Duration::from_secs(15)).expect("the session is up");
    let command = Instant::now();
    let out = fleet.boarding(&["clients", "revoke", "roamer"]);
    let revoked = Instant::now();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("every replica"), "{}", stdout(&out));
    let closed = ended.recv_timeout(Duration::from_secs(5)).expect("the session on B was ended");
    let lag = closed.saturating_duration_since(revoked);
    eprintln!(
        "`clients revoke` ran for {:?}; the session on another replica closed {:?} after it started, {lag:?} after it \
         returned",
        revoked - command,
        closed.saturating_duration_since(command)
    );
    assert!(lag < Duration::from_secs(1), "closed {lag:?} after the revocation");
    assert!(replicas[1].log().contains("its live sessions on this replica were closed"), "{}", replicas[1].log());
    bounded(Duration::from_secs(15), "a revoked resume", async {
        let refused = agent().connect(&addrs[2], &keyrings).await;
        assert!(refused.is_err(), "a revoked client cannot resume anywhere");
    });

    // `etcdctl del` of the keyring key does the same.
    let (ready, ended) = hold_session(addrs[0].clone(), &joined);
    ready.recv_timeout(Duration::from_secs(15)).expect("the session is up");
    let del = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &fleet.endpoints, "del", &format!("{}keyrings/from-cli", fleet.prefix)])
        .output()
        .unwrap();
    let deleted = Instant::now();
    assert!(del.status.success() && stdout(&del).trim() == "1", "{} {}", stdout(&del), stderr(&del));
    let closed = ended.recv_timeout(Duration::from_secs(5)).expect("the session on A was ended");
    let lag = closed.saturating_duration_since(deleted);
    eprintln!("`etcdctl del` of the keyring closed the session {lag:?} after etcdctl returned");
    assert!(lag < Duration::from_secs(1), "closed {lag:?} after etcdctl del");

    // The metrics endpoint works on etcd too, and counts the store's retries.
    let metrics = scrape(replicas[0].metrics.as_deref().expect("metrics address printed"));
    assert!(metrics.contains("boarding_store_retries_total"), "{metrics}");
    assert!(metrics.contains("boarding_tokens_usable"), "{metrics}");
    eprintln!("three replicas: {:?} in all", started.elapsed());
}

#[test]
fn a_join_interrupted_after_redemption_is_retried_through_another_replica() {
    /// A keyring store whose save waits until the test has killed the gateway, then
    /// stores the keyring (`keep`) or fails as if the agent had crashed first.
    struct Interrupted {
        saving: mpsc::Sender<()>,
        killed: smol::channel::Receiver<()>,
        keep: bool,
        inner: MemoryKeyringStore,
    }
    impl KeyringStore for Interrupted {
        async fn save_keyring(&self, saved: &boarding::client::SavedKeyring) -> Result<(), StoreError> {
            let _ = self.saving.send(());
            let _ = self.killed.recv().await;
            if self.keep {
                self.inner.save_keyring(saved).await
            } else {
                Err(StoreError::Backend { store: "test", source: "the agent crashed before storing".into() })
            }
        }
        async fn load_keyring(&self) -> Result<Option<boarding::client::SavedKeyring>, StoreError> {
            self.inner.load_keyring().await
        }
        async fn replace_keyring(
            &self,
            replaces: &boarding::keys::KeyringId,
            saved: &boarding::client::SavedKeyring,
        ) -> Result<bool, StoreError> {
            self.inner.replace_keyring(replaces, saved).await
        }
    }

    let member = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::new(&[member.endpoint().to_owned()]);
    let store = fleet.store();
    for keep in [false, true] {
        let mut a = Replica::start(&fleet, &[]);
        let b = Replica::start(&fleet, &[]);
        let pin = a.pin;
        let token = one_use_token(&store, 1);
        let id = client(if keep { "kept-keyring" } else { "lost-keyring" });
        let (saving_tx, saving) = mpsc::channel();
        let (killed_tx, killed) = smol::channel::bounded(1);
        let keyrings = Interrupted { saving: saving_tx, killed, keep, inner: MemoryKeyringStore::new() };
        let (addr_a, addr_b) = (a.addr.clone(), b.addr.clone());
        let first = std::thread::scope(|scope| {
            let joining = scope.spawn(|| {
                bounded(Duration::from_secs(30), "the interrupted join", async {
                    agent().join(&addr_a, token.clone(), &[pin], id.clone(), &keyrings).await.map(drop)
                })
            });
            // The gateway redeemed the token and sent ServerFinished: kill it now.
            saving.recv_timeout(Duration::from_secs(15)).expect("the agent got to store its keyring");
            a.kill();
            let _ = killed_tx.send_blocking(());
            joining.join().unwrap()
        });
        eprintln!("keep={keep}: the join through the killed replica ended with {first:?}");
        assert_eq!(use_count(&store, &token), 1, "the redemption was committed before the kill");
        bounded(Duration::from_secs(30), "the retry", async {
            match keyrings.inner.load_keyring().await.unwrap() {
                // The agent stored its keyring: it resumes through B (which confirms it).
                Some(_) => resume_and_echo(&addr_b, &keyrings.inner).await.unwrap(),
                // It did not: it joins again with the same token and id through B.
                None => {
                    let fresh = MemoryKeyringStore::new();
                    join_and_echo(&addr_b, pin, token.clone(), id.clone(), &fresh).await.unwrap();
                    resume_and_echo(&addr_b, &fresh).await.unwrap();
                }
            }
        });
        assert_eq!(use_count(&store, &token), 1, "keep={keep}: charged once");
        let keyring = smol::block_on(store.clients()).unwrap().into_iter().find(|k| k.client_id == id).unwrap();
        assert!(keyring.confirmed, "keep={keep}: confirmed through the other replica");
        // The token is spent for anyone else.
        let other = bounded(Duration::from_secs(15), "another join", async {
            agent().join(&addr_b, token.clone(), &[pin], client("someone-else"), &MemoryKeyringStore::new()).await
        });
        assert!(other.is_err(), "keep={keep}: the one-use token is spent");
    }
}

/// Agents that join with their own one-use tokens, the i-th starting `i × stagger`
/// after the first, and, if the join fails, retry it (the same token and id) until
/// `deadline`; the keyrings of those that joined, and their attempts.
async fn joins_until(
    addrs: &[String],
    pin: Pin,
    agents: &[(ClientId, BootstrapToken)],
    stagger: Duration,
    deadline: Instant,
) -> Vec<(ClientId, MemoryKeyringStore, u32)> {
    let tasks: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, (id, token))| {
            let (addrs, id, token) = (addrs.to_vec(), id.clone(), token.clone());
            smol::spawn(async move {
                smol::Timer::after(stagger * i as u32).await;
                let keyrings = MemoryKeyringStore::new();
                let mut attempts = 0u32;
                loop {
                    attempts += 1;
                    let addr = &addrs[(i + attempts as usize) % addrs.len()];
                    let joined = agent().join(addr, token.clone(), &[pin], id.clone(), &keyrings).await;
                    match joined {
                        Ok(session) => {
                            let _ = session.close().await;
                            return Some((id, keyrings, attempts));
                        }
                        Err(_) if Instant::now() < deadline => {
                            smol::Timer::after(Duration::from_millis(100)).await;
                        }
                        Err(_) => return None,
                    }
                }
            })
        })
        .collect();
    let mut joined = Vec::new();
    for task in tasks {
        joined.extend(task.await);
    }
    joined
}

#[test]
fn the_fleet_survives_the_etcd_leader_killed_and_fails_closed_without_quorum() {
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::new(&cluster.endpoints());
    let replicas: Vec<Replica> = (0..2)
        .map(|_| Replica::start(&fleet, &["--etcd-command-timeout", "3s", "--etcd-dial-timeout", "5s"]))
        .collect();
    let pin = replicas[0].pin;
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    let store = fleet.store();

    // A burst of joins, each with its own one-use token; the leader is killed in the middle.
    const BURST: usize = 24;
    const STAGGER: Duration = Duration::from_millis(25);
    let agents: Vec<(ClientId, BootstrapToken)> =
        (0..BURST).map(|i| (client(&format!("burst-{i}")), one_use_token(&store, 1))).collect();
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).expect("a leader");
    let burst = Instant::now();
    let joined = std::thread::scope(|scope| {
        let joining = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            bounded(Duration::from_secs(60), "the burst", joins_until(&addrs, pin, &agents, STAGGER, deadline))
        });
        std::thread::sleep(STAGGER * (BURST / 3) as u32);
        cluster.kill(leader);
        joining.join().unwrap()
    });
    let retried = joined.iter().filter(|(_, _, attempts)| *attempts > 1).count();
    eprintln!(
        "killed etcd leader m{leader} {:?} into a burst of {BURST} joins that took {:?}: all joined, {retried} after \
         a retry",
        STAGGER * (BURST / 3) as u32,
        burst.elapsed()
    );
    assert_eq!(joined.len(), BURST, "every agent joins, retrying through the election");
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).expect("a new leader");
    assert_ne!(new_leader, leader);
    // No reported join lost: every agent that got a session resumes; nothing charged twice.
    let store = fleet.store();
    bounded(Duration::from_secs(60), "the resumes", async {
        for (i, (id, keyrings, _)) in joined.iter().enumerate() {
            resume_and_echo(&addrs[i % addrs.len()], keyrings).await.unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    });
    for (id, token) in &agents {
        assert_eq!(use_count(&store, token), 1, "{id}: its token is charged exactly once");
    }
    // Joins go on after the election.
    let after: Vec<(ClientId, BootstrapToken)> =
        (0..4).map(|i| (client(&format!("after-{i}")), one_use_token(&store, 1))).collect();
    let joined_after = bounded(Duration::from_secs(30), "joins after the election", async {
        joins_until(&addrs, pin, &after, Duration::ZERO, Instant::now()).await
    });
    assert_eq!(joined_after.len(), after.len(), "joins after the election succeed at the first attempt");

    // The killed member comes back; then two of the three are stopped: no quorum, and
    // joins fail closed with `Internal`.
    cluster.restart(leader).unwrap_or_else(|e| panic!("{e}"));
    assert!((0..cluster.len()).all(|i| cluster.wait_healthy(i, Duration::from_secs(20))), "the killed member rejoined");
    let running: Vec<usize> = (0..cluster.len()).filter(|i| *i != new_leader).collect();
    let token = one_use_token(&store, 1);
    for i in &running {
        cluster.stop(*i);
    }
    let stopped_at = Instant::now();
    let refused = bounded(Duration::from_secs(30), "a join without quorum", async {
        agent().join(&addrs[0], token.clone(), &[pin], client("no-quorum"), &MemoryKeyringStore::new()).await.map(drop)
    });
    let took = stopped_at.elapsed();
    let message = refused.expect_err("no join without etcd").to_string();
    eprintln!("without quorum a join failed after {took:?}: {message}");
    assert!(message.contains("internal") || message.contains("Internal"), "fails closed with Internal: {message}");
    let log = replicas[0].log();
    assert!(log.contains("the store failed during a handshake") && log.contains("etcd"), "a clear log line: {log}");
    for i in &running {
        cluster.resume(*i);
    }
    // Recovers after SIGCONT: the same agent joins (its earlier attempt charged nothing).
    let recovered = bounded(Duration::from_secs(60), "joins after SIGCONT", async {
        let deadline = Instant::now() + Duration::from_secs(30);
        joins_until(&addrs, pin, &[(client("no-quorum"), token.clone())], Duration::ZERO, deadline).await
    });
    assert_eq!(recovered.len(), 1, "joins work again once the members continue");
    assert_eq!(use_count(&fleet.store(), &token), 1);
    eprintln!("etcd cluster test: {:?} in all", started.elapsed());
}

#[test]
fn serve_on_unreachable_etcd_fails_fast_and_options_are_checked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let fleet = Fleet::new(&[format!("http://127.0.0.1:{port}")]);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--etcd-dial-timeout", "1s"])
        .args(fleet.args())
        .current_dir(dir.path())
        .env("BOARDING_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "unreachable: {}", stderr(&out));
    assert!(stderr(&out).contains(&fleet.endpoints) && stderr(&out).contains("--etcd-endpoints"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "failed after {took:?}");
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written locally");

    let code = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(BIN);
        command.args(args).env("BOARDING_LOG", "warn").env_remove("BOARDING_ETCD_PASSWORD");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (out.status.code(), stderr(&out))
    };
    let endpoints = fleet.endpoints.as_str();
    let key = fleet.key_file.to_str().unwrap();
    // No sealing key: a usage error that says how to make one.
    let (status, message) = code(&["token", "list", "--store", "etcd", "--etcd-endpoints", endpoints], &[]);
    assert_eq!(status, Some(2), "{message}");
    assert!(message.contains("--etcd-sealing-key"), "{message}");
    // A user without a password, and the password never on the command line.
    let (status, message) =
        code(&["token", "list", "--etcd-endpoints", endpoints, "--etcd-sealing-key", key, "--etcd-user", "root"], &[]);
    assert_eq!(status, Some(2), "{message}");
    assert!(message.contains("BOARDING_ETCD_PASSWORD") && message.contains("--etcd-password-file"), "{message}");
    let (status, _) = code(&["token", "list", "--etcd-password", "secret"], &[]);
    assert_eq!(status, Some(2), "there is no --etcd-password flag");
    // A password from the environment is used, and appears in no message.
    let (status, message) = code(
        &["token", "list", "--etcd-endpoints", endpoints, "--etcd-sealing-key", key, "--etcd-user", "root"],
        &[("BOARDING_ETCD_PASSWORD", "pw-never-shown")],
    );
    assert_eq!(status, Some(3), "etcd is not there: {message}");
    assert!(!message.contains("pw-never-shown"), "{message}");
    // A key file open to others is refused.
    let open_key = dir.path().join("open.key");
    fs::write(&open_key, "00".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&open_key, fs::Permissions::from_mode(0o644)).unwrap();
        let (status, message) = code(
            &["token", "list", "--etcd-endpoints", endpoints, "--etcd-sealing-key", open_key.to_str().unwrap()],
            &[],
        );
        assert_eq!(status, Some(5), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }
}

#[test]
fn replicas_take_the_identity_from_a_file_and_refuse_another() {
    let member = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::new(&[member.endpoint().to_owned()]);
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, seed: u8| -> PathBuf {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let path = dir.path().join(name);
        let pem = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).to_pkcs8_pem(Default::default()).unwrap();
        fs::write(&path, pem.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    };
    let first = key("first.pem", 1);
    let expected = boarding::identity::ServerIdentity::from_seed([1; 32]).pin();
    let a = Replica::start(&fleet, &["--identity", first.to_str().unwrap()]);
    assert_eq!(a.pin, expected, "the replica uses the file's key");
    let b = Replica::start(&fleet, &[]);
    assert_eq!(b.pin, expected, "a replica without --identity loads the fleet's, the same key");
    let other = key("other.pem", 2);
    let out = Command::new(BIN)
        .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--identity", other.to_str().unwrap()])
        .args(fleet.args())
        .env("BOARDING_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not the gateway identity"), "{}", stderr(&out));
    drop((a, b, Path::new("")));
}

#[test]
fn etcd_user_and_password_from_a_file_or_the_environment() {
    let member = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::new(&[member.endpoint().to_owned()]);
    let password = "pw-3b9e1d7c";
    for args in [
        vec!["user", "add", "root", &format!("--new-user-password={password}")],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &fleet.endpoints])
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {}", stderr(&out));
    }
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("etcd-password");
    fs::write(&password_file, format!("{password}\n")).unwrap();
    let run = |extra: &[&str], env: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(extra).args(fleet.args()).env("BOARDING_LOG", "warn").env_remove("BOARDING_ETCD_PASSWORD");
        if let Some(value) = env {
            command.env("BOARDING_ETCD_PASSWORD", value);
        }
        let out = command.output().unwrap();
        (out.status.code(), stdout(&out), stderr(&out))
    };
    let file = password_file.to_str().unwrap();
    let (status, pin, message) = run(&["gateway", "init", "--etcd-user", "root", "--etcd-password-file", file], None);
    assert_eq!(status, Some(0), "{message}");
    assert!(pin.starts_with("sha256:"), "{pin}");
    let (status, listed, message) = run(&["token", "list", "--etcd-user", "root"], Some(password));
    assert_eq!(status, Some(0), "{message}");
    assert!(listed.contains("no tokens"), "{listed}");
    let (status, _, message) = run(&["token", "list", "--etcd-user", "root"], Some("not-the-password"));
    assert_eq!(status, Some(3), "{message}");
    assert!(!message.contains("not-the-password") && !message.contains(password), "{message}");
    let (status, _, message) = run(&["token", "list"], None);
    assert_ne!(status, Some(0), "etcd refuses a command without credentials: {message}");
}

#[test]
fn a_rotation_through_one_replica_retires_the_keyring_at_every_replica() {
    let member = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::new(&[member.endpoint().to_owned()]);
    let store = fleet.store();
    let (a, b) = (Replica::start(&fleet, &[]), Replica::start(&fleet, &[]));
    let token = one_use_token(&store, 1);
    let keyrings = MemoryKeyringStore::new();
    bounded(Duration::from_secs(20), "the join", join_and_echo(&a.addr, a.pin, token, client("moving"), &keyrings))
        .unwrap();
    let copy = MemoryKeyringStore::holding(smol::block_on(keyrings.load_keyring()).unwrap().unwrap());

    // The operator asks through the fleet's store; the agent rotates through replica A.
    let said = fleet.ok(&["clients", "rotate", "moving"]);
    assert!(said.contains("rotated at its next resume"), "{said}");
    bounded(Duration::from_secs(20), "the rotating resume", resume_and_echo(&a.addr, &keyrings)).unwrap();
    let stored = smol::block_on(keyrings.load_keyring()).unwrap().unwrap();
    assert!(stored.rotated_from.is_some(), "the agent stored the rotation");

    // Replica B serves the new keyring, and refuses the copy of the old one as a clone's.
    bounded(Duration::from_secs(20), "a resume through B", resume_and_echo(&b.addr, &keyrings)).unwrap();
    let refused = bounded(Duration::from_secs(20), "the copy's resume through B", async {
        let mut session = agent().connect(&b.addr, &copy).await.expect("the copy's handshake ends");
        session.recv().await.expect_err("a clone's session carries nothing").peer_alert()
    });
    assert_eq!(refused, Some(boarding::Alert::RetiredKeyring));
    let listed: serde_json::Value = serde_json::from_str(&fleet.ok(&["clients", "list", "-o", "json"])).unwrap();
    let record = listed.as_array().unwrap().iter().find(|c| c["client_id"] == "moving").unwrap().clone();
    assert_eq!(record["retired_keyrings"], 1, "{record}");
    assert_eq!(record["clone_suspected"]["count"], 1, "{record}");
    assert!(b.log().contains("clone suspected"), "{}", b.log());
}
