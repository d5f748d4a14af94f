//! The running transcript hash: SHA-256 over a fixed label and then every handshake
//! frame exactly as it crossed the wire (header included), in order.
//!
//! A message's own proof covers `SHA-256(transcript so far || type byte || the
//! message's fields before the proof)`; see [`Transcript::hash_partial`]. Because the
//! hello carries both nonces' first half, the offered versions and suites, and the
//! token id, and later frames carry the rest, a message replayed into another session
//! or a downgraded choice changes every later hash.

use sha2::{Digest, Sha256};

/// The label every transcript starts with.
pub const TRANSCRIPT_LABEL: &[u8] = b"boarding transcript\x00";

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
