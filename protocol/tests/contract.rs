//! The run-loop contract of `boarding::handshake`, checked on both ends driven together
//! through `boarding_memory::Pair` (and, where the outputs themselves are the subject,
//! by a small loop that drains each side by hand):
//!
//! * misuse returns `Error::Misuse`, changes nothing, queues nothing and sends nothing;
//! * every request (persist, storage, admission) can be answered, failed or held, and
//!   each failure ends the handshake with the right local error and alert;
//! * a failure is the last output of its side, right after its alert (if any);
//! * any split or merge of the byte stream gives the same handshake, pipelined data
//!   included;
//! * frames are checked in the specified order: the type before the body, any Alert
//!   frame ends the handshake unanswered, and a resume's X25519 share is checked before
//!   any storage work.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use boarding::Alert;
use boarding::attestation::AttestFailed;
use boarding::channel::{Channel, Received};
use boarding::client::{Client, ClientOutput, ClientRequest, PersistFailed, SavedKeyring};
use boarding::codec::DecodeError;
use boarding::error::{ApiMisuse, Error, LocalFailure, PeerMisbehaved, ReceivedAlert, Refusal};
use boarding::handshake::Output;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::keys::{Keyring, SymmetricKey};
use boarding::messages::{AlertMessage, FrameType, HandshakeMessage, MAX_TICKET, Message, ResumeHello, encode_frame};
use boarding::server::{Admission, AdmissionRequest, Server, ServerOutput, ServerRequest};
use boarding::storage::{StorageAnswer, StorageRequest};
use boarding::token::{BootstrapToken, TokenRecord};
use boarding_memory::{Delivery, Dir, MemoryStore, Pair, PersistAction, Standing, StorageAction, Stream, World};

// ---------------------------------------------------------------------------------
// Helpers.

fn failed(e: impl Into<Error>) -> Standing {
    Standing::Failed(e.into())
}

fn peer_alert(a: Alert) -> Error {
    Error::PeerAlert(ReceivedAlert::Known(a))
}

fn alerted(a: Alert) -> Standing {
    Standing::Failed(peer_alert(a))
}

fn alert_frame(a: Alert) -> Vec<u8> {
    AlertMessage { code: a.code() }.to_frame()
}

fn is_alert(bytes: &[u8]) -> bool {
    bytes.first() == Some(&(FrameType::Alert as u8))
}

fn client_id(id: &str) -> ClientId {
    ClientId::new(id).unwrap()
}

/// A world with one unlimited token and a pair that will join with it, made the same
/// way every time for a seed: two calls give byte-identical handshakes.
fn join_world(seed: u64, id: &str) -> (World, BootstrapToken, Pair) {
    let world = World::new(seed);
    let token = world.issue_token(None, 0);
    let pair = world.join_pair(id, &token);
    (world, token, pair)
}

/// The messages of a pair's log that are alerts.
fn alerts_sent(pair: &Pair) -> Vec<(Dir, Vec<u8>)> {
    pair.log.iter().filter(|(_, b)| is_alert(b)).cloned().collect()
}

fn seal(channel: &mut Channel, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; payload.len() + boarding::channel::FRAME_OVERHEAD];
    let n = channel.seal(payload, &mut frame).unwrap();
    frame.truncate(n);
    frame
}

/// One output, as the hand-drained loop records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Transmit(Vec<u8>),
    Request(&'static str),
    Established,
    Failed(Error),
}

/// How the hand-drained loop answers requests.
struct Answers {
    evidence: Result<Vec<u8>, AttestFailed>,
    persist: Result<(), PersistFailed>,
    /// Storage requests (by name) answered with `StorageAnswer::Failed`.
    fail_storage: Option<&'static str>,
    admission: Admission,
}

impl Default for Answers {
    fn default() -> Self {
        Self { evidence: Ok(Vec::new()), persist: Ok(()), fail_storage: None, admission: Admission::admit() }
    }
}

/// Drains the agent by hand until `poll_output` returns `None`, answering its requests
/// inside the drain, and records every output in order.
fn drain_client(client: &mut Client, answers: &Answers, log: &mut Vec<Out>, wire: &mut VecDeque<Vec<u8>>) {
    while let Some(out) = client.poll_output() {
        match out {
            Output::Transmit(bytes) => {
                log.push(Out::Transmit(bytes.clone()));
                wire.push_back(bytes);
            }
            Output::Request(ClientRequest::Attest { .. }) => {
                log.push(Out::Request("Attest"));
                let _ = client.handle_evidence(answers.evidence.clone());
            }
            Output::Request(ClientRequest::PersistKeyring { .. }) => {
                log.push(Out::Request("PersistKeyring"));
                let _ = client.handle_persisted(answers.persist);
            }
            Output::Request(ClientRequest::PersistRotation { .. }) => {
                log.push(Out::Request("PersistRotation"));
                let _ = client.handle_persisted(answers.persist);
            }
            Output::Established(_) => log.push(Out::Established),
            Output::Failed(e) => log.push(Out::Failed(e)),
        }
    }
}

/// Drains the gateway by hand, as [`drain_client`] does the agent.
fn drain_server(
    server: &mut Server,
    store: &MemoryStore,
    answers: &Answers,
    log: &mut Vec<Out>,
    wire: &mut VecDeque<Vec<u8>>,
) {
    while let Some(out) = server.poll_output() {
        match out {
            Output::Transmit(bytes) => {
                log.push(Out::Transmit(bytes.clone()));
                wire.push_back(bytes);
            }
            Output::Request(ServerRequest::Storage(request)) => {
                log.push(Out::Request(request.name()));
                let answer = if answers.fail_storage == Some(request.name()) {
                    StorageAnswer::Failed
                } else {
                    store.answer(&request)
                };
                let _ = server.handle_storage(answer);
            }
            Output::Request(ServerRequest::Admit(_)) => {
                log.push(Out::Request("Admit"));
                let _ = server.handle_admission(answers.admission.clone());
            }
            Output::Request(ServerRequest::Ticket(request)) => {
                log.push(Out::Request("Ticket"));
                // Echoes the request, so a test sees it arrive and come back.
                let _ = server.handle_ticket(request.request);
            }
            Output::Established(_) => log.push(Out::Established),
            Output::Failed(e) => log.push(Out::Failed(e)),
        }
    }
}

