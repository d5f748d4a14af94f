//! Join and resume, client and gateway CPU together, against the sum of their
//! public-key operations (the lower bound) and against a `snow` Noise XX handshake and
//! a rustls TLS 1.3 full handshake, all in memory.
//!
//! `boarding-join` and `boarding-resume` run on the memory driver's `Pair` (its run
//! loop moves the messages and answers admission and persist) with the fixture's
//! trivial storage answers; `boarding-join-memory-driver` adds a `World`: its store
//! behind a lock and a fresh client id per join.

use std::hint::black_box;
use std::time::Duration;

use boarding_benches::{HandshakeFixture, NoiseXx, PublicKeyOps, TlsConfigs};
use boarding_memory::World;
use criterion::{Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");

    // Each handshake next to its public-key bound, so drift on a shared machine
    // affects both alike.
    let fixture = HandshakeFixture::new();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut ops = PublicKeyOps::new();
    let public = ops.public();
    let signature = ops.ed25519_sign();
    assert!(ops.ed25519_verify(&public, &signature));
    group.bench_function("boarding-join", |b| b.iter(|| black_box(fixture.join(&mut rng))));
    group.bench_function("pk-bound-join", |b| {
        b.iter(|| {
            let shared = ops.x25519_both_ends();
            let signature = ops.ed25519_sign();
            black_box((shared, ops.ed25519_verify(black_box(&public), &signature)))
        })
    });
    group.bench_function("boarding-resume", |b| b.iter(|| black_box(fixture.resume(&mut rng))));
    group.bench_function("pk-bound-resume", |b| b.iter(|| black_box(ops.x25519_both_ends())));
    group.bench_function("pk-ed25519-sign", |b| b.iter(|| black_box(ops.ed25519_sign())));
    group.bench_function("pk-ed25519-verify", |b| {
        b.iter(|| black_box(ops.ed25519_verify(black_box(&public), black_box(&signature))))
    });

    // The same join through the whole deterministic driver: an in-memory store behind a lock,
    // a message log and a network queue.
    let world = World::new(2);
    let token = world.issue_token(None, 0);
    let mut n = 0u64;
    group.bench_function("boarding-join-memory-driver", |b| {
        b.iter(|| {
            n += 1;
            let mut pair = world.join_pair(&format!("node-{n}"), &token);
            let outcome = pair.drive();
            assert!(outcome.both_established(), "{outcome:?}");
            black_box(pair)
        })
    });

    let noise = NoiseXx::new();
    group.bench_function("snow-noise-xx", |b| b.iter(|| black_box(noise.handshake())));
    let tls = TlsConfigs::new();
    group.bench_function("rustls-tls13-full", |b| b.iter(|| black_box(tls.handshake())));
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .noise_threshold(0.05)
}

criterion_group! { name = benches; config = config(); targets = handshakes }
criterion_main!(benches);
