//! The one handshake loop, for both sides: drain the core's outputs, answer its
//! requests, write what it transmits, read what the peer sends, until the handshake
//! is established or has failed (the core's run-loop contract, [`boarding::handshake`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use boarding::UnixTime;
use boarding::attestation::{AttestFailed, AttestationBinding, AttestedIdentity};
use boarding::channel::{Channel, Side};
use boarding::client::{Client, ClientRequest, ClientSession, PersistFailed, SavedKeyring, SessionInfo};
use boarding::handshake::Output;
use boarding::identity::ClientId;
use boarding::keys::KeyringId;
use boarding::server::{
    Admission, AdmissionRequest, Server, ServerRequest, ServerSession, TicketRequest, VerifiedClient,
};
use boarding::storage::{StorageAnswer, StorageRequest};
use boarding::token::TokenId;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::certificate::{CertificateSigner, NodeSubject};
use crate::error::Error;
use crate::metrics::{GatewayMetrics, HandshakeKind, operation_label};
use crate::session::{READ_CHUNK, Session};
use crate::store::{KeyringStore, Store};
use crate::ticket::{Request, Ticket};

/// One side of a handshake as the loop sees it: the core's state machine and how
/// this driver answers its requests.
pub(crate) trait Endpoint {
    /// The core's request type.
    type Request;
    /// What the side learns at the end.
    type Peer;
    /// Which side this is (for errors).
    const SIDE: Side;

    /// Feeds the peer's bytes (a failure comes out as an output).
    fn feed(&mut self, bytes: &[u8]);
    /// The core's next output.
    fn poll(&mut self) -> Option<Output<Self::Request, Self::Peer>>;
    /// Carries a request out and answers it. A failure of this driver's own (a store
    /// error) is answered to the core as a failure and kept as the cause to report.
    fn answer(&mut self, request: Self::Request) -> impl Future<Output = ()> + Send;
    /// The cause kept by [`Endpoint::answer`], if any.
    fn take_cause(&mut self) -> Option<Error>;
    /// The channel, the peer and the bytes buffered after the handshake.
    fn into_parts(self) -> Result<(Channel, Self::Peer, Vec<u8>), boarding::Error>;
}

/// Drives `endpoint`'s handshake over `io` to a session. One way out: the core's
/// `Established` or `Failed` output (or an I/O error).
pub(crate) async fn drive<IO, E>(mut io: IO, mut endpoint: E, max_payload: usize) -> Result<Session<IO, E::Peer>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    E: Endpoint,
{
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut outgoing: Vec<u8> = Vec::new();
    loop {
        while let Some(output) = endpoint.poll() {
            match output {
                Output::Transmit(bytes) => outgoing.extend_from_slice(&bytes),
                Output::Request(request) => endpoint.answer(request).await,
                Output::Established(_) => {
                    write(&mut io, &outgoing).await?;
                    let (channel, peer, buffered) =
                        endpoint.into_parts().map_err(|source| Error::Handshake { source, side: E::SIDE })?;
                    return Ok(Session::new(io, E::SIDE, channel, peer, buffered, max_payload));
                }
                Output::Failed(source) => {
                    // The alert, best effort: the peer may be gone already.
                    let _ = write(&mut io, &outgoing).await;
                    return Err(endpoint.take_cause().unwrap_or(Error::Handshake { source, side: E::SIDE }));
                }
            }
        }
        write(&mut io, &outgoing).await?;
        outgoing.clear();
        let n = io.read(&mut chunk).await.map_err(Error::io("receiving a handshake message"))?;
        let read = chunk.get(..n).filter(|r| !r.is_empty()).ok_or(Error::HandshakeEof)?;
        endpoint.feed(read);
    }
}

async fn write<IO: AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) -> Result<(), Error> {
    if !bytes.is_empty() {
        io.write_all(bytes).await.map_err(Error::io("sending a handshake message"))?;
    }
    io.flush().await.map_err(Error::io("sending a handshake message"))
}

/// What the gateway application decides a join on, once its [`Validator`] has judged
/// the evidence: the client has proven it holds the token, nothing is stored yet.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    /// The client id the agent asked for.
    pub client_id: &'a ClientId,
    /// The token it proved it holds.
    pub token_id: TokenId,
    /// That token's labels, as looked up for this handshake.
    pub labels: &'a BTreeMap<String, String>,
    /// Who the validator attested the client to be (`None` if it attested nothing).
    pub attested: Option<&'a AttestedIdentity>,
}

