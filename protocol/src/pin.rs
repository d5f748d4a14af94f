//! Public-key pins in kubeadm's `--discovery-token-ca-cert-hash` format:
//! `sha256:` followed by the SHA-256 of a DER SubjectPublicKeyInfo.
//!
//! Parsing accepts the prefix in any case and the digest as 64 hex digits or as 43
//! characters of unpadded base64url (the form another implementation prints);
//! `Display` always prints `sha256:<64 lowercase hex>`. Equality is constant-time.

use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) } before the 32 key bytes.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why a pin string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinError {
    /// The string does not start with `sha256:` (in any case).
    MissingPrefix,
    /// The digest is neither 64 hex digits nor 43 base64url characters.
    BadDigest,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPrefix => f.write_str("a pin starts with `sha256:`"),
            Self::BadDigest => f.write_str("a pin's digest is 64 hex digits or 43 base64url characters"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PinError {}

/// The SHA-256 digest of a DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, Eq)]
pub struct Pin([u8; 32]);

impl Pin {
    /// Pins the public key in `spki_der` (the bytes are hashed as they are).
    pub fn from_spki_der(spki_der: &[u8]) -> Pin {
        Pin(Sha256::digest(spki_der).into())
    }

    /// Pins a raw Ed25519 public key (hashing its SubjectPublicKeyInfo).
    pub fn from_ed25519(public_key: &[u8; 32]) -> Pin {
        let mut hasher = Sha256::new();
        hasher.update(ED25519_SPKI_PREFIX);
        hasher.update(public_key);
        Pin(hasher.finalize().into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a pin from a raw digest.
    pub fn from_digest(digest: [u8; 32]) -> Pin {
        Pin(digest)
    }

    /// Whether any pin in `pins` equals this one (each comparison constant-time; the
    /// whole list is always walked).
    pub fn matches_any(&self, pins: &[Pin]) -> bool {
        pins.iter().fold(subtle::Choice::from(0), |acc, p| acc | p.0.ct_eq(&self.0)).into()
    }
}

impl PartialEq for Pin {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl core::hash::Hash for Pin {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl FromStr for Pin {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, digest) = s.split_at_checked(7).ok_or(PinError::MissingPrefix)?;
        if !prefix.eq_ignore_ascii_case("sha256:") {
            return Err(PinError::MissingPrefix);
        }
        let mut out = [0u8; 32];
        match digest.len() {
            64 => hex::decode_to_slice(digest, &mut out).map_err(|_| PinError::BadDigest)?,
            43 => {
                let n = URL_SAFE_NO_PAD.decode_slice(digest, &mut out).map_err(|_| PinError::BadDigest)?;
                if n != 32 {
                    return Err(PinError::BadDigest);
                }
            }
            _ => return Err(PinError::BadDigest),
        }
        Ok(Pin(out))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Encoding 32 bytes into 64 always fits.
        if hex::encode_to_slice(self.0, &mut buf).is_err() {
            return Err(fmt::Error);
        }
        f.write_str("sha256:")?;
        f.write_str(core::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl serde::Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = alloc::string::String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_hex_any_prefix_case_and_base64url() {
        let pin = Pin::from_spki_der(b"spki");
        let hex_form = pin.to_string();
        assert!(hex_form.starts_with("sha256:") && hex_form.len() == 71);
        assert_eq!(hex_form.parse::<Pin>().unwrap(), pin);
        assert_eq!(hex_form.replacen("sha256", "SHA256", 1).parse::<Pin>().unwrap(), pin);
        assert_eq!(hex_form.to_uppercase().parse::<Pin>().unwrap(), pin);
        let b64 = alloc::format!("sha256:{}", URL_SAFE_NO_PAD.encode(pin.as_bytes()));
        assert_eq!(b64.parse::<Pin>().unwrap(), pin);
    }

    #[test]
    fn rejects_bad_pins() {
        assert_eq!("".parse::<Pin>(), Err(PinError::MissingPrefix));
        assert_eq!("md5:00".parse::<Pin>(), Err(PinError::MissingPrefix));
        assert_eq!("sha256:abcd".parse::<Pin>(), Err(PinError::BadDigest));
        let long = alloc::format!("sha256:{}", "g".repeat(64));
        assert_eq!(long.parse::<Pin>(), Err(PinError::BadDigest));
        let b64_bad = alloc::format!("sha256:{}", "*".repeat(43));
        assert_eq!(b64_bad.parse::<Pin>(), Err(PinError::BadDigest));
        assert_eq!("sha256é:aa".parse::<Pin>(), Err(PinError::MissingPrefix));
    }

    #[test]
    fn ed25519_pin_hashes_its_spki() {
        let key = [7u8; 32];
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&key);
        assert_eq!(Pin::from_ed25519(&key), Pin::from_spki_der(&der));
        assert!(Pin::from_ed25519(&key).matches_any(&[Pin::from_spki_der(b"x"), Pin::from_spki_der(&der)]));
        assert!(!Pin::from_ed25519(&key).matches_any(&[]));
    }
}
