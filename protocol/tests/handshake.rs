//! A client and a gateway driven together in memory: the happy paths, and every
//! failure the specification lists, each asserting the local error, the alert the
//! peer saw, and what the store holds afterwards.

use boarding::Alert;
use boarding::client::{Client, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::codec::DecodeError;
use boarding::error::{ApiMisuse, Error, PeerIncompatible, PeerMisbehaved, ReceivedAlert, Refusal};
use boarding::handshake::Output;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::jws::hs256_detached;
use boarding::keys::{Keyring, SymmetricKey};
use boarding::messages::{
    ClientAuth, ClientHello, FrameType, HandshakeMessage, Message, ResumeChallenge, ResumeFinished, ResumeHello,
    ServerChallenge, encode_frame,
};
use boarding::server::{ServerConfig, ServerRequest};
use boarding::suite::MacSuite;
use boarding::token::BootstrapToken;
use boarding::transcript::Transcript;
use boarding_memory::{Delivery, Dir, Outcome, Pair, PersistAction, Standing, World};
use std::sync::Arc;

/// The side failed with this local error.
fn failed(e: impl Into<Error>) -> Standing {
    Standing::Failed(e.into())
}

/// The side failed because the peer sent this alert.
fn alert(a: Alert) -> Standing {
    Standing::Failed(Error::PeerAlert(ReceivedAlert::Known(a)))
}

/// The side failed with a decode error (the peer's bytes were malformed).
fn malformed(e: &Standing) -> Option<DecodeError> {
    match e {
        Standing::Failed(Error::PeerMisbehaved(PeerMisbehaved::Malformed(d))) => Some(*d),
        _ => None,
    }
}

fn joined(world: &World, id: &str, token: &BootstrapToken) -> (SavedKeyring, Pair) {
    let mut pair = world.join_pair(id, token);
    let outcome = pair.drive();
    assert!(outcome.both_established(), "{outcome:?}");
    (pair.saved.clone().expect("persisted"), pair)
}

#[test]
fn join_then_resume_in_both_suites_and_seed_flow() {
    for suite in MacSuite::ALL {
        let world = World::new(1);
        let token = world.issue_token(Some(600), 1);
        let config = world.join_config("node-a", &token).with_suites(&[suite]);
        let mut pair = world.pair_with(Client::join(config, &mut world.rng()));
        assert!(pair.drive().both_established());
        let peer = pair.peer.clone().unwrap();
        assert_eq!(peer.client_id().as_str(), "node-a");
        assert_eq!(peer.token_id(), token.id());
        assert!(!peer.resumed());
        let saved = pair.saved.clone().unwrap();
        let (c, s) = pair.into_sessions().unwrap();
        assert_eq!(c.channel.suite(), suite);
        assert_eq!(s.channel.suite(), suite);
        let record = world.store.keyring(&ClientId::new("node-a").unwrap()).unwrap();
        assert!(record.confirmed);
        assert_eq!(record.keyring, saved.keyring);
        assert_eq!(world.store.token(token.id()).unwrap().use_count, 1);

        let resume = ResumeConfig::new(saved).with_suites(&[suite]);
        let mut pair = world.pair_with(Client::resume(resume, &mut world.rng()));
        assert!(pair.drive().both_established());
        assert!(pair.peer.clone().unwrap().resumed());
        assert_eq!(world.store.token(token.id()).unwrap().use_count, 1);
    }
    // Unnamed-token flow: the token id is not named; the gateway challenges every unexpired token.
    let world = World::new(2);
    let _other = world.issue_token(None, 0);
    let token = world.issue_token(None, 0);
    let config = world.join_config("seed", &token).without_token_id();
    let mut pair = world.pair_with(Client::join(config, &mut world.rng()));
    assert!(pair.drive().both_established());
    let challenge = &pair.sent(Dir::ToClient)[0];
    let HandshakeMessage::ServerChallenge(sc) = HandshakeMessage::decode_frame(challenge).unwrap() else { panic!() };
    assert_eq!(sc.challenges.len(), 2);
}

#[test]
fn sessions_exchange_frames_with_pipelined_first_frame() {
    let world = World::new(3);
    let token = world.issue_token(None, 1);
    let (_, pair) = joined(&world, "pipe", &token);
    let (mut c, mut s) = pair.into_sessions().unwrap();
    let mut buf = vec![0u8; 256];
    let n = c.channel.seal(b"first", &mut buf).unwrap();
    assert_eq!(s.channel.open(&buf[..n]), Ok(boarding::channel::Received::Data(&b"first"[..])));
    let n = s.channel.seal(b"reply", &mut buf).unwrap();
    assert_eq!(c.channel.open(&buf[..n]), Ok(boarding::channel::Received::Data(&b"reply"[..])));

    // ClientFinished and a data frame in one write: the gateway keeps the data frame.
    let token = world.issue_token(None, 1);
    let mut pair = world.join_pair("pipe-2", &token).with_persist(PersistAction::Hold);
    pair.drive();
    assert!(pair.held_persist);
    pair.client.handle_persisted(Ok(())).unwrap();
    let mut finished = Vec::new();
    while let Some(out) = pair.client.poll_output() {
        if let Output::Transmit(b) = out {
            finished = b;
        }
    }
    let mut client = pair.client.into_session().unwrap();
    let mut write = finished;
    let mut frame = vec![0u8; 64];
    let n = client.channel.seal(b"early", &mut frame).unwrap();
    write.extend_from_slice(&frame[..n]);
    pair.server.handle_input(pair.now, &write).unwrap();
    while let Some(out) = pair.server.poll_output() {
        if let Output::Request(ServerRequest::Storage(req)) = out {
            pair.server.handle_storage(pair.store.answer(&req)).unwrap();
        }
    }
    let mut server = pair.server.into_session().unwrap();
    assert_eq!(server.channel.open(&server.buffered), Ok(boarding::channel::Received::Data(&b"early"[..])));
}

#[test]
fn wrong_pin_is_refused_and_changes_nothing() {
    let world = World::new(4);
    let token = world.issue_token(None, 1);
    let before = world.store.snapshot();
    let other = ServerIdentity::from_seed([42; 32]).pin();
    let config = JoinConfig::new(token, vec![other], ClientId::new("n").unwrap());
    let mut pair = world.pair_with(Client::join(config, &mut world.rng()));
    let out = pair.drive();
    assert_eq!(out.client, failed(Refusal::WrongPin { presented: world.config.pin() }));
    assert_eq!(out.server, alert(Alert::BadIdentity));
    assert_eq!(world.store.snapshot(), before);
    // The message names the presented pin for the operator.
    let msg = out.client_error().unwrap().to_string();
    assert!(msg.contains(&world.config.pin().to_string()), "{msg}");
}

#[test]
fn impostor_gateway_with_the_same_store_is_refused() {
    let world = World::new(5);
    let token = world.issue_token(None, 1);
    let mut impostor = world.clone();
    impostor.config = Arc::new(ServerConfig::new(ServerIdentity::from_seed([7; 32])));
    let config = world.join_config("n", &token);
    let mut pair = impostor.pair_with(Client::join(config, &mut world.rng()));
    let out = pair.drive();
    assert!(matches!(out.client, Standing::Failed(Error::Refused(Refusal::WrongPin { .. }))));

    // Swapping the identity key in flight for the pinned one breaks the signature.
    let pinned = world.config.identity().public_key().to_bytes();
    let before = world.store.snapshot();
    let mut pair = impostor.pair_with(Client::join(world.join_config("n", &token), &mut world.rng())).tamper(
        move |dir, i, bytes| {
            if dir == Dir::ToClient && i == 0 {
                // type(1) len(4) version(2) suite(2) nonce(32) identity(32)
                bytes[41..73].copy_from_slice(&pinned);
            }
            Delivery::Deliver
        },
    );
    let out = pair.drive();
    assert_eq!(out.client, failed(PeerMisbehaved::TranscriptMismatch));
    assert_eq!(out.server, alert(Alert::BadProof));
    assert_eq!(world.store.snapshot(), before);

    // A corrupted signature over the right transcript.
    let mut pair = world.join_pair("n", &token).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            let HandshakeMessage::ServerChallenge(mut sc) = HandshakeMessage::decode_frame(bytes).unwrap() else {
                panic!()
            };
            let jws = &mut sc.challenges[0];
            let last = if jws.ends_with('A') { "B" } else { "A" };
            jws.replace_range(jws.len() - 2..jws.len() - 1, last);
            *bytes = sc.to_frame();
        }
        Delivery::Deliver
    });
    let out = pair.drive();
    assert_eq!(out.client, failed(PeerMisbehaved::BadGatewaySignature));
    assert_eq!(out.server, alert(Alert::BadIdentity));
    assert_eq!(world.store.snapshot(), before);
}