/// Both sides' outputs of a hand-drained run, and the sides themselves.
struct Manual {
    client: Client,
    server: Server,
    client_log: Vec<Out>,
    server_log: Vec<Out>,
}

/// Runs a pair's two sides by hand until neither moves. `tamper` may rewrite each
/// message (direction, index in that direction, bytes) before it is delivered.
fn run_manually(pair: Pair, answers: Answers, mut tamper: impl FnMut(Dir, usize, &mut Vec<u8>)) -> Manual {
    let Pair { mut client, mut server, store, now, .. } = pair;
    let (mut client_log, mut server_log) = (Vec::new(), Vec::new());
    let (mut to_server, mut to_client) = (VecDeque::new(), VecDeque::new());
    let mut sent = [0usize; 2];
    for _ in 0..64 {
        drain_client(&mut client, &answers, &mut client_log, &mut to_server);
        drain_server(&mut server, &store, &answers, &mut server_log, &mut to_client);
        if to_server.is_empty() && to_client.is_empty() {
            return Manual { client, server, client_log, server_log };
        }
        while let Some(mut bytes) = to_server.pop_front() {
            tamper(Dir::ToServer, sent[0], &mut bytes);
            sent[0] += 1;
            let _ = server.handle_input(now, &bytes);
            drain_server(&mut server, &store, &answers, &mut server_log, &mut to_client);
        }
        while let Some(mut bytes) = to_client.pop_front() {
            tamper(Dir::ToClient, sent[1], &mut bytes);
            sent[1] += 1;
            let _ = client.handle_input(&bytes);
            drain_client(&mut client, &answers, &mut client_log, &mut to_server);
        }
    }
    panic!("the hand-driven run does not fall quiet");
}

/// A side's outputs end with its one `Failed(expected)`, right after the alert this
/// error sends (or, for an error that sends none, with no alert sent at all).
fn assert_failure_is_last(side: &str, log: &[Out], expected: &Error) {
    assert_eq!(log.last(), Some(&Out::Failed(expected.clone())), "{side}: {log:?}");
    let failures = log.iter().filter(|o| matches!(o, Out::Failed(_))).count();
    assert_eq!(failures, 1, "{side} reports its failure once: {log:?}");
    assert!(!log.contains(&Out::Established), "{side} both established and failed: {log:?}");
    match expected.alert() {
        Some(alert) => {
            assert_eq!(log[log.len() - 2], Out::Transmit(alert_frame(alert)), "{side}: the alert comes right before");
            let alerts = log.iter().filter(|o| matches!(o, Out::Transmit(b) if is_alert(b))).count();
            assert_eq!(alerts, 1, "{side} sends one alert: {log:?}");
        }
        None => assert!(
            !log.iter().any(|o| matches!(o, Out::Transmit(b) if is_alert(b))),
            "{side} sent an alert for {expected:?}: {log:?}"
        ),
    }
}

/// After a failure, every call returns the same error and queues nothing.
fn assert_failure_sticks_client(mut client: Client, expected: &Error) {
    assert!(client.poll_output().is_none());
    assert_eq!(client.failure(), Some(expected));
    assert_eq!(client.handle_input(&alert_frame(Alert::Malformed)).as_ref(), Err(expected));
    assert_eq!(client.handle_persisted(Ok(())).as_ref(), Err(expected));
    assert_eq!(client.handle_persisted(Err(PersistFailed)).as_ref(), Err(expected));
    assert_eq!(client.handle_evidence(Ok(Vec::new())).as_ref(), Err(expected));
    assert!(client.poll_output().is_none(), "a failed client queued more");
    assert_eq!(client.into_session().err().as_ref(), Some(expected));
}

fn assert_failure_sticks_server(mut server: Server, expected: &Error) {
    assert!(server.poll_output().is_none());
    assert_eq!(server.failure(), Some(expected));
    assert_eq!(server.handle_input(0, &[0x01, 0, 0]).as_ref(), Err(expected));
    assert_eq!(server.handle_storage(StorageAnswer::Failed).as_ref(), Err(expected));
    assert_eq!(server.handle_storage(StorageAnswer::Keyring(None)).as_ref(), Err(expected));
    assert_eq!(server.handle_admission(Admission::Refuse).as_ref(), Err(expected));
    assert_eq!(server.handle_admission(Admission::RefuseAttestation).as_ref(), Err(expected));
    assert!(server.poll_output().is_none(), "a failed gateway queued more");
    assert_eq!(server.into_session().err().as_ref(), Some(expected));
}

// ---------------------------------------------------------------------------------
// Misuse: an answer nobody asked for changes nothing.

fn not_pending(answer: &'static str, state: &'static str) -> Error {
    Error::Misuse(ApiMisuse::NotPending { answer, state })
}

/// The reference run for a seed: the frames of an undisturbed join.
fn reference_log(seed: u64, id: &str) -> Vec<(Dir, Vec<u8>)> {
    let (_, _, mut pair) = join_world(seed, id);
    assert!(pair.drive().both_established());
    pair.log
}

#[test]
fn handle_persisted_when_none_is_pending_is_misuse() {
    let reference = reference_log(30, "m-persist");
    let (world, _, mut pair) = join_world(30, "m-persist");
    // Before anything arrived (the hello is flushed out first).
    pair.flush();
    for outcome in [Ok(()), Err(PersistFailed)] {
        assert_eq!(pair.client.handle_persisted(outcome), Err(not_pending("handle_persisted", "ExpectChallenge")));
        assert!(pair.client.poll_output().is_none(), "misuse queued an output");
    }
    assert_eq!(pair.client.failure(), None);
    let outcome = pair.drive();
    assert!(outcome.both_established(), "{outcome:?}");
    assert_eq!(pair.log, reference, "misuse changed what was sent");
    assert!(alerts_sent(&pair).is_empty());
    // Once established, a late answer is misuse too, and the session is intact.
    assert_eq!(pair.client.handle_persisted(Err(PersistFailed)), Err(not_pending("handle_persisted", "Established")));
    assert!(pair.client.poll_output().is_none());
    assert!(pair.client.is_established());
    assert!(world.store.keyring(&client_id("m-persist")).unwrap().confirmed);
    let (mut c, mut s) = pair.into_sessions().unwrap();
    let frame = seal(&mut c.channel, b"still fine");
    assert_eq!(s.channel.open(&frame), Ok(Received::Data(&b"still fine"[..])));
}

