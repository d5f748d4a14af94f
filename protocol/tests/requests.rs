//! Application requests and tickets (`spec/PROTOCOL.md` §7.3, §7.4, §8.3 and §8.4): a
//! join's request reaches admission and its ticket reaches the agent before it
//! confirms; a resume's request reaches the gateway's application only after the
//! client proved its keyring, and its answer comes back in a `ResumeTicket` under the
//! gateway's MAC. Both ends are driven together; bytes are tampered with in flight.

use boarding::Alert;
use boarding::client::{Client, ResumeConfig, SavedKeyring};
use boarding::error::{ApiMisuse, Error, LocalFailure, PeerMisbehaved, ReceivedAlert};
use boarding::identity::ClientId;
use boarding::messages::{FrameType, MAX_REQUEST, MAX_TICKET};
use boarding::server::Admission;
use boarding_memory::{Delivery, Dir, Pair, PersistAction, Standing, World};

fn joined_with_request(world: &World, id: &str, request: &[u8], ticket: &[u8]) -> (SavedKeyring, Pair) {
    let token = world.issue_token(None, 1);
    let config = world.join_config(id, &token).with_request(request.to_vec()).unwrap();
    let ticket = ticket.to_vec();
    let mut pair = world
        .pair_with(Client::join(config, &mut world.rng()))
        .with_admission(move |_| Admission::with_ticket(ticket.clone()));
    assert!(pair.drive().both_established());
    (pair.saved.clone().unwrap(), pair)
}

fn resume_with_request(world: &World, saved: &SavedKeyring, request: &[u8]) -> Pair {
    let config = ResumeConfig::new(saved.clone()).with_request(request.to_vec()).unwrap();
    world.pair_with(Client::resume(config, &mut world.rng()))
}

#[test]
fn a_joins_request_reaches_admission_and_its_ticket_is_persisted_before_the_confirmation() {
    let world = World::new(41);
    let (_, pair) = joined_with_request(&world, "csr-node", b"a signing request", b"a certificate");
    assert_eq!(pair.admissions.len(), 1);
    assert_eq!(pair.admissions[0].request, b"a signing request");
    // The persist request carried the ticket, and the agent learned it.
    assert_eq!(pair.saved_ticket.as_deref(), Some(&b"a certificate"[..]));
    assert_eq!(pair.info.as_ref().unwrap().ticket, b"a certificate");
    assert!(world.store.keyring(&ClientId::new("csr-node").unwrap()).unwrap().confirmed);
}

#[test]
fn a_persist_held_with_a_ticket_sends_no_confirmation_until_it_is_stored() {
    let world = World::new(42);
    let token = world.issue_token(None, 1);
    let config = world.join_config("held", &token).with_request(b"csr".to_vec()).unwrap();
    let mut pair = world
        .pair_with(Client::join(config, &mut world.rng()))
        .with_admission(|_| Admission::with_ticket(b"cert".to_vec()))
        .with_persist(PersistAction::Hold);
    let outcome = pair.drive();
    assert_eq!(outcome.client, Standing::Waiting);
    assert_eq!(pair.saved_ticket.as_deref(), Some(&b"cert"[..]));
    // No ClientFinished has left: the gateway has not confirmed.
    assert!(!pair.sent(Dir::ToServer).iter().any(|f| f[0] == FrameType::ClientFinished as u8));
    assert!(!world.store.keyring(&ClientId::new("held").unwrap()).unwrap().confirmed);
    assert!(pair.release_persist(Ok(())));
    assert!(pair.drive().both_established());
}

#[test]
fn a_resume_with_a_request_gets_the_applications_answer_in_a_resume_ticket() {
    let world = World::new(43);
    let (saved, _) = joined_with_request(&world, "renew", b"", b"");
    let mut pair = resume_with_request(&world, &saved, b"renew me").with_tickets(|request| {
        assert_eq!(request.client.client_id().as_str(), "renew");
        assert!(request.client.resumed());
        [b"answer to ".as_slice(), &request.request].concat()
    });
    assert!(pair.drive().both_established());
    assert_eq!(pair.ticket_requests.len(), 1);
    assert_eq!(pair.info.as_ref().unwrap().ticket, b"answer to renew me");
    let types: Vec<u8> = pair.log.iter().map(|(_, f)| f[0]).collect();
    assert_eq!(types, [0x06, 0x07, 0x08, 0x09], "ResumeHello, ResumeChallenge, ResumeFinished, ResumeTicket");
    // The session works both ways.
    let (mut client, mut server) = pair.into_sessions().unwrap();
    let mut frame = vec![0u8; 64];
    let n = client.channel.seal(b"ping", &mut frame).unwrap();
    assert_eq!(server.channel.open(&frame[..n]).unwrap(), boarding::channel::Received::Data(b"ping"));
}

#[test]
fn a_resume_without_a_request_has_no_ticket_and_three_messages() {
    let world = World::new(44);
    let (saved, _) = joined_with_request(&world, "plain", b"", b"");
    let mut pair = world.resume_pair(&saved);
    assert!(pair.drive().both_established());
    assert!(pair.ticket_requests.is_empty());
    assert!(pair.info.as_ref().unwrap().ticket.is_empty());
    assert_eq!(pair.log.len(), 3);
}

