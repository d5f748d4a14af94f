//! The MAC-authenticated channel: `Data` and `Close` frames sealed into and opened
//! from caller-owned buffers, with no allocation per frame.
//!
//! A frame is `type (1) | length (4, big-endian) | payload | tag (32)`; the tag is the
//! suite's MAC, under the direction's session key, over
//! `payload | sequence (8, big-endian) | type | length` (the fixed-size trailer last, so
//! the payload is hashed from its first byte at full speed). Sequence numbers are implicit
//! (each direction counts from 0), so a replayed, reordered, dropped or reflected frame
//! fails its tag; keys are per session, so a frame spliced in from another session
//! fails too. A session ends with an authenticated `Close`: a stream that stops without
//! one was truncated. Any rejected frame closes the channel for good, and the same
//! error is returned again on every later call.
//!
//! # Closing
//!
//! Either side ends the session by sealing its `Close` ([`Channel::seal_close`]), writing
//! it and shutting its stream down. When [`Channel::open`] returns [`Received::Close`],
//! the session has ended cleanly: the peer's `Close` verified, and nothing more will
//! arrive. Answering with a `Close` of one's own is a **courtesy** (the specification's
//! SHOULD), not part of the session: the peer may already have shut its stream down, so
//! writing, flushing or shutting down after its `Close` can fail with a broken pipe or a
//! reset. A driver must not treat that failure as fatal, or report the session as failed
//! because of it; it closes the stream and reports a clean end. Likewise the side that
//! closes first may wait for the answer but must not require it: a missing answer is not
//! an error. Only a stream that ends *before* the peer's authenticated `Close` was
//! truncated, and a driver must report that as an error.

use core::fmt;

use crate::keys::SessionKeys;
use crate::messages::{FRAME_HEADER_LEN, FrameType};
use crate::suite::{MacState, MacSuite, TAG_LEN};

/// Bytes a frame adds to its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + TAG_LEN;
/// Largest payload of one `Data` frame (1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest whole frame.
pub const MAX_FRAME: usize = MAX_PAYLOAD + FRAME_OVERHEAD;

/// Why a channel operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The tag did not verify: a forged, tampered, replayed, reordered, reflected or
    /// spliced frame.
    BadTag,
    /// A frame type that is not `Data` or `Close`.
    UnexpectedType(u8),
    /// The length field exceeds [`MAX_PAYLOAD`].
    PayloadTooLong {
        /// The announced length.
        len: usize,
    },
    /// The frame is shorter than its length field says.
    Truncated,
    /// Bytes follow the frame.
    TrailingBytes,
    /// A `Close` frame with a payload.
    MalformedClose,
    /// A frame arrived after the peer's `Close`.
    AfterClose,
    /// This side already sent `Close`; it cannot send more.
    LocallyClosed,
    /// The sequence number space of a direction is used up; open a new session.
    SequenceExhausted,
    /// The caller's output buffer is too small (not fatal).
    BufferTooSmall {
        /// The bytes needed.
        needed: usize,
    },
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadTag => f.write_str("frame authentication failed (tampered, replayed, reordered or foreign)"),
            Self::UnexpectedType(t) => write!(f, "unexpected frame type 0x{t:02x} on the channel"),
            Self::PayloadTooLong { len } => write!(f, "frame payload of {len} bytes exceeds {MAX_PAYLOAD}"),
            Self::Truncated => f.write_str("frame is shorter than its length field"),
            Self::TrailingBytes => f.write_str("bytes after the frame"),
            Self::MalformedClose => f.write_str("close frame with a payload"),
            Self::AfterClose => f.write_str("frame after the peer closed the channel"),
            Self::LocallyClosed => f.write_str("the channel is closed"),
            Self::SequenceExhausted => f.write_str("sequence numbers exhausted; start a new session"),
            Self::BufferTooSmall { needed } => write!(f, "output buffer too small, {needed} bytes needed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ChannelError {}

/// What an opened frame carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// Application data, borrowed from the input frame.
    Data(&'a [u8]),
    /// The peer closed the channel (authenticated): the session ended cleanly and nothing
    /// more will arrive. Answer with [`Channel::seal_close`] as a courtesy, and do not
    /// treat a failure to deliver that answer as an error (see [closing](self#closing)).
    Close,
}

/// Which end of the session this channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agent.
    Client,
    /// The gateway.
    Server,
}

