//! Layered errors: a detailed, typed [`Error`] for the local side, and the coarse
//! [`Alert`] code that is all the peer ever learns.

use core::fmt;

pub use crate::channel::ChannelError;
pub use crate::codec::DecodeError;
use crate::pin::Pin;

/// The coarse reason a peer is told when a handshake fails (the body of an `Alert`
/// message, one byte). Deliberately vague: the local [`Error`] says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Alert {
    /// No protocol version or MAC suite in common.
    UnsupportedVersion = 1,
    /// A message could not be decoded, or a value in it is not allowed.
    Malformed = 2,
    /// A message arrived that the state machine does not expect now.
    UnexpectedMessage = 3,
    /// The token id is unknown to the gateway (never issued, or revoked).
    UnknownToken = 4,
    /// The token has expired.
    ExpiredToken = 5,
    /// The token has no uses left.
    ExhaustedToken = 6,
    /// A proof (token JWS, finished MAC, resume MAC) did not verify.
    BadProof = 7,
    /// The client id is already bound to a confirmed keyring (or to another token's).
    ClientIdTaken = 8,
    /// The client id is not a valid client id.
    InvalidClientId = 9,
    /// The gateway's identity did not match the client's pins, or its signature failed.
    BadIdentity = 10,
    /// The peer failed for a reason of its own (storage failure, misuse).
    Internal = 11,
}

impl Alert {
    /// Decodes an alert code; unknown codes map to `None`.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::UnsupportedVersion,
            2 => Self::Malformed,
            3 => Self::UnexpectedMessage,
            4 => Self::UnknownToken,
            5 => Self::ExpiredToken,
            6 => Self::ExhaustedToken,
            7 => Self::BadProof,
            8 => Self::ClientIdTaken,
            9 => Self::InvalidClientId,
            10 => Self::BadIdentity,
            11 => Self::Internal,
            _ => return None,
        })
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnsupportedVersion => "no common protocol version or MAC suite",
            Self::Malformed => "malformed message",
            Self::UnexpectedMessage => "unexpected message",
            Self::UnknownToken => "unknown token",
            Self::ExpiredToken => "expired token",
            Self::ExhaustedToken => "token has no uses left",
            Self::BadProof => "proof did not verify",
            Self::ClientIdTaken => "client id already taken",
            Self::InvalidClientId => "invalid client id",
            Self::BadIdentity => "gateway identity rejected",
            Self::Internal => "internal error",
        })
    }
}

/// A handshake that was well-formed on the wire but wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message of another type was expected in this state.
    UnexpectedMessage {
        /// What the state machine was waiting for.
        expected: &'static str,
        /// The frame type byte that arrived.
        got: u8,
    },
    /// No protocol version in common with the peer.
    NoCommonVersion,
    /// No MAC suite in common with the peer.
    NoCommonSuite,
    /// The gateway chose a version or suite the client did not offer.
    ChoiceNotOffered,
    /// The gateway's identity key matches none of the client's pins.
    WrongPin {
        /// The pin of the key the gateway presented.
        presented: Pin,
    },
    /// The gateway sent no challenge for the client's token.
    TokenNotOffered,
    /// The gateway's EdDSA challenge for the client's token did not verify.
    BadGatewaySignature,
    /// The gateway signed another transcript than the client's: a message was changed,
    /// replayed from another session, or the negotiation was downgraded.
    TranscriptMismatch,
    /// The gateway's finished or resume MAC did not verify (wrong gateway, or it
    /// does not hold this client's keyring).
    BadGatewayProof,
    /// The client's token proof or finished MAC did not verify.
    BadClientProof,
    /// An X25519 share produced the all-zero (non-contributory) shared secret.
    NonContributoryShare,
    /// The token id is unknown (never issued, or revoked).
    UnknownToken,
    /// The token has expired.
    ExpiredToken,
    /// The token has no uses left.
    ExhaustedToken,
    /// The client's messages name two different tokens.
    TokenMismatch,
    /// The client id is already bound to a confirmed keyring or to another token.
    ClientIdTaken,
    /// The client id does not follow the client-id rules.
    InvalidClientId,
    /// A resume named a client id with no keyring (the client was sent a decoy).
    UnknownClient,
    /// The peer sent an alert.
    PeerAlert(Alert),
    /// The peer sent an alert code this implementation does not know.
    UnknownAlert(u8),
    /// The storage backend failed; the handshake cannot continue.
    Storage,
    /// The caller used the API out of order (for example answered a storage request
    /// that was not asked).
    Misuse(&'static str),
}

