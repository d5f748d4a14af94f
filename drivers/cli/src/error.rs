//! The command's errors, the exit status each gives, and the operator hints that go
//! with them: what to run or which flag to check. The libraries name causes; this is
//! where flags are named.

use boarding::Alert;
use boarding::channel::Side;
use boarding::error::{LocalFailure, PeerMisbehaved, ReceivedAlert, Refusal};
use boarding::identity::ClientId;
use boarding_etcd::EtcdError;
use boarding_smol::StoreError;
use boarding_smol::admin::AdminErrorKind;

/// A command's failure; `Display` is what the user sees after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the driver (connection, TLS, handshake, session).
    #[error(transparent)]
    Boarding(#[from] boarding_smol::Error),
    /// From a store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From the etcd store, opening it (reaching etcd, the sealing key, the fleet).
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A request that cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// A token given on the command line, in a file or on stdin is malformed or
    /// unreadable. The message names the source and the rule, never the token.
    #[error("{0}")]
    TokenInput(String),
    /// A data directory is not in the state the command needs: no gateway in it, an
    /// agent that already joined, a database another process holds.
    #[error("{0}")]
    DataDir(String),
    /// The token or client named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A token with the operator's chosen id already exists.
    #[error("{0}")]
    Conflict(String),
    /// A resume was refused because the gateway (the pinned one: TLS checked its key)
    /// no longer holds this agent's keyring.
    #[error(
        "the gateway at {gateway} no longer knows client {client}: it was revoked (`boarding clients revoke`), \
         or the gateway's database was replaced; the gateway's key matched the pin, so this is the right gateway"
    )]
    ClientUnknown {
        /// The gateway's address.
        gateway: String,
        /// The agent's client id.
        client: ClientId,
    },
    /// The gateway refused the agent's keyring as one it rotated away from.
    #[error(
        "the gateway at {gateway} refused client {client}'s keyring as one it has rotated away from: another copy of \
         this keyring resumed first, so a clone is suspected (the gateway recorded it; see `boarding clients list`)"
    )]
    CloneSuspected {
        /// The gateway's address.
        gateway: String,
        /// The agent's client id.
        client: ClientId,
    },
    /// The gateway answered something this command did not expect.
    #[error("{0}")]
    Unexpected(String),
    /// A listing could not be encoded as JSON or YAML.
    #[error("cannot encode the output: {0}")]
    Output(String),
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

/// The process exit status for each class of failure, for scripts. Documented in the
/// top-level `--help` ([`EXIT_CODES_HELP`]) and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Anything not below: a token or client that does not exist, a token id already
    /// taken, a protocol error, an internal failure.
    Other = 1,
    /// The command line is wrong (clap's own code): a bad flag or value, a malformed
    /// token, an invalid log filter, a TTL out of range.
    Usage = 2,
    /// The gateway (or, with `--store etcd`, etcd) could not be reached, or did not
    /// answer in time; trying again later may succeed.
    Unreachable = 3,
    /// The gateway refused: the token is unknown, spent or expired, the client id is
    /// taken, admission was refused, the client was revoked, or the gateway's key does
    /// not match the pin.
    Refused = 4,
    /// A local data directory or store: no gateway in it, not joined yet or joined
    /// already, a database that is locked, unreadable or corrupt, an admin socket that
    /// does not answer.
    Local = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

/// The exit codes, as the top-level `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  any other failure (e.g. no such token or client, a token id already taken)
  2  usage: a bad flag or value, a malformed token, an invalid log filter, a TTL out of range
  3  the gateway is unreachable or did not answer in time, or etcd is, with --store etcd (retrying
     may help)
  4  refused by the gateway: unknown, spent or expired token; client id taken; admission refused;
     client revoked; the gateway's key does not match --pin
  5  local data: no gateway in --data-dir, agent not joined (or joined already), a locked,
     unreadable or corrupt database, an admin socket that does not answer";