#[test]
fn handle_persisted_twice_is_misuse_the_second_time() {
    let reference = reference_log(31, "m-twice");
    let (_, _, pair) = join_world(31, "m-twice");
    let mut pair = pair.with_persist(PersistAction::Hold);
    let outcome = pair.drive();
    assert_eq!((outcome.client, outcome.server), (Standing::Waiting, Standing::Waiting));
    assert!(pair.release_persist(Ok(())));
    assert_eq!(pair.client.handle_persisted(Ok(())), Err(not_pending("handle_persisted", "Established")));
    assert!(!pair.release_persist(Ok(())), "nothing is held any more");
    assert!(pair.drive().both_established());
    assert_eq!(pair.log, reference);
}

#[test]
fn handle_storage_with_the_wrong_answer_is_misuse() {
    let reference = reference_log(32, "m-storage");
    let (world, token, pair) = join_world(32, "m-storage");
    let mut pair = pair.with_storage(|r| match r {
        StorageRequest::Redeem(_) => StorageAction::Hold,
        _ => StorageAction::Answer,
    });
    // Nothing pending at all: even `Failed` is misuse, and does not fail the handshake.
    assert_eq!(
        pair.server.handle_storage(StorageAnswer::Failed),
        Err(not_pending("StorageAnswer::Failed", "ExpectHello"))
    );
    let outcome = pair.drive();
    assert_eq!(outcome.server, Standing::Waiting);
    assert!(matches!(pair.held_storage, Some(StorageRequest::Redeem(_))));
    let before = world.store.snapshot();
    let wrong = [
        (StorageAnswer::Keyring(None), "StorageAnswer::Keyring"),
        (StorageAnswer::Tokens(vec![world.store.token(token.id()).unwrap()]), "StorageAnswer::Tokens"),
        (StorageAnswer::Confirmed(Ok(())), "StorageAnswer::Confirmed"),
    ];
    for (answer, name) in wrong {
        assert_eq!(pair.server.handle_storage(answer), Err(not_pending(name, "AwaitRedeem")));
        assert!(pair.server.poll_output().is_none(), "misuse queued an output");
    }
    assert_eq!(pair.server.handle_admission(Admission::Refuse), Err(not_pending("handle_admission", "AwaitRedeem")));
    assert!(pair.server.poll_output().is_none());
    assert_eq!(world.store.snapshot(), before, "misuse wrote to the store");
    assert!(pair.release_storage());
    let outcome = pair.drive();
    assert!(outcome.both_established(), "{outcome:?}");
    assert_eq!(pair.log, reference, "misuse changed what was sent");
    assert!(world.store.keyring(&client_id("m-storage")).unwrap().confirmed);
}

#[test]
fn handle_admission_when_none_is_pending_is_misuse() {
    let reference = reference_log(33, "m-admit");
    let (world, _, mut pair) = join_world(33, "m-admit");
    let before = world.store.snapshot();
    for admission in [
        Admission::Refuse,
        Admission::RefuseAttestation,
        Admission::admit(),
        Admission::with_ticket(vec![0; MAX_TICKET + 1]),
    ] {
        assert_eq!(pair.server.handle_admission(admission), Err(not_pending("handle_admission", "ExpectHello")));
        assert!(pair.server.poll_output().is_none(), "misuse queued an output");
    }
    // After the hello, the gateway waits for the client's proof, not for the application.
    pair.step(Dir::ToServer);
    assert_eq!(
        pair.server.handle_admission(Admission::Refuse),
        Err(not_pending("handle_admission", "ExpectClientAuth"))
    );
    assert!(pair.server.poll_output().is_none());
    assert_eq!(world.store.snapshot(), before);
    let outcome = pair.drive();
    assert!(outcome.both_established(), "{outcome:?}");
    assert_eq!(pair.log, reference);
    assert!(alerts_sent(&pair).is_empty());
}

#[test]
fn into_session_before_the_end_is_misuse() {
    // Into_session consumes the handshake, so each check uses a fresh pair.
    let (world, token, pair) = join_world(34, "m-early");
    assert_eq!(
        pair.client.into_session().err(),
        Some(Error::Misuse(ApiMisuse::NotEstablished { state: "ExpectChallenge" }))
    );
    let (_, _, pair) = join_world(34, "m-early");
    assert_eq!(
        pair.server.into_session().err(),
        Some(Error::Misuse(ApiMisuse::NotEstablished { state: "ExpectHello" }))
    );
    // Waiting for the agent's store, and for the gateway's.
    let mut pair = world.join_pair("m-early-2", &token).with_persist(PersistAction::Hold);
    pair.drive();
    assert!(alerts_sent(&pair).is_empty());
    let Pair { client, server, .. } = pair;
    assert_eq!(client.into_session().err(), Some(Error::Misuse(ApiMisuse::NotEstablished { state: "AwaitPersist" })));
    assert_eq!(
        server.into_session().err(),
        Some(Error::Misuse(ApiMisuse::NotEstablished { state: "ExpectClientFinished" }))
    );
    let mut pair = world.join_pair("m-early-3", &token).with_storage(|r| match r {
        StorageRequest::ConfirmKeyring { .. } => StorageAction::Hold,
        _ => StorageAction::Answer,
    });
    let outcome = pair.drive();
    assert_eq!((outcome.client, outcome.server), (Standing::Established, Standing::Waiting));
    assert!(alerts_sent(&pair).is_empty());
    assert_eq!(
        pair.server.into_session().err(),
        Some(Error::Misuse(ApiMisuse::NotEstablished { state: "AwaitConfirm" }))
    );
}

// ---------------------------------------------------------------------------------
// The agent's persist request.

