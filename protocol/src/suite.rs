//! Protocol versions and MAC suites, and the keyed MAC state a channel direction
//! prepares once per session.

use core::fmt;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Protocol version 1 (the only one so far), as it appears on the wire.
pub const VERSION_1: u16 = 0x0001;

/// Versions this implementation speaks, most preferred first.
pub const SUPPORTED_VERSIONS: &[u16] = &[VERSION_1];

/// Length of every MAC tag (both suites), in bytes.
pub const TAG_LEN: usize = 32;

/// The MAC that protects channel frames, negotiated in the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[repr(u16)]
pub enum MacSuite {
    /// HMAC-SHA256 (RFC 2104), mandatory to implement.
    HmacSha256 = 0x0001,
    /// BLAKE3 in keyed-hash mode, 32-byte tags: the fast suite.
    Blake3 = 0x0002,
}

impl MacSuite {
    /// Every suite, in the gateway's default preference order.
    pub const ALL: [MacSuite; 2] = [MacSuite::Blake3, MacSuite::HmacSha256];

    /// The wire code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The suite for a wire code, if known.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            0x0001 => Some(Self::HmacSha256),
            0x0002 => Some(Self::Blake3),
            _ => None,
        }
    }
}

impl fmt::Display for MacSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HmacSha256 => "HMAC-SHA256",
            Self::Blake3 => "BLAKE3-keyed",
        })
    }
}

/// A keyed MAC ready to tag messages: the key schedule of HMAC (the inner and outer
/// padded blocks) is done once here, not per frame.
#[derive(Clone)]
pub(crate) enum MacState {
    HmacSha256(Hmac<Sha256>),
    Blake3(Blake3Key),
}

/// A BLAKE3 key; a keyed hasher is cheap to set up, so it is built per tag.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Blake3Key([u8; 32]);

impl MacState {
    pub(crate) fn new(suite: MacSuite, key: &[u8; 32]) -> Self {
        match suite {
            MacSuite::HmacSha256 => Self::HmacSha256(hmac_sha256(key)),
            MacSuite::Blake3 => Self::Blake3(Blake3Key(*key)),
        }
    }

    /// The tag over the concatenation of `parts`.
    ///
    /// Channel frames pass the payload first and the 13-byte trailer (sequence number,
    /// type, length) last: the payload then starts the hash input, so BLAKE3 hashes it
    /// in full-width SIMD subtrees from its first byte and HMAC in whole blocks, with no
    /// copying (see `spec/PROTOCOL.md` §9).
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        match self {
            Self::HmacSha256(prepared) => {
                let mut mac = prepared.clone();
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().into()
            }
            Self::Blake3(key) => {
                let mut hasher = blake3::Hasher::new_keyed(&key.0);
                for part in parts {
                    hasher.update(part);
                }
                hasher.finalize().into()
            }
        }
    }

    /// Whether `tag` is the tag over `parts`, compared in constant time.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.tag(parts).ct_eq(tag).into()
    }
}

impl fmt::Debug for MacState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HmacSha256(_) => "MacState(HMAC-SHA256, key <redacted>)",
            Self::Blake3(_) => "MacState(BLAKE3, key <redacted>)",
        })
    }
}

/// HMAC-SHA256 keyed with a 32-byte key. HMAC zero-pads keys shorter than the hash's
/// 64-byte block (RFC 2104 §2), so padding here is the same key, without a fallible
/// variable-length constructor.
pub(crate) fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = zeroize::Zeroizing::new([0u8; 64]);
    if let Some(head) = block.get_mut(..32) {
        head.copy_from_slice(key);
    }
    <Hmac<Sha256>>::new(&(*block).into())
}

/// Picks the first of `preference` that `offered` also contains.
pub(crate) fn choose<T: Copy + PartialEq>(preference: &[T], offered: &[T]) -> Option<T> {
    preference.iter().copied().find(|p| offered.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Tags over split inputs equal the one-shot MAC of the concatenation, in both suites.
    #[test]
    fn tags_match_one_shot_macs() {
        let key = [0x5a; 32];
        for len in [0usize, 1, 13, 63, 64, 65, 1024, 16 * 1024, 16 * 1024 + 13, 70_000] {
            let message: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let b3: [u8; 32] = blake3::keyed_hash(&key, &message).into();
            let mut one = hmac_sha256(&key);
            one.update(&message);
            let hm: [u8; 32] = one.finalize().into_bytes().into();
            let cut = len.saturating_sub(13);
            let parts: [&[u8]; 2] = [&message[..cut], &message[cut..]];
            assert_eq!(MacState::new(MacSuite::Blake3, &key).tag(&parts), b3, "BLAKE3 {len}");
            assert_eq!(MacState::new(MacSuite::HmacSha256, &key).tag(&parts), hm, "HMAC {len}");
            assert!(MacState::new(MacSuite::HmacSha256, &key).verify(&[&message], &hm));
        }
    }
}
