//! The agent: [`Agent::join`] once with a token and the gateway's pins, then
//! [`Agent::connect`] (resume with the stored keyring) as often as needed.

#[cfg(feature = "tls")]
use std::future::Future;
#[cfg(feature = "tls")]
use std::sync::{Arc, Mutex};
#[cfg(feature = "tls")]
use std::time::Duration;

#[cfg(feature = "tls")]
use boarding::channel::MAX_PAYLOAD;
use boarding::client::{Client, JoinConfig, ResumeConfig, SavedKeyring};
use boarding::error::Refusal as ProtocolRefusal;
use boarding::identity::ClientId;
use boarding::pin::Pin;
use boarding::token::BootstrapToken;
#[cfg(feature = "tls")]
use futures_rustls::TlsConnector;
#[cfg(feature = "tls")]
use rustls::pki_types::ServerName;
use smol::io::{AsyncRead, AsyncWrite};
#[cfg(feature = "tls")]
use smol::net::TcpStream;

use crate::error::Error;
use crate::handshake::{AgentEndpoint, Attester, drive};
use crate::os_rng;
use crate::session::AgentSession;
#[cfg(feature = "tls")]
use crate::session::{Lifecycle, deadline};
use crate::store::{KeyringStore, MemoryKeyringStore};
#[cfg(feature = "tls")]
use crate::tls::{self, PinVerifier, Refusal};

/// The stream an agent session runs over when made by [`Agent`].
#[cfg(feature = "tls")]
pub type AgentStream = futures_rustls::client::TlsStream<TcpStream>;

/// An agent's limits.
#[cfg(feature = "tls")]
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
    /// How many times a join or resume is retried when the gateway is busy or
    /// unreachable (the connection is refused or dropped before TLS completes).
    /// Default 4. A retried join is charged once (the protocol's retry rule).
    pub retries: u32,
    /// The first retry's backoff; each later one doubles it, and each is jittered to
    /// between half and one and a half times, so agents a restart disconnected do not
    /// come back in step. Default 200 ms.
    pub backoff: Duration,
}

#[cfg(feature = "tls")]
impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_payload: MAX_PAYLOAD,
            keepalive: Duration::from_secs(20),
            retries: 4,
            backoff: Duration::from_millis(200),
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

/// Joins over any stream (no TLS): runs the Boarding join, with evidence from
/// `attester` for this session (`None`: empty evidence), storing the keyring in
/// `keyrings` before confirming it.
///
/// # Errors
///
/// [`Error::Attest`] if `attester` cannot produce evidence (the join fails; the gateway
/// is told `Internal`);
/// [`Error::PinMismatch`] if the gateway's identity matches none of `pins`;
/// [`Error::Handshake`] with the core's error for any other failure of the join (the token
/// is unknown, expired or used up, the client id is taken, the gateway sent an alert);
/// [`Error::Store`] if `keyrings` cannot store the keyring (the join is then not
/// confirmed); [`Error::HandshakeEof`] if the gateway closed the stream first;
/// [`Error::Io`] if reading or writing the stream failed. The caller bounds the time it
/// takes.
pub async fn join<IO, K>(
    io: IO,
    token: BootstrapToken,
    pins: &[Pin],
    client_id: ClientId,
    keyrings: &K,
    max_payload: usize,
    attester: Option<&dyn Attester>,
) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: KeyringStore + ?Sized,
{
    let client = Client::join(JoinConfig::new(token, pins.to_vec(), client_id), &mut os_rng());
    let endpoint = AgentEndpoint { client, keyrings: Some(keyrings), attester, cause: None };
    drive(io, endpoint, max_payload).await.map_err(|e| pin_error(e, pins))
}

/// Resumes over any stream (no TLS) with a saved keyring.
///
/// # Errors
///
/// [`Error::Handshake`] with the core's error if the gateway refuses the resume (the client
/// was revoked, or the keyring is not the one the gateway holds) or the handshake fails
/// otherwise; [`Error::HandshakeEof`] if the gateway closed the stream first; [`Error::Io`]
/// if reading or writing the stream failed.
pub async fn resume<IO>(io: IO, saved: SavedKeyring, max_payload: usize) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let client = Client::resume(ResumeConfig::new(saved), &mut os_rng());
    let endpoint = AgentEndpoint::<MemoryKeyringStore> { client, keyrings: None, attester: None, cause: None };
    drive(io, endpoint, max_payload).await
}

/// `base` scaled by a random factor in [0.5, 1.5).
#[cfg(feature = "tls")]
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    rand_core::TryRng::try_fill_bytes(&mut getrandom::SysRng, &mut byte).unwrap_or(());
    // 0.5 + byte/256: an even spread in 1/256 steps.
    base.mul_f64(0.5 + f64::from(byte[0]) / 256.0)
}

/// TLS client configurations by pin set.
#[cfg(feature = "tls")]
type TlsConfigs = Vec<(Vec<Pin>, Arc<rustls::ClientConfig>)>;