#[test]
fn a_failed_persist_fails_the_join_and_tells_the_gateway_internal() {
    let (world, _, pair) = join_world(40, "p-fail");
    let mut pair = pair.with_persist(PersistAction::Fail);
    let outcome = pair.drive();
    assert_eq!(outcome.client, failed(LocalFailure::Persist));
    assert_eq!(outcome.server, alerted(Alert::Internal));
    assert_eq!(pair.saved, None);
    let to_server = pair.sent(Dir::ToServer);
    assert_eq!(to_server.len(), 3, "hello, auth, then the alert instead of ClientFinished");
    assert_eq!(to_server[2], vec![0x15, 0, 0, 0, 1, 11], "the alert on the wire is Internal (11)");
    assert!(pair.sent(Dir::ToClient).iter().all(|b| !is_alert(b)), "the gateway answered the alert");
    let record = world.store.keyring(&client_id("p-fail")).expect("redeemed");
    assert!(!record.confirmed, "a keyring the agent could not store was confirmed");

    // By hand: the agent's last output is the failure, right after the alert.
    let (world, _, pair) = join_world(40, "p-fail");
    let run = run_manually(pair, Answers { persist: Err(PersistFailed), ..Answers::default() }, |_, _, _| {});
    let e = Error::Local(LocalFailure::Persist);
    assert_failure_is_last("agent", &run.client_log, &e);
    assert_eq!(run.client_log[run.client_log.len() - 3], Out::Request("PersistKeyring"));
    assert_failure_is_last("gateway", &run.server_log, &peer_alert(Alert::Internal));
    assert!(!world.store.keyring(&client_id("p-fail")).unwrap().confirmed);
    assert_failure_sticks_client(run.client, &e);
    assert_failure_sticks_server(run.server, &peer_alert(Alert::Internal));
}

#[test]
fn a_held_persist_keeps_the_keyring_and_the_gateway_waits() {
    let (world, _, pair) = join_world(41, "p-hold");
    let mut pair = pair.with_persist(PersistAction::Hold);
    let outcome = pair.drive();
    assert_eq!((&outcome.client, &outcome.server), (&Standing::Waiting, &Standing::Waiting));
    assert!(pair.held_persist);
    let saved = pair.saved.clone().expect("a held persist records the keyring");
    assert_eq!(pair.sent(Dir::ToServer).len(), 2, "no ClientFinished before the keyring is stored");
    assert!(!world.store.keyring(&client_id("p-hold")).unwrap().confirmed);
    assert!(pair.drive() == outcome, "nothing moves while the persist is held");
    assert!(pair.release_persist(Ok(())));
    let outcome = pair.drive();
    assert!(outcome.both_established(), "{outcome:?}");
    let record = world.store.keyring(&client_id("p-hold")).unwrap();
    assert!(record.confirmed);
    assert_eq!(record.keyring, saved.keyring);
    assert_eq!(pair.saved.as_ref(), Some(&saved));

    // Released with a failure instead: the same as a failed persist.
    let (world, _, pair) = join_world(42, "p-hold-fail");
    let mut pair = pair.with_persist(PersistAction::Hold);
    pair.drive();
    assert!(pair.release_persist(Err(PersistFailed)));
    let outcome = pair.drive();
    assert_eq!(outcome.client, failed(LocalFailure::Persist));
    assert_eq!(outcome.server, alerted(Alert::Internal));
    assert!(!world.store.keyring(&client_id("p-hold-fail")).unwrap().confirmed);
}

// ---------------------------------------------------------------------------------
// Storage hooks.

/// A pair for a flow that makes storage request `name`: a named join (LookupToken,
/// Redeem, ConfirmKeyring), an unnamed join (UnexpiredTokens) or a resume
/// (LookupKeyring).
fn pair_making(world: &World, token: &BootstrapToken, name: &str, id: &str) -> Pair {
    match name {
        "UnexpiredTokens" => {
            world.pair_with(Client::join(world.join_config(id, token).without_token_id(), &mut world.rng()))
        }
        "LookupKeyring" => {
            let mut join = world.join_pair(id, token);
            assert!(join.drive().both_established());
            world.resume_pair(&join.saved.unwrap())
        }
        _ => world.join_pair(id, token),
    }
}

const REQUESTS: [&str; 5] = ["LookupToken", "UnexpiredTokens", "Redeem", "LookupKeyring", "ConfirmKeyring"];

#[test]
fn a_failed_store_fails_the_gateway_with_internal() {
    for (i, name) in REQUESTS.into_iter().enumerate() {
        let world = World::new(50);
        let token = world.issue_token(None, 0);
        let id = format!("s-fail-{i}");
        let mut pair = pair_making(&world, &token, name, &id)
            .with_storage(move |r| if r.name() == name { StorageAction::Fail } else { StorageAction::Answer });
        let before = world.store.snapshot();
        let outcome = pair.drive();
        assert_eq!(outcome.server, failed(LocalFailure::Storage), "{name}");
        if name == "ConfirmKeyring" {
            // The agent finished before the gateway confirms: the alert reaches an
            // established agent, which reads no more handshake frames.
            assert_eq!(outcome.client, Standing::Established, "{name}");
        } else {
            assert_eq!(outcome.client, alerted(Alert::Internal), "{name}");
        }
        assert_eq!(pair.requests.last().map(StorageRequest::name), Some(name));
        assert_eq!(pair.sent(Dir::ToClient).last(), Some(&alert_frame(Alert::Internal)), "{name}");
        if name == "ConfirmKeyring" {
            assert!(!world.store.keyring(&client_id(&id)).unwrap().confirmed);
        } else {
            assert_eq!(world.store.snapshot(), before, "{name}: a failed request changed the store");
        }
    }
    // By hand: the gateway's last output is the failure, right after the alert.
    let (_, _, pair) = join_world(51, "s-fail");
    let run = run_manually(pair, Answers { fail_storage: Some("Redeem"), ..Answers::default() }, |_, _, _| {});
    let e = Error::Local(LocalFailure::Storage);
    assert_failure_is_last("gateway", &run.server_log, &e);
    assert_eq!(run.server_log[run.server_log.len() - 3], Out::Request("Redeem"));
    assert_failure_is_last("agent", &run.client_log, &peer_alert(Alert::Internal));
    assert_failure_sticks_server(run.server, &e);
}

