//! The forwarding messages (`spec/FORWARDING.md` §3): each is the payload of one session
//! message (one authenticated `Data` frame), a kind byte and a body.
//!
//! | kind | message | sent by | body |
//! |---|---|---|---|
//! | `0x01` | [`Message::Open`] | agent, first | `version (1) \|\| len8(service) \|\| service` |
//! | `0x02` | [`Message::Answer`] | gateway, first | `version (1) \|\| code (1)` |
//! | `0x03` | [`Message::Data`] | both | 1 to [`MAX_DATA`] bytes of the stream |
//! | `0x04` | [`Message::End`] | both | empty: the sender's direction of the stream ended |
//! | `0x05` | [`Message::Abort`] | both | `reason (1)`: the sender gives the stream up |
//!
//! Decoding goes through the core's bounds-checked [`Reader`]: a truncated field, a
//! length outside its range, an unknown kind or a byte left over is an error.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use boarding::codec::{DecodeError, Reader};

/// The forwarding protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Most stream bytes one [`Message::Data`] carries.
pub const MAX_DATA: usize = 16 * 1024;
/// Longest forwarding message (a `Data` message of [`MAX_DATA`] bytes): a receiver
/// refuses a session frame with a longer payload before buffering it.
pub const MAX_MESSAGE: usize = 1 + MAX_DATA;
/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// The kind byte of each message.
pub mod kind {
    /// [`Message::Open`](super::Message::Open).
    pub const OPEN: u8 = 0x01;
    /// [`Message::Answer`](super::Message::Answer).
    pub const ANSWER: u8 = 0x02;
    /// [`Message::Data`](super::Message::Data).
    pub const DATA: u8 = 0x03;
    /// [`Message::End`](super::Message::End).
    pub const END: u8 = 0x04;
    /// [`Message::Abort`](super::Message::Abort).
    pub const ABORT: u8 = 0x05;
}

/// A service name: 1 to 63 bytes of `a-z`, `0-9`, `-`, `.` and `_`, starting and
/// ending with a letter or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

/// A service name that breaks the rules of [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid service name {name:?}: a service name is 1 to {MAX_SERVICE_NAME_LEN} characters of a-z, 0-9, \
     '-', '.' and '_', starting and ending with a letter or digit"
)]
pub struct ServiceNameError {
    /// The name given (lossily, if it was not UTF-8).
    pub name: String,
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `bytes` is a valid service name.
fn valid_service_name(bytes: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return false };
    bytes.len() <= MAX_SERVICE_NAME_LEN
        && is_alnum(first)
        && is_alnum(last)
        && bytes.iter().all(|&b| is_alnum(b) || matches!(b, b'-' | b'.' | b'_'))
}

impl ServiceName {
    /// Checks `name` against the rules.
    ///
    /// # Errors
    ///
    /// [`ServiceNameError`] if it is empty, longer than [`MAX_SERVICE_NAME_LEN`] bytes, or
    /// has a character outside the set.
    pub fn new(name: &str) -> Result<Self, ServiceNameError> {
        Self::from_bytes(name.as_bytes())
    }

    /// Checks bytes against the rules.
    ///
    /// # Errors
    ///
    /// As [`ServiceName::new`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ServiceNameError> {
        match std::str::from_utf8(bytes) {
            Ok(name) if valid_service_name(bytes) => Ok(Self(name.to_owned())),
            _ => Err(ServiceNameError { name: String::from_utf8_lossy(bytes).into_owned() }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = ServiceNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceName({:?})", self.0)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Why the gateway refused a stream (the code of a refusing [`Message::Answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `1`: the gateway serves no service of that name.
    UnknownService,
    /// `2`: the service's rule (or the gateway application) does not admit this client.
    NotAllowed,
    /// `3`: the gateway could not connect to the service's upstream (refused,
    /// unreachable, the name did not resolve, or it closed before the PROXY header was
    /// written).
    UpstreamUnreachable,
    /// `4`: connecting to the upstream did not complete within the gateway's deadline.
    UpstreamTimeout,
    /// `5`: the gateway does not speak the requested forwarding version (the answer's
    /// version is the one it speaks).
    UnsupportedVersion,
    /// `6`: the first message was not a well-formed `Open`.
    Malformed,
    /// `7`: the gateway failed locally (for example the client's identity does not fit a
    /// PROXY header).
    Internal,
    /// A code this crate does not know (a newer gateway's): still a refusal.
    Unknown(u8),
}

impl Refusal {
    /// Every code this crate defines.
    pub const ALL: [Refusal; 7] = [
        Self::UnknownService,
        Self::NotAllowed,
        Self::UpstreamUnreachable,
        Self::UpstreamTimeout,
        Self::UnsupportedVersion,
        Self::Malformed,
        Self::Internal,
    ];

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::UnknownService => 1,
            Self::NotAllowed => 2,
            Self::UpstreamUnreachable => 3,
            Self::UpstreamTimeout => 4,
            Self::UnsupportedVersion => 5,
            Self::Malformed => 6,
            Self::Internal => 7,
            Self::Unknown(code) => code,
        }
    }

