//! Heap use of the channel and the handshakes, counted by a counting global allocator
//! (`stats_alloc`, which wraps the system allocator): allocations per sealed and per
//! opened frame (asserted zero for the Boarding channel; shown for the peers), heap
//! bytes held per established session and per in-flight handshake, and which SIMD
//! implementations the MAC primitives run on this machine.

use std::alloc::System;
use std::hint::black_box;
use std::mem::size_of;

use boarding::channel::Channel;
use boarding::client::{Client, ClientOutput, ClientSession};
use boarding::handshake::Output;
use boarding::server::{Server, ServerRequest, ServerSession};
use boarding::suite::MacSuite;
use boarding_benches::{ChannelPair, HandshakeFixture, NOW, SIZES, SnowPair, TlsConfigs, TlsPair, payload, size_label};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes still held at the end of a region.
fn net_bytes(s: &Stats) -> isize {
    // `stats_alloc` already folds reallocation growth and shrinkage into these two.
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

/// Allocations (including reallocations) made in a region.
fn allocs(s: &Stats) -> usize {
    s.allocations + s.reallocations
}

fn frames(len: usize) -> usize {
    (256 * 1024 / len).clamp(16, 1000)
}

/// Returns the most allocations any Boarding frame operation made.
fn per_frame() -> usize {
    println!("\n## Allocations per frame (average over many frames)\n");
    println!("| payload | contender | allocs per seal | allocs per open | heap bytes allocated per frame |");
    println!("|---|---|---:|---:|---:|");
    let tls = TlsConfigs::new();
    let mut worst = 0;
    for len in SIZES {
        let data = payload(len);
        let n = frames(len);
        for (name, suite) in [("HMAC-SHA256 channel", MacSuite::HmacSha256), ("BLAKE3 channel", MacSuite::Blake3)] {
            for copy in [false, true] {
                let mut pair = ChannelPair::new(suite, &data);
                let (mut seal, mut open, mut bytes) = (0, 0, 0);
                for _ in 0..n {
                    let region = Region::new(GLOBAL);
                    let frame_len = if copy {
                        pair.client.seal(black_box(&data), &mut pair.frame)
                    } else {
                        pair.client.seal_in_place(&mut pair.frame, len)
                    }
                    .unwrap_or_else(|e| panic!("seal: {e}"));
                    let sealed = region.change();
                    let region = Region::new(GLOBAL);
                    let opened = black_box(pair.server.open(&pair.frame[..frame_len]));
                    assert!(opened.is_ok());
                    let opened = region.change();
                    seal += allocs(&sealed);
                    open += allocs(&opened);
                    bytes += sealed.bytes_allocated + opened.bytes_allocated;
                }
                worst = worst.max(seal).max(open);
                let how = if copy { "seal (copy in)" } else { "seal_in_place" };
                println!(
                    "| {} | {name}, {how} + open | {} | {} | {} |",
                    size_label(len),
                    seal as f64 / n as f64,
                    open as f64 / n as f64,
                    bytes / n
                );
            }
        }
        let mut snow = SnowPair::new(&data);
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            black_box(snow.send(&data));
        }
        let s = region.change();
        println!(
            "| {} | snow transport, write + read (whole payload) | {:.2} (both) | - | {} |",
            size_label(len),
            allocs(&s) as f64 / n as f64,
            s.bytes_allocated / n
        );
        let mut rustls = TlsPair::new(&tls, &data);
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            black_box(rustls.send(&data));
        }
        let s = region.change();
        println!(
            "| {} | rustls, write + move + read (whole payload) | {:.2} (both) | - | {} |",
            size_label(len),
            allocs(&s) as f64 / n as f64,
            s.bytes_allocated / n
        );
    }
    worst
}

const HELD: usize = 256;

// The in-flight rows feed one side recorded messages by hand, one step at a time, so
// that only that side's state is counted (a `Pair` would add its queues and log).

fn transmit_client(out: Option<ClientOutput>) -> Vec<u8> {
    match out {
        Some(Output::Transmit(bytes)) => bytes,
        other => panic!("expected a client transmission, got {other:?}"),
    }
}

fn transmit_server(server: &mut Server, fixture: &HandshakeFixture) -> Vec<u8> {
    loop {
        match server.poll_output() {
            Some(Output::Transmit(bytes)) => return bytes,
            Some(Output::Request(ServerRequest::Storage(request))) => {
                server.handle_storage(fixture.answer(request)).unwrap_or_else(|e| panic!("gateway: {e}"))
            }
            other => panic!("expected a gateway transmission, got {other:?}"),
        }
    }
}

/// Runs `make` `HELD` times, keeping every result alive, and returns the heap bytes
/// held per result (net of everything `make` freed again).
fn held_per<T>(mut make: impl FnMut() -> T) -> f64 {
    let mut kept: Vec<T> = Vec::with_capacity(HELD);
    let region = Region::new(GLOBAL);
    for _ in 0..HELD {
        kept.push(make());
    }
    let held = net_bytes(&region.change());
    black_box(&kept);
    held as f64 / HELD as f64
}

