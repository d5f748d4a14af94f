//! `gateway serve --metrics-listen ADDR`: the gateway's Prometheus metrics, a liveness
//! and a readiness probe, over HTTP/1.1 (hyper on smol).
//!
//! * `GET /metrics`: the metrics in the OpenMetrics text format
//!   ([`boarding_smol::metrics`]); 503 until the gateway exists.
//! * `GET /healthz`: 200 while the process serves HTTP at all.
//! * `GET /readyz`: 200 once the store is open and the agents' listener is bound, 503
//!   before that and again once shutdown has begun.
//!
//! The endpoint is for operators and scrapers, so it is small and bounded: a header
//! read timeout, at most [`MAX_CONNECTIONS`] connections at once, GET only.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use boarding_smol::{Gateway, Store};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::error::{CliError, Result};

/// Most HTTP connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of the OpenMetrics text format that `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Something whose metrics can be encoded: a gateway, whatever its store.
trait Metrics: Send + Sync {
    fn encode(&self) -> Pin<Box<dyn Future<Output = std::result::Result<String, boarding_smol::Error>> + Send + '_>>;
}

impl<S: Store> Metrics for Gateway<S> {
    fn encode(&self) -> Pin<Box<dyn Future<Output = std::result::Result<String, boarding_smol::Error>> + Send + '_>> {
        Box::pin(self.encode_metrics())
    }
}

#[derive(Default)]
struct State {
    ready: AtomicBool,
    gateway: OnceLock<Box<dyn Metrics>>,
    connections: AtomicUsize,
}

/// The running HTTP endpoint. Dropping it stops it.
pub struct Observer {
    state: Arc<State>,
    addr: SocketAddr,
    _task: smol::Task<()>,
}

impl Observer {
    /// Binds `addr` and starts serving (not ready, no metrics yet).
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] if the address cannot be bound.
    pub async fn start(addr: SocketAddr) -> Result<Self> {
        let listener = smol::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CliError::Io { context: format!("cannot listen on --metrics-listen {addr}"), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| CliError::Io { context: "reading the metrics listener's address".into(), source })?;
        let state = Arc::new(State::default());
        let task = smol::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Self { state, addr, _task: task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `gateway`'s metrics from now on.
    pub fn attach<S: Store>(&self, gateway: &Gateway<S>) {
        let _ = self.state.gateway.set(Box::new(gateway.clone()));
    }

    /// Marks the gateway ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::Relaxed);
    }
}

/// Releases a connection's place in the count when its task ends.
struct Connection(Arc<State>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(listener: smol::net::TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                smol::Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        if state.connections.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            state.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!("too many metrics connections; closing a new one");
            continue;
        }
        let guard = Connection(Arc::clone(&state));
        smol::spawn(async move {
            let state = Arc::clone(&guard.0);
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(&state, &request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(SmolTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // A client that shuts its write side after the request (as one behind
                // `boarding agent connect` does) still gets its answer.
                .half_close(true)
                .serve_connection(FuturesIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "a metrics connection failed");
            }
            drop(guard);
        })
        .detach();
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn respond(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET is served\n".into());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, PLAIN, "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "not ready: the store is not open or the listener is not bound yet, or the gateway is stopping\n".into(),
        ),
        "/metrics" => match state.gateway.get() {
            None => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "the gateway is starting\n".into()),
            Some(gateway) => match gateway.encode().await {
                Ok(body) => text(StatusCode::OK, OPENMETRICS, body),
                Err(e) => {
                    tracing::warn!(error = %e, "encoding the metrics failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, "encoding the metrics failed\n".into())
                }
            },
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}
