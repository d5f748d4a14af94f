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

/// A BLAKE3 key; a keyed hasher is cheap to set up, so it is built per tag (see
/// [`blake3_tag`]).
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
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        match self {
            Self::HmacSha256(prepared) => hmac_tag(prepared, parts),
            Self::Blake3(key) => blake3_tag(&key.0, parts),
        }
    }

    /// Whether `tag` is the tag over `parts`, compared in constant time.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.tag(parts).ct_eq(tag).into()
    }
}

/// SHA-256's block size.
const SHA256_BLOCK: usize = 64;

/// HMAC-SHA256 of the concatenation of `parts`, from the prepared keyed state.
///
/// A frame's MAC input starts with two tiny parts (8-byte sequence number, 5-byte
/// header): fed as three `update` calls, the hash buffers them, tops its buffer up from
/// the payload, compresses that one block and then the rest in a second call. Gathering
/// the first block on the stack instead makes it two plain calls, which measurably
/// trims the per-frame overhead at small and medium sizes (the tag is the same).
fn hmac_tag(prepared: &Hmac<Sha256>, parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut mac = prepared.clone();
    let mut block = [0u8; SHA256_BLOCK];
    let mut gathered = 0usize;
    let mut flushed = false;
    for &part in parts {
        let mut part = part;
        if !flushed {
            let room = SHA256_BLOCK.saturating_sub(gathered);
            let (now, later) = part.split_at(part.len().min(room));
            let end = gathered.saturating_add(now.len());
            if let Some(slot) = block.get_mut(gathered..end) {
                slot.copy_from_slice(now);
            }
            gathered = end;
            part = later;
            if gathered == SHA256_BLOCK {
                mac.update(&block);
                flushed = true;
            }
        }
        if flushed && !part.is_empty() {
            mac.update(part);
        }
    }
    if !flushed {
        mac.update(block.get(..gathered).unwrap_or_default());
    }
    mac.finalize().into_bytes().into()
}

/// How many leading message bytes [`blake3_tag`] gathers into one contiguous block: 16
/// chunks, the widest SIMD degree (AVX-512) of the `blake3` crate.
#[cfg(any(feature = "std", test))]
const BLAKE3_GATHER: usize = 16 * 1024;
/// Below this many bytes gathering gains nothing (at most a few chunks).
#[cfg(any(feature = "std", test))]
const BLAKE3_GATHER_MIN: usize = 4 * 1024;

/// BLAKE3's keyed hash of the concatenation of `parts`.
///
/// BLAKE3 hashes many 1 KiB chunks at once with SIMD, but `blake3::Hasher` can only do
/// so for a power-of-two subtree that starts at a multiple of its own size. A frame's
/// MAC input is a 13-byte prefix (sequence number and header) and then the payload: fed
/// as separate `update` calls, the prefix leaves the hasher mid-chunk, and the payload's
/// chunks are then hashed in subtrees of 1, 1, 2, 4, 8, ... chunks, a SIMD pass each,
/// instead of 16 chunks per pass (measured: under half the raw primitive's throughput
/// at 16 KiB). Copying the first 16 KiB of the message into one contiguous per-thread
/// block lets the hasher take the first 16 chunks in one pass, after which
/// every later subtree is aligned again; the copy is far cheaper than the passes it
/// saves. The tag is the same: BLAKE3 does not depend on how its input is split. No
/// allocation either way.
fn blake3_tag(key: &[u8; 32], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    #[cfg(feature = "std")]
    if parts.iter().fold(0usize, |n, p| n.saturating_add(p.len())) >= BLAKE3_GATHER_MIN {
        // A per-thread block: zeroing a fresh 16 KiB on the stack for every frame would
        // cost about as much as the copy. It only ever holds message bytes (which travel
        // in the clear), never the key. Unavailable only during thread teardown.
        let tag = GATHER
            .try_with(|cell| cell.try_borrow_mut().ok().map(|mut head| blake3_gathered(key, parts, &mut head)))
            .ok()
            .flatten();
        if let Some(tag) = tag {
            return tag;
        }
    }
    // Small messages, and `no_std` builds (whose stacks may be small, and whose BLAKE3
    // has no run-time SIMD detection to profit from it), hash the parts as they are.
    let mut hasher = blake3::Hasher::new_keyed(key);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(feature = "std")]
