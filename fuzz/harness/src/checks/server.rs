//! The gateway fed arbitrary client bytes at every state it can be in, its requests
//! answered by the memory driver's [`Pair`](boarding_memory::Pair): storage from a real
//! in-memory store (or failed, or held and then answered late, first with answers that
//! do not match), admission as the fuzzer says (admit with a ticket of any length, or
//! refuse).
//!
//! Asserted: errors are typed and final, reported as the last output, with at most
//! one alert, sent last; everything the gateway sends decodes; the first frame's type
//! is checked before anything else and a received alert is never answered; a resume
//! whose X25519 share is non-contributory never reaches the keyring lookup; it asks
//! for admission and redeems a token only after the genuine hello and proof, and
//! redeems only what was admitted; a refused or over-long admission fails with its own
//! error and leaves the store as it was; the admitted ticket is the one sent; a failed
//! storage request fails the handshake; mismatched answers are harmless misuse; it
//! confirms a keyring or reports a verified client only after the genuine complete
//! exchange (for the decoy resume: never); it always completes when the genuine
//! exchange is there and every answer is the honest one; the one-use token is charged
//! at most once and binds at most one client id; bytes after the handshake are handed
//! to the channel untouched.
//!
//! The resume stages run in one of [`Flow::RESUMES`] (or, awaiting a decoy's finished,
//! an unknown client id or a known one offering keyrings it never held): a resume
//! completes only on the genuine exchange, and reports a rotation exactly when it
//! rotated; the store's current keyring changes only by a completed rotating resume, to
//! the keyring its agent stored, retiring the old one; a clone's genuine resume never
//! completes: it is refused with `RetiredKeyring` once the clone is recorded, and a clone
//! is recorded exactly then. The rotation's commit and the clone's record are storage
//! requests like the others: failed, or held while more bytes arrive (the gateway then
//! waits in `AwaitRotation` or `AwaitCloneRecord`) and answered late.

use std::sync::{Arc, Mutex};

use boarding::Error;
use boarding::channel::Received;
use boarding::error::{LocalFailure, PeerMisbehaved, Refusal};
use boarding::identity::ClientId;
use boarding::keys::Keyring;
use boarding::messages::{FrameType, HandshakeMessage, MAX_TICKET, peek_handshake_frame};
use boarding::server::{Admission, AdmissionRequest};
use boarding::storage::{StorageAnswer, StorageRequest};
use boarding_memory::{Dir, StorageAction};

use super::contract::{check_failure, check_first_frame, mismatched, probe_server_misuse};
use super::fixtures::{CLIENT_ID, Flow, Script, check_emitted, concat, recording};
use super::input::{Input, chunks};

/// The gateway states the target reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStage {
    /// Nothing received yet.
    ExpectHello,
    /// Challenge sent (token named); waits for `ClientAuth`.
    JoinExpectClientAuth,
    /// Challenge sent (unnamed-token flow); waits for `ClientAuth`.
    UnnamedExpectClientAuth,
    /// `ClientAuth` accepted and admitted; the redemption is pending in storage while
    /// bytes arrive.
    JoinAwaitRedeem,
    /// `ServerFinished` sent; waits for `ClientFinished`.
    JoinExpectClientFinished,
    /// Join complete.
    JoinEstablished,
    /// Resume challenge sent; waits for `ResumeFinished`.
    ResumeExpectFinished,
    /// Decoy resume challenge sent to an unknown client id.
    ResumeUnknownExpectFinished,
    /// Resume complete.
    ResumeEstablished,
}

impl ServerStage {
    /// Every stage, indexed by the target's first input byte (modulo 9; the quotient
    /// picks the answers, see [`ServerAnswers`]).
    pub const ALL: [ServerStage; 9] = [
        Self::ExpectHello,
        Self::JoinExpectClientAuth,
        Self::UnnamedExpectClientAuth,
        Self::JoinAwaitRedeem,
        Self::JoinExpectClientFinished,
        Self::JoinEstablished,
        Self::ResumeExpectFinished,
        Self::ResumeUnknownExpectFinished,
        Self::ResumeEstablished,
    ];

