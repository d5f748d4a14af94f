//! Keyring rotation on resume and clone detection (`spec/PROTOCOL.md` §8.5 and §11):
//! both ends driven together through the in-memory driver, every step of a rotation
//! interrupted, a thief holding a copy of the agent's stored keyrings resuming before
//! and after the owner, and bytes tampered with in flight.

use boarding::Alert;
use boarding::client::SavedKeyring;
use boarding::error::{Error, LocalFailure, PeerMisbehaved, ReceivedAlert, Refusal};
use boarding::identity::ClientId;
use boarding::messages::FrameType;
use boarding::storage::{KeyringRecord, MAX_RETIRED_KEYRINGS, RotationPolicy, StorageRequest};
use boarding_memory::{Delivery, Dir, Outcome, Pair, PersistAction, StorageAction, World};

const ID: &str = "node-1";

fn id() -> ClientId {
    ClientId::new(ID).unwrap()
}

fn record(world: &World) -> KeyringRecord {
    world.store.keyring(&id()).expect("the client has a keyring record")
}

/// Joins `ID` and returns what its agent stored.
fn joined(world: &World) -> SavedKeyring {
    let token = world.issue_token(None, 1);
    let mut pair = world.join_pair(ID, &token);
    assert!(pair.drive().both_established());
    pair.saved.clone().expect("the join persisted its keyring")
}

/// What an agent's disk holds after a resume from `disk`: a stored rotation (the
/// pair records it on `PersistAction::Store` and `Hold`), then the settled state.
fn disk_after(disk: &SavedKeyring, pair: &Pair) -> SavedKeyring {
    let stored = pair.saved.clone().unwrap_or_else(|| disk.clone());
    match pair.info.as_ref().and_then(|info| info.settled.clone()) {
        Some(settled) => settled,
        None => stored,
    }
}

/// A whole resume from `disk`; returns the outcome and the disk after it.
fn resume(world: &World, disk: &SavedKeyring) -> (Outcome, SavedKeyring, Pair) {
    let mut pair = world.resume_pair(disk);
    let outcome = pair.drive();
    let after = disk_after(disk, &pair);
    (outcome, after, pair)
}

/// The gateway refused the resume as a clone's. It decides after the agent's last
/// handshake message, so its alert reaches the agent where the first channel frame
/// would: the last bytes the gateway sent are that alert.
fn retired_refusal(outcome: &Outcome, pair: &Pair) {
    assert_eq!(outcome.server_error(), Some(&Error::Refused(Refusal::RetiredKeyring)), "{outcome:?}");
    let alert = vec![FrameType::Alert as u8, 0, 0, 0, 1, Alert::RetiredKeyring.code()];
    assert_eq!(pair.sent(Dir::ToClient).last(), Some(&alert));
}

#[test]
fn an_operator_rotation_replaces_the_keyring_and_retires_the_old_one() {
    let world = World::new(1);
    let old = joined(&world);
    // No policy, no request: resumes leave the keyring alone.
    let (outcome, disk, pair) = resume(&world, &old);
    assert!(outcome.both_established());
    assert!(!pair.info.as_ref().unwrap().rotated && !pair.peer.as_ref().unwrap().rotated());
    assert_eq!(disk, old);

    assert!(world.store.request_rotation(&id()));
    assert!(!world.store.request_rotation(&ClientId::new("nobody").unwrap()));
    let (outcome, disk, pair) = resume(&world, &old);
    assert!(outcome.both_established(), "{outcome:?}");
    assert!(pair.info.as_ref().unwrap().rotated && pair.peer.as_ref().unwrap().rotated());
    // The agent stored the new keyring before its proof, keeping the old one.
    assert_ne!(disk.keyring, old.keyring);
    assert_eq!(disk.rotated_from.as_ref(), Some(&old.keyring));
    let stored = record(&world);
    assert_eq!(stored.keyring, disk.keyring);
    assert_eq!(stored.retired, std::slice::from_ref(&old.keyring));
    assert!(stored.confirmed && !stored.rotation_requested && stored.clone_suspected.is_none());
    assert_eq!(stored.rotated_at, Some(world.now));

    // The next resume offers both; the gateway uses the new one and the agent keeps it alone.
    let (outcome, settled, pair) = resume(&world, &disk);
    assert!(outcome.both_established(), "{outcome:?}");
    assert!(!pair.info.as_ref().unwrap().rotated);
    assert_eq!(settled.keyring, disk.keyring);
    assert_eq!(settled.rotated_from, None);

    // The old keyring alone is a clone's: refused, and recorded.
    let (outcome, _, pair) = resume(&world, &old);
    retired_refusal(&outcome, &pair);
    let suspicion = record(&world).clone_suspected.expect("a clone suspicion");
    assert_eq!((suspicion.count, suspicion.keyring_id), (1, old.keyring.id()));
    // The holder of the current keyring is not locked out.
    assert!(resume(&world, &settled).0.both_established());
}

