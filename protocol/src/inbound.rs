//! The handshake's receive buffer: collects bytes until a whole frame is there and
//! hands out one frame at a time, keeping whatever follows the last handshake frame
//! (pipelined channel frames) for the channel.

use alloc::vec::Vec;

use crate::channel::MAX_FRAME;
use crate::codec::DecodeError;
use crate::error::{Error, PeerMisbehaved};
use crate::messages::{FRAME_HEADER_LEN, FrameType, MAX_HANDSHAKE_BODY, peek_handshake_frame};

/// Most bytes buffered before the handshake completes: one handshake frame and one
/// pipelined channel frame.
pub(crate) const MAX_BUFFERED: usize = FRAME_HEADER_LEN + MAX_HANDSHAKE_BODY + MAX_FRAME;

/// One whole handshake frame, header included (what the transcript hashes).
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) frame_type: FrameType,
    pub(crate) bytes: Vec<u8>,
}

impl Frame {
    pub(crate) fn body(&self) -> &[u8] {
        self.bytes.get(FRAME_HEADER_LEN..).unwrap_or(&[])
    }
}

#[derive(Debug, Default)]
pub(crate) struct Inbound {
    buf: Vec<u8>,
}

impl Inbound {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let len = self.buf.len().saturating_add(bytes.len());
        if len > MAX_BUFFERED {
            return Err(DecodeError::TooLong { field: "buffered input", len, max: MAX_BUFFERED }.into());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Takes the next whole handshake frame, if one is buffered.
    ///
    /// The checks run in the order the specification fixes (§4): the type byte first
    /// (an undefined type is malformed; a defined type that is neither expected here
    /// nor an Alert is an unexpected message, channel frames included), then the
    /// length against the handshake limit, from the header alone.
    pub(crate) fn next_frame(&mut self, expected: &'static [FrameType]) -> Result<Option<Frame>, Error> {
        let Some(&type_byte) = self.buf.first() else { return Ok(None) };
        let frame_type = FrameType::from_byte(type_byte)?;
        if frame_type != FrameType::Alert && !expected.contains(&frame_type) {
            return Err(PeerMisbehaved::UnexpectedMessage { expected, got: type_byte }.into());
        }
        let Some(frame) = peek_handshake_frame(&self.buf)? else { return Ok(None) };
        let n = frame.bytes.len();
        let bytes: Vec<u8> = self.buf.drain(..n).collect();
        Ok(Some(Frame { frame_type, bytes }))
    }

    /// Everything still buffered (channel frames that followed the handshake).
    pub(crate) fn take_rest(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.buf)
    }
}