    /// The flow the stage belongs to, for the plain resume at a resume stage.
    pub fn flow(self) -> Flow {
        self.flow_for(0)
    }

    /// The flow the stage runs with `digit` (the admission digit of [`ServerAnswers`],
    /// which a resume never asks for): a join stage's own flow; at a resume stage,
    /// [`Flow::RESUMES`]`[digit]` of its first four (a clone's resume never completes, so
    /// at `ResumeEstablished` that digit is the fifth, the unsettled resume); awaiting a
    /// decoy's finished, an unknown client id (0) or a known one offering keyrings it
    /// never held.
    pub fn flow_for(self, digit: usize) -> Flow {
        let resume = Flow::RESUMES[digit % 4];
        match self {
            Self::UnnamedExpectClientAuth => Flow::UnnamedToken,
            Self::ResumeExpectFinished => resume,
            Self::ResumeEstablished if resume == Flow::ResumeClone => Flow::ResumeUnsettled,
            Self::ResumeEstablished => resume,
            Self::ResumeUnknownExpectFinished if resume == Flow::Resume => Flow::ResumeUnknown,
            Self::ResumeUnknownExpectFinished => Flow::ResumeForeign,
            _ => Flow::Join,
        }
    }

    /// The frame types the gateway waits for here (`None`: it waits for no frame).
    pub fn expected(self) -> Option<&'static [FrameType]> {
        match self {
            Self::ExpectHello => Some(&[FrameType::ClientHello, FrameType::ResumeHello]),
            Self::JoinExpectClientAuth | Self::UnnamedExpectClientAuth => Some(&[FrameType::ClientAuth]),
            Self::JoinExpectClientFinished => Some(&[FrameType::ClientFinished]),
            Self::ResumeExpectFinished | Self::ResumeUnknownExpectFinished => Some(&[FrameType::ResumeFinished]),
            Self::JoinAwaitRedeem | Self::JoinEstablished | Self::ResumeEstablished => None,
        }
    }

    /// Whether the gateway already asked for admission at this stage.
    pub fn admitted(self) -> bool {
        matches!(self, Self::JoinAwaitRedeem | Self::JoinExpectClientFinished | Self::JoinEstablished)
    }

    /// Drives an honest exchange of `flow` to this stage (every request answered
    /// honestly, except the redemption of [`ServerStage::JoinAwaitRedeem`], held).
    pub fn build(self, flow: Flow) -> Script {
        let mut s = Script::new(flow);
        match self {
            Self::ExpectHello => {}
            Self::JoinExpectClientAuth
            | Self::UnnamedExpectClientAuth
            | Self::ResumeExpectFinished
            | Self::ResumeUnknownExpectFinished => s.hop_to_server(),
            Self::JoinAwaitRedeem => {
                s.hop_to_server();
                s.hop_to_client();
                s.pair.storage = Box::new(|request| match request {
                    StorageRequest::Redeem(_) => StorageAction::Hold,
                    _ => StorageAction::Answer,
                });
                s.hop_to_server();
                s.pair.storage = Box::new(|_| StorageAction::Answer);
                assert!(matches!(s.pair.held_storage, Some(StorageRequest::Redeem(_))), "no redemption held");
            }
            Self::JoinExpectClientFinished => {
                s.hop_to_server();
                s.hop_to_client();
                s.hop_to_server();
            }
            Self::JoinEstablished | Self::ResumeEstablished => s.run_honest(),
        }
        s
    }
}

/// Which storage request of the fuzzed phase a [`StoragePlan`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The first one.
    First,
    /// The first write (`Redeem`, `ConfirmKeyring`, `FenceKeyring`, `RotateKeyring` or
    /// `RecordClone`).
    FirstWrite,
}