#[test]
fn a_held_storage_request_released_later_completes() {
    for (i, name) in REQUESTS.into_iter().enumerate() {
        let world = World::new(52);
        let token = world.issue_token(None, 0);
        let id = format!("s-hold-{i}");
        let mut pair = pair_making(&world, &token, name, &id)
            .with_storage(move |r| if r.name() == name { StorageAction::Hold } else { StorageAction::Answer });
        let outcome = pair.drive();
        assert_eq!(outcome.server, Standing::Waiting, "{name}");
        assert_eq!(pair.held_storage.as_ref().map(StorageRequest::name), Some(name));
        assert!(pair.drive() == outcome, "{name}: nothing moves while the request is held");
        assert!(pair.release_storage(), "{name}");
        assert!(!pair.release_storage(), "{name}: released once");
        let outcome = pair.drive();
        assert!(outcome.both_established(), "{name}: {outcome:?}");
        assert!(world.store.keyring(&client_id(&id)).unwrap().confirmed, "{name}");
        assert!(alerts_sent(&pair).is_empty(), "{name}");
    }
}

#[test]
fn a_held_redeem_released_after_the_token_was_revoked_fails() {
    let world = World::new(53);
    let token = world.issue_token(None, 1);
    let mut pair = world.join_pair("s-revoked", &token).with_storage(|r| match r {
        StorageRequest::Redeem(_) => StorageAction::Hold,
        _ => StorageAction::Answer,
    });
    assert_eq!(pair.drive().server, Standing::Waiting);
    assert!(world.store.revoke_token(token.id()));
    let before = world.store.snapshot();
    assert!(pair.release_storage());
    let outcome = pair.drive();
    assert_eq!(outcome.server, failed(Refusal::UnknownToken));
    assert_eq!(outcome.client, alerted(Alert::UnknownToken));
    assert_eq!(world.store.snapshot(), before, "a refused redemption wrote something");
    assert_eq!(world.store.keyring(&client_id("s-revoked")), None);
}

// ---------------------------------------------------------------------------------
// Admission.

#[test]
fn a_refused_admission_charges_nothing_and_makes_no_redeem_request() {
    let world = World::new(60);
    let token = world.issue_token(None, 1);
    world.store.insert_token(
        TokenRecord::new(token.clone(), None, 1).with_label("role", "worker").unwrap().with_label("zone", "a").unwrap(),
    );
    let asked = Arc::new(Mutex::new(Vec::<AdmissionRequest>::new()));
    let record = asked.clone();
    let before = world.store.snapshot();
    let mut pair =
        world.join_pair("a-refused", &token).with_attester(|_| Ok(b"quote:1".to_vec())).with_admission(move |req| {
            record.lock().unwrap().push(req.clone());
            Admission::Refuse
        });
    let outcome = pair.drive();
    assert_eq!(outcome.client, alerted(Alert::AdmissionRefused));
    assert_eq!(outcome.server, failed(Refusal::Admission));
    assert_eq!(pair.sent(Dir::ToClient).last(), Some(&vec![0x15, 0, 0, 0, 1, 12]));
    assert_eq!(world.store.snapshot(), before, "a refused client changed the store");
    assert_eq!(world.store.token(token.id()).unwrap().use_count, 0, "a refused client was charged");
    assert_eq!(world.store.keyring(&client_id("a-refused")), None);
    assert!(
        !pair.requests.iter().any(|r| matches!(r, StorageRequest::Redeem(_))),
        "a Redeem was requested for a refused client: {:?}",
        pair.requests
    );
    assert_eq!(pair.requests.iter().map(StorageRequest::name).collect::<Vec<_>>(), ["LookupToken"]);
    // What the application decided on: the verified identity, the token's labels, the evidence.
    let asked = asked.lock().unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].client_id, client_id("a-refused"));
    assert_eq!(asked[0].token_id, token.id());
    assert_eq!(asked[0].labels.get("role").map(String::as_str), Some("worker"));
    assert_eq!(asked[0].labels.len(), 2);
    assert_eq!(asked[0].evidence, b"quote:1");
    assert_eq!(Some(&asked[0].binding), pair.bindings.first(), "the binding the agent attested");
    // The same token still admits another client afterwards: it was never charged.
    let mut pair = world.join_pair("a-next", &token);
    assert!(pair.drive().both_established());
}

#[test]
fn a_ticket_over_the_limit_fails_the_gateway() {
    let world = World::new(61);
    let token = world.issue_token(None, 0);
    let before = world.store.snapshot();
    let mut pair =
        world.join_pair("a-long", &token).with_admission(|_| Admission::with_ticket(vec![7; MAX_TICKET + 1]));
    let outcome = pair.drive();
    assert_eq!(MAX_TICKET, 4096);
    assert_eq!(outcome.server, failed(LocalFailure::TicketTooLong { len: 4097 }));
    assert_eq!(outcome.client, alerted(Alert::Internal));
    assert!(!pair.requests.iter().any(|r| matches!(r, StorageRequest::Redeem(_))));
    assert_eq!(world.store.snapshot(), before);
    // 4096 bytes exactly is allowed.
    let mut pair = world.join_pair("a-max", &token).with_admission(|_| Admission::with_ticket(vec![7; MAX_TICKET]));
    assert!(pair.drive().both_established());
    assert_eq!(pair.info.unwrap().ticket, vec![7; MAX_TICKET]);
}

#[test]
fn the_admission_ticket_reaches_the_agent() {
    let world = World::new(62);
    let token = world.issue_token(None, 0);
    let mut pair = world
        .join_pair("a-ticket", &token)
        .with_admission(|req| Admission::with_ticket(format!("welcome {}", req.client_id.as_str()).into_bytes()));
    assert!(pair.drive().both_established());
    let info = pair.info.clone().expect("established");
    assert_eq!(info.ticket, b"welcome a-ticket");
    assert!(!info.resumed);
    assert_eq!(info.server_pin, world.config.pin());
    let HandshakeMessage::ServerFinished(sf) = HandshakeMessage::decode_frame(&pair.sent(Dir::ToClient)[1]).unwrap()
    else {
        panic!("ServerFinished")
    };
    assert_eq!(sf.ticket, b"welcome a-ticket");
    // The world's default admission hook gives its ticket; a resume carries none.
    let mut world = world;
    world.ticket = b"from the world".to_vec();
    let mut pair = world.join_pair("a-world", &token);
    assert!(pair.drive().both_established());
    assert_eq!(pair.info.clone().unwrap().ticket, b"from the world");
    let mut resume = world.resume_pair(&pair.saved.clone().unwrap());
    assert!(resume.drive().both_established());
    let info = resume.info.unwrap();
    assert!(info.resumed && info.ticket.is_empty());
}

