//! The agent fed arbitrary gateway bytes at every state it can be in. A real
//! handshake is driven to the state first (deterministically, through the memory
//! driver's [`Pair`](boarding_memory::Pair)), then the fuzzer's bytes arrive in
//! fuzzer-chosen pieces, and a pending persist is answered as the fuzzer says.
//!
//! Asserted: errors are typed and final, reported as the last output, with at most
//! one alert, sent last; everything the agent sends decodes; the first frame's type is
//! checked before anything else and a received alert is never answered; it moves on
//! only when the genuine gateway message is at the head of the stream (for the
//! challenge: the genuine signed fields and the genuine signature; the challenge list
//! itself is not authenticated until the gateway checks the agent's proof); it always
//! moves on when the genuine message is there; it persists only the honest keyring,
//! confirms only once the persist is acknowledged and fails (telling the gateway
//! `Internal`) when it is not; answers it did not ask for are harmless misuse; and
//! bytes that arrive after the handshake are handed to the channel untouched.
//!
//! The resume stages run in one of [`Flow::RESUMES`] (a plain resume, one the gateway
//! rotates, a clone's, one that offers two keyrings after a rotation, and one that offers
//! two after a rotation whose commit failed, which rotates again): a rotating resume
//! asks to store exactly the honest rotated keyring, only on the genuine challenge, and
//! sends its `ResumeFinished` only once that is acknowledged (a failed store fails it
//! with `Internal`); a clone's resume fails with the gateway's `RetiredKeyring` alert;
//! an established resume reports whether it rotated and what it may keep.

use boarding::Alert;
use boarding::Error;
use boarding::attestation::AttestFailed;
use boarding::channel::Received;
use boarding::client::{PersistFailed, SavedKeyring};
use boarding::error::{LocalFailure, ReceivedAlert};
use boarding::jws::{challenge_header_prefix, header_starts_with};
use boarding::messages::{
    AlertMessage, FRAME_HEADER_LEN, FrameType, HandshakeMessage, MAX_EVIDENCE, MAX_HANDSHAKE_BODY, Message,
    ServerChallenge, peek_handshake_frame,
};
use boarding_memory::Dir;

use super::contract::{check_failure, check_first_frame, probe_client_misuse};
use super::fixtures::{Flow, RESUME_TICKET, Recording, Script, check_emitted, concat, recording};
use super::input::{Input, chunks};

/// The agent states the target reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStage {
    /// Join sent its hello; waits for the challenge.
    JoinExpectChallenge,
    /// Unnamed-token ('seed') join waits for the challenge.
    UnnamedExpectChallenge,
    /// Join sent its proof; waits for `ServerFinished`.
    JoinExpectServerFinished,
    /// Join verified the gateway; waits for the caller to persist the keyring.
    JoinAwaitPersist,
    /// Join complete.
    JoinEstablished,
    /// Resume sent its hello; waits for the challenge.
    ResumeExpectChallenge,
    /// Resume sent its `ResumeFinished` with a request; waits for the `ResumeTicket`.
    ResumeExpectTicket,
    /// Resume complete.
    ResumeEstablished,
    /// Join verified the challenge; waits for the caller's evidence.
    JoinAwaitEvidence,
    /// A rotating resume verified the challenge; waits for the caller to store the new
    /// keyring before its `ResumeFinished` ([`Flow::ResumeRotating`], or
    /// [`Flow::ResumeUnsettled`]).
    ResumeAwaitRotationPersist,
}

impl ClientStage {
    /// Every stage, indexed by the target's first input byte (modulo 10; the quotient
    /// picks the answers and, at a resume stage, the flow, see [`client_states`]).
    pub const ALL: [ClientStage; 10] = [
        Self::JoinExpectChallenge,
        Self::UnnamedExpectChallenge,
        Self::JoinExpectServerFinished,
        Self::JoinAwaitPersist,
        Self::JoinEstablished,
        Self::ResumeExpectChallenge,
        Self::ResumeEstablished,
        Self::JoinAwaitEvidence,
        Self::ResumeExpectTicket,
        Self::ResumeAwaitRotationPersist,
    ];

