//! The agent's state machines: [`Client::join`] with a bootstrap token and pins, and
//! [`Client::resume`] with a stored keyring.
//!
//! Drive it as [`crate::handshake`] describes: drain [`Client::poll_output`] until
//! `None` after every input, send what it says, feed the gateway's bytes to
//! [`Client::handle_input`]. A join yields two requests:
//!
//! * [`ClientRequest::Attest`] once the gateway's challenge verified: produce attestation
//!   evidence bound to the session's [`AttestationBinding`] (or none: empty evidence)
//!   and answer with [`Client::handle_evidence`]. The `ClientAuth` leaves only then.
//! * [`ClientRequest::PersistKeyring`] before it confirms: store the keyring (and what
//!   the join's ticket carries that the agent keeps, a certificate say) durably, then call
//!   [`Client::handle_persisted`] with the outcome, so a crash can never leave the gateway
//!   holding a confirmed keyring the agent lost. A keyring that could not be stored fails
//!   the join with [`LocalFailure::Persist`] and tells the gateway `Internal`.
//!
//! A join or a resume may carry an application **request** ([`JoinConfig::with_request`],
//! [`ResumeConfig::with_request`]; a certificate signing request, say), which the gateway's
//! application answers with a ticket: a join's in `ServerFinished`, a resume's in a
//! `ResumeTicket` that only a resume with a request gets ([`SessionInfo::ticket`]).
//!
//! ```text
//! join:   ExpectChallenge -ServerChallenge-> AwaitEvidence -evidence-> ExpectServerFinished
//!           -ServerFinished-> AwaitPersist -persisted-> Established
//! resume: ExpectResumeChallenge -ResumeChallenge-> Established
//!           (with a request: -ResumeChallenge-> ExpectResumeTicket -ResumeTicket-> Established)
//!           (rotating: -ResumeChallenge-> AwaitPersist -persisted-> [ExpectResumeTicket ->] Established)
//! ```
//!
//! A resume that the gateway makes **rotate** the keyring (`spec/PROTOCOL.md` §8.5)
//! yields [`ClientRequest::PersistRotation`] before its `ResumeFinished`: store the new
//! keyring, keeping the one it was rotated from, only if the stored keyring is still the
//! one this resume started from, then answer with [`Client::handle_persisted`]. Until a
//! later resume shows which of the two the gateway holds, the agent offers both; the
//! resume that shows it reports the state to keep in [`SessionInfo::settled`].
//!
//! ```text
//! any error -> failed (its alert, then Output::Failed; the error is returned on every later call)
//! ```

use alloc::vec::Vec;

use ed25519_dalek::VerifyingKey;

use crate::attestation::{AttestFailed, AttestationBinding};
use crate::channel::{Channel, Side};
use crate::error::{Error, LocalFailure, PeerMisbehaved, Refusal};
use crate::handshake::{HandshakeState, Machine, Outbox, Output};
use crate::identity::ClientId;
use crate::inbound::Frame;
use crate::jws::{
    JwsError, challenge_header, challenge_header_prefix, header_starts_with, hs256_detached, verify_eddsa_detached,
};
use crate::keys::{
    EphemeralSecret, JoinSecrets, Keyring, KeyringId, ResumeSecrets, SessionKeys, SymmetricKey, finished_mac,
    join_secrets, resume_secrets, verify_finished,
};
use crate::messages::{
    ClientAuth, ClientFinished, ClientHello, FrameType, HandshakeMessage, MAX_EVIDENCE, MAX_REQUEST, Message,
    ResumeChallenge, ResumeFinished, ResumeHello, ResumeTicket, ServerChallenge, ServerFinished,
};
use crate::pin::Pin;
use crate::suite::{MacSuite, SUPPORTED_VERSIONS};
use crate::token::{BootstrapToken, TokenId};
use crate::transcript::{ChannelBinding, Transcript};

