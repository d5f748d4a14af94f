//! Errors that say what went wrong and what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use boarding::Alert;
use boarding::channel::Side;
use boarding::error::{ChannelError, ReceivedAlert};
use boarding::pin::Pin;

/// Where an [`Error::Io`] happened ([`Error::io_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// The connection to the peer (or a forwarded stream's upstream): the network, which
    /// may come back.
    Network,
    /// The gateway's local admin socket.
    Admin,
    /// This process's own resources (threads, a listener, the metrics' encoding).
    Local,
}

/// The contexts of I/O on a connection to a peer; every such site uses one of these.
const NETWORK_IO: &[&str] = &[
    "receiving a handshake message",
    "sending a handshake message",
    "receiving a message",
    "sending a message",
    "closing the session",
    "forwarding a stream",
    "writing the PROXY header to the upstream",
];

/// The contexts of I/O on the admin socket.
const ADMIN_IO: &[&str] = &["sending an admin request", "reading an admin response"];

/// Formats pins as a comma-separated list.
fn pin_list(pins: &[Pin]) -> String {
    if pins.is_empty() {
        return "(none)".to_owned();
    }
    pins.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Everything the smol driver can fail with. `Display` names the cause; what to do
/// about it in a given deployment (which flag or command) is the application's to say.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection to the gateway could not be made.
    #[error("cannot connect to the gateway at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The TLS 1.3 handshake failed for a reason other than the pin.
    #[error("TLS handshake failed: {source}; {cause}")]
    Tls {
        /// The error rustls reported.
        #[source]
        source: io::Error,
        /// What probably happened.
        cause: &'static str,
    },
    /// The gateway's key (TLS certificate or protocol identity) matches none of the pins.
    #[error(
        "the gateway's {layer} key does not match any pin: it presented {}, expected {}",
        pin_list(.presented),
        pin_list(.expected)
    )]
    PinMismatch {
        /// Where the mismatch was found: `"TLS certificate"` or `"protocol identity"`.
        layer: &'static str,
        /// Pins of the keys the gateway presented.
        presented: Vec<Pin>,
        /// The pins the agent accepts.
        expected: Vec<Pin>,
    },
    /// The gateway's certificate chain is malformed or its signatures do not link up.
    #[error("the gateway's TLS certificate chain was rejected: {reason}; it is not a Boarding gateway certificate")]
    CertificateChain {
        /// What was wrong.
        reason: String,
    },
    /// The Boarding handshake failed.
    #[error("{source}")]
    Handshake {
        /// The protocol core's error.
        #[source]
        source: boarding::Error,
        /// The side that reports it.
        side: Side,
    },
    /// The gateway accepted the TCP connection but dropped it before TLS completed: it
    /// is at its handshake caps, or it refused this connection.
    #[error("the gateway at {addr} is busy or refused the connection (it was closed before TLS completed)")]
    Busy {
        /// The gateway's address.
        addr: String,
    },
    /// The peer closed the connection in the middle of the handshake.
    #[error("the peer closed the connection during the Boarding handshake")]
    HandshakeEof,
    /// A deadline passed.
    #[error("the {what} did not complete within {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// A frame announced a payload larger than this side accepts.
    #[error("the peer sent a {len}-byte frame, over this side's limit of {max} bytes")]
    FrameTooLarge {
        /// The announced payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message to send is larger than a frame may carry.
    #[error("a {len}-byte message is over the {max}-byte frame limit; split it")]
    MessageTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A channel frame was rejected (forged, replayed, reordered, or from another session).
    #[error("channel: {0}; the session is closed")]
    Channel(#[from] ChannelError),
    /// The gateway ended the session because its client was revoked, or the gateway is
    /// shutting down (an authenticated close was sent).
    #[error("the session was closed by the gateway: the client was revoked, or the gateway is stopping")]
    Revoked,
    /// The gateway ended a session that received nothing (not even a keepalive) for
    /// this long (an authenticated close was sent).
    #[error("the session was idle for {after:?} and was closed")]
    IdleTimeout {
        /// The idle timeout.
        after: Duration,
    },
    /// A handshake was evicted to make room (the gateway was at its handshake cap and
    /// this connection had not sent its ClientHello).
    #[error("the handshake was evicted before its TLS ClientHello to make room for another")]
    Evicted,
    /// The gateway's admin socket could not be served or reached.
    #[error("admin socket {path}: {reason}")]
    AdminSocket {
        /// The socket's path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The running gateway refused an admin request.
    #[error("the gateway refused the admin request ({kind:?}): {message}", kind = .0.kind, message = .0.message)]
    Admin(crate::admin::AdminError),
    /// The connection ended without the peer's authenticated close.
    #[error("the connection ended without an authenticated close (the peer crashed, or the stream was truncated)")]
    Truncated,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A resume's proof failed at a gateway whose TLS key matched the agent's pin: it is
    /// the right gateway, and it no longer holds this agent's keyring (the client was
    /// revoked, or the gateway's store was replaced). The agent must join again.
    #[error(
        "the gateway at {gateway} no longer knows client {client_id}: it was revoked, or the gateway's store was \
         replaced; its key matched the pin, so this is the right gateway"
    )]
    UnknownClient {
        /// The gateway's address.
        gateway: String,
        /// The client id the agent resumed as.
        client_id: boarding::identity::ClientId,
    },
    /// The gateway refused the agent's keyring as one it has rotated away from: another
    /// holder of a copy of it resumed and rotated first.
    #[error(
        "the gateway at {gateway} refused client {client_id}'s keyring: it has rotated away from it, so another copy \
         of this keyring resumed first. The gateway recorded a clone suspicion; revoke the client (boarding clients \
         revoke {client_id}) and let the node rejoin with a new token"
    )]
    CloneSuspected {
        /// The gateway's address.
        gateway: String,
        /// The client id the agent resumed as.
        client_id: boarding::identity::ClientId,
    },
    /// The gateway asked for a keyring rotation in a resume that has no keyring store
    /// to keep the new keyring in ([`crate::agent::resume`], [`crate::Agent::connect_with`]);
    /// the resume was abandoned before its proof, so the gateway keeps the old keyring.
    #[error(
        "the gateway asked client {client_id} to rotate its keyring, but this resume has no keyring store to keep the \
         new one in; resume with a keyring store (Agent::connect) so the rotation is stored before it is confirmed"
    )]
    RotationUnstored {
        /// The client id.
        client_id: boarding::identity::ClientId,
    },
    /// A rotation found the agent's stored keyring changed since its resume began
    /// (another resume of this agent rotated first); nothing was stored or confirmed.
    #[error(
        "the stored keyring of client {client_id} changed while a resume that rotates it ran (another resume of this \
         agent rotated it first); nothing was stored, and resuming again uses the new keyring"
    )]
    RotationConflict {
        /// The client id.
        client_id: boarding::identity::ClientId,
    },
    /// The agent has no stored keyring to resume with.
    #[error("no keyring is stored in {location}: this agent has not joined yet")]
    NotJoined {
        /// Where it looked.
        location: String,
    },
    /// A token's metadata breaks the limits.
    #[error("invalid token metadata: {0}")]
    TokenMetadata(#[from] boarding::token::TokenError),
    /// A chosen token's id is already taken by another token.
    #[error("a token with id {id} already exists: delete it first, or choose another token")]
    TokenIdTaken {
        /// The id.
        id: boarding::token::TokenId,
    },
    /// Every random token id tried was already taken.
    #[error("could not find a free token id in {tries} tries; revoke old tokens")]
    NoFreeTokenId {
        /// How many ids were tried.
        tries: usize,
    },
    /// Building the TLS configuration or the certificate failed.
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    /// The gateway's validator refused a joining client's attestation evidence (the
    /// agent was told `AttestationRefused`; nothing was charged).
    #[error("the attestation evidence of client {client_id} was refused: {source}")]
    AttestationRefused {
        /// The client id the agent asked for.
        client_id: boarding::identity::ClientId,
        /// The validator's reason.
        #[source]
        source: crate::handshake::AttestationRefused,
    },
    /// The agent's attester could not produce evidence for the join (the gateway was
    /// told `Internal`).
    #[error("cannot attest this node: {0}")]
    Attest(#[source] crate::handshake::AttestError),
    /// Forwarding a stream through a session failed: refused by the gateway, given up by
    /// the peer, or the local stream or the upstream failed.
    #[cfg(feature = "forward")]
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    /// A node certificate could not be issued, read or stored: the request or the
    /// certificate was unusable, or this gateway issues no certificates.
    #[error("the certificate of client {client_id}: {reason}")]
    Certificate {
        /// The client it is for.
        client_id: boarding::identity::ClientId,
        /// Why.
        reason: String,
    },
    /// A request or ticket is not in this driver's parts format (`spec/PROTOCOL.md`
    /// §7.10): the peer is not a reference driver, or it misbehaved.
    #[error(transparent)]
    Parts(#[from] crate::ticket::PartsError),
    /// A gateway address could not be resolved.
    #[error("cannot resolve the gateway address {addr:?}: {reason}; use host:port, for example 127.0.0.1:7443")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    /// Where an I/O failure happened, for an [`Error::Io`] (`None` for any other error):
    /// what a caller decides "retry later" or "fix this machine" on, without reading the
    /// message.
    pub fn io_kind(&self) -> Option<IoKind> {
        let Self::Io { context, .. } = self else { return None };
        Some(if NETWORK_IO.contains(context) {
            IoKind::Network
        } else if ADMIN_IO.contains(context) {
            IoKind::Admin
        } else {
            IoKind::Local
        })
    }

    /// The protocol core's error, if this is a handshake failure.
    pub fn protocol(&self) -> Option<&boarding::Error> {
        match self {
            Self::Handshake { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the gateway was busy, unreachable, or
    /// dropped the connection (not a refusal of this agent).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::Connect { .. } | Self::HandshakeEof)
            || matches!(self, Self::Timeout { what: "TCP connection", .. })
    }

    /// The alert the peer sent, if it refused the handshake with one.
    pub fn peer_alert(&self) -> Option<Alert> {
        match self.protocol() {
            Some(boarding::Error::PeerAlert(ReceivedAlert::Known(alert))) => Some(*alert),
            _ => None,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the database.
    #[error(
        "the database {path} stayed locked by another process for longer than the wait: something keeps it \
         open (a program using an exclusive store, or a hung command); stop that process and retry"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The database reported an error.
    #[cfg(feature = "redb")]
    #[error("database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// The database file is in a file format this build cannot read.
    #[error(
        "the database {path} is in redb file format v{version}, which this build no longer reads (it reads v3, \
         written by redb 3 and later): convert the file with redb 2.6's `Database::upgrade`, or move it aside \
         and start afresh (a gateway then has a new identity and pin, and agents join again)"
    )]
    UnsupportedFormat {
        /// The database file.
        path: PathBuf,
        /// The file's format version.
        version: u8,
    },
    /// A stored value could not be decoded.
    #[error("database {path}: the {what} record is corrupt ({reason}); restore the data directory from a backup")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// The store's group-commit thread is gone (the store is shutting down).
    #[error("database {}: {reason}", .path.display())]
    Unavailable {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A store outside this crate failed (a replicated store's backend, say). Its
    /// message names the backend, and never a secret.
    #[error("{store} store: {source}")]
    Backend {
        /// Which kind of store, e.g. `"etcd"`.
        store: &'static str,
        /// What it reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A data directory or database file is open to group or others.
    #[error(
        "{} has mode {mode:04o}: group or others can access it, and it holds secrets; run `{fix} {}` and start again",
        .path.display(), .path.display()
    )]
    NotPrivate {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The command that fixes it (without the path).
        fix: &'static str,
    },
    /// The data directory could not be prepared.
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(context: &'static str) -> Error {
        Error::Io { context, source: io::Error::other("test") }
    }

    #[test]
    fn io_failures_are_classed_by_where_they_happened() {
        for context in NETWORK_IO {
            assert_eq!(io(context).io_kind(), Some(IoKind::Network), "{context}");
        }
        assert_eq!(io("sending an admin request").io_kind(), Some(IoKind::Admin));
        assert_eq!(io("starting the gateway's executor threads").io_kind(), Some(IoKind::Local));
        assert_eq!(Error::HandshakeEof.io_kind(), None);
    }
}
