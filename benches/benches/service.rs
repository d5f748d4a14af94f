//! The shipped gateway as a service: the release `boarding gateway serve` binary, with
//! its redb store on disk and, side by side in the same run, the same binary with
//! `--memory`; agents in this process, over TCP and TLS 1.3 on loopback.
//!
//! Prints, for 1 and 2 gateway threads and 1, 16 and 256 concurrent agents: joins/s and
//! resumes/s on each store and their ratio, and the gateway's CPU per join and per
//! resume against its share of the public-key bound (its TLS server handshake and its
//! Boarding operations, timed here in-process); then the cost of an unauthenticated
//! hello (disk bytes the gateway writes, its CPU against this process's); then a slot
//! attack (1,000 silent connections reopened at 100/s from 127.0.0.2, a ClientHello
//! flood from 127.0.0.3) with legitimate joins and resumes from 127.0.0.1: their success
//! rate and latency.
//!
//! `cargo bench -p boarding-benches --bench service` (it builds the release binary
//! first). Agents and gateway share this machine's cores. Every connection targets
//! 127.0.0.0/8; every phase is bounded in time and stops by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use boarding::client::SavedKeyring;
use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::BootstrapToken;
use boarding_benches::process::{ServedGateway, executor, release_binary};
use boarding_smol::{Agent, AgentConfig, KeyringStore, MemoryKeyringStore};
use smol::Async;
use smol::io::AsyncWriteExt;

/// How long each throughput phase runs.
const PHASE: Duration = Duration::from_secs(3);

struct GatewayProcess {
    served: ServedGateway,
    addr: String,
    pin: Pin,
    dir: tempfile::TempDir,
}