#[derive(Debug, Clone)]
struct Direction {
    mac: MacState,
    seq: u64,
}

impl Direction {
    fn next_seq(&mut self) -> Result<u64, ChannelError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(ChannelError::SequenceExhausted)?;
        Ok(seq)
    }
}

/// One session's channel: a sending and a receiving direction.
#[derive(Debug, Clone)]
pub struct Channel {
    suite: MacSuite,
    send: Direction,
    recv: Direction,
    sent_close: bool,
    received_close: bool,
    failed: Option<ChannelError>,
}

fn header(frame_type: FrameType, len: usize) -> [u8; FRAME_HEADER_LEN] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [frame_type as u8, a, b, c, d]
}

impl Channel {
    /// A channel for `side` with the session's keys; the MAC key schedule runs here,
    /// once, not per frame.
    pub fn new(side: Side, suite: MacSuite, keys: &SessionKeys) -> Self {
        let (send, recv) = match side {
            Side::Client => (&keys.c2s, &keys.s2c),
            Side::Server => (&keys.s2c, &keys.c2s),
        };
        Self {
            suite,
            send: Direction { mac: MacState::new(suite, send.expose()), seq: 0 },
            recv: Direction { mac: MacState::new(suite, recv.expose()), seq: 0 },
            sent_close: false,
            received_close: false,
            failed: None,
        }
    }

    /// The negotiated MAC suite.
    pub fn suite(&self) -> MacSuite {
        self.suite
    }

    /// Whether the peer sent its authenticated `Close`. Once it has, failing to send
    /// one's own `Close` (or to shut the stream down after it) is no error of the
    /// session: see [closing](self#closing).
    pub fn peer_closed(&self) -> bool {
        self.received_close
    }

    /// Whether this side sent `Close`.
    pub fn locally_closed(&self) -> bool {
        self.sent_close
    }

    /// The error that closed the channel, if one did.
    pub fn failure(&self) -> Option<ChannelError> {
        self.failed
    }

    /// How long the frame at the start of `buf` is, once its header has arrived:
    /// `Ok(None)` if fewer than 5 bytes are buffered. Lets a driver read exactly one
    /// frame before calling [`Channel::open`].
    ///
    /// # Errors
    ///
    /// [`ChannelError::UnexpectedType`] if the first byte is neither `Data` nor `Close`,
    /// and [`ChannelError::PayloadTooLong`] if the length field exceeds [`MAX_PAYLOAD`].
    /// Nothing after such a header can be framed: close the connection.
    pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ChannelError> {
        let Some(&[t, a, b, c, d]) = buf.get(..FRAME_HEADER_LEN) else { return Ok(None) };
        if t != FrameType::Data as u8 && t != FrameType::Close as u8 {
            return Err(ChannelError::UnexpectedType(t));
        }
        let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
        if len > MAX_PAYLOAD {
            return Err(ChannelError::PayloadTooLong { len });
        }
        Ok(Some(len.saturating_add(FRAME_OVERHEAD)))
    }

    /// The peer's refusal of the handshake, if `buf` starts with a whole Alert frame
    /// and no channel frame has been opened yet (`spec/PROTOCOL.md` §9): a gateway that
    /// refuses after the client's last handshake message (a failed confirmation, a
    /// rotation that lost, a clone's resume) can only say so where the first channel
    /// frame would be. `None` otherwise, and always after the first channel frame: an
    /// Alert there is [`ChannelError::UnexpectedType`], as any other type. Like every
    /// alert it is unauthenticated: it can only end the session, which the network
    /// could do anyway.
    pub fn late_refusal(&self, buf: &[u8]) -> Option<crate::error::ReceivedAlert> {
        if self.recv.seq != 0 || self.failed.is_some() {
            return None;
        }
        if buf.first() != Some(&(FrameType::Alert as u8)) {
            return None;
        }
        let frame = crate::messages::peek_handshake_frame(buf).ok().flatten()?;
        Some(match <crate::messages::AlertMessage as crate::messages::Message>::decode(frame.body) {
            Ok(alert) => crate::error::ReceivedAlert::from_code(alert.code),
            Err(_) => crate::error::ReceivedAlert::Malformed,
        })
    }

