//! The one handshake loop, for both sides: drain the core's outputs, answer its
//! requests, write what it transmits, read what the peer sends, until the handshake
//! is established or has failed (the core's run-loop contract, [`boarding::handshake`]).

use std::future::Future;
use std::time::Instant;

use boarding::channel::{Channel, Side};
use boarding::client::{Client, ClientRequest, ClientSession, PersistFailed, SessionInfo};
use boarding::handshake::Output;
use boarding::identity::ClientId;
use boarding::server::{Admission, AdmissionRequest, Server, ServerRequest, ServerSession, VerifiedClient};
use boarding::storage::{StorageAnswer, StorageRequest};
use boarding::token::TokenId;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::metrics::{GatewayMetrics, HandshakeKind, operation_label};
use crate::session::{READ_CHUNK, Session, unix_now};
use crate::store::{KeyringStore, Store};

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
                    return Ok(Session::new(io, channel, peer, buffered, max_payload));
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

/// What the gateway application decides for each join.
pub trait Admit: Send + Sync + 'static {
    /// Admit (with a ticket) or refuse the client; see [`boarding::server::Admission`].
    fn admit(&self, request: &AdmissionRequest) -> Admission;
}

impl<F: Fn(&AdmissionRequest) -> Admission + Send + Sync + 'static> Admit for F {
    fn admit(&self, request: &AdmissionRequest) -> Admission {
        self(request)
    }
}

/// Admits every client that proves its token, with no ticket.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admit for AdmitAll {
    fn admit(&self, _: &AdmissionRequest) -> Admission {
        Admission::admit()
    }
}

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
            StorageRequest::LookupKeyring { client_id } | StorageRequest::ConfirmKeyring { client_id, .. } => {
                self.client_id = Some(client_id.clone());
            }
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
    pub(crate) metrics: &'a GatewayMetrics,
    pub(crate) attempt: &'a mut Attempt,
    pub(crate) cause: Option<Error>,
}

impl<S: Store + ?Sized> Endpoint for GatewayEndpoint<'_, S> {
    type Request = ServerRequest;
    type Peer = VerifiedClient;
    const SIDE: Side = Side::Server;

    fn feed(&mut self, bytes: &[u8]) {
        let _ = self.server.handle_input(unix_now(), bytes);
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
                let admission = self.admit.admit(&request);
                if matches!(admission, Admission::Refuse) {
                    self.metrics.admission_refused();
                }
                let _ = self.server.handle_admission(admission);
            }
            ServerRequest::Storage(request) => {
                self.attempt.note(&request);
                let operation = operation_label(&request);
                let started = Instant::now();
                let answered = self.store.answer(request).await;
                self.metrics.store_operation(operation, started.elapsed(), answered.is_ok());
                if matches!(answered, Ok(StorageAnswer::Keyring(None))) {
                    self.attempt.unknown_client = true;
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
    pub(crate) cause: Option<Error>,
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
        let ClientRequest::PersistKeyring(saved) = request;
        // Durably stored before the confirmation leaves: a crash here leaves an
        // unconfirmed keyring at the gateway, which a retry replaces.
        let stored = match self.keyrings {
            Some(store) => store.save_keyring(&saved).await,
            None => Ok(()),
        };
        let outcome = match stored {
            Ok(()) => Ok(()),
            Err(e) => {
                self.cause = Some(e.into());
                Err(PersistFailed)
            }
        };
        let _ = self.client.handle_persisted(outcome);
    }

    fn take_cause(&mut self) -> Option<Error> {
        self.cause.take()
    }

    fn into_parts(self) -> Result<(Channel, SessionInfo, Vec<u8>), boarding::Error> {
        let ClientSession { channel, info, buffered } = self.client.into_session()?;
        Ok((channel, info, buffered))
    }
}
