//! The gateway's state machine: one [`Server`] per connection.
//!
//! Drive it as [`crate::handshake`] describes: feed the client's bytes to
//! [`Server::handle_input`] with the current time, drain [`Server::poll_output`] until
//! it returns `None`, carry out each [`ServerRequest`] and answer it
//! ([`Server::handle_storage`] for storage, [`Server::handle_admission`] for the
//! application's admission decision, [`Server::handle_ticket`] for its answer to a
//! resume's request). When [`Output::Established`] appears,
//! [`Server::into_session`] yields the channel and the client's [`VerifiedClient`]
//! identity.
//!
//! ```text
//! join:   ExpectHello -ClientHello-> AwaitTokens -tokens-> ExpectClientAuth
//!           -ClientAuth-> AwaitAdmission -admitted-> AwaitRedeem -redeemed-> ExpectClientFinished
//!           -ClientFinished-> AwaitConfirm -confirmed-> Established
//! resume: ExpectHello -ResumeHello-> AwaitKeyring -keyring-> ExpectResumeFinished
//!           -ResumeFinished-> [AwaitTicket, if it carried a request]
//!           -> [AwaitRotation, if it rotates | AwaitConfirm, if unconfirmed] -> Established
//!         (a retired keyring: -ResumeFinished-> AwaitCloneRecord -recorded-> failed, RetiredKeyring)
//! any error -> failed (its alert, then Output::Failed; the error is returned on every later call)
//! ```
//!
//! The application decides admission *before* redemption, so a refused client
//! charges nothing: it judges the client's attestation evidence against the session's
//! [`AttestationBinding`] and its own policy, and its answer carries the join ticket for
//! this client and the identity it attested. Stores hold only records.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::UnixTime;
use crate::attestation::{AttestationBinding, AttestedIdentity};
use crate::channel::{Channel, Side};
use crate::error::{Error, LocalFailure, PeerIncompatible, PeerMisbehaved, Refusal};
use crate::handshake::{HandshakeState, Machine, Outbox, Output};
use crate::identity::{ClientId, ServerIdentity};
use crate::inbound::Frame;
use crate::jws::{challenge_header, check_hs256_detached, eddsa_detached};
use crate::keys::KeyringId;
use crate::keys::{
    EphemeralSecret, JoinSecrets, Keyring, ResumeSecrets, SessionKeys, SymmetricKey, finished_mac, join_secrets,
    resume_secrets, verify_finished,
};
use crate::messages::{
    ClientAuth, ClientFinished, ClientHello, FrameType, HandshakeMessage, MAX_CHALLENGES, MAX_TICKET, Message,
    NONCE_LEN, ResumeChallenge, ResumeFinished, ResumeHello, ResumeTicket, ServerChallenge, ServerFinished,
};
use crate::pin::Pin;
use crate::storage::{
    ConfirmRefusal, KeyringRecord, KeyringStanding, MAX_RETIRED_KEYRINGS, RedeemRefusal, RedeemRequest, Redemption,
    RotateRequest, RotationPolicy, StorageAnswer, StorageRequest,
};
use crate::suite::{MacSuite, SUPPORTED_VERSIONS, choose};
use crate::token::{TokenId, TokenRecord};
use crate::transcript::{ChannelBinding, Transcript};

/// A gateway's settings, shared by all its connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    identity: ServerIdentity,
    pin: Pin,
    suites: Vec<MacSuite>,
    max_unnamed_challenges: usize,
    rotation: RotationPolicy,
}

impl ServerConfig {
    /// Defaults: every suite (BLAKE3 preferred), up to 16 challenges in the
    /// unnamed-token flow, keyrings rotated only when the operator asks
    /// ([`KeyringRecord::rotation_requested`]).
    pub fn new(identity: ServerIdentity) -> Self {
        let pin = identity.pin();
        Self {
            identity,
            pin,
            suites: MacSuite::ALL.to_vec(),
            max_unnamed_challenges: MAX_CHALLENGES,
            rotation: RotationPolicy::default(),
        }
    }

    /// When a resume rotates the client's keyring (`spec/PROTOCOL.md` §8.5): besides an
    /// operator's request, once the keyring is `policy.max_age` seconds old.
    pub fn with_rotation(mut self, policy: RotationPolicy) -> Self {
        self.rotation = policy;
        self
    }

    /// The rotation policy.
    pub fn rotation(&self) -> RotationPolicy {
        self.rotation
    }

    /// The MAC suites to accept, most preferred first (an empty list accepts none).
    pub fn with_suites(mut self, suites: &[MacSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }

    /// The most tokens to answer for in the unnamed-token flow (clamped to 1..=16): the
    /// first unexpired ones in token-id order. Each one answered gives an eavesdropper
    /// one more token to attack offline, so keep it low.
    pub fn with_max_unnamed_challenges(mut self, n: usize) -> Self {
        self.max_unnamed_challenges = n.clamp(1, MAX_CHALLENGES);
        self
    }

    /// The gateway's identity.
    pub fn identity(&self) -> &ServerIdentity {
        &self.identity
    }

    /// The gateway's pin.
    pub fn pin(&self) -> Pin {
        self.pin
    }
}

/// What the gateway asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRequest {
    /// Carry out this storage request and answer with [`Server::handle_storage`].
    Storage(StorageRequest),
    /// Ask the application whether to admit this client (judging its attestation
    /// evidence, if it requires any), and answer with [`Server::handle_admission`].
    /// Comes before redemption: a refusal charges nothing.
    Admit(AdmissionRequest),
    /// A resume carried an application request: ask the application for its answer
    /// (a renewed certificate, say) and answer with [`Server::handle_ticket`]. Comes only
    /// after the client proved its keyring.
    Ticket(TicketRequest),
}