impl GatewayProcess {
    fn start(bin: &Path, memory: bool, threads: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("gw");
        let mut command = Command::new(bin);
        command
            .args(["gateway", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--threads", &threads.to_string()])
            .args(["--max-handshakes", "1024", "--max-handshakes-per-source", "1024"])
            .args(["--max-sessions-per-client", "1024"]);
        if memory {
            command.arg("--memory");
        }
        let served = ServedGateway::start(command);
        let (addr, pin) = (served.addr.clone(), served.pin);
        Self { served, addr, pin, dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("gw")
    }

    fn token(&self, bin: &Path) -> BootstrapToken {
        let out = Command::new(bin)
            .args(["token", "create", "--uses", "0", "--ttl", "never", "--data-dir"])
            .arg(self.data())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    fn usage(&self) -> Usage {
        Usage::of(self.served.child.id())
    }
}

/// A process's CPU time and disk writes so far.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    written: u64,
}

impl Usage {
    fn of(pid: u32) -> Self {
        Self::read(&format!("/proc/{pid}"))
    }

    fn own() -> Self {
        Self::read("/proc/self")
    }

    fn read(proc_dir: &str) -> Self {
        let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start at ") ".
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let per_second = rustix::param::clock_ticks_per_second();
        let cpu = Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / per_second as f64);
        let io = std::fs::read_to_string(format!("{proc_dir}/io")).unwrap_or_default();
        let written =
            io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Self { cpu, written }
    }

    fn since(self, before: Self) -> Self {
        Self { cpu: self.cpu.saturating_sub(before.cpu), written: self.written.saturating_sub(before.written) }
    }
}

/// Runs `concurrency` workers, each repeating `op` until `PHASE` is over; returns the
/// operations completed per second and the failures.
fn throughput<F, Fut>(ex: &Arc<smol::Executor<'static>>, concurrency: usize, op: F) -> (f64, usize, usize)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), boarding_smol::Error>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (op, done, failed) = (Arc::clone(&op), Arc::clone(&done), Arc::clone(&failed));
            ex.spawn(async move {
                let mut n = 0;
                while started.elapsed() < PHASE {
                    match op(w, n).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
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

/// Joins and resumes per second against one gateway, and its CPU per operation.
struct Figures {
    joins: f64,
    resumes: f64,
    cpu_join: Duration,
    cpu_resume: Duration,
    failures: usize,
}

fn measure(bin: &Path, ex: &Arc<smol::Executor<'static>>, memory: bool, threads: usize, concurrency: usize) -> Figures {
    let gateway = GatewayProcess::start(bin, memory, threads);
    let token = gateway.token(bin);
    let (addr, pin) = (gateway.addr.clone(), gateway.pin);
    let agent = Agent::new(AgentConfig { retries: 8, ..AgentConfig::default() });

    let before = gateway.usage();
    let (a, t) = (agent.clone(), token.clone());
    let addr_j = addr.clone();
    let (joins, joined, join_failures) = throughput(ex, concurrency, move |w, n| {
        let (agent, token, addr) = (a.clone(), t.clone(), addr_j.clone());
        async move {
            let id = ClientId::new(&format!("j{w}-{n}")).unwrap();
            let session = agent.join(&addr, token, &[pin], id, &MemoryKeyringStore::new()).await?;
            session.close().await
        }
    });
    let cpu_join = gateway.usage().since(before).cpu.div_f64(joined.max(1) as f64);

    // One keyring per worker, then resumes with it.
    let saved: Vec<SavedKeyring> = smol::block_on(async {
        let mut saved = Vec::new();
        for w in 0..concurrency {
            let keyrings = MemoryKeyringStore::new();
            let id = ClientId::new(&format!("r{w}")).unwrap();
            let session = agent.join(&addr, token.clone(), &[pin], id, &keyrings).await.unwrap();
            session.close().await.unwrap();
            saved.push(keyrings.load_keyring().await.unwrap().unwrap());
        }
        saved
    });
    let saved = Arc::new(saved);
    let before = gateway.usage();
    let a = agent.clone();
    let (resumes, resumed, resume_failures) = throughput(ex, concurrency, move |w, _| {
        let (agent, saved, addr) = (a.clone(), Arc::clone(&saved), addr.clone());
        async move {
            let session = agent.connect_with(&addr, saved[w].clone()).await?;
            session.close().await
        }
    });
    let cpu_resume = gateway.usage().since(before).cpu.div_f64(resumed.max(1) as f64);
    Figures { joins, resumes, cpu_join, cpu_resume, failures: join_failures + resume_failures }
}

/// The gateway's public-key work per join and per resume, timed in-process: the TLS
/// server side (X25519MLKEM768 encapsulation and an Ed25519 CertificateVerify) plus the
/// Boarding side (an ephemeral X25519 key and agreement; a join adds its Ed25519
/// challenge signature).
fn public_key_bound() -> (Duration, Duration) {
    use ed25519_dalek::Signer;
    const N: u32 = 2000;
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..N / 10 {
            f();
        }
        let started = Instant::now();
        for _ in 0..N {
            f();
        }
        started.elapsed() / N
    };
    let group = boarding_smol::tls::provider().kx_groups[0];
    let client_share = group.start().unwrap().pub_key().to_vec();
    let kem = time(&mut || {
        std::hint::black_box(group.start_and_complete(&client_share).unwrap());
    });
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let sign = time(&mut || {
        std::hint::black_box(key.sign(&[0u8; 130]));
    });
    let peer = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9; 32]));
    let mut seed = 1u8;
    let dh = time(&mut || {
        seed = seed.wrapping_add(1);
        let secret = x25519_dalek::StaticSecret::from([seed; 32]);
        std::hint::black_box((x25519_dalek::PublicKey::from(&secret), secret.diffie_hellman(&peer)));
    });
    let tls = kem + sign;
    (tls + dh + sign, tls + dh)
}

/// One TLS 1.3 handshake in memory, client and server CPU together (the gateway's
/// certificate, the agent's pinned verifier), with the client offering `groups`.
fn tls_handshake_time(groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Duration {
    use std::io::{Read, Write};
    let identity = boarding::identity::ServerIdentity::from_seed([3; 32]);
    let server_config = boarding_smol::tls::server_config(&identity).unwrap();
    let mut provider = (*boarding_smol::tls::provider()).clone();
    provider.kx_groups = groups.to_vec();
    let verifier = Arc::new(boarding_smol::tls::PinVerifier::new(vec![identity.pin()]));
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from(boarding_smol::tls::SERVER_NAME).unwrap();
    let once = || {
        let mut client = rustls::ClientConnection::new(Arc::clone(&client_config), name.clone()).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::clone(&server_config)).unwrap();
        let mut buf = Vec::new();
        while client.is_handshaking() || server.is_handshaking() {
            buf.clear();
            client.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets().unwrap();
            }
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        // One byte each way proves the keys agree.
        client.writer().write_all(b"x").unwrap();
        buf.clear();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        let mut got = [0u8; 1];
        server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        std::hint::black_box(client.negotiated_key_exchange_group().map(|g| g.name()))
    };
    for _ in 0..50 {
        once();
    }
    const N: u32 = 500;
    let started = Instant::now();
    for _ in 0..N {
        once();
    }
    started.elapsed() / N
}

fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<Async<std::net::TcpStream>> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    bind(&fd, &SocketAddrV4::new(from, 0))?;
    connect(&fd, &to)?;
    Async::new(std::net::TcpStream::from(fd))
}

fn client_hello(pin: Pin) -> Vec<u8> {
    let verifier = Arc::new(boarding_smol::tls::PinVerifier::new(vec![pin]));
    let config = boarding_smol::tls::client_config(verifier).unwrap();
    let name = rustls::pki_types::ServerName::try_from(boarding_smol::tls::SERVER_NAME).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Keeps up to `count` connections from `from` open, opening at most `rate` per second.
async fn hold(from: Ipv4Addr, to: SocketAddr, count: usize, rate: u32, hello: Option<Vec<u8>>, stop: Arc<AtomicBool>) {
    let mut open: Vec<Async<std::net::TcpStream>> = Vec::new();
    let pause = Duration::from_secs(1) / rate;
    while !stop.load(Ordering::Relaxed) {
        open.retain(|s| {
            let mut probe = [0u8; 1];
            match s.get_ref().peek(&mut probe) {
                Ok(n) => n > 0,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        if open.len() < count
            && let Ok(mut s) = connect_from(from, to)
        {
            if let Some(h) = &hello {
                let _ = s.write_all(h).await;
            }
            open.push(s);
        }
        smol::Timer::after(pause).await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter criterion would
    // take, which this harness does not support: run everything.
    let bin = release_binary();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ex = executor(cores);
    println!("boarding gateway serve (release) on {cores} cores, agents in this process on {cores} threads");
    println!("each figure: {PHASE:?} of closed-loop joins or resumes (TLS 1.3 + Boarding + authenticated close)");

    let (bound_join, bound_resume) = public_key_bound();
    println!("gateway public-key bound: {bound_join:?} per join, {bound_resume:?} per resume");
    let pq = tls_handshake_time(&[rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768]);
    let classic = tls_handshake_time(&[rustls::crypto::aws_lc_rs::kx_group::X25519]);
    println!(
        "TLS 1.3 handshake in memory (client + server CPU): X25519MLKEM768 {pq:?}, X25519 {classic:?} ({:.2}×)",
        pq.as_secs_f64() / classic.as_secs_f64()
    );
    println!();
    println!(
        "| threads | agents | joins/s redb | joins/s memory | ratio | resumes/s redb | resumes/s memory | ratio | CPU/join redb (×bound) | CPU/join memory | CPU/resume redb (×bound) | CPU/resume memory |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for threads in [1, 2] {
        for concurrency in [1, 16, 256] {
            let redb = measure(&bin, &ex, false, threads, concurrency);
            let memory = measure(&bin, &ex, true, threads, concurrency);
            println!(
                "| {threads} | {concurrency} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} µs ({:.1}×) | {:.0} µs | {:.0} µs ({:.1}×) | {:.0} µs |{}",
                redb.joins,
                memory.joins,
                redb.joins / memory.joins,
                redb.resumes,
                memory.resumes,
                redb.resumes / memory.resumes,
                redb.cpu_join.as_secs_f64() * 1e6,
                redb.cpu_join.as_secs_f64() / bound_join.as_secs_f64(),
                memory.cpu_join.as_secs_f64() * 1e6,
                redb.cpu_resume.as_secs_f64() * 1e6,
                redb.cpu_resume.as_secs_f64() / bound_resume.as_secs_f64(),
                memory.cpu_resume.as_secs_f64() * 1e6,
                if redb.failures + memory.failures > 0 {
                    format!(" {} failed", redb.failures + memory.failures)
                } else {
                    String::new()
                }
            );
        }
    }

    // Unauthenticated hellos: a join with a token the gateway never issued.
    println!();
    let gateway = GatewayProcess::start(&bin, false, 0);
    let (addr, pin) = (gateway.addr.clone(), gateway.pin);
    const HELLOS: usize = 1000;
    let (gateway_before, own_before) = (gateway.usage(), Usage::own());
    let refused = smol::block_on(async {
        let agent = Agent::new(AgentConfig { retries: 0, ..AgentConfig::default() });
        let mut refused = 0;
        for i in 0..HELLOS {
            let unknown = BootstrapToken::generate(&mut boarding_smol::os_rng());
            let id = ClientId::new(&format!("anon-{i}")).unwrap();
            if agent.join(&addr, unknown, &[pin], id, &MemoryKeyringStore::new()).await.is_err() {
                refused += 1;
            }
        }
        refused
    });
    let gw = gateway.usage().since(gateway_before);
    let own = Usage::own().since(own_before);
    println!(
        "unauthenticated hello (unknown token, {refused}/{HELLOS} refused): {} disk bytes written per hello; gateway \
         CPU {:.0} µs per hello against the attacker's {:.0} µs ({:.2}×)",
        gw.written / HELLOS as u64,
        gw.cpu.as_secs_f64() * 1e6 / HELLOS as f64,
        own.cpu.as_secs_f64() * 1e6 / HELLOS as f64,
        gw.cpu.as_secs_f64() / own.cpu.as_secs_f64().max(1e-9)
    );
    drop(gateway);

    // A slot attack with legitimate agents alongside, on the default caps.
    let gateway = GatewayProcess::start(&bin, false, 0);
    let token = gateway.token(&bin);
    let (addr, pin) = (gateway.addr.clone(), gateway.pin);
    let to: SocketAddr = addr.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let silent = ex.spawn(hold(Ipv4Addr::new(127, 0, 0, 2), to, 1000, 100, None, stop.clone()));
    let flood = ex.spawn(hold(Ipv4Addr::new(127, 0, 0, 3), to, 1000, 100, Some(client_hello(pin)), stop.clone()));
    std::thread::sleep(Duration::from_secs(3));
    let (ok, total, mut latencies) = smol::block_on(async {
        let agent = Agent::default();
        let keyrings = MemoryKeyringStore::new();
        let first = agent.join(&addr, token.clone(), &[pin], ClientId::new("legit").unwrap(), &keyrings).await;
        let saved = keyrings.load_keyring().await.unwrap();
        let mut latencies = Vec::new();
        let mut ok = usize::from(first.is_ok());
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(10) {
            let t = Instant::now();
            let outcome = if n % 2 == 0 {
                match &saved {
                    Some(saved) => agent.connect_with(&addr, saved.clone()).await.map(drop),
                    None => Err(boarding_smol::Error::Truncated),
                }
            } else {
                let id = ClientId::new(&format!("legit-{n}")).unwrap();
                agent.join(&addr, token.clone(), &[pin], id, &MemoryKeyringStore::new()).await.map(drop)
            };
            latencies.push(t.elapsed());
            ok += usize::from(outcome.is_ok());
            n += 1;
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        (ok, n + 1, latencies)
    });
    stop.store(true, Ordering::Relaxed);
    smol::block_on(async {
        silent.await;
        flood.await;
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "slot attack (1,000 silent connections reopened at 100/s from 127.0.0.2, a ClientHello flood from 127.0.0.3): \
         {ok}/{total} legitimate joins and resumes succeeded ({:.1}%), p50 {:?}, p99 {:?}",
        ok as f64 * 100.0 / total as f64,
        at(0.5),
        at(0.99)
    );
}