#[test]
fn a_request_under_a_wrong_keyring_never_reaches_the_application() {
    let world = World::new(45);
    let (mut saved, _) = joined_with_request(&world, "thief", b"", b"");
    saved.keyring = boarding::keys::Keyring {
        c2s: boarding::keys::SymmetricKey::from_bytes([7; 32]),
        s2c: boarding::keys::SymmetricKey::from_bytes([8; 32]),
    };
    let before = world.store.snapshot();
    let mut pair = resume_with_request(&world, &saved, b"sign this");
    let outcome = pair.drive();
    // The gateway's challenge does not verify under the wrong keyring: the agent stops.
    assert_eq!(outcome.client, Standing::Failed(PeerMisbehaved::BadGatewayProof.into()));
    assert!(pair.ticket_requests.is_empty(), "nothing was asked of the application");
    assert_eq!(world.store.snapshot(), before);
}

#[test]
fn a_request_altered_in_flight_fails_the_proof_and_asks_nothing() {
    let world = World::new(46);
    let (saved, _) = joined_with_request(&world, "altered", b"", b"");
    let mut pair = resume_with_request(&world, &saved, b"original").tamper(|dir, index, bytes| {
        // The ResumeFinished: its request's last byte.
        if dir == Dir::ToServer && index == 1 {
            let at = 5 + 2 + b"original".len() - 1;
            bytes[at] ^= 1;
        }
        Delivery::Deliver
    });
    let outcome = pair.drive();
    assert_eq!(outcome.server, Standing::Failed(PeerMisbehaved::BadClientProof.into()));
    assert!(pair.ticket_requests.is_empty());
}

#[test]
fn a_ticket_altered_in_flight_fails_the_agent() {
    let world = World::new(47);
    let (saved, _) = joined_with_request(&world, "mitm", b"", b"");
    let mut pair =
        resume_with_request(&world, &saved, b"csr").with_tickets(|_| b"cert".to_vec()).tamper(|dir, index, bytes| {
            // The ResumeTicket: a byte of its ticket.
            if dir == Dir::ToClient && index == 1 {
                bytes[5 + 2] ^= 0x20;
            }
            Delivery::Deliver
        });
    let outcome = pair.drive();
    assert_eq!(outcome.client, Standing::Failed(PeerMisbehaved::BadGatewayProof.into()));
    assert_eq!(outcome.server, Standing::Established, "the gateway sent its answer and is done");
    assert!(pair.info.is_none());
}

#[test]
fn an_unconfirmed_keyring_is_confirmed_after_the_ticket() {
    let world = World::new(48);
    let token = world.issue_token(None, 1);
    // The join's ClientFinished is lost: the keyring stays unconfirmed.
    let mut pair = world
        .join_pair("late", &token)
        .tamper(|dir, index, _| if dir == Dir::ToServer && index == 2 { Delivery::Drop } else { Delivery::Deliver });
    pair.drive();
    let saved = pair.saved.clone().unwrap();
    assert!(!world.store.keyring(&ClientId::new("late").unwrap()).unwrap().confirmed);
    let mut pair = resume_with_request(&world, &saved, b"csr").with_tickets(|_| b"cert".to_vec());
    assert!(pair.drive().both_established());
    assert_eq!(pair.info.as_ref().unwrap().ticket, b"cert");
    assert!(world.store.keyring(&ClientId::new("late").unwrap()).unwrap().confirmed);
}

#[test]
fn oversized_requests_are_refused_before_any_handshake_and_oversized_tickets_fail_with_internal() {
    let world = World::new(49);
    let token = world.issue_token(None, 1);
    let long = vec![0u8; MAX_REQUEST + 1];
    let refused = world.join_config("big", &token).with_request(long.clone());
    assert_eq!(refused.err(), Some(LocalFailure::RequestTooLong { len: MAX_REQUEST + 1 }));
    assert!(world.join_config("big", &token).with_request(vec![0; MAX_REQUEST]).is_ok());

    let (saved, _) = joined_with_request(&world, "big-ticket", b"", b"");
    assert!(ResumeConfig::new(saved.clone()).with_request(long).is_err());
    let mut pair = resume_with_request(&world, &saved, b"csr").with_tickets(|_| vec![0u8; MAX_TICKET + 1]);
    let outcome = pair.drive();
    assert_eq!(outcome.server, Standing::Failed(LocalFailure::TicketTooLong { len: MAX_TICKET + 1 }.into()));
    assert_eq!(outcome.client, Standing::Failed(Error::PeerAlert(ReceivedAlert::Known(Alert::Internal))));
}

#[test]
fn a_ticket_answer_nobody_asked_for_is_misuse_and_changes_nothing() {
    let world = World::new(50);
    let token = world.issue_token(None, 1);
    let mut pair = world.join_pair("early", &token);
    let err = pair.server.handle_ticket(b"unasked".to_vec()).unwrap_err();
    assert!(matches!(err, Error::Misuse(ApiMisuse::NotPending { answer: "handle_ticket", .. })), "{err:?}");
    assert!(pair.drive().both_established(), "the handshake goes on as if nothing happened");
}
