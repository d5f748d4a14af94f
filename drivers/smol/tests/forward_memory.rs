//! A slow upstream and a slow agent do not grow the gateway's memory: the heap of this
//! whole process (gateway, agent, upstream and the test's own client), counted by a
//! wrapping allocator, stays within a stated bound while one side pushes megabytes at a
//! reader that does not read. One test in its own binary, so nothing else allocates
//! meanwhile. Over real TCP and TLS 1.3 on 127.0.0.1, bounded in time.

use std::alloc::System;
use std::time::Duration;

use boarding::token::{BootstrapToken, TokenRecord};
use boarding_smol::forward::{STREAM_BUFFERS, Service, Services, read_header, serve_services};
use boarding_smol::{Agent, Gateway, GatewayConfig, KeyringStore, MemoryKeyringStore, MemoryStore, Store, os_rng};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

mod common;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes held right now.
fn live() -> i64 {
    let s = GLOBAL.stats();
    i64::try_from(s.bytes_allocated).unwrap() - i64::try_from(s.bytes_deallocated).unwrap()
}

/// What one stream may add to the heap while its reader stalls, the two sides (agent and
/// gateway) together: its pumps' buffers are allocated when it starts, so only the TLS
/// connections' own bounded buffers can still grow (rustls: at most 64 KiB of records to
/// send and 16 KiB of received plaintext a side, plus one record being read).
const STALL_BOUND: i64 = 2 * 128 * 1024;

/// Writes 64 KiB at a time until a write makes no progress for half a second; the bytes
/// written (at most 512 MiB, so a missing backpressure fails instead of running on).
async fn push_until_stalled(stream: &mut TcpStream) -> u64 {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut total = 0u64;
    while total < 512 << 20 {
        let wrote = smol::future::or(async { stream.write(&chunk).await.ok() }, async {
            smol::Timer::after(Duration::from_millis(500)).await;
            None
        })
        .await;
        match wrote {
            Some(n) if n > 0 => total += n as u64,
            _ => break,
        }
    }
    total
}

/// Reads until EOF; the bytes read.
async fn drain(stream: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf).await.unwrap() {
            0 => return total,
            n => total += n as u64,
        }
    }
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = smol::future::zip(TcpStream::connect(addr), listener.accept()).await;
    (client.unwrap(), accepted.unwrap().0)
}

#[test]
fn a_slow_upstream_or_a_slow_agent_does_not_grow_the_memory_past_the_bound() {
    common::run_within(Duration::from_secs(120), async {
        // The upstream: reads the header, says so, then waits for the test before it
        // reads (first connection) or floods the stream until it stalls (second).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = listener.local_addr().unwrap();
        let (ready_tx, ready) = smol::channel::unbounded::<u64>();
        let (go_tx, go) = smol::channel::unbounded::<()>();
        let upstream = smol::spawn(async move {
            // First: a slow reader.
            let (mut stream, _) = listener.accept().await.unwrap();
            read_header(&mut stream).await.unwrap();
            ready_tx.send(0).await.unwrap();
            go.recv().await.unwrap();
            ready_tx.send(drain(&mut stream).await).await.unwrap();
            drop(stream);
            // Second: a fast writer to a slow agent.
            let (mut stream, _) = listener.accept().await.unwrap();
            read_header(&mut stream).await.unwrap();
            ready_tx.send(0).await.unwrap();
            go.recv().await.unwrap();
            ready_tx.send(push_until_stalled(&mut stream).await).await.unwrap();
            go.recv().await.unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = drain(&mut stream).await;
        });

        let gateway = Gateway::open(MemoryStore::new(), GatewayConfig::default()).await.unwrap();
        let services = Services::new().with_service("sink".parse().unwrap(), Service::new(upstream_addr.to_string()));
        let serving = gateway.serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), serve_services(services)).unwrap();
        let addr = serving.local_addr().to_string();
        let token = BootstrapToken::generate(&mut os_rng());
        gateway.store().insert_token(TokenRecord::new(token.clone(), None, 1)).await.unwrap();
        let agent = Agent::default();
        let keyrings = MemoryKeyringStore::new();
        let session = agent.join(&addr, token, &[gateway.pin()], common::id("node-1"), &keyrings).await.unwrap();
        session.close().await.unwrap();
        let saved = keyrings.load_keyring().await.unwrap().unwrap();

        // A slow upstream: the agent's side pushes until everything stalls.
        let before_stream = live();
        let (mut local, remote) = pair().await;
        let forwarding = {
            let (agent, addr, saved) = (agent.clone(), addr.clone(), saved.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "sink", remote).await })
        };
        assert_eq!(ready.recv().await.unwrap(), 0);
        smol::Timer::after(Duration::from_millis(100)).await;
        let baseline = live();
        let pushed = push_until_stalled(&mut local).await;
        let growth = live() - baseline;
        eprintln!(
            "slow upstream: {pushed} bytes pushed and stalled; the heap grew by {growth} bytes meanwhile \
             (bound {STALL_BOUND}); the stream holds {} bytes in all (its two pumps' buffers are {} bytes)",
            baseline - before_stream,
            2 * STREAM_BUFFERS
        );
        assert!(pushed > 1 << 20, "the agent's side got to push a while before it stalled: {pushed}");
        assert!(growth < STALL_BOUND, "a slow upstream grew the heap by {growth} bytes");
        go_tx.send(()).await.unwrap();
        local.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(ready.recv().await.unwrap(), pushed, "every byte arrives once the upstream reads");
        assert_eq!(forwarding.await.unwrap().sent, pushed);
        drop(local);

        // A slow agent: the upstream floods a local stream nobody reads.
        let (mut local, remote) = pair().await;
        let forwarding = {
            let (agent, addr) = (agent.clone(), addr.clone());
            smol::spawn(async move { agent.forward(&addr, &MemoryKeyringStore::holding(saved), "sink", remote).await })
        };
        assert_eq!(ready.recv().await.unwrap(), 0);
        smol::Timer::after(Duration::from_millis(100)).await;
        let baseline = live();
        go_tx.send(()).await.unwrap();
        let flooded = ready.recv().await.unwrap();
        let growth = live() - baseline;
        eprintln!("slow agent: {flooded} bytes pushed and stalled; the heap grew by {growth} bytes meanwhile");
        assert!(flooded > 1 << 20, "the upstream got to push a while before it stalled: {flooded}");
        assert!(growth < STALL_BOUND, "a slow agent grew the heap by {growth} bytes");
        go_tx.send(()).await.unwrap();
        assert_eq!(drain(&mut local).await, flooded, "every byte arrives once the agent's side reads");
        local.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(forwarding.await.unwrap().received, flooded);
        upstream.await;
        serving.shutdown().await;
    });
}
