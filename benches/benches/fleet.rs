//! Gateway replicas on etcd against one gateway on redb: the release `boarding gateway
//! serve` binary, 1 and 3 replicas with `--store etcd` on a one-member etcd (the `etcd`
//! binary on loopback, its data directory in a temporary directory), and one replica on
//! its redb database; 64 agents in this process, over TCP and TLS 1.3 on loopback,
//! spread over the replicas.
//!
//! Prints joins/s with distinct one-use tokens, with one unlimited token and with one
//! token limited to a million uses (whose record every join rewrites), resumes/s, and
//! the store's transaction retries per join (the gateways' own
//! `boarding_store_retries_total`, scraped from `--metrics-listen`, summed over the
//! replicas).
//!
//! `cargo bench -p boarding-benches --bench fleet` (it builds the release binary first;
//! etcd must be installed). Agents, gateways and etcd share this machine's cores. Every
//! phase is bounded in time and stops by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boarding::client::SavedKeyring;
use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_benches::process::{ServedGateway, executor, release_binary};
use boarding_etcd::testing::EtcdMember;
use boarding_etcd::{EtcdConfig, EtcdStore, SealingKey};
use boarding_smol::{Agent, AgentConfig, KeyringStore, MemoryKeyringStore, RedbStore, Store, os_rng};

/// How long each throughput phase runs.
const PHASE: Duration = Duration::from_secs(3);
/// Concurrent agents.
const AGENTS: usize = 64;
/// One-use tokens made ready for each join phase (more than any phase uses here).
const ONE_USE_TOKENS: usize = 6000;
/// The uses of the limited shared token (more than any phase makes).
const LIMITED_USES: u32 = 1_000_000;

/// One `boarding gateway serve` process.
struct Replica {
    /// Kills the process when the replica is dropped.
    _served: ServedGateway,
    addr: String,
    pin: Pin,
    metrics: String,
}

impl Replica {
    fn start(bin: &Path, store_args: &[String]) -> Self {
        let mut command = Command::new(bin);
        command
            .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--max-handshakes", "1024", "--max-handshakes-per-source", "1024"])
            .args(["--max-sessions-per-client", "1024"])
            .args(store_args)
            .env("BOARDING_LOG", "warn");
        let served = ServedGateway::start(command);
        let (addr, pin) = (served.addr.clone(), served.pin);
        let metrics = served.metrics.clone().expect("the replica printed its metrics address");
        Self { _served: served, addr, pin, metrics }
    }