/// What an agent needs to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    token: BootstrapToken,
    pins: Vec<Pin>,
    client_id: ClientId,
    suites: Vec<MacSuite>,
    name_token: bool,
    request: Vec<u8>,
    binding: Option<ChannelBinding>,
}

/// Checks an application request against the protocol's limit, before any handshake.
fn checked_request(request: Vec<u8>) -> Result<Vec<u8>, LocalFailure> {
    if request.len() > MAX_REQUEST {
        return Err(LocalFailure::RequestTooLong { len: request.len() });
    }
    Ok(request)
}

impl JoinConfig {
    /// Join with `token`, accepting a gateway whose identity matches any of `pins`.
    pub fn new(token: BootstrapToken, pins: Vec<Pin>, client_id: ClientId) -> Self {
        Self {
            token,
            pins,
            client_id,
            suites: MacSuite::ALL.to_vec(),
            name_token: true,
            request: Vec::new(),
            binding: None,
        }
    }

    /// The client id this configuration joins as.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The MAC suites to offer, most preferred first.
    pub fn with_suites(mut self, suites: &[MacSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }

    /// Don't name the token in the hello (the *unnamed-token flow*): the gateway
    /// answers with a challenge for each of its first unexpired tokens, up to its cap,
    /// and the client picks its own.
    pub fn without_token_id(mut self) -> Self {
        self.name_token = false;
        self
    }

    /// Sends this application request with the join (in `ClientAuth`, covered by the
    /// token proof): the gateway's application sees it at admission and answers in the
    /// join's ticket. A certificate signing request, say.
    ///
    /// # Errors
    ///
    /// [`LocalFailure::RequestTooLong`] for a request longer than [`MAX_REQUEST`].
    pub fn with_request(mut self, request: Vec<u8>) -> Result<Self, LocalFailure> {
        self.request = checked_request(request)?;
        Ok(self)
    }

    /// Binds the join to the TLS session it runs in (`spec/PROTOCOL.md` §6.1): the
    /// gateway must be bound to the same value, or the first proof fails.
    pub fn with_channel_binding(mut self, binding: ChannelBinding) -> Self {
        self.binding = Some(binding);
        self
    }
}

/// What an agent keeps after a join: enough to resume for ever.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedKeyring {
    /// The agent's client id.
    pub client_id: ClientId,
    /// The gateway it joined (resumes bind to this pin). Stored as `gateway_pin`.
    #[serde(rename = "gateway_pin")]
    pub server_pin: Pin,
    /// The token it joined with.
    pub token_id: TokenId,
    /// The static keys: the newest keyring the agent holds.
    pub keyring: Keyring,
    /// The keyring `keyring` was rotated from, kept while the agent does not know
    /// whether the gateway committed the rotation (a resume offers both, newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<Keyring>,
}

impl SavedKeyring {
    /// The fingerprints of the keyrings a resume offers, newest first.
    pub fn offered(&self) -> Vec<KeyringId> {
        core::iter::once(&self.keyring).chain(self.rotated_from.as_ref()).map(Keyring::id).collect()
    }
}

/// What an agent needs to resume.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    saved: SavedKeyring,
    suites: Vec<MacSuite>,
    request: Vec<u8>,
    binding: Option<ChannelBinding>,
}

impl ResumeConfig {
    /// Resume with a saved keyring, offering every suite.
    pub fn new(saved: SavedKeyring) -> Self {
        Self { saved, suites: MacSuite::ALL.to_vec(), request: Vec::new(), binding: None }
    }

    /// Sends this application request with the resume (in `ResumeFinished`, under the
    /// keyring's MAC): the gateway's application answers it in a `ResumeTicket`, which
    /// the resume then waits for. A certificate signing request to renew a certificate,
    /// say. An empty request is none.
    ///
    /// # Errors
    ///
    /// [`LocalFailure::RequestTooLong`] for a request longer than [`MAX_REQUEST`].
    pub fn with_request(mut self, request: Vec<u8>) -> Result<Self, LocalFailure> {
        self.request = checked_request(request)?;
        Ok(self)
    }