/// The gateway application's decision on one join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admit the client with this join ticket, sent to it in `ServerFinished`: one per
    /// join, made from the client id, the labels and the attested identity. It travels
    /// as the application part of a [`Ticket`](crate::ticket::Ticket) (with the node's
    /// certificate, if it asked for one), so the agent reads it with
    /// [`Ticket::decode`](crate::ticket::Ticket::decode); with a certificate, both
    /// together fit in 4 KiB.
    Admit {
        /// The ticket (may be empty).
        ticket: Vec<u8>,
    },
    /// Refuse the client: it is told `AdmissionRefused`, and nothing is charged.
    Refuse,
}

/// What the gateway application decides for each join: the ticket this client gets, or
/// a refusal. It runs before redemption, so a refusal charges nothing.
pub trait Admit: Send + Sync + 'static {
    /// Admits (with this join's ticket) or refuses the client.
    fn admit(&self, join: &JoinRequest<'_>) -> Decision;
}

impl<F: Fn(&JoinRequest<'_>) -> Decision + Send + Sync + 'static> Admit for F {
    fn admit(&self, join: &JoinRequest<'_>) -> Decision {
        self(join)
    }
}

/// Admits every client that proves its token (and passes the validator), with no ticket.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admit for AdmitAll {
    fn admit(&self, _: &JoinRequest<'_>) -> Decision {
        Decision::Admit { ticket: Vec::new() }
    }
}

/// What a [`Validator`] judges: the agent's evidence and the session's binding, which
/// evidence made for this session commits to (`spec/PROTOCOL.md` §7.3.1).
#[derive(Debug, Clone, Copy)]
pub struct EvidenceRequest<'a> {
    /// The evidence the agent sent (empty if it had nothing to attest).
    pub evidence: &'a [u8],
    /// The session's binding, computed from the gateway's own transcript.
    pub binding: &'a AttestationBinding,
    /// The client id the agent asked for.
    pub client_id: &'a ClientId,
    /// The token it proved it holds.
    pub token_id: TokenId,
    /// That token's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The gateway's current time (Unix seconds): validity periods are judged at it.
    pub now: UnixTime,
}

/// Why a [`Validator`] refused evidence: the agent is told `AttestationRefused`, the
/// gateway's log gets this reason.
#[derive(Debug)]
pub struct AttestationRefused(Box<dyn std::error::Error + Send + Sync>);

impl AttestationRefused {
    /// A refusal for this reason.
    pub fn new(reason: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(reason))
    }

    /// The reason, to downcast to the validator's own error type.
    pub fn reason(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for AttestationRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AttestationRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The gateway's judge of attestation evidence: it runs before the application's
/// [`Admit`] and before redemption, so a refusal charges nothing.
pub trait Validator: Send + Sync + 'static {
    /// The identity the evidence attests (`None`: it attests nothing, and the client is
    /// judged on its token alone), or a refusal.
    ///
    /// # Errors
    ///
    /// [`AttestationRefused`] for evidence that is not bound to `request.binding`, not
    /// issued by an authority this validator trusts, not valid at `request.now`, or
    /// missing where this validator requires it.
    fn validate(&self, request: &EvidenceRequest<'_>) -> Result<Option<AttestedIdentity>, AttestationRefused>;
}

/// Ignores evidence and attests nothing: what a gateway without attestation runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreEvidence;

impl Validator for IgnoreEvidence {
    fn validate(&self, _: &EvidenceRequest<'_>) -> Result<Option<AttestedIdentity>, AttestationRefused> {
        Ok(None)
    }
}

/// Why an [`Attester`] could not produce evidence: the join fails (the gateway is told
/// `Internal`) and the agent reports this reason.
#[derive(Debug)]
pub struct AttestError(Box<dyn std::error::Error + Send + Sync>);

impl AttestError {
    /// An attester failure for this reason.
    pub fn new(reason: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(reason))
    }
}