#[test]
fn unknown_expired_exhausted_and_revoked_tokens() {
    let world = World::new(6);
    let mut rng = world.rng();
    let never_issued = BootstrapToken::generate(&mut rng);
    let expired = world.issue_token(Some(10), 0);
    let exhausted = world.issue_token(None, 1);
    let revoked = world.issue_token(None, 0);
    joined(&world, "first", &exhausted);
    assert!(world.store.revoke_token(revoked.id()));
    let mut late = world.clone();
    late.now += 10;
    let cases = [
        (&world, &never_issued, Refusal::UnknownToken, Alert::UnknownToken),
        (&late, &expired, Refusal::ExpiredToken, Alert::ExpiredToken),
        (&world, &exhausted, Refusal::ExhaustedToken, Alert::ExhaustedToken),
        (&world, &revoked, Refusal::UnknownToken, Alert::UnknownToken),
    ];
    for (w, token, local, peer) in cases {
        let before = world.store.snapshot();
        let mut pair = w.join_pair("second", token);
        let out = pair.drive();
        assert_eq!(out.server, failed(local.clone()), "{local:?}");
        assert_eq!(out.client, alert(peer), "{local:?}");
        assert_eq!(world.store.snapshot(), before, "{local:?}");
    }
    // The same refusals in the unnamed-token flow: no usable token at all.
    let empty = World::new(60);
    let mut pair = empty.pair_with(Client::join(empty.join_config("x", &never_issued).without_token_id(), &mut rng));
    assert_eq!(pair.drive().client, alert(Alert::UnknownToken));
}

