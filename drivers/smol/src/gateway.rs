//! The gateway: an accept loop over TCP and TLS 1.3, one task per connection on a
//! multi-threaded executor of its own, graceful shutdown, and the limits that keep it
//! up under load and attack:
//!
//! * **Handshakes**: a short deadline for the first bytes and the TLS ClientHello, a
//!   deadline for the whole handshake, a global cap and a per-source-address cap on
//!   handshakes in progress. When the global cap is reached, the oldest handshake that
//!   has not sent its ClientHello yet is evicted to make room, so silent connections
//!   cannot hold every slot; only when every slot has made progress is the newest
//!   connection refused.
//! * **Sessions**: a global cap and a per-client cap on established sessions, an idle
//!   timeout (agents send keepalives), and revocation ([`Gateway::revoke_client`])
//!   that ends a client's live sessions with an authenticated close.
//!
//! Each connection that completes the handshake is handed to the application as a
//! [`GatewaySession`] whose peer is a [`VerifiedClient`].
//!
//! [`VerifiedClient`]: boarding::server::VerifiedClient
//!
//! Without the `tls` feature there is no listener: [`Gateway::handshake`] runs the
//! protocol over a stream the embedder brings, and the caps and the accept loop's
//! helpers below go unused.
#![cfg_attr(not(feature = "tls"), allow(dead_code, unused_imports))]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boarding::channel::MAX_PAYLOAD;
use boarding::identity::{ClientId, ServerIdentity};
use boarding::pin::Pin;
use boarding::server::{Server, ServerConfig};
use boarding::storage::RotationPolicy;
use boarding::token::TokenId;
#[cfg(feature = "tls")]
use futures_rustls::LazyConfigAcceptor;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Task};

use crate::certificate::CertificateSigner;
use crate::error::Error;
use crate::handshake::{Admit, AdmitAll, Attempt, Clock, GatewayEndpoint, IgnoreEvidence, Validator, drive};
use crate::metrics::{GatewayMetrics, HandshakeKind, Refused, SessionEnd, outcome};
use crate::os_rng;
use crate::session::{GatewaySession, Lifecycle, deadline};
use crate::store::Store;
#[cfg(feature = "tls")]
use crate::tls;

/// The stream a gateway session runs over when served by [`Gateway::serve`].
#[cfg(feature = "tls")]
pub type GatewayStream = futures_rustls::server::TlsStream<TcpStream>;

/// A gateway's limits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a connection may take from accept to an established session (TLS and
    /// the Boarding handshake together). Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a new connection may take to send its TLS ClientHello. Default 3 s.
    pub hello_timeout: Duration,
    /// Most handshakes in progress at once. Default 256.
    pub max_handshakes: usize,
    /// Most handshakes in progress from one source address. Default 32.
    pub max_handshakes_per_source: usize,
    /// Most established sessions at once. Default 10,000.
    pub max_sessions: usize,
    /// Most established sessions of one client id. Default 8.
    pub max_sessions_per_client: usize,
    /// How long a session may receive nothing (agents send keepalives more often)
    /// before the gateway closes it. Default 60 s.
    pub idle_timeout: Duration,
    /// Largest message payload a session sends or accepts (at most 1 MiB, the
    /// protocol's limit, which is also the default).
    pub max_payload: usize,
    /// How long [`Serving::shutdown`] lets running connections finish before
    /// cancelling them. Default 5 s.
    pub shutdown_grace: Duration,
    /// Executor threads running the connections; 0 (the default) is one per available
    /// core.
    pub threads: usize,
    /// Failed handshakes are logged one line each for the first ten in this window,
    /// then summarised in one line when it ends. Default 10 s.
    pub failure_log_window: Duration,
    /// A client's keyring is rotated at its first resume once it is this old
    /// (`spec/PROTOCOL.md` §8.5), besides whenever an operator asks
    /// ([`Gateway::request_rotation`]); `None` rotates only on request. Default 30 days.
    pub rotate_after: Option<Duration>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(3),
            max_handshakes: 256,
            max_handshakes_per_source: 32,
            max_sessions: 10_000,
            max_sessions_per_client: 8,
            idle_timeout: Duration::from_secs(60),
            max_payload: MAX_PAYLOAD,
            shutdown_grace: Duration::from_secs(5),
            threads: 0,
            failure_log_window: Duration::from_secs(10),
            rotate_after: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