#[test]
fn the_age_policy_rotates_once_the_keyring_is_old_enough() {
    let mut world = World::new(2).with_rotation(RotationPolicy { max_age: Some(100) });
    let joined_at = world.now;
    let old = joined(&world);
    world.now = joined_at + 99;
    let (outcome, disk, pair) = resume(&world, &old);
    assert!(outcome.both_established() && !pair.info.unwrap().rotated);
    world.now = joined_at + 100;
    let (outcome, disk, pair) = resume(&world, &disk);
    assert!(outcome.both_established() && pair.info.unwrap().rotated);
    // The new keyring's age counts from its rotation.
    world.now = joined_at + 199;
    let (outcome, disk, pair) = resume(&world, &disk);
    assert!(outcome.both_established() && !pair.info.unwrap().rotated);
    world.now = joined_at + 200;
    let (outcome, _, pair) = resume(&world, &disk);
    assert!(outcome.both_established() && pair.info.unwrap().rotated);
    assert_eq!(record(&world).retired.len(), 2);
}

#[test]
fn an_unconfirmed_keyring_is_confirmed_not_rotated() {
    let world = World::new(3);
    let token = world.issue_token(None, 1);
    // The ClientFinished is lost: the gateway holds the keyring unconfirmed.
    let mut pair = world.join_pair(ID, &token).tamper(|dir, i, _| match (dir, i) {
        (Dir::ToServer, 2) => Delivery::Drop,
        _ => Delivery::Deliver,
    });
    pair.drive();
    let saved = pair.saved.clone().unwrap();
    assert!(!record(&world).confirmed);
    assert!(world.store.request_rotation(&id()));
    let (outcome, disk, pair) = resume(&world, &saved);
    assert!(outcome.both_established(), "{outcome:?}");
    assert!(!pair.info.unwrap().rotated);
    assert_eq!(disk, saved);
    let stored = record(&world);
    assert!(stored.confirmed && stored.rotation_requested, "the request waits for the next resume");
    let (outcome, _, pair) = resume(&world, &saved);
    assert!(outcome.both_established() && pair.info.unwrap().rotated);
}

/// Each way a rotating resume can stop short. After it, the agent resumes from what its
/// disk holds, and must get in: no step leaves it locked out or suspected.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    HelloLost,
    ChallengeLost,
    PersistFailed,
    CrashBeforePersist,
    FinishedLost,
    RotationStoreFailed,
    RotationCommittedThenCrash,
}