/// A resumed client's application request, once its keyring is proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRequest {
    /// Who asks: the client the resume verified.
    pub client: VerifiedClient,
    /// The request (opaque to the protocol; never empty).
    pub request: Vec<u8>,
}

/// What the application decides admission on: everything the handshake has verified
/// so far. The client has proven it holds the token; nothing is stored yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionRequest {
    /// The client id the agent asked for.
    pub client_id: ClientId,
    /// The token it proved it holds.
    pub token_id: TokenId,
    /// That token's labels, as looked up for this handshake.
    pub labels: BTreeMap<String, String>,
    /// Attestation evidence the agent sent (opaque; empty if none).
    pub evidence: Vec<u8>,
    /// The application request the agent sent (opaque; empty if none), answered in the
    /// ticket.
    pub request: Vec<u8>,
    /// The session's attestation binding, computed from the gateway's own transcript:
    /// evidence made for this session commits to it, evidence from any other session
    /// names another one (`spec/PROTOCOL.md` §7.3).
    pub binding: AttestationBinding,
}

/// The application's answer to [`ServerRequest::Admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admit the client and send it this ticket in `ServerFinished` (at most 4 KiB;
    /// longer fails the handshake with [`LocalFailure::TicketTooLong`]).
    Admit {
        /// The join ticket for this client (may be empty).
        ticket: Vec<u8>,
        /// Who the evidence showed the client to be, if the application judged any:
        /// the verified client carries it ([`VerifiedClient::attested`]).
        attested: Option<AttestedIdentity>,
    },
    /// Refuse the client: it is told `AdmissionRefused`, and nothing is charged.
    Refuse,
    /// Refuse the client's attestation evidence (not bound to this session's binding,
    /// not from a trusted authority, expired, or missing where it is required): it is
    /// told `AttestationRefused`, and nothing is charged.
    RefuseAttestation,
}

impl Admission {
    /// Admit with no ticket and no attested identity.
    pub fn admit() -> Self {
        Self::Admit { ticket: Vec::new(), attested: None }
    }

    /// Admit with this ticket and no attested identity.
    pub fn with_ticket(ticket: Vec<u8>) -> Self {
        Self::Admit { ticket, attested: None }
    }
}

/// What the gateway state machine wants done next.
pub type ServerOutput = Output<ServerRequest, VerifiedClient>;

/// A client identity that only a successful handshake can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    client_id: ClientId,
    token_id: TokenId,
    labels: BTreeMap<String, String>,
    attested: Option<AttestedIdentity>,
    resumed: bool,
    rotated: bool,
}

impl VerifiedClient {
    /// The client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }
    /// The token the client joined with (for audit).
    pub fn token_id(&self) -> TokenId {
        self.token_id
    }
    /// The labels of that token at join time.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    /// Who the gateway's application attested the client to be, from its evidence at
    /// the join (`None` if it attested nothing). A resume carries the identity attested
    /// at the join that created its keyring, kept in the keyring record like the labels:
    /// the resume proves that keyring, which only that attested join obtained.
    pub fn attested(&self) -> Option<&AttestedIdentity> {
        self.attested.as_ref()
    }
    /// Whether this session came from a resume rather than a join.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
    /// Whether this resume rotated the client's keyring (the store now holds the new
    /// one, and the old one is retired).
    pub fn rotated(&self) -> bool {
        self.rotated
    }
}

/// The established session, handed over by [`Server::into_session`].
#[derive(Debug)]
pub struct ServerSession {
    /// The channel.
    pub channel: Channel,
    /// Who the client is.
    pub peer: VerifiedClient,
    /// Bytes received after the handshake (pipelined channel frames), to open first.
    pub buffered: Vec<u8>,
}

#[derive(Debug)]
struct Negotiated {
    version: u16,
    suite: MacSuite,
}

#[derive(Debug)]
struct AwaitTokens {
    transcript: Transcript,
    hello: ClientHello,
    negotiated: Negotiated,
}

#[derive(Debug)]
struct ExpectClientAuth {
    transcript: Transcript,
    named_token: Option<TokenId>,
    tokens: Vec<TokenRecord>,
    negotiated: Negotiated,
}

#[derive(Debug)]
struct AwaitAdmission {
    transcript: Transcript,
    secrets: JoinSecrets,
    peer: VerifiedClient,
    suite: MacSuite,
}

#[derive(Debug)]
struct AwaitRedeem {
    transcript: Transcript,
    secrets: JoinSecrets,
    peer: VerifiedClient,
    suite: MacSuite,
    ticket: Vec<u8>,
}

#[derive(Debug)]
struct ExpectClientFinished {
    transcript: Transcript,
    secrets: JoinSecrets,
    peer: VerifiedClient,
    suite: MacSuite,
}

#[derive(Debug)]
struct AwaitKeyring {
    transcript: Transcript,
    client_id: ClientId,
    offered: Vec<KeyringId>,
    negotiated: Negotiated,
    dh: zeroize::Zeroizing<[u8; 32]>,
}

/// The keyring a resume runs with, if the client offered one the record holds.
#[derive(Debug)]
struct Selected {
    record: KeyringRecord,
    keyring: Keyring,
    id: KeyringId,
    standing: KeyringStanding,
    rotate: bool,
}

#[derive(Debug)]
struct ExpectResumeFinished {
    transcript: Transcript,
    secrets: ResumeSecrets,
    selected: Option<Selected>,
    suite: MacSuite,
}