fn held() {
    let fixture = HandshakeFixture::new();
    let mut rng = ChaCha20Rng::seed_from_u64(3);

    // Recorded messages to feed each side on its own.
    let mut c = Client::join(fixture.join.clone(), &mut rng);
    let mut s = Server::new(fixture.server.clone(), &mut rng);
    let hello = transmit_client(c.poll_output());
    s.handle_input(NOW, &hello).unwrap_or_else(|e| panic!("{e}"));
    black_box(transmit_server(&mut s, &fixture));
    let mut rc = Client::resume(boarding::client::ResumeConfig::new(fixture.saved.clone()), &mut rng);
    let resume_hello = transmit_client(rc.poll_output());

    println!("\n## Heap held (bytes, average of {HELD} kept alive at once)\n");
    println!("| state | heap bytes | inline bytes (size_of) |");
    println!("|---|---:|---:|");
    let row = |what: &str, heap: f64, inline: usize| println!("| {what} | {heap:.0} | {inline} |");

    let h = held_per(|| {
        let mut client = Client::join(fixture.join.clone(), &mut rng);
        black_box(transmit_client(client.poll_output()));
        client
    });
    row("agent, join in flight (hello sent, awaiting ServerChallenge)", h, size_of::<Client>());
    let mut rng2 = ChaCha20Rng::seed_from_u64(4);
    let h = held_per(|| {
        let mut server = Server::new(fixture.server.clone(), &mut rng2);
        server.handle_input(NOW, &hello).unwrap_or_else(|e| panic!("{e}"));
        black_box(transmit_server(&mut server, &fixture));
        server
    });
    row("gateway, join in flight (challenge sent, awaiting ClientAuth)", h, size_of::<Server>());
    let h = held_per(|| {
        let mut server = Server::new(fixture.server.clone(), &mut rng2);
        server.handle_input(NOW, &resume_hello).unwrap_or_else(|e| panic!("{e}"));
        black_box(transmit_server(&mut server, &fixture));
        server
    });
    row("gateway, resume in flight (challenge sent, awaiting ResumeFinished)", h, size_of::<Server>());
    // The agent after the challenge: a challenge answers one hello, so each agent gets a
    // fresh gateway's challenge; only the agent's growth while handling it is counted.
    let mut kept: Vec<Client> = Vec::with_capacity(HELD);
    let mut agent_bytes = 0isize;
    for _ in 0..HELD {
        let mut client = Client::join(fixture.join.clone(), &mut rng);
        let mut server = Server::new(fixture.server.clone(), &mut rng2);
        let hello = transmit_client(client.poll_output());
        server.handle_input(NOW, &hello).unwrap_or_else(|e| panic!("{e}"));
        let challenge = transmit_server(&mut server, &fixture);
        let region = Region::new(GLOBAL);
        client.handle_input(&challenge).unwrap_or_else(|e| panic!("{e}"));
        black_box(transmit_client(client.poll_output()));
        agent_bytes += net_bytes(&region.change());
        kept.push(client);
    }
    black_box(&kept);
    drop(kept);
    // The agent held this before the challenge arrived (measured above); add the growth.
    let before = held_per(|| {
        let mut client = Client::join(fixture.join.clone(), &mut rng);
        black_box(transmit_client(client.poll_output()));
        client
    });
    row(
        "agent, join in flight (ClientAuth sent, awaiting ServerFinished)",
        before + agent_bytes as f64 / HELD as f64,
        size_of::<Client>(),
    );

    let h = held_per(|| fixture.join(&mut rng).0.server);
    row("gateway, established session (ServerSession: channel + verified peer)", h, size_of::<ServerSession>());
    let h = held_per(|| fixture.join(&mut rng).0.client);
    row("agent, established session (ClientSession: channel + join facts)", h, size_of::<ClientSession>());
    let h = held_per(|| fixture.join(&mut rng).0.server.channel);
    row("channel alone (one end)", h, size_of::<Channel>());
}

fn implementations() {
    println!("\n## Implementations selected at run time\n");
    println!(
        "- BLAKE3: {:?} (SIMD degree {})",
        blake3::platform::Platform::detect(),
        blake3::platform::Platform::detect().simd_degree()
    );
    #[cfg(target_arch = "x86_64")]
    println!(
        "- SHA-256 (sha2): {} (CPU SHA extensions: {}, AVX2: {}, AVX-512F: {})",
        if std::is_x86_feature_detected!("sha") { "SHA-NI" } else { "software" },
        std::is_x86_feature_detected!("sha"),
        std::is_x86_feature_detected!("avx2"),
        std::is_x86_feature_detected!("avx512f"),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    implementations();
    let worst = per_frame();
    held();
    println!("\nmost allocations by any Boarding seal or open over all frames above: {worst}");
    if let Some(dir) =
        std::env::current_exe().ok().and_then(|e| Some(e.parent()?.parent()?.parent()?.join("criterion")))
    {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("boarding-allocations.txt"), format!("{worst}\n"));
    }
    assert_eq!(worst, 0, "the Boarding channel allocated on its hot path");
}
