//! Revocations across the fleet: one etcd watch of the fleet's prefix, reporting the
//! deletion of keyring and token records, whichever replica (or `etcdctl`, or a lease)
//! deleted them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use boarding::identity::ClientId;
use boarding::token::TokenId;
use etcd_client::{EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;

use crate::error::EtcdError;
use crate::layout::Record;
use crate::store::Inner;

/// A revocation seen in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// A client's keyring record was deleted: its live sessions should end.
    Client(ClientId),
    /// A token record was deleted (revoked, or cleared away by its lease after expiry).
    Token(TokenId),
    /// The watch was interrupted and could not resume where it stopped (etcd compacted
    /// the revisions in between): deletions may have been missed, so check every live
    /// session's client against the store.
    Resync,
}

/// The stream of [`Revocation`]s from [`crate::EtcdStore::watch_revocations`]. Dropping
/// it ends the watch.
#[derive(Debug)]
pub struct Revocations {
    events: mpsc::UnboundedReceiver<Revocation>,
    _stop: oneshot::Sender<()>,
}

impl Stream for Revocations {
    type Item = Revocation;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Revocation>> {
        Pin::new(&mut self.events).poll_next(cx)
    }
}

/// Why one watch session ended.
enum Ended {
    /// Nobody listens any more.
    Unwatched,
    /// etcd compacted past the revision to resume from.
    Compacted,
    /// The stream broke (etcd restarted, the connection dropped): resume.
    Broken,
}

/// The pause before watching again after a break.
const REWATCH: Duration = Duration::from_millis(200);

fn options(start: i64) -> WatchOptions {
    let options = WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]);
    if start > 0 { options.with_start_revision(start) } else { options }
}

/// Watches from `start` (0: now) and waits for etcd to confirm the watch; returns the
/// stream and the revision to resume from.
async fn subscribe(inner: &Inner, start: i64) -> Result<(WatchStream, i64), EtcdError> {
    let request = |e: &etcd_client::Error| EtcdError::Request {
        endpoints: inner.endpoints.clone(),
        op: "watching revocations",
        reason: e.to_string(),
    };
    let mut stream = inner
        .client
        .watch_client()
        .watch(inner.layout.prefix(), Some(options(start)))
        .await
        .map_err(|e| request(&e))?;
    match stream.message().await.map_err(|e| request(&e))? {
        Some(created) if created.created() && !created.canceled() => {
            let at = created.header().map(|h| h.revision().saturating_add(1)).unwrap_or(start);
            Ok((stream, at.max(start)))
        }
        _ => Err(EtcdError::Request {
            endpoints: inner.endpoints.clone(),
            op: "watching revocations",
            reason: "etcd did not create the watch".into(),
        }),
    }
}

/// Starts watching; returns the stream and the task that feeds it (to spawn).
pub(crate) async fn start(
    inner: Arc<Inner>,
) -> Result<(Revocations, impl Future<Output = ()> + Send + 'static), EtcdError> {
    let (stream, next) = subscribe(&inner, 0).await?;
    let (events, receiver) = mpsc::unbounded();
    let (stop, stopped) = oneshot::channel();
    let task = follow(inner, stream, next, events, stopped);
    Ok((Revocations { events: receiver, _stop: stop }, task))
}

async fn follow(
    inner: Arc<Inner>,
    mut stream: WatchStream,
    mut next: i64,
    events: mpsc::UnboundedSender<Revocation>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let ended = tokio::select! {
            _ = &mut stopped => return,
            ended = relay(&inner, &mut stream, &mut next, &events) => ended,
        };
        match ended {
            Ended::Unwatched => return,
            Ended::Compacted => {
                if events.unbounded_send(Revocation::Resync).is_err() {
                    return;
                }
                next = 0;
            }
            Ended::Broken => {
                tracing::warn!(
                    endpoints = %inner.endpoints,
                    "the etcd watch of revocations was interrupted (etcd unreachable or restarting); watching again"
                );
            }
        }
        // Watch again, from where this one stopped, until it works or nobody listens.
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(REWATCH) => {}
            }
            let subscribed = tokio::select! {
                _ = &mut stopped => return,
                subscribed = subscribe(&inner, next) => subscribed,
            };
            match subscribed {
                Ok((fresh, at)) => {
                    tracing::info!(endpoints = %inner.endpoints, "the etcd watch of revocations is back");
                    stream = fresh;
                    next = at;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watching revocations again failed; retrying");
                    if events.is_closed() {
                        return;
                    }
                }
            }
        }
    }
}

/// Relays deletions from one watch stream until it ends.
async fn relay(
    inner: &Inner,
    stream: &mut WatchStream,
    next: &mut i64,
    events: &mpsc::UnboundedSender<Revocation>,
) -> Ended {
    loop {
        let response: WatchResponse = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) | Err(_) => return Ended::Broken,
        };
        if response.canceled() {
            return if response.compact_revision() > 0 { Ended::Compacted } else { Ended::Broken };
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            *next = (*next).max(kv.mod_revision().saturating_add(1));
            if event.event_type() != EventType::Delete {
                continue;
            }
            let revocation = match inner.layout.classify(kv.key()) {
                Some(Record::Keyring(id)) => Revocation::Client(id),
                Some(Record::Token(id)) => Revocation::Token(id),
                None => continue,
            };
            if events.unbounded_send(revocation).is_err() {
                return Ended::Unwatched;
            }
        }
        // A progress notice (no events) says every event up to its revision was sent.
        if response.events().is_empty()
            && let Some(header) = response.header()
        {
            *next = (*next).max(header.revision().saturating_add(1));
        }
    }
}