/// A verified resume waits for the application's answer to its request.
#[derive(Debug)]
struct AwaitTicket {
    transcript: Transcript,
    secrets: ResumeSecrets,
    peer: VerifiedClient,
    selected: Selected,
    suite: MacSuite,
}

/// A resume selected the second keyring it offered; the record is being fenced.
#[derive(Debug)]
struct AwaitFence {
    hello: AwaitKeyring,
    selected: Selected,
}

/// A resume proved a retired keyring; the clone suspicion is being recorded.
#[derive(Debug)]
struct AwaitCloneRecord;

/// A verified rotating resume waits for its rotation to be committed.
#[derive(Debug)]
struct AwaitRotation {
    session: SessionKeys,
    peer: VerifiedClient,
    suite: MacSuite,
}

#[derive(Debug)]
struct AwaitConfirm {
    /// Whether the request was a [`StorageRequest::CheckKeyring`] (answered with
    /// `Checked`) rather than a `ConfirmKeyring` (answered with `Confirmed`).
    checking: bool,
    session: SessionKeys,
    peer: VerifiedClient,
    suite: MacSuite,
}

#[derive(Debug)]
struct Established {
    session: SessionKeys,
    peer: VerifiedClient,
    suite: MacSuite,
}

#[derive(Debug)]
enum State {
    ExpectHello,
    AwaitTokens(AwaitTokens),
    ExpectClientAuth(ExpectClientAuth),
    AwaitAdmission(AwaitAdmission),
    AwaitRedeem(AwaitRedeem),
    ExpectClientFinished(ExpectClientFinished),
    AwaitKeyring(AwaitKeyring),
    AwaitFence(AwaitFence),
    ExpectResumeFinished(ExpectResumeFinished),
    AwaitTicket(AwaitTicket),
    AwaitCloneRecord(AwaitCloneRecord),
    AwaitRotation(AwaitRotation),
    AwaitConfirm(AwaitConfirm),
    Established(Established),
}

impl HandshakeState for State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectHello => "ExpectHello",
            Self::AwaitTokens(_) => "AwaitTokens",
            Self::ExpectClientAuth(_) => "ExpectClientAuth",
            Self::AwaitAdmission(_) => "AwaitAdmission",
            Self::AwaitRedeem(_) => "AwaitRedeem",
            Self::ExpectClientFinished(_) => "ExpectClientFinished",
            Self::AwaitKeyring(_) => "AwaitKeyring",
            Self::AwaitFence(_) => "AwaitFence",
            Self::ExpectResumeFinished(_) => "ExpectResumeFinished",
            Self::AwaitTicket(_) => "AwaitTicket",
            Self::AwaitCloneRecord(_) => "AwaitCloneRecord",
            Self::AwaitRotation(_) => "AwaitRotation",
            Self::AwaitConfirm(_) => "AwaitConfirm",
            Self::Established(_) => "Established",
        }
    }

    fn expected(&self) -> Option<&'static [FrameType]> {
        match self {
            Self::ExpectHello => Some(&[FrameType::ClientHello, FrameType::ResumeHello]),
            Self::ExpectClientAuth(_) => Some(&[FrameType::ClientAuth]),
            Self::ExpectClientFinished(_) => Some(&[FrameType::ClientFinished]),
            Self::ExpectResumeFinished(_) => Some(&[FrameType::ResumeFinished]),
            Self::AwaitTokens(_)
            | Self::AwaitAdmission(_)
            | Self::AwaitRedeem(_)
            | Self::AwaitKeyring(_)
            | Self::AwaitFence(_)
            | Self::AwaitTicket(_)
            | Self::AwaitCloneRecord(_)
            | Self::AwaitRotation(_)
            | Self::AwaitConfirm(_)
            | Self::Established(_) => None,
        }
    }
}

impl State {
    /// Whether this state waits for `answer`. [`StorageAnswer::Failed`] answers any
    /// pending storage request.
    fn awaits(&self, answer: &StorageAnswer) -> bool {
        matches!(
            (self, answer),
            (Self::AwaitTokens(_), StorageAnswer::Tokens(_))
                | (Self::AwaitRedeem(_), StorageAnswer::Redeemed(_))
                | (Self::AwaitKeyring(_), StorageAnswer::Keyring(_))
                | (Self::AwaitConfirm(AwaitConfirm { checking: false, .. }), StorageAnswer::Confirmed(_))
                | (Self::AwaitConfirm(AwaitConfirm { checking: true, .. }), StorageAnswer::Checked(_))
                | (Self::AwaitRotation(_), StorageAnswer::Rotated(_))
                | (Self::AwaitFence(_), StorageAnswer::Fenced(_))
                | (Self::AwaitCloneRecord(_), StorageAnswer::CloneRecorded(_))
                | (
                    Self::AwaitTokens(_)
                        | Self::AwaitRedeem(_)
                        | Self::AwaitKeyring(_)
                        | Self::AwaitFence(_)
                        | Self::AwaitConfirm(_)
                        | Self::AwaitRotation(_)
                        | Self::AwaitCloneRecord(_),
                    StorageAnswer::Failed
                )
        )
    }
}

type ServerOutbox = Outbox<ServerRequest, VerifiedClient>;

/// What every step of one connection's handshake reads besides its state.
#[derive(Debug)]
struct Context {
    config: Arc<ServerConfig>,
    now: UnixTime,
    nonce: [u8; NONCE_LEN],
    ephemeral: EphemeralSecret,
    decoy: Keyring,
    /// Records a failed resume held, dropped with the [`Server`] rather than on the
    /// failure path: freeing a record (its size depends on its labels) before the alert
    /// is out would time a known client apart from a decoy.
    held: Option<KeyringRecord>,
    /// The TLS session this handshake is bound to, if it runs inside one (§6.1).
    binding: Option<ChannelBinding>,
}

