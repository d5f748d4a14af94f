//! Attestation bound to the session (`spec/PROTOCOL.md` §7.3.1), both ends driven together
//! on `boarding_memory::Pair`: the agent is asked for evidence only after the challenge
//! verified, with a binding both sides compute alike; the gateway's application judges
//! the evidence against its own binding before redemption; evidence replayed from another
//! session, or relayed with another share or token, is refused with `AttestationRefused`
//! and charges nothing.
//!
//! The evidence here is a stand-in for a signature by a node key: `SHA-256(key || binding)`,
//! which the gateway's application recomputes for the binding it was given.

use boarding::Alert;
use boarding::attestation::{AttestFailed, AttestationBinding, AttestedIdentity};
use boarding::client::{Client, ClientRequest};
use boarding::error::{ApiMisuse, Error, LocalFailure, ReceivedAlert, Refusal};
use boarding::handshake::Output;
use boarding::identity::ClientId;
use boarding::jws::hs256_detached;
use boarding::keys::EphemeralSecret;
use boarding::messages::{ClientAuth, FrameType, HandshakeMessage, Message};
use boarding::server::{Admission, AdmissionRequest};
use boarding::storage::StorageRequest;
use boarding::token::BootstrapToken;
use boarding::transcript::Transcript;
use boarding_memory::{Dir, Pair, Standing, World};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

const NODE_KEY: &[u8] = b"node-a's attestation key";

/// What an attester holding `key` sends for `binding`.
fn evidence(key: &[u8], binding: &AttestationBinding) -> Vec<u8> {
    Sha256::new().chain_update(key).chain_update(binding.as_bytes()).finalize().to_vec()
}

/// The gateway application's validator: the evidence must be the node key's over the
/// binding the gateway computed; it attests the client as `node-a`.
fn validate(request: &AdmissionRequest) -> Admission {
    if request.evidence == evidence(NODE_KEY, &request.binding) {
        let attested = AttestedIdentity::new("node-a").unwrap().with_attribute("key", "node-a's").unwrap();
        Admission::Admit { ticket: b"ticket for node-a".to_vec(), attested: Some(attested) }
    } else {
        Admission::RefuseAttestation
    }
}

fn attesting_pair(world: &World, id: &str, token: &BootstrapToken) -> Pair {
    world.join_pair(id, token).with_attester(|binding| Ok(evidence(NODE_KEY, binding))).with_admission(validate)
}

fn peer_alert(a: Alert) -> Standing {
    Standing::Failed(Error::PeerAlert(ReceivedAlert::Known(a)))
}

fn refused_attestation() -> Standing {
    Standing::Failed(Refusal::Attestation.into())
}

fn redeemed(pair: &Pair) -> bool {
    pair.requests.iter().any(|r| matches!(r, StorageRequest::Redeem(_)))
}

/// `TH_EV` and the binding of §7.3.1, recomputed from the frames on the wire.
fn binding_from_the_wire(pair: &Pair) -> AttestationBinding {
    let to_server = pair.sent(Dir::ToServer);
    let to_client = pair.sent(Dir::ToClient);
    let HandshakeMessage::ClientAuth(auth) = HandshakeMessage::decode_frame(&to_server[1]).unwrap() else {
        panic!("ClientAuth second")
    };
    let mut hash = Sha256::new();
    hash.update(b"boarding transcript\x00");
    hash.update(&to_server[0]);
    hash.update(&to_client[0]);
    hash.update([0x03]);
    hash.update(auth.token_id.as_bytes());
    hash.update([u8::try_from(auth.client_id.len()).unwrap()]);
    hash.update(&auth.client_id);
    hash.update(auth.ephemeral);
    let th_ev: [u8; 32] = hash.finalize().into();
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::from_prk(&th_ev).unwrap().expand(b"boarding v1 attestation binding", &mut out).unwrap();
    AttestationBinding::from_bytes(out)
}