impl fmt::Display for AttestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AttestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The agent's producer of attestation evidence: asked once per join, after the
/// gateway's challenge verified, for evidence bound to that session.
pub trait Attester: Send + Sync + 'static {
    /// Evidence that commits to `binding` (at most 8 KiB).
    ///
    /// # Errors
    ///
    /// [`AttestError`] if the evidence cannot be produced (the key is unusable, say).
    fn attest(&self, binding: &AttestationBinding) -> Result<Vec<u8>, AttestError>;
}

/// The gateway's clock: Unix seconds, for token expiry and certificate validity.
pub(crate) type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// What a gateway handshake's requests revealed of the peer's claim, for logs and
/// metrics: verified only if the handshake succeeds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempt {
    /// Join or resume, once a storage request tells.
    pub(crate) kind: HandshakeKind,
    /// The token id the peer named.
    pub(crate) token_id: Option<TokenId>,
    /// The client id the peer named.
    pub(crate) client_id: Option<ClientId>,
    /// A resume named a client id with no keyring (revoked, or never joined). The
    /// peer learns nothing of it (the decoy), but the operator should.
    pub(crate) unknown_client: bool,
    /// A resume proved a retired keyring, and the store recorded a clone suspicion.
    pub(crate) clone_recorded: bool,
}

impl Attempt {
    fn note(&mut self, request: &StorageRequest) {
        if let Some(kind) = HandshakeKind::of_request(request) {
            self.kind = kind;
        }
        match request {
            StorageRequest::LookupToken { token_id } => self.token_id = Some(*token_id),
            StorageRequest::Redeem(redeem) => {
                self.token_id = Some(redeem.token_id);
                self.client_id = Some(redeem.client_id.clone());
            }
            StorageRequest::LookupKeyring { client_id }
            | StorageRequest::ConfirmKeyring { client_id, .. }
            | StorageRequest::RecordClone { client_id, .. }
            | StorageRequest::FenceKeyring { client_id, .. }
            | StorageRequest::CheckKeyring { client_id, .. }
            | StorageRequest::RequestRotation { client_id } => {
                self.client_id = Some(client_id.clone());
            }
            StorageRequest::RotateKeyring(rotate) => self.client_id = Some(rotate.client_id.clone()),
            StorageRequest::UnexpiredTokens { .. } => {}
        }
    }
}

/// The gateway's side: its state machine, its store and its application, and where
/// it reports what it saw.
pub(crate) struct GatewayEndpoint<'a, S: ?Sized> {
    pub(crate) server: Server,
    pub(crate) store: &'a S,
    pub(crate) admit: &'a dyn Admit,
    pub(crate) validator: &'a dyn Validator,
    /// The CA that signs agents' certificate requests (`None`: this gateway issues none).
    pub(crate) signer: Option<&'a dyn CertificateSigner>,
    pub(crate) clock: &'a (dyn Fn() -> UnixTime + Send + Sync),
    pub(crate) metrics: &'a GatewayMetrics,
    pub(crate) attempt: &'a mut Attempt,
    pub(crate) cause: Option<Error>,
}