#[test]
fn a_rotation_interrupted_at_every_step_is_completed_by_the_next_resume() {
    use Interruption::*;
    for (seed, step) in [
        HelloLost,
        ChallengeLost,
        PersistFailed,
        CrashBeforePersist,
        FinishedLost,
        RotationStoreFailed,
        RotationCommittedThenCrash,
    ]
    .into_iter()
    .enumerate()
    {
        let world = World::new(100 + seed as u64);
        let old = joined(&world);
        assert!(world.store.request_rotation(&id()));
        let mut pair = world.resume_pair(&old);
        pair = match step {
            HelloLost => pair.tamper(|dir, i, _| drop_at(dir, i, Dir::ToServer, 0)),
            ChallengeLost => pair.tamper(|dir, i, _| drop_at(dir, i, Dir::ToClient, 0)),
            PersistFailed => pair.with_persist(PersistAction::Fail),
            CrashBeforePersist => pair.with_persist(PersistAction::Ignore),
            FinishedLost => pair.tamper(|dir, i, _| drop_at(dir, i, Dir::ToServer, 1)),
            RotationStoreFailed => {
                pair.with_storage(only(|r| matches!(r, StorageRequest::RotateKeyring(_)), StorageAction::Fail))
            }
            // The commit lands, then the gateway dies before the session is used.
            RotationCommittedThenCrash => pair,
        };
        let outcome = pair.drive();
        let disk = disk_after(&old, &pair);
        match step {
            PersistFailed => {
                assert_eq!(outcome.client_error(), Some(&Error::Local(LocalFailure::Persist)), "{step:?}");
                assert!(!pair.sent(Dir::ToServer).iter().any(|f| f[0] == FrameType::ResumeFinished as u8));
            }
            RotationStoreFailed => {
                assert_eq!(outcome.server_error(), Some(&Error::Local(LocalFailure::Storage)), "{step:?}")
            }
            RotationCommittedThenCrash => assert!(outcome.both_established()),
            _ => assert!(!outcome.both_established(), "{step:?}: {outcome:?}"),
        }
        let committed = record(&world).keyring != old.keyring;
        assert_eq!(committed, matches!(step, RotationCommittedThenCrash), "{step:?}");
        // What the disk holds always includes what the gateway holds.
        let current = record(&world).keyring;
        assert!(disk.keyring == current || disk.rotated_from.as_ref() == Some(&current), "{step:?}");

        // The next resume gets in, and completes the rotation the operator asked for.
        let (outcome, disk, pair) = resume(&world, &disk);
        assert!(outcome.both_established(), "{step:?}: {outcome:?}");
        let rotated_now = pair.info.as_ref().unwrap().rotated;
        assert_eq!(rotated_now, !committed, "{step:?}");
        let (outcome, disk, _) = resume(&world, &disk);
        assert!(outcome.both_established(), "{step:?}: {outcome:?}");
        assert_eq!(disk.keyring, record(&world).keyring, "{step:?}");
        assert_eq!(disk.rotated_from, None, "{step:?}: settled to the one keyring the gateway holds");
        let stored = record(&world);
        assert!(stored.clone_suspected.is_none() && !stored.rotation_requested, "{step:?}: {stored:?}");
    }
}

/// A storage hook that does `action` to the requests `pick` chooses and answers the rest.
fn only(
    pick: impl Fn(&StorageRequest) -> bool + Send + 'static,
    action: StorageAction,
) -> impl FnMut(&StorageRequest) -> StorageAction + Send + 'static {
    move |r| if pick(r) { action } else { StorageAction::Answer }
}

fn drop_at(dir: Dir, index: usize, target: Dir, at: usize) -> Delivery {
    if dir == target && index == at { Delivery::Drop } else { Delivery::Deliver }
}

#[test]
fn a_held_persist_sends_no_proof_until_the_rotation_is_stored() {
    let world = World::new(4);
    let old = joined(&world);
    assert!(world.store.request_rotation(&id()));
    let mut pair = world.resume_pair(&old).with_persist(PersistAction::Hold);
    pair.drive();
    assert!(!pair.sent(Dir::ToServer).iter().any(|f| f[0] == FrameType::ResumeFinished as u8));
    assert_eq!(record(&world).keyring, old.keyring);
    assert!(pair.release_persist(Ok(())));
    assert!(pair.drive().both_established());
    assert_eq!(Some(record(&world).keyring), pair.saved.map(|s| s.keyring));
}

#[test]
fn the_owner_rotates_first_and_the_thiefs_copy_is_refused_and_recorded() {
    let world = World::new(5);
    let owner = joined(&world);
    let thief = owner.clone();
    assert!(world.store.request_rotation(&id()));
    let (outcome, owner, _) = resume(&world, &owner);
    assert!(outcome.both_established());
    let (outcome, _, pair) = resume(&world, &thief);
    retired_refusal(&outcome, &pair);
    // The thief proved the retired keyring before it was refused: a genuine copy.
    assert!(pair.requests.iter().any(|r| matches!(r, StorageRequest::RecordClone { .. })));
    assert_eq!(record(&world).clone_suspected.map(|s| s.count), Some(1));
    // Again and again: refused each time, counted each time; the owner carries on.
    let (outcome, _, pair) = resume(&world, &thief);
    retired_refusal(&outcome, &pair);
    assert_eq!(record(&world).clone_suspected.map(|s| s.count), Some(2));
    assert!(resume(&world, &owner).0.both_established());
}

