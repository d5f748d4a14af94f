//! What can go wrong with the etcd store, named so an operator can act on it.
//!
//! No message carries a secret: not the sealing key, not a token secret, not a keyring,
//! not the etcd password. Messages name the etcd endpoints, the fleet's key prefix and
//! the etcd key concerned.

use std::path::PathBuf;
use std::time::Duration;

use boarding_smol::StoreError;

/// Why an etcd store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The configuration cannot work (no endpoints, an empty prefix, a bad option).
    #[error("invalid etcd store configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A file the configuration names (the sealing key, a TLS certificate or key) could
    /// not be used.
    #[error("the {what} file {}: {reason}", .path.display())]
    File {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// etcd could not be reached (or refused the credentials) when the store was opened.
    #[error(
        "cannot reach etcd at {endpoints} within {after:?}: {reason}; check that etcd runs there and that the \
         endpoints, TLS settings and credentials are right"
    )]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// How long the store waited.
        after: Duration,
        /// What etcd or the transport said.
        reason: String,
    },
    /// An etcd request failed.
    #[error("etcd at {endpoints}: {op} failed: {reason}")]
    Request {
        /// The endpoints.
        endpoints: String,
        /// The store operation.
        op: &'static str,
        /// What etcd or the transport said.
        reason: String,
    },
    /// A store operation did not complete in time (etcd is slow, partitioned or down).
    #[error("etcd at {endpoints}: {op} did not complete within {after:?}")]
    Timeout {
        /// The endpoints.
        endpoints: String,
        /// The store operation.
        op: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// No fleet has been opened under this prefix yet, and the store was asked to open
    /// an existing one only ([`crate::EtcdConfig::with_existing_fleet`]).
    #[error(
        "etcd at {endpoints}: no fleet under the prefix {prefix:?}: no gateway replica (or `gateway init`) has \
         opened it yet"
    )]
    NoFleet {
        /// The endpoints.
        endpoints: String,
        /// The fleet's key prefix.
        prefix: String,
    },
    /// The sealing key does not open this fleet's values: the replica was given another
    /// key than the one the fleet's values were sealed under.
    #[error(
        "etcd at {endpoints}: the sealing key does not open the values under the prefix {prefix:?}; every replica \
         of a fleet needs the same sealing key file (the key this fleet was first opened with)"
    )]
    WrongSealingKey {
        /// The endpoints.
        endpoints: String,
        /// The fleet's key prefix.
        prefix: String,
    },
    /// A stored value failed authentication: it was sealed under another key, copied
    /// from another etcd key, or altered.
    #[error(
        "etcd at {endpoints}: the value at {key} cannot be unsealed: it was sealed under another sealing key, \
         copied from another etcd key, or altered; delete the key or restore it from a backup"
    )]
    Unseal {
        /// The endpoints.
        endpoints: String,
        /// The etcd key.
        key: String,
    },
    /// A stored value unsealed but does not decode.
    #[error("etcd at {endpoints}: the {what} at {key} is corrupt ({reason})")]
    Corrupt {
        /// The endpoints.
        endpoints: String,
        /// The etcd key.
        key: String,
        /// What the value should have been.
        what: &'static str,
        /// Why it does not decode.
        reason: String,
    },
    /// A transaction kept conflicting with concurrent writes to the same keys.
    #[error("etcd at {endpoints}: {op} still conflicted with concurrent writes after {attempts} attempts")]
    Contention {
        /// The endpoints.
        endpoints: String,
        /// The store operation.
        op: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// The store reached a state it does not expect (a bug; the operation changed nothing).
    #[error("the etcd store reached a state it does not expect: {reason}; the operation changed nothing")]
    Unexpected {
        /// What was unexpected.
        reason: String,
    },
    /// The store's etcd runtime has stopped (the store is being dropped).
    #[error("the etcd store has stopped")]
    Stopped,
}

impl EtcdError {
    /// Whether trying the same operation again later may succeed (etcd was slow or
    /// unreachable, or writes kept conflicting), as opposed to a configuration, key or
    /// data problem.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Request { .. } | Self::Timeout { .. } | Self::Contention { .. } | Self::Unreachable { .. })
    }
}

/// The gateway's store error for an etcd failure. The gateway answers the handshake
/// that needed the store with `Internal` and logs this message.
impl From<EtcdError> for StoreError {
    fn from(error: EtcdError) -> Self {
        StoreError::Backend { store: "etcd", source: Box::new(error) }
    }
}