#[test]
fn wrong_token_secret() {
    let world = World::new(7);
    let token = world.issue_token(None, 1);
    let before = world.store.snapshot();
    // A client holding the right id but a wrong secret cannot verify the gateway's
    // challenge, and stops before sending any proof.
    let wrong: BootstrapToken = format!("{}.aaaaaaaaaaaaaaaa", token.id()).parse().unwrap();
    let mut pair = world.join_pair("n", &wrong);
    let out = pair.drive();
    assert_eq!(out.client, failed(PeerMisbehaved::BadGatewaySignature));
    assert_eq!(out.server, alert(Alert::BadIdentity));
    assert_eq!(pair.sent(Dir::ToServer).len(), 2, "hello and alert only");

    // An attacker that ignores the challenge and sends a proof keyed with a guessed
    // secret is refused with BadProof.
    let mut pair = world.join_pair("n", &token).tamper(|dir, i, bytes| {
        if dir == Dir::ToServer && i == 1 {
            let HandshakeMessage::ClientAuth(mut auth) = HandshakeMessage::decode_frame(bytes).unwrap() else {
                panic!("expected ClientAuth")
            };
            auth.proof = hs256_detached(b"anything", auth.token_id.as_str(), b"aaaaaaaaaaaaaaaa");
            *bytes = auth.to_frame();
        }
        Delivery::Deliver
    });
    let out = pair.drive();
    assert_eq!(out.server, failed(PeerMisbehaved::BadClientProof));
    assert_eq!(out.client, alert(Alert::BadProof));
    assert_eq!(world.store.snapshot(), before);
}