#[test]
fn the_thief_rotates_first_and_the_owner_is_refused_and_recorded() {
    let world = World::new(6);
    let owner = joined(&world);
    let thief = owner.clone();
    assert!(world.store.request_rotation(&id()));
    let (outcome, thief, _) = resume(&world, &thief);
    assert!(outcome.both_established());
    // The owner is locked out, and the gateway says why: a clone event.
    let (outcome, _, pair) = resume(&world, &owner);
    retired_refusal(&outcome, &pair);
    assert_eq!(record(&world).clone_suspected.map(|s| s.keyring_id), Some(owner.keyring.id()));
    // The operator sees it; until they revoke, the thief's keyring is the current one.
    assert!(resume(&world, &thief).0.both_established());
}

#[test]
fn a_copy_taken_while_a_rotation_was_in_doubt_is_detected_too() {
    let world = World::new(7);
    let old = joined(&world);
    assert!(world.store.request_rotation(&id()));
    // The ResumeFinished is lost: the owner holds both keyrings, the gateway the old one.
    let mut pair = world.resume_pair(&old).tamper(|dir, i, _| drop_at(dir, i, Dir::ToServer, 1));
    pair.drive();
    let owner = disk_after(&old, &pair);
    assert!(owner.rotated_from.is_some());
    let thief = owner.clone();
    // The owner resumes with its fallback and rotates again (the request still stands).
    let (outcome, owner, _) = resume(&world, &owner);
    assert!(outcome.both_established());
    // The thief offers the owner's dead new keyring and the old one, now retired.
    let (outcome, _, pair) = resume(&world, &thief);
    retired_refusal(&outcome, &pair);
    assert!(resume(&world, &owner).0.both_established());
}

#[test]
fn two_resumes_racing_to_rotate_one_keyring_end_with_one_winner() {
    let world = World::new(8);
    let saved = joined(&world);
    assert!(world.store.request_rotation(&id()));
    let mut slow = world
        .resume_pair(&saved)
        .with_storage(only(|r| matches!(r, StorageRequest::RotateKeyring(_)), StorageAction::Hold));
    slow.drive();
    let (outcome, winner, _) = resume(&world, &saved);
    assert!(outcome.both_established());
    assert!(slow.release_storage());
    let outcome = slow.drive();
    assert_eq!(outcome.server_error(), Some(&Error::Refused(Refusal::RetiredKeyring)), "{outcome:?}");
    assert_eq!(record(&world).keyring, winner.keyring);
    // Two resumes of one agent could meet here, so a lost race records no clone: the
    // loser's holder, if it is a copy, is caught at its next resume.
    assert!(record(&world).clone_suspected.is_none());
}

/// Found by the model (`spec/model`, variant `StaleAccept`): a resume that read the
/// keyring before another resume rotated it away must not complete after the commit.
#[test]
fn a_resume_overtaken_by_a_rotation_does_not_complete_with_the_retired_keyring() {
    let world = World::new(13);
    let saved = joined(&world);
    let mut slow = world
        .resume_pair(&saved)
        .with_storage(only(|r| matches!(r, StorageRequest::CheckKeyring { .. }), StorageAction::Hold));
    slow.drive();
    // Meanwhile another holder of the keyring resumes and rotates it.
    assert!(world.store.request_rotation(&id()));
    let (outcome, _, _) = resume(&world, &saved);
    assert!(outcome.both_established());
    assert!(slow.release_storage());
    let outcome = slow.drive();
    assert_eq!(outcome.server_error(), Some(&Error::Refused(Refusal::RetiredKeyring)), "{outcome:?}");
    assert!(slow.peer.is_none(), "no session under the retired keyring");
    assert!(record(&world).clone_suspected.is_none());
}

