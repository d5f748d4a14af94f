//! The agent's state machines: [`Client::join`] with a bootstrap token and pins, and
//! [`Client::resume`] with a stored keyring.
//!
//! Drain [`Client::poll_output`] until `None`, send what it says, feed the gateway's
//! bytes to [`Client::handle_input`]. A join yields [`ClientOutput::PersistKeyring`]
//! before it confirms: store the keyring durably, then call
//! [`Client::handle_persisted`], so a crash can never leave the gateway holding a
//! confirmed keyring the agent lost.
//!
//! ```text
//! join:   ExpectChallenge -ServerChallenge-> ExpectServerFinished
//!           -ServerFinished-> AwaitPersist -persisted-> Established
//! resume: ExpectResumeChallenge -ResumeChallenge-> Established
//! any error -> Failed (an alert is queued; the error is returned on every later call)
//! ```

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem;

use ed25519_dalek::VerifyingKey;

use crate::channel::{Channel, Side};
use crate::error::{Error, ProtocolError, peer_alert};
use crate::identity::ClientId;
use crate::inbound::{Inbound, body};
use crate::jws::{
    JwsError, challenge_header, challenge_header_prefix, header_starts_with, hs256_detached, verify_eddsa_detached,
};
use crate::keys::{
    EphemeralSecret, JoinSecrets, Keyring, SessionKeys, finished_mac, join_secrets, resume_secrets, verify_finished,
};
use crate::messages::{
    AlertMessage, ClientAuth, ClientFinished, ClientHello, FrameType, HandshakeMessage, MAX_EVIDENCE, Message,
    ResumeChallenge, ResumeFinished, ResumeHello, ServerChallenge, ServerFinished,
};
use crate::pin::Pin;
use crate::suite::{MacSuite, SUPPORTED_VERSIONS};
use crate::token::{BootstrapToken, TokenId};
use crate::transcript::Transcript;

/// What an agent needs to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    token: BootstrapToken,
    pins: Vec<Pin>,
    client_id: ClientId,
    evidence: Vec<u8>,
    suites: Vec<MacSuite>,
    name_token: bool,
}

impl JoinConfig {
    /// Join with `token`, accepting a gateway whose identity matches any of `pins`.
    pub fn new(token: BootstrapToken, pins: Vec<Pin>, client_id: ClientId) -> Self {
        Self { token, pins, client_id, evidence: Vec::new(), suites: MacSuite::ALL.to_vec(), name_token: true }
    }

    /// Attestation evidence to send with the join (opaque to the protocol, bound into
    /// the transcript, handed to the gateway's application). At most 8 KiB.
    pub fn with_evidence(mut self, evidence: Vec<u8>) -> Result<Self, EvidenceTooLong> {
        if evidence.len() > MAX_EVIDENCE {
            return Err(EvidenceTooLong { len: evidence.len() });
        }
        self.evidence = evidence;
        Ok(self)
    }

    /// The MAC suites to offer, most preferred first.
    pub fn with_suites(mut self, suites: &[MacSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }

    /// Don't name the token in the hello ("seed flow"): the gateway answers with a
    /// challenge for every active token, and the client picks its own.
    pub fn without_token_id(mut self) -> Self {
        self.name_token = false;
        self
    }
}

/// Attestation evidence longer than the protocol allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceTooLong {
    /// The length given.
    pub len: usize,
}

impl core::fmt::Display for EvidenceTooLong {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "attestation evidence is {} bytes, the limit is {MAX_EVIDENCE}", self.len)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EvidenceTooLong {}

/// What an agent keeps after a join: enough to resume for ever.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedKeyring {
    /// The agent's client id.
    pub client_id: ClientId,
    /// The gateway it joined (resumes bind to this pin).
    pub gateway_pin: Pin,
    /// The token it joined with.
    pub token_id: TokenId,
    /// The static keys.
    pub keyring: Keyring,
}

/// What an agent needs to resume.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    saved: SavedKeyring,
    suites: Vec<MacSuite>,
}

impl ResumeConfig {
    /// Resume with a saved keyring, offering every suite.
    pub fn new(saved: SavedKeyring) -> Self {
        Self { saved, suites: MacSuite::ALL.to_vec() }
    }

