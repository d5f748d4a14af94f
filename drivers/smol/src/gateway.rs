//! The gateway: an accept loop over TCP and TLS 1.3, one task per connection, a
//! handshake deadline, a cap on concurrent handshakes and on frame size, and graceful
//! shutdown. Each connection that completes the handshake is handed to the
//! application as a [`GatewaySession`] whose peer is a [`VerifiedClient`].
//!
//! [`VerifiedClient`]: boarding::server::VerifiedClient

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boarding::channel::MAX_PAYLOAD;
use boarding::identity::GatewayIdentity;
use boarding::pin::Pin;
use boarding::server::{Server, ServerConfig};
use futures_rustls::TlsAcceptor;
use smol::Task;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncRead, AsyncWrite};
use smol::lock::Semaphore;
use smol::net::{TcpListener, TcpStream};

use crate::error::Error;
use crate::handshake::{Admit, AdmitAll, GatewayEndpoint, drive};
use crate::session::{GatewaySession, deadline};
use crate::store::Store;
use crate::{os_rng, tls};

/// The stream a gateway session runs over when served by [`Gateway::serve`].
pub type GatewayStream = futures_rustls::server::TlsStream<TcpStream>;

/// A gateway's limits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a connection may take from accept to an established session (TLS and
    /// the Boarding handshake together). Default 10 s.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once; connections over the cap are closed at
    /// once. Default 256.
    pub max_handshakes: usize,
    /// Largest message payload a session sends or accepts (at most 1 MiB, the
    /// protocol's limit, which is also the default).
    pub max_payload: usize,
    /// How long [`Serving::shutdown`] lets running connections finish before
    /// cancelling them. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_payload: MAX_PAYLOAD,
            shutdown_grace: Duration::from_secs(5),
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
    /// Connections closed at once because too many handshakes were in progress.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    established: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Inner<S> {
    store: S,
    protocol: Arc<ServerConfig>,
    acceptor: TlsAcceptor,
    config: GatewayConfig,
    handshakes: Arc<Semaphore>,
    counters: Counters,
}

/// A Boarding gateway over a [`Store`]. Cheap to clone (shared).
pub struct Gateway<S> {
    inner: Arc<Inner<S>>,
    admit: Arc<dyn Admit>,
}

impl<S> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), admit: Arc::clone(&self.admit) }
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
    pub async fn open(store: S, config: GatewayConfig) -> Result<Self, Error> {
        let identity = store.identity_or_insert(GatewayIdentity::generate(&mut os_rng())).await?;
        Self::new(identity, store, config)
    }

    /// A gateway with the given identity.
    pub fn new(identity: GatewayIdentity, store: S, config: GatewayConfig) -> Result<Self, Error> {
        let acceptor = TlsAcceptor::from(tls::server_config(&identity)?);
        let handshakes = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                protocol: Arc::new(ServerConfig::new(identity)),
                acceptor,
                config,
                handshakes,
                counters: Counters::default(),
            }),
            admit: Arc::new(AdmitAll),
        })
    }

    /// Decides admission (and each joining client's ticket) with `admit` instead of
    /// admitting every client with no ticket. Applies to this handle and the clones
    /// and servers made from it afterwards.
    pub fn with_admission(mut self, admit: impl Admit) -> Self {
        self.admit = Arc::new(admit);
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
        let c = &self.inner.counters;
        GatewayStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            established: c.established.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Runs the Boarding handshake (no TLS, no deadline) over any stream: for callers
    /// that bring their own transport.
    pub async fn handshake<IO>(&self, io: IO) -> Result<GatewaySession<IO>, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let server = Server::new(Arc::clone(&self.inner.protocol), &mut os_rng());
        let endpoint = GatewayEndpoint { server, store: &self.inner.store, admit: &*self.admit, cause: None };
        drive(io, endpoint, self.inner.config.max_payload).await
    }

    /// Runs TLS 1.3 and then the Boarding handshake over `io`, within the handshake
    /// deadline.
    pub async fn accept<IO>(&self, io: IO) -> Result<GatewaySession<futures_rustls::server::TlsStream<IO>>, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let work = async {
            let tls = self.inner.acceptor.accept(io).await.map_err(|source| {
                let cause = tls_cause(&source);
                Error::Tls { source, cause }
            })?;
            self.handshake(tls).await
        };
        deadline(self.inner.config.handshake_timeout, "gateway handshake", work).await
    }

    /// Serves `listener` in a background task: each connection gets its own task,
    /// which runs [`Gateway::accept`] and then `handler` with the session. Handler
    /// errors are logged. Returns a handle to stop it.
    pub fn serve<H, F>(&self, listener: TcpListener, handler: H) -> Result<Serving, Error>
    where
        H: Fn(GatewaySession<GatewayStream>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let local_addr = listener.local_addr().map_err(Error::io("reading the listening address"))?;
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let gateway = self.clone();
        let task = smol::spawn(accept_loop(gateway, listener, Arc::new(handler), stopped));
        tracing::info!(%local_addr, pin = %self.pin(), "gateway listening");
        Ok(Serving { local_addr, stop: Some(stop), task: Some(task) })
    }
}

async fn accept_loop<S, H, F>(gateway: Gateway<S>, listener: TcpListener, handler: Arc<H>, stopped: Receiver<()>)
where
    S: Store,
    H: Fn(GatewaySession<GatewayStream>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut tasks: Vec<Task<()>> = Vec::new();
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
        bump(&gateway.inner.counters.accepted);
        tasks.retain(|t| !t.is_finished());
        let Some(permit) = gateway.inner.handshakes.try_acquire_arc() else {
            bump(&gateway.inner.counters.refused);
            tracing::warn!(%peer, limit = gateway.inner.config.max_handshakes, "too many handshakes in progress; connection closed");
            continue;
        };
        let gateway = gateway.clone();
        let handler = Arc::clone(&handler);
        tasks.push(smol::spawn(async move {
            let _ = stream.set_nodelay(true);
            let accepted = gateway.accept(stream).await;
            drop(permit);
            match accepted {
                Ok(session) => {
                    bump(&gateway.inner.counters.established);
                    let client = session.peer().clone();
                    tracing::info!(%peer, client = %client.client_id(), token = %client.token_id(), resumed = client.resumed(), "session established");
                    match handler(session).await {
                        Ok(()) => tracing::debug!(%peer, client = %client.client_id(), "session ended"),
                        Err(e) => tracing::warn!(%peer, client = %client.client_id(), error = %e, "session ended with an error"),
                    }
                }
                Err(e) => {
                    bump(&gateway.inner.counters.failed);
                    tracing::warn!(%peer, error = %e, "connection rejected");
                }
            }
        }));
    }
    drop(listener);
    let grace = gateway.inner.config.shutdown_grace;
    let running = tasks.iter().filter(|t| !t.is_finished()).count();
    tracing::info!(running, ?grace, "gateway stopping: no new connections; waiting for running ones");
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
#[derive(Debug)]
pub struct Serving {
    local_addr: SocketAddr,
    stop: Option<Sender<()>>,
    task: Option<Task<()>>,
}

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
pub async fn echo<IO>(mut session: GatewaySession<IO>) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = session.recv().await? {
        session.send(&message).await?;
    }
    session.close().await
}