/// What happens to the targeted storage request (the redemption already pending at
/// [`ServerStage::JoinAwaitRedeem`] is the target there). Every other request is
/// answered from the store at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoragePlan {
    /// Answered from the store at once, like the others.
    Answer,
    /// Answered [`StorageAnswer::Failed`] at once.
    Fail(Target),
    /// Held while the bytes arrive; then answered with every answer that does not
    /// match it (misuse: nothing may change), then from the store.
    HoldMisuseRelease(Target),
    /// Held while the bytes arrive, then answered [`StorageAnswer::Failed`].
    HoldFail(Target),
}

impl StoragePlan {
    /// The plans, indexed by `(quotient / 4) % 7` of the first byte.
    pub const ALL: [StoragePlan; 7] = [
        Self::Answer,
        Self::Fail(Target::First),
        Self::HoldMisuseRelease(Target::First),
        Self::HoldFail(Target::First),
        Self::Fail(Target::FirstWrite),
        Self::HoldMisuseRelease(Target::FirstWrite),
        Self::HoldFail(Target::FirstWrite),
    ];

    fn target(self) -> Option<Target> {
        match self {
            Self::Answer => None,
            Self::Fail(t) | Self::HoldMisuseRelease(t) | Self::HoldFail(t) => Some(t),
        }
    }

    /// Whether the targeted request is answered `Failed`.
    pub fn fails(self) -> bool {
        matches!(self, Self::Fail(_) | Self::HoldFail(_))
    }
}

/// How the admission request is answered, by `quotient % 4` of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionPlan {
    /// Admit with the world's ticket (empty), as the honest recordings do.
    Admit,
    /// Refuse: the client (`AdmissionRefused`) or, when the byte read after the
    /// fragmentation byte is odd, its evidence (`AttestationRefused`).
    Refuse,
    /// Admit with a ticket of `u16 % (MAX_TICKET + 2)` bytes (a u16 read after the
    /// fragmentation byte): within the limit, or one past it.
    Ticket,
    /// Admit with a ticket of `MAX_TICKET + 1 + byte` bytes (a byte read after the
    /// fragmentation byte): always too long.
    TooLong,
}

/// How the gateway's requests are answered once its stage is reached: the quotient of
/// the target's first byte by 9 (0, what the committed stage seeds use, answers
/// everything honestly). At a resume stage, which asks for no admission, the admission
/// digit picks the stage's flow instead ([`ServerStage::flow_for`]) and admission stays
/// honest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAnswers {
    /// The admission answer.
    pub admission: AdmissionPlan,
    /// The storage plan.
    pub storage: StoragePlan,
}

impl ServerAnswers {
    /// Honest answers.
    pub const HONEST: Self = Self { admission: AdmissionPlan::Admit, storage: StoragePlan::Answer };

    /// The answers a first-byte quotient picks.
    pub fn from_quotient(v: u8) -> Self {
        let admission = [AdmissionPlan::Admit, AdmissionPlan::Refuse, AdmissionPlan::Ticket, AdmissionPlan::TooLong]
            [usize::from(v % 4)];
        Self { admission, storage: StoragePlan::ALL[usize::from(v / 4) % StoragePlan::ALL.len()] }
    }

    /// The target's first byte for `stage` with these answers.
    pub fn stage_byte(self, stage: ServerStage) -> u8 {
        let admission = match self.admission {
            AdmissionPlan::Admit => 0,
            AdmissionPlan::Refuse => 1,
            AdmissionPlan::Ticket => 2,
            AdmissionPlan::TooLong => 3,
        };
        Self::byte(stage, admission, self.storage)
    }

    /// The target's first byte for a resume stage run in `flow` (one of
    /// [`Flow::RESUMES`], or [`Flow::ResumeForeign`] awaiting a decoy's finished) with
    /// `storage`.
    pub fn resume_stage_byte(stage: ServerStage, flow: Flow, storage: StoragePlan) -> u8 {
        let digit = match flow {
            Flow::ResumeForeign => 1,
            Flow::ResumeUnsettled => 2,
            _ => flow.resume_digit(),
        };
        Self::byte(stage, digit, storage)
    }

