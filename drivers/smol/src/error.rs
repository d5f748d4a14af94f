//! Errors that say what went wrong and what to do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use boarding::Alert;
use boarding::error::{ChannelError, ProtocolError};
use boarding::pin::Pin;

/// Formats pins as a comma-separated list.
fn pin_list(pins: &[Pin]) -> String {
    if pins.is_empty() {
        return "(none)".to_owned();
    }
    pins.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Everything the smol driver can fail with. `Display` names the cause and, where there
/// is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection to the gateway could not be made.
    #[error(
        "cannot connect to the gateway at {addr}: {source}; check that `boarding gateway serve` is running \
         there and that --gateway names its --listen address"
    )]
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
    #[error("TLS handshake failed: {source}; {hint}")]
    Tls {
        /// The error rustls reported.
        #[source]
        source: io::Error,
        /// What probably happened.
        hint: &'static str,
    },
    /// The gateway's key (TLS certificate or protocol identity) matches none of the pins.
    #[error(
        "the gateway's {layer} key does not match any pin: it presented {}, expected {}; check --pin against \
         the pin `boarding gateway serve` printed (a gateway whose data directory was re-created has a new \
         pin), or you are talking to another server",
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
    #[error("{source}; {}", if *.gateway_side { gateway_hint(.source) } else { agent_hint(.source) })]
    Handshake {
        /// The protocol core's error.
        #[source]
        source: boarding::Error,
        /// Whether this side is the gateway (the hint differs).
        gateway_side: bool,
    },
    /// The peer closed the connection in the middle of the handshake.
    #[error(
        "the peer closed the connection during the Boarding handshake; if this is the agent side, the gateway \
         refused or dropped the connection (see its log: too many concurrent handshakes, a deadline, or a crash)"
    )]
    HandshakeEof,
    /// A deadline passed.
    #[error("the {what} did not complete within {after:?}; {hint}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The deadline.
        after: Duration,
        /// What probably happened.
        hint: &'static str,
    },
    /// A frame announced a payload larger than this side accepts.
    #[error("the peer sent a {len}-byte frame, over this side's limit of {max} bytes; raise the limit or send less")]
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
    #[error("channel: {0}; the session is closed, connect again")]
    Channel(#[from] ChannelError),
    /// The connection ended without the peer's authenticated close.
    #[error(
        "the connection ended without an authenticated close (the peer crashed, or the stream was truncated); \
         connect again"
    )]
    Truncated,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The agent has no stored keyring to resume with.
    #[error("no keyring is stored in {location}: this agent has not joined yet; run `boarding agent join` first")]
    NotJoined {
        /// Where it looked.
        location: String,
    },
    /// Building the TLS configuration or the certificate failed.
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
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
    /// Marks a handshake error as the gateway's (for its hint).
    pub(crate) fn on_gateway(self) -> Self {
        match self {
            Self::Handshake { source, .. } => Self::Handshake { source, gateway_side: true },
            other => other,
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    /// The protocol core's error, if this is a handshake failure.
    pub fn protocol(&self) -> Option<&boarding::Error> {
        match self {
            Self::Handshake { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The alert the gateway sent, if it refused the handshake with one.
    pub fn peer_alert(&self) -> Option<Alert> {
        match self.protocol() {
            Some(boarding::Error::Protocol(ProtocolError::PeerAlert(alert))) => Some(*alert),
            _ => None,
        }
    }
}

impl From<boarding::Error> for Error {
    fn from(source: boarding::Error) -> Self {
        Self::Handshake { source, gateway_side: false }
    }
}

/// What a gateway operator should make of a refused handshake.
fn gateway_hint(e: &boarding::Error) -> &'static str {
    let boarding::Error::Protocol(p) = e else {
        return "the client sent bytes that are not the Boarding protocol (not a Boarding agent, or the wrong port)";
    };
    match p {
        ProtocolError::UnknownToken | ProtocolError::ExpiredToken | ProtocolError::ExhaustedToken => {
            "the agent was refused and told why; it needs a valid token (`boarding token create`)"
        }
        ProtocolError::ClientIdTaken => "the agent was refused: another agent holds that client id",
        ProtocolError::BadClientProof => "the agent does not hold the token secret or the keyring it claims",
        ProtocolError::UnknownClient => {
            "a resume from a client id without a keyring (revoked, or never joined); it got a decoy"
        }
        ProtocolError::PeerAlert(Alert::BadIdentity) => {
            "the agent rejected this gateway's identity: its --pin is not this gateway's pin"
        }
        ProtocolError::PeerAlert(_) => "the agent aborted the handshake; its own error says why",
        ProtocolError::Storage => "the store failed; see the store error logged before this one",
        _ => "the client does not follow the Boarding protocol, or the connection was tampered with",
    }
}

/// What an agent should do about a handshake error.
fn agent_hint(e: &boarding::Error) -> &'static str {
    let boarding::Error::Protocol(p) = e else {
        return "the peer sent bytes that are not the Boarding protocol (wrong port, or not a Boarding peer)";
    };
    match p {
        ProtocolError::PeerAlert(alert) => match alert {
            Alert::UnknownToken => {
                "the gateway does not know this token: it was never created there, or it was revoked; \
                 create one with `boarding token create` on the gateway"
            }
            Alert::ExpiredToken => "the token has expired; create a new one with `boarding token create --ttl`",
            Alert::ExhaustedToken => {
                "every use of the token is spent; create a new one with `boarding token create --uses`"
            }
            Alert::ClientIdTaken => {
                "another agent has joined with this id; choose another --id, or remove the old one with \
                 `boarding clients revoke` on the gateway"
            }
            Alert::BadProof => {
                "the gateway rejected the proof: a wrong token secret, or (on resume) a client the gateway \
                 no longer knows; check the token, or join again"
            }
            Alert::InvalidClientId => "client ids are DNS labels: lowercase letters, digits and '-', 1 to 63 long",
            Alert::UnsupportedVersion => "the gateway speaks another protocol version or MAC suite; upgrade one side",
            Alert::Internal => "the gateway failed internally (see its log, for example its database)",
            _ => "see the gateway's log for details",
        },
        ProtocolError::BadGatewayProof => {
            "join again with a new token and a fresh --data-dir (the client was revoked, or the gateway's database \
             was replaced)"
        }
        ProtocolError::BadGatewaySignature | ProtocolError::TokenNotOffered => {
            "check that the token was created on this gateway and was copied whole"
        }
        ProtocolError::WrongPin { .. } => "check --pin against the pin the gateway printed",
        ProtocolError::Storage => "the gateway's store failed; see the store error logged before this one",
        _ => "the peer does not follow the Boarding protocol, or the connection was tampered with",
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