impl<S: ?Sized> GatewayEndpoint<'_, S> {
    /// The validator's verdict on the evidence, then the application's on the client.
    fn admission(&mut self, request: &AdmissionRequest) -> Admission {
        let evidence = EvidenceRequest {
            evidence: &request.evidence,
            binding: &request.binding,
            client_id: &request.client_id,
            token_id: request.token_id,
            labels: &request.labels,
            now: (self.clock)(),
        };
        let attested = match self.validator.validate(&evidence) {
            Ok(attested) => attested,
            Err(refused) => {
                self.metrics.attestation_refused();
                self.cause = Some(Error::AttestationRefused { client_id: request.client_id.clone(), source: refused });
                return Admission::RefuseAttestation;
            }
        };
        let join = JoinRequest {
            client_id: &request.client_id,
            token_id: request.token_id,
            labels: &request.labels,
            attested: attested.as_ref(),
        };
        let decision = self.admit.admit(&join);
        let subject =
            NodeSubject { client_id: &request.client_id, labels: &request.labels, attested: attested.as_ref() };
        let ticket = match decision {
            Decision::Admit { ticket } => self.ticket(&request.request, ticket, &subject, false),
            Decision::Refuse => {
                self.metrics.admission_refused();
                return Admission::Refuse;
            }
        };
        match ticket {
            Ok(ticket) => Admission::Admit { ticket, attested },
            // The request could not be answered: refused before redemption, so the
            // agent is charged nothing and may retry once the gateway can.
            Err(e) => {
                self.metrics.admission_refused();
                self.cause = Some(e);
                Admission::Refuse
            }
        }
    }

    /// The ticket for a join or a resume: the application's part, and the certificate
    /// for the request's CSR if it carried one.
    fn ticket(
        &self,
        request: &[u8],
        application: Vec<u8>,
        subject: &NodeSubject<'_>,
        renewal: bool,
    ) -> Result<Vec<u8>, Error> {
        let answered = self.answer(request, application, subject);
        if !request.is_empty() {
            self.metrics.certificate(renewal, matches!(answered, Ok((_, true))));
        }
        answered.map(|(ticket, _)| ticket)
    }

    /// The ticket's bytes, and whether they carry a certificate.
    fn answer(
        &self,
        request: &[u8],
        application: Vec<u8>,
        subject: &NodeSubject<'_>,
    ) -> Result<(Vec<u8>, bool), Error> {
        let request = Request::decode(request)?;
        let certificate = match (request.csr, self.signer) {
            (None, _) => None,
            (Some(csr), Some(signer)) => {
                let der = signer.sign(&csr, subject, (self.clock)()).map_err(|e| Error::Certificate {
                    client_id: subject.client_id.clone(),
                    reason: format!("its signing request was refused: {e}"),
                })?;
                Some(der)
            }
            (Some(_), None) => {
                return Err(Error::Certificate {
                    client_id: subject.client_id.clone(),
                    reason: "it asked for a certificate, and this gateway has no certificate authority".into(),
                });
            }
        };
        let issued = certificate.is_some();
        Ok((Ticket { application, certificate }.encode()?, issued))
    }

    /// The answer to a resume's request (a certificate renewal): empty if it cannot be
    /// given, which the agent reports while keeping its current certificate.
    fn resume_ticket(&self, request: &TicketRequest) -> Vec<u8> {
        let client = &request.client;
        let subject =
            NodeSubject { client_id: client.client_id(), labels: client.labels(), attested: client.attested() };
        self.ticket(&request.request, Vec::new(), &subject, true).unwrap_or_else(|e| {
            tracing::warn!(client_id = %client.client_id(), error = %e, "a resume's request was not answered");
            Vec::new()
        })
    }
}

impl<S: Store + ?Sized> Endpoint for GatewayEndpoint<'_, S> {
    type Request = ServerRequest;
    type Peer = VerifiedClient;
    const SIDE: Side = Side::Server;

    fn feed(&mut self, bytes: &[u8]) {
        let _ = self.server.handle_input((self.clock)(), bytes);
    }

    fn poll(&mut self) -> Option<Output<ServerRequest, VerifiedClient>> {
        self.server.poll_output()
    }

    async fn answer(&mut self, request: ServerRequest) {
        match request {
            ServerRequest::Admit(request) => {
                self.attempt.kind = HandshakeKind::Join;
                self.attempt.token_id = Some(request.token_id);
                self.attempt.client_id = Some(request.client_id.clone());
                let admission = self.admission(&request);
                let _ = self.server.handle_admission(admission);
            }
            ServerRequest::Ticket(request) => {
                let ticket = self.resume_ticket(&request);
                let _ = self.server.handle_ticket(ticket);
            }
            ServerRequest::Storage(request) => {
                self.attempt.note(&request);
                let operation = operation_label(&request);
                let started = Instant::now();
                let answered = self.store.answer(request).await;
                self.metrics.store_operation(operation, started.elapsed(), answered.is_ok());
                match answered {
                    Ok(StorageAnswer::Keyring(None)) => self.attempt.unknown_client = true,
                    Ok(StorageAnswer::CloneRecorded(true)) => self.attempt.clone_recorded = true,
                    _ => {}
                }
                let answer = match answered {
                    Ok(answer) => answer,
                    Err(e) => {
                        tracing::error!(error = %e, "the store failed during a handshake");
                        self.cause = Some(e.into());
                        StorageAnswer::Failed
                    }
                };
                let _ = self.server.handle_storage(answer);
            }
        }
    }

    fn take_cause(&mut self) -> Option<Error> {
        self.cause.take()
    }

    fn into_parts(self) -> Result<(Channel, VerifiedClient, Vec<u8>), boarding::Error> {
        let ServerSession { channel, peer, buffered } = self.server.into_session()?;
        Ok((channel, peer, buffered))
    }
}

