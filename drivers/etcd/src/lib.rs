//! The Boarding gateway store on etcd: several gateway replicas share one fleet's
//! tokens, keyrings and identity, and the storage rule (spec §11) holds across them.
//!
//! [`EtcdStore`] implements the smol driver's [`boarding_smol::Store`], so a gateway
//! runs on it unchanged. Like every store it adds no rule of its own: each protocol
//! request runs [`boarding::storage::execute`], here over a snapshot read from etcd.
//!
//! # One transaction per decision
//!
//! A redemption reads the token's key and the client's keyring key in one read-only
//! transaction (one etcd revision, linearizable), runs the storage rule on those
//! records, and commits the writes it asks for in one transaction whose compares
//! require every key it read to be unchanged: the same `mod_revision`, or still absent
//! (version 0). If another replica changed one of them first, the compares fail and the
//! transaction's `or_else` branch returns the fresh records, on which the rule decides
//! again (bounded attempts, with jittered backoff after the second). Of N replicas
//! racing one one-use token, exactly one commit succeeds; the others find the token
//! exhausted. A confirmation is committed the same way, conditional on the keyring's
//! `mod_revision`.
//!
//! A request that timed out or lost its connection after sending a transaction has an
//! unknown outcome. The store reads the keys again: if the client's keyring is the one
//! the redemption wrote (a keyring is one handshake's fresh randomness), it was
//! applied and is answered as such; otherwise the rule runs again, and since the
//! compares make at most one of the attempts apply, the token is charged once.
//!
//! # Hot unlimited tokens
//!
//! Rewriting one token record per join would make every join with a shared unlimited
//! token conflict with every other. A charge of an unlimited token therefore writes a
//! key of its own, `P/uses/<token>/<client>/<nonce>`, in the redemption's transaction,
//! and leaves the token's record alone: joins with one unlimited token touch disjoint
//! keys and never retry. The rule never consults an unlimited token's use count, so
//! its decisions are the same; [`boarding_smol::Store::tokens`] reports the count as
//! the record's count plus the number of those keys (a count-only range). Limited
//! tokens keep their count in the record, under the compare.
//!
//! # Expiry, sealing, fleets
//!
//! A token with an expiry is written with an etcd lease that runs out a grace period
//! after it ([`EtcdConfig::with_expiry_grace`]); its per-redemption keys share the
//! lease, and a charge rewrites the record keeping it (`ignore_lease`). The rule still
//! decides expiry at `expires_at`; the lease only clears expired records away.
//!
//! etcd keeps values in plain text, in its data directory and in every backup. Token
//! records, keyring records and the gateway identity are sealed with
//! XChaCha20-Poly1305 under a [`SealingKey`] the replicas share (a 32-byte key file),
//! with the etcd key as associated data, so a value moved to another key does not
//! open. Key names (token ids, client ids) stay readable.
//!
//! Every key lives under the fleet's prefix ([`EtcdConfig::with_prefix`]), so one etcd
//! serves several fleets. The first replica to start stores the gateway identity
//! (sealed, create-if-absent) and the others load it
//! ([`EtcdStore::load_or_create_identity`], or the gateway's own
//! `identity_or_insert`), so agents pin one key for the whole fleet.
//!
//! # Reads
//!
//! Every read is linearizable (etcd's default; nothing here asks for serializable
//! reads), the hello's token lookup included. There is no watch-fed cache of tokens
//! yet; the spec says how stale one could be and what that would allow.
//! [`EtcdStore::watch_revocations`] is the seam for revocation across the fleet: a
//! stream of keyring and token deletions by any replica (or `etcdctl`, or a lease).
//! [`follow_revocations`] follows it on a gateway replica and ends the revoked
//! clients' live sessions there, so a revocation anywhere closes the client's
//! sessions on every replica.
//!
//! # Runtime
//!
//! `etcd-client` runs on tokio. The store owns a small tokio runtime (its own threads)
//! and hands each operation to it over a channel, so the [`boarding_smol::Store`]
//! futures can be awaited from any executor and tokio stays inside this crate. Each
//! etcd request has a deadline, and each store operation another
//! ([`EtcdConfig::with_request_timeout`], [`EtcdConfig::with_operation_timeout`]):
//! [`EtcdStore::connect`] fails fast when etcd is unreachable, and later failures
//! answer the request with an error, which the gateway turns into `Internal`.
//!
//! ```no_run
//! use boarding_etcd::{EtcdConfig, EtcdStore, SealingKey};
//! use boarding_smol::{Gateway, GatewayConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let key = SealingKey::load("/etc/boarding/sealing.key")?;
//!     let config = EtcdConfig::new(["http://127.0.0.1:2379"], key).with_prefix("/boarding/fleet-a/");
//!     let store = EtcdStore::connect(config).await?;
//!     let gateway = Gateway::open(store, GatewayConfig::default()).await?;
//!     // Revocations made on any replica end the client's sessions on this one too.
//!     let follower = boarding_etcd::follow_revocations(&gateway).await?;
//!     // ... serve ...
//!     drop(follower);
//!     Ok(())
//! })
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(clippy::missing_errors_doc)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )
)]

mod config;
mod error;
mod follow;
mod layout;
mod seal;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

pub use config::{EtcdConfig, EtcdTls};
pub use error::EtcdError;
pub use follow::follow_revocations;
pub use layout::DEFAULT_PREFIX;
pub use seal::SealingKey;
pub use store::{EtcdStats, EtcdStore};
pub use watch::{Revocation, Revocations};
