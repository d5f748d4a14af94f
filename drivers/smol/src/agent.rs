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
use boarding::transcript::ChannelBinding;
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
    let config = JoinConfig::new(token, pins.to_vec(), client_id);
    join_with(io, config, pins, keyrings, max_payload, attester, None).await
}

/// What a join that asks for a certificate sends, and the key it asks for.
#[cfg(feature = "ca")]
pub(crate) struct CertificateAsk {
    pub(crate) key: crate::certificate::NodeKey,
    pub(crate) request: Vec<u8>,
}

#[cfg(feature = "ca")]
// Without `tls` no `Agent` asks.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
impl CertificateAsk {
    /// A fresh key, and the request for a certificate for it naming `client_id`.
    pub(crate) fn new(client_id: &ClientId) -> Result<Self, Error> {
        let failed = |e: crate::certificate::CertificateError| Error::Certificate {
            client_id: client_id.clone(),
            reason: format!("cannot make the signing request: {e}"),
        };
        let key = crate::certificate::NodeKey::generate().map_err(failed)?;
        let csr = key.signing_request(client_id).map_err(failed)?;
        let request = crate::ticket::Request { csr: Some(csr) }.encode()?;
        Ok(Self { key, request })
    }
}

/// Without the `ca` feature no join asks for a certificate.
#[cfg(not(feature = "ca"))]
pub(crate) enum CertificateAsk {}

/// The node certificate in a ticket, for the key that asked for it.
#[cfg(feature = "ca")]
pub(crate) fn certificate_from_ticket(
    key: &crate::certificate::NodeKey,
    client_id: &ClientId,
    ticket: &[u8],
) -> Result<crate::certificate::NodeCertificate, Error> {
    let ticket = crate::ticket::Ticket::decode(ticket)?;
    let failed = |reason: String| Error::Certificate { client_id: client_id.clone(), reason };
    let der = ticket.certificate.ok_or_else(|| failed("the gateway's ticket carries no certificate".into()))?;
    key.with_certificate(der).map_err(|e| failed(e.to_string()))
}

/// The one join: `config` (with a certificate request in `ask`, if any) over `io`.
async fn join_with<IO, K>(
    io: IO,
    config: JoinConfig,
    pins: &[Pin],
    keyrings: &K,
    max_payload: usize,
    attester: Option<&dyn Attester>,
    ask: Option<&CertificateAsk>,
) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: KeyringStore + ?Sized,
{
    #[cfg(feature = "ca")]
    let config = match ask {
        Some(ask) => {
            let client_id = config.client_id().clone();
            config
                .with_request(ask.request.clone())
                .map_err(|e| Error::Certificate { client_id, reason: e.to_string() })?
        }
        None => config,
    };
    let client = Client::join(config, &mut os_rng());
    let endpoint = AgentEndpoint {
        client,
        keyrings: Some(keyrings),
        attester,
        #[cfg(feature = "ca")]
        node_key: ask.map(|a| &a.key),
        cause: None,
    };
    #[cfg(not(feature = "ca"))]
    let _ = ask;
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
    resume_with::<IO, MemoryKeyringStore>(io, saved, None, max_payload, Vec::new(), None).await
}

/// The one resume: `saved`, with an application `request` (empty: none) whose answer
/// the session's [`SessionInfo::ticket`](boarding::client::SessionInfo::ticket) holds,
/// bound to the TLS session `io` runs in if `binding` says. A rotation the gateway asks
/// for is stored in `keyrings` (compare-and-swap over `saved`) before it is confirmed;
/// without a store the resume is abandoned ([`Error::RotationUnstored`]).
async fn resume_with<IO, K>(
    io: IO,
    saved: SavedKeyring,
    keyrings: Option<&K>,
    max_payload: usize,
    request: Vec<u8>,
    binding: Option<ChannelBinding>,
) -> Result<AgentSession<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: KeyringStore + ?Sized,
{
    let client_id = saved.client_id.clone();
    let mut config = ResumeConfig::new(saved)
        .with_request(request)
        .map_err(|e| Error::Certificate { client_id, reason: e.to_string() })?;
    if let Some(binding) = binding {
        config = config.with_channel_binding(binding);
    }
    let client = Client::resume(config, &mut os_rng());
    let endpoint = AgentEndpoint::<K> {
        client,
        keyrings,
        attester: None,
        #[cfg(feature = "ca")]
        node_key: None,
        cause: None,
    };
    drive(io, endpoint, max_payload).await
}