fn rewrite_client_id(new_id: &'static [u8]) -> impl FnMut(Dir, usize, &mut Vec<u8>) -> Delivery + Send + 'static {
    move |dir, i, bytes| {
        if dir == Dir::ToServer && i == 1 {
            let HandshakeMessage::ClientAuth(mut auth) = HandshakeMessage::decode_frame(bytes).unwrap() else {
                panic!("expected ClientAuth")
            };
            auth.client_id = new_id.to_vec();
            *bytes = auth.to_frame();
        }
        Delivery::Deliver
    }
}

#[test]
fn malformed_and_invalid_client_ids() {
    let world = World::new(8);
    let token = world.issue_token(None, 1);
    let before = world.store.snapshot();
    let mut pair = world.join_pair("n", &token).tamper(rewrite_client_id(b"Not_Valid"));
    let out = pair.drive();
    assert_eq!(out.server, failed(Refusal::InvalidClientId));
    assert_eq!(out.client, alert(Alert::InvalidClientId));
    let mut pair = world.join_pair("n", &token).tamper(rewrite_client_id(&[b'a'; 64]));
    let out = pair.drive();
    assert!(matches!(malformed(&out.server), Some(DecodeError::TooLong { field: "client id", .. })), "{out:?}");
    assert_eq!(out.client, alert(Alert::Malformed));
    let mut pair = world.join_pair("n", &token).tamper(rewrite_client_id(b""));
    assert_eq!(pair.drive().client, alert(Alert::Malformed));
    assert_eq!(world.store.snapshot(), before);
    assert!(ClientId::new("UPPER").is_err() && ClientId::new("").is_err());
}

#[test]
fn confirmed_client_id_is_taken() {
    let world = World::new(9);
    let first = world.issue_token(None, 0);
    let second = world.issue_token(None, 0);
    joined(&world, "taken", &first);
    let before = world.store.snapshot();
    for token in [&first, &second] {
        let mut pair = world.join_pair("taken", token);
        let out = pair.drive();
        assert_eq!(out.server, failed(Refusal::ClientIdTaken));
        assert_eq!(out.client, alert(Alert::ClientIdTaken));
        assert_eq!(world.store.snapshot(), before);
    }
}

/// Flips every bit... of every byte of every handshake message (one at a time) and
/// checks that no flipped run ends with both sides established or a confirmed keyring.
#[test]
fn any_flipped_byte_in_any_handshake_message_fails() {
    let world = World::new(10);
    let token = world.issue_token(None, 0);
    let (saved, reference) = joined(&world, "ref", &token);
    let join_lens: Vec<(Dir, usize)> = reference.log.iter().map(|(d, b)| (*d, b.len())).collect();
    let mut resume_ref = world.resume_pair(&saved);
    assert!(resume_ref.drive().both_established());
    let resume_lens: Vec<(Dir, usize)> = resume_ref.log.iter().map(|(d, b)| (*d, b.len())).collect();

    let mut n = 0;
    for (resume, lens) in [(false, &join_lens), (true, &resume_lens)] {
        let mut index = [0usize; 2];
        for &(dir, len) in lens.iter() {
            let slot = usize::from(dir == Dir::ToClient);
            let which = index[slot];
            index[slot] += 1;
            for pos in 0..len {
                let id = format!("flip-{n}");
                n += 1;
                let hook = move |d: Dir, i: usize, bytes: &mut Vec<u8>| {
                    if d == dir
                        && i == which
                        && let Some(b) = bytes.get_mut(pos)
                    {
                        *b ^= 0x5a;
                    }
                    Delivery::Deliver
                };
                let mut pair = if resume {
                    world.resume_pair(&saved).tamper(hook)
                } else {
                    world.join_pair(&id, &token).tamper(hook)
                };
                let out: Outcome = pair.drive();
                assert!(!out.both_established(), "resume={resume} {dir:?} #{which} byte {pos}: {out:?}");
                assert!(
                    out.server != Standing::Established,
                    "gateway accepted: resume={resume} {dir:?} #{which} byte {pos}"
                );
                if !resume {
                    let record = world.store.keyring(&ClientId::new(&id).unwrap());
                    assert!(record.is_none_or(|r| !r.confirmed), "confirmed after flip at {dir:?} #{which} {pos}");
                }
            }
        }
    }
    assert!(n > 500, "only {n} flips");
}

#[test]
fn messages_replayed_from_another_session_fail() {
    let world = World::new(11);
    let token = world.issue_token(None, 0);
    let (saved, recorded) = joined(&world, "rec", &token);
    let old_to_server = recorded.sent(Dir::ToServer);
    let old_to_client = recorded.sent(Dir::ToClient);

    // The recorded ClientAuth replayed into a new session of the same client.
    let replay = old_to_server[1].clone();
    let mut pair = world.join_pair("rec-2", &token).tamper(move |dir, i, bytes| {
        if dir == Dir::ToServer && i == 1 {
            *bytes = replay.clone();
        }
        Delivery::Deliver
    });
    let out = pair.drive();
    assert_eq!(out.server, failed(PeerMisbehaved::BadClientProof));

    // The recorded ServerChallenge replayed to a new client: its signature names the
    // old transcript.
    let replay = old_to_client[0].clone();
    let mut pair = world.join_pair("rec-3", &token).tamper(move |dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            *bytes = replay.clone();
        }
        Delivery::Deliver
    });
    assert_eq!(pair.drive().client, failed(PeerMisbehaved::TranscriptMismatch));

    // A recorded ClientFinished and ResumeFinished into new sessions.
    let replay = old_to_server[2].clone();
    let mut pair = world.join_pair("rec-4", &token).tamper(move |dir, i, bytes| {
        if dir == Dir::ToServer && i == 2 {
            *bytes = replay.clone();
        }
        Delivery::Deliver
    });
    assert_eq!(pair.drive().server, failed(PeerMisbehaved::BadClientProof));
    let mut first = world.resume_pair(&saved);
    assert!(first.drive().both_established());
    let replay = first.sent(Dir::ToServer)[1].clone();
    let mut pair = world.resume_pair(&saved).tamper(move |dir, i, bytes| {
        if dir == Dir::ToServer && i == 1 {
            *bytes = replay.clone();
        }
        Delivery::Deliver
    });
    assert_eq!(pair.drive().server, failed(PeerMisbehaved::BadClientProof));
    // And a recorded ResumeChallenge to a new resuming client.
    let replay = first.sent(Dir::ToClient)[0].clone();
    let mut pair = world.resume_pair(&saved).tamper(move |dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            *bytes = replay.clone();
        }
        Delivery::Deliver
    });
    assert_eq!(pair.drive().client, failed(PeerMisbehaved::BadGatewayProof));
}