    /// The MAC suites to offer, most preferred first.
    pub fn with_suites(mut self, suites: &[MacSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }
}

/// What the agent state machine wants done next.
#[derive(Debug)]
pub enum ClientOutput {
    /// Send these bytes to the gateway.
    Transmit(Vec<u8>),
    /// Store this keyring durably, then call [`Client::handle_persisted`].
    PersistKeyring(SavedKeyring),
    /// The handshake is complete; call [`Client::into_session`].
    Established(Joined),
}

/// What the agent learns when its handshake completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The gateway's pin.
    pub gateway_pin: Pin,
    /// The negotiated MAC suite.
    pub suite: MacSuite,
    /// The ticket the gateway sent with the join (empty on resume).
    pub ticket: Vec<u8>,
    /// Whether this was a resume.
    pub resumed: bool,
}

/// The established session, handed over by [`Client::into_session`].
#[derive(Debug)]
pub struct ClientSession {
    /// The channel.
    pub channel: Channel,
    /// What the handshake established.
    pub joined: Joined,
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
    joined: Joined,
}

#[derive(Debug)]
struct ExpectResumeChallenge {
    saved: SavedKeyring,
    hello: ResumeHello,
    transcript: Transcript,
    ephemeral: EphemeralSecret,
}

#[derive(Debug)]
struct Established {
    session: SessionKeys,
    joined: Joined,
}

#[derive(Debug)]
enum State {
    ExpectChallenge(ExpectChallenge),
    ExpectServerFinished(ExpectServerFinished),
    AwaitPersist(AwaitPersist),
    ExpectResumeChallenge(ExpectResumeChallenge),
    Established(Established),
    Failed(Error),
}

impl State {
    fn expecting(&self) -> Option<&'static str> {
        match self {
            Self::ExpectChallenge(_) => Some("ServerChallenge"),
            Self::ExpectServerFinished(_) => Some("ServerFinished"),
            Self::ExpectResumeChallenge(_) => Some("ResumeChallenge"),
            _ => None,
        }
    }
}

/// One connection's agent-side handshake.
#[derive(Debug)]
pub struct Client {
    state: State,
    inbound: Inbound,
    outputs: VecDeque<ClientOutput>,
}

const MISUSE: Error = Error::Protocol(ProtocolError::Misuse("the handshake is not in a state for this call"));

