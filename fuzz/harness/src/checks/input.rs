//! Reading decisions out of the fuzzer's bytes. An exhausted input reads as zeros,
//! so every byte string is a valid (if short) script.

/// A cursor over fuzz input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Starts reading `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, or 0.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, tail)) => {
                self.rest = tail;
                b
            }
            None => 0,
        }
    }

    /// A big-endian `u16` from the next two bytes.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A number below `n` (`n` > 0), from one byte.
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }
}

/// Feeds `stream` to `feed` in pieces: all at once when `chunk` is 0, else in pieces
/// of `chunk` bytes (the fuzzer picks the fragmentation).
pub fn chunks(stream: &[u8], chunk: u8) -> impl Iterator<Item = &[u8]> {
    let size = if chunk == 0 { stream.len().max(1) } else { usize::from(chunk) };
    stream.chunks(size)
}
