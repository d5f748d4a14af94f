//! Who is who: the gateway's Ed25519 identity and the agents' client ids.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::pin::Pin;

/// Longest client id, in bytes (a DNS label).
pub const MAX_CLIENT_ID_LEN: usize = 63;

/// The gateway's long-term Ed25519 identity. Its pin is what agents are given; the
/// secret key is zeroized on drop and never printed.
#[derive(Clone)]
pub struct ServerIdentity {
    key: SigningKey,
}

impl ServerIdentity {
    /// Rebuilds an identity from its 32-byte secret seed (as stored by a gateway).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let seed = zeroize::Zeroizing::new(seed);
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// Generates a fresh identity from the caller's RNG.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_seed(crate::random_array(rng))
    }

    /// The secret seed, for the caller to persist. Handle with care.
    pub fn to_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.key.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The pin agents use to recognise this gateway.
    pub fn pin(&self) -> Pin {
        Pin::from_ed25519(self.key.verifying_key().as_bytes())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerIdentity({}, secret <redacted>)", self.pin())
    }
}

/// Why a client id was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIdError {
    /// Empty or longer than [`MAX_CLIENT_ID_LEN`].
    BadLength,
    /// A character other than `[a-z0-9-]`, or a leading or trailing `-`.
    BadCharacter,
}

impl fmt::Display for ClientIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadLength => "a client id is 1 to 63 characters",
            Self::BadCharacter => "a client id is [a-z0-9-], starting and ending with a letter or digit",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ClientIdError {}

/// An agent's name at the gateway: a DNS label, `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Validates a client id.
    ///
    /// # Errors
    ///
    /// [`ClientIdError::BadLength`] if `id` is empty or longer than [`MAX_CLIENT_ID_LEN`],
    /// [`ClientIdError::BadCharacter`] if it is not a DNS label of `[a-z0-9-]` (no leading
    /// or trailing `-`).
    pub fn new(id: &str) -> Result<Self, ClientIdError> {
        Self::validate(id.as_bytes())?;
        Ok(Self(String::from(id)))
    }

    /// Validates raw bytes (as received on the wire).
    ///
    /// # Errors
    ///
    /// As [`ClientId::new`]: [`ClientIdError::BadLength`] or
    /// [`ClientIdError::BadCharacter`] (any byte outside `[a-z0-9-]`, so any non-ASCII
    /// input, is a bad character).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClientIdError> {
        Self::validate(bytes)?;
        let text = core::str::from_utf8(bytes).map_err(|_| ClientIdError::BadCharacter)?;
        Ok(Self(String::from(text)))
    }

    fn validate(bytes: &[u8]) -> Result<(), ClientIdError> {
        if bytes.is_empty() || bytes.len() > MAX_CLIENT_ID_LEN {
            return Err(ClientIdError::BadLength);
        }
        let ok_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let edge_ok = |b: Option<&u8>| b.is_some_and(|b| *b != b'-');
        if !bytes.iter().all(ok_char) || !edge_ok(bytes.first()) || !edge_ok(bytes.last()) {
            return Err(ClientIdError::BadCharacter);
        }
        Ok(())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClientId {
    type Err = ClientIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rules() {
        for ok in ["a", "node-1", "0", &"a".repeat(63)] {
            assert!(ClientId::new(ok).is_ok(), "{ok}");
        }
        let bad = [
            ("", ClientIdError::BadLength),
            (&*"a".repeat(64), ClientIdError::BadLength),
            ("-a", ClientIdError::BadCharacter),
            ("a-", ClientIdError::BadCharacter),
            ("Node", ClientIdError::BadCharacter),
            ("a_b", ClientIdError::BadCharacter),
            ("a.b", ClientIdError::BadCharacter),
        ];
        for (id, err) in bad {
            assert_eq!(ClientId::new(id), Err(err), "{id}");
        }
        assert_eq!(ClientId::from_bytes(&[0xff]), Err(ClientIdError::BadCharacter));
    }

    #[test]
    fn identity_debug_is_redacted_and_seed_round_trips() {
        let id = ServerIdentity::from_seed([9; 32]);
        assert_eq!(*id.to_seed(), [9; 32]);
        let shown = alloc::format!("{id:?}");
        assert!(shown.contains("sha256:") && shown.contains("redacted"));
    }
}