    /// Binds the resume to the TLS session it runs in, as
    /// [`JoinConfig::with_channel_binding`].
    pub fn with_channel_binding(mut self, binding: ChannelBinding) -> Self {
        self.binding = Some(binding);
        self
    }

    /// The MAC suites to offer, most preferred first.
    pub fn with_suites(mut self, suites: &[MacSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }
}

/// What the agent asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// Produce attestation evidence that commits to `binding` (for example a signature
    /// over it by a key an authority the gateway trusts certified), at most
    /// [`MAX_EVIDENCE`] bytes, and answer with [`Client::handle_evidence`]. An agent with
    /// nothing to attest answers with empty evidence. Asked once per join, after the
    /// gateway's challenge verified and before anything is sent with the evidence.
    Attest {
        /// This session's binding (`spec/PROTOCOL.md` §7.3); no other session has it.
        binding: AttestationBinding,
    },
    /// Store this keyring durably, with what the agent keeps of the join's ticket, then
    /// call [`Client::handle_persisted`].
    PersistKeyring {
        /// The keyring to store.
        saved: SavedKeyring,
        /// The join's ticket, verified under the gateway's `ServerFinished` MAC.
        ticket: Vec<u8>,
    },
    /// The gateway rotates the keyring in this resume: store `saved` (the new keyring,
    /// with the one it was rotated from) durably in place of the stored state, **only if**
    /// the stored state's newest keyring is still `replaces` (another resume of the same
    /// agent may have rotated meanwhile: then answer `Err(PersistFailed)`), then call
    /// [`Client::handle_persisted`]. The `ResumeFinished` that commits the rotation
    /// leaves only after that.
    PersistRotation {
        /// The state to store.
        saved: SavedKeyring,
        /// The newest keyring of the state this resume started from.
        replaces: KeyringId,
    },
}

/// What the agent state machine wants done next.
pub type ClientOutput = Output<ClientRequest, SessionInfo>;

/// The keyring could not be stored (the answer to [`ClientRequest::PersistKeyring`]
/// when the agent's store failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistFailed;

/// What the agent learns when its handshake (a join or a resume) completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The gateway's pin.
    pub server_pin: Pin,
    /// The negotiated MAC suite.
    pub suite: MacSuite,
    /// The ticket the gateway sent: a join's (maybe empty), or a resume's answer to its
    /// request (empty for a resume without one).
    pub ticket: Vec<u8>,
    /// Whether this was a resume.
    pub resumed: bool,
    /// Whether this resume rotated the keyring (the agent stored the new one through
    /// [`ClientRequest::PersistRotation`]).
    pub rotated: bool,
    /// A resume that offered two keyrings and did not rotate learned which one the
    /// gateway holds: the state to keep instead of the stored one (that keyring alone;
    /// the other is dead). Storing it is tidying, not safety: offering both stays correct.
    pub settled: Option<SavedKeyring>,
}

/// The established session, handed over by [`Client::into_session`].
#[derive(Debug)]
pub struct ClientSession {
    /// The channel.
    pub channel: Channel,
    /// What the handshake established.
    pub info: SessionInfo,
    /// Bytes received after the handshake (channel frames), to open first.
    pub buffered: Vec<u8>,
}

#[derive(Debug)]
struct ExpectChallenge {
    config: JoinConfig,
    hello: ClientHello,
    transcript: Transcript,
    ephemeral: EphemeralSecret,
}

/// The challenge verified; the evidence for the binding is awaited before the
/// `ClientAuth` (whose signed part carries it) can be built.
#[derive(Debug)]
struct AwaitEvidence {
    config: JoinConfig,
    transcript: Transcript,
    dh: zeroize::Zeroizing<[u8; 32]>,
    /// The `ClientAuth` without evidence and proof.
    auth: ClientAuth,
    server_pin: Pin,
    suite: MacSuite,
}

