//! The handshake's receive buffer: collects bytes until a whole frame is there and
//! hands out one frame at a time, keeping whatever follows the last handshake frame
//! (pipelined channel frames) for the channel.

use alloc::vec::Vec;

use crate::channel::MAX_FRAME;
use crate::codec::DecodeError;
use crate::error::{Error, ProtocolError};
use crate::messages::{FRAME_HEADER_LEN, FrameType, MAX_HANDSHAKE_BODY, peek_handshake_frame};

/// Most bytes buffered before the handshake completes: one handshake frame and one
/// pipelined channel frame.
pub(crate) const MAX_BUFFERED: usize = FRAME_HEADER_LEN + MAX_HANDSHAKE_BODY + MAX_FRAME;

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

    /// Takes the next whole handshake frame, if one is buffered. A channel frame where
    /// a handshake frame is expected is an unexpected message.
    pub(crate) fn next_frame(&mut self, expected: &'static str) -> Result<Option<(FrameType, Vec<u8>)>, Error> {
        if let Some(&t) = self.buf.first()
            && (t == FrameType::Data as u8 || t == FrameType::Close as u8)
        {
            return Err(ProtocolError::UnexpectedMessage { expected, got: t }.into());
        }
        let Some(frame) = peek_handshake_frame(&self.buf)? else { return Ok(None) };
        let frame_type = frame.frame_type;
        let n = frame.bytes.len();
        let bytes: Vec<u8> = self.buf.drain(..n).collect();
        Ok(Some((frame_type, bytes)))
    }

    /// Everything still buffered (channel frames that followed the handshake).
    pub(crate) fn take_rest(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.buf)
    }
}

/// The body of a frame taken by [`Inbound::next_frame`].
pub(crate) fn body(frame: &[u8]) -> &[u8] {
    frame.get(FRAME_HEADER_LEN..).unwrap_or(&[])
}