impl GatewayConfig {
    /// The executor threads this configuration asks for.
    pub fn thread_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Connection counters, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Sessions established (joins and resumes).
    pub established: u64,
    /// Connections whose TLS or Boarding handshake failed or timed out.
    pub failed: u64,
    /// Connections closed at once because too many handshakes were in progress (in
    /// all, or from their source address).
    pub refused: u64,
    /// Handshakes evicted before their ClientHello to make room for a new connection.
    pub evicted: u64,
    /// Established sessions closed at once because of the session caps.
    pub over_session_cap: u64,
    /// Sessions ended by revocation.
    pub revoked: u64,
    /// Sessions ended by the idle timeout.
    pub idle: u64,
    /// Resumes that rotated their client's keyring.
    pub rotated: u64,
    /// Resumes refused as a clone's: they proved a keyring the client had rotated away from.
    pub clones_suspected: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the maps consistent, even on a panic.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One handshake in progress: where from, since when, whether it has sent its
/// ClientHello, and how to evict it.
struct Slot {
    source: IpAddr,
    started: Instant,
    progressed: Arc<AtomicBool>,
    evict: Sender<()>,
}

/// The handshakes in progress, for the caps and the eviction policy.
#[derive(Default)]
struct Slots {
    next: u64,
    slots: BTreeMap<u64, Slot>,
    per_source: HashMap<IpAddr, usize>,
}

/// Why a new connection gets no handshake slot.
enum NoSlot {
    SourceFull,
    AllProgressing,
}

/// A taken handshake slot, released when dropped.
struct SlotGuard {
    slots: Arc<Mutex<Slots>>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.slots.remove(&self.id)
            && let Some(count) = slots.per_source.get_mut(&slot.source)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                slots.per_source.remove(&slot.source);
            }
        }
    }
}

/// Established sessions by client id, for the caps and revocation.
#[derive(Default)]
struct Sessions {
    next: u64,
    total: usize,
    by_client: HashMap<ClientId, BTreeMap<u64, Sender<()>>>,
    /// Bumped by every [`Gateway::end_sessions`]: a handshake that sees it move between
    /// its start and its session's registration checks its client's keyring again, since
    /// a revocation in that window found no session to end.
    revocations: u64,
}

/// A registered session, unregistered when dropped.
struct SessionGuard {
    sessions: Arc<Mutex<Sessions>>,
    client: ClientId,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = lock(&self.sessions);
        let removed = sessions.by_client.get_mut(&self.client).and_then(|m| m.remove(&self.id)).is_some();
        if removed {
            sessions.total = sessions.total.saturating_sub(1);
        }
        if sessions.by_client.get(&self.client).is_some_and(BTreeMap::is_empty) {
            sessions.by_client.remove(&self.client);
        }
    }
}

struct Inner<S> {
    store: S,
    protocol: Arc<ServerConfig>,
    #[cfg(feature = "tls")]
    tls: Arc<rustls::ServerConfig>,
    config: GatewayConfig,
    slots: Arc<Mutex<Slots>>,
    sessions: Arc<Mutex<Sessions>>,
    metrics: GatewayMetrics,
    failures: FailureLog,
    executor: Arc<Executor<'static>>,
    /// Dropped with the gateway: its executor threads then stop.
    _stop_threads: Sender<()>,
}

/// A Boarding gateway over a [`Store`]. Cheap to clone (shared).
pub struct Gateway<S> {
    inner: Arc<Inner<S>>,
    admit: Arc<dyn Admit>,
    validator: Arc<dyn Validator>,
    signer: Option<Arc<dyn CertificateSigner>>,
    clock: Clock,
}

impl<S> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            admit: Arc::clone(&self.admit),
            validator: Arc::clone(&self.validator),
            signer: self.signer.clone(),
            clock: Arc::clone(&self.clock),
        }
    }
}

impl<S> std::fmt::Debug for Gateway<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("pin", &self.inner.protocol.pin()).finish_non_exhaustive()
    }
}

impl<S: Store> Gateway<S> {
    /// A gateway with the identity kept in `store`; one is generated and stored on
    /// first use.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store cannot read or write the identity, and any error of
    /// [`Gateway::new`].
    pub async fn open(store: S, config: GatewayConfig) -> Result<Self, Error> {
        let identity = store.identity_or_insert(ServerIdentity::generate(&mut os_rng())).await?;
        Self::new(identity, store, config)
    }