#[derive(Debug)]
struct ExpectServerFinished {
    transcript: Transcript,
    secrets: JoinSecrets,
    saved: SavedKeyring,
    suite: MacSuite,
}

#[derive(Debug)]
struct AwaitPersist {
    transcript: Transcript,
    secrets: JoinSecrets,
    info: SessionInfo,
}

/// A rotating resume waits for the new keyring to be stored before its proof.
#[derive(Debug)]
struct AwaitRotationPersist {
    transcript: Transcript,
    secrets: ResumeSecrets,
    request: Vec<u8>,
    info: SessionInfo,
}

#[derive(Debug)]
struct ExpectResumeChallenge {
    saved: SavedKeyring,
    hello: ResumeHello,
    transcript: Transcript,
    ephemeral: EphemeralSecret,
    request: Vec<u8>,
}

/// A resume that sent a request waits for the gateway's answer to it.
#[derive(Debug)]
struct ExpectResumeTicket {
    transcript: Transcript,
    session: SessionKeys,
    ticket_key: SymmetricKey,
    info: SessionInfo,
}

#[derive(Debug)]
struct Established {
    session: SessionKeys,
    info: SessionInfo,
}

#[derive(Debug)]
enum State {
    ExpectChallenge(ExpectChallenge),
    AwaitEvidence(AwaitEvidence),
    ExpectServerFinished(ExpectServerFinished),
    AwaitPersist(AwaitPersist),
    AwaitRotationPersist(AwaitRotationPersist),
    ExpectResumeChallenge(ExpectResumeChallenge),
    ExpectResumeTicket(ExpectResumeTicket),
    Established(Established),
}

impl HandshakeState for State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectChallenge(_) => "ExpectChallenge",
            Self::AwaitEvidence(_) => "AwaitEvidence",
            Self::ExpectServerFinished(_) => "ExpectServerFinished",
            Self::AwaitPersist(_) => "AwaitPersist",
            Self::AwaitRotationPersist(_) => "AwaitRotationPersist",
            Self::ExpectResumeChallenge(_) => "ExpectResumeChallenge",
            Self::ExpectResumeTicket(_) => "ExpectResumeTicket",
            Self::Established(_) => "Established",
        }
    }

    fn expected(&self) -> Option<&'static [FrameType]> {
        match self {
            Self::ExpectChallenge(_) => Some(&[FrameType::ServerChallenge]),
            Self::ExpectServerFinished(_) => Some(&[FrameType::ServerFinished]),
            Self::ExpectResumeChallenge(_) => Some(&[FrameType::ResumeChallenge]),
            Self::ExpectResumeTicket(_) => Some(&[FrameType::ResumeTicket]),
            Self::AwaitEvidence(_) | Self::AwaitPersist(_) | Self::AwaitRotationPersist(_) | Self::Established(_) => {
                None
            }
        }
    }
}

type ClientMachine = Machine<State, ClientRequest, SessionInfo>;
type ClientOutbox = Outbox<ClientRequest, SessionInfo>;

/// One connection's agent-side handshake.
#[derive(Debug)]
pub struct Client {
    machine: ClientMachine,
}

fn check_choice(version: u16, suite: u16, versions: &[u16], suites: &[u16]) -> Result<MacSuite, PeerMisbehaved> {
    if !versions.contains(&version) || !suites.contains(&suite) || !SUPPORTED_VERSIONS.contains(&version) {
        return Err(PeerMisbehaved::ChoiceNotOffered);
    }
    MacSuite::from_code(suite).ok_or(PeerMisbehaved::ChoiceNotOffered)
}

fn suite_codes(suites: &[MacSuite]) -> Vec<u16> {
    suites.iter().map(|s| s.code()).collect()
}