/// Found by the model (variant `NoFence`): a rotation's commit delayed while the agent
/// resumes again with the keyring before it must not land afterwards, or the agent,
/// which dropped the delayed keyring, is locked out and reported as its own clone.
#[test]
fn a_delayed_rotation_commit_is_fenced_off_by_the_agents_next_resume() {
    let world = World::new(14);
    let old = joined(&world);
    assert!(world.store.request_rotation(&id()));
    let mut delayed = world
        .resume_pair(&old)
        .with_storage(only(|r| matches!(r, StorageRequest::RotateKeyring(_)), StorageAction::Hold));
    delayed.drive();
    let disk = disk_after(&old, &delayed);
    assert_eq!(disk.rotated_from.as_ref(), Some(&old.keyring), "the agent holds both, in doubt");
    // The agent resumes again: the gateway still holds the old keyring, fences the
    // delayed commit off, and rotates again (the request still stands).
    let (outcome, disk, pair) = resume(&world, &disk);
    assert!(outcome.both_established(), "{outcome:?}");
    assert!(pair.requests.iter().any(|r| matches!(r, StorageRequest::FenceKeyring { .. })));
    assert!(pair.info.as_ref().unwrap().rotated);
    assert_eq!(disk.rotated_from.as_ref(), Some(&old.keyring), "the delayed keyring is dropped");
    // The delayed commit arrives now: refused, and nothing is recorded.
    assert!(delayed.release_storage());
    let outcome = delayed.drive();
    assert_eq!(outcome.server_error(), Some(&Error::Refused(Refusal::RetiredKeyring)), "{outcome:?}");
    let stored = record(&world);
    assert_eq!(stored.keyring, disk.keyring, "the gateway holds what the agent holds");
    assert!(stored.clone_suspected.is_none());
    assert!(resume(&world, &disk).0.both_established());
}

#[test]
fn the_rotate_flag_and_the_offered_keyrings_are_covered_by_the_proofs() {
    // The gateway does not rotate; an attacker sets the flag in flight.
    let world = World::new(9);
    let saved = joined(&world);
    let mut pair = world.resume_pair(&saved).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            // Type, length (4), version (2), suite (2), then the rotate byte.
            bytes[9] = 1;
        }
        Delivery::Deliver
    });
    let outcome = pair.drive();
    assert_eq!(outcome.client_error(), Some(&Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof)));
    assert_eq!(record(&world).keyring, saved.keyring);

    // A rotation asked for; an attacker clears the flag: the agent refuses too, and
    // nothing rotates.
    assert!(world.store.request_rotation(&id()));
    let mut pair = world.resume_pair(&saved).tamper(|dir, i, bytes| {
        if dir == Dir::ToClient && i == 0 {
            bytes[9] = 0;
        }
        Delivery::Deliver
    });
    let outcome = pair.drive();
    assert_eq!(outcome.client_error(), Some(&Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof)));
    assert_eq!(record(&world).keyring, saved.keyring);

    // An offered fingerprint changed in flight: the gateway answers with a decoy, and
    // the agent cannot verify it.
    let mut pair = world.resume_pair(&saved).tamper(|dir, i, bytes| {
        if dir == Dir::ToServer && i == 0 {
            // Type, length, versions (1 + 2), suites (1 + 2 × 2), client id (1 + 6), count.
            let first_id = 5 + 3 + 5 + 1 + ID.len() + 1;
            bytes[first_id] ^= 1;
        }
        Delivery::Deliver
    });
    let outcome = pair.drive();
    assert_eq!(outcome.client_error(), Some(&Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof)));
    assert!(record(&world).rotation_requested, "nothing rotated");
}

#[test]
fn a_known_client_offering_no_keyring_it_holds_gets_the_decoy() {
    let world = World::new(10);
    let saved = joined(&world);
    let mut stranger = saved.clone();
    stranger.keyring = boarding::keys::Keyring {
        c2s: boarding::keys::SymmetricKey::from_bytes([1; 32]),
        s2c: boarding::keys::SymmetricKey::from_bytes([2; 32]),
    };
    let (outcome, _, _) = resume(&world, &stranger);
    // The agent cannot verify the decoy's MAC, exactly as for an unknown client id.
    assert_eq!(outcome.client_error(), Some(&Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof)));
    assert_eq!(outcome.server_error(), Some(&Error::PeerAlert(ReceivedAlert::Known(Alert::BadIdentity))));
    assert!(record(&world).clone_suspected.is_none());
}

#[test]
fn the_history_of_retired_keyrings_is_bounded() {
    let world = World::new(11);
    let first = joined(&world);
    let mut disk = first.clone();
    for _ in 0..=MAX_RETIRED_KEYRINGS {
        assert!(world.store.request_rotation(&id()));
        let (outcome, after, _) = resume(&world, &disk);
        assert!(outcome.both_established());
        disk = after;
    }
    assert_eq!(record(&world).retired.len(), MAX_RETIRED_KEYRINGS);
    // The first keyring is forgotten: its holder gets the decoy (refused, not detected).
    let (outcome, _, _) = resume(&world, &first);
    assert_eq!(outcome.client_error(), Some(&Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof)));
    assert!(record(&world).clone_suspected.is_none());
}

