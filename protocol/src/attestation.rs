//! Attestation bound to the session: the binding value a client's evidence commits to,
//! and the identity a gateway's application attests from that evidence.
//!
//! The client asks its application for evidence only once it has verified the
//! gateway's `ServerChallenge` ([`ClientRequest::Attest`]), giving it the session's
//! [`AttestationBinding`]; the gateway computes the same value from its own transcript
//! and hands it, with the evidence, to its application at admission
//! ([`AdmissionRequest::binding`]). Evidence made for one session therefore names a
//! binding no other session has, and a validator that checks the binding refuses it
//! anywhere else (`spec/PROTOCOL.md` §7.3).
//!
//! ```text
//! TH_EV   = SHA-256(T0 || ClientHello || ServerChallenge || 0x03 || token_id || len8(client_id) || client_id || client_ephemeral)
//! binding = HKDF-Expand(PRK = TH_EV, info = "boarding v1 attestation binding", L = 32)
//! ```
//!
//! [`ClientRequest::Attest`]: crate::client::ClientRequest::Attest
//! [`AdmissionRequest::binding`]: crate::server::AdmissionRequest::binding

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;

use hkdf::Hkdf;
use sha2::Sha256;

use crate::keys::labels;
use crate::token::{MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS};

/// Length of an [`AttestationBinding`].
pub const BINDING_LEN: usize = 32;
/// Longest attested name, in bytes.
pub const MAX_ATTESTED_NAME_LEN: usize = 255;
/// Most attributes of an attested identity (as many as a token has labels).
pub const MAX_ATTRIBUTES: usize = MAX_LABELS;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = MAX_LABEL_KEY_LEN;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = MAX_LABEL_VALUE_LEN;

/// The value attestation evidence commits to: a function of this session's transcript
/// up to the client's evidence (both nonces, the gateway's identity key and ephemeral
/// share, its challenges, the token id, the client id and the client's ephemeral share).
///
/// It is public, not a secret: anyone who saw the exchange can compute it. What it
/// gives is uniqueness: two sessions share a binding only if they share both nonces.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttestationBinding([u8; BINDING_LEN]);

impl AttestationBinding {
    /// Wraps a binding's bytes (for example to check evidence made elsewhere).
    pub fn from_bytes(bytes: [u8; BINDING_LEN]) -> Self {
        Self(bytes)
    }

    /// The binding's bytes: what the evidence signs.
    pub fn as_bytes(&self) -> &[u8; BINDING_LEN] {
        &self.0
    }

    /// `HKDF-Expand(PRK = th_ev, info = "boarding v1 attestation binding", 32)`.
    pub(crate) fn derive(th_ev: &[u8; 32]) -> Self {
        let mut out = [0u8; BINDING_LEN];
        // A 32-byte PRK is SHA-256's length and 32 bytes of output are far below
        // HKDF's 255 × 32 limit, so neither call can fail.
        if let Ok(prk) = Hkdf::<Sha256>::from_prk(th_ev) {
            let _ = prk.expand(labels::ATTESTATION_BINDING, &mut out);
        }
        Self(out)
    }
}

impl fmt::Debug for AttestationBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttestationBinding({self})")
    }
}

impl fmt::Display for AttestationBinding {
    /// Lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The agent's application could not produce evidence (the answer to
/// [`ClientRequest::Attest`](crate::client::ClientRequest::Attest) when its attester
/// failed): the join fails with [`LocalFailure::Attestation`](crate::error::LocalFailure::Attestation)
/// and tells the gateway `Internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestFailed;

/// Who the gateway's application says the client is, from its evidence: a name (the
/// certificate subject of an `x509pop` attestation, for example) and attributes.
/// Within the limits below by construction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "StoredAttestedIdentity")]
pub struct AttestedIdentity {
    name: String,
    attributes: BTreeMap<String, String>,
}

/// An attested identity as a store keeps it (in a keyring record), checked against the
/// limits again when it is read back.
#[derive(serde::Deserialize)]
struct StoredAttestedIdentity {
    name: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

impl TryFrom<StoredAttestedIdentity> for AttestedIdentity {
    type Error = AttestedIdentityError;