impl CliError {
    /// What the operator can do about it, if there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Boarding(boarding_smol::Error::Store(e)) | Self::Store(e) => store_hint(e),
            Self::Etcd(e) => etcd_hint(e),
            Self::Boarding(e) => driver_hint(e),
            Self::ClientUnknown { .. } => {
                Some("join again: `boarding agent join` with a new token and a fresh --data-dir")
            }
            Self::CloneSuspected { .. } => Some(
                "find where this node's --data-dir was copied (a backup, an image, another host); then on the gateway \
                 `boarding clients revoke` this client, and join again with a new token and a fresh --data-dir",
            ),
            _ => None,
        }
    }

    /// The exit status this failure gives.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Boarding(e) => driver_exit(e),
            Self::Store(e) => store_exit(e),
            Self::Etcd(e) => etcd_exit(e),
            Self::DataDir(_) => Exit::Local,
            Self::Usage(_) | Self::TokenInput(_) => Exit::Usage,
            Self::ClientUnknown { .. } | Self::CloneSuspected { .. } => Exit::Refused,
            Self::NotFound(_) | Self::Conflict(_) | Self::Unexpected(_) | Self::Output(_) | Self::Io { .. } => {
                Exit::Other
            }
        }
    }
}

/// The class of a driver error.
fn driver_exit(e: &boarding_smol::Error) -> Exit {
    use boarding_smol::Error as E;
    match e {
        // The admin socket is local; a connection's reads and writes are the network;
        // anything else (threads, a listener) is this process's.
        E::Io { .. } if e.io_kind() == Some(boarding_smol::IoKind::Admin) => Exit::Local,
        E::Io { .. } if e.io_kind() == Some(boarding_smol::IoKind::Local) => Exit::Other,
        E::Connect { .. }
        | E::Io { .. }
        | E::Busy { .. }
        | E::HandshakeEof
        | E::Timeout { .. }
        | E::IdleTimeout { .. }
        | E::Evicted
        | E::Truncated
        | E::Address { .. } => Exit::Unreachable,
        E::PinMismatch { .. }
        | E::CertificateChain { .. }
        | E::Revoked
        | E::UnknownClient { .. }
        | E::CloneSuspected { .. } => Exit::Refused,
        E::RotationConflict { .. } | E::RotationUnstored { .. } => Exit::Local,
        E::Handshake { source, .. } => protocol_exit(source),
        E::Store(e) => store_exit(e),
        E::NotJoined { .. } | E::AdminSocket { .. } => Exit::Local,
        E::Admin(admin) => match admin.kind {
            AdminErrorKind::BadRequest => Exit::Usage,
            AdminErrorKind::Store | AdminErrorKind::Forbidden => Exit::Local,
            AdminErrorKind::UnsupportedVersion | AdminErrorKind::Conflict => Exit::Other,
        },
        E::TokenMetadata(_) | E::MessageTooLarge { .. } => Exit::Usage,
        E::Forward(e) => forward_exit(e),
        _ => Exit::Other,
    }
}

/// The class of a forwarding failure: the gateway's refusals are refusals, except an
/// upstream it cannot reach, which may come back.
fn forward_exit(e: &boarding_smol::forward::ForwardError) -> Exit {
    use boarding_smol::forward::{ForwardError as F, Refusal};
    match e {
        F::Refused { refusal: Refusal::UpstreamUnreachable | Refusal::UpstreamTimeout, .. } => Exit::Unreachable,
        F::Refused { .. } | F::NotForwarding { .. } => Exit::Refused,
        F::NoAnswer { .. } => Exit::Unreachable,
        F::InvalidServiceName(_) => Exit::Usage,
        _ => Exit::Other,
    }
}

/// The etcd store's failure behind a store error, if it is one.
fn etcd_cause(e: &StoreError) -> Option<&EtcdError> {
    match e {
        StoreError::Backend { source, .. } => source.downcast_ref::<EtcdError>(),
        _ => None,
    }
}

/// The class of a store error: local data, unless etcd could not be reached.
fn store_exit(e: &StoreError) -> Exit {
    etcd_cause(e).map_or(Exit::Local, etcd_exit)
}