fn check_choice(version: u16, suite: u16, versions: &[u16], suites: &[u16]) -> Result<MacSuite, ProtocolError> {
    if !versions.contains(&version) || !suites.contains(&suite) || !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ProtocolError::ChoiceNotOffered);
    }
    MacSuite::from_code(suite).ok_or(ProtocolError::ChoiceNotOffered)
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
        let mut transcript = Transcript::new();
        transcript.add_frame(&frame);
        let mut client = Self { state: State::Failed(MISUSE), inbound: Inbound::default(), outputs: VecDeque::new() };
        client.outputs.push_back(ClientOutput::Transmit(frame));
        client.state = State::ExpectChallenge(ExpectChallenge { config, hello, transcript, ephemeral });
        client
    }

    /// Starts a resume; the `ResumeHello` is ready in [`Client::poll_output`].
    pub fn resume<R: rand_core::CryptoRng + ?Sized>(config: ResumeConfig, rng: &mut R) -> Self {
        let ephemeral = EphemeralSecret::generate(rng);
        let hello = ResumeHello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            suites: suite_codes(&config.suites),
            client_id: config.saved.client_id.as_str().as_bytes().to_vec(),
            nonce: crate::random_array(rng),
            ephemeral: ephemeral.public(),
        };
        let frame = hello.to_frame();
        let mut transcript = Transcript::new();
        transcript.add_frame(&frame);
        let mut client = Self { state: State::Failed(MISUSE), inbound: Inbound::default(), outputs: VecDeque::new() };
        client.outputs.push_back(ClientOutput::Transmit(frame));
        client.state =
            State::ExpectResumeChallenge(ExpectResumeChallenge { saved: config.saved, hello, transcript, ephemeral });
        client
    }

    /// Feeds bytes from the gateway.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.check_failed()?;
        if let Err(e) = self.inbound.push(bytes) {
            return Err(self.fail(e));
        }
        while let Some(expected) = self.state.expecting() {
            let frame = match self.inbound.next_frame(expected) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            let next = self.on_frame(frame, expected);
            self.advance(next)?;
        }
        Ok(())
    }

    /// Tells the join that the keyring from [`ClientOutput::PersistKeyring`] is stored;
    /// it then sends its key confirmation.
    pub fn handle_persisted(&mut self) -> Result<(), Error> {
        self.check_failed()?;
        let State::AwaitPersist(s) = mem::replace(&mut self.state, State::Failed(MISUSE)) else {
            return Err(self.fail(MISUSE));
        };
        let th = s.transcript.hash_partial(FrameType::ClientFinished as u8, &[]);
        let finished = ClientFinished { mac: finished_mac(&s.secrets.client_finished, &th) };
        self.outputs.push_back(ClientOutput::Transmit(finished.to_frame()));
        self.outputs.push_back(ClientOutput::Established(s.joined.clone()));
        self.state = State::Established(Established { session: s.secrets.session.clone(), joined: s.joined });
        Ok(())
    }

    /// The next thing to do, or `None` when there is nothing until more input.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// Whether the handshake completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// The error the handshake failed with, if it did.
    pub fn failure(&self) -> Option<&Error> {
        match &self.state {
            State::Failed(e) if *e != MISUSE => Some(e),
            _ => None,
        }
    }

    /// Turns an established handshake into its session.
    pub fn into_session(mut self) -> Result<ClientSession, Error> {
        match mem::replace(&mut self.state, State::Failed(MISUSE)) {
            State::Established(e) => Ok(ClientSession {
                channel: Channel::new(Side::Client, e.joined.suite, &e.session),
                joined: e.joined,
                buffered: self.inbound.take_rest(),
            }),
            State::Failed(e) => Err(e),
            _ => Err(ProtocolError::Misuse("the handshake is not complete").into()),
        }
    }

    fn check_failed(&self) -> Result<(), Error> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        let from_peer = matches!(e, Error::Protocol(ProtocolError::PeerAlert(_) | ProtocolError::UnknownAlert(_)));
        if !from_peer && e != MISUSE {
            self.outputs.push_back(ClientOutput::Transmit(AlertMessage { code: e.alert().code() }.to_frame()));
        }
        self.state = State::Failed(e.clone());
        e
    }

    fn advance(&mut self, next: Result<State, Error>) -> Result<(), Error> {
        match next {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn on_frame(&mut self, (frame_type, frame): (FrameType, Vec<u8>), expected: &'static str) -> Result<State, Error> {
        let message = HandshakeMessage::decode(frame_type, body(&frame))?;
        match (mem::replace(&mut self.state, State::Failed(MISUSE)), message) {
            (_, HandshakeMessage::Alert(a)) => Err(peer_alert(a.code).into()),
            (State::ExpectChallenge(s), HandshakeMessage::ServerChallenge(m)) => self.on_challenge(s, m, &frame),
            (State::ExpectServerFinished(s), HandshakeMessage::ServerFinished(m)) => {
                self.on_server_finished(s, m, &frame)
            }
            (State::ExpectResumeChallenge(s), HandshakeMessage::ResumeChallenge(m)) => {
                self.on_resume_challenge(s, m, &frame)
            }
            _ => Err(ProtocolError::UnexpectedMessage { expected, got: frame_type as u8 }.into()),
        }
    }

    fn on_challenge(&mut self, s: ExpectChallenge, m: ServerChallenge, frame: &[u8]) -> Result<State, Error> {
        let suite = check_choice(m.version, m.suite, &s.hello.versions, &s.hello.suites)?;
        let gateway_pin = Pin::from_ed25519(&m.identity_key);
        if !gateway_pin.matches_any(&s.config.pins) {
            return Err(ProtocolError::WrongPin { presented: gateway_pin }.into());
        }
        let token = &s.config.token;
        let th = s.transcript.hash_partial(FrameType::ServerChallenge as u8, &m.signed_part());
        let header = challenge_header(token.id(), &th);
        let prefix = challenge_header_prefix(token.id());
        let jws = m.challenges.iter().find(|c| header_starts_with(c, &prefix)).ok_or(ProtocolError::TokenNotOffered)?;
        let key = VerifyingKey::from_bytes(&m.identity_key).map_err(|_| ProtocolError::BadGatewaySignature)?;
        verify_eddsa_detached(jws, &header, &token.to_payload()[..], &key).map_err(|e| match e {
            // The header names another transcript: a replayed or downgraded exchange.
            JwsError::UnexpectedHeader => ProtocolError::TranscriptMismatch,
            _ => ProtocolError::BadGatewaySignature,
        })?;
        let dh = s.ephemeral.agree(&m.ephemeral)?;

        let mut transcript = s.transcript;
        transcript.add_frame(frame);
        let mut auth = ClientAuth {
            token_id: token.id(),
            client_id: s.config.client_id.as_str().as_bytes().to_vec(),
            ephemeral: s.ephemeral.public(),
            evidence: s.config.evidence.clone(),
            proof: alloc::string::String::new(),
        };
        let th_proof = transcript.hash_partial(FrameType::ClientAuth as u8, &auth.signed_part());
        auth.proof = hs256_detached(&th_proof, token.id().as_str(), token.secret().expose());
        let auth_frame = auth.to_frame();
        transcript.add_frame(&auth_frame);
        let secrets = join_secrets(&dh, token.secret(), &transcript.current(), &s.config.client_id, &gateway_pin);
        self.outputs.push_back(ClientOutput::Transmit(auth_frame));
        let saved = SavedKeyring {
            client_id: s.config.client_id.clone(),
            gateway_pin,
            token_id: token.id(),
            keyring: secrets.keyring.clone(),
        };
        Ok(State::ExpectServerFinished(ExpectServerFinished { transcript, secrets, saved, suite }))
    }

    fn on_server_finished(&mut self, s: ExpectServerFinished, m: ServerFinished, frame: &[u8]) -> Result<State, Error> {
        let th = s.transcript.hash_partial(FrameType::ServerFinished as u8, &m.signed_part());
        if !verify_finished(&s.secrets.server_finished, &th, &m.mac) {
            return Err(ProtocolError::BadGatewayProof.into());
        }
        let mut transcript = s.transcript;
        transcript.add_frame(frame);
        let joined = Joined { gateway_pin: s.saved.gateway_pin, suite: s.suite, ticket: m.ticket, resumed: false };
        self.outputs.push_back(ClientOutput::PersistKeyring(s.saved));
        Ok(State::AwaitPersist(AwaitPersist { transcript, secrets: s.secrets, joined }))
    }

    fn on_resume_challenge(
        &mut self,
        s: ExpectResumeChallenge,
        m: ResumeChallenge,
        frame: &[u8],
    ) -> Result<State, Error> {
        let suite = check_choice(m.version, m.suite, &s.hello.versions, &s.hello.suites)?;
        let dh = s.ephemeral.agree(&m.ephemeral)?;
        let th = s.transcript.hash_partial(FrameType::ResumeChallenge as u8, &m.signed_part());
        let secrets = resume_secrets(&dh, &s.saved.keyring, &th, &s.saved.client_id, &s.saved.gateway_pin);
        if !verify_finished(&secrets.server_finished, &th, &m.mac) {
            return Err(ProtocolError::BadGatewayProof.into());
        }
        let mut transcript = s.transcript;
        transcript.add_frame(frame);
        let th = transcript.hash_partial(FrameType::ResumeFinished as u8, &[]);
        let finished = ResumeFinished { mac: finished_mac(&secrets.client_finished, &th) };
        self.outputs.push_back(ClientOutput::Transmit(finished.to_frame()));
        let joined = Joined { gateway_pin: s.saved.gateway_pin, suite, ticket: Vec::new(), resumed: true };
        self.outputs.push_back(ClientOutput::Established(joined.clone()));
        Ok(State::Established(Established { session: secrets.session.clone(), joined }))
    }
}