#[test]
fn a_valid_attestation_joins_and_the_verified_client_carries_the_attested_identity() {
    let world = World::new(80);
    let token = world.issue_token(None, 1);
    let mut pair = attesting_pair(&world, "node-a", &token);
    let outcome = pair.drive();
    assert!(outcome.both_established(), "{outcome:?}");
    // Asked once, with the binding both sides compute from their own transcripts.
    assert_eq!(pair.bindings.len(), 1);
    assert_eq!(pair.admissions.len(), 1);
    assert_eq!(pair.admissions[0].binding, pair.bindings[0], "the two sides' bindings differ");
    assert_eq!(pair.bindings[0], binding_from_the_wire(&pair), "the binding is not the specified one");
    assert_eq!(pair.admissions[0].evidence, evidence(NODE_KEY, &pair.bindings[0]));
    let peer = pair.peer.clone().unwrap();
    let attested = peer.attested().expect("the attested identity");
    assert_eq!(attested.name(), "node-a");
    assert_eq!(attested.attributes().get("key").map(String::as_str), Some("node-a's"));
    assert_eq!(pair.info.clone().unwrap().ticket, b"ticket for node-a");
    assert_eq!(world.store.token(token.id()).unwrap().use_count, 1);
    // A resume proves the keyring: it asks for no evidence, and carries the identity
    // attested at the join, kept in the keyring record.
    let stored = world.store.keyring(peer.client_id()).unwrap();
    assert_eq!(stored.attested.as_ref(), Some(attested));
    let mut resume = world.resume_pair(&pair.saved.clone().unwrap()).with_attester(|_| panic!("asked to attest"));
    assert!(resume.drive().both_established());
    assert!(resume.bindings.is_empty() && resume.admissions.is_empty());
    assert_eq!(resume.peer.unwrap().attested(), Some(attested));
}

#[test]
fn the_agent_is_asked_for_evidence_only_after_the_challenge_verified() {
    let world = World::new(81);
    let token = world.issue_token(None, 0);
    // A gateway the agent does not pin: it never gets to attest.
    let other = World::new(82);
    let config = boarding::client::JoinConfig::new(token.clone(), vec![other.config.pin()], cid("node-a"));
    let mut pair = world.pair_with(Client::join(config, &mut world.rng())).with_attester(|_| panic!("attested"));
    let outcome = pair.drive();
    assert!(matches!(outcome.client, Standing::Failed(Error::Refused(Refusal::WrongPin { .. }))), "{outcome:?}");
    assert!(pair.bindings.is_empty());
    // A challenge tampered with in flight: refused before any evidence is asked for.
    let mut pair = world.join_pair("node-a", &token).with_attester(|_| panic!("attested")).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            bytes[10] ^= 1;
        }
        boarding_memory::Delivery::Deliver
    });
    assert!(matches!(pair.drive().client, Standing::Failed(_)));
    assert!(pair.bindings.is_empty());
}

#[test]
fn bindings_differ_between_sessions_even_for_a_replayed_hello() {
    let world = World::new(83);
    let token = world.issue_token(None, 0);
    let mut first = world.join_pair("node-a", &token);
    assert!(first.drive().both_established());
    let mut second = world.join_pair("node-a", &token);
    second.drive();
    assert_ne!(first.bindings, second.bindings, "two joins of one client share a binding");
    // The first join's hello replayed to a fresh gateway connection: its nonce is new, and
    // so is the binding it hands its application.
    let mut replay = world.join_pair("node-b", &token);
    replay.flush();
    replay.in_flight(Dir::ToServer).clear();
    replay.inject(Dir::ToServer, first.sent(Dir::ToServer)[0].clone());
    replay.step(Dir::ToServer);
    let challenge = replay.sent(Dir::ToClient)[0].clone();
    assert_ne!(challenge, first.sent(Dir::ToClient)[0], "a fresh connection answered with the same challenge");
    assert_ne!(challenge[5 + 4..5 + 36], first.sent(Dir::ToClient)[0][5 + 4..5 + 36], "same gateway nonce");
}

#[test]
fn evidence_replayed_from_another_session_is_refused_and_charges_nothing() {
    let world = World::new(84);
    let recorder = world.issue_token(None, 0);
    let mut honest = attesting_pair(&world, "node-a", &recorder);
    assert!(honest.drive().both_established());
    let recorded = honest.admissions[0].evidence.clone();

    // A second node, without the key, presents what it recorded of the first one.
    let token = world.issue_token(None, 1);
    let before = world.store.snapshot();
    let replayed = recorded.clone();
    let mut pair =
        world.join_pair("node-a2", &token).with_attester(move |_| Ok(replayed.clone())).with_admission(validate);
    let outcome = pair.drive();
    assert_eq!(outcome.client, peer_alert(Alert::AttestationRefused));
    assert_eq!(outcome.server, refused_attestation());
    assert_eq!(pair.sent(Dir::ToClient).last(), Some(&vec![0x15, 0, 0, 0, 1, 13]), "the alert on the wire is 13");
    assert_eq!(pair.admissions[0].evidence, recorded);
    assert_ne!(pair.admissions[0].binding, honest.admissions[0].binding, "the replay names the recorded binding");
    assert!(!redeemed(&pair), "a refused attestation reached redemption");
    assert_eq!(world.store.snapshot(), before, "a refused attestation changed the store");
    assert_eq!(world.store.token(token.id()).unwrap().use_count, 0);
    // The token is intact: a node with the key joins with it.
    let mut next = attesting_pair(&world, "node-a3", &token);
    assert!(next.drive().both_established());
}