// ---------------------------------------------------------------------------------
// A failure is the last output.

/// Rewrites a message in flight (direction, index in that direction, bytes).
type Rewrite = Box<dyn FnMut(Dir, usize, &mut Vec<u8>)>;

#[test]
fn every_failure_is_the_last_output_right_after_its_alert() {
    struct Case {
        name: &'static str,
        pair: Pair,
        answers: Answers,
        tamper: Rewrite,
        client: Option<Error>,
        server: Option<Error>,
    }
    let world = World::new(70);
    let token = world.issue_token(None, 0);
    let other = ServerIdentity::from_seed([9; 32]).pin();
    let wrong_pin = Client::join(
        boarding::client::JoinConfig::new(token.clone(), vec![other], client_id("f-pin")),
        &mut world.rng(),
    );
    let unknown = BootstrapToken::generate(&mut world.rng());
    let mut joined = world.join_pair("f-known", &token);
    assert!(joined.drive().both_established());
    let stranger = SavedKeyring { client_id: client_id("f-stranger"), ..joined.saved.clone().unwrap() };
    let none = || -> Rewrite { Box::new(|_, _, _| {}) };
    let cases = vec![
        Case {
            name: "wrong pin",
            pair: world.pair_with(wrong_pin),
            answers: Answers::default(),
            tamper: none(),
            client: Some(Refusal::WrongPin { presented: world.config.pin() }.into()),
            server: Some(peer_alert(Alert::BadIdentity)),
        },
        Case {
            name: "unknown token",
            pair: world.join_pair("f-unknown", &unknown),
            answers: Answers::default(),
            tamper: none(),
            client: Some(peer_alert(Alert::UnknownToken)),
            server: Some(Refusal::UnknownToken.into()),
        },
        Case {
            name: "admission refused",
            pair: world.join_pair("f-refused", &token),
            answers: Answers { admission: Admission::Refuse, ..Answers::default() },
            tamper: none(),
            client: Some(peer_alert(Alert::AdmissionRefused)),
            server: Some(Refusal::Admission.into()),
        },
        Case {
            name: "attestation refused",
            pair: world.join_pair("f-attest", &token),
            answers: Answers { admission: Admission::RefuseAttestation, ..Answers::default() },
            tamper: none(),
            client: Some(peer_alert(Alert::AttestationRefused)),
            server: Some(Refusal::Attestation.into()),
        },
        Case {
            name: "attester failed",
            pair: world.join_pair("f-attester", &token),
            answers: Answers { evidence: Err(AttestFailed), ..Answers::default() },
            tamper: none(),
            client: Some(LocalFailure::Attestation.into()),
            server: Some(peer_alert(Alert::Internal)),
        },
        Case {
            name: "evidence too long",
            pair: world.join_pair("f-evidence", &token),
            answers: Answers { evidence: Ok(vec![0; 8193]), ..Answers::default() },
            tamper: none(),
            client: Some(LocalFailure::EvidenceTooLong { len: 8193 }.into()),
            server: Some(peer_alert(Alert::Internal)),
        },
        Case {
            name: "ticket too long",
            pair: world.join_pair("f-ticket", &token),
            answers: Answers { admission: Admission::with_ticket(vec![0; 5000]), ..Answers::default() },
            tamper: none(),
            client: Some(peer_alert(Alert::Internal)),
            server: Some(LocalFailure::TicketTooLong { len: 5000 }.into()),
        },
        Case {
            name: "store down",
            pair: world.join_pair("f-store", &token),
            answers: Answers { fail_storage: Some("LookupToken"), ..Answers::default() },
            tamper: none(),
            client: Some(peer_alert(Alert::Internal)),
            server: Some(LocalFailure::Storage.into()),
        },
        Case {
            name: "persist failed",
            pair: world.join_pair("f-persist", &token),
            answers: Answers { persist: Err(PersistFailed), ..Answers::default() },
            tamper: none(),
            client: Some(LocalFailure::Persist.into()),
            server: Some(peer_alert(Alert::Internal)),
        },
        Case {
            name: "undefined frame type",
            pair: world.join_pair("f-type", &token),
            answers: Answers::default(),
            tamper: Box::new(|dir, i, bytes| {
                if dir == Dir::ToServer && i == 0 {
                    bytes[0] = 0x99;
                }
            }),
            client: Some(peer_alert(Alert::Malformed)),
            server: Some(DecodeError::UnknownType(0x99).into()),
        },
        Case {
            name: "malformed alert to the agent",
            pair: world.join_pair("f-alert", &token),
            answers: Answers::default(),
            tamper: Box::new(|dir, i, bytes| {
                if dir == Dir::ToClient && i == 0 {
                    *bytes = encode_frame(FrameType::Alert, &[1, 2]);
                }
            }),
            client: Some(Error::PeerAlert(ReceivedAlert::Malformed)),
            server: None,
        },
        Case {
            name: "unknown alert code to the gateway",
            pair: world.join_pair("f-code", &token),
            answers: Answers::default(),
            tamper: Box::new(|dir, i, bytes| {
                if dir == Dir::ToServer && i == 0 {
                    *bytes = AlertMessage { code: 200 }.to_frame();
                }
            }),
            client: None,
            server: Some(Error::PeerAlert(ReceivedAlert::Unknown(200))),
        },
        Case {
            name: "tampered ClientFinished",
            pair: world.join_pair("f-finished", &token),
            answers: Answers::default(),
            tamper: Box::new(|dir, i, bytes| {
                if dir == Dir::ToServer && i == 2 {
                    *bytes.last_mut().unwrap() ^= 1;
                }
            }),
            // The agent is established before its last message is checked (it cannot
            // know); the gateway's alert reaches an established agent and is not read.
            client: None,
            server: Some(PeerMisbehaved::BadClientProof.into()),
        },
        Case {
            name: "resume of an unknown client",
            pair: world.resume_pair(&stranger),
            answers: Answers::default(),
            tamper: none(),
            client: Some(PeerMisbehaved::BadGatewayProof.into()),
            server: Some(peer_alert(Alert::BadIdentity)),
        },
    ];
    for case in cases {
        let Case { name, pair, answers, tamper, client, server } = case;
        let run = run_manually(pair, answers, tamper);
        match &client {
            Some(e) => assert_failure_is_last(&format!("{name}: agent"), &run.client_log, e),
            None => {
                assert!(!run.client_log.iter().any(|o| matches!(o, Out::Failed(_))), "{name}: {:?}", run.client_log)
            }
        }
        match &server {
            Some(e) => assert_failure_is_last(&format!("{name}: gateway"), &run.server_log, e),
            None => {
                assert!(!run.server_log.iter().any(|o| matches!(o, Out::Failed(_))), "{name}: {:?}", run.server_log)
            }
        }
        if let Some(e) = &client {
            assert_failure_sticks_client(run.client, e);
        }
        if let Some(e) = &server {
            assert_failure_sticks_server(run.server, e);
        }
    }
}