impl Client {
    /// Starts a join; the `ClientHello` is ready in [`Client::poll_output`]. The nonce
    /// and the ephemeral key are drawn here.
    pub fn join<R: rand_core::CryptoRng + ?Sized>(config: JoinConfig, rng: &mut R) -> Self {
        let hello = ClientHello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            suites: suite_codes(&config.suites),
            nonce: crate::random_array(rng),
            token_id: config.name_token.then(|| config.token.id()),
        };
        let ephemeral = EphemeralSecret::generate(rng);
        let frame = hello.to_frame();
        let mut transcript = Transcript::start(config.binding.as_ref());
        transcript.add_frame(&frame);
        let state = State::ExpectChallenge(ExpectChallenge { config, hello, transcript, ephemeral });
        Self { machine: Machine::new(state, Some(frame)) }
    }

    /// Starts a resume; the `ResumeHello` is ready in [`Client::poll_output`].
    pub fn resume<R: rand_core::CryptoRng + ?Sized>(config: ResumeConfig, rng: &mut R) -> Self {
        let ephemeral = EphemeralSecret::generate(rng);
        let hello = ResumeHello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            suites: suite_codes(&config.suites),
            client_id: config.saved.client_id.as_str().as_bytes().to_vec(),
            keyrings: config.saved.offered().iter().map(|id| id.0).collect(),
            nonce: crate::random_array(rng),
            ephemeral: ephemeral.public(),
        };
        let frame = hello.to_frame();
        let mut transcript = Transcript::start(config.binding.as_ref());
        transcript.add_frame(&frame);
        let state = State::ExpectResumeChallenge(ExpectResumeChallenge {
            saved: config.saved,
            hello,
            transcript,
            ephemeral,
            request: config.request,
        });
        Self { machine: Machine::new(state, Some(frame)) }
    }

    /// Feeds bytes from the gateway (any split: partial frames are buffered).
    ///
    /// # Errors
    ///
    /// The error that ended the handshake, whether these bytes ended it or earlier input
    /// did: the gateway misbehaved or is incompatible, it sent an alert, or it was refused
    /// (a pin that matches none of the configured ones, for example). The same error is
    /// queued as [`Output::Failed`], so a driver that drains [`Client::poll_output`] may
    /// ignore this value (see the [run loop](crate::handshake#the-run-loop)).
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.machine.handle_input(bytes, on_frame)
    }

    /// Answers [`ClientRequest::Attest`] with the evidence for the binding
    /// (`Ok(evidence)`, empty for none), or `Err(AttestFailed)` if the agent's attester
    /// could not produce any (the join fails and tells the gateway `Internal`). The
    /// `ClientAuth` carrying the evidence is then queued. Called when no attestation is
    /// pending, it is [`Error::Misuse`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Misuse`] if no attestation is pending (nothing changes);
    /// [`LocalFailure::Attestation`] for `Err(AttestFailed)` and
    /// [`LocalFailure::EvidenceTooLong`] for evidence longer than [`MAX_EVIDENCE`] (the
    /// join fails and the gateway is told `Internal`); or the error the handshake had
    /// already failed with.
    pub fn handle_evidence(&mut self, outcome: Result<Vec<u8>, AttestFailed>) -> Result<(), Error> {
        self.machine.answer(
            "handle_evidence",
            |state| matches!(state, State::AwaitEvidence(_)),
            |state, outbox| match (state, outcome) {
                (State::AwaitEvidence(_), Err(AttestFailed)) => Err(LocalFailure::Attestation.into()),
                (State::AwaitEvidence(_), Ok(evidence)) if evidence.len() > MAX_EVIDENCE => {
                    Err(LocalFailure::EvidenceTooLong { len: evidence.len() }.into())
                }
                (State::AwaitEvidence(s), Ok(evidence)) => on_evidence(s, evidence, outbox),
                // Unreachable: `pending` admitted only AwaitEvidence.
                (other, _) => Ok(other),
            },
        )?;
        self.machine.process(&mut on_frame)
    }

    /// Answers [`ClientRequest::PersistKeyring`]: `Ok(())` once the keyring is stored
    /// durably (the join then sends its key confirmation), `Err(PersistFailed)` if it
    /// could not be (the join fails and tells the gateway `Internal`). Called when no
    /// persist is pending, it is [`Error::Misuse`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Misuse`] if no persist is pending (nothing changes);
    /// [`LocalFailure::Persist`] when `outcome` is `Err(PersistFailed)` (the join fails and
    /// the gateway is told `Internal`); or the error the handshake had already failed with.
    pub fn handle_persisted(&mut self, outcome: Result<(), PersistFailed>) -> Result<(), Error> {
        self.machine.answer(
            "handle_persisted",
            |state| matches!(state, State::AwaitPersist(_) | State::AwaitRotationPersist(_)),
            |state, outbox| match (state, outcome) {
                (State::AwaitPersist(_) | State::AwaitRotationPersist(_), Err(PersistFailed)) => {
                    Err(LocalFailure::Persist.into())
                }
                (State::AwaitRotationPersist(s), Ok(())) => Ok(send_resume_finished(s, outbox)),
                (State::AwaitPersist(s), Ok(())) => {
                    let th = s.transcript.hash_partial(FrameType::ClientFinished as u8, &[]);
                    let finished = ClientFinished { mac: finished_mac(&s.secrets.client_finished, &th) };
                    outbox.transmit(finished.to_frame());
                    outbox.established(s.info.clone());
                    Ok(State::Established(Established { session: s.secrets.session.clone(), info: s.info }))
                }
                // Unreachable: `pending` admitted only the persist states.
                (other, _) => Ok(other),
            },
        )?;
        self.machine.process(&mut on_frame)
    }

    /// The next thing to do, or `None` when there is nothing until more input.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.machine.poll()
    }

    /// Whether the handshake completed.
    pub fn is_established(&self) -> bool {
        matches!(self.machine.state(), Ok(State::Established(_)))
    }

    /// What the handshake established, once it has.
    pub fn session_info(&self) -> Option<&SessionInfo> {
        match self.machine.state() {
            Ok(State::Established(e)) => Some(&e.info),
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
    pub fn into_session(self) -> Result<ClientSession, Error> {
        let (e, buffered) = self.machine.into_established(|state| match state {
            State::Established(e) => Some(e),
            _ => None,
        })?;
        Ok(ClientSession { channel: Channel::new(Side::Client, e.info.suite, &e.session), info: e.info, buffered })
    }
}

fn on_frame(state: State, frame: Frame, message: HandshakeMessage, outbox: &mut ClientOutbox) -> Result<State, Error> {
    match (state, message) {
        (State::ExpectChallenge(s), HandshakeMessage::ServerChallenge(m)) => on_challenge(s, m, &frame, outbox),
        (State::ExpectServerFinished(s), HandshakeMessage::ServerFinished(m)) => {
            on_server_finished(s, m, &frame, outbox)
        }
        (State::ExpectResumeChallenge(s), HandshakeMessage::ResumeChallenge(m)) => {
            on_resume_challenge(s, m, &frame, outbox)
        }
        (State::ExpectResumeTicket(s), HandshakeMessage::ResumeTicket(m)) => on_resume_ticket(s, m, outbox),
        // The frame type was checked against the state before decoding.
        (state, _) => Err(PeerMisbehaved::UnexpectedMessage {
            expected: state.expected().unwrap_or(&[]),
            got: frame.frame_type as u8,
        }
        .into()),
    }
}

fn on_challenge(
    s: ExpectChallenge,
    m: ServerChallenge,
    frame: &Frame,
    outbox: &mut ClientOutbox,
) -> Result<State, Error> {
    let suite = check_choice(m.version, m.suite, &s.hello.versions, &s.hello.suites)?;
    // The pin that matched (the presented key's) is the one the key schedule binds.
    let server_pin = Pin::from_ed25519(&m.identity_key);
    if !server_pin.matches_any(&s.config.pins) {
        return Err(Refusal::WrongPin { presented: server_pin }.into());
    }
    let token = &s.config.token;
    let th = s.transcript.hash_partial(FrameType::ServerChallenge as u8, &m.signed_part());
    let header = challenge_header(token.id(), &th);
    let prefix = challenge_header_prefix(token.id());
    // Challenges whose header does not decode, or is for another token, are skipped.
    let jws = m.challenges.iter().find(|c| header_starts_with(c, &prefix)).ok_or(Refusal::UnknownToken)?;
    let key = VerifyingKey::from_bytes(&m.identity_key).map_err(|_| PeerMisbehaved::BadGatewaySignature)?;
    verify_eddsa_detached(jws, &header, &token.to_payload()[..], &key).map_err(|e| match e {
        // The header names another transcript: a replayed or downgraded exchange.
        JwsError::UnexpectedHeader => PeerMisbehaved::TranscriptMismatch,
        _ => PeerMisbehaved::BadGatewaySignature,
    })?;
    let dh = s.ephemeral.agree(&m.ephemeral)?;

    let mut transcript = s.transcript;
    transcript.add_frame(&frame.bytes);
    let auth = ClientAuth {
        token_id: token.id(),
        client_id: s.config.client_id.as_str().as_bytes().to_vec(),
        ephemeral: s.ephemeral.public(),
        evidence: Vec::new(),
        request: Vec::new(),
        proof: alloc::string::String::new(),
    };
    // The evidence commits to everything before it: both nonces, the gateway's key,
    // share and challenges, the token id, the client id and this side's share.
    let th_ev = transcript.hash_partial(FrameType::ClientAuth as u8, &auth.bound_part());
    outbox.request(ClientRequest::Attest { binding: AttestationBinding::derive(&th_ev) });
    Ok(State::AwaitEvidence(AwaitEvidence { config: s.config, transcript, dh, auth, server_pin, suite }))
}

fn on_evidence(s: AwaitEvidence, evidence: Vec<u8>, outbox: &mut ClientOutbox) -> Result<State, Error> {
    let AwaitEvidence { config, mut transcript, dh, mut auth, server_pin, suite } = s;
    let token = &config.token;
    auth.evidence = evidence;
    auth.request = config.request.clone();
    let th_proof = transcript.hash_partial(FrameType::ClientAuth as u8, &auth.signed_part());
    auth.proof = hs256_detached(&th_proof, token.id().as_str(), token.secret().expose());
    let auth_frame = auth.to_frame();
    transcript.add_frame(&auth_frame);
    let secrets = join_secrets(&dh, token.secret(), &transcript.current(), &config.client_id, &server_pin);
    outbox.transmit(auth_frame);
    let saved = SavedKeyring {
        client_id: config.client_id.clone(),
        server_pin,
        token_id: token.id(),
        keyring: secrets.keyring.clone(),
        rotated_from: None,
    };
    Ok(State::ExpectServerFinished(ExpectServerFinished { transcript, secrets, saved, suite }))
}

fn on_server_finished(
    s: ExpectServerFinished,
    m: ServerFinished,
    frame: &Frame,
    outbox: &mut ClientOutbox,
) -> Result<State, Error> {
    let th = s.transcript.hash_partial(FrameType::ServerFinished as u8, &m.signed_part());
    if !verify_finished(&s.secrets.server_finished, &th, &m.mac) {
        return Err(PeerMisbehaved::BadGatewayProof.into());
    }
    let mut transcript = s.transcript;
    transcript.add_frame(&frame.bytes);
    let info = SessionInfo {
        server_pin: s.saved.server_pin,
        suite: s.suite,
        ticket: m.ticket.clone(),
        resumed: false,
        rotated: false,
        settled: None,
    };
    outbox.request(ClientRequest::PersistKeyring { saved: s.saved, ticket: m.ticket });
    Ok(State::AwaitPersist(AwaitPersist { transcript, secrets: s.secrets, info }))
}

fn on_resume_challenge(
    s: ExpectResumeChallenge,
    m: ResumeChallenge,
    frame: &Frame,
    outbox: &mut ClientOutbox,
) -> Result<State, Error> {
    let suite = check_choice(m.version, m.suite, &s.hello.versions, &s.hello.suites)?;
    let dh = s.ephemeral.agree(&m.ephemeral)?;
    let th = s.transcript.hash_partial(FrameType::ResumeChallenge as u8, &m.signed_part());
    // The gateway used one of the offered keyrings (or a decoy): each is tried, and
    // every one is derived and checked whichever verifies.
    let mut used = None;
    for keyring in core::iter::once(&s.saved.keyring).chain(s.saved.rotated_from.as_ref()) {
        // A resume binds the pin stored with the keyring at join.
        let secrets = resume_secrets(&dh, keyring, &th, &s.saved.client_id, &s.saved.server_pin);
        if verify_finished(&secrets.server_finished, &th, &m.mac) && used.is_none() {
            used = Some((keyring.clone(), secrets));
        }
    }
    let (keyring, secrets) = used.ok_or(PeerMisbehaved::BadGatewayProof)?;
    let mut transcript = s.transcript;
    transcript.add_frame(&frame.bytes);
    let mut info = SessionInfo {
        server_pin: s.saved.server_pin,
        suite,
        ticket: Vec::new(),
        resumed: true,
        rotated: m.rotate,
        settled: None,
    };
    let replaces = s.saved.keyring.id();
    if m.rotate {
        let saved = SavedKeyring { keyring: secrets.rotated.clone(), rotated_from: Some(keyring), ..s.saved };
        outbox.request(ClientRequest::PersistRotation { saved, replaces });
        return Ok(State::AwaitRotationPersist(AwaitRotationPersist { transcript, secrets, request: s.request, info }));
    }
    if s.saved.rotated_from.is_some() {
        info.settled = Some(SavedKeyring { keyring, rotated_from: None, ..s.saved });
    }
    Ok(send_resume_finished(AwaitRotationPersist { transcript, secrets, request: s.request, info }, outbox))
}

/// Sends the `ResumeFinished` (for a rotation, once the new keyring is stored), then
/// waits for the ticket its request asks for, or is established.
fn send_resume_finished(s: AwaitRotationPersist, outbox: &mut ClientOutbox) -> State {
    let mut transcript = s.transcript;
    let mut finished = ResumeFinished { request: s.request, mac: [0; 32] };
    let th = transcript.hash_partial(FrameType::ResumeFinished as u8, &finished.signed_part());
    finished.mac = finished_mac(&s.secrets.client_finished, &th);
    let frame = finished.to_frame();
    transcript.add_frame(&frame);
    outbox.transmit(frame);
    if !finished.request.is_empty() {
        return State::ExpectResumeTicket(ExpectResumeTicket {
            transcript,
            session: s.secrets.session.clone(),
            ticket_key: s.secrets.ticket.clone(),
            info: s.info,
        });
    }
    outbox.established(s.info.clone());
    State::Established(Established { session: s.secrets.session.clone(), info: s.info })
}

fn on_resume_ticket(s: ExpectResumeTicket, m: ResumeTicket, outbox: &mut ClientOutbox) -> Result<State, Error> {
    let th = s.transcript.hash_partial(FrameType::ResumeTicket as u8, &m.signed_part());
    if !verify_finished(&s.ticket_key, &th, &m.mac) {
        return Err(PeerMisbehaved::BadGatewayProof.into());
    }
    let info = SessionInfo { ticket: m.ticket, ..s.info };
    outbox.established(info.clone());
    Ok(State::Established(Established { session: s.session, info }))
}