    /// A gateway with the given identity.
    ///
    /// # Errors
    ///
    /// [`Error::TlsSetup`] if the TLS configuration cannot be built from the identity
    /// (with the `tls` feature), and [`Error::Io`] if the executor threads cannot be
    /// started.
    pub fn new(identity: ServerIdentity, store: S, config: GatewayConfig) -> Result<Self, Error> {
        // Built once, shared by every connection.
        #[cfg(feature = "tls")]
        let tls = tls::server_config(&identity)?;
        let executor = Arc::new(Executor::new());
        let (stop_threads, threads_stopped) = smol::channel::bounded::<()>(1);
        for i in 0..config.thread_count() {
            let executor = Arc::clone(&executor);
            let stopped = threads_stopped.clone();
            std::thread::Builder::new()
                .name(format!("boarding-gateway-{i}"))
                .spawn(move || smol::block_on(executor.run(async { while stopped.recv().await.is_ok() {} })))
                .map_err(|e| Error::Io { context: "starting the gateway's executor threads", source: e })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                protocol: Arc::new(
                    ServerConfig::new(identity)
                        .with_rotation(RotationPolicy { max_age: config.rotate_after.map(|d| d.as_secs()) }),
                ),
                #[cfg(feature = "tls")]
                tls,
                config,
                slots: Arc::default(),
                sessions: Arc::default(),
                metrics: GatewayMetrics::new(),
                failures: FailureLog::default(),
                executor,
                _stop_threads: stop_threads,
            }),
            admit: Arc::new(AdmitAll),
            validator: Arc::new(IgnoreEvidence),
            signer: None,
            clock: Arc::new(crate::unix_now),
        })
    }

    /// Decides admission (and each joining client's ticket, from its client id, its
    /// token's labels and its attested identity) with `admit` instead of admitting every
    /// client with no ticket. Applies to this handle and the clones and servers made from
    /// it afterwards.
    pub fn with_admission(mut self, admit: impl Admit) -> Self {
        self.admit = Arc::new(admit);
        self
    }

    /// Judges each joining client's attestation evidence with `validator` (before
    /// admission and redemption: a refusal charges nothing) instead of ignoring it. What
    /// it attests reaches the [`Admit`] and the session's [`VerifiedClient`]. Applies
    /// like [`Gateway::with_admission`].
    ///
    /// [`VerifiedClient`]: boarding::server::VerifiedClient
    pub fn with_validator(mut self, validator: impl Validator) -> Self {
        self.validator = Arc::new(validator);
        self
    }

    /// Signs the node certificates agents ask for (at join, and at a resume that renews
    /// one) with `signer`, into their tickets. Without one, a join that asks for a
    /// certificate is refused (`AdmissionRefused`, nothing charged) and a renewal gets
    /// none. Applies like [`Gateway::with_admission`].
    pub fn with_certificates(mut self, signer: impl CertificateSigner) -> Self {
        self.signer = Some(Arc::new(signer));
        self
    }

    /// This gateway's own certificate authority, its key derived from the identity
    /// (see [`CertificateAuthority`](crate::certificate::CertificateAuthority)), issuing
    /// under `policy`.
    ///
    /// # Errors
    ///
    /// [`Error::TlsSetup`] if the CA cannot be made, or the policy's lifetime is unusable
    /// (zero, or ending past the year 9999).
    #[cfg(feature = "ca")]
    pub fn certificate_authority(
        &self,
        policy: crate::certificate::CertificatePolicy,
    ) -> Result<crate::certificate::CertificateAuthority, Error> {
        crate::certificate::CertificateAuthority::for_identity(self.inner.protocol.identity())
            .and_then(|ca| ca.with_policy(policy))
            .map_err(|e| Error::TlsSetup(format!("the client certificate authority: {e}")))
    }

    /// The clock handshakes read (Unix seconds): token expiry, and the time the
    /// validator judges certificates at. The system clock by default; tests set a
    /// virtual one.
    pub fn with_clock(mut self, clock: impl Fn() -> boarding::UnixTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The pin agents need (`sha256:…` of the identity key).
    pub fn pin(&self) -> Pin {
        self.inner.protocol.pin()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The limits.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The connection counters so far.
    pub fn stats(&self) -> GatewayStats {
        self.inner.metrics.stats()
    }

    /// The gateway's metrics (see [`crate::metrics`]).
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// The metrics in the Prometheus text format, with the values that are a state
    /// (open sessions, handshakes in progress, usable tokens, store retries) read now.
    /// Usable tokens are counted from the store; if it fails, that gauge keeps its
    /// last value and the store's error is logged.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the text encoder fails; a store failure is logged, not returned.
    pub async fn encode_metrics(&self) -> Result<String, Error> {
        let tokens = match self.inner.store.tokens().await {
            Ok(tokens) => {
                let now = crate::unix_now();
                Some(tokens.iter().filter(|t| t.usable_at(now).is_ok()).count())
            }
            Err(e) => {
                tracing::warn!(error = %e, "counting usable tokens for the metrics failed");
                None
            }
        };
        let handshakes = lock(&self.inner.slots).slots.len();
        let metrics = &self.inner.metrics;
        metrics.set_state(self.session_count(), handshakes, tokens, self.inner.store.retries());
        metrics.encode().map_err(|_| Error::Io {
            context: "encoding the metrics",
            source: std::io::Error::other("the Prometheus text encoder failed"),
        })
    }

    /// Runs a task on the gateway's executor.
    pub fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        self.inner.executor.spawn(future)
    }

    /// Established sessions right now.
    pub fn session_count(&self) -> usize {
        lock(&self.inner.sessions).total
    }

    /// Deletes a client's keyring (its resumes then fail) and ends its live sessions
    /// with an authenticated close. Returns whether it had a keyring and how many
    /// sessions were ended.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store cannot delete the keyring; no session is ended then.
    pub async fn revoke_client(&self, id: ClientId) -> Result<(bool, usize), Error> {
        let existed = self.inner.store.revoke_client(id.clone()).await?;
        Ok((existed, self.end_sessions(&id)))
    }

    /// Asks for a client's keyring to be rotated at its next resume (its live sessions
    /// carry on: they use session keys, not the keyring). Returns whether the client has
    /// a keyring.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store cannot record the request.
    pub async fn request_rotation(&self, id: ClientId) -> Result<bool, Error> {
        Ok(self.inner.store.request_rotation(id).await?)
    }

    /// The client ids that have live sessions right now, in no particular order.
    pub fn session_clients(&self) -> Vec<ClientId> {
        lock(&self.inner.sessions).by_client.keys().cloned().collect()
    }

    /// Ends a client's live sessions with an authenticated close, leaving its keyring
    /// alone: for a revocation made elsewhere (another replica, or the store directly).
    /// Returns how many were ended.
    pub fn end_sessions(&self, id: &ClientId) -> usize {
        // Dropping the senders wakes each session's `recv`, which closes it. They leave
        // the count now: their guards will find nothing left to remove.
        let mut sessions = lock(&self.inner.sessions);
        let closed = sessions.by_client.remove(id).map_or(0, |m| m.len());
        sessions.total = sessions.total.saturating_sub(closed);
        sessions.revocations = sessions.revocations.wrapping_add(1);
        closed
    }

    /// How many times sessions were ended by a revocation so far (see [`Sessions`]).
    #[cfg(feature = "tls")]
    fn revocations(&self) -> u64 {
        lock(&self.inner.sessions).revocations
    }

    /// Whether `client` still holds a keyring: asked after a revocation raced with its
    /// handshake (the keyring it proved may be gone). A store that fails counts as gone,
    /// so a session is never kept on an unanswered question.
    #[cfg(feature = "tls")]
    async fn still_enrolled(&self, client: &ClientId) -> bool {
        use boarding::storage::{StorageAnswer, StorageRequest};
        let request = StorageRequest::LookupKeyring { client_id: client.clone() };
        matches!(self.inner.store.answer(request).await, Ok(StorageAnswer::Keyring(Some(_))))
    }

    /// Takes a handshake slot for `source`, evicting the oldest handshake that has not
    /// sent its ClientHello if the global cap is reached.
    fn take_slot(&self, source: IpAddr) -> Result<(SlotGuard, Arc<AtomicBool>, Receiver<()>), NoSlot> {
        let config = &self.inner.config;
        let mut slots = lock(&self.inner.slots);
        if slots.per_source.get(&source).copied().unwrap_or(0) >= config.max_handshakes_per_source.max(1) {
            return Err(NoSlot::SourceFull);
        }
        if slots.slots.len() >= config.max_handshakes.max(1) {
            let victim = slots
                .slots
                .iter()
                .filter(|(_, s)| !s.progressed.load(Ordering::Relaxed))
                .min_by_key(|(_, s)| s.started)
                .map(|(id, _)| *id);
            let Some(victim) = victim else { return Err(NoSlot::AllProgressing) };
            if let Some(slot) = slots.slots.remove(&victim) {
                // Its task sees the signal and ends; its guard then finds nothing to remove.
                let _ = slot.evict.try_send(());
                if let Some(count) = slots.per_source.get_mut(&slot.source) {
                    *count = count.saturating_sub(1);
                }
                self.inner.metrics.evicted();
            }
        }
        let id = slots.next;
        slots.next = slots.next.wrapping_add(1);
        let progressed = Arc::new(AtomicBool::new(false));
        let (evict, evicted) = smol::channel::bounded(1);
        slots.slots.insert(id, Slot { source, started: Instant::now(), progressed: Arc::clone(&progressed), evict });
        let count = slots.per_source.entry(source).or_insert(0);
        *count = count.saturating_add(1);
        Ok((SlotGuard { slots: Arc::clone(&self.inner.slots), id }, progressed, evicted))
    }

    /// Registers an established session under the session caps, giving it its
    /// lifecycle; `None` if a cap is reached.
    fn register_session(&self, client: &ClientId) -> Option<Lifecycle> {
        let config = &self.inner.config;
        let mut sessions = lock(&self.inner.sessions);
        let of_client = sessions.by_client.get(client).map_or(0, BTreeMap::len);
        if sessions.total >= config.max_sessions.max(1) || of_client >= config.max_sessions_per_client.max(1) {
            return None;
        }
        let id = sessions.next;
        sessions.next = sessions.next.wrapping_add(1);
        let (stop, stopped) = smol::channel::bounded(1);
        sessions.by_client.entry(client.clone()).or_default().insert(id, stop);
        sessions.total = sessions.total.saturating_add(1);
        let guard = SessionGuard { sessions: Arc::clone(&self.inner.sessions), client: client.clone(), id };
        Some(Lifecycle {
            stop: Some(stopped),
            idle_timeout: Some(config.idle_timeout),
            keepalive: None,
            _guard: Some(Box::new(guard)),
        })
    }

    /// Runs the Boarding handshake (no TLS, no deadline) over any stream: for callers
    /// that bring their own transport.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] with the core's error when the handshake fails (the agent was
    /// refused, misbehaved or sent an alert); [`Error::Store`] if the store failed while
    /// answering the core (the agent is told `Internal`); [`Error::AttestationRefused`] if the
    /// validator refused the agent's evidence (it is told `AttestationRefused`, nothing is
    /// charged); [`Error::HandshakeEof`] if the
    /// agent closed the stream first; [`Error::Io`] if reading or writing the stream
    /// failed. The caller bounds the time it takes.
    pub async fn handshake<IO>(&self, io: IO) -> Result<GatewaySession<IO>, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.handshake_noting(io, None, &mut Attempt::default()).await
    }

    /// [`Gateway::handshake`] bound to `binding` (the TLS session `io` runs in, if any),
    /// noting what the peer claimed in `attempt`.
    async fn handshake_noting<IO>(
        &self,
        io: IO,
        binding: Option<boarding::transcript::ChannelBinding>,
        attempt: &mut Attempt,
    ) -> Result<GatewaySession<IO>, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let server = Server::bound(Arc::clone(&self.inner.protocol), &mut os_rng(), binding);
        let endpoint = GatewayEndpoint {
            server,
            store: &self.inner.store,
            admit: &*self.admit,
            validator: &*self.validator,
            signer: self.signer.as_deref(),
            clock: &*self.clock,
            metrics: &self.inner.metrics,
            attempt,
            cause: None,
        };
        drive(io, endpoint, self.inner.config.max_payload).await
    }

    /// Runs TLS 1.3 and then the Boarding handshake over `io`, within the handshake
    /// deadline (the ClientHello within the shorter hello deadline).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] if the TLS handshake fails (the client is not a Boarding agent
    /// speaking TLS 1.3, or it rejected this gateway's certificate); [`Error::Timeout`]
    /// if the ClientHello or the whole handshake misses its deadline; and any error of
    /// [`Gateway::handshake`].
    #[cfg(feature = "tls")]
    pub async fn accept<IO>(&self, io: IO) -> Result<GatewaySession<futures_rustls::server::TlsStream<IO>>, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_marking(io, &AtomicBool::new(false), &mut Attempt::default()).await
    }

    /// [`Gateway::accept`], setting `progressed` once the ClientHello is in and noting
    /// what the peer claimed in `attempt`.
    #[cfg(feature = "tls")]
    async fn accept_marking<IO>(
        &self,
        io: IO,
        progressed: &AtomicBool,
        attempt: &mut Attempt,
    ) -> Result<GatewaySession<futures_rustls::server::TlsStream<IO>>, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let tls_error = |source: std::io::Error| {
            let cause = tls_cause(&source);
            Error::Tls { source, cause }
        };
        let work = async {
            let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start =
                deadline(self.inner.config.hello_timeout, "TLS ClientHello", async { hello.await.map_err(tls_error) })
                    .await?;
            progressed.store(true, Ordering::Relaxed);
            let tls = start.into_stream(Arc::clone(&self.inner.tls)).await.map_err(tls_error)?;
            // The Boarding handshake is bound to this TLS session: a relay that
            // terminates TLS toward the agent cannot complete it.
            let binding = tls::channel_binding(tls.get_ref().1)?;
            self.handshake_noting(tls, Some(binding), attempt).await
        };
        deadline(self.inner.config.handshake_timeout, "gateway handshake", work).await
    }

    /// Serves `listener` on the gateway's executor: each connection gets its own task,
    /// which runs [`Gateway::accept`] and then `handler` with the session. Handler
    /// errors are logged. Returns a handle to stop it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the listener's address cannot be read. Nothing is served then;
    /// errors of single connections are logged and counted, never returned.
    #[cfg(feature = "tls")]
    pub fn serve<H, F>(&self, listener: TcpListener, handler: H) -> Result<Serving, Error>
    where
        H: Fn(GatewaySession<GatewayStream>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let local_addr = listener.local_addr().map_err(Error::io("reading the listening address"))?;
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let gateway = self.clone();
        let task = self.spawn(accept_loop(gateway, listener, Arc::new(handler), stopped));
        tracing::info!(%local_addr, pin = %self.pin(), threads = self.inner.config.thread_count(), "gateway listening");
        Ok(Serving { local_addr, stop: Some(stop), task: Some(task) })
    }

    /// Ends every live session with an authenticated close (at shutdown).
    fn close_all_sessions(&self) -> usize {
        let mut sessions = lock(&self.inner.sessions);
        let n = sessions.total;
        sessions.by_client.clear();
        sessions.total = 0;
        n
    }
}