    fn check_open(&self) -> Result<(), ChannelError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: ChannelError) -> ChannelError {
        self.failed = Some(e);
        e
    }

    /// Seals `payload` as a `Data` frame into `out`, returning the frame's length
    /// (`payload.len() + FRAME_OVERHEAD`).
    ///
    /// # Errors
    ///
    /// [`ChannelError::BufferTooSmall`] if `out` cannot hold the frame (retry with `needed`
    /// bytes); [`ChannelError::PayloadTooLong`] if `payload` exceeds [`MAX_PAYLOAD`];
    /// [`ChannelError::LocallyClosed`] after [`Channel::seal_close`];
    /// [`ChannelError::SequenceExhausted`] when the sending direction has no sequence
    /// number left (resume a new session); and the error that closed the channel, if an
    /// earlier [`Channel::open`] failed. A failed seal sends nothing and consumes no
    /// sequence number.
    pub fn seal(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, ChannelError> {
        let end = FRAME_HEADER_LEN.saturating_add(payload.len());
        let slot = out
            .get_mut(FRAME_HEADER_LEN..end)
            .ok_or(ChannelError::BufferTooSmall { needed: payload.len().saturating_add(FRAME_OVERHEAD) })?;
        slot.copy_from_slice(payload);
        self.seal_in_place(out, payload.len())
    }

    /// Seals a payload the caller already wrote at `buf[5..5 + payload_len]`, writing
    /// the header before it and the tag after it; no copy of the payload is made.
    ///
    /// # Errors
    ///
    /// As [`Channel::seal`]: [`ChannelError::PayloadTooLong`] if `payload_len` exceeds
    /// [`MAX_PAYLOAD`], [`ChannelError::BufferTooSmall`] if `buf` is shorter than
    /// `payload_len + FRAME_OVERHEAD`, [`ChannelError::LocallyClosed`],
    /// [`ChannelError::SequenceExhausted`], or the error that closed the channel.
    pub fn seal_in_place(&mut self, buf: &mut [u8], payload_len: usize) -> Result<usize, ChannelError> {
        if payload_len > MAX_PAYLOAD {
            return Err(ChannelError::PayloadTooLong { len: payload_len });
        }
        self.seal_frame(FrameType::Data, buf, payload_len)
    }

    /// Seals the authenticated `Close` into `out`. Nothing can be sent after it.
    ///
    /// # Errors
    ///
    /// [`ChannelError::BufferTooSmall`] if `out` is shorter than [`FRAME_OVERHEAD`];
    /// [`ChannelError::LocallyClosed`] if `Close` was sealed already;
    /// [`ChannelError::SequenceExhausted`]; or the error that closed the channel. After the
    /// peer's `Close` it still succeeds: that is the courtesy reply, whose delivery may
    /// fail without harm (see [closing](crate::channel#closing)).
    pub fn seal_close(&mut self, out: &mut [u8]) -> Result<usize, ChannelError> {
        let n = self.seal_frame(FrameType::Close, out, 0)?;
        self.sent_close = true;
        Ok(n)
    }

    fn seal_frame(&mut self, frame_type: FrameType, buf: &mut [u8], payload_len: usize) -> Result<usize, ChannelError> {
        self.check_open()?;
        if self.sent_close {
            return Err(ChannelError::LocallyClosed);
        }
        let body_end = FRAME_HEADER_LEN.saturating_add(payload_len);
        let total = body_end.saturating_add(TAG_LEN);
        if buf.len() < total {
            return Err(ChannelError::BufferTooSmall { needed: total });
        }
        let (head, rest) = buf.split_at_mut(FRAME_HEADER_LEN);
        let (payload, rest) = rest.split_at_mut(payload_len);
        let tag_slot = rest.get_mut(..TAG_LEN).ok_or(ChannelError::BufferTooSmall { needed: total })?;
        let seq = self.send.seq;
        if seq == u64::MAX {
            return Err(ChannelError::SequenceExhausted);
        }
        head.copy_from_slice(&header(frame_type, payload_len));
        tag_slot.copy_from_slice(&self.send.mac.tag(&[payload, &seq.to_be_bytes(), head]));
        self.send.next_seq()?;
        Ok(total)
    }

    /// Opens exactly one frame. Data is returned borrowed from `frame`. Any failure
    /// closes the channel: the same error comes back from every later call.
    ///
    /// # Errors
    ///
    /// Every rejected frame, and each closes the channel for good: [`ChannelError::BadTag`]
    /// (forged, tampered, replayed, reordered, reflected or from another session),
    /// [`ChannelError::UnexpectedType`], [`ChannelError::PayloadTooLong`],
    /// [`ChannelError::Truncated`] or [`ChannelError::TrailingBytes`] (pass exactly one
    /// whole frame, measured with [`Channel::frame_len`]),
    /// [`ChannelError::MalformedClose`], [`ChannelError::AfterClose`] for any frame after
    /// the peer's `Close`, and [`ChannelError::SequenceExhausted`].
    pub fn open<'a>(&mut self, frame: &'a [u8]) -> Result<Received<'a>, ChannelError> {
        self.check_open()?;
        if self.received_close {
            return Err(self.fail(ChannelError::AfterClose));
        }
        match self.open_inner(frame) {
            Ok(received) => Ok(received),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn open_inner<'a>(&mut self, frame: &'a [u8]) -> Result<Received<'a>, ChannelError> {
        let total = Self::frame_len(frame)?.ok_or(ChannelError::Truncated)?;
        if frame.len() < total {
            return Err(ChannelError::Truncated);
        }
        if frame.len() > total {
            return Err(ChannelError::TrailingBytes);
        }
        let (head, rest) = frame.split_at(FRAME_HEADER_LEN);
        let (payload, tag) = rest.split_at(rest.len().saturating_sub(TAG_LEN));
        let seq = self.recv.seq;
        if seq == u64::MAX {
            return Err(ChannelError::SequenceExhausted);
        }
        if !self.recv.mac.verify(&[payload, &seq.to_be_bytes(), head], tag) {
            return Err(ChannelError::BadTag);
        }
        self.recv.next_seq()?;
        if head.first() == Some(&(FrameType::Close as u8)) {
            if !payload.is_empty() {
                return Err(ChannelError::MalformedClose);
            }
            self.received_close = true;
            return Ok(Received::Close);
        }
        Ok(Received::Data(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SymmetricKey;
    use alloc::vec;

    fn keys(b: u8) -> SessionKeys {
        SessionKeys { c2s: SymmetricKey::from_bytes([b; 32]), s2c: SymmetricKey::from_bytes([b ^ 0xff; 32]) }
    }

    fn pair(suite: MacSuite) -> (Channel, Channel) {
        (Channel::new(Side::Client, suite, &keys(1)), Channel::new(Side::Server, suite, &keys(1)))
    }

    #[test]
    fn round_trip_both_suites_and_close() {
        for suite in MacSuite::ALL {
            let (mut c, mut s) = pair(suite);
            let mut buf = vec![0u8; 64];
            for msg in [&b"hello"[..], b"", b"again"] {
                let n = c.seal(msg, &mut buf).unwrap();
                assert_eq!(s.open(&buf[..n]), Ok(Received::Data(msg)));
            }
            let n = s.seal(b"back", &mut buf).unwrap();
            assert_eq!(c.open(&buf[..n]), Ok(Received::Data(&b"back"[..])));
            let n = c.seal_close(&mut buf).unwrap();
            assert_eq!(s.open(&buf[..n]), Ok(Received::Close));
            assert_eq!(c.seal(b"x", &mut buf), Err(ChannelError::LocallyClosed));
        }
    }

    #[test]
    fn replay_reorder_reflection_and_bit_flips_fail_and_stick() {
        let (mut c, s) = pair(MacSuite::HmacSha256);
        let mut f1 = vec![0u8; 64];
        let mut f2 = vec![0u8; 64];
        let n1 = c.seal(b"one", &mut f1).unwrap();
        let n2 = c.seal(b"two", &mut f2).unwrap();
        // Reorder.
        assert_eq!(s.clone().open(&f2[..n2]), Err(ChannelError::BadTag));
        // Reflection: the client's own frame fed back to it.
        assert_eq!(c.clone().open(&f1[..n1]), Err(ChannelError::BadTag));
        // Replay.
        let mut s2 = s.clone();
        assert!(s2.open(&f1[..n1]).is_ok());
        assert_eq!(s2.open(&f1[..n1]), Err(ChannelError::BadTag));
        // Sticky: the valid next frame is refused too.
        assert_eq!(s2.open(&f2[..n2]), Err(ChannelError::BadTag));
        // Every single-bit flip is rejected.
        for i in 0..n1 * 8 {
            let mut t = f1[..n1].to_vec();
            t[i / 8] ^= 1 << (i % 8);
            assert!(s.clone().open(&t).is_err(), "bit {i}");
        }
        // Truncation and trailing bytes.
        assert_eq!(s.clone().open(&f1[..n1 - 1]), Err(ChannelError::Truncated));
        let mut long = f1[..n1].to_vec();
        long.push(0);
        assert_eq!(s.clone().open(&long), Err(ChannelError::TrailingBytes));
    }

    #[test]
    fn splicing_from_another_session_fails() {
        let (mut c1, _) = pair(MacSuite::Blake3);
        let mut s2 = Channel::new(Side::Server, MacSuite::Blake3, &keys(2));
        let mut buf = vec![0u8; 64];
        let n = c1.seal(b"hi", &mut buf).unwrap();
        assert_eq!(s2.open(&buf[..n]), Err(ChannelError::BadTag));
    }

    #[test]
    fn frames_after_close_are_rejected() {
        let (mut c, mut s) = pair(MacSuite::Blake3);
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        let na = c.seal_close(&mut a).unwrap();
        assert_eq!(s.open(&a[..na]), Ok(Received::Close));
        // A forged "data after close" (even with a valid tag from the next sequence).
        let mut c2 = c.clone();
        c2.sent_close = false;
        let nb = c2.seal(b"late", &mut b).unwrap();
        assert_eq!(s.open(&b[..nb]), Err(ChannelError::AfterClose));
    }

    #[test]
    fn oversized_lengths_and_small_buffers() {
        assert_eq!(
            Channel::frame_len(&[0x17, 0, 0x10, 0, 1]),
            Err(ChannelError::PayloadTooLong { len: MAX_PAYLOAD + 1 })
        );
        assert_eq!(Channel::frame_len(&[0x17, 0, 0]), Ok(None));
        assert_eq!(Channel::frame_len(&[0x01, 0, 0, 0, 0]), Err(ChannelError::UnexpectedType(1)));
        let (mut c, _) = pair(MacSuite::HmacSha256);
        let mut small = [0u8; 10];
        assert_eq!(c.seal(b"hello", &mut small), Err(ChannelError::BufferTooSmall { needed: 42 }));
        // Not fatal.
        let mut buf = [0u8; 64];
        assert!(c.seal(b"hello", &mut buf).is_ok());
    }

    #[test]
    fn sequence_exhaustion() {
        let (mut c, mut s) = pair(MacSuite::HmacSha256);
        c.send.seq = u64::MAX - 1;
        s.recv.seq = u64::MAX - 1;
        let mut buf = [0u8; 64];
        let n = c.seal(b"last", &mut buf).unwrap();
        assert_eq!(s.open(&buf[..n]), Ok(Received::Data(&b"last"[..])));
        assert_eq!(c.seal(b"more", &mut buf), Err(ChannelError::SequenceExhausted));
        assert_eq!(s.open(&buf[..n]), Err(ChannelError::SequenceExhausted));
    }

    #[test]
    fn seal_in_place_matches_seal() {
        let (mut c1, _) = pair(MacSuite::Blake3);
        let mut c2 = c1.clone();
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        let n = c1.seal(b"payload", &mut a).unwrap();
        b[5..12].copy_from_slice(b"payload");
        assert_eq!(c2.seal_in_place(&mut b, 7), Ok(n));
        assert_eq!(a, b);
    }
}
