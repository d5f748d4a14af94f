//! A forwarded stream (a local port of the agent's → the gateway → the upstream) against
//! a direct TCP connection to the same upstream and against rustls alone (the gateway's
//! own TLS configuration: aws-lc-rs, X25519MLKEM768) over the same loopback.
//!
//! Prints, for writes of 1 KiB and 64 KiB: upload throughput (the client writes for a
//! fixed time, then the sink answers how much it read), round-trip latency through an
//! echo (p50 and p99), and the cost of a new connection up to its first echoed byte
//! (for the forwarded path a resume, the Open and its answer, and the gateway's upstream
//! connection), plus a bare resume.
//!
//! `cargo bench -p boarding-benches --bench forward`. Everything runs in this process:
//! the gateway on its executor (one thread per core), the agent's listener and the
//! upstreams on smol's global executor, the rustls server and the clients on threads of
//! their own; they share this machine's cores. Every connection targets 127.0.0.1; every
//! phase is bounded and stops by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boarding::identity::{ClientId, ServerIdentity};
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::forward::{Service, Services, read_header, serve_services};
use boarding_smol::tls::{self, PinVerifier};
use boarding_smol::{Agent, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore, MemoryStore, Store, os_rng};
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// How long each throughput phase writes.
const PHASE: Duration = Duration::from_secs(2);

use boarding_benches::rustls_upstream::{ECHO, SINK, rustls_upstream};

/// Serves one upstream connection: `S` reads until EOF and answers the byte count (8
/// bytes); `E` echoes until EOF.
async fn upstream_connection(mut stream: smol::net::TcpStream) {
    let mut mode = [0u8; 1];
    if stream.read_exact(&mut mode).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if mode[0] == ECHO && stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    if mode[0] == SINK {
        let _ = stream.write_all(&total.to_be_bytes()).await;
    }
}

/// An upstream on 127.0.0.1; `proxied`: each connection starts with a PROXY header.
async fn upstream(proxied: bool) -> SocketAddr {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            smol::spawn(async move {
                if proxied && read_header(&mut stream).await.is_err() {
                    return;
                }
                upstream_connection(stream).await;
            })
            .detach();
        }
    })
    .detach();
    addr
}

/// A client connection on one of the three paths.
enum Client {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Client {
    fn write_all(&mut self, b: &[u8]) {
        match self {
            Client::Tcp(s) => s.write_all(b).unwrap(),
            Client::Tls(s) => s.write_all(b).unwrap(),
        }
    }

    fn read_exact(&mut self, b: &mut [u8]) {
        match self {
            Client::Tcp(s) => s.read_exact(b).unwrap(),
            Client::Tls(s) => s.read_exact(b).unwrap(),
        }
    }