    /// The gateway's `boarding_store_retries_total`.
    fn retries(&self) -> f64 {
        let mut stream = TcpStream::connect(&self.metrics).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.metrics).unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("boarding_store_retries_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Where the tokens go: the replicas' etcd, or the redb database before its gateway
/// starts.
enum Tokens<'a> {
    Etcd(&'a EtcdStore),
    Redb(&'a Path),
}

impl Tokens<'_> {
    fn insert(&self, tokens: &[BootstrapToken], max_uses: u32) {
        let records: Vec<TokenRecord> = tokens.iter().map(|t| TokenRecord::new(t.clone(), None, max_uses)).collect();
        match self {
            Self::Etcd(store) => insert_all(*store, records),
            Self::Redb(dir) => insert_all(&RedbStore::gateway_in(dir).unwrap(), records),
        }
    }
}

/// Inserts the records, 64 at a time.
fn insert_all<S: Store>(store: &S, records: Vec<TokenRecord>) {
    smol::block_on(async {
        for chunk in records.chunks(64) {
            let inserts: Vec<_> = chunk.iter().map(|r| store.insert_token(r.clone())).collect();
            for insert in inserts {
                assert!(insert.await.unwrap());
            }
        }
    });
}

/// Runs `AGENTS` workers, each repeating `op` until `PHASE` is over or `op` says there
/// is nothing left (`None`); returns the completed operations per second, how many,
/// and the failures.
fn throughput<F, Fut>(ex: &Arc<smol::Executor<'static>>, op: F) -> (f64, usize, usize)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Result<(), boarding_smol::Error>>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..AGENTS)
        .map(|w| {
            let (op, done, failed) = (Arc::clone(&op), Arc::clone(&done), Arc::clone(&failed));
            ex.spawn(async move {
                let mut n = 0;
                while started.elapsed() < PHASE {
                    match op(w, n).await {
                        Some(Ok(())) => done.fetch_add(1, Ordering::Relaxed),
                        Some(Err(_)) => failed.fetch_add(1, Ordering::Relaxed),
                        None => break,
                    };
                    n += 1;
                }
            })
        })
        .collect();
    smol::block_on(async {
        for w in workers {
            w.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    (done as f64 / elapsed, done, failed.load(Ordering::Relaxed))
}

/// One setup's figures.
struct Figures {
    one_use: f64,
    one_use_retries: f64,
    unlimited: f64,
    unlimited_retries: f64,
    limited: f64,
    limited_retries: f64,
    resumes: f64,
    failures: usize,
}

fn agent() -> Agent {
    Agent::new(AgentConfig { retries: 8, ..AgentConfig::default() })
}

fn retries(replicas: &[Replica]) -> f64 {
    replicas.iter().map(Replica::retries).sum()
}

/// Joins with one shared token (client ids tagged `tag`): the rate, the retries per
/// join and the failures.
fn shared_token_joins(
    ex: &Arc<smol::Executor<'static>>,
    replicas: &[Replica],
    token: &BootstrapToken,
    tag: &str,
) -> (f64, f64, usize) {
    let addrs: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.addr.clone()).collect());
    let pin = replicas[0].pin;
    let before = retries(replicas);
    let (t, token) = (tag.to_owned(), token.clone());
    let (rate, joined, failed) = throughput(ex, move |w, n| {
        let (addrs, tag, token) = (Arc::clone(&addrs), t.clone(), token.clone());
        async move {
            let id = ClientId::new(&format!("{tag}-{w}-{n}")).unwrap();
            let addr = &addrs[w % addrs.len()];
            Some(match agent().join(addr, token, &[pin], id, &MemoryKeyringStore::new()).await {
                Ok(session) => session.close().await,
                Err(e) => Err(e),
            })
        }
    });
    (rate, (retries(replicas) - before) / joined.max(1) as f64, failed)
}

/// Joins with distinct one-use tokens, with one unlimited token, and with one token
/// limited to more uses than the phase makes, then resumes, against `replicas` (agent
/// `w` uses replica `w mod n`). `tag` keeps client ids apart.
fn measure(
    ex: &Arc<smol::Executor<'static>>,
    replicas: &[Replica],
    one_use: Vec<BootstrapToken>,
    unlimited: BootstrapToken,
    limited: BootstrapToken,
    tag: &str,
) -> Figures {
    let addrs: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.addr.clone()).collect());
    let pin = replicas[0].pin;
    let mut failures = 0;

    // Distinct one-use tokens, from a shared pool.
    let pool = Arc::new(Mutex::new(one_use));
    let before = retries(replicas);
    let (a, t) = (Arc::clone(&addrs), tag.to_owned());
    let (one_use, joined, failed) = throughput(ex, move |w, n| {
        let (addrs, tag, pool) = (Arc::clone(&a), t.clone(), Arc::clone(&pool));
        async move {
            let token = pool.lock().unwrap().pop()?;
            let id = ClientId::new(&format!("{tag}-o{w}-{n}")).unwrap();
            let addr = &addrs[w % addrs.len()];
            Some(match agent().join(addr, token, &[pin], id, &MemoryKeyringStore::new()).await {
                Ok(session) => session.close().await,
                Err(e) => Err(e),
            })
        }
    });
    let one_use_retries = (retries(replicas) - before) / joined.max(1) as f64;
    failures += failed;

    // One unlimited token, then one limited token (every join rewrites its record).
    let (unlimited_rate, unlimited_retries, failed) = shared_token_joins(ex, replicas, &unlimited, &format!("{tag}-u"));
    failures += failed;
    let (limited_rate, limited_retries, failed) = shared_token_joins(ex, replicas, &limited, &format!("{tag}-l"));
    failures += failed;

    // One keyring per worker, then resumes with it.
    let saved: Vec<SavedKeyring> = smol::block_on(async {
        let mut saved = Vec::new();
        for w in 0..AGENTS {
            let keyrings = MemoryKeyringStore::new();
            let id = ClientId::new(&format!("{tag}-r{w}")).unwrap();
            let session =
                agent().join(&addrs[w % addrs.len()], unlimited.clone(), &[pin], id, &keyrings).await.unwrap();
            session.close().await.unwrap();
            saved.push(keyrings.load_keyring().await.unwrap().unwrap());
        }
        saved
    });
    let saved = Arc::new(saved);
    let a = Arc::clone(&addrs);
    let (resumes, _, failed) = throughput(ex, move |w, _| {
        let (addrs, saved) = (Arc::clone(&a), Arc::clone(&saved));
        async move {
            // A resume goes to another replica than the join when there are several.
            let addr = &addrs[(w + 1) % addrs.len()];
            Some(match agent().connect_with(addr, saved[w].clone()).await {
                Ok(session) => session.close().await,
                Err(e) => Err(e),
            })
        }
    });
    failures += failed;
    Figures {
        one_use,
        one_use_retries,
        unlimited: unlimited_rate,
        unlimited_retries,
        limited: limited_rate,
        limited_retries,
        resumes,
        failures,
    }
}

/// `n` random tokens with distinct ids (among thousands of random ids, two alike are
/// likely enough to matter: the store would refuse the second).
fn tokens(n: usize) -> Vec<BootstrapToken> {
    let mut ids = std::collections::HashSet::new();
    std::iter::repeat_with(|| BootstrapToken::generate(&mut os_rng())).filter(|t| ids.insert(t.id())).take(n).collect()
}

fn row(setup: &str, f: &Figures) {
    println!(
        "| {setup} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} |{}",
        f.one_use,
        f.one_use_retries,
        f.unlimited,
        f.unlimited_retries,
        f.limited,
        f.limited_retries,
        f.resumes,
        if f.failures > 0 { format!(" {} failed", f.failures) } else { String::new() }
    );
}

fn main() {
    let bin = release_binary();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ex = executor(cores);
    println!(
        "boarding gateway serve (release), etcd {} (one member, loopback), {AGENTS} agents in this process; all on \
         {cores} cores",
        etcd_version()
    );
    println!("each figure: {PHASE:?} of closed-loop joins or resumes (TLS 1.3 + Boarding + authenticated close)");
    println!();
    println!(
        "| setup | joins/s, one-use tokens | retries/join | joins/s, one unlimited token | retries/join | joins/s, \
         one token of {LIMITED_USES} uses | retries/join | resumes/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");

    // One gateway on redb.
    {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("gw");
        let one_use = tokens(ONE_USE_TOKENS);
        let (unlimited, limited) = (BootstrapToken::generate(&mut os_rng()), BootstrapToken::generate(&mut os_rng()));
        let target = Tokens::Redb(&data);
        target.insert(&one_use, 1);
        target.insert(std::slice::from_ref(&unlimited), 0);
        target.insert(std::slice::from_ref(&limited), LIMITED_USES);
        let replica = Replica::start(&bin, &["--data-dir".into(), data.display().to_string()]);
        let figures = measure(&ex, std::slice::from_ref(&replica), one_use, unlimited, limited, "redb");
        row("1 gateway, redb", &figures);
    }

    // Replicas on etcd: a fresh member and fleet for each setup.
    for replicas in [1, 3] {
        let member = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("sealing.key");
        SealingKey::create_file(&key_file).unwrap();
        let prefix = format!("/boarding/bench-{replicas}/");
        let args: Vec<String> = vec![
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            member.endpoint().into(),
            "--etcd-prefix".into(),
            prefix.clone(),
            "--etcd-sealing-key".into(),
            key_file.display().to_string(),
        ];
        let fleet: Vec<Replica> = (0..replicas).map(|_| Replica::start(&bin, &args)).collect();
        let config = EtcdConfig::new([member.endpoint()], SealingKey::load(&key_file).unwrap()).with_prefix(&prefix);
        let store = smol::block_on(EtcdStore::connect(config)).unwrap();
        let one_use = tokens(ONE_USE_TOKENS);
        let (unlimited, limited) = (BootstrapToken::generate(&mut os_rng()), BootstrapToken::generate(&mut os_rng()));
        Tokens::Etcd(&store).insert(&one_use, 1);
        Tokens::Etcd(&store).insert(std::slice::from_ref(&unlimited), 0);
        Tokens::Etcd(&store).insert(std::slice::from_ref(&limited), LIMITED_USES);
        let figures = measure(&ex, &fleet, one_use, unlimited, limited, "etcd");
        let setup = if replicas == 1 { "1 replica, etcd".to_owned() } else { format!("{replicas} replicas, etcd") };
        row(&setup, &figures);
    }
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}