/// The class of an etcd store error.
fn etcd_exit(e: &EtcdError) -> Exit {
    match e {
        EtcdError::Unreachable { .. }
        | EtcdError::Request { .. }
        | EtcdError::Timeout { .. }
        | EtcdError::Contention { .. } => Exit::Unreachable,
        EtcdError::Config { .. } => Exit::Usage,
        EtcdError::File { .. }
        | EtcdError::NoFleet { .. }
        | EtcdError::WrongSealingKey { .. }
        | EtcdError::Unseal { .. }
        | EtcdError::Corrupt { .. } => Exit::Local,
        _ => Exit::Other,
    }
}

fn store_hint(e: &StoreError) -> Option<&'static str> {
    etcd_cause(e).and_then(etcd_hint)
}

/// What to check when the etcd store fails.
fn etcd_hint(e: &EtcdError) -> Option<&'static str> {
    Some(match e {
        EtcdError::Unreachable { .. } => {
            "the options are --etcd-endpoints, and --etcd-ca, --etcd-cert and --etcd-user if etcd asks for TLS or a \
             password"
        }
        EtcdError::Request { .. } | EtcdError::Timeout { .. } => {
            "check that etcd runs at --etcd-endpoints and has a leader (`etcdctl endpoint health`)"
        }
        EtcdError::NoFleet { .. } => {
            "check --etcd-prefix; a fleet starts with its first `boarding gateway serve --store etcd` or with \
             `boarding gateway init --store etcd`"
        }
        EtcdError::WrongSealingKey { .. } => "pass the fleet's --etcd-sealing-key, the file its first replica used",
        _ => return None,
    })
}

/// The class of a handshake error at the agent.
fn protocol_exit(e: &boarding::Error) -> Exit {
    match e {
        boarding::Error::PeerAlert(ReceivedAlert::Known(alert)) => match alert {
            Alert::UnknownToken
            | Alert::ExpiredToken
            | Alert::ExhaustedToken
            | Alert::ClientIdTaken
            | Alert::InvalidClientId
            | Alert::BadProof
            | Alert::AdmissionRefused
            | Alert::AttestationRefused
            | Alert::UnsupportedVersion
            | Alert::BadIdentity
            | Alert::RetiredKeyring => Exit::Refused,
            Alert::Internal | Alert::Malformed | Alert::UnexpectedMessage => Exit::Other,
        },
        // The gateway's proofs failed, or its key matches no pin: this side refuses it.
        boarding::Error::Refused(_)
        | boarding::Error::PeerMisbehaved(PeerMisbehaved::BadGatewayProof | PeerMisbehaved::BadGatewaySignature) => {
            Exit::Refused
        }
        boarding::Error::Local(LocalFailure::Persist | LocalFailure::Storage) => Exit::Local,
        _ => Exit::Other,
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
        E::UnknownClient { .. } => "join again: `boarding agent join` with a new token and a fresh --data-dir",
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
            // On a resume this is a client the gateway no longer knows, which `agent send`
            // reports as such (`ClientUnknown`); what is left is a join's token proof.
            Alert::BadProof => {
                "the gateway rejected the token proof: the token's secret is wrong (copied wrong, or from another \
                 gateway); check the token"
            }
            Alert::InvalidClientId => "client ids are DNS labels: lowercase letters, digits and '-', 1 to 63 long",
            Alert::UnsupportedVersion => "the gateway speaks another protocol version or MAC suite; upgrade one side",
            Alert::Internal => "the gateway failed internally (see its log, for example its database)",
            Alert::AdmissionRefused => "the gateway's admission policy refused this agent; see the gateway's log",
            Alert::AttestationRefused => {
                "the gateway refused this node's attestation: check --attest-cert and --attest-key (a certificate \
                 issued by a CA the gateway's --attest-ca trusts, valid now, naming this --id if the gateway requires \
                 it); the gateway's log says which check failed"
            }
            Alert::RetiredKeyring => {
                "another copy of this keyring rotated it first; revoke the client on the gateway and join again with \
                 a new token and a fresh --data-dir"
            }
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