    /// The flow the stage belongs to, for the plain resume at a resume stage.
    pub fn flow(self) -> Flow {
        self.flow_for(0)
    }

    /// The flow the stage runs with `digit` (the evidence-plan digit, which a resume
    /// never uses): a join stage's own flow; at a resume stage, [`Flow::RESUMES`]`[digit]`
    /// (a clone's resume never completes, so at `ResumeEstablished` that digit is the
    /// plain resume; awaiting the rotation's store, either rotating flow).
    pub fn flow_for(self, digit: usize) -> Flow {
        let resume = Flow::RESUMES[digit % Flow::RESUMES.len()];
        match self {
            Self::UnnamedExpectChallenge => Flow::UnnamedToken,
            Self::ResumeAwaitRotationPersist if resume == Flow::ResumeUnsettled => resume,
            Self::ResumeAwaitRotationPersist => Flow::ResumeRotating,
            Self::ResumeExpectChallenge | Self::ResumeExpectTicket => resume,
            Self::ResumeEstablished if resume == Flow::ResumeClone => Flow::Resume,
            Self::ResumeEstablished => resume,
            _ => Flow::Join,
        }
    }

    /// The frame types the agent waits for here (`None`: it waits for no frame).
    pub fn expected(self) -> Option<&'static [FrameType]> {
        match self {
            Self::JoinExpectChallenge | Self::UnnamedExpectChallenge => Some(&[FrameType::ServerChallenge]),
            Self::JoinExpectServerFinished => Some(&[FrameType::ServerFinished]),
            Self::ResumeExpectChallenge => Some(&[FrameType::ResumeChallenge]),
            Self::ResumeExpectTicket => Some(&[FrameType::ResumeTicket]),
            Self::JoinAwaitEvidence
            | Self::JoinAwaitPersist
            | Self::JoinEstablished
            | Self::ResumeEstablished
            | Self::ResumeAwaitRotationPersist => None,
        }
    }

    /// Drives an honest exchange of `flow` to this stage.
    pub fn build(self, flow: Flow) -> Script {
        let mut s = Script::new(flow);
        match self {
            Self::JoinExpectChallenge | Self::UnnamedExpectChallenge | Self::ResumeExpectChallenge => {}
            Self::JoinExpectServerFinished => {
                s.hop_to_server();
                s.hop_to_client();
            }
            Self::ResumeExpectTicket => {
                s.hop_to_server();
                s.hop_to_client();
                // A rotating resume stores the new keyring before its ResumeFinished.
                s.pair.release_persist(Ok(()));
                assert!(!s.pair.held_persist && s.pair.sent(Dir::ToServer).len() == 2, "no ResumeFinished sent");
            }
            Self::ResumeAwaitRotationPersist => {
                s.hop_to_server();
                s.hop_to_client();
                assert!(s.pair.held_persist, "the agent did not ask to store the rotated keyring");
            }
            Self::JoinAwaitEvidence => {
                s.pair.hold_attest = true;
                s.hop_to_server();
                s.hop_to_client();
                assert!(s.pair.held_attest, "the agent did not ask for evidence after the challenge");
            }
            Self::JoinAwaitPersist => {
                s.hop_to_server();
                s.hop_to_client();
                s.hop_to_server();
                s.hop_to_client();
            }
            Self::JoinEstablished | Self::ResumeEstablished => s.run_honest(),
        }
        s
    }

    /// The gateway message the agent waits for here in `flow`, if it waits for one (for
    /// a clone's resume awaiting its ticket: the gateway's `RetiredKeyring` alert).
    pub fn genuine_next(self, flow: Flow) -> Option<&'static [u8]> {
        let rec = recording(flow);
        let index = match self {
            Self::JoinExpectChallenge | Self::UnnamedExpectChallenge | Self::ResumeExpectChallenge => 0,
            Self::JoinExpectServerFinished | Self::ResumeExpectTicket => 1,
            _ => return None,
        };
        Some(&rec.server_sent[index])
    }
}

