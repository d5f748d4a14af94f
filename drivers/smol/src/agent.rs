//! The agent: [`Agent::join`] once with a token and the gateway's pins, then
//! [`Agent::connect`] (resume with the stored keyring) as often as needed.

use std::sync::Arc;
use std::time::Duration;

use boarding::channel::MAX_PAYLOAD;
use boarding::client::{Client, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::error::Refusal as ProtocolRefusal;
use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::BootstrapToken;
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use crate::error::Error;
use crate::handshake::{AgentEndpoint, drive};
use crate::os_rng;
use crate::session::{AgentSession, Lifecycle, deadline};
use crate::store::{KeyringStore, MemoryKeyringStore};
use crate::tls::{self, PinVerifier, Refusal};

/// The stream an agent session runs over when made by [`Agent`].
pub type AgentStream = futures_rustls::client::TlsStream<TcpStream>;

/// An agent's limits.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Deadline for the TCP connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Deadline for TLS and the Boarding handshake together. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest message payload a session sends or accepts (at most 1 MiB, the
    /// protocol's limit, which is also the default).
    pub max_payload: usize,
    /// How long a session's `recv` waits before sending a keepalive, so the gateway's
    /// idle timeout spares a healthy idle session. Default 20 s (the gateway's idle
    /// timeout defaults to 60 s).
    pub keepalive: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_payload: MAX_PAYLOAD,
            keepalive: Duration::from_secs(20),
        }
    }
}

fn pin_error(e: Error, expected: &[Pin]) -> Error {
    match e {
        Error::Handshake { source: boarding::Error::Refused(ProtocolRefusal::WrongPin { presented }), .. } => {
            Error::PinMismatch { layer: "protocol identity", presented: vec![presented], expected: expected.to_vec() }
        }
        other => other,
    }
}

/// Joins over any stream (no TLS): runs the Boarding join, storing the keyring in
/// `keyrings` before confirming it.
pub async fn join<IO, K>(
    io: IO,
    token: BootstrapToken,
    pins: &[Pin],
    client_id: ClientId,
    keyrings: &K,
    max_payload: usize,
) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: KeyringStore + ?Sized,
{
    let client = Client::join(JoinConfig::new(token, pins.to_vec(), client_id), &mut os_rng());
    let endpoint = AgentEndpoint { client, keyrings: Some(keyrings), cause: None };
    drive(io, endpoint, max_payload).await.map_err(|e| pin_error(e, pins))
}

/// Resumes over any stream (no TLS) with a saved keyring.
pub async fn resume<IO>(io: IO, saved: SavedKeyring, max_payload: usize) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let client = Client::resume(ResumeConfig::new(saved), &mut os_rng());
    let endpoint = AgentEndpoint::<MemoryKeyringStore> { client, keyrings: None, cause: None };
    drive(io, endpoint, max_payload).await
}

/// An agent over TCP and TLS 1.3.
#[derive(Debug, Clone, Default)]
pub struct Agent {
    config: AgentConfig,
}

impl Agent {
    /// An agent with these limits.
    pub fn new(config: AgentConfig) -> Self {
        Self { config }
    }

    /// Connects to `gateway` (`host:port`), checks its TLS certificate against `pins`,
    /// joins with `token` as `client_id`, and stores the keyring in `keyrings` before
    /// confirming it.
    pub async fn join<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        token: BootstrapToken,
        pins: &[Pin],
        client_id: ClientId,
        keyrings: &K,
    ) -> Result<AgentSession<AgentStream>, Error> {
        let work = async {
            let tls = self.tls(gateway, pins).await?;
            let session = join(tls, token, pins, client_id, keyrings, self.config.max_payload).await?;
            Ok(self.with_keepalive(session))
        };
        deadline(self.config.handshake_timeout, "join", work).await
    }

    /// Connects to `gateway` and resumes with the keyring stored in `keyrings`.
    pub async fn connect<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        keyrings: &K,
    ) -> Result<AgentSession<AgentStream>, Error> {
        let saved = keyrings
            .load_keyring()
            .await?
            .ok_or_else(|| Error::NotJoined { location: "the agent's keyring store".into() })?;
        self.connect_with(gateway, saved).await
    }

    /// Connects to `gateway` and resumes with `saved`.
    pub async fn connect_with(&self, gateway: &str, saved: SavedKeyring) -> Result<AgentSession<AgentStream>, Error> {
        let work = async {
            let tls = self.tls(gateway, &[saved.gateway_pin]).await?;
            let session = resume(tls, saved, self.config.max_payload).await?;
            Ok(self.with_keepalive(session))
        };
        deadline(self.config.handshake_timeout, "resume", work).await
    }

    fn with_keepalive(&self, mut session: AgentSession<AgentStream>) -> AgentSession<AgentStream> {
        session.set_lifecycle(Lifecycle { keepalive: Some(self.config.keepalive), ..Lifecycle::default() });
        session
    }

    async fn tls(&self, gateway: &str, pins: &[Pin]) -> Result<AgentStream, Error> {
        let tcp = deadline(self.config.connect_timeout, "TCP connection", async {
            TcpStream::connect(gateway).await.map_err(|source| Error::Connect { addr: gateway.to_owned(), source })
        })
        .await?;
        let _ = tcp.set_nodelay(true);
        let verifier = Arc::new(PinVerifier::new(pins.to_vec()));
        let connector = TlsConnector::from(tls::client_config(Arc::clone(&verifier))?);
        let name = ServerName::try_from(tls::SERVER_NAME).map_err(|e| Error::TlsSetup(e.to_string()))?;
        connector.connect(name, tcp).await.map_err(|source| match verifier.take_refusal() {
            Some(Refusal::Pin { presented }) => {
                Error::PinMismatch { layer: "TLS certificate", presented, expected: pins.to_vec() }
            }
            Some(Refusal::Chain(reason)) => Error::CertificateChain { reason },
            None => Error::Tls {
                source,
                cause: "the server is not a Boarding gateway speaking TLS 1.3, or it dropped the connection",
            },
        })
    }
}