impl ProtocolError {
    /// The alert the peer is sent for this error.
    pub fn alert(&self) -> Alert {
        match self {
            Self::UnexpectedMessage { .. } => Alert::UnexpectedMessage,
            Self::NoCommonVersion | Self::NoCommonSuite | Self::ChoiceNotOffered => Alert::UnsupportedVersion,
            Self::WrongPin { .. } | Self::BadGatewaySignature | Self::BadGatewayProof => Alert::BadIdentity,
            Self::TokenNotOffered | Self::UnknownToken => Alert::UnknownToken,
            Self::BadClientProof | Self::UnknownClient | Self::TranscriptMismatch => Alert::BadProof,
            Self::NonContributoryShare | Self::TokenMismatch => Alert::Malformed,
            Self::ExpiredToken => Alert::ExpiredToken,
            Self::ExhaustedToken => Alert::ExhaustedToken,
            Self::ClientIdTaken => Alert::ClientIdTaken,
            Self::InvalidClientId => Alert::InvalidClientId,
            Self::PeerAlert(_) | Self::UnknownAlert(_) | Self::Storage | Self::Misuse(_) => Alert::Internal,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedMessage { expected, got } => {
                write!(f, "expected {expected}, got a frame of type 0x{got:02x}")
            }
            Self::NoCommonVersion => f.write_str("no protocol version in common with the peer"),
            Self::NoCommonSuite => f.write_str("no MAC suite in common with the peer"),
            Self::ChoiceNotOffered => f.write_str("the gateway chose a version or suite that was not offered"),
            Self::WrongPin { presented } => {
                write!(f, "the gateway presented identity {presented}, which matches none of the pins")
            }
            Self::TokenNotOffered => f.write_str("the gateway does not know this token (no challenge for its id)"),
            Self::BadGatewaySignature => f.write_str(
                "the gateway's signature over the token challenge did not verify \
                 (wrong token secret, or not the gateway that issued the token)",
            ),
            Self::TranscriptMismatch => f.write_str(
                "the gateway signed a different transcript (tampering, replay from another session, or downgrade)",
            ),
            Self::BadGatewayProof => f.write_str(
                "the gateway's MAC did not verify (not the pinned gateway, or it no longer holds this client's keyring)",
            ),
            Self::BadClientProof => f.write_str("the client's proof did not verify (wrong token secret or tampering)"),
            Self::NonContributoryShare => f.write_str("the peer's X25519 share is non-contributory"),
            Self::UnknownToken => f.write_str("unknown token (never issued, or revoked)"),
            Self::ExpiredToken => f.write_str("the token has expired"),
            Self::ExhaustedToken => f.write_str("the token has no uses left"),
            Self::TokenMismatch => f.write_str("the client named two different tokens"),
            Self::ClientIdTaken => f.write_str("the client id is already taken"),
            Self::InvalidClientId => f.write_str("the client id is not valid"),
            Self::UnknownClient => f.write_str("resume for a client id without a keyring"),
            Self::PeerAlert(alert) => write!(f, "the peer aborted: {alert}"),
            Self::UnknownAlert(code) => write!(f, "the peer aborted with unknown alert code {code}"),
            Self::Storage => f.write_str("the storage backend failed"),
            Self::Misuse(what) => write!(f, "API misuse: {what}"),
        }
    }
}

/// Every error the protocol core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer's bytes could not be decoded.
    Decode(DecodeError),
    /// The peer's messages decoded but broke the protocol.
    Protocol(ProtocolError),
    /// A channel frame was rejected, or the channel is closed.
    Channel(ChannelError),
}

impl Error {
    /// The alert the peer is sent for this error.
    pub fn alert(&self) -> Alert {
        match self {
            Self::Decode(_) => Alert::Malformed,
            Self::Protocol(p) => p.alert(),
            Self::Channel(_) => Alert::Malformed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "malformed input: {e}"),
            Self::Protocol(e) => write!(f, "handshake failed: {e}"),
            Self::Channel(e) => write!(f, "channel: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<ChannelError> for Error {
    fn from(e: ChannelError) -> Self {
        Self::Channel(e)
    }
}

/// The error for an alert the peer sent.
pub(crate) fn peer_alert(code: u8) -> ProtocolError {
    match Alert::from_code(code) {
        Some(alert) => ProtocolError::PeerAlert(alert),
        None => ProtocolError::UnknownAlert(code),
    }
}