/// One connection's gateway-side handshake.
#[derive(Debug)]
pub struct Server {
    machine: Machine<State, ServerRequest, VerifiedClient>,
    context: Context,
}

impl Server {
    /// A new connection. All the randomness it will need (nonce, ephemeral key, and
    /// the decoy keyring for unknown resumes) is drawn here.
    pub fn new<R: rand_core::CryptoRng + ?Sized>(config: impl Into<Arc<ServerConfig>>, rng: &mut R) -> Self {
        Self::bound(config, rng, None)
    }

    /// A handshake bound to the TLS session it runs in (`binding`, the session's TLS
    /// exporter value; `spec/PROTOCOL.md` §6.1), or unbound for `None`. The client must be
    /// bound to the same value, or the first proof fails: a relay that terminates TLS on
    /// each side cannot complete a handshake. Draws as [`Server::new`] does.
    pub fn bound<R: rand_core::CryptoRng + ?Sized>(
        config: impl Into<Arc<ServerConfig>>,
        rng: &mut R,
        binding: Option<ChannelBinding>,
    ) -> Self {
        let nonce = crate::random_array(rng);
        let ephemeral = EphemeralSecret::generate(rng);
        let decoy = Keyring {
            c2s: SymmetricKey::from_bytes(crate::random_array(rng)),
            s2c: SymmetricKey::from_bytes(crate::random_array(rng)),
        };
        Self {
            machine: Machine::new(State::ExpectHello, None),
            context: Context { config: config.into(), now: 0, nonce, ephemeral, decoy, held: None, binding },
        }
    }

    /// Feeds bytes from the client (any split: partial frames are buffered), with the
    /// current time.
    ///
    /// # Errors
    ///
    /// The error that ended the handshake, whether these bytes ended it or earlier input
    /// did: the client misbehaved or is incompatible, it sent an alert, or its proof
    /// failed. The same error is queued as [`Output::Failed`], so a driver that drains
    /// [`Server::poll_output`] may ignore this value (see the
    /// [run loop](crate::handshake#the-run-loop)).
    pub fn handle_input(&mut self, now: UnixTime, bytes: &[u8]) -> Result<(), Error> {
        self.context.now = now;
        let context = &mut self.context;
        self.machine
            .handle_input(bytes, |state, frame, message, outbox| context.on_frame(state, frame, message, outbox))
    }

    /// Answers a [`ServerRequest::Storage`] with the store's answer. An answer that does
    /// not match the pending request is [`Error::Misuse`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Misuse`] if `answer` is not the answer to the pending request, or none is
    /// pending (nothing changes). Otherwise the error the handshake failed with, if this
    /// answer or earlier input ended it: [`LocalFailure::Storage`] for
    /// [`StorageAnswer::Failed`], or a [`Refusal`] when the answer shows the token unknown,
    /// expired or used up, the client id taken, or the keyring gone. That error is queued
    /// as [`Output::Failed`] too.
    pub fn handle_storage(&mut self, answer: StorageAnswer) -> Result<(), Error> {
        let context = &mut self.context;
        let name = answer.name();
        // Decided before `answer` moves into the transition; a failed machine returns
        // its error first whatever this says.
        let awaited = matches!(self.machine.state(), Ok(state) if state.awaits(&answer));
        self.machine.answer(
            name,
            |_| awaited,
            |state, outbox| match (state, answer) {
                (_, StorageAnswer::Failed) => Err(LocalFailure::Storage.into()),
                (State::AwaitTokens(s), StorageAnswer::Tokens(records)) => context.on_tokens(s, records, outbox),
                (State::AwaitRedeem(s), StorageAnswer::Redeemed(outcome)) => on_redeemed(s, outcome, outbox),
                (State::AwaitKeyring(s), StorageAnswer::Keyring(record)) => context.on_keyring(s, record, outbox),
                (State::AwaitConfirm(s), StorageAnswer::Confirmed(outcome) | StorageAnswer::Checked(outcome)) => {
                    on_confirmed(s, outcome, outbox)
                }
                (State::AwaitRotation(s), StorageAnswer::Rotated(outcome)) => on_rotated(s, outcome, outbox),
                (State::AwaitFence(s), StorageAnswer::Fenced(generation)) => {
                    Ok(context.on_fenced(s, generation, outbox))
                }
                // Refused either way: as a clone's if the keyring is retired, else (the
                // record is gone, or a rejoin replaced it) as a keyring the gateway no
                // longer holds.
                (State::AwaitCloneRecord(_), StorageAnswer::CloneRecorded(true)) => Err(Refusal::RetiredKeyring.into()),
                (State::AwaitCloneRecord(_), StorageAnswer::CloneRecorded(false)) => Err(Refusal::UnknownClient.into()),
                // Unreachable: `awaits` admitted only the pairs above.
                (state, _) => Ok(state),
            },
        )?;
        self.process()
    }