/// An agent over TCP and TLS 1.3.
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
pub struct Agent {
    config: AgentConfig,
    tls_configs: Arc<Mutex<TlsConfigs>>,
    attester: Option<Arc<dyn Attester>>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("attester", &self.attester.as_ref().map(|_| "<attester>"))
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl Agent {
    /// An agent with these limits.
    pub fn new(config: AgentConfig) -> Self {
        Self { config, tls_configs: Arc::default(), attester: None }
    }

    /// Attests each join with `attester` (evidence bound to that session, for the
    /// gateway's validator) instead of sending empty evidence.
    pub fn with_attester(mut self, attester: impl Attester) -> Self {
        self.attester = Some(Arc::new(attester));
        self
    }

    /// Connects to `gateway` (`host:port`), checks its TLS certificate against `pins`,
    /// joins with `token` as `client_id`, and stores the keyring in `keyrings` before
    /// confirming it.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] or [`Error::Busy`] if the gateway cannot be reached or drops the
    /// connection before TLS completes (both retried first, up to
    /// [`AgentConfig::retries`]); [`Error::PinMismatch`] if its TLS certificate or its
    /// protocol identity matches none of `pins`; [`Error::CertificateChain`] or
    /// [`Error::Tls`] if TLS fails otherwise; [`Error::Timeout`] past
    /// [`AgentConfig::connect_timeout`] or [`AgentConfig::handshake_timeout`]; and any
    /// error of [`join`](fn@join).
    pub async fn join<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        token: BootstrapToken,
        pins: &[Pin],
        client_id: ClientId,
        keyrings: &K,
    ) -> Result<AgentSession<AgentStream>, Error> {
        self.retrying(|| async {
            let work = async {
                let tls = self.tls(gateway, pins).await?;
                let attester = self.attester.as_deref();
                let session =
                    join(tls, token.clone(), pins, client_id.clone(), keyrings, self.config.max_payload, attester)
                        .await?;
                Ok(self.with_keepalive(session))
            };
            deadline(self.config.handshake_timeout, "join", work).await
        })
        .await
    }

    /// Runs `attempt`, retrying with jittered exponential backoff while the gateway is
    /// busy or unreachable.
    async fn retrying<T, F: Future<Output = Result<T, Error>>>(
        &self,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, Error> {
        let mut backoff = self.config.backoff;
        let mut tries = 0u32;
        loop {
            match attempt().await {
                Err(e) if tries < self.config.retries && e.is_transient() => {
                    tries = tries.saturating_add(1);
                    let wait = jitter(backoff);
                    tracing::debug!(error = %e, ?wait, tries, "gateway busy or unreachable; retrying");
                    smol::Timer::after(wait).await;
                    backoff = backoff.saturating_mul(2);
                }
                outcome => return outcome,
            }
        }
    }

    /// Connects to `gateway` and resumes with the keyring stored in `keyrings`.
    ///
    /// # Errors
    ///
    /// [`Error::NotJoined`] if `keyrings` holds no keyring, [`Error::Store`] if it cannot
    /// be read, and any error of [`Agent::connect_with`].
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
    ///
    /// # Errors
    ///
    /// As [`Agent::join`] for reaching the gateway and TLS (checked against the pin in
    /// `saved`), then any error of [`resume`].
    pub async fn connect_with(&self, gateway: &str, saved: SavedKeyring) -> Result<AgentSession<AgentStream>, Error> {
        self.retrying(|| async {
            let work = async {
                let tls = self.tls(gateway, &[saved.server_pin]).await?;
                let session = resume(tls, saved.clone(), self.config.max_payload).await?;
                Ok(self.with_keepalive(session))
            };
            deadline(self.config.handshake_timeout, "resume", work).await
        })
        .await
    }

    /// The TLS client configuration for `pins`, built once per pin set and shared by
    /// every connection.
    fn client_config(&self, pins: &[Pin]) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut cache = self.tls_configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, config)) = cache.iter().find(|(cached, _)| cached.as_slice() == pins) {
            return Ok(Arc::clone(config));
        }
        let config = tls::client_config(Arc::new(PinVerifier::new(pins.to_vec())))?;
        // A handful of pin sets per agent at most; keep the cache from growing without bound.
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((pins.to_vec(), Arc::clone(&config)));
        Ok(config)
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
        let connector = TlsConnector::from(self.client_config(pins)?);
        let name = ServerName::try_from(tls::SERVER_NAME).map_err(|e| Error::TlsSetup(e.to_string()))?;
        connector.connect(name, tcp).await.map_err(|source| match Refusal::from_io(&source) {
            Some(Refusal::Pin { presented }) => {
                Error::PinMismatch { layer: "TLS certificate", presented, expected: pins.to_vec() }
            }
            Some(Refusal::Chain(reason)) => Error::CertificateChain { reason },
            // Dropped before TLS completed: at its handshake caps, or refused by policy.
            None if matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
            {
                Error::Busy { addr: gateway.to_owned() }
            }
            None => Error::Tls { source, cause: "the server is not a Boarding gateway speaking TLS 1.3" },
        })
    }
}