/// How a pending attestation request is answered (bits 1 and 2 of the first byte's
/// quotient; 0, what the committed seeds use, is the honest empty evidence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidencePlan {
    /// Empty evidence, as the honest recordings have.
    Empty,
    /// The attester failed.
    Fail,
    /// Evidence of `u16 % (MAX_EVIDENCE + 2)` bytes (a u16 read after the fragmentation
    /// byte): within the limit, or one past it.
    Sized,
    /// Evidence one byte over the limit.
    TooLong,
}

/// The target's first byte for [`ClientStage::JoinAwaitEvidence`] with `plan`.
pub fn evidence_stage_byte(plan: EvidencePlan) -> u8 {
    let index = ClientStage::ALL.iter().position(|s| *s == ClientStage::JoinAwaitEvidence).unwrap_or(0);
    let plan = [EvidencePlan::Empty, EvidencePlan::Fail, EvidencePlan::Sized, EvidencePlan::TooLong]
        .iter()
        .position(|p| *p == plan)
        .unwrap_or(0);
    u8::try_from(index + 2 * ClientStage::ALL.len() * plan).unwrap_or(0)
}

/// The target's first byte: the stage (modulo the number of stages), whether a pending
/// persist is answered `Err(PersistFailed)` (bit 0 of the quotient; 0, what the
/// committed seeds use, acknowledges it) and the evidence plan (bits 1 and 2).
pub fn stage_byte(stage: ClientStage, persist_fails: bool) -> u8 {
    resume_stage_byte(stage, stage.flow(), persist_fails)
}

/// The target's first byte for a resume stage run in `flow` (one of [`Flow::RESUMES`]:
/// the quotient's bits from 1 up, the evidence plan's at a join stage).
pub fn resume_stage_byte(stage: ClientStage, flow: Flow, persist_fails: bool) -> u8 {
    let index = ClientStage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
    let n = ClientStage::ALL.len();
    u8::try_from(index + n * (usize::from(persist_fails) + 2 * flow.resume_digit())).unwrap_or(0)
}