#[test]
fn a_rotated_keyring_depends_on_the_resumes_fresh_exchange() {
    // Two gateways in the same state (the same seed) rotating the same keyring in two
    // resumes with different ephemeral keys derive different keyrings: the new keyring
    // is not a function of the old one alone.
    let world = World::new(12);
    let saved = joined(&world);
    assert!(world.store.request_rotation(&id()));
    let (_, a, _) = resume(&world, &saved);
    let world_b = World::new(12);
    let saved_b = joined(&world_b);
    assert_eq!(saved_b.keyring, saved.keyring, "the same seed gives the same join");
    assert!(world_b.store.request_rotation(&id()));
    let _ = world_b.rng(); // one more draw: this resume's ephemerals differ
    let (_, b, _) = resume(&world_b, &saved_b);
    assert_ne!(a.keyring, b.keyring);
    assert_ne!(a.keyring, saved.keyring);
}

/// A resume's completion check (`CheckKeyring`) and a join's confirmation
/// (`ConfirmKeyring`) each take only their own answer: the other is misuse and changes
/// nothing (found by the fuzz harness).
#[test]
fn the_completion_check_and_the_confirmation_take_only_their_own_answers() {
    use boarding::error::ApiMisuse;
    use boarding::storage::{ConfirmRefusal, StorageAnswer};
    let world = World::new(15);
    let saved = joined(&world);
    let mut pair = world
        .resume_pair(&saved)
        .with_storage(only(|r| matches!(r, StorageRequest::CheckKeyring { .. }), StorageAction::Hold));
    pair.drive();
    let err = pair.server.handle_storage(StorageAnswer::Confirmed(Err(ConfirmRefusal::Missing))).unwrap_err();
    assert!(matches!(err, Error::Misuse(ApiMisuse::NotPending { .. })), "{err:?}");
    assert!(pair.release_storage());
    assert!(pair.drive().both_established(), "the check still completes the resume");

    let token = world.issue_token(None, 1);
    let mut pair = world
        .join_pair("node-2", &token)
        .with_storage(only(|r| matches!(r, StorageRequest::ConfirmKeyring { .. }), StorageAction::Hold));
    pair.drive();
    let err = pair.server.handle_storage(StorageAnswer::Checked(Err(ConfirmRefusal::Replaced))).unwrap_err();
    assert!(matches!(err, Error::Misuse(ApiMisuse::NotPending { .. })), "{err:?}");
    assert!(pair.release_storage());
    assert!(pair.drive().both_established());
}

/// The clone's agent is established when the gateway refuses it; the refusal is the first
/// thing its channel receives, and the channel reports it as the alert it is (§9).
#[test]
fn a_late_refusal_reaches_the_agents_channel_as_its_alert() {
    use boarding::channel::{Channel, ChannelError, FRAME_OVERHEAD};
    let world = World::new(16);
    let owner = joined(&world);
    assert!(world.store.request_rotation(&id()));
    let (outcome, owner_now, _) = resume(&world, &owner);
    assert!(outcome.both_established());
    let mut pair = world.resume_pair(&owner);
    pair.drive();
    let alert = pair.sent(Dir::ToClient).last().cloned().unwrap();
    let session = pair.client.into_session().expect("the agent sent its last message");
    assert_eq!(session.channel.late_refusal(&alert), Some(ReceivedAlert::Known(Alert::RetiredKeyring)));
    assert_eq!(session.channel.late_refusal(&alert[..5]), None, "not a whole frame yet");
    assert_eq!(Channel::frame_len(&alert), Err(ChannelError::UnexpectedType(0x15)));

    // After the first channel frame, an alert is no refusal any more.
    let (outcome, _, pair) = resume(&world, &owner_now);
    assert!(outcome.both_established());
    let mut agent = pair.client.into_session().unwrap().channel;
    let mut gateway = pair.server.into_session().unwrap().channel;
    let mut frame = vec![0; 2 + FRAME_OVERHEAD];
    let n = gateway.seal(b"hi", &mut frame).unwrap();
    agent.open(&frame[..n]).unwrap();
    assert_eq!(agent.late_refusal(&alert), None);
}