fn rewrite_hello_suites(suites: Vec<u16>) -> impl FnMut(Dir, usize, &mut Vec<u8>) -> Delivery + Send + 'static {
    move |dir, i, bytes| {
        if dir == Dir::ToServer && i == 0 {
            match HandshakeMessage::decode_frame(bytes).unwrap() {
                HandshakeMessage::ClientHello(mut h) => {
                    h.suites = suites.clone();
                    *bytes = h.to_frame();
                }
                HandshakeMessage::ResumeHello(mut h) => {
                    h.suites = suites.clone();
                    *bytes = h.to_frame();
                }
                other => panic!("{other:?}"),
            }
        }
        Delivery::Deliver
    }
}

#[test]
fn downgrades_are_detected() {
    let world = World::new(12);
    let token = world.issue_token(None, 0);
    // Strip BLAKE3 from the offer: the gateway picks HMAC, the client sees the
    // gateway signed a different hello.
    let mut pair = world.join_pair("d1", &token).tamper(rewrite_hello_suites(vec![MacSuite::HmacSha256.code()]));
    let out = pair.drive();
    assert_eq!(out.client, failed(PeerMisbehaved::TranscriptMismatch));
    assert_eq!(out.server, alert(Alert::BadProof));
    // The same on resume: the resume MAC covers the hello.
    let (saved, _) = joined(&world, "d2", &token);
    let mut pair = world.resume_pair(&saved).tamper(rewrite_hello_suites(vec![MacSuite::HmacSha256.code()]));
    assert_eq!(pair.drive().client, failed(PeerMisbehaved::BadGatewayProof));
    // A gateway answer naming a version the client never offered.
    let mut pair = world.join_pair("d3", &token).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            bytes[5..7].copy_from_slice(&2u16.to_be_bytes());
        }
        Delivery::Deliver
    });
    let out = pair.drive();
    assert_eq!(out.client, failed(PeerMisbehaved::ChoiceNotOffered));
    assert_eq!(out.server, alert(Alert::UnsupportedVersion));
    // No suite in common.
    let mut only_hmac = world.clone();
    only_hmac.config =
        Arc::new(ServerConfig::new(ServerIdentity::from_seed([1; 32])).with_suites(&[MacSuite::HmacSha256]));
    let config = JoinConfig::new(token, vec![only_hmac.config.pin()], ClientId::new("d4").unwrap())
        .with_suites(&[MacSuite::Blake3]);
    let mut pair = only_hmac.pair_with(Client::join(config, &mut world.rng()));
    let out = pair.drive();
    assert_eq!(out.server, failed(PeerIncompatible::NoCommonSuite));
    assert_eq!(out.client, alert(Alert::UnsupportedVersion));
}

#[test]
fn oversized_truncated_and_trailing_input() {
    let world = World::new(13);
    let token = world.issue_token(None, 0);
    // A frame header announcing 1 GiB: refused from the header alone.
    let mut pair = world.join_pair("o", &token);
    let err = pair.server.handle_input(0, &[0x01, 0x40, 0, 0, 0]).unwrap_err();
    assert!(matches!(
        err,
        Error::PeerMisbehaved(PeerMisbehaved::Malformed(DecodeError::TooLong { field: "frame length", .. }))
    ));
    assert_eq!(err.alert(), Some(Alert::Malformed));
    // Fatal errors stick.
    assert_eq!(pair.server.handle_input(0, &[]).unwrap_err(), err);
    let Some(Output::Transmit(a)) = pair.server.poll_output() else { panic!() };
    assert_eq!(a, vec![0x15, 0, 0, 0, 1, Alert::Malformed.code()]);
    assert!(matches!(pair.server.poll_output(), Some(Output::Failed(e)) if e == err));
    assert!(pair.server.poll_output().is_none(), "the failure is the last output, reported once");

    // A list count over its limit inside a well-framed hello.
    let hello = ClientHello { versions: vec![1; 17], suites: vec![1], nonce: [0; 32], token_id: None };
    let mut pair = world.join_pair("o", &token);
    let err = pair.server.handle_input(0, &hello.to_frame()).unwrap_err();
    assert!(matches!(
        err,
        Error::PeerMisbehaved(PeerMisbehaved::Malformed(DecodeError::TooLong { field: "versions", .. }))
    ));

    // Trailing bytes inside the frame.
    let mut body = ClientHello { versions: vec![1], suites: vec![1], nonce: [0; 32], token_id: None }.encode_body();
    body.push(0);
    let mut pair = world.join_pair("o", &token);
    let err = pair.server.handle_input(0, &encode_frame(FrameType::ClientHello, &body)).unwrap_err();
    assert!(matches!(err, Error::PeerMisbehaved(PeerMisbehaved::Malformed(DecodeError::TrailingBytes { .. }))));

    // A truncated field: the frame says 3 bytes, the hello needs more.
    let mut pair = world.join_pair("o", &token);
    let err = pair.server.handle_input(0, &encode_frame(FrameType::ClientHello, &[1, 0, 1])).unwrap_err();
    assert!(matches!(err, Error::PeerMisbehaved(PeerMisbehaved::Malformed(DecodeError::Truncated { .. }))));

    // A truncated ServerFinished (cut in flight): the client waits, never establishes,
    // and the gateway's keyring stays unconfirmed.
    let mut pair = world.join_pair("trunc", &token).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 1 {
            bytes.truncate(bytes.len() - 1);
        }
        Delivery::Deliver
    });
    let out = pair.drive();
    assert_eq!(out.client, Standing::Waiting);
    assert!(!world.store.keyring(&ClientId::new("trunc").unwrap()).unwrap().confirmed);

    // A message of the wrong type for the state.
    let mut pair = world.join_pair("o", &token);
    let err =
        pair.server.handle_input(0, &ResumeFinished { request: Vec::new(), mac: [0; 32] }.to_frame()).unwrap_err();
    assert_eq!(
        err,
        Error::PeerMisbehaved(PeerMisbehaved::UnexpectedMessage {
            expected: &[FrameType::ClientHello, FrameType::ResumeHello],
            got: 8
        })
    );
    // A channel frame during the handshake.
    let mut pair = world.join_pair("o", &token);
    let err = pair.server.handle_input(0, &[0x17, 0, 0, 0, 0]).unwrap_err();
    assert!(matches!(err, Error::PeerMisbehaved(PeerMisbehaved::UnexpectedMessage { got: 0x17, .. })));
}

