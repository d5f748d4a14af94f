//! The gateway's state machine: one [`Server`] per connection.
//!
//! Feed the client's bytes to [`Server::handle_input`] with the current time, drain
//! [`Server::poll_output`] until it returns `None`, carry out each
//! [`StorageRequest`] and resume with [`Server::handle_storage`]. When
//! [`ServerOutput::Established`] appears, [`Server::into_session`] yields the channel
//! and the client's [`VerifiedClient`] identity.
//!
//! ```text
//! join:   ExpectHello -ClientHello-> AwaitTokens -tokens-> ExpectClientAuth
//!           -ClientAuth-> AwaitRedeem -redeemed-> ExpectClientFinished
//!           -ClientFinished-> AwaitConfirm -confirmed-> Established
//! resume: ExpectHello -ResumeHello-> AwaitKeyring -keyring-> ExpectResumeFinished
//!           -ResumeFinished-> [AwaitConfirm, if unconfirmed] -> Established
//! any error -> Failed (an alert is queued; the error is returned on every later call)
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem;

use crate::UnixTime;
use crate::channel::{Channel, Side};
use crate::error::{Error, ProtocolError};
use crate::identity::{ClientId, GatewayIdentity};
use crate::inbound::{Inbound, body};
use crate::jws::{challenge_header, check_hs256_detached, eddsa_detached};
use crate::keys::{
    EphemeralSecret, JoinSecrets, Keyring, ResumeSecrets, SessionKeys, SymmetricKey, finished_mac, join_secrets,
    resume_secrets, verify_finished,
};
use crate::messages::{
    AlertMessage, ClientAuth, ClientFinished, ClientHello, FrameType, HandshakeMessage, MAX_CHALLENGES, MAX_TICKET,
    Message, NONCE_LEN, ResumeChallenge, ResumeFinished, ResumeHello, ServerChallenge, ServerFinished,
};
use crate::pin::Pin;
use crate::storage::{ConfirmRefusal, KeyringRecord, RedeemRefusal, RedeemRequest, StorageAnswer, StorageRequest};
use crate::suite::{MacSuite, SUPPORTED_VERSIONS, choose};
use crate::token::{TokenId, TokenRecord, TokenUnusable};
use crate::transcript::Transcript;

/// A gateway's settings, shared by all its connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    identity: GatewayIdentity,
    pin: Pin,
    suites: Vec<MacSuite>,
    max_seed_challenges: usize,
}

impl ServerConfig {
    /// Defaults: every suite (BLAKE3 preferred), up to 16 challenges in the seed flow.
    pub fn new(identity: GatewayIdentity) -> Self {
        let pin = identity.pin();
        Self { identity, pin, suites: MacSuite::ALL.to_vec(), max_seed_challenges: MAX_CHALLENGES }
    }

    /// The MAC suites to accept, most preferred first (an empty list accepts none).
    pub fn with_suites(mut self, suites: &[MacSuite]) -> Self {
        self.suites = suites.to_vec();
        self
    }

    /// The most tokens to answer for in the seed flow (clamped to 1..=16). Each one
    /// answered gives an eavesdropper one more token to attack offline, so keep it low.
    pub fn with_max_seed_challenges(mut self, n: usize) -> Self {
        self.max_seed_challenges = n.clamp(1, MAX_CHALLENGES);
        self
    }

    /// The gateway's identity.
    pub fn identity(&self) -> &GatewayIdentity {
        &self.identity
    }

    /// The gateway's pin.
    pub fn pin(&self) -> Pin {
        self.pin
    }
}

/// What the gateway state machine wants done next.
#[derive(Debug)]
pub enum ServerOutput {
    /// Send these bytes to the client.
    Transmit(Vec<u8>),
    /// Carry out this storage request and answer with [`Server::handle_storage`].
    Storage(StorageRequest),
    /// The handshake is complete; call [`Server::into_session`].
    Established(VerifiedClient),
}