/// The target. Input: stage byte (see [`stage_byte`] and [`resume_stage_byte`]),
/// fragmentation byte, then the gateway's bytes.
pub fn client_states(data: &[u8]) {
    let mut input = Input::new(data);
    let first = input.byte();
    let stages = ClientStage::ALL.len();
    let stage = ClientStage::ALL[usize::from(first) % stages];
    let persist_fails = (usize::from(first) / stages) & 1 == 1;
    let digit = usize::from(first) / (2 * stages);
    let flow = stage.flow_for(digit);
    // A resume asks for no evidence: the digit picked its flow instead.
    let plan = if flow.is_resume() {
        EvidencePlan::Empty
    } else {
        [EvidencePlan::Empty, EvidencePlan::Fail, EvidencePlan::Sized, EvidencePlan::TooLong][digit % 4]
    };
    let chunk = input.byte();
    let evidence_len = match plan {
        EvidencePlan::Sized => usize::from(input.u16()) % (MAX_EVIDENCE + 2),
        EvidencePlan::TooLong => MAX_EVIDENCE + 1,
        EvidencePlan::Empty | EvidencePlan::Fail => 0,
    };
    let stream = input.rest();
    let mut script = stage.build(flow);
    let established_before = script.pair.client.is_established();
    let sent_before = script.pair.sent(Dir::ToServer).len();
    let saved_before = script.pair.saved.is_some();
    let rec = recording(flow);

    let mut first_error = None;
    for piece in chunks(stream, chunk) {
        let result = script.pair.client.handle_input(piece);
        match (&first_error, result) {
            (None, Err(e)) => first_error = Some(e),
            (Some(e), result) => assert_eq!(result, Err(e.clone()), "the agent's error did not stick"),
            (None, Ok(())) => {}
        }
        script.pair.flush();
    }
    if let Some(e) = &first_error {
        assert_eq!(script.pair.client.failure(), Some(e));
        assert!(!script.pair.client.is_established());
    }

    // What the agent did with the bytes.
    let sent: Vec<Vec<u8>> = script.pair.sent(Dir::ToServer)[sent_before..].to_vec();
    let persisted = if saved_before { None } else { script.pair.saved.clone() };
    let failure = script.pair.client.failure().cloned();
    check_failure("agent", failure.as_ref(), script.pair.outcome().client_error(), &sent);
    if let Some(expected) = stage.expected() {
        check_first_frame("agent", stream, expected, failure.as_ref(), &sent);
    }
    probe_client_misuse(&mut script.pair);
    let head_is_genuine = stage.genuine_next(flow).is_some_and(|g| stream.starts_with(g));

    match stage {
        ClientStage::JoinExpectChallenge | ClientStage::UnnamedExpectChallenge => {
            let advanced = sent.iter().any(|f| matches!(check_emitted(f), HandshakeMessage::ClientAuth(_)));
            if advanced {
                let frame = peek_handshake_frame(stream).ok().flatten().unwrap_or_else(|| panic!("no frame consumed"));
                let got = ServerChallenge::decode(frame.body).unwrap_or_else(|e| panic!("accepted undecodable: {e}"));
                let genuine = match HandshakeMessage::decode_frame(&rec.server_sent[0]) {
                    Ok(HandshakeMessage::ServerChallenge(m)) => m,
                    other => panic!("recorded challenge: {other:?}"),
                };
                assert_eq!(got.signed_part(), genuine.signed_part(), "accepted a challenge with forged fields");
                let prefix = challenge_header_prefix(script.token.id());
                let genuine_jws = genuine.challenges.iter().find(|c| header_starts_with(c, &prefix));
                let used = got.challenges.iter().find(|c| header_starts_with(c, &prefix));
                assert_eq!(used, genuine_jws, "accepted a challenge signature the gateway did not make");
                if frame.bytes == rec.server_sent[0] {
                    assert_eq!(sent.first(), Some(&rec.client_sent[1]), "the proof differs from the honest one");
                }
            }
            if head_is_genuine {
                assert!(advanced, "the genuine challenge was refused");
            }
            if let Some(saved) = &persisted {
                // Two messages accepted: both must be exactly the gateway's.
                assert!(stream.starts_with(&concat(&rec.server_sent[..2])), "accepted a forged join");
                assert_eq!(Some(saved), rec.saved.as_ref());
                answer_persist(&mut script, rec, persist_fails);
            }
        }
        ClientStage::JoinExpectServerFinished => {
            if let Some(saved) = &persisted {
                assert!(head_is_genuine, "accepted a ServerFinished the gateway did not send");
                assert_eq!(Some(saved), rec.saved.as_ref(), "persisted a keyring other than the honest one");
                answer_persist(&mut script, rec, persist_fails);
            }
            if head_is_genuine {
                assert!(persisted.is_some(), "the genuine ServerFinished was refused");
            }
        }
        ClientStage::ResumeExpectChallenge => {
            let rotating = flow.rotates();
            let advanced =
                sent.first().is_some_and(|f| matches!(check_emitted(f), HandshakeMessage::ResumeFinished(_)));
            if let Some(saved) = &persisted {
                // Only the genuine challenge of a rotating resume asks for it, and only the
                // honest rotated keyring (with the one it replaces) is to be stored.
                assert!(rotating && head_is_genuine, "asked to store a rotation the gateway did not ask for");
                assert_eq!(Some(saved), rec.saved.as_ref(), "asked to store another keyring than the honest rotation");
                assert!(sent.is_empty(), "sent its ResumeFinished before the rotated keyring was stored");
                let rest = &stream[rec.server_sent[0].len()..];
                answer_rotation_persist(script, flow, persist_fails, rest);
                return;
            }
            if advanced {
                assert!(head_is_genuine && !rotating, "accepted a ResumeChallenge the gateway did not send");
                assert_eq!(sent.first(), Some(&rec.client_sent[1]), "the ResumeFinished differs from the honest one");
            }
            if script.pair.client.is_established() {
                // The request's answer too: both messages exactly the gateway's.
                assert!(stream.starts_with(&concat(&rec.server_sent[..2])), "accepted a forged ResumeTicket");
                check_resume_ticket(&script, flow);
            }
            if flow == Flow::ResumeClone && stream.starts_with(&concat(&rec.server_sent[..2])) {
                check_clone_refused(failure.as_ref());
            }
            if head_is_genuine {
                assert!(advanced || rotating, "the genuine ResumeChallenge was refused");
                assert!(!rotating || failure.is_some(), "the genuine rotating ResumeChallenge asked to store nothing");
            }
        }
        ClientStage::ResumeExpectTicket => {
            let advanced = script.pair.client.is_established();
            assert!(persisted.is_none(), "the agent asked to store a keyring after its ResumeFinished");
            let only_alerts = sent.iter().all(|f| matches!(check_emitted(f), HandshakeMessage::Alert(_)));
            assert!(only_alerts, "the agent sent a handshake message after its ResumeFinished");
            if advanced {
                assert!(
                    head_is_genuine && flow != Flow::ResumeClone,
                    "accepted a ResumeTicket the gateway did not send"
                );
                check_resume_ticket(&script, flow);
            }
            if head_is_genuine && flow == Flow::ResumeClone {
                check_clone_refused(failure.as_ref());
            } else if head_is_genuine {
                assert!(advanced, "the genuine ResumeTicket was refused");
            }
        }
        ClientStage::ResumeAwaitRotationPersist => {
            assert!(sent.is_empty() && persisted.is_none(), "the agent acted on input while awaiting its store");
            if overflowed(failure.as_ref(), stream) {
                return;
            }
            answer_rotation_persist(script, flow, persist_fails, stream);
        }
        ClientStage::JoinAwaitEvidence => {
            assert!(sent.is_empty() && persisted.is_none(), "the agent acted on input while awaiting evidence");
            if overflowed(failure.as_ref(), stream) {
                return;
            }
            answer_evidence(&mut script, rec, plan, evidence_len, stream);
        }
        ClientStage::JoinAwaitPersist => {
            assert!(sent.is_empty() && persisted.is_none(), "the agent acted on input while awaiting persist");
            if overflowed(failure.as_ref(), stream) {
                return;
            }
            if answer_persist(&mut script, rec, persist_fails) {
                check_buffered(script, stream);
            }
        }
        ClientStage::JoinEstablished | ClientStage::ResumeEstablished => {
            assert!(established_before && sent.is_empty());
            if overflowed(failure.as_ref(), stream) {
                return;
            }
            check_buffered(script, stream);
        }
    }
}

