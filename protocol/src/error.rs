//! Layered errors: a detailed, typed [`Error`] for the local side, grouped by cause,
//! and the coarse [`Alert`] code that is all the peer ever learns.
//!
//! | group | cause | alert sent |
//! |---|---|---|
//! | [`Error::PeerMisbehaved`] | the peer's bytes, messages or proofs broke the protocol | yes |
//! | [`Error::PeerIncompatible`] | no version or MAC suite in common | yes |
//! | [`Error::Refused`] | a policy said no: token rules, client-id rules, pins, the application's admission or its verdict on the evidence | yes |
//! | [`Error::PeerAlert`] | the peer aborted with an alert | no (an alert is never answered) |
//! | [`Error::Local`] | this side failed: storage, persisting, attesting, the application's answer | yes (`Internal`) |
//! | [`Error::Misuse`] | the caller used the API out of order; nothing changed | no |
//! | [`Error::Channel`] | a channel frame was rejected, or the channel is closed | no (the channel has no alerts) |
//!
//! Which error sends which alert is decided in one place: [`Error::alert`].

use core::fmt;

pub use crate::channel::ChannelError;
pub use crate::codec::DecodeError;
use crate::messages::FrameType;
use crate::pin::Pin;

/// The coarse reason a peer is told when a handshake fails (the body of an `Alert`
/// message, one byte). Deliberately vague: the local [`Error`] says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The peer failed for a reason of its own (storage failure, a keyring it could not store).
    Internal = 11,
    /// The gateway's application refused this client (its admission policy said no).
    AdmissionRefused = 12,
    /// The gateway's application refused the client's attestation evidence (not bound to
    /// this session, not issued by an authority it trusts, expired, or missing).
    AttestationRefused = 13,
    /// The client resumed with a keyring the gateway has rotated away from: another
    /// holder of the same keyring rotated it first, so one of the two is a clone.
    RetiredKeyring = 14,
}

impl Alert {
    /// Every alert, in code order.
    pub const ALL: [Self; 14] = [
        Self::UnsupportedVersion,
        Self::Malformed,
        Self::UnexpectedMessage,
        Self::UnknownToken,
        Self::ExpiredToken,
        Self::ExhaustedToken,
        Self::BadProof,
        Self::ClientIdTaken,
        Self::InvalidClientId,
        Self::BadIdentity,
        Self::Internal,
        Self::AdmissionRefused,
        Self::AttestationRefused,
        Self::RetiredKeyring,
    ];

    /// Decodes an alert code; unknown codes map to `None`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.code() == code)
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
            Self::AdmissionRefused => "refused by the gateway's admission policy",
            Self::AttestationRefused => "attestation evidence refused by the gateway",
            Self::RetiredKeyring => "keyring retired by a rotation (clone suspected)",
        })
    }
}

/// The peer broke the protocol: its bytes did not decode, a message came out of
/// order, or a proof it sent did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMisbehaved {
    /// The peer's bytes could not be decoded.
    Malformed(DecodeError),
    /// A frame of another type was expected in this state.
    UnexpectedMessage {
        /// The frame types the state machine was waiting for.
        expected: &'static [FrameType],
        /// The frame type byte that arrived.
        got: u8,
    },
    /// The gateway chose a version or suite the client did not offer.
    ChoiceNotOffered,
    /// An X25519 share produced the all-zero (non-contributory) shared secret.
    NonContributoryShare,
    /// The client's messages name two different tokens.
    TokenMismatch,
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
}

/// The peer speaks nothing this side speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerIncompatible {
    /// No protocol version in common with the peer.
    NoCommonVersion,
    /// No MAC suite in common with the peer.
    NoCommonSuite,
}

/// A policy refused the handshake: the gateway's token and client rules, the
/// client's pins, or the gateway application's admission decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token id is unknown (never issued, or revoked), or, at the client, the
    /// gateway sent no challenge for it.
    UnknownToken,
    /// The token has expired.
    ExpiredToken,
    /// The token has no uses left.
    ExhaustedToken,
    /// The client id is already bound to a confirmed keyring or to another token.
    ClientIdTaken,
    /// The client id does not follow the client-id rules.
    InvalidClientId,
    /// A resume named a client id with no keyring (the client was sent a decoy), or a
    /// confirmation found the keyring revoked.
    UnknownClient,
    /// The gateway's identity key matches none of the client's pins.
    WrongPin {
        /// The pin of the key the gateway presented.
        presented: Pin,
    },
    /// The gateway's application refused to admit the client.
    Admission,
    /// The gateway's application refused the client's attestation evidence.
    Attestation,
    /// A resume proved a keyring the gateway has rotated away from: another holder of
    /// it rotated first, so a copy of the keyring exists (the gateway records a clone
    /// suspicion for the client id).
    RetiredKeyring,
}