#[test]
fn channel_attacks_on_real_sessions() {
    use boarding::channel::{ChannelError, Received};
    let world = World::new(14);
    let token = world.issue_token(None, 0);
    let (_, a) = joined(&world, "ch-a", &token);
    let (_, b) = joined(&world, "ch-b", &token);
    let (mut ca, mut sa) = a.into_sessions().unwrap();
    let (mut cb, _sb) = b.into_sessions().unwrap();
    let mut f = [[0u8; 64]; 3];
    let n0 = ca.channel.seal(b"zero", &mut f[0]).unwrap();
    let n1 = ca.channel.seal(b"one", &mut f[1]).unwrap();
    let nb = cb.channel.seal(b"zero", &mut f[2]).unwrap();
    // Spliced from another session.
    assert_eq!(sa.channel.clone().open(&f[2][..nb]), Err(ChannelError::BadTag));
    // Reordered.
    assert_eq!(sa.channel.clone().open(&f[1][..n1]), Err(ChannelError::BadTag));
    // Reflected back to its sender.
    assert_eq!(ca.channel.clone().open(&f[0][..n0]), Err(ChannelError::BadTag));
    // Truncated.
    assert_eq!(sa.channel.clone().open(&f[0][..n0 - 3]), Err(ChannelError::Truncated));
    // In order it works; then a replay fails, and the channel stays closed.
    assert_eq!(sa.channel.open(&f[0][..n0]), Ok(Received::Data(&b"zero"[..])));
    assert_eq!(sa.channel.clone().open(&f[0][..n0]), Err(ChannelError::BadTag));
    assert_eq!(sa.channel.open(&f[1][..n1]), Ok(Received::Data(&b"one"[..])));
    // After close.
    let mut close = [0u8; 64];
    let nc = ca.channel.seal_close(&mut close).unwrap();
    assert_eq!(sa.channel.open(&close[..nc]), Ok(Received::Close));
    assert_eq!(sa.channel.open(&f[0][..n0]), Err(ChannelError::AfterClose));
    assert_eq!(sa.channel.open(&close[..nc]), Err(ChannelError::AfterClose));
}