/// An established resume learned the gateway application's answer to its request,
/// whether it rotated, and (offering two keyrings) which one it may keep.
fn check_resume_ticket(script: &Script, flow: Flow) {
    let info = script.pair.info.as_ref().unwrap_or_else(|| panic!("established without SessionInfo"));
    assert!(info.resumed, "a resume established as a join");
    assert_eq!(info.ticket, RESUME_TICKET, "the agent holds another ticket than the gateway's answer");
    assert_eq!(info.rotated, flow.rotates(), "the agent misreports the rotation");
    let settled = (flow == Flow::ResumeSettling).then(|| {
        let offered = recording(Flow::ResumeSettling).resumed_from.clone();
        let offered = offered.unwrap_or_else(|| panic!("the settling resume started from nothing"));
        // The gateway holds the newest: that one alone is kept.
        SavedKeyring { rotated_from: None, ..offered }
    });
    assert_eq!(info.settled, settled, "the agent settles on another keyring than the gateway holds");
}

/// A clone's resume ends with the gateway's `RetiredKeyring` alert, unanswered.
fn check_clone_refused(failure: Option<&Error>) {
    let alert = Error::PeerAlert(ReceivedAlert::Known(Alert::RetiredKeyring));
    assert_eq!(failure, Some(&alert), "a clone's resume did not end with the gateway's alert");
}