    /// Answers a [`ServerRequest::Admit`] with the application's decision. Called when
    /// no admission is pending, it is [`Error::Misuse`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Misuse`] if no admission is pending (nothing changes);
    /// [`Refusal::Admission`] for [`Admission::Refuse`]; [`Refusal::Attestation`] for
    /// [`Admission::RefuseAttestation`]; [`LocalFailure::TicketTooLong`]
    /// for a ticket longer than [`MAX_TICKET`]; or the error the handshake had already
    /// failed with.
    pub fn handle_admission(&mut self, admission: Admission) -> Result<(), Error> {
        self.machine.answer(
            "handle_admission",
            |state| matches!(state, State::AwaitAdmission(_)),
            |state, outbox| match (state, admission) {
                (State::AwaitAdmission(_), Admission::Refuse) => Err(Refusal::Admission.into()),
                (State::AwaitAdmission(_), Admission::RefuseAttestation) => Err(Refusal::Attestation.into()),
                (State::AwaitAdmission(_), Admission::Admit { ticket, .. }) if ticket.len() > MAX_TICKET => {
                    Err(LocalFailure::TicketTooLong { len: ticket.len() }.into())
                }
                (State::AwaitAdmission(s), Admission::Admit { ticket, attested }) => {
                    let mut peer = s.peer;
                    peer.attested = attested;
                    outbox.request(ServerRequest::Storage(StorageRequest::Redeem(RedeemRequest {
                        token_id: peer.token_id,
                        client_id: peer.client_id.clone(),
                        keyring: s.secrets.keyring.clone(),
                        now: self.context.now,
                        attested: peer.attested.clone(),
                    })));
                    Ok(State::AwaitRedeem(AwaitRedeem {
                        transcript: s.transcript,
                        secrets: s.secrets,
                        peer,
                        suite: s.suite,
                        ticket,
                    }))
                }
                // Unreachable: `pending` admitted only AwaitAdmission.
                (state, _) => Ok(state),
            },
        )?;
        self.process()
    }

    /// Answers a [`ServerRequest::Ticket`] with the application's answer to the
    /// resume's request (empty to give none), sent in `ResumeTicket`. Called when no
    /// ticket is pending, it is [`Error::Misuse`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Misuse`] if no ticket is pending (nothing changes);
    /// [`LocalFailure::TicketTooLong`] for a ticket longer than [`MAX_TICKET`]; or the
    /// error the handshake had already failed with.
    pub fn handle_ticket(&mut self, ticket: Vec<u8>) -> Result<(), Error> {
        self.machine.answer(
            "handle_ticket",
            |state| matches!(state, State::AwaitTicket(_)),
            |state, outbox| match state {
                State::AwaitTicket(_) if ticket.len() > MAX_TICKET => {
                    Err(LocalFailure::TicketTooLong { len: ticket.len() }.into())
                }
                State::AwaitTicket(s) => Ok(on_ticket(s, ticket, self.context.now, outbox)),
                // Unreachable: `pending` admitted only AwaitTicket.
                state => Ok(state),
            },
        )?;
        self.process()
    }

    fn process(&mut self) -> Result<(), Error> {
        let context = &mut self.context;
        self.machine.process(&mut |state, frame, message, outbox| context.on_frame(state, frame, message, outbox))
    }

    /// The next thing to do, or `None` when there is nothing until more input.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.machine.poll()
    }

    /// Whether the handshake completed.
    pub fn is_established(&self) -> bool {
        matches!(self.machine.state(), Ok(State::Established(_)))
    }

    /// The verified client, once the handshake completed.
    pub fn peer(&self) -> Option<&VerifiedClient> {
        match self.machine.state() {
            Ok(State::Established(e)) => Some(&e.peer),
            _ => None,
        }
    }

    /// The error the handshake failed with, if it did.
    pub fn failure(&self) -> Option<&Error> {
        self.machine.failure()
    }

    /// Turns an established handshake into its session. Before that, it returns the
    /// handshake's error, or [`Error::Misuse`] if it is still in progress.
    ///
    /// # Errors
    ///
    /// The handshake's error if it failed, or [`Error::Misuse`] if it has not completed.
    pub fn into_session(self) -> Result<ServerSession, Error> {
        let (e, buffered) = self.machine.into_established(|state| match state {
            State::Established(e) => Some(e),
            _ => None,
        })?;
        Ok(ServerSession { channel: Channel::new(Side::Server, e.suite, &e.session), peer: e.peer, buffered })
    }
}

impl Context {
    fn on_frame(
        &mut self,
        state: State,
        frame: Frame,
        message: HandshakeMessage,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        match (state, message) {
            (State::ExpectHello, HandshakeMessage::ClientHello(m)) => self.on_client_hello(m, &frame, outbox),
            (State::ExpectHello, HandshakeMessage::ResumeHello(m)) => self.on_resume_hello(m, &frame, outbox),
            (State::ExpectClientAuth(s), HandshakeMessage::ClientAuth(m)) => self.on_client_auth(s, m, &frame, outbox),
            (State::ExpectClientFinished(s), HandshakeMessage::ClientFinished(m)) => on_client_finished(s, m, outbox),
            (State::ExpectResumeFinished(s), HandshakeMessage::ResumeFinished(m)) => {
                self.on_resume_finished(s, m, &frame, outbox)
            }
            // The frame type was checked against the state before decoding.
            (state, _) => Err(PeerMisbehaved::UnexpectedMessage {
                expected: state.expected().unwrap_or(&[]),
                got: frame.frame_type as u8,
            }
            .into()),
        }
    }

    fn negotiate(&self, versions: &[u16], suites: &[u16]) -> Result<Negotiated, PeerIncompatible> {
        let version = choose(SUPPORTED_VERSIONS, versions).ok_or(PeerIncompatible::NoCommonVersion)?;
        let offered: Vec<MacSuite> = suites.iter().filter_map(|&c| MacSuite::from_code(c)).collect();
        let suite = choose(&self.config.suites, &offered).ok_or(PeerIncompatible::NoCommonSuite)?;
        Ok(Negotiated { version, suite })
    }

