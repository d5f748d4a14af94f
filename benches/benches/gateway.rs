//! Joins and resumes per second through the smol gateway over loopback TCP + TLS 1.3,
//! with 1, 16 and 256 agents running at once. The gateway runs on smol's global
//! executor (one thread) and the agents on the main thread, so on a two-core machine
//! each side gets about one core; the figure is end to end (TCP connect, TLS 1.3 full
//! handshake with the pinned-certificate check, the Boarding handshake, a close).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boarding::client::SavedKeyring;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::{
    Agent, Gateway, GatewayConfig, KeyringStore as _, MemoryKeyringStore, MemoryStore, Store as _, echo,
};
use smol::net::TcpListener;

const CONCURRENCY: [usize; 3] = [1, 16, 256];
/// How long each (handshake, concurrency) cell runs.
const CELL: Duration = Duration::from_millis(1500);
/// At most this many handshakes per cell (each uses a loopback port for a minute).
const CELL_CAP: u64 = 3000;

fn id(s: &str) -> ClientId {
    ClientId::new(s).unwrap_or_else(|e| panic!("client id {s}: {e}"))
}

/// Runs `agents` concurrent loops of `one` until the cell's time or cap is used up;
/// returns completed handshakes per second.
async fn cell<F, Fut>(agents: usize, one: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let executor = smol::LocalExecutor::new();
    let mut tasks = Vec::with_capacity(agents);
    for agent in 0..agents {
        let (done, one) = (done.clone(), one.clone());
        tasks.push(executor.spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < CELL && done.load(Ordering::Relaxed) < CELL_CAP {
                one(agent, n).await;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    executor
        .run(async {
            for task in tasks {
                task.await;
            }
        })
        .await;
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = smol::block_on(async {
        // Every agent connects from 127.0.0.1: the per-source cap (a defence against one
        // address holding the handshake slots) would refuse the 256-agent cell, so it is
        // as high as the global one here.
        let config =
            GatewayConfig { max_handshakes: 4096, max_handshakes_per_source: 4096, ..GatewayConfig::default() };
        let gateway = Gateway::new(ServerIdentity::from_seed([9; 32]), MemoryStore::new(), config)
            .unwrap_or_else(|e| panic!("gateway: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let serving = gateway.serve(listener, echo).unwrap_or_else(|e| panic!("serve: {e}"));
        let addr = Arc::new(serving.local_addr().to_string());
        let token = BootstrapToken::generate(&mut boarding_smol::os_rng());
        assert!(gateway.store().insert_token(TokenRecord::new(token.clone(), None, 0)).await.unwrap_or(false));
        let pin = gateway.pin();

        let join = {
            let (addr, token) = (addr.clone(), token.clone());
            move |tag: String| {
                let (addr, token) = (addr.clone(), token.clone());
                async move {
                    let keyrings = MemoryKeyringStore::new();
                    let session = Agent::default()
                        .join(&addr, token, &[pin], id(&tag), &keyrings)
                        .await
                        .unwrap_or_else(|e| panic!("join {tag}: {e}"));
                    session.close().await.unwrap_or_else(|e| panic!("close: {e}"));
                    keyrings.load_keyring().await.ok().flatten()
                }
            }
        };
        // Warm up, and check a session carries data.
        for i in 0..16 {
            assert!(join(format!("warm-{i}")).await.is_some());
        }

        let mut rows = Vec::new();
        for agents in CONCURRENCY {
            let j = join.clone();
            let joins = cell(agents, move |a, n| {
                let j = j.clone();
                async move {
                    j(format!("j{agents}-{a}-{n}")).await;
                }
            })
            .await;
            // One joined agent identity per concurrent agent, then resumes only.
            let mut saved: Vec<SavedKeyring> = Vec::with_capacity(agents);
            for a in 0..agents {
                saved.push(join(format!("r{agents}-{a}")).await.unwrap_or_else(|| panic!("no keyring saved")));
            }
            let saved = Arc::new(saved);
            let addr = addr.clone();
            let resumes = cell(agents, move |a, _| {
                let (saved, addr) = (saved.clone(), addr.clone());
                async move {
                    let session = Agent::default()
                        .connect_with(&addr, saved[a].clone())
                        .await
                        .unwrap_or_else(|e| panic!("resume: {e}"));
                    session.close().await.unwrap_or_else(|e| panic!("close: {e}"));
                }
            })
            .await;
            rows.push((agents, joins, resumes));
        }
        let stats = gateway.stats();
        serving.shutdown().await;
        assert_eq!(stats.failed, 0, "{stats:?}");
        assert_eq!(stats.refused, 0, "{stats:?}");
        rows
    });

    let mut table = String::from("| concurrent agents | joins/s | resumes/s |\n|---:|---:|---:|\n");
    for (agents, joins, resumes) in rows {
        table.push_str(&format!("| {agents} | {joins:.0} | {resumes:.0} |\n"));
    }
    println!("\n## Through the smol gateway (loopback TCP + TLS 1.3)\n\n{table}");
    if let Some(dir) =
        std::env::current_exe().ok().and_then(|e| Some(e.parent()?.parent()?.parent()?.join("criterion")))
    {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("boarding-gateway.md"), table);
    }
}