    /// The refusal with this code (`None` for 0, which accepts).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::UnknownService,
            2 => Self::NotAllowed,
            3 => Self::UpstreamUnreachable,
            4 => Self::UpstreamTimeout,
            5 => Self::UnsupportedVersion,
            6 => Self::Malformed,
            7 => Self::Internal,
            other => Self::Unknown(other),
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownService => f.write_str("the gateway serves no service of that name"),
            Self::NotAllowed => f.write_str("this client is not allowed to use the service"),
            Self::UpstreamUnreachable => f.write_str("the gateway cannot reach the service's upstream"),
            Self::UpstreamTimeout => f.write_str("connecting to the service's upstream timed out"),
            Self::UnsupportedVersion => f.write_str("the gateway does not speak this forwarding version"),
            Self::Malformed => f.write_str("the gateway could not read the request"),
            Self::Internal => f.write_str("the gateway failed internally"),
            Self::Unknown(code) => write!(f, "refused with code {code}, which this agent does not know"),
        }
    }
}

/// Why a side gave a stream up (the reason of a [`Message::Abort`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortReason {
    /// `1`: reading from or writing to the upstream failed (gateway).
    UpstreamFailed,
    /// `2`: reading from or writing to the agent's local stream failed (agent).
    LocalFailed,
    /// `3`: the gateway ends the session: the client was revoked, or the gateway is
    /// shutting down.
    Closing,
    /// `4`: the gateway received nothing for its idle timeout.
    IdleTimeout,
    /// `5`: the peer sent a forwarding message that is malformed or out of place.
    Violation,
    /// A reason this crate does not know.
    Unknown(u8),
}

impl AbortReason {
    /// Every reason this crate defines.
    pub const ALL: [AbortReason; 5] =
        [Self::UpstreamFailed, Self::LocalFailed, Self::Closing, Self::IdleTimeout, Self::Violation];

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::UpstreamFailed => 1,
            Self::LocalFailed => 2,
            Self::Closing => 3,
            Self::IdleTimeout => 4,
            Self::Violation => 5,
            Self::Unknown(code) => code,
        }
    }

    /// The reason with this code.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::UpstreamFailed,
            2 => Self::LocalFailed,
            3 => Self::Closing,
            4 => Self::IdleTimeout,
            5 => Self::Violation,
            other => Self::Unknown(other),
        }
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UpstreamFailed => f.write_str("the connection to the upstream failed"),
            Self::LocalFailed => f.write_str("the agent's local stream failed"),
            Self::Closing => f.write_str("the gateway closed the session (the client was revoked, or it is stopping)"),
            Self::IdleTimeout => f.write_str("the session was idle for the gateway's idle timeout"),
            Self::Violation => f.write_str("a forwarding message was malformed or out of place"),
            Self::Unknown(code) => write!(f, "reason code {code}, which this side does not know"),
        }
    }
}

/// A forwarding message that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// An empty payload (which the session delivers only as a keepalive, never as a message).
    #[error("an empty forwarding message")]
    Empty,
    /// A kind byte that is not defined.
    #[error("unknown forwarding message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// An `Open` for a version this crate does not speak.
    #[error("forwarding protocol version {0} is not supported (this side speaks version {VERSION})")]
    UnsupportedVersion(u8),
    /// A field is truncated, out of range or invalid, or bytes are left over.
    #[error("malformed forwarding message: {0}")]
    Malformed(DecodeError),
}