    fn on_client_hello(
        &mut self,
        hello: ClientHello,
        frame: &Frame,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        // Negotiation comes before any storage work.
        let negotiated = self.negotiate(&hello.versions, &hello.suites)?;
        let mut transcript = Transcript::start(self.binding.as_ref());
        transcript.add_frame(&frame.bytes);
        let request = match hello.token_id {
            Some(token_id) => StorageRequest::LookupToken { token_id },
            None => StorageRequest::UnexpiredTokens { now: self.now, limit: self.config.max_unnamed_challenges },
        };
        outbox.request(ServerRequest::Storage(request));
        Ok(State::AwaitTokens(AwaitTokens { transcript, hello, negotiated }))
    }

    fn on_tokens(
        &mut self,
        s: AwaitTokens,
        records: Vec<TokenRecord>,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        let now = self.now;
        let tokens: Vec<TokenRecord> = match s.hello.token_id {
            Some(id) => {
                let record = records.into_iter().find(|r| r.id() == id).ok_or(Refusal::UnknownToken)?;
                // Exhaustion is decided at redemption, atomically: a used-up token may
                // still be redeemed by the retry of the join that used it.
                if record.is_expired(now) {
                    return Err(Refusal::ExpiredToken.into());
                }
                alloc::vec![record]
            }
            None => {
                let mut usable: Vec<TokenRecord> = Vec::new();
                for r in records.into_iter().filter(|r| !r.is_expired(now)) {
                    if usable.len() < self.config.max_unnamed_challenges && usable.iter().all(|u| u.id() != r.id()) {
                        usable.push(r);
                    }
                }
                if usable.is_empty() {
                    return Err(Refusal::UnknownToken.into());
                }
                usable
            }
        };
        let mut challenge = ServerChallenge {
            version: s.negotiated.version,
            suite: s.negotiated.suite.code(),
            nonce: self.nonce,
            identity_key: self.config.identity.public_key().to_bytes(),
            ephemeral: self.ephemeral.public(),
            challenges: Vec::new(),
        };
        let th = s.transcript.hash_partial(FrameType::ServerChallenge as u8, &challenge.signed_part());
        for record in &tokens {
            let header = challenge_header(record.id(), &th);
            let payload = record.token.to_payload();
            challenge.challenges.push(eddsa_detached(&header, &payload[..], self.config.identity.signing_key()));
        }
        let frame = challenge.to_frame();
        let mut transcript = s.transcript;
        transcript.add_frame(&frame);
        outbox.transmit(frame);
        Ok(State::ExpectClientAuth(ExpectClientAuth {
            transcript,
            named_token: s.hello.token_id,
            tokens,
            negotiated: s.negotiated,
        }))
    }

    fn on_client_auth(
        &mut self,
        s: ExpectClientAuth,
        auth: ClientAuth,
        frame: &Frame,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        if s.named_token.is_some_and(|id| id != auth.token_id) {
            return Err(PeerMisbehaved::TokenMismatch.into());
        }
        let record = s.tokens.iter().find(|r| r.id() == auth.token_id).ok_or(Refusal::UnknownToken)?;
        let client_id = ClientId::from_bytes(&auth.client_id).map_err(|_| Refusal::InvalidClientId)?;
        let th_proof = s.transcript.hash_partial(FrameType::ClientAuth as u8, &auth.signed_part());
        let secret = record.token.secret();
        // Every JWS rejection of §7.6 is a bad proof.
        check_hs256_detached(&auth.proof, &th_proof, record.id().as_str(), secret.expose())
            .map_err(|_| PeerMisbehaved::BadClientProof)?;
        let dh = self.ephemeral.agree(&auth.ephemeral)?;
        // The binding from this side's own transcript: evidence made for another
        // session committed to another value.
        let th_ev = s.transcript.hash_partial(FrameType::ClientAuth as u8, &auth.bound_part());
        let binding = AttestationBinding::derive(&th_ev);
        let mut transcript = s.transcript;
        transcript.add_frame(&frame.bytes);
        let secrets = join_secrets(&dh, secret, &transcript.current(), &client_id, &self.config.pin);
        let peer = VerifiedClient {
            client_id: client_id.clone(),
            token_id: auth.token_id,
            labels: record.labels.clone(),
            attested: None,
            resumed: false,
            rotated: false,
        };
        outbox.request(ServerRequest::Admit(AdmissionRequest {
            client_id,
            token_id: auth.token_id,
            labels: record.labels.clone(),
            evidence: auth.evidence,
            request: auth.request,
            binding,
        }));
        Ok(State::AwaitAdmission(AwaitAdmission { transcript, secrets, peer, suite: s.negotiated.suite }))
    }

    fn on_resume_hello(
        &mut self,
        hello: ResumeHello,
        frame: &Frame,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        let negotiated = self.negotiate(&hello.versions, &hello.suites)?;
        let client_id = ClientId::from_bytes(&hello.client_id).map_err(|_| Refusal::InvalidClientId)?;
        // Before the lookup, so a non-contributory share is refused alike for every
        // client id, known or not, and costs no storage work.
        let dh = self.ephemeral.agree(&hello.ephemeral)?;
        let mut transcript = Transcript::start(self.binding.as_ref());
        transcript.add_frame(&frame.bytes);
        let offered = hello.keyrings.iter().map(|id| KeyringId(*id)).collect();
        outbox.request(ServerRequest::Storage(StorageRequest::LookupKeyring { client_id: client_id.clone() }));
        Ok(State::AwaitKeyring(AwaitKeyring { transcript, client_id, offered, negotiated, dh }))
    }