/// Answers the rotating resume's pending store of the new keyring (acknowledged, or
/// failed) and checks what the agent does: acknowledged, it sends the honest
/// `ResumeFinished` and then reads `buffered` (what arrived meanwhile): the genuine
/// `ResumeTicket` at its head completes the resume, which reports the rotation, and the
/// bytes after it go to the channel; failed, it fails with [`LocalFailure::Persist`]
/// and sends only the `Internal` alert.
fn answer_rotation_persist(mut script: Script, flow: Flow, fails: bool, buffered: &[u8]) {
    let rec = recording(flow);
    let pair = &mut script.pair;
    assert!(pair.held_persist, "the agent asked to store its keyring but nothing is pending");
    let before = pair.sent(Dir::ToServer).len();
    let outcome = if fails { Err(PersistFailed) } else { Ok(()) };
    if let Some(e) = pair.client.failure().cloned() {
        // Only an overflowing receive buffer fails it meanwhile; the answer then changes nothing.
        assert_eq!(pair.client.handle_persisted(outcome), Err(e), "the agent's error did not stick");
        return;
    }
    let result = pair.client.handle_persisted(outcome);
    pair.held_persist = false;
    pair.flush();
    let sent = pair.sent(Dir::ToServer)[before..].to_vec();
    let failure = pair.client.failure().cloned();
    check_failure("agent", failure.as_ref(), pair.outcome().client_error(), &sent);
    probe_client_misuse(pair);
    if fails {
        let e = Error::Local(LocalFailure::Persist);
        assert_eq!(result, Err(e.clone()), "a failed store did not fail the rotating resume");
        assert_eq!(failure, Some(e));
        assert_eq!(sent, [AlertMessage { code: Alert::Internal.code() }.to_frame()], "a failed store sent more");
        assert!(pair.info.is_none() && !pair.client.is_established());
        return;
    }
    assert_eq!(sent.first(), Some(&rec.client_sent[1]), "the ResumeFinished differs from the honest one");
    let ticket = &rec.server_sent[1];
    if !buffered.starts_with(ticket) {
        assert!(!pair.client.is_established(), "completed on a ResumeTicket the gateway did not send");
        return;
    }
    assert_eq!(result, Ok(()), "an acknowledged store failed with the genuine ResumeTicket buffered");
    assert!(pair.client.is_established(), "the genuine ResumeTicket buffered meanwhile was refused");
    assert_eq!(sent.len(), 1, "the agent sent more than its ResumeFinished");
    check_resume_ticket(&script, flow);
    let rest = &buffered[ticket.len()..];
    if overflowed(script.pair.client.failure(), rest) {
        return;
    }
    if script.server_got.is_empty() {
        // The real gateway never got the hello (the fuzzer played it): the agent alone.
        let client = script.pair.client.into_session().unwrap_or_else(|e| panic!("no session: {e}"));
        assert_eq!(client.buffered, rest, "bytes after the handshake were not kept for the channel");
    } else {
        check_buffered(script, rest);
    }
}

/// Whether a state that consumes no frames failed, which only a receive buffer
/// overflow may do.
fn overflowed(failure: Option<&Error>, stream: &[u8]) -> bool {
    if let Some(e) = failure {
        assert!(stream.len() > FRAME_HEADER_LEN + MAX_HANDSHAKE_BODY, "a state that reads no frames failed: {e}");
    }
    failure.is_some()
}