#[test]
fn non_contributory_shares_are_refused() {
    let world = World::new(15);
    let token = world.issue_token(None, 0);
    // Client side: a genuine gateway signature over a challenge carrying a zero share
    // (what a malicious or broken gateway would send).
    let config = world.join_config("z", &token);
    let mut client = Client::join(config, &mut world.rng());
    let Some(Output::Transmit(hello)) = client.poll_output() else { panic!() };
    let mut transcript = Transcript::new();
    transcript.add_frame(&hello);
    let mut sc = ServerChallenge {
        version: 1,
        suite: MacSuite::Blake3.code(),
        nonce: [3; 32],
        identity_key: world.config.identity().public_key().to_bytes(),
        ephemeral: [0; 32],
        challenges: vec![],
    };
    let th = transcript.hash_partial(FrameType::ServerChallenge as u8, &sc.signed_part());
    let header = boarding::jws::challenge_header(token.id(), &th);
    let seed = world.config.identity().to_seed();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    sc.challenges.push(boarding::jws::eddsa_detached(&header, token.to_string().as_bytes(), &key));
    assert_eq!(
        client.handle_input(&sc.to_frame()).unwrap_err(),
        Error::PeerMisbehaved(PeerMisbehaved::NonContributoryShare)
    );

    // Gateway side: the token holder sends a valid proof over a ClientAuth with a
    // zero share.
    let mut pair = world.join_pair("z3", &token);
    let mut transcript = Transcript::new();
    let Some(Output::Transmit(hello)) = pair.client.poll_output() else { panic!() };
    transcript.add_frame(&hello);
    pair.server.handle_input(world.now, &hello).unwrap();
    let mut challenge = None;
    while let Some(out) = pair.server.poll_output() {
        match out {
            Output::Request(ServerRequest::Storage(req)) => {
                pair.server.handle_storage(world.store.answer(&req)).unwrap()
            }
            Output::Transmit(b) => challenge = Some(b),
            _ => {}
        }
    }
    transcript.add_frame(&challenge.unwrap());
    let mut auth = ClientAuth {
        token_id: token.id(),
        client_id: b"z3".to_vec(),
        ephemeral: [0; 32],
        evidence: vec![],
        request: vec![],
        proof: String::new(),
    };
    let th = transcript.hash_partial(FrameType::ClientAuth as u8, &auth.signed_part());
    auth.proof = hs256_detached(&th, token.id().as_str(), token.secret().expose());
    let before = world.store.snapshot();
    let err = pair.server.handle_input(world.now, &auth.to_frame()).unwrap_err();
    assert_eq!(err, Error::PeerMisbehaved(PeerMisbehaved::NonContributoryShare));
    assert_eq!(world.store.snapshot(), before);

    // Resume: a zero share in either hello or challenge.
    let (saved, _) = joined(&world, "z4", &token);
    let mut pair = world.resume_pair(&saved).tamper(|dir, i, bytes| {
        if dir == Dir::ToServer && i == 0 {
            let HandshakeMessage::ResumeHello(h) = HandshakeMessage::decode_frame(bytes).unwrap() else { panic!() };
            *bytes = ResumeHello { ephemeral: [0; 32], ..h }.to_frame();
        }
        Delivery::Deliver
    });
    assert_eq!(pair.drive().server, failed(PeerMisbehaved::NonContributoryShare));
    let mut pair = world.resume_pair(&saved).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            let HandshakeMessage::ResumeChallenge(c) = HandshakeMessage::decode_frame(bytes).unwrap() else { panic!() };
            *bytes = ResumeChallenge { ephemeral: [0; 32], ..c }.to_frame();
        }
        Delivery::Deliver
    });
    assert_eq!(pair.drive().client, failed(PeerMisbehaved::NonContributoryShare));
}

#[test]
fn concurrent_redemptions_of_a_one_use_token_have_one_winner() {
    for round in 0..5u64 {
        let world = World::new(100 + round);
        let token = world.issue_token(None, 1);
        let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let mut pair = world.join_pair(&format!("racer-{i}"), &token);
                    scope.spawn(move || pair.drive())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = outcomes.iter().filter(|o| o.both_established()).count();
        assert_eq!(winners, 1, "{outcomes:?}");
        for o in outcomes.iter().filter(|o| !o.both_established()) {
            assert_eq!(o.server, failed(Refusal::ExhaustedToken));
            assert_eq!(o.client, alert(Alert::ExhaustedToken));
        }
        assert_eq!(world.store.token(token.id()).unwrap().use_count, 1);
        assert_eq!(world.store.snapshot().keyrings.len(), 1);
    }
}

#[test]
fn interrupted_join_retried_succeeds_and_charges_once() {
    let world = World::new(16);
    let token = world.issue_token(None, 1);
    // The connection dies after redemption: ServerFinished never arrives.
    let mut pair = world
        .join_pair("retry", &token)
        .tamper(|dir, i, _| if dir == Dir::ToClient && i == 1 { Delivery::Drop } else { Delivery::Deliver });
    let out = pair.drive();
    assert_eq!((out.client, out.server), (Standing::Waiting, Standing::Waiting));
    assert_eq!(world.store.token(token.id()).unwrap().use_count, 1);
    let pending = world.store.keyring(&ClientId::new("retry").unwrap()).unwrap();
    assert!(!pending.confirmed);

    // The same client id and token: succeeds, replaces the unconfirmed keyring, no charge.
    let (saved, _) = joined(&world, "retry", &token);
    assert_eq!(world.store.token(token.id()).unwrap().use_count, 1);
    let record = world.store.keyring(&ClientId::new("retry").unwrap()).unwrap();
    assert!(record.confirmed);
    assert_eq!(record.keyring, saved.keyring);
    assert_ne!(record.keyring, pending.keyring);

    // Interrupted after the agent persisted but before the gateway confirmed: a
    // resume confirms the keyring.
    let token = world.issue_token(None, 1);
    let mut pair = world
        .join_pair("late", &token)
        .tamper(|dir, i, _| if dir == Dir::ToServer && i == 2 { Delivery::Drop } else { Delivery::Deliver });
    pair.drive();
    let saved = pair.saved.clone().unwrap();
    assert!(!world.store.keyring(&ClientId::new("late").unwrap()).unwrap().confirmed);
    let mut resume = world.resume_pair(&saved);
    assert!(resume.drive().both_established());
    assert!(world.store.keyring(&ClientId::new("late").unwrap()).unwrap().confirmed);
}

