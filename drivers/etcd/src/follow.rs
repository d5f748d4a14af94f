//! Revocation across the fleet: a task on a gateway replica that follows
//! [`EtcdStore::watch_revocations`] and ends the live sessions of every client whose
//! keyring is deleted, whichever replica (or `etcdctl`) deleted it.

use std::collections::BTreeSet;
use std::time::Duration;

use boarding::identity::ClientId;
use boarding_smol::{Gateway, Store};
use smol::stream::StreamExt;

use crate::error::EtcdError;
use crate::store::EtcdStore;
use crate::watch::{Revocation, Revocations};

/// The pause between attempts to re-check the live sessions after a
/// [`Revocation::Resync`] while etcd fails.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Ends, on this replica, the live sessions of every client revoked anywhere in the
/// fleet: establishes a watch of the fleet's keyring and token deletions
/// ([`EtcdStore::watch_revocations`]) and returns the task that follows it on the
/// gateway's executor. Every deletion made after this returns is followed.
///
/// * A deleted keyring (`boarding clients revoke` on any replica or machine, or
///   `etcdctl del P/keyrings/ID`) ends that client's live sessions here with an
///   authenticated close ([`Gateway::end_sessions`]), typically within milliseconds.
/// * A deleted token ends nothing: clients that joined with it stay (as on one gateway).
/// * After a [`Revocation::Resync`] (the watch missed revisions that etcd compacted
///   away), every client with a live session here is checked against the keyrings in
///   etcd, and those without one have their sessions ended.
///
/// The watch survives etcd failures by itself (it resumes from the last revision it
/// saw). Keep the task for as long as the gateway serves: it holds a clone of the
/// gateway, so drop it (which cancels it) at shutdown rather than detaching it.
///
/// ```no_run
/// # async fn run(gateway: boarding_smol::Gateway<boarding_etcd::EtcdStore>) -> Result<(), boarding_etcd::EtcdError> {
/// let follower = boarding_etcd::follow_revocations(&gateway).await?;
/// // ... serve ...
/// drop(follower);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// An [`EtcdError`] if etcd does not establish the watch.
pub async fn follow_revocations(gateway: &Gateway<EtcdStore>) -> Result<smol::Task<()>, EtcdError> {
    let revocations = gateway.store().watch_revocations().await?;
    Ok(gateway.spawn(follow(gateway.clone(), revocations)))
}

async fn follow(gateway: Gateway<EtcdStore>, mut revocations: Revocations) {
    while let Some(revocation) = revocations.next().await {
        match revocation {
            Revocation::Client(id) => end(&gateway, &id, "its keyring was deleted in etcd"),
            Revocation::Token(id) => {
                tracing::debug!(token = %id, "a token was deleted in etcd; clients that joined with it stay");
            }
            Revocation::Resync => resync(&gateway).await,
        }
    }
    tracing::debug!("the etcd revocation watch ended");
}

fn end(gateway: &Gateway<EtcdStore>, id: &ClientId, why: &str) {
    let closed = gateway.end_sessions(id);
    if closed > 0 {
        tracing::info!(client = %id, closed, "client revoked ({why}): its live sessions on this replica were closed");
    } else {
        tracing::debug!(client = %id, "client revoked ({why}); no live session on this replica");
    }
}

/// Ends the sessions of the clients that have live sessions here but no keyring in
/// etcd any more (deletions the watch may have missed).
async fn resync(gateway: &Gateway<EtcdStore>) {
    tracing::warn!(
        "the etcd revocation watch missed revisions that etcd compacted away; checking every live session's \
         client against etcd"
    );
    loop {
        match gateway.store().clients().await {
            Ok(keyrings) => {
                let known: BTreeSet<ClientId> = keyrings.into_iter().map(|k| k.client_id).collect();
                for id in gateway.session_clients() {
                    if !known.contains(&id) {
                        end(gateway, &id, "its keyring is gone from etcd");
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "checking the live sessions against etcd failed; retrying");
                smol::Timer::after(RESYNC_RETRY).await;
            }
        }
    }
}