    fn try_from(stored: StoredAttestedIdentity) -> Result<Self, Self::Error> {
        stored
            .attributes
            .iter()
            .try_fold(Self::new(&stored.name)?, |identity, (key, value)| identity.with_attribute(key, value))
    }
}

impl AttestedIdentity {
    /// An identity named `name` (1 to [`MAX_ATTESTED_NAME_LEN`] bytes), with no attributes.
    ///
    /// # Errors
    ///
    /// [`AttestedIdentityError::Name`] if `name` is empty or longer than the limit.
    pub fn new(name: &str) -> Result<Self, AttestedIdentityError> {
        if name.is_empty() || name.len() > MAX_ATTESTED_NAME_LEN {
            return Err(AttestedIdentityError::Name { len: name.len() });
        }
        Ok(Self { name: name.into(), attributes: BTreeMap::new() })
    }

    /// Adds or replaces an attribute.
    ///
    /// # Errors
    ///
    /// [`AttestedIdentityError::Attribute`] if the key is empty or longer than
    /// [`MAX_ATTRIBUTE_KEY_LEN`], the value is longer than [`MAX_ATTRIBUTE_VALUE_LEN`], or
    /// the identity has [`MAX_ATTRIBUTES`] attributes already and `key` is not one of them.
    pub fn with_attribute(mut self, key: &str, value: &str) -> Result<Self, AttestedIdentityError> {
        let full = self.attributes.len() >= MAX_ATTRIBUTES && !self.attributes.contains_key(key);
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_LEN || value.len() > MAX_ATTRIBUTE_VALUE_LEN || full {
            return Err(AttestedIdentityError::Attribute { key_len: key.len(), value_len: value.len() });
        }
        self.attributes.insert(key.into(), value.into());
        Ok(self)
    }

    /// The attested name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }
}

/// An attested identity outside its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestedIdentityError {
    /// The name is empty or longer than [`MAX_ATTESTED_NAME_LEN`] bytes.
    Name {
        /// Its length.
        len: usize,
    },
    /// An attribute's key or value is outside its limits, or there are too many.
    Attribute {
        /// The key's length.
        key_len: usize,
        /// The value's length.
        value_len: usize,
    },
}

impl fmt::Display for AttestedIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name { len } => {
                write!(f, "an attested name is 1 to {MAX_ATTESTED_NAME_LEN} bytes, this one is {len}")
            }
            Self::Attribute { key_len, value_len } => write!(
                f,
                "an attested identity has at most {MAX_ATTRIBUTES} attributes, keys of 1 to \
                 {MAX_ATTRIBUTE_KEY_LEN} bytes and values of at most {MAX_ATTRIBUTE_VALUE_LEN} \
                 (this key is {key_len} bytes, its value {value_len})"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AttestedIdentityError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_limits() {
        assert!(AttestedIdentity::new("").is_err());
        assert!(AttestedIdentity::new(&"a".repeat(MAX_ATTESTED_NAME_LEN)).is_ok());
        assert!(AttestedIdentity::new(&"a".repeat(MAX_ATTESTED_NAME_LEN + 1)).is_err());
        let id = AttestedIdentity::new("node-1").unwrap();
        assert!(id.clone().with_attribute("", "v").is_err());
        assert!(id.clone().with_attribute(&"k".repeat(64), "v").is_err());
        assert!(id.clone().with_attribute("k", &"v".repeat(257)).is_err());
        let mut full = id;
        for i in 0..MAX_ATTRIBUTES {
            full = full.with_attribute(&alloc::format!("k{i}"), "v").unwrap();
        }
        assert!(full.clone().with_attribute("extra", "v").is_err());
        assert!(full.with_attribute("k0", "replaced").is_ok());
    }

    #[test]
    fn binding_is_hkdf_expand_of_the_label() {
        let th = [7u8; 32];
        let prk = Hkdf::<Sha256>::from_prk(&th).unwrap();
        let mut expected = [0u8; 32];
        prk.expand(b"boarding v1 attestation binding", &mut expected).unwrap();
        assert_eq!(AttestationBinding::derive(&th).as_bytes(), &expected);
        assert_ne!(AttestationBinding::derive(&[8u8; 32]), AttestationBinding::derive(&th));
    }
}