    fn byte(stage: ServerStage, digit: usize, storage: StoragePlan) -> u8 {
        let index = ServerStage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
        let storage = StoragePlan::ALL.iter().position(|p| *p == storage).unwrap_or(0);
        u8::try_from(index + 9 * (digit + 4 * storage)).unwrap_or(0)
    }
}

/// The ticket of `len` bytes the target admits with.
pub fn ticket(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The target. Input: stage byte (see [`ServerAnswers`]), fragmentation byte, the
/// ticket length when the admission plan reads one, then the client's bytes.
pub fn server_states(data: &[u8]) {
    let mut input = Input::new(data);
    let first = input.byte();
    let stage = ServerStage::ALL[usize::from(first) % ServerStage::ALL.len()];
    let mut answers = ServerAnswers::from_quotient(first / 9);
    let flow = stage.flow_for(usize::from(first / 9 % 4));
    if flow.is_resume() {
        // The digit picked the flow; a resume asks for no admission.
        answers.admission = AdmissionPlan::Admit;
    }
    let chunk = input.byte();
    let mut script = stage.build(flow);
    let admission = match answers.admission {
        AdmissionPlan::Admit => Admission::with_ticket(script.world.ticket.clone()),
        AdmissionPlan::Refuse if input.byte() & 1 == 1 => Admission::RefuseAttestation,
        AdmissionPlan::Refuse => Admission::Refuse,
        AdmissionPlan::Ticket => Admission::with_ticket(ticket(usize::from(input.u16()) % (MAX_TICKET + 2))),
        AdmissionPlan::TooLong => Admission::with_ticket(ticket(MAX_TICKET + 1 + usize::from(input.byte()))),
    };
    let stream = input.rest();

    // The answers from here on.
    let admissions: Arc<Mutex<Vec<AdmissionRequest>>> = Arc::default();
    let (log, answer) = (admissions.clone(), admission.clone());
    script.pair.admission = Box::new(move |request| {
        log.lock().unwrap_or_else(|e| e.into_inner()).push(request.clone());
        answer.clone()
    });
    let plan = answers.storage;
    // The redemption held at `JoinAwaitRedeem` is the plan's target there.
    let mut armed = stage != ServerStage::JoinAwaitRedeem;
    script.pair.storage = Box::new(move |request| {
        let hit = match plan.target() {
            Some(Target::First) => armed,
            Some(Target::FirstWrite) => armed && request.writes(),
            None => false,
        };
        if !hit {
            return StorageAction::Answer;
        }
        armed = false;
        match plan {
            StoragePlan::Fail(_) => StorageAction::Fail,
            _ => StorageAction::Hold,
        }
    });

    let established_before = script.pair.server.is_established();
    let prefix = script.server_got.clone();
    let sent_before = script.pair.sent(Dir::ToClient).len();
    let requests_before = script.pair.requests.len();
    let store_before = script.world.store.snapshot();

    let mut first_error = None;
    let mut held_at = script.pair.held_storage.as_ref().map(|_| script.pair.requests.len());
    for piece in chunks(stream, chunk) {
        let result = script.pair.server.handle_input(script.world.now, piece);
        match (&first_error, result) {
            (None, Err(e)) => first_error = Some(e),
            (Some(e), result) => assert_eq!(result, Err(e.clone()), "the gateway's error did not stick"),
            (None, Ok(())) => {}
        }
        script.pair.flush();
        match held_at {
            Some(n) => assert_eq!(script.pair.requests.len(), n, "a second storage request while one is pending"),
            None => held_at = script.pair.held_storage.as_ref().map(|_| script.pair.requests.len()),
        }
    }
    if let Some(e) = &first_error {
        assert_eq!(script.pair.server.failure(), Some(e));
        assert!(!script.pair.server.is_established());
    }

    // The held request, answered late.
    if let Some(request) = script.pair.held_storage.clone() {
        if plan.fails() {
            script.pair.held_storage = None;
            let result = script.pair.server.handle_storage(StorageAnswer::Failed);
            let expected = first_error.clone().unwrap_or(Error::Local(LocalFailure::Storage));
            assert_eq!(result, Err(expected), "a failed store did not fail the gateway");
            script.pair.flush();
        } else {
            if matches!(plan, StoragePlan::HoldMisuseRelease(_)) {
                assert!(!mismatched(&request).is_empty());
                probe_server_misuse(&mut script.pair);
            }
            script.pair.release_storage();
        }
    }
    let failure = script.pair.server.failure().cloned();
    let sent: Vec<Vec<u8>> = script.pair.sent(Dir::ToClient)[sent_before..].to_vec();
    check_failure("gateway", failure.as_ref(), script.pair.outcome().server_error(), &sent);
    if let Some(expected) = stage.expected() {
        check_first_frame("gateway", stream, expected, failure.as_ref(), &sent);
    }
    probe_server_misuse(&mut script.pair);

    let requests: Vec<StorageRequest> = script.pair.requests[requests_before..].to_vec();
    let admissions = admissions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The request the storage plan hit: the held redemption at `JoinAwaitRedeem`, else
    // the first (write) request of this phase.
    let targeted = match (stage, plan.target()) {
        (_, None) => None,
        (ServerStage::JoinAwaitRedeem, Some(_)) => script.pair.requests.get(requests_before.wrapping_sub(1)),
        (_, Some(Target::First)) => requests.first(),
        (_, Some(Target::FirstWrite)) => requests.iter().find(|r| r.writes()),
    };
    let storage_failed = plan.fails() && targeted.is_some();
    if storage_failed && !established_before {
        assert!(
            failure == Some(Error::Local(LocalFailure::Storage)) || first_error.is_some(),
            "a failed storage request did not fail the gateway: {failure:?}"
        );
    }

    // Everything the gateway consumed, from its first byte.
    let mut got = prefix;
    got.extend_from_slice(stream);
    let join = recording(Flow::Join);
    let seed = recording(Flow::UnnamedToken);
    let genuine_join = [&join.client_sent[..], &seed.client_sent[..]];
    let starts = |frames: &[Vec<u8>]| got.starts_with(&concat(frames));

    // Admission: only after the genuine hello and proof, for exactly what they proved.
    for request in &admissions {
        assert!(genuine_join.iter().any(|frames| starts(&frames[..2])), "asked to admit without the genuine proof");
        assert_eq!(request.client_id.as_str(), CLIENT_ID);
        assert_eq!(request.token_id, script.token.id());
        assert!(request.evidence.is_empty());
        // The binding the gateway computed is the one the honest agent attested.
        let honest = if starts(&join.client_sent[..2]) { join } else { seed };
        assert_eq!(Some(&request.binding), honest.bindings.first(), "the gateway computed another binding");
        assert_eq!(Some(&request.labels), store_before.tokens.get(&script.token.id()).map(|t| &t.labels));
    }
    assert!(admissions.len() <= 1, "asked to admit {} times", admissions.len());
    let redeems = requests.iter().filter(|r| matches!(r, StorageRequest::Redeem(_))).count();
    let ticket_sent = match (&admissions[..], &admission) {
        ([], _) => script.world.ticket.clone(),
        ([_], Admission::Refuse) => {
            assert_eq!(failure, Some(Error::Refused(Refusal::Admission)), "a refused client was not refused");
            Vec::new()
        }
        ([_], Admission::RefuseAttestation) => {
            assert_eq!(failure, Some(Error::Refused(Refusal::Attestation)), "refused evidence was not refused");
            Vec::new()
        }
        ([_], Admission::Admit { ticket, .. }) if ticket.len() > MAX_TICKET => {
            let e = Error::Local(LocalFailure::TicketTooLong { len: ticket.len() });
            assert_eq!(failure, Some(e), "an over-long ticket did not fail the join");
            Vec::new()
        }
        ([_], Admission::Admit { ticket, .. }) => {
            assert_eq!(redeems, 1, "an admitted client was not redeemed");
            ticket.clone()
        }
        _ => unreachable!(),
    };
    let admission_failed = match (&admissions[..], &admission) {
        ([_], Admission::Refuse | Admission::RefuseAttestation) => true,
        ([_], Admission::Admit { ticket, .. }) => ticket.len() > MAX_TICKET,
        _ => false,
    };
    if admission_failed {
        assert_eq!(redeems, 0, "redeemed after the admission failed");
        assert_eq!(script.world.store.snapshot(), store_before, "a refused admission changed the store");
    }
    for frame in &sent {
        if let HandshakeMessage::ServerFinished(m) = check_emitted(frame) {
            assert_eq!(m.ticket, ticket_sent, "the gateway sent another ticket than the admitted one");
        }
    }

    for request in &requests {
        match request {
            StorageRequest::Redeem(r) => {
                assert!(
                    genuine_join.iter().any(|frames| starts(&frames[..2])),
                    "redeemed without the genuine hello and proof"
                );
                assert!(stage.admitted() || admissions.len() == 1, "redeemed without admission");
                assert_eq!(r.client_id.as_str(), CLIENT_ID);
                assert_eq!(r.token_id, script.token.id());
            }
            StorageRequest::LookupKeyring { .. } => {
                // The share is checked before the lookup: a non-contributory one never gets here.
                let frame = peek_handshake_frame(stream).ok().flatten();
                if let Some(HandshakeMessage::ResumeHello(hello)) =
                    frame.and_then(|f| HandshakeMessage::decode(f.frame_type, f.body).ok())
                {
                    assert!(!low_order(&hello.ephemeral), "looked up a keyring for a non-contributory share");
                }
            }
            _ => {}
        }
    }
    if stage == ServerStage::ExpectHello
        && let Some(Ok(HandshakeMessage::ResumeHello(hello))) =
            peek_handshake_frame(stream).ok().flatten().map(|f| HandshakeMessage::decode(f.frame_type, f.body))
        && low_order(&hello.ephemeral)
    {
        assert!(
            matches!(
                failure,
                Some(
                    Error::PeerIncompatible(_)
                        | Error::Refused(Refusal::InvalidClientId)
                        | Error::PeerMisbehaved(PeerMisbehaved::NonContributoryShare)
                )
            ),
            "a non-contributory resume share was not refused: {failure:?}"
        );
    }

    let resume = recording(flow);
    // Whether the gateway got the flow's genuine exchange, whole.
    let complete = match flow {
        Flow::Join | Flow::UnnamedToken => genuine_join.iter().any(|frames| starts(&frames[..3])),
        _ => flow.is_genuine_resume() && starts(&resume.client_sent[..2]),
    };
    let established = script.pair.server.is_established();
    if let Some(peer) = script.pair.peer.as_ref().filter(|_| !established_before) {
        assert!(complete, "verified a client without the genuine exchange: {peer:?}");
        assert_ne!(flow, Flow::ResumeClone, "completed a resume with a retired keyring: {peer:?}");
        assert_eq!(peer.client_id().as_str(), CLIENT_ID);
        assert_eq!(peer.token_id(), script.token.id());
        assert_eq!(peer.resumed(), flow.is_resume());
        assert_eq!(peer.rotated(), flow.rotates(), "the gateway misreports the rotation");
    }

    // Liveness: the genuine exchange always completes, however it is fragmented, when
    // every answer is the honest one (a held answer given late, after misuse, is); a
    // clone's is refused once the clone is recorded.
    let honest_admission = admissions.is_empty() || admission == Admission::admit();
    if complete && !established_before && !storage_failed {
        if flow == Flow::ResumeClone {
            assert_eq!(failure, Some(Error::Refused(Refusal::RetiredKeyring)), "a clone's resume was not refused");
        } else if honest_admission {
            assert!(established, "the genuine exchange did not complete: {failure:?}");
        } else if ticket_sent.len() <= MAX_TICKET && !ticket_sent.is_empty() {
            // The agent's recorded confirmation covers the empty ticket, not this one.
            assert_eq!(failure, Some(Error::PeerMisbehaved(PeerMisbehaved::BadClientProof)));
        }
    }

    // The store: one token use at most, one client id at most, confirmed only by a
    // completed exchange.
    let snapshot = script.world.store.snapshot();
    let token = &snapshot.tokens[&script.token.id()];
    assert!(token.use_count <= 1, "a one-use token was charged {} times", token.use_count);
    assert!(snapshot.keyrings.len() <= 1);
    let id = ClientId::new(CLIENT_ID).unwrap_or_else(|e| panic!("{e}"));
    if let Some(record) = snapshot.keyrings.get(&id) {
        assert_eq!(token.use_count, 1);
        if record.confirmed {
            let joining = !flow.is_resume();
            assert!(!joining || established || established_before, "confirmed without a join");
        }
    }
    // Rotation and clone records: only a completed rotating resume changes the current
    // keyring (to the one its agent stored, retiring the old one), and a clone is
    // recorded exactly when a clone's resume is refused for it.
    let before = store_before.keyrings.get(&id);
    let after = snapshot.keyrings.get(&id);
    let current = |r: Option<&boarding::storage::KeyringRecord>| r.map(|r| r.keyring.clone());
    let newly_established = established && !established_before;
    if current(after) != current(before) && before.is_some_and(|b| b.confirmed) {
        assert!(newly_established && flow.rotates(), "the keyring changed without a rotation");
        let stored: Option<Keyring> = resume.saved.as_ref().map(|s| s.keyring.clone());
        assert_eq!(current(after), stored, "the gateway rotated to another keyring than its agent stored");
        let retired = after.and_then(|r| r.retired.last()).cloned();
        assert_eq!(retired, current(before), "the rotated-from keyring was not retired");
        assert!(after.is_some_and(|r| !r.rotation_requested), "the rotation request outlived the rotation");
    } else if flow.rotates() && newly_established {
        panic!("a rotating resume completed without rotating the stored keyring");
    }
    let suspicion = |r: Option<&boarding::storage::KeyringRecord>| r.and_then(|r| r.clone_suspected.clone());
    let refused_clone = failure == Some(Error::Refused(Refusal::RetiredKeyring));
    if refused_clone {
        assert!(flow == Flow::ResumeClone && complete, "refused a keyring as retired without a clone's resume");
        let (was, now) = (suspicion(before), suspicion(after));
        let thief = resume.resumed_from.as_ref().map(|s| s.keyring.id());
        assert_eq!(now.as_ref().map(|c| c.count), Some(was.map_or(0, |c| c.count) + 1), "the clone was not recorded");
        assert_eq!(now.map(|c| c.keyring_id), thief, "the clone recorded another keyring than it proved");
    } else {
        assert_eq!(suspicion(after), suspicion(before), "a clone was recorded without refusing one");
    }

    if established_before {
        assert!(sent.is_empty() && requests.is_empty() && admissions.is_empty());
        if failure.is_some() {
            // Only an overflowing receive buffer fails a completed handshake.
            return;
        }
        let (mut client, mut server) = script.pair.into_sessions().unwrap_or_else(|e| panic!("no sessions: {e}"));
        assert_eq!(server.buffered, stream, "bytes after the handshake were not kept for the channel");
        let mut buf = [0u8; 64];
        let n = client.channel.seal(b"ping", &mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(server.channel.open(&buf[..n]), Ok(Received::Data(&b"ping"[..])));
    }
}

/// Whether an X25519 share is one of the two low-order points anyone would try first
/// (zero, and the point of order one): the core must refuse both.
fn low_order(share: &[u8; 32]) -> bool {
    share[1..].iter().all(|&b| b == 0) && share[0] <= 1
}