/// The agent's side: its state machine and where a join's keyring is stored.
pub(crate) struct AgentEndpoint<'a, K: ?Sized> {
    pub(crate) client: Client,
    pub(crate) keyrings: Option<&'a K>,
    /// Who produces the join's evidence (`None`: empty evidence).
    pub(crate) attester: Option<&'a dyn Attester>,
    /// The key whose certificate the join asked for: the ticket's certificate is
    /// stored with it before the keyring (`None`: the join asked for none).
    #[cfg(feature = "ca")]
    pub(crate) node_key: Option<&'a crate::certificate::NodeKey>,
    pub(crate) cause: Option<Error>,
}

impl<K: KeyringStore + ?Sized> AgentEndpoint<'_, K> {
    /// Stores what the join brought (the certificate, if one was asked for, then the
    /// keyring): all of it durably before the confirmation leaves. A crash in between
    /// leaves an unconfirmed keyring at the gateway, which a retry replaces.
    async fn persist(&self, saved: &SavedKeyring, ticket: &[u8]) -> Result<(), Error> {
        #[cfg(feature = "ca")]
        if let Some(key) = self.node_key {
            let certificate = crate::agent::certificate_from_ticket(key, &saved.client_id, ticket)?;
            if let Some(store) = self.keyrings {
                store.save_certificate(&certificate).await?;
            }
        }
        #[cfg(not(feature = "ca"))]
        let _ = ticket;
        if let Some(store) = self.keyrings {
            store.save_keyring(saved).await?;
        }
        Ok(())
    }
}

impl<K: KeyringStore + ?Sized> AgentEndpoint<'_, K> {
    /// Answers a persist request with what storing gave, keeping the driver's error as
    /// the cause to report.
    fn persisted(&mut self, stored: Result<(), Error>) {
        let outcome = stored.map_err(|e| {
            self.cause = Some(e);
            PersistFailed
        });
        let _ = self.client.handle_persisted(outcome);
    }

    /// Stores a rotation's new keyring (with the one it replaces) before its proof
    /// leaves, only over the state the resume started from.
    async fn persist_rotation(&self, saved: &SavedKeyring, replaces: &KeyringId) -> Result<(), Error> {
        let Some(store) = self.keyrings else {
            return Err(Error::RotationUnstored { client_id: saved.client_id.clone() });
        };
        if store.replace_keyring(replaces, saved).await? {
            Ok(())
        } else {
            Err(Error::RotationConflict { client_id: saved.client_id.clone() })
        }
    }
}

impl<K: KeyringStore + ?Sized> Endpoint for AgentEndpoint<'_, K> {
    type Request = ClientRequest;
    type Peer = SessionInfo;
    const SIDE: Side = Side::Client;

    fn feed(&mut self, bytes: &[u8]) {
        let _ = self.client.handle_input(bytes);
    }

    fn poll(&mut self) -> Option<Output<ClientRequest, SessionInfo>> {
        self.client.poll_output()
    }

    async fn answer(&mut self, request: ClientRequest) {
        let saved = match request {
            ClientRequest::Attest { binding } => {
                let evidence = match self.attester.map_or(Ok(Vec::new()), |a| a.attest(&binding)) {
                    Ok(evidence) => Ok(evidence),
                    Err(e) => {
                        self.cause = Some(Error::Attest(e));
                        Err(AttestFailed)
                    }
                };
                let _ = self.client.handle_evidence(evidence);
                return;
            }
            ClientRequest::PersistKeyring { saved, ticket } => (saved, ticket),
            ClientRequest::PersistRotation { saved, replaces } => {
                let stored = self.persist_rotation(&saved, &replaces).await;
                self.persisted(stored);
                return;
            }
        };
        let (saved, ticket) = saved;
        let stored = self.persist(&saved, &ticket).await;
        self.persisted(stored);
    }

    fn take_cause(&mut self) -> Option<Error> {
        self.cause.take()
    }

    fn into_parts(self) -> Result<(Channel, SessionInfo, Vec<u8>), boarding::Error> {
        let ClientSession { channel, info, buffered } = self.client.into_session()?;
        Ok((channel, info, buffered))
    }
}