/// A client identity that only a successful handshake can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    client_id: ClientId,
    token_id: TokenId,
    labels: BTreeMap<String, String>,
    evidence: Vec<u8>,
    resumed: bool,
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
    /// Attestation evidence sent with the join (empty on resume or if none).
    pub fn evidence(&self) -> &[u8] {
        &self.evidence
    }
    /// Whether this session came from a resume rather than a join.
    pub fn resumed(&self) -> bool {
        self.resumed
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
struct AwaitRedeem {
    transcript: Transcript,
    secrets: JoinSecrets,
    peer: VerifiedClient,
    suite: MacSuite,
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
    hello: ResumeHello,
    client_id: ClientId,
    negotiated: Negotiated,
}

#[derive(Debug)]
struct ExpectResumeFinished {
    transcript: Transcript,
    secrets: ResumeSecrets,
    record: Option<KeyringRecord>,
    suite: MacSuite,
}

#[derive(Debug)]
struct AwaitConfirm {
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
    AwaitRedeem(AwaitRedeem),
    ExpectClientFinished(ExpectClientFinished),
    AwaitKeyring(AwaitKeyring),
    ExpectResumeFinished(ExpectResumeFinished),
    AwaitConfirm(AwaitConfirm),
    Established(Established),
    Failed(Error),
}

impl State {
    /// The message this state waits for, if it waits for one.
    fn expecting(&self) -> Option<&'static str> {
        match self {
            Self::ExpectHello => Some("ClientHello or ResumeHello"),
            Self::ExpectClientAuth(_) => Some("ClientAuth"),
            Self::ExpectClientFinished(_) => Some("ClientFinished"),
            Self::ExpectResumeFinished(_) => Some("ResumeFinished"),
            _ => None,
        }
    }
}

/// One connection's gateway-side handshake.
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    state: State,
    inbound: Inbound,
    outputs: VecDeque<ServerOutput>,
    now: UnixTime,
    nonce: [u8; NONCE_LEN],
    ephemeral: EphemeralSecret,
    decoy: Keyring,
}

impl Server {
    /// A new connection. All the randomness it will need (nonce, ephemeral key, and
    /// the decoy keyring for unknown resumes) is drawn here.
    pub fn new<R: rand_core::CryptoRng + ?Sized>(config: impl Into<Arc<ServerConfig>>, rng: &mut R) -> Self {
        let nonce = crate::random_array(rng);
        let ephemeral = EphemeralSecret::generate(rng);
        let decoy = Keyring {
            c2s: SymmetricKey::from_bytes(crate::random_array(rng)),
            s2c: SymmetricKey::from_bytes(crate::random_array(rng)),
        };
        Self {
            config: config.into(),
            state: State::ExpectHello,
            inbound: Inbound::default(),
            outputs: VecDeque::new(),
            now: 0,
            nonce,
            ephemeral,
            decoy,
        }
    }

    /// Feeds bytes from the client, with the current time.
    pub fn handle_input(&mut self, now: UnixTime, bytes: &[u8]) -> Result<(), Error> {
        self.check_failed()?;
        self.now = now;
        if let Err(e) = self.inbound.push(bytes) {
            return Err(self.fail(e));
        }
        self.process()
    }

    /// Resumes after a [`StorageRequest`] with the store's answer.
    pub fn handle_storage(&mut self, answer: StorageAnswer) -> Result<(), Error> {
        self.check_failed()?;
        let state = mem::replace(&mut self.state, State::ExpectHello);
        let next = match (state, answer) {
            (_, StorageAnswer::Failed) => Err(ProtocolError::Storage.into()),
            (State::AwaitTokens(s), StorageAnswer::Tokens(records)) => self.on_tokens(s, records),
            (State::AwaitRedeem(s), StorageAnswer::Redeemed(outcome)) => self.on_redeemed(s, outcome),
            (State::AwaitKeyring(s), StorageAnswer::Keyring(record)) => self.on_keyring(s, record),
            (State::AwaitConfirm(s), StorageAnswer::Confirmed(outcome)) => self.on_confirmed(s, outcome),
            _ => Err(ProtocolError::Misuse("storage answer does not match the pending request").into()),
        };
        self.advance(next)?;
        self.process()
    }