impl From<DecodeError> for WireError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
}

/// What the gateway answered an `Open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Code `0`: the upstream is connected and its PROXY header written; the stream runs.
    Accepted,
    /// Any other code: the stream is refused and the gateway closes the session.
    Refused(Refusal),
}

impl Answer {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::Refused(refusal) => refusal.code(),
        }
    }

    /// The answer with this code.
    pub fn from_code(code: u8) -> Self {
        Refusal::from_code(code).map_or(Self::Accepted, Self::Refused)
    }
}

/// One forwarding message, borrowed from the payload it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// The agent's first message: the service it wants (version [`VERSION`]).
    Open {
        /// The service name, valid by [`ServiceName`]'s rules.
        service: &'a str,
    },
    /// The gateway's first message: accepted or refused.
    Answer {
        /// The version the gateway speaks for this stream.
        version: u8,
        /// Its answer.
        answer: Answer,
    },
    /// Bytes of the stream (1 to [`MAX_DATA`]).
    Data(&'a [u8]),
    /// The sender's direction of the stream ended (a half-close).
    End,
    /// The sender gives the stream up; a session `Close` follows.
    Abort(AbortReason),
}

impl<'a> Message<'a> {
    /// Decodes one message from a session message's payload.
    ///
    /// # Errors
    ///
    /// [`WireError::Empty`] for an empty payload, [`WireError::UnknownKind`],
    /// [`WireError::UnsupportedVersion`] for an `Open` of another version, and
    /// [`WireError::Malformed`] for a truncated field, a service name outside its length or
    /// character set, `Data` with no bytes or more than [`MAX_DATA`], or bytes left over.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let kind = r.u8("kind").map_err(|_| WireError::Empty)?;
        let message = match kind {
            kind::OPEN => {
                let version = r.u8("version")?;
                if version != VERSION {
                    return Err(WireError::UnsupportedVersion(version));
                }
                let name = r.bytes_u8("service", 1, MAX_SERVICE_NAME_LEN)?;
                let service = std::str::from_utf8(name)
                    .ok()
                    .filter(|_| valid_service_name(name))
                    .ok_or(DecodeError::InvalidValue { field: "service" })?;
                r.finish("Open")?;
                Message::Open { service }
            }
            kind::ANSWER => {
                let version = r.u8("version")?;
                let answer = Answer::from_code(r.u8("code")?);
                r.finish("Answer")?;
                Message::Answer { version, answer }
            }
            kind::DATA => {
                let len = Reader::check_count("data", r.remaining(), 1, MAX_DATA)?;
                let data = r.take(len, "data")?;
                r.finish("Data")?;
                Message::Data(data)
            }
            kind::END => {
                r.finish("End")?;
                Message::End
            }
            kind::ABORT => {
                let reason = AbortReason::from_code(r.u8("reason")?);
                r.finish("Abort")?;
                Message::Abort(reason)
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok(message)
    }

    /// Appends the encoded message to `out`. Encoding does not check the limits: a
    /// `Data` of no bytes or over [`MAX_DATA`], or an `Open` whose service name breaks the
    /// rules, encodes to bytes that do not decode.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Message::Open { service } => {
                out.extend_from_slice(&[kind::OPEN, VERSION]);
                boarding::codec::put_bytes_u8(out, service.as_bytes());
            }
            Message::Answer { version, answer } => out.extend_from_slice(&[kind::ANSWER, version, answer.code()]),
            Message::Data(data) => {
                out.push(kind::DATA);
                out.extend_from_slice(data);
            }
            Message::End => out.push(kind::END),
            Message::Abort(reason) => out.extend_from_slice(&[kind::ABORT, reason.code()]),
        }
    }

    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Open { .. } => "Open",
            Message::Answer { .. } => "Answer",
            Message::Data(_) => "Data",
            Message::End => "End",
            Message::Abort(_) => "Abort",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: Message<'_>) {
        let mut out = Vec::new();
        message.encode(&mut out);
        assert_eq!(Message::decode(&out), Ok(message), "{out:?}");
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Open { service: "db" });
        round_trip(Message::Open { service: &"a".repeat(63) });
        round_trip(Message::Answer { version: 1, answer: Answer::Accepted });
        for refusal in Refusal::ALL {
            round_trip(Message::Answer { version: 1, answer: Answer::Refused(refusal) });
            assert_eq!(Refusal::from_code(refusal.code()), Some(refusal));
        }
        round_trip(Message::Answer { version: 1, answer: Answer::Refused(Refusal::Unknown(200)) });
        round_trip(Message::Data(b"x"));
        round_trip(Message::Data(&[7; MAX_DATA]));
        round_trip(Message::End);
        for reason in AbortReason::ALL {
            round_trip(Message::Abort(reason));
            assert_eq!(AbortReason::from_code(reason.code()), reason);
        }
    }

    #[test]
    fn the_bytes_are_the_specified_ones() {
        let mut out = Vec::new();
        Message::Open { service: "db" }.encode(&mut out);
        assert_eq!(out, [0x01, 0x01, 0x02, b'd', b'b']);
        out.clear();
        Message::Answer { version: 1, answer: Answer::Refused(Refusal::NotAllowed) }.encode(&mut out);
        assert_eq!(out, [0x02, 0x01, 0x02]);
        out.clear();
        Message::Data(b"hi").encode(&mut out);
        assert_eq!(out, [0x03, b'h', b'i']);
        out.clear();
        Message::End.encode(&mut out);
        assert_eq!(out, [0x04]);
        out.clear();
        Message::Abort(AbortReason::Closing).encode(&mut out);
        assert_eq!(out, [0x05, 0x03]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[0x09]), Err(WireError::UnknownKind(9)));
        assert_eq!(Message::decode(&[0x01, 0x02, 0x02, b'd', b'b']), Err(WireError::UnsupportedVersion(2)));
        assert!(matches!(Message::decode(&[0x01, 0x01, 0x00]), Err(WireError::Malformed(_))));
        assert!(matches!(Message::decode(&[0x01, 0x01, 0x03, b'd', b'b']), Err(WireError::Malformed(_))));
        assert!(matches!(Message::decode(&[0x01, 0x01, 0x02, b'd', b'b', 0]), Err(WireError::Malformed(_))));
        for bad in ["-db", "db-", "DB", "d b", "d=b", "d:b", "é"] {
            let mut out = Vec::new();
            Message::Open { service: bad }.encode(&mut out);
            assert!(matches!(Message::decode(&out), Err(WireError::Malformed(_))), "{bad}");
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
        let mut long = vec![0x01, 0x01, 64];
        long.extend_from_slice(&[b'a'; 64]);
        assert!(matches!(Message::decode(&long), Err(WireError::Malformed(DecodeError::TooLong { .. }))));
        assert!(matches!(Message::decode(&[0x03]), Err(WireError::Malformed(_))));
        let mut big = vec![0x03];
        big.resize(MAX_DATA + 2, 0);
        assert!(matches!(Message::decode(&big), Err(WireError::Malformed(DecodeError::TooLong { .. }))));
        assert!(matches!(Message::decode(&[0x02, 0x01]), Err(WireError::Malformed(_))));
        assert!(matches!(Message::decode(&[0x02, 0x01, 0x00, 0x00]), Err(WireError::Malformed(_))));
        assert!(matches!(Message::decode(&[0x04, 0x00]), Err(WireError::Malformed(_))));
        assert!(matches!(Message::decode(&[0x05]), Err(WireError::Malformed(_))));
    }

    #[test]
    fn service_names() {
        for good in ["a", "db", "k8s-api", "svc.internal", "x_1", &"z".repeat(63)] {
            assert_eq!(ServiceName::new(good).unwrap().as_str(), good);
        }
        assert!(ServiceName::new("").is_err());
        assert!(ServiceName::new(&"z".repeat(64)).is_err());
        assert!(ServiceName::from_bytes(&[0xff]).is_err());
    }
}