#[test]
fn a_signature_over_another_binding_is_refused() {
    let world = World::new(85);
    let token = world.issue_token(None, 1);
    let before = world.store.snapshot();
    let mut pair = world
        .join_pair("node-a", &token)
        .with_attester(|binding| {
            let mut other = *binding.as_bytes();
            other[0] ^= 1;
            Ok(evidence(NODE_KEY, &AttestationBinding::from_bytes(other)))
        })
        .with_admission(validate);
    let outcome = pair.drive();
    assert_eq!((outcome.client, outcome.server), (peer_alert(Alert::AttestationRefused), refused_attestation()));
    assert!(!redeemed(&pair));
    assert_eq!(world.store.snapshot(), before);
}

/// The relay of §7.3.1: an attacker with a token of its own relays an honest node's
/// hello and challenge, takes the evidence out of the node's ClientAuth and sends it in
/// a ClientAuth of its own (its token, its share, the node's client id). The binding the
/// gateway computes then differs from the one the evidence signs.
#[test]
fn evidence_relayed_with_another_share_and_token_is_refused() {
    let world = World::new(86);
    // The unnamed-token flow challenges every unexpired token, the attacker's included.
    let honest_token = world.issue_token(None, 1);
    let attacker_token = world.issue_token(None, 1);
    let config = world.join_config("node-a", &honest_token).without_token_id();
    let mut pair = world
        .pair_with(Client::join(config, &mut world.rng()))
        .with_attester(|binding| Ok(evidence(NODE_KEY, binding)))
        .with_admission(validate);
    pair.step(Dir::ToServer); // the hello
    pair.step(Dir::ToClient); // the challenge; the agent attests and sends its ClientAuth
    let hello = pair.sent(Dir::ToServer)[0].clone();
    let challenge = pair.sent(Dir::ToClient)[0].clone();
    let honest_auth = pair.in_flight(Dir::ToServer).pop_front().expect("the agent's ClientAuth");
    let HandshakeMessage::ClientAuth(stolen) = HandshakeMessage::decode_frame(&honest_auth).unwrap() else { panic!() };
    assert_eq!(stolen.evidence, evidence(NODE_KEY, &pair.bindings[0]));

    let attacker_share = EphemeralSecret::from_bytes([0x42; 32]);
    let mut forged = ClientAuth {
        token_id: attacker_token.id(),
        client_id: stolen.client_id.clone(),
        ephemeral: attacker_share.public(),
        evidence: stolen.evidence.clone(),
        request: Vec::new(),
        proof: String::new(),
    };
    let mut transcript = Transcript::new();
    transcript.add_frame(&hello);
    transcript.add_frame(&challenge);
    let th = transcript.hash_partial(FrameType::ClientAuth as u8, &forged.signed_part());
    forged.proof = hs256_detached(&th, attacker_token.id().as_str(), attacker_token.secret().expose());
    let before = world.store.snapshot();
    pair.inject(Dir::ToServer, forged.to_frame());
    pair.drive();
    // The token proof holds (it is the attacker's own token); the evidence does not.
    assert_eq!(pair.admissions.len(), 1, "the forged ClientAuth reached admission");
    assert_eq!(pair.outcome().server, refused_attestation());
    assert_ne!(pair.admissions[0].binding, pair.bindings[0]);
    assert!(!redeemed(&pair));
    assert_eq!(world.store.snapshot(), before, "the relay charged or wrote something");
}