    /// The next thing to do, or `None` when there is nothing until more input.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// Whether the handshake completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// The error the handshake failed with, if it did.
    pub fn failure(&self) -> Option<&Error> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Turns an established handshake into its session.
    pub fn into_session(mut self) -> Result<ServerSession, Error> {
        match mem::replace(&mut self.state, State::ExpectHello) {
            State::Established(e) => Ok(ServerSession {
                channel: Channel::new(Side::Server, e.suite, &e.session),
                peer: e.peer,
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
        if !matches!(e, Error::Protocol(ProtocolError::PeerAlert(_) | ProtocolError::UnknownAlert(_))) {
            let alert = AlertMessage { code: e.alert().code() };
            self.outputs.push_back(ServerOutput::Transmit(alert.to_frame()));
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

    fn process(&mut self) -> Result<(), Error> {
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

    fn on_frame(&mut self, (frame_type, frame): (FrameType, Vec<u8>), expected: &'static str) -> Result<State, Error> {
        let message = HandshakeMessage::decode(frame_type, body(&frame))?;
        let state = mem::replace(&mut self.state, State::ExpectHello);
        match (state, message) {
            (_, HandshakeMessage::Alert(a)) => Err(crate::error::peer_alert(a.code).into()),
            (State::ExpectHello, HandshakeMessage::ClientHello(m)) => self.on_client_hello(m, &frame),
            (State::ExpectHello, HandshakeMessage::ResumeHello(m)) => self.on_resume_hello(m, &frame),
            (State::ExpectClientAuth(s), HandshakeMessage::ClientAuth(m)) => self.on_client_auth(s, m, &frame),
            (State::ExpectClientFinished(s), HandshakeMessage::ClientFinished(m)) => {
                self.on_client_finished(s, m, &frame)
            }
            (State::ExpectResumeFinished(s), HandshakeMessage::ResumeFinished(m)) => {
                self.on_resume_finished(s, m, &frame)
            }
            _ => Err(ProtocolError::UnexpectedMessage { expected, got: frame_type as u8 }.into()),
        }
    }

    fn negotiate(&self, versions: &[u16], suites: &[u16]) -> Result<Negotiated, ProtocolError> {
        let version = choose(SUPPORTED_VERSIONS, versions).ok_or(ProtocolError::NoCommonVersion)?;
        let offered: Vec<MacSuite> = suites.iter().filter_map(|&c| MacSuite::from_code(c)).collect();
        let suite = choose(&self.config.suites, &offered).ok_or(ProtocolError::NoCommonSuite)?;
        Ok(Negotiated { version, suite })
    }

    fn on_client_hello(&mut self, hello: ClientHello, frame: &[u8]) -> Result<State, Error> {
        let negotiated = self.negotiate(&hello.versions, &hello.suites)?;
        let mut transcript = Transcript::new();
        transcript.add_frame(frame);
        let request = match hello.token_id {
            Some(token_id) => StorageRequest::LookupToken { token_id },
            None => StorageRequest::ActiveTokens { now: self.now, limit: self.config.max_seed_challenges },
        };
        self.outputs.push_back(ServerOutput::Storage(request));
        Ok(State::AwaitTokens(AwaitTokens { transcript, hello, negotiated }))
    }

    fn on_tokens(&mut self, s: AwaitTokens, records: Vec<TokenRecord>) -> Result<State, Error> {
        let now = self.now;
        let tokens: Vec<TokenRecord> = match s.hello.token_id {
            Some(id) => {
                let record = records.into_iter().find(|r| r.id() == id).ok_or(ProtocolError::UnknownToken)?;
                // Exhaustion is decided at redemption, atomically: a used-up token may
                // still be redeemed by the retry of the join that used it.
                if record.usable_at(now) == Err(TokenUnusable::Expired) {
                    return Err(ProtocolError::ExpiredToken.into());
                }
                alloc::vec![record]
            }
            None => {
                let mut usable: Vec<TokenRecord> = Vec::new();
                for r in records.into_iter().filter(|r| r.usable_at(now) != Err(TokenUnusable::Expired)) {
                    if usable.len() < self.config.max_seed_challenges && usable.iter().all(|u| u.id() != r.id()) {
                        usable.push(r);
                    }
                }
                if usable.is_empty() {
                    return Err(ProtocolError::UnknownToken.into());
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
        self.outputs.push_back(ServerOutput::Transmit(frame));
        Ok(State::ExpectClientAuth(ExpectClientAuth {
            transcript,
            named_token: s.hello.token_id,
            tokens,
            negotiated: s.negotiated,
        }))
    }

    fn on_client_auth(&mut self, s: ExpectClientAuth, auth: ClientAuth, frame: &[u8]) -> Result<State, Error> {
        if s.named_token.is_some_and(|id| id != auth.token_id) {
            return Err(ProtocolError::TokenMismatch.into());
        }
        let record = s.tokens.iter().find(|r| r.id() == auth.token_id).ok_or(ProtocolError::UnknownToken)?;
        let client_id = ClientId::from_bytes(&auth.client_id).map_err(|_| ProtocolError::InvalidClientId)?;
        let th_proof = s.transcript.hash_partial(FrameType::ClientAuth as u8, &auth.signed_part());
        let secret = record.token.secret();
        check_hs256_detached(&auth.proof, &th_proof, record.id().as_str(), secret.expose())
            .map_err(|_| ProtocolError::BadClientProof)?;
        let dh = self.ephemeral.agree(&auth.ephemeral)?;
        let mut transcript = s.transcript;
        transcript.add_frame(frame);
        let secrets = join_secrets(&dh, secret, &transcript.current(), &client_id, &self.config.pin);
        self.outputs.push_back(ServerOutput::Storage(StorageRequest::Redeem(RedeemRequest {
            token_id: auth.token_id,
            client_id: client_id.clone(),
            keyring: secrets.keyring.clone(),
            now: self.now,
            evidence: auth.evidence.clone(),
        })));
        let peer = VerifiedClient {
            client_id,
            token_id: auth.token_id,
            labels: record.labels.clone(),
            evidence: auth.evidence,
            resumed: false,
        };
        Ok(State::AwaitRedeem(AwaitRedeem { transcript, secrets, peer, suite: s.negotiated.suite }))
    }

    fn on_redeemed(
        &mut self,
        s: AwaitRedeem,
        outcome: Result<crate::storage::Redemption, RedeemRefusal>,
    ) -> Result<State, Error> {
        let redemption = outcome.map_err(|refusal| match refusal {
            RedeemRefusal::UnknownToken => ProtocolError::UnknownToken,
            RedeemRefusal::Expired => ProtocolError::ExpiredToken,
            RedeemRefusal::Exhausted => ProtocolError::ExhaustedToken,
            RedeemRefusal::ClientIdTaken => ProtocolError::ClientIdTaken,
        })?;
        if redemption.ticket.len() > MAX_TICKET {
            return Err(ProtocolError::Misuse("ticket longer than 4 KiB").into());
        }
        let mut finished = ServerFinished { ticket: redemption.ticket, mac: [0; 32] };
        let th = s.transcript.hash_partial(FrameType::ServerFinished as u8, &finished.signed_part());
        finished.mac = finished_mac(&s.secrets.server_finished, &th);
        let frame = finished.to_frame();
        let mut transcript = s.transcript;
        transcript.add_frame(&frame);
        self.outputs.push_back(ServerOutput::Transmit(frame));
        let mut peer = s.peer;
        peer.labels = redemption.labels;
        Ok(State::ExpectClientFinished(ExpectClientFinished { transcript, secrets: s.secrets, peer, suite: s.suite }))
    }

    fn on_client_finished(&mut self, s: ExpectClientFinished, m: ClientFinished, _: &[u8]) -> Result<State, Error> {
        let th = s.transcript.hash_partial(FrameType::ClientFinished as u8, &[]);
        if !verify_finished(&s.secrets.client_finished, &th, &m.mac) {
            return Err(ProtocolError::BadClientProof.into());
        }
        self.outputs.push_back(ServerOutput::Storage(StorageRequest::ConfirmKeyring {
            client_id: s.peer.client_id.clone(),
            keyring_id: s.secrets.keyring.id(),
        }));
        Ok(State::AwaitConfirm(AwaitConfirm { session: s.secrets.session.clone(), peer: s.peer, suite: s.suite }))
    }

    fn on_resume_hello(&mut self, hello: ResumeHello, frame: &[u8]) -> Result<State, Error> {
        let negotiated = self.negotiate(&hello.versions, &hello.suites)?;
        let client_id = ClientId::from_bytes(&hello.client_id).map_err(|_| ProtocolError::InvalidClientId)?;
        let mut transcript = Transcript::new();
        transcript.add_frame(frame);
        self.outputs.push_back(ServerOutput::Storage(StorageRequest::LookupKeyring { client_id: client_id.clone() }));
        Ok(State::AwaitKeyring(AwaitKeyring { transcript, hello, client_id, negotiated }))
    }

    fn on_keyring(&mut self, s: AwaitKeyring, record: Option<KeyringRecord>) -> Result<State, Error> {
        // An unknown client gets a challenge made with a random keyring through the
        // same code path: it cannot tell it from a real one.
        let record = record.filter(|r| r.client_id == s.client_id);
        let keyring = record.as_ref().map_or(&self.decoy, |r| &r.keyring);
        let dh = self.ephemeral.agree(&s.hello.ephemeral)?;
        let mut challenge = ResumeChallenge {
            version: s.negotiated.version,
            suite: s.negotiated.suite.code(),
            nonce: self.nonce,
            ephemeral: self.ephemeral.public(),
            mac: [0; 32],
        };
        let th = s.transcript.hash_partial(FrameType::ResumeChallenge as u8, &challenge.signed_part());
        let secrets = resume_secrets(&dh, keyring, &th, &s.client_id, &self.config.pin);
        challenge.mac = finished_mac(&secrets.server_finished, &th);
        let frame = challenge.to_frame();
        let mut transcript = s.transcript;
        transcript.add_frame(&frame);
        self.outputs.push_back(ServerOutput::Transmit(frame));
        Ok(State::ExpectResumeFinished(ExpectResumeFinished { transcript, secrets, record, suite: s.negotiated.suite }))
    }

    fn on_resume_finished(&mut self, s: ExpectResumeFinished, m: ResumeFinished, _: &[u8]) -> Result<State, Error> {
        let th = s.transcript.hash_partial(FrameType::ResumeFinished as u8, &[]);
        let valid = verify_finished(&s.secrets.client_finished, &th, &m.mac);
        let record = s.record.ok_or(ProtocolError::UnknownClient)?;
        if !valid {
            return Err(ProtocolError::BadClientProof.into());
        }
        let peer = VerifiedClient {
            client_id: record.client_id.clone(),
            token_id: record.token_id,
            labels: record.labels.clone(),
            evidence: Vec::new(),
            resumed: true,
        };
        if record.confirmed {
            self.outputs.push_back(ServerOutput::Established(peer.clone()));
            return Ok(State::Established(Established { session: s.secrets.session.clone(), peer, suite: s.suite }));
        }
        self.outputs.push_back(ServerOutput::Storage(StorageRequest::ConfirmKeyring {
            client_id: record.client_id.clone(),
            keyring_id: record.keyring.id(),
        }));
        Ok(State::AwaitConfirm(AwaitConfirm { session: s.secrets.session.clone(), peer, suite: s.suite }))
    }

    fn on_confirmed(&mut self, s: AwaitConfirm, outcome: Result<(), ConfirmRefusal>) -> Result<State, Error> {
        outcome.map_err(|refusal| match refusal {
            ConfirmRefusal::Missing => ProtocolError::UnknownClient,
            ConfirmRefusal::Replaced => ProtocolError::ClientIdTaken,
        })?;
        self.outputs.push_back(ServerOutput::Established(s.peer.clone()));
        Ok(State::Established(Established { session: s.session, peer: s.peer, suite: s.suite }))
    }
}