/// This side failed for a reason of its own; the peer is told `Internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFailure {
    /// The storage backend failed.
    Storage,
    /// The agent could not store its keyring durably, so it does not confirm it.
    Persist,
    /// The application's ticket (a join's or a resume's) is longer than the protocol
    /// allows.
    TicketTooLong {
        /// Its length.
        len: usize,
    },
    /// The agent's application could not produce attestation evidence.
    Attestation,
    /// The agent's attestation evidence is longer than the protocol allows.
    EvidenceTooLong {
        /// Its length.
        len: usize,
    },
    /// The agent's application request is longer than the protocol allows (refused
    /// when it is configured, before any handshake starts).
    RequestTooLong {
        /// Its length.
        len: usize,
    },
    /// A handshake step was interrupted by a panic (the state it was replacing is
    /// gone). The core itself never panics; this is what a caller that catches an
    /// unwind sees afterwards.
    Interrupted,
}

/// The caller used the API out of order. The call changed nothing and sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMisuse {
    /// An answer arrived that the state machine did not ask for now.
    NotPending {
        /// What was answered.
        answer: &'static str,
        /// What the state machine is waiting for.
        state: &'static str,
    },
    /// The handshake has not completed (for `into_session`).
    NotEstablished {
        /// What the state machine is waiting for.
        state: &'static str,
    },
}

/// An alert received from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedAlert {
    /// A code this implementation knows.
    Known(Alert),
    /// A code it does not know.
    Unknown(u8),
    /// An Alert frame whose body is not exactly one byte (still an abort, never answered).
    Malformed,
}

impl ReceivedAlert {
    /// Classifies a received alert code.
    pub fn from_code(code: u8) -> Self {
        Alert::from_code(code).map_or(Self::Unknown(code), Self::Known)
    }
}

/// Every error the protocol core reports, grouped by cause (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The peer broke the protocol.
    PeerMisbehaved(PeerMisbehaved),
    /// The peer has no version or suite in common with this side.
    PeerIncompatible(PeerIncompatible),
    /// A policy refused the handshake.
    Refused(Refusal),
    /// The peer aborted the handshake with an alert.
    PeerAlert(ReceivedAlert),
    /// This side failed.
    Local(LocalFailure),
    /// The API was used out of order; nothing changed.
    Misuse(ApiMisuse),
    /// A channel frame was rejected, or the channel is closed.
    Channel(ChannelError),
}

impl Error {
    /// The alert the peer is sent for this error, or `None` for errors that send none:
    /// a received alert is never answered, misuse changes nothing, and the channel has
    /// no alerts (a fatal channel error closes the connection).
    pub fn alert(&self) -> Option<Alert> {
        Some(match self {
            Self::PeerMisbehaved(p) => match p {
                PeerMisbehaved::Malformed(_) | PeerMisbehaved::NonContributoryShare | PeerMisbehaved::TokenMismatch => {
                    Alert::Malformed
                }
                PeerMisbehaved::UnexpectedMessage { .. } => Alert::UnexpectedMessage,
                PeerMisbehaved::ChoiceNotOffered => Alert::UnsupportedVersion,
                PeerMisbehaved::BadGatewaySignature | PeerMisbehaved::BadGatewayProof => Alert::BadIdentity,
                PeerMisbehaved::TranscriptMismatch | PeerMisbehaved::BadClientProof => Alert::BadProof,
            },
            Self::PeerIncompatible(_) => Alert::UnsupportedVersion,
            Self::Refused(r) => match r {
                Refusal::UnknownToken => Alert::UnknownToken,
                Refusal::ExpiredToken => Alert::ExpiredToken,
                Refusal::ExhaustedToken => Alert::ExhaustedToken,
                Refusal::ClientIdTaken => Alert::ClientIdTaken,
                Refusal::InvalidClientId => Alert::InvalidClientId,
                // The decoy: an unknown client is told exactly what a wrong proof is told.
                Refusal::UnknownClient => Alert::BadProof,
                Refusal::WrongPin { .. } => Alert::BadIdentity,
                Refusal::Admission => Alert::AdmissionRefused,
                Refusal::Attestation => Alert::AttestationRefused,
                Refusal::RetiredKeyring => Alert::RetiredKeyring,
            },
            Self::Local(_) => Alert::Internal,
            Self::PeerAlert(_) | Self::Misuse(_) | Self::Channel(_) => return None,
        })
    }

    /// The alert the peer sent, if this error is one.
    pub fn peer_alert(&self) -> Option<ReceivedAlert> {
        match self {
            Self::PeerAlert(a) => Some(*a),
            _ => None,
        }
    }
}

impl TryFrom<&Error> for Alert {
    type Error = ();

    /// The alert for an error (see [`Error::alert`]); `Err(())` for errors that send none.
    fn try_from(e: &Error) -> Result<Self, ()> {
        e.alert().ok_or(())
    }
}

/// Writes a list of frame types as `A or B or C`.
struct FrameTypes(&'static [FrameType]);

impl fmt::Display for FrameTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{t:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PeerMisbehaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed input: {e}"),
            Self::UnexpectedMessage { expected, got } => {
                write!(f, "expected {}, got a frame of type 0x{got:02x}", FrameTypes(expected))
            }
            Self::ChoiceNotOffered => f.write_str("the gateway chose a version or suite that was not offered"),
            Self::NonContributoryShare => f.write_str("the peer's X25519 share is non-contributory"),
            Self::TokenMismatch => f.write_str("the client named two different tokens"),
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
        }
    }
}