#[test]
fn a_failed_attester_and_oversized_evidence_fail_the_agent_and_charge_nothing() {
    let world = World::new(87);
    let token = world.issue_token(None, 1);
    let before = world.store.snapshot();
    let mut pair = world.join_pair("node-a", &token).with_attester(|_| Err(AttestFailed));
    let outcome = pair.drive();
    assert_eq!(outcome.client, Standing::Failed(LocalFailure::Attestation.into()));
    assert_eq!(outcome.server, peer_alert(Alert::Internal));
    assert_eq!(pair.sent(Dir::ToServer).len(), 2, "the hello, then the alert instead of ClientAuth");
    let mut pair = world.join_pair("node-b", &token).with_attester(|_| Ok(vec![0; 8193]));
    let outcome = pair.drive();
    assert_eq!(outcome.client, Standing::Failed(LocalFailure::EvidenceTooLong { len: 8193 }.into()));
    assert_eq!(outcome.server, peer_alert(Alert::Internal));
    assert_eq!(world.store.snapshot(), before, "an agent that could not attest was charged");
    // 8192 bytes exactly is allowed.
    let mut pair = world.join_pair("node-c", &token).with_attester(|_| Ok(vec![7; 8192]));
    assert!(pair.drive().both_established());
    assert_eq!(pair.admissions[0].evidence.len(), 8192);
}

#[test]
fn handle_evidence_when_none_is_pending_is_misuse() {
    let not_pending = |state| Error::Misuse(ApiMisuse::NotPending { answer: "handle_evidence", state });
    let world = World::new(88);
    let token = world.issue_token(None, 0);
    let mut reference = world.join_pair("node-a", &token);
    assert!(reference.drive().both_established());

    let world = World::new(88);
    let token = world.issue_token(None, 0);
    let mut client = Client::join(world.join_config("node-a", &token), &mut world.rng());
    for outcome in [Ok(Vec::new()), Err(AttestFailed), Ok(vec![0; 9000])] {
        assert_eq!(client.handle_evidence(outcome), Err(not_pending("ExpectChallenge")));
    }
    // Nothing queued but the hello: the pair's log below is the reference's.
    let mut pair = world.pair_with(client);
    pair.drive();
    assert!(pair.outcome().both_established());
    assert_eq!(pair.log, reference.log, "misuse changed what was sent");
    assert_eq!(pair.client.handle_evidence(Ok(Vec::new())), Err(not_pending("Established")));
    assert!(pair.client.poll_output().is_none());
    // Answering twice: the second answer finds the ClientAuth already built.
    let world = World::new(89);
    let token = world.issue_token(None, 0);
    let mut client = Client::join(world.join_config("node-a", &token), &mut world.rng());
    let mut pair = world.join_pair("unused", &token);
    let Some(Output::Transmit(hello)) = client.poll_output() else { panic!() };
    pair.flush();
    let _ = pair.server.handle_input(world.now, &hello);
    let mut challenge = None;
    while let Some(out) = pair.server.poll_output() {
        match out {
            Output::Transmit(bytes) => challenge = Some(bytes),
            Output::Request(boarding::server::ServerRequest::Storage(request)) => {
                let _ = pair.server.handle_storage(world.store.answer(&request));
            }
            other => panic!("{other:?}"),
        }
    }
    client.handle_input(&challenge.unwrap()).unwrap();
    let Some(Output::Request(ClientRequest::Attest { .. })) = client.poll_output() else { panic!("asked to attest") };
    assert!(client.poll_output().is_none(), "nothing is sent before the evidence");
    client.handle_evidence(Ok(Vec::new())).unwrap();
    assert!(matches!(client.poll_output(), Some(Output::Transmit(_))));
    assert_eq!(client.handle_evidence(Ok(Vec::new())), Err(not_pending("ExpectServerFinished")));
    assert!(client.poll_output().is_none());
}

#[test]
fn bytes_that_arrive_while_evidence_is_awaited_wait_for_it() {
    // Delivered while the agent's application works on the evidence, a whole later frame
    // is only buffered: the agent reads no frames until it has sent its ClientAuth.
    let world = World::new(90);
    let token = world.issue_token(None, 0);
    let mut reference = world.join_pair("node-a", &token);
    assert!(reference.drive().both_established());
    // The same seed again: this client draws what the reference's did.
    let world = World::new(90);
    let token = world.issue_token(None, 0);
    let mut client = Client::join(world.join_config("node-a", &token), &mut world.rng());
    let _ = client.poll_output();
    let to_client = reference.sent(Dir::ToClient);
    let _ = client.handle_input(&[to_client[0].clone(), vec![0x15, 0, 0, 0, 1, 2]].concat());
    let Some(Output::Request(ClientRequest::Attest { .. })) = client.poll_output() else { panic!("asked to attest") };
    assert_eq!(client.failure(), None, "an alert was read while the evidence was awaited");
    client.handle_evidence(Ok(Vec::new())).unwrap_err();
    assert_eq!(client.failure(), Some(&Error::PeerAlert(ReceivedAlert::Known(Alert::Malformed))));
}

fn cid(id: &str) -> ClientId {
    ClientId::new(id).unwrap()
}