std::thread_local! {
    static GATHER: core::cell::RefCell<[u8; BLAKE3_GATHER]> = const { core::cell::RefCell::new([0; BLAKE3_GATHER]) };
}

/// The keyed hash of `parts`, the first [`BLAKE3_GATHER`] bytes gathered into `head`.
#[cfg(any(feature = "std", test))]
fn blake3_gathered(key: &[u8; 32], parts: &[&[u8]], head: &mut [u8; BLAKE3_GATHER]) -> [u8; TAG_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    let mut gathered = 0usize;
    let mut flushed = false;
    for &part in parts {
        let mut part = part;
        if !flushed {
            let room = BLAKE3_GATHER.saturating_sub(gathered);
            let (now, later) = part.split_at(part.len().min(room));
            let end = gathered.saturating_add(now.len());
            if let Some(slot) = head.get_mut(gathered..end) {
                slot.copy_from_slice(now);
            }
            gathered = end;
            part = later;
            if gathered == BLAKE3_GATHER {
                hasher.update(&head[..]);
                flushed = true;
            }
        }
        if flushed && !part.is_empty() {
            hasher.update(part);
        }
    }
    if !flushed {
        hasher.update(head.get(..gathered).unwrap_or_default());
    }
    hasher.finalize().into()
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

    /// The gathered BLAKE3 tag equals the one-shot keyed hash of the concatenation, for
    /// every size around the gathering thresholds and every way of splitting the input.
    #[test]
    fn blake3_tag_matches_one_shot_keyed_hash() {
        let key = [0x5a; 32];
        let lens = [
            0,
            1,
            13,
            1024,
            BLAKE3_GATHER_MIN - 1,
            BLAKE3_GATHER_MIN,
            BLAKE3_GATHER - 13,
            BLAKE3_GATHER - 1,
            BLAKE3_GATHER,
            BLAKE3_GATHER + 1,
            BLAKE3_GATHER + 13,
            3 * BLAKE3_GATHER + 517,
            70_000,
        ];
        for len in lens {
            let message: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let expected: [u8; 32] = blake3::keyed_hash(&key, &message).into();
            for (a, b) in [(0, 0), (8, 13), (0, len), (len / 2, len / 2), (len / 3, len - len / 3)] {
                let (a, b) = (a.min(len), b.min(len).max(a.min(len)));
                let parts: [&[u8]; 3] = [&message[..a], &message[a..b], &message[b..]];
                assert_eq!(blake3_tag(&key, &parts), expected, "len {len}, split {a}/{b}");
                let mut head = [0u8; BLAKE3_GATHER];
                assert_eq!(blake3_gathered(&key, &parts, &mut head), expected, "len {len}, split {a}/{b}");
            }
        }
    }

    #[test]
    fn hmac_tag_matches_one_shot_hmac() {
        let key = [0x33; 32];
        let message: Vec<u8> = (0..5000).map(|i| (i % 7) as u8).collect();
        let state = MacState::new(MacSuite::HmacSha256, &key);
        let mut one = hmac_sha256(&key);
        one.update(&message);
        let expected: [u8; 32] = one.finalize().into_bytes().into();
        assert_eq!(state.tag(&[&message[..13], &message[13..]]), expected);
        assert_eq!(state.tag(&[&message[..8], &message[8..13], &message[13..]]), expected);
        for len in [0, 1, 13, 63, 64, 65, 77, 128] {
            let mut one = hmac_sha256(&key);
            one.update(&message[..len]);
            let expected: [u8; 32] = one.finalize().into_bytes().into();
            let cut = len.min(8);
            assert_eq!(state.tag(&[&message[..cut], &message[cut..len]]), expected, "len {len}");
        }
        assert!(state.verify(&[&message], &expected));
    }
}
