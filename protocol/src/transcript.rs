//! The running transcript hash: SHA-256 over a fixed label and then every handshake
//! frame exactly as it crossed the wire (header included), in order.
//!
//! A message's own proof covers `SHA-256(transcript so far || type byte || the
//! message's fields before the proof)`; see [`Transcript::hash_partial`]. Because the
//! hello carries both nonces' first half, the offered versions and suites, and the
//! token id, and later frames carry the rest, a message replayed into another session
//! or a downgraded choice changes every later hash.
//!
//! A handshake that runs inside TLS starts its transcript from a [`ChannelBinding`]
//! instead (`spec/PROTOCOL.md` §6.1): both sides mix in a TLS exporter value of their own
//! TLS session, so the first proof fails if the two ends are not on the same TLS session
//! (a relay that terminates TLS on each side).

use core::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The label every transcript of a handshake without channel binding starts with.
pub const TRANSCRIPT_LABEL: &[u8] = b"boarding transcript\x00";
/// The label a transcript bound to a TLS session starts with, before the binding.
pub const BOUND_TRANSCRIPT_LABEL: &[u8] = b"boarding transcript tls-exporter\x00";
/// The TLS exporter label (RFC 8446 §7.5) both sides export their binding with, with an
/// empty context and a length of 32 bytes.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-boarding-v1";

/// A value both ends of one TLS session share and no other session has: the TLS
/// exporter output for [`TLS_EXPORTER_LABEL`]. Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChannelBinding([u8; 32]);

impl ChannelBinding {
    /// The binding from the 32 bytes the TLS exporter gave.
    pub fn from_exporter(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl PartialEq for ChannelBinding {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for ChannelBinding {}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelBinding(<redacted>)")
    }
}

/// A running SHA-256 over the handshake.
#[derive(Clone, Debug)]
pub struct Transcript(Sha256);

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

impl Transcript {
    /// An empty transcript (just the label).
    pub fn new() -> Self {
        let mut h = Sha256::new();
        h.update(TRANSCRIPT_LABEL);
        Self(h)
    }

    /// An empty transcript of a handshake bound to `binding` (its label and the
    /// binding), or of an unbound one for `None`.
    pub fn start(binding: Option<&ChannelBinding>) -> Self {
        let Some(binding) = binding else { return Self::new() };
        let mut h = Sha256::new();
        h.update(BOUND_TRANSCRIPT_LABEL);
        h.update(binding.0);
        Self(h)
    }

    /// Appends a whole frame (header and body).
    pub fn add_frame(&mut self, frame: &[u8]) {
        self.0.update(frame);
    }

    /// The hash of everything so far.
    pub fn current(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }

    /// The hash of everything so far followed by a message's type byte and the part
    /// of its body that precedes its proof, without changing the transcript.
    pub fn hash_partial(&self, frame_type: u8, signed_part: &[u8]) -> [u8; 32] {
        let mut h = self.0.clone();
        h.update([frame_type]);
        h.update(signed_part);
        h.finalize().into()
    }
}
