//! The command's errors, and the operator hints that go with them: what to run or
//! which flag to check. The libraries name causes; this is where flags are named.

use boarding::Alert;
use boarding::channel::Side;
use boarding::error::{LocalFailure, PeerMisbehaved, ReceivedAlert, Refusal};
use boarding_smol::StoreError;

/// A command's failure; `Display` is what the user sees after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the driver (connection, TLS, handshake, session).
    #[error(transparent)]
    Boarding(#[from] boarding_smol::Error),
    /// From a store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request that cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// An I/O error outside the driver.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, CliError>;

impl CliError {
    /// What the operator can do about it, if there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Boarding(e) => driver_hint(e),
            _ => None,
        }
    }
}

fn driver_hint(e: &boarding_smol::Error) -> Option<&'static str> {
    use boarding_smol::Error as E;
    Some(match e {
        E::Connect { .. } => {
            "check that `boarding gateway serve` is running there and that --gateway names its --listen address"
        }
        E::PinMismatch { .. } => {
            "check --pin against the pin `boarding gateway serve` printed (a gateway whose data directory was \
             re-created has a new pin), or you are talking to another server"
        }
        E::NotJoined { .. } => "run `boarding agent join` first",
        E::Timeout { what: "TCP connection", .. } => {
            "the gateway address does not answer; check --gateway and firewalls"
        }
        E::Timeout { .. } => "the gateway did not answer in time; is it overloaded?",
        E::HandshakeEof => {
            "the gateway refused or dropped the connection (see its log: too many concurrent handshakes, a \
             deadline, or a crash)"
        }
        E::Tls { .. } => "see the gateway's log",
        E::FrameTooLarge { .. } => "raise --max-message on both sides, or send less",
        E::Handshake { source, side: Side::Client } => return agent_hint(source),
        _ => return None,
    })
}

/// What an agent's operator should do about a handshake error.
fn agent_hint(e: &boarding::Error) -> Option<&'static str> {
    Some(match e {
        boarding::Error::PeerAlert(ReceivedAlert::Known(alert)) => match alert {
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
            Alert::AdmissionRefused => "the gateway's admission policy refused this agent; see the gateway's log",
            Alert::Malformed | Alert::UnexpectedMessage | Alert::BadIdentity => "see the gateway's log for details",
        },
        boarding::Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof) => {
            "join again with a new token and a fresh --data-dir (the client was revoked, or the gateway's \
             database was replaced)"
        }
        boarding::Error::PeerMisbehaved(PeerMisbehaved::BadGatewaySignature)
        | boarding::Error::Refused(Refusal::UnknownToken) => {
            "check that the token was created on this gateway and was copied whole"
        }
        boarding::Error::Refused(Refusal::WrongPin { .. }) => "check --pin against the pin the gateway printed",
        boarding::Error::Local(LocalFailure::Persist) => {
            "the agent's --data-dir could not be written; check its disk and permissions"
        }
        boarding::Error::PeerMisbehaved(_) | boarding::Error::PeerIncompatible(_) => {
            "the peer sent bytes that are not the Boarding protocol (wrong port, or not a Boarding gateway)"
        }
        _ => return None,
    })
}