/// The `Result` of a `handle_*` call and the outputs agree: a failing call returns the
/// error it queued last.
#[test]
fn the_returned_error_is_the_queued_failure() {
    let world = World::new(71);
    let token = world.issue_token(None, 0);
    let mut server = Server::new(world.config.clone(), &mut world.rng());
    let garbage = encode_frame(FrameType::ClientHello, &[0xff; 9]);
    let err = server.handle_input(world.now, &garbage).unwrap_err();
    assert!(matches!(err, Error::PeerMisbehaved(PeerMisbehaved::Malformed(_))), "{err:?}");
    let outs: Vec<ServerOutput> = std::iter::from_fn(|| server.poll_output()).collect();
    assert!(
        matches!(&outs[..], [Output::Transmit(a), Output::Failed(e)] if *a == alert_frame(Alert::Malformed) && *e == err)
    );

    let mut client = Client::join(world.join_config("r", &token), &mut world.rng());
    let _hello = client.poll_output();
    let err = client.handle_input(&alert_frame(Alert::ExpiredToken)).unwrap_err();
    assert_eq!(err, peer_alert(Alert::ExpiredToken));
    let outs: Vec<ClientOutput> = std::iter::from_fn(|| client.poll_output()).collect();
    assert!(matches!(&outs[..], [Output::Failed(e)] if *e == err), "an alert is never answered: {outs:?}");
}

// ---------------------------------------------------------------------------------
// Fragmentation and coalescing.

/// Joins (or joins then resumes) twice from the same seed: once with whole messages,
/// to learn the client's first data frame, then through `stream`, writing that frame
/// right behind the client's last handshake message, before the gateway answered.
fn pipelined_run(stream: Stream, resume: bool) {
    const SEED: u64 = 80;
    let flow = |stream: Stream| {
        let (world, _, pair) = join_world(SEED, "frag");
        let pair = pair.with_stream(stream);
        if !resume {
            return pair;
        }
        let mut join = pair;
        assert!(join.drive().both_established(), "{stream:?}");
        world.resume_pair(&join.saved.clone().unwrap()).with_stream(stream)
    };
    let mut reference = flow(Stream::Whole);
    assert!(reference.drive().both_established());
    let reference_log = reference.log.clone();
    let (mut c, _) = reference.into_sessions().unwrap();
    let early = seal(&mut c.channel, b"early");

    let mut pair = flow(stream);
    let mut injected = false;
    for _ in 0..64 {
        if pair.client.is_established() && !injected {
            // The client's last handshake message is in flight; nothing came back yet.
            assert!(!pair.server.is_established());
            pair.in_flight(Dir::ToServer).push_back(early.clone());
            injected = true;
        }
        if !(pair.step(Dir::ToServer) | pair.step(Dir::ToClient)) {
            break;
        }
    }
    assert!(injected, "{stream:?} resume={resume}");
    let outcome = pair.outcome();
    assert!(outcome.both_established(), "{stream:?} resume={resume}: {outcome:?}");
    assert_eq!(pair.log, reference_log, "{stream:?} resume={resume}: the split changed the handshake");
    assert_eq!(pair.peer.as_ref().map(|p| p.resumed()), Some(resume));
    let (mut c, mut s) = pair.into_sessions().unwrap();
    assert_eq!(s.buffered, early, "{stream:?} resume={resume}: the pipelined frame is kept for the channel");
    assert_eq!(s.channel.open(&s.buffered), Ok(Received::Data(&b"early"[..])));
    // The agent's channel is where the reference's started: its first frame is the same.
    assert_eq!(seal(&mut c.channel, b"early"), early);
    let next = seal(&mut c.channel, b"next");
    assert_eq!(s.channel.open(&next), Ok(Received::Data(&b"next"[..])));
    let back = seal(&mut s.channel, b"back");
    assert_eq!(c.channel.open(&back), Ok(Received::Data(&b"back"[..])));
}

#[test]
fn joins_and_resumes_survive_fragmentation_and_coalescing_with_pipelined_data() {
    for stream in [Stream::Fragmented(1), Stream::Fragmented(7), Stream::Coalesced] {
        for resume in [false, true] {
            pipelined_run(stream, resume);
        }
    }
}

#[test]
fn fragmented_and_coalesced_failures_are_the_same_failures() {
    for stream in [Stream::Fragmented(1), Stream::Fragmented(7), Stream::Coalesced] {
        let world = World::new(81);
        let token = world.issue_token(None, 1);
        let mut pair =
            world.join_pair("frag-refused", &token).with_stream(stream).with_admission(|_| Admission::Refuse);
        let outcome = pair.drive();
        assert_eq!(outcome.client, alerted(Alert::AdmissionRefused), "{stream:?}");
        assert_eq!(outcome.server, failed(Refusal::Admission), "{stream:?}");
    }
}

// ---------------------------------------------------------------------------------
// Check order.

fn replace_message(
    target: Dir,
    index: usize,
    with: Vec<u8>,
) -> impl FnMut(Dir, usize, &mut Vec<u8>) -> Delivery + Send {
    move |dir, i, bytes| {
        if dir == target && i == index {
            *bytes = with.clone();
        }
        Delivery::Deliver
    }
}