    /// Ends the client's direction (a TCP half-close, or TLS close_notify, which the
    /// server reads as the end).
    fn finish(&mut self) {
        match self {
            Client::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Client::Tls(s) => {
                s.conn.send_close_notify();
                s.flush().unwrap();
            }
        }
    }
}

#[derive(Clone)]
struct Path {
    name: &'static str,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Path {
    fn connect(&self) -> Client {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        match &self.tls {
            None => Client::Tcp(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
                let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
                Client::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        }
    }
}

/// Bytes per second the client uploads with writes of `size`, until the sink has them all.
fn throughput(path: &Path, size: usize) -> f64 {
    let mut client = path.connect();
    client.write_all(&[SINK]);
    let chunk = vec![0x5au8; size];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < PHASE {
        for _ in 0..16 {
            client.write_all(&chunk);
        }
        sent += 16 * size as u64;
    }
    client.finish();
    let mut count = [0u8; 8];
    client.read_exact(&mut count);
    let took = started.elapsed();
    assert_eq!(u64::from_be_bytes(count), sent, "{}: the sink read every byte", path.name);
    sent as f64 / took.as_secs_f64()
}

/// Round trips of `size` bytes through the echo: p50 and p99.
fn latency(path: &Path, size: usize, rounds: usize) -> (Duration, Duration) {
    let mut client = path.connect();
    client.write_all(&[ECHO]);
    let message = vec![0x33u8; size];
    let mut back = vec![0u8; size];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds / 10 {
        client.write_all(&message);
        client.read_exact(&mut back);
    }
    for _ in 0..rounds {
        let started = Instant::now();
        client.write_all(&message);
        client.read_exact(&mut back);
        times.push(started.elapsed());
    }
    client.finish();
    percentiles(times)
}

/// New connections up to their first echoed byte: p50 and p99.
fn setup(path: &Path, rounds: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut client = path.connect();
        client.write_all(&[ECHO, 1]);
        let mut one = [0u8; 1];
        client.read_exact(&mut one);
        times.push(started.elapsed());
        client.finish();
    }
    percentiles(times)
}

fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The gateway, a service in front of a PROXY-reading upstream, and an agent forwarding
    // a local port to it.
    let (paths, agent, gateway_addr, saved) = smol::block_on(async {
        let direct = upstream(false).await;
        let proxied = upstream(true).await;
        let gateway = Gateway::open(
            MemoryStore::new(),
            GatewayConfig { max_sessions_per_client: 64, max_handshakes_per_source: 1024, ..GatewayConfig::default() },
        )
        .await
        .unwrap();
        let services = Services::new().with_service("bench".parse().unwrap(), Service::new(proxied.to_string()));
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = gateway.serve(listener, serve_services(services)).unwrap();
        let gateway_addr = serving.local_addr().to_string();
        std::mem::forget(serving);
        let token = BootstrapToken::generate(&mut os_rng());
        gateway.store().insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap();
        let agent = Agent::default();
        let keyrings = MemoryKeyringStore::new();
        let id = ClientId::new("bench").unwrap();
        agent.join(&gateway_addr, token, &[gateway.pin()], id, &keyrings).await.unwrap().close().await.unwrap();
        let saved = keyrings.load_keyring().await.unwrap().unwrap();
        let local = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local_addr = local.local_addr().unwrap();
        {
            let (agent, gateway_addr, saved) = (agent.clone(), gateway_addr.clone(), saved.clone());
            smol::spawn(async move {
                agent.forward_listener(&gateway_addr, &MemoryKeyringStore::holding(saved), "bench", local, 64).await
            })
            .detach();
        }
        std::mem::forget(gateway);

        let identity = ServerIdentity::generate(&mut os_rng());
        let pin = identity.pin();
        let server = tls::server_config(&identity).unwrap();
        let client = tls::client_config(Arc::new(PinVerifier::new(vec![pin]))).unwrap();
        let rustls_addr = rustls_upstream(server);
        let paths = [
            Path { name: "direct TCP", addr: direct, tls: None },
            Path { name: "rustls alone", addr: rustls_addr, tls: Some(client) },
            Path { name: "forwarded", addr: local_addr, tls: None },
        ];
        (paths, agent, gateway_addr, saved)
    });

    println!("forwarded stream vs direct TCP vs rustls alone, loopback, {cores} cores shared by every party");
    println!();
    println!("| path | upload 1 KiB writes | upload 64 KiB writes |");
    println!("|---|---:|---:|");
    let mut rates = Vec::new();
    for path in &paths {
        let small = throughput(path, 1024);
        let large = throughput(path, 64 * 1024);
        rates.push((small, large));
        println!("| {} | {:.0} MB/s | {:.0} MB/s |", path.name, small / 1e6, large / 1e6);
    }
    println!();
    println!("| path | round trip 1 KiB p50 | p99 | round trip 64 KiB p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for path in &paths {
        let (s50, s99) = latency(path, 1024, 5000);
        let (l50, l99) = latency(path, 64 * 1024, 1000);
        println!("| {} | {} | {} | {} | {} |", path.name, us(s50), us(s99), us(l50), us(l99));
    }
    println!();
    println!("| path | new connection to first echoed byte p50 | p99 |");
    println!("|---|---:|---:|");
    for path in &paths {
        let (p50, p99) = setup(path, 500);
        println!("| {} | {} | {} |", path.name, us(p50), us(p99));
    }
    let resumes: Vec<Duration> = smol::block_on(async {
        let mut times = Vec::new();
        for _ in 0..500 {
            let started = Instant::now();
            let session = agent.connect_with(&gateway_addr, saved.clone()).await.unwrap();
            times.push(started.elapsed());
            session.close().await.unwrap();
        }
        times
    });
    let (p50, p99) = percentiles(resumes);
    println!("| a bare resume (TCP + TLS + Boarding, to the session) | {} | {} |", us(p50), us(p99));
}
