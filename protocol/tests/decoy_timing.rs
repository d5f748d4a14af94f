//! The resume decoy does not leak through timing: a ResumeFinished with a wrong MAC
//! costs the gateway's core the same whether the client id is known (its keyring
//! record carrying 32 labels of 256 bytes) or unknown (a decoy keyring), and both
//! are told the same alert.
//!
//! Only the core's work is timed: `handle_input(ResumeFinished)` and draining its
//! outputs up to the alert `Transmit`. Everything else (the hello, the storage lookup,
//! dropping the state machine) happens outside the timer. The two kinds of sample are
//! interleaved (alternating which goes first), warmed up, and compared by their
//! medians, with the 10th and 90th percentiles reported; under heavy CPU load the
//! whole measurement is retried up to three times. This test has a binary of its own,
//! so no other test of this crate runs beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use boarding::Alert;
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::error::{Error, PeerMisbehaved, Refusal};
use boarding::handshake::Output;
use boarding::identity::ClientId;
use boarding::messages::{AlertMessage, Message, ResumeFinished};
use boarding::server::{Server, ServerConfig, ServerRequest};
use boarding::storage::StorageRequest;
use boarding::token::{MAX_LABEL_VALUE_LEN, MAX_LABELS, TokenRecord};
use boarding_memory::{MemoryStore, World};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const SAMPLES: usize = 2_000;
const WARMUP: usize = 200;
const ATTEMPTS: usize = 3;

/// One kind of probe: the ResumeHello an attacker sends for a client id.
struct Probe {
    hello: Vec<u8>,
    expected: Error,
}

/// Runs one resume up to the client's (wrong) ResumeFinished and times the core's
/// handling of it. Returns the time, the alert sent, and the local error.
fn sample(
    config: &Arc<ServerConfig>,
    store: &MemoryStore,
    rng: &mut ChaCha20Rng,
    now: u64,
    probe: &Probe,
    finished: &[u8],
) -> (Duration, Vec<u8>, Error) {
    let mut server = Server::new(config.clone(), rng);
    server.handle_input(now, &probe.hello).unwrap();
    let Some(Output::Request(ServerRequest::Storage(request @ StorageRequest::LookupKeyring { .. }))) =
        server.poll_output()
    else {
        panic!("the gateway looks the keyring up")
    };
    server.handle_storage(store.answer(&request)).unwrap();
    let Some(Output::Transmit(_challenge)) = server.poll_output() else { panic!("a ResumeChallenge") };
    assert!(server.poll_output().is_none());

    let start = Instant::now();
    let _ = server.handle_input(now, finished);
    let alert = loop {
        match server.poll_output() {
            Some(Output::Transmit(bytes)) => break bytes,
            Some(_) => continue,
            None => break Vec::new(),
        }
    };
    let elapsed = start.elapsed();

    let Some(Output::Failed(e)) = server.poll_output() else { panic!("the failure follows the alert") };
    assert!(server.poll_output().is_none());
    // Dropped here, outside the timer (with the record a known client's failure keeps).
    drop(server);
    (elapsed, alert, e)
}

/// Percentiles of a set of samples, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    p10: u128,
    median: u128,
    p90: u128,
}

fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() - 1) * q / 100].as_nanos();
    Summary { p10: at(10), median: at(50), p90: at(90) }
}

/// The verdict of one measurement: the allowed median difference is the larger of
/// 1 µs and 15% of the (mean) median.
fn verdict(known: Summary, unknown: Summary) -> (bool, u128, u128) {
    let diff = known.median.abs_diff(unknown.median);
    let mean = (known.median + unknown.median) / 2;
    let allowed = 1_000u128.max(mean * 15 / 100);
    (diff < allowed, diff, allowed)
}

#[test]
fn a_wrong_resume_mac_costs_the_same_for_known_and_unknown_clients() {
    let world = World::new(2_024);
    // A token with as many labels as allowed, each as long as allowed: the keyring
    // record of a client that joined with it is as large as a record gets.
    let token = world.issue_token(None, 0);
    let mut record = TokenRecord::new(token.clone(), None, 0);
    for i in 0..MAX_LABELS {
        record = record.with_label(&format!("label-{i:02}"), &"v".repeat(MAX_LABEL_VALUE_LEN)).unwrap();
    }
    world.store.insert_token(record);
    let mut join = world.join_pair("known-node", &token);
    assert!(join.drive().both_established());
    let known = join.saved.clone().unwrap();
    assert_eq!(world.store.keyring(&known.client_id).unwrap().labels.len(), MAX_LABELS);
    // An unknown id of the same length, so both hellos hash alike.
    let unknown = SavedKeyring { client_id: ClientId::new("ghost-node").unwrap(), ..known.clone() };
    assert_eq!(known.client_id.as_str().len(), unknown.client_id.as_str().len());
    assert!(world.store.keyring(&unknown.client_id).is_none());

    let hello_of = |saved: &SavedKeyring| {
        let mut client = Client::resume(ResumeConfig::new(saved.clone()), &mut world.rng());
        let Some(Output::Transmit(hello)) = client.poll_output() else { panic!("a ResumeHello") };
        hello
    };
    let probes = [
        Probe { hello: hello_of(&known), expected: PeerMisbehaved::BadClientProof.into() },
        Probe { hello: hello_of(&unknown), expected: Refusal::UnknownClient.into() },
    ];
    let finished = ResumeFinished { request: Vec::new(), mac: [0x5a; 32] }.to_frame();
    let bad_proof = AlertMessage { code: Alert::BadProof.code() }.to_frame();
    let mut rng = ChaCha20Rng::seed_from_u64(7);

    let mut attempts = Vec::new();
    for attempt in 0..ATTEMPTS {
        let mut times = [Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES)];
        for i in 0..WARMUP + SAMPLES {
            // Alternate which kind goes first, so neither always follows the other.
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for kind in order {
                let probe = &probes[kind];
                let (elapsed, alert, e) = sample(&world.config, &world.store, &mut rng, world.now, probe, &finished);
                assert_eq!(alert, bad_proof, "both paths send BadProof");
                assert_eq!(e, probe.expected);
                if i >= WARMUP {
                    times[kind].push(elapsed);
                }
            }
        }
        let [mut k, mut u] = times;
        let (known, unknown) = (summarize(&mut k), summarize(&mut u));
        let (ok, diff, allowed) = verdict(known, unknown);
        println!(
            "attempt {}: known p10/median/p90 = {}/{}/{} ns, unknown = {}/{}/{} ns, median difference {} ns \
             (allowed {} ns)",
            attempt + 1,
            known.p10,
            known.median,
            known.p90,
            unknown.p10,
            unknown.median,
            unknown.p90,
            diff,
            allowed
        );
        attempts.push((known, unknown, diff, allowed));
        if ok {
            return;
        }
    }
    panic!("a known and an unknown client id are told apart by timing in every attempt: {attempts:?}");
}