#[test]
fn resume_for_an_unknown_client_gets_an_indistinguishable_decoy() {
    let world = World::new(17);
    let token = world.issue_token(None, 0);
    let (saved, _) = joined(&world, "known", &token);
    let unknown = SavedKeyring { client_id: ClientId::new("unknown").unwrap(), ..saved.clone() };
    // An attacker without the keyring probes a known and an unknown id: both
    // challenges have the same shape, its guessed finished MAC fails the same way.
    let mut seen = Vec::new();
    let mut local = Vec::new();
    for probe in [&saved, &unknown] {
        let guess = SavedKeyring {
            keyring: Keyring { c2s: SymmetricKey::from_bytes([9; 32]), s2c: SymmetricKey::from_bytes([9; 32]) },
            ..probe.clone()
        };
        let mut pair = world.resume_pair(&guess);
        let out = pair.drive();
        assert_eq!(out.client, failed(PeerMisbehaved::BadGatewayProof));
        let challenge = pair.sent(Dir::ToClient)[0].clone();
        // Answer the challenge with a forged finished MAC, as a prober would.
        let mut pair = world.resume_pair(&guess);
        let Some(Output::Transmit(hello)) = pair.client.poll_output() else { panic!() };
        pair.server.handle_input(world.now, &hello).unwrap();
        while let Some(out) = pair.server.poll_output() {
            if let Output::Request(ServerRequest::Storage(req)) = out {
                pair.server.handle_storage(world.store.answer(&req)).unwrap();
            }
        }
        let err = pair
            .server
            .handle_input(world.now, &ResumeFinished { request: Vec::new(), mac: [1; 32] }.to_frame())
            .unwrap_err();
        let Some(Output::Transmit(alert_bytes)) = pair.server.poll_output() else { panic!() };
        seen.push((challenge.len(), challenge[..9].to_vec(), alert_bytes, err.alert()));
        local.push(err);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0].3, Some(Alert::BadProof));
    // The guess offers a keyring fingerprint the known client's record does not hold, so
    // both got the decoy (§8.2): locally, too, neither resumed with a held keyring.
    assert_eq!(local, [Error::from(Refusal::UnknownClient), Error::from(Refusal::UnknownClient)]);
    // Locally the gateway knows which it was.
    let mut pair = world.resume_pair(&unknown);
    assert_eq!(pair.drive().server, alert(Alert::BadIdentity));
    // A revoked client is unknown from then on.
    assert!(world.store.revoke_client(&saved.client_id));
    let mut pair = world.resume_pair(&saved);
    assert_eq!(pair.drive().client, failed(PeerMisbehaved::BadGatewayProof));
}

#[test]
fn unexpected_storage_answers_are_misuse() {
    let world = World::new(18);
    let token = world.issue_token(None, 0);
    let mut pair = world.join_pair("m", &token);
    let err = pair.server.handle_storage(boarding::storage::StorageAnswer::Keyring(None)).unwrap_err();
    assert!(matches!(err, Error::Misuse(ApiMisuse::NotPending { .. })), "{err:?}");
    let _ = ResumeConfig::new;
}

#[test]
fn evidence_reaches_the_gateway_bound_to_the_transcript() {
    let world = World::new(19);
    let token = world.issue_token(None, 0);
    let mut pair = world.join_pair("e", &token).with_attester(|_| Ok(b"quote:abc".to_vec()));
    assert!(pair.drive().both_established());
    assert_eq!(pair.admissions.len(), 1);
    assert_eq!(pair.admissions[0].evidence, b"quote:abc");
    // Evidence swapped in flight is caught by the proof.
    let mut pair =
        world.join_pair("e2", &token).with_attester(|_| Ok(b"quote:abc".to_vec())).tamper(|dir, i, bytes| {
            if dir == Dir::ToServer && i == 1 {
                let HandshakeMessage::ClientAuth(auth) = HandshakeMessage::decode_frame(bytes).unwrap() else {
                    panic!()
                };
                *bytes = ClientAuth { evidence: b"quote:xyz".to_vec(), ..auth }.to_frame();
            }
            Delivery::Deliver
        });
    assert_eq!(pair.drive().server, failed(PeerMisbehaved::BadClientProof));
    assert!(pair.admissions.is_empty(), "the application saw evidence the proof does not cover");
}