    fn on_keyring(
        &mut self,
        s: AwaitKeyring,
        record: Option<KeyringRecord>,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        // A client that is unknown, or offers no keyring its record holds, gets a
        // challenge made with a random keyring through the same code path: it cannot
        // tell it from a real one.
        let record = record.filter(|r| r.client_id == s.client_id);
        let choice = record.as_ref().and_then(|r| r.select(&s.offered)).map(|(k, standing)| (k.clone(), standing));
        // `select` fingerprints every keyring of the record; a decoy fingerprints as many
        // as the fullest record holds, so the choice costs the same for every client id.
        let done = record.as_ref().map_or(0, |r| r.retired.len().saturating_add(1));
        for _ in done..=MAX_RETIRED_KEYRINGS {
            core::hint::black_box(self.decoy.id());
        }
        let selected = match (record, choice) {
            (Some(record), Some((keyring, standing))) => {
                let rotate =
                    standing == KeyringStanding::Current && self.config.rotation.wants_rotation(&record, self.now);
                Some(Selected { id: keyring.id(), keyring, record, standing, rotate })
            }
            // Kept until the Server drops, as for a failed resume (see `Context::held`).
            (record, _) => {
                self.held = record;
                None
            }
        };
        match selected {
            // The agent holds a rotated keyring whose commit it has not seen, and this
            // resume runs with the one before: fence that commit off first (§11).
            Some(sel) if sel.standing == KeyringStanding::Current && s.offered.first() != Some(&sel.id) => {
                outbox.request(ServerRequest::Storage(StorageRequest::FenceKeyring {
                    client_id: sel.record.client_id.clone(),
                    keyring_id: sel.id,
                    generation: sel.record.generation,
                }));
                Ok(State::AwaitFence(AwaitFence { hello: s, selected: sel }))
            }
            selected => Ok(self.challenge(s, selected, outbox)),
        }
    }

    fn on_fenced(&mut self, s: AwaitFence, generation: Option<u64>, outbox: &mut ServerOutbox) -> State {
        let AwaitFence { hello, mut selected } = s;
        match generation {
            Some(generation) => {
                selected.record.generation = generation;
                self.challenge(hello, Some(selected), outbox)
            }
            // The record moved since it was read (the commit landed, say): this resume
            // gets the decoy, and the agent's next one finds the new keyring.
            None => {
                self.held = Some(selected.record);
                self.challenge(hello, None, outbox)
            }
        }
    }

    /// The ResumeChallenge, with the selected keyring or the decoy.
    fn challenge(&mut self, s: AwaitKeyring, selected: Option<Selected>, outbox: &mut ServerOutbox) -> State {
        let keyring = selected.as_ref().map_or(&self.decoy, |sel| &sel.keyring);
        let mut challenge = ResumeChallenge {
            version: s.negotiated.version,
            suite: s.negotiated.suite.code(),
            rotate: selected.as_ref().is_some_and(|sel| sel.rotate),
            nonce: self.nonce,
            ephemeral: self.ephemeral.public(),
            mac: [0; 32],
        };
        let th = s.transcript.hash_partial(FrameType::ResumeChallenge as u8, &challenge.signed_part());
        let secrets = resume_secrets(&s.dh, keyring, &th, &s.client_id, &self.config.pin);
        challenge.mac = finished_mac(&secrets.server_finished, &th);
        let frame = challenge.to_frame();
        let mut transcript = s.transcript;
        transcript.add_frame(&frame);
        outbox.transmit(frame);
        State::ExpectResumeFinished(ExpectResumeFinished { transcript, secrets, selected, suite: s.negotiated.suite })
    }

    fn on_resume_finished(
        &mut self,
        s: ExpectResumeFinished,
        m: ResumeFinished,
        frame: &Frame,
        outbox: &mut ServerOutbox,
    ) -> Result<State, Error> {
        let th = s.transcript.hash_partial(FrameType::ResumeFinished as u8, &m.signed_part());
        let valid = verify_finished(&s.secrets.client_finished, &th, &m.mac);
        let selected = match (s.selected, valid) {
            (Some(selected), true) => selected,
            // Known or not, a failure does the same work until the alert is out: the
            // record is kept for later, and both tell the peer `BadProof`.
            (selected, _) => {
                let known = selected.is_some();
                self.held = selected.map(|sel| sel.record);
                return Err(if known { PeerMisbehaved::BadClientProof.into() } else { Refusal::UnknownClient.into() });
            }
        };
        if selected.standing == KeyringStanding::Retired {
            // The proof is genuine: this holder has a keyring the client rotated away
            // from, which a legitimate agent never keeps. Recorded, then refused.
            outbox.request(ServerRequest::Storage(StorageRequest::RecordClone {
                client_id: selected.record.client_id.clone(),
                keyring_id: selected.id,
                now: self.now,
            }));
            self.held = Some(selected.record);
            return Ok(State::AwaitCloneRecord(AwaitCloneRecord));
        }
        let record = &selected.record;
        let peer = VerifiedClient {
            client_id: record.client_id.clone(),
            token_id: record.token_id,
            labels: record.labels.clone(),
            // Attested at the join that created this keyring (a rotation keeps it).
            attested: record.attested.clone(),
            resumed: true,
            rotated: selected.rotate,
        };
        let mut transcript = s.transcript;
        transcript.add_frame(&frame.bytes);
        if !m.request.is_empty() {
            outbox.request(ServerRequest::Ticket(TicketRequest { client: peer.clone(), request: m.request }));
            return Ok(State::AwaitTicket(AwaitTicket {
                transcript,
                secrets: s.secrets,
                peer,
                selected,
                suite: s.suite,
            }));
        }
        Ok(resumed(&selected, &s.secrets, peer, s.suite, self.now, outbox))
    }
}