/// Runs one accepted connection: the handshake under its slot, then the session
/// under the session caps.
#[cfg(feature = "tls")]
async fn connection<S, H, F>(gateway: Gateway<S>, stream: TcpStream, peer: SocketAddr, handler: Arc<H>)
where
    S: Store,
    H: Fn(GatewaySession<GatewayStream>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let metrics = &gateway.inner.metrics;
    let started = Instant::now();
    let (slot, progressed, evicted) = match gateway.take_slot(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            let (refused, reason) = match why {
                NoSlot::SourceFull => (Refused::SourceCap, "too many handshakes in progress from this address"),
                NoSlot::AllProgressing => (Refused::GlobalCap, "too many handshakes in progress"),
            };
            metrics.refused(refused);
            tracing::debug!(%peer, reason, "connection refused");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let revocations = gateway.revocations();
    let mut attempt = Attempt::default();
    let accepted = smol::future::or(gateway.accept_marking(stream, &progressed, &mut attempt), async {
        let _ = evicted.recv().await;
        Err(Error::Evicted)
    })
    .await;
    drop(slot);
    let took = started.elapsed();
    // Milliseconds to the microsecond: what a log reader can use.
    let duration_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
    let mut session = match accepted {
        Ok(session) => session,
        Err(Error::Evicted) => {
            // Counted by the eviction itself.
            tracing::debug!(%peer, "handshake evicted before its ClientHello to make room");
            return;
        }
        Err(e) => {
            // The decoy makes the agent abort as if the gateway were an impostor; the
            // gateway knows better.
            let outcome = if attempt.unknown_client { "unknown_client" } else { outcome(&Err(&e)) };
            metrics.handshake(attempt.kind, outcome, took);
            if attempt.clone_recorded {
                // Never rate-limited: each one is evidence that a keyring was copied.
                metrics.clone_suspected();
                let client = attempt.client_id.as_ref().map(tracing::field::display);
                tracing::warn!(
                    %peer, client, outcome = %outcome,
                    "clone suspected: a resume proved a keyring this client has rotated away from; refused and \
                     recorded (see `boarding clients list`)"
                );
                return;
            }
            // Failures are routine on an exposed port and cost an attacker little:
            // a few lines, then one summary per window.
            if gateway.inner.failures.admit(outcome, gateway.inner.config.failure_log_window) {
                // Absent when the handshake ended before the peer named them.
                let client = attempt.client_id.as_ref().map(tracing::field::display);
                let token = attempt.token_id.as_ref().map(TokenId::as_str).map(tracing::field::display);
                if attempt.unknown_client {
                    tracing::info!(
                        %peer, kind = %attempt.kind, client, outcome = %outcome, duration_ms,
                        "handshake failed: no keyring for this client id (revoked, or never joined)"
                    );
                } else {
                    tracing::info!(
                        %peer, kind = %attempt.kind, client, token, outcome = %outcome, duration_ms, error = %e,
                        "handshake failed"
                    );
                }
            }
            return;
        }
    };
    let client = session.peer().clone();
    let kind = if client.resumed() { HandshakeKind::Resume } else { HandshakeKind::Join };
    metrics.handshake(kind, "established", took);
    if client.rotated() {
        metrics.keyring_rotated();
        tracing::info!(%peer, client = %client.client_id(), "keyring rotated");
    }
    let attested = client.attested().map(|a| tracing::field::display(a.name()));
    tracing::info!(
        %peer, %kind, client = %client.client_id(), token = %client.token_id(), attested, outcome = %"established",
        duration_ms, "handshake established"
    );
    let Some(lifecycle) = gateway.register_session(client.client_id()) else {
        metrics.session_closed(SessionEnd::OverCap);
        tracing::warn!(%peer, client = %client.client_id(), "session cap reached; session closed");
        let _ = session.close().await;
        return;
    };
    // A revocation between this handshake's keyring lookup and the registration above
    // found no session to end: look again. One registered now is ended by any later one.
    if gateway.revocations() != revocations && !gateway.still_enrolled(client.client_id()).await {
        metrics.session_closed(SessionEnd::Revoked);
        tracing::info!(%peer, client = %client.client_id(), "session closed: revoked during its handshake");
        drop(lifecycle);
        let _ = session.close().await;
        return;
    }
    session.set_lifecycle(lifecycle);
    match handler(session).await {
        Ok(()) => {
            metrics.session_closed(SessionEnd::Ended);
            tracing::debug!(%peer, client = %client.client_id(), "session ended");
        }
        Err(Error::Revoked) => {
            metrics.session_closed(SessionEnd::Revoked);
            tracing::info!(%peer, client = %client.client_id(), "session closed: revoked or shutting down");
        }
        Err(e @ Error::IdleTimeout { .. }) => {
            metrics.session_closed(SessionEnd::Idle);
            tracing::debug!(%peer, client = %client.client_id(), error = %e, "session closed");
        }
        Err(e) => {
            metrics.session_closed(SessionEnd::Error);
            tracing::warn!(%peer, client = %client.client_id(), error = %e, "session ended with an error");
        }
    }
}

/// How many failed handshakes are logged in one window
/// ([`GatewayConfig::failure_log_window`]); the rest are counted and summarised in
/// one line when the window ends.
const FAILURES_LOGGED_PER_WINDOW: u64 = 10;

/// Rate limit for the log lines of failed handshakes: an attacker's flood costs the
/// log a few lines and one summary per window, whatever its rate. The metrics count
/// every failure.
#[derive(Default)]
struct FailureLog {
    state: Mutex<FailureWindow>,
}

#[derive(Default)]
struct FailureWindow {
    started: Option<Instant>,
    logged: u64,
    suppressed: BTreeMap<&'static str, u64>,
}

impl FailureLog {
    /// Whether this failure gets a line of its own; if not, it is counted for the
    /// window's summary.
    fn admit(&self, outcome: &'static str, length: Duration) -> bool {
        let mut window = lock(&self.state);
        let now = Instant::now();
        if window.started.is_none_or(|started| now.duration_since(started) >= length) {
            summarise(&mut window, length);
            window.started = Some(now);
        }
        if window.logged < FAILURES_LOGGED_PER_WINDOW {
            window.logged = window.logged.saturating_add(1);
            return true;
        }
        let count = window.suppressed.entry(outcome).or_insert(0);
        *count = count.saturating_add(1);
        false
    }

    /// Logs the summary of a window that is over.
    fn flush(&self, length: Duration) {
        let mut window = lock(&self.state);
        if window.started.is_some_and(|started| started.elapsed() >= length) {
            summarise(&mut window, length);
            window.started = None;
        }
    }
}

/// Logs and clears a window's suppressed failures, if any.
fn summarise(window: &mut FailureWindow, length: Duration) {
    window.logged = 0;
    if window.suppressed.is_empty() {
        return;
    }
    let total: u64 = window.suppressed.values().fold(0, |a, b| a.saturating_add(*b));
    let by_outcome = window.suppressed.iter().map(|(o, n)| format!("{o}={n}")).collect::<Vec<_>>().join(" ");
    tracing::info!(
        suppressed = total,
        by_outcome = %by_outcome,
        "more failed handshakes than {FAILURES_LOGGED_PER_WINDOW} in {length:?}: the rest were not logged one by one"
    );
    window.suppressed.clear();
}

#[cfg(feature = "tls")]
async fn accept_loop<S, H, F>(gateway: Gateway<S>, listener: TcpListener, handler: Arc<H>, stopped: Receiver<()>)
where
    S: Store,
    H: Fn(GatewaySession<GatewayStream>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut tasks: Vec<Task<()>> = Vec::new();
    // Cancelled when the loop ends (dropped with this future).
    let failures = gateway.clone();
    let _summaries = gateway.spawn(async move {
        let length = failures.inner.config.failure_log_window;
        loop {
            // Half a window: a summary is at most one and a half windows late.
            smol::Timer::after(length.checked_div(2).unwrap_or_default().max(Duration::from_millis(100))).await;
            failures.inner.failures.flush(length);
        }
    });
    loop {
        let next = smol::future::or(async { Some(listener.accept().await) }, async {
            let _ = stopped.recv().await;
            None
        })
        .await;
        let Some(accepted) = next else { break };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                smol::Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        gateway.inner.metrics.accepted();
        tasks.retain(|t| !t.is_finished());
        tasks.push(gateway.spawn(connection(gateway.clone(), stream, peer, Arc::clone(&handler))));
    }
    drop(listener);
    let grace = gateway.inner.config.shutdown_grace;
    let closing = gateway.close_all_sessions();
    let running = tasks.iter().filter(|t| !t.is_finished()).count();
    tracing::info!(running, closing, ?grace, "gateway stopping: no new connections; closing sessions");
    smol::future::or(
        async {
            for task in tasks {
                task.await;
            }
        },
        async {
            smol::Timer::after(grace).await;
            tracing::warn!("shutdown grace period over; cancelling the remaining connections");
        },
    )
    .await;
}

/// Why a TLS accept probably failed.
#[cfg(feature = "tls")]
fn tls_cause(e: &std::io::Error) -> &'static str {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(_)) => {
            "the agent rejected this gateway's TLS certificate (it does not pin this gateway's key)"
        }
        _ => {
            "the client is not a Boarding agent speaking TLS 1.3 (plain TCP, another TLS version, or another \
             application protocol)"
        }
    }
}

/// A running [`Gateway::serve`]. Dropping it stops the accept loop too (abruptly);
/// [`Serving::shutdown`] stops it gracefully.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub struct Serving {
    local_addr: SocketAddr,
    stop: Option<Sender<()>>,
    task: Option<Task<()>>,
}

#[cfg(feature = "tls")]
impl Serving {
    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets running connections finish for up to the configured grace
    /// period, cancels the rest, and returns when all is done.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await;
        }
        tracing::info!(addr = %self.local_addr, "gateway stopped");
    }
}

/// A session handler that sends every message back until the agent closes: what
/// `boarding gateway serve` runs.
///
/// # Errors
///
/// The first error of [`Session::recv`](crate::Session::recv) or
/// [`Session::send`](crate::Session::send) (a truncated stream, a rejected frame, the idle
/// timeout, a revocation), or of closing the session before the agent closed it.
pub async fn echo<IO>(mut session: GatewaySession<IO>) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = session.recv().await? {
        session.send(&message).await?;
    }
    session.close().await
}