impl fmt::Display for PeerIncompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoCommonVersion => "no protocol version in common with the peer",
            Self::NoCommonSuite => "no MAC suite in common with the peer",
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownToken => f.write_str("unknown token (never issued, revoked, or not offered by the gateway)"),
            Self::ExpiredToken => f.write_str("the token has expired"),
            Self::ExhaustedToken => f.write_str("the token has no uses left"),
            Self::ClientIdTaken => f.write_str("the client id is already taken"),
            Self::InvalidClientId => f.write_str("the client id is not valid"),
            Self::UnknownClient => f.write_str("no keyring for this client id (never joined, or revoked)"),
            Self::WrongPin { presented } => {
                write!(f, "the gateway presented identity {presented}, which matches none of the pins")
            }
            Self::Admission => f.write_str("the gateway's admission policy refused the client"),
            Self::Attestation => f.write_str("the gateway refused the client's attestation evidence"),
            Self::RetiredKeyring => f.write_str(
                "the keyring was rotated away from by another holder of it: a clone of this client's keyring exists",
            ),
        }
    }
}

impl fmt::Display for LocalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Storage => f.write_str("the storage backend failed"),
            Self::Persist => f.write_str("the keyring could not be stored, so it was not confirmed"),
            Self::TicketTooLong { len } => {
                write!(f, "the ticket is {len} bytes, the limit is {}", crate::messages::MAX_TICKET)
            }
            Self::Attestation => f.write_str("the agent's attester could not produce evidence for this session"),
            Self::EvidenceTooLong { len } => {
                write!(f, "the attestation evidence is {len} bytes, the limit is {}", crate::messages::MAX_EVIDENCE)
            }
            Self::RequestTooLong { len } => {
                write!(f, "the request is {len} bytes, the limit is {}", crate::messages::MAX_REQUEST)
            }
            Self::Interrupted => f.write_str("a handshake step was interrupted by a panic"),
        }
    }
}

impl fmt::Display for ApiMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPending { answer, state } => {
                write!(f, "API misuse: {answer} was not asked for (the handshake is in state {state}); nothing changed")
            }
            Self::NotEstablished { state } => {
                write!(f, "API misuse: the handshake is not complete (state {state})")
            }
        }
    }
}

impl fmt::Display for ReceivedAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(alert) => write!(f, "{alert}"),
            Self::Unknown(code) => write!(f, "unknown alert code {code}"),
            Self::Malformed => f.write_str("an alert frame whose body is not one byte"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerMisbehaved(e) => write!(f, "handshake failed: {e}"),
            Self::PeerIncompatible(e) => write!(f, "handshake failed: {e}"),
            Self::Refused(e) => write!(f, "handshake refused: {e}"),
            Self::PeerAlert(a) => write!(f, "the peer aborted: {a}"),
            Self::Local(e) => write!(f, "handshake failed: {e}"),
            Self::Misuse(e) => write!(f, "{e}"),
            Self::Channel(e) => write!(f, "channel: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::PeerMisbehaved(PeerMisbehaved::Malformed(e))
    }
}

impl From<PeerMisbehaved> for Error {
    fn from(e: PeerMisbehaved) -> Self {
        Self::PeerMisbehaved(e)
    }
}

impl From<PeerIncompatible> for Error {
    fn from(e: PeerIncompatible) -> Self {
        Self::PeerIncompatible(e)
    }
}

impl From<Refusal> for Error {
    fn from(e: Refusal) -> Self {
        Self::Refused(e)
    }
}

impl From<LocalFailure> for Error {
    fn from(e: LocalFailure) -> Self {
        Self::Local(e)
    }
}

impl From<ApiMisuse> for Error {
    fn from(e: ApiMisuse) -> Self {
        Self::Misuse(e)
    }
}

impl From<ChannelError> for Error {
    fn from(e: ChannelError) -> Self {
        Self::Channel(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_codes_round_trip() {
        for alert in Alert::ALL {
            assert_eq!(Alert::from_code(alert.code()), Some(alert));
        }
        assert_eq!(Alert::from_code(0), None);
        assert_eq!(Alert::from_code(13), Some(Alert::AttestationRefused));
        assert_eq!(Alert::from_code(14), Some(Alert::RetiredKeyring));
        assert_eq!(Alert::from_code(15), None);
    }

    #[test]
    fn errors_that_send_no_alert() {
        let none = [
            Error::PeerAlert(ReceivedAlert::Unknown(99)),
            Error::Misuse(ApiMisuse::NotEstablished { state: "x" }),
            Error::Channel(ChannelError::AfterClose),
        ];
        for e in none {
            assert_eq!(Alert::try_from(&e), Err(()), "{e}");
        }
        assert_eq!(Error::Local(LocalFailure::Persist).alert(), Some(Alert::Internal));
        assert_eq!(Error::Refused(Refusal::UnknownClient).alert(), Some(Alert::BadProof));
    }
}