/// A resume refused for its proof, at a gateway TLS already checked against the pin
/// stored with the keyring: the gateway no longer holds the keyring (the decoy's MAC
/// failed), which is [`Error::UnknownClient`], not a pin or a protocol problem; or it
/// holds a newer one, rotated by another copy of this keyring ([`Error::CloneSuspected`]).
#[cfg(feature = "tls")]
fn unknown_client(e: Error, gateway: &str, client_id: ClientId) -> Error {
    use boarding::error::{PeerMisbehaved, ReceivedAlert};
    match e.protocol() {
        Some(boarding::Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof))
        | Some(boarding::Error::PeerAlert(ReceivedAlert::Known(boarding::Alert::BadProof))) => {
            Error::UnknownClient { gateway: gateway.to_owned(), client_id }
        }
        Some(boarding::Error::PeerAlert(ReceivedAlert::Known(boarding::Alert::RetiredKeyring))) => {
            Error::CloneSuspected { gateway: gateway.to_owned(), client_id }
        }
        _ => e,
    }
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
    /// Whether joins ask for a node certificate and resumes renew it.
    certificates: bool,
    /// The agent's clock for certificate renewal (`None`: the system's).
    clock: Option<Arc<dyn Fn() -> boarding::UnixTime + Send + Sync>>,
    /// Held through each stored resume: one that rotates changes the keyring the next
    /// one starts from, so this agent's resumes run one at a time (their sessions do not).
    resumes: Arc<smol::lock::Mutex<()>>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("attester", &self.attester.as_ref().map(|_| "<attester>"))
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl Agent {
    /// An agent with these limits.
    pub fn new(config: AgentConfig) -> Self {
        Self {
            config,
            tls_configs: Arc::default(),
            attester: None,
            certificates: false,
            clock: None,
            resumes: Arc::default(),
        }
    }

    /// Asks for a node certificate (the kubelet's TLS bootstrap): each join sends a
    /// signing request for a fresh key, and the key and the certificate the gateway's CA
    /// issues are stored in the keyring store ([`KeyringStore::save_certificate`]) before
    /// the join is confirmed. [`Agent::connect`] renews the certificate once it is two
    /// thirds through its lifetime (or asks for one if the store holds none), and stores
    /// the new one before it returns the session.
    #[cfg(feature = "ca")]
    pub fn with_certificate(mut self) -> Self {
        self.certificates = true;
        self
    }

    /// Reads the time for certificate renewal from `clock` (Unix seconds) instead of the
    /// system clock: for tests with a virtual clock.
    pub fn with_clock(mut self, clock: impl Fn() -> boarding::UnixTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    #[cfg_attr(not(feature = "ca"), allow(dead_code))]
    fn now(&self) -> boarding::UnixTime {
        self.clock.as_ref().map_or_else(crate::unix_now, |clock| clock())
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
                #[cfg(feature = "ca")]
                let ask = if self.certificates { Some(CertificateAsk::new(&client_id)?) } else { None };
                #[cfg(not(feature = "ca"))]
                let ask: Option<CertificateAsk> = None;
                let tls = self.tls(gateway, pins).await?;
                let attester = self.attester.as_deref();
                // Bound to this TLS session: a relay that terminates it fails the join.
                let binding = tls::channel_binding(tls.get_ref().1)?;
                let config =
                    JoinConfig::new(token.clone(), pins.to_vec(), client_id.clone()).with_channel_binding(binding);
                let max = self.config.max_payload;
                let session = join_with(tls, config, pins, keyrings, max, attester, ask.as_ref()).await?;
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

    /// Connects to `gateway` and resumes with the keyring stored in `keyrings`. A
    /// rotation the gateway asks for is stored in `keyrings` before it is confirmed
    /// (`spec/PROTOCOL.md` §8.5), and a resume that learns which of two stored keyrings
    /// the gateway holds keeps that one alone. This agent's stored resumes run one at a
    /// time; one that finds the stored keyring changed under it (another process
    /// rotated it) starts again from the new one, once.
    ///
    /// # Errors
    ///
    /// [`Error::NotJoined`] if `keyrings` holds no keyring, [`Error::Store`] if it cannot
    /// be read or written, [`Error::CloneSuspected`] if the gateway refused the keyring
    /// as one it rotated away from, and any error of [`Agent::connect_with`].
    pub async fn connect<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        keyrings: &K,
    ) -> Result<AgentSession<AgentStream>, Error> {
        let _one_at_a_time = self.resumes.lock().await;
        let mut conflicts = 0u32;
        loop {
            match self.connect_once(gateway, keyrings).await {
                Err(Error::RotationConflict { .. }) if conflicts == 0 => conflicts = 1,
                outcome => return outcome,
            }
        }
    }

    async fn connect_once<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        keyrings: &K,
    ) -> Result<AgentSession<AgentStream>, Error> {
        #[cfg(feature = "ca")]
        if self.certificates {
            let current = keyrings.load_certificate().await?;
            if current.as_ref().is_none_or(|c| c.renewal_due(self.now())) {
                return self.renewing(gateway, keyrings).await;
            }
        }
        self.resume_stored(gateway, keyrings, Vec::new()).await
    }

    /// A resume with the keyring stored in `keyrings`, read again for every attempt (an
    /// attempt that failed after storing a rotation leaves both keyrings stored, and the
    /// next one must offer both), then the tidying of a settled pair of keyrings.
    async fn resume_stored<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        keyrings: &K,
        request: Vec<u8>,
    ) -> Result<AgentSession<AgentStream>, Error> {
        let (session, saved) = self
            .retrying(|| async {
                let saved = keyrings
                    .load_keyring()
                    .await?
                    .ok_or_else(|| Error::NotJoined { location: "the agent's keyring store".into() })?;
                let session = self.resume_over_tls(gateway, saved.clone(), Some(keyrings), request.clone()).await?;
                Ok((session, saved))
            })
            .await?;
        let client_id = &saved.client_id;
        if let Some(settled) = &session.peer().settled {
            // Offering both keyrings stays correct, so a failure here only logs.
            match keyrings.replace_keyring(&saved.keyring.id(), settled).await {
                Ok(_) => tracing::debug!(%client_id, "the gateway holds one of the two stored keyrings; kept it alone"),
                Err(e) => {
                    tracing::warn!(%client_id, error = %e, "could not drop the keyring the gateway does not hold")
                }
            }
        }
        if session.peer().rotated {
            tracing::info!(%client_id, "the gateway rotated this client's keyring; the new one is stored");
        }
        Ok(session)
    }

    /// A resume that asks for a new certificate, stored before the session is returned.
    /// A gateway that issues none leaves the current certificate in place (and says why
    /// in the log); a store that cannot keep the new one fails the resume.
    #[cfg(feature = "ca")]
    async fn renewing<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        keyrings: &K,
    ) -> Result<AgentSession<AgentStream>, Error> {
        let saved = keyrings
            .load_keyring()
            .await?
            .ok_or_else(|| Error::NotJoined { location: "the agent's keyring store".into() })?;
        let client_id = saved.client_id.clone();
        let ask = CertificateAsk::new(&client_id)?;
        let session = self.resume_stored(gateway, keyrings, ask.request.clone()).await?;
        match certificate_from_ticket(&ask.key, &client_id, &session.peer().ticket) {
            Ok(certificate) => {
                keyrings.save_certificate(&certificate).await?;
                tracing::info!(%client_id, not_after = certificate.not_after(), "renewed the node certificate");
            }
            Err(e) => tracing::warn!(%client_id, error = %e, "the node certificate was not renewed"),
        }
        Ok(session)
    }

    /// Connects to `gateway` and resumes with `saved`, which no store holds: a resume in
    /// which the gateway rotates the keyring fails ([`Error::RotationUnstored`], before
    /// the rotation is confirmed, so `saved` stays valid). Use [`Agent::connect`] to
    /// follow rotations.
    ///
    /// # Errors
    ///
    /// As [`Agent::join`] for reaching the gateway and TLS (checked against the pin in
    /// `saved`), then any error of [`resume`].
    pub async fn connect_with(&self, gateway: &str, saved: SavedKeyring) -> Result<AgentSession<AgentStream>, Error> {
        self.retrying(|| self.resume_over_tls::<MemoryKeyringStore>(gateway, saved.clone(), None, Vec::new())).await
    }

    /// One resume attempt over TLS (the caller retries).
    async fn resume_over_tls<K: KeyringStore + ?Sized>(
        &self,
        gateway: &str,
        saved: SavedKeyring,
        keyrings: Option<&K>,
        request: Vec<u8>,
    ) -> Result<AgentSession<AgentStream>, Error> {
        let client_id = saved.client_id.clone();
        let work = async {
            let tls = self.tls(gateway, &[saved.server_pin]).await?;
            let binding = tls::channel_binding(tls.get_ref().1)?;
            let max = self.config.max_payload;
            let session = resume_with(tls, saved, keyrings, max, request, Some(binding)).await?;
            Ok(self.with_keepalive(session))
        };
        deadline(self.config.handshake_timeout, "resume", work).await.map_err(|e| unknown_client(e, gateway, client_id))
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