/// Answers the agent's pending attestation request as `plan` says and checks what it
/// does: with evidence within the limit it sends its ClientAuth carrying exactly that
/// evidence (the honest one for empty evidence) and only then reads the buffered bytes
/// (a genuine `ServerFinished` at their head is then accepted); a failed attester or
/// over-long evidence fails it with a local error and only the `Internal` alert.
fn answer_evidence(script: &mut Script, rec: &Recording, plan: EvidencePlan, len: usize, stream: &[u8]) {
    let before = script.pair.sent(Dir::ToServer).len();
    let outcome = match plan {
        EvidencePlan::Fail => Err(AttestFailed),
        _ => Ok(vec![0x5a; len]),
    };
    assert!(script.pair.release_evidence(outcome), "no attestation request was pending");
    let sent = script.pair.sent(Dir::ToServer)[before..].to_vec();
    let failure = script.pair.client.failure().cloned();
    check_failure("agent", failure.as_ref(), script.pair.outcome().client_error(), &sent);
    let expected = match plan {
        EvidencePlan::Fail => Some(Error::Local(LocalFailure::Attestation)),
        _ if len > MAX_EVIDENCE => Some(Error::Local(LocalFailure::EvidenceTooLong { len })),
        _ => None,
    };
    if let Some(e) = expected {
        assert_eq!(failure, Some(e), "the agent did not fail for its evidence");
        assert_eq!(sent, [AlertMessage { code: Alert::Internal.code() }.to_frame()], "a failed attestation sent more");
        return;
    }
    let Some(HandshakeMessage::ClientAuth(auth)) = sent.first().map(|f| check_emitted(f)) else {
        panic!("the agent sent no ClientAuth after its evidence: {sent:02x?}")
    };
    assert_eq!(auth.evidence, vec![0x5a; len], "the ClientAuth carries other evidence than the application's");
    if len == 0 {
        assert_eq!(sent[0], rec.client_sent[1], "the ClientAuth differs from the honest one");
        if stream.starts_with(&rec.server_sent[1]) {
            assert!(script.pair.saved.is_some(), "the genuine ServerFinished buffered meanwhile was refused");
        }
    } else {
        // Other evidence makes another transcript: the genuine ServerFinished no longer verifies.
        assert!(script.pair.saved.is_none(), "a ServerFinished for another transcript was accepted");
    }
}

/// Answers the agent's pending persist (acknowledged, or failed) and checks what it
/// does: acknowledged, it sends the honest `ClientFinished` and completes; failed, it
/// fails with [`LocalFailure::Persist`] and sends only the `Internal` alert. Returns
/// whether the join completed.
fn answer_persist(script: &mut Script, rec: &Recording, fails: bool) -> bool {
    let pair = &mut script.pair;
    assert!(pair.held_persist, "the agent asked to persist but nothing is pending");
    let before = pair.sent(Dir::ToServer).len();
    let outcome = if fails { Err(PersistFailed) } else { Ok(()) };
    let result = pair.client.handle_persisted(outcome);
    pair.held_persist = false;
    pair.flush();
    let sent = pair.sent(Dir::ToServer)[before..].to_vec();
    let failure = pair.client.failure().cloned();
    check_failure("agent", failure.as_ref(), pair.outcome().client_error(), &sent);
    probe_client_misuse(pair);
    if fails {
        let e = Error::Local(LocalFailure::Persist);
        assert_eq!(result, Err(e.clone()), "a failed persist did not fail the join");
        assert_eq!(failure, Some(e));
        assert_eq!(sent, [AlertMessage { code: Alert::Internal.code() }.to_frame()], "a failed persist sent more");
        assert!(pair.info.is_none() && !pair.client.is_established());
        false
    } else {
        assert_eq!(result, Ok(()), "an acknowledged persist failed");
        assert!(pair.client.is_established(), "persisting did not complete the join");
        assert_eq!(sent, [rec.client_sent[2].clone()], "the key confirmation differs from the honest one");
        let info = pair.info.as_ref().unwrap_or_else(|| panic!("established without SessionInfo"));
        assert_eq!(info.server_pin, script.world.config.pin());
        assert!(!info.resumed && info.ticket == script.world.ticket);
        true
    }
}

/// After the handshake, the agent hands every later byte to the channel, and its
/// channel talks to the gateway's.
fn check_buffered(mut script: Script, stream: &[u8]) {
    script.hop_to_server();
    let (mut client, mut server) = script.pair.into_sessions().unwrap_or_else(|e| panic!("no sessions: {e}"));
    assert_eq!(client.buffered, stream, "bytes after the handshake were not kept for the channel");
    assert_eq!(client.info.suite, server.channel.suite());
    let mut buf = [0u8; 64];
    let n = server.channel.seal(b"ping", &mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client.channel.open(&buf[..n]), Ok(Received::Data(&b"ping"[..])));
}