/// A verified resume with the client's current keyring: established once its rotation is
/// committed, or once its keyring is confirmed (still current, and marked confirmed if
/// it was not).
fn resumed(
    selected: &Selected,
    secrets: &ResumeSecrets,
    peer: VerifiedClient,
    suite: MacSuite,
    now: UnixTime,
    outbox: &mut ServerOutbox,
) -> State {
    let session = secrets.session.clone();
    let record = &selected.record;
    if selected.rotate {
        outbox.request(ServerRequest::Storage(StorageRequest::RotateKeyring(RotateRequest {
            client_id: record.client_id.clone(),
            from: selected.id,
            to: secrets.rotated.clone(),
            generation: record.generation,
            now,
        })));
        return State::AwaitRotation(AwaitRotation { session, peer, suite });
    }
    // Confirmed or not, the keyring must still be current when the resume completes: a
    // rotation committed since it was read (by another holder of the keyring) ends this
    // one. For a confirmed keyring that is a read.
    let (client_id, keyring_id) = (record.client_id.clone(), selected.id);
    outbox.request(ServerRequest::Storage(if record.confirmed {
        StorageRequest::CheckKeyring { client_id, keyring_id }
    } else {
        StorageRequest::ConfirmKeyring { client_id, keyring_id }
    }));
    State::AwaitConfirm(AwaitConfirm { checking: record.confirmed, session, peer, suite })
}

fn on_ticket(s: AwaitTicket, ticket: Vec<u8>, now: UnixTime, outbox: &mut ServerOutbox) -> State {
    let mut answer = ResumeTicket { ticket, mac: [0; 32] };
    let th = s.transcript.hash_partial(FrameType::ResumeTicket as u8, &answer.signed_part());
    answer.mac = finished_mac(&s.secrets.ticket, &th);
    outbox.transmit(answer.to_frame());
    resumed(&s.selected, &s.secrets, s.peer, s.suite, now, outbox)
}

fn on_redeemed(
    s: AwaitRedeem,
    outcome: Result<Redemption, RedeemRefusal>,
    outbox: &mut ServerOutbox,
) -> Result<State, Error> {
    let redemption = outcome.map_err(|refusal| match refusal {
        RedeemRefusal::UnknownToken => Refusal::UnknownToken,
        RedeemRefusal::Expired => Refusal::ExpiredToken,
        RedeemRefusal::Exhausted => Refusal::ExhaustedToken,
        RedeemRefusal::ClientIdTaken => Refusal::ClientIdTaken,
    })?;
    let mut finished = ServerFinished { ticket: s.ticket, mac: [0; 32] };
    let th = s.transcript.hash_partial(FrameType::ServerFinished as u8, &finished.signed_part());
    finished.mac = finished_mac(&s.secrets.server_finished, &th);
    let frame = finished.to_frame();
    let mut transcript = s.transcript;
    transcript.add_frame(&frame);
    outbox.transmit(frame);
    let mut peer = s.peer;
    peer.labels = redemption.labels;
    Ok(State::ExpectClientFinished(ExpectClientFinished { transcript, secrets: s.secrets, peer, suite: s.suite }))
}

fn on_client_finished(s: ExpectClientFinished, m: ClientFinished, outbox: &mut ServerOutbox) -> Result<State, Error> {
    let th = s.transcript.hash_partial(FrameType::ClientFinished as u8, &[]);
    if !verify_finished(&s.secrets.client_finished, &th, &m.mac) {
        return Err(PeerMisbehaved::BadClientProof.into());
    }
    outbox.request(ServerRequest::Storage(StorageRequest::ConfirmKeyring {
        client_id: s.peer.client_id.clone(),
        keyring_id: s.secrets.keyring.id(),
    }));
    Ok(State::AwaitConfirm(AwaitConfirm {
        checking: false,
        session: s.secrets.session.clone(),
        peer: s.peer,
        suite: s.suite,
    }))
}

fn on_confirmed(
    s: AwaitConfirm,
    outcome: Result<(), ConfirmRefusal>,
    outbox: &mut ServerOutbox,
) -> Result<State, Error> {
    outcome.map_err(|refusal| match refusal {
        ConfirmRefusal::Missing => Error::from(Refusal::UnknownClient),
        // A resume's keyring was rotated away from while it ran (no clone is recorded:
        // two resumes of one agent could meet here); a join's was replaced by a retry.
        ConfirmRefusal::Replaced if s.peer.resumed => Error::from(Refusal::RetiredKeyring),
        ConfirmRefusal::Replaced => Error::from(Refusal::ClientIdTaken),
    })?;
    outbox.established(s.peer.clone());
    Ok(State::Established(Established { session: s.session, peer: s.peer, suite: s.suite }))
}

fn on_rotated(
    s: AwaitRotation,
    outcome: Result<(), ConfirmRefusal>,
    outbox: &mut ServerOutbox,
) -> Result<State, Error> {
    outcome.map_err(|refusal| match refusal {
        ConfirmRefusal::Missing => Error::from(Refusal::UnknownClient),
        // The record moved since this resume read it: another resume rotated the keyring
        // first, or fenced this commit off (the agent resumed again, with the keyring
        // before this rotation, while this one was in flight). No clone is recorded: an
        // honest agent's own delayed commit ends here.
        ConfirmRefusal::Replaced => Error::from(Refusal::RetiredKeyring),
    })?;
    outbox.established(s.peer.clone());
    Ok(State::Established(Established { session: s.session, peer: s.peer, suite: s.suite }))
}