#[test]
fn the_frame_type_is_checked_before_the_body() {
    let world = World::new(90);
    let token = world.issue_token(None, 0);
    // At the gateway: a ClientFinished with a garbage body where a hello is expected.
    let garbage = encode_frame(FrameType::ClientFinished, &[0xff; 3]);
    let mut pair = world.join_pair("order-1", &token).tamper(replace_message(Dir::ToServer, 0, garbage));
    let outcome = pair.drive();
    let expected = PeerMisbehaved::UnexpectedMessage {
        expected: &[FrameType::ClientHello, FrameType::ResumeHello],
        got: FrameType::ClientFinished as u8,
    };
    assert_eq!(outcome.server, failed(expected));
    assert_eq!(outcome.client, alerted(Alert::UnexpectedMessage));
    assert!(pair.requests.is_empty());
    // The type comes before the length, too: an unexpected type announcing an oversized body.
    let mut pair = world.join_pair("order-2", &token).tamper(replace_message(
        Dir::ToServer,
        0,
        vec![FrameType::ServerFinished as u8, 0x40, 0, 0, 0],
    ));
    let outcome = pair.drive();
    assert!(
        matches!(
            outcome.server,
            Standing::Failed(Error::PeerMisbehaved(PeerMisbehaved::UnexpectedMessage { got: 0x04, .. }))
        ),
        "{outcome:?}"
    );
    // At the agent: a ResumeChallenge with a garbage body where a ServerChallenge is expected.
    let garbage = encode_frame(FrameType::ResumeChallenge, &[0xff; 2]);
    let mut pair = world.join_pair("order-3", &token).tamper(replace_message(Dir::ToClient, 0, garbage));
    let outcome = pair.drive();
    let expected = PeerMisbehaved::UnexpectedMessage {
        expected: &[FrameType::ServerChallenge],
        got: FrameType::ResumeChallenge as u8,
    };
    assert_eq!(outcome.client, failed(expected));
    assert_eq!(outcome.server, alerted(Alert::UnexpectedMessage));
    // The same garbage body under the expected type is malformed.
    let garbage = encode_frame(FrameType::ServerChallenge, &[0xff; 2]);
    let mut pair = world.join_pair("order-4", &token).tamper(replace_message(Dir::ToClient, 0, garbage));
    let outcome = pair.drive();
    assert!(
        matches!(outcome.client, Standing::Failed(Error::PeerMisbehaved(PeerMisbehaved::Malformed(_)))),
        "{outcome:?}"
    );
    assert_eq!(outcome.server, alerted(Alert::Malformed));
}

#[test]
fn a_malformed_alert_ends_the_handshake_unanswered() {
    let malformed = Standing::Failed(Error::PeerAlert(ReceivedAlert::Malformed));
    for body in [&[][..], &[7, 7][..]] {
        let alert = encode_frame(FrameType::Alert, body);
        let world = World::new(91);
        let token = world.issue_token(None, 0);

        // To the gateway, in place of the hello: it fails and sends nothing at all.
        let mut pair = world.join_pair("al-1", &token).tamper(replace_message(Dir::ToServer, 0, alert.clone()));
        let outcome = pair.drive();
        assert_eq!(outcome.server, malformed, "{body:?}");
        assert_eq!(outcome.client, Standing::Waiting, "{body:?}");
        assert!(pair.sent(Dir::ToClient).is_empty(), "{body:?}: the gateway answered an alert");
        assert!(pair.requests.is_empty());

        // To the gateway, in place of ClientFinished: the keyring stays unconfirmed.
        let mut pair = world.join_pair("al-2", &token).tamper(replace_message(Dir::ToServer, 2, alert.clone()));
        let outcome = pair.drive();
        assert_eq!(outcome.server, malformed, "{body:?}");
        assert_eq!(outcome.client, Standing::Established, "{body:?}: the agent had already finished");
        assert_eq!(pair.sent(Dir::ToClient).len(), 2, "{body:?}: the gateway answered an alert");
        assert!(!world.store.keyring(&client_id("al-2")).unwrap().confirmed);

        // To the agent, in place of the challenge, and of ServerFinished.
        for (index, sent_before) in [(0, 1), (1, 2)] {
            let mut pair = world.join_pair("al-3", &token).tamper(replace_message(Dir::ToClient, index, alert.clone()));
            let outcome = pair.drive();
            assert_eq!(outcome.client, malformed, "{body:?} #{index}");
            assert_eq!(outcome.server, Standing::Waiting, "{body:?} #{index}");
            assert_eq!(pair.sent(Dir::ToServer).len(), sent_before, "{body:?} #{index}: the agent answered an alert");
        }

        // To the agent, in place of a ResumeChallenge.
        let mut join = world.join_pair("al-4", &token);
        assert!(join.drive().both_established());
        let mut pair = world.resume_pair(&join.saved.unwrap()).tamper(replace_message(Dir::ToClient, 0, alert.clone()));
        let outcome = pair.drive();
        assert_eq!(outcome.client, malformed, "{body:?} resume");
        assert_eq!(pair.sent(Dir::ToServer).len(), 1, "{body:?} resume: the agent answered an alert");
    }
}

#[test]
fn an_all_zero_resume_share_is_malformed_before_any_lookup() {
    let world = World::new(92);
    let token = world.issue_token(None, 0);
    let mut join = world.join_pair("zero", &token);
    assert!(join.drive().both_established());
    let known = join.saved.unwrap();
    let unknown = SavedKeyring {
        client_id: client_id("zero-unknown"),
        keyring: Keyring { c2s: SymmetricKey::from_bytes([1; 32]), s2c: SymmetricKey::from_bytes([2; 32]) },
        ..known.clone()
    };
    for saved in [&known, &unknown] {
        let mut pair = world.resume_pair(saved).tamper(|dir, i, bytes| {
            if dir == Dir::ToServer && i == 0 {
                let HandshakeMessage::ResumeHello(h) = HandshakeMessage::decode_frame(bytes).unwrap() else {
                    panic!("ResumeHello")
                };
                *bytes = ResumeHello { ephemeral: [0; 32], ..h }.to_frame();
            }
            Delivery::Deliver
        });
        let outcome = pair.drive();
        assert_eq!(outcome.server, failed(PeerMisbehaved::NonContributoryShare), "{}", saved.client_id.as_str());
        assert_eq!(outcome.client, alerted(Alert::Malformed), "{}", saved.client_id.as_str());
        assert!(pair.requests.is_empty(), "a storage request before the share was checked: {:?}", pair.requests);
        assert_eq!(pair.sent(Dir::ToClient), vec![alert_frame(Alert::Malformed)]);
    }
}
