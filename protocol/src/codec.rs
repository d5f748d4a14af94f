//! The one bounds-checked reader every parser in Boarding goes through, and the
//! matching writer helpers.
//!
//! Every length field is checked against a named maximum *before* anything is
//! allocated or sliced, a short buffer is a [`DecodeError::Truncated`], and
//! [`Reader::finish`] rejects trailing bytes, so a decoder either consumes exactly
//! its input or fails with a typed error.

use alloc::vec::Vec;
use core::fmt;

/// Why bytes could not be decoded. Every variant names the field it was reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the field was complete.
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A length field exceeds the limit the specification sets for it.
    TooLong {
        /// The field being read.
        field: &'static str,
        /// The length announced on the wire.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// A length or count is below the minimum the specification sets (for example an empty list).
    TooShort {
        /// The field being read.
        field: &'static str,
        /// The length or count found.
        len: usize,
        /// The smallest allowed.
        min: usize,
    },
    /// Bytes were left after the last field.
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field holds a value the specification does not allow.
    InvalidValue {
        /// The field being read.
        field: &'static str,
    },
    /// A frame type byte that is not defined.
    UnknownType(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { field } => write!(f, "input ends inside field `{field}`"),
            Self::TooLong { field, len, max } => {
                write!(f, "field `{field}` is {len} long, the limit is {max}")
            }
            Self::TooShort { field, len, min } => {
                write!(f, "field `{field}` is {len} long, the minimum is {min}")
            }
            Self::TrailingBytes { what, extra } => {
                write!(f, "{extra} unexpected trailing bytes after {what}")
            }
            Self::InvalidValue { field } => write!(f, "field `{field}` holds an invalid value"),
            Self::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// A cursor over a byte slice that never reads past its end.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes exactly `n` bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] naming `field` if fewer than `n` bytes are left; nothing
    /// is consumed then.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] naming `field` if fewer than `N` bytes are left.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] naming `field` if no byte is left.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array::<1>(field)?))
    }

    /// Reads a big-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] naming `field` if fewer than 2 bytes are left.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array::<2>(field)?))
    }

    /// Reads a big-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] naming `field` if fewer than 4 bytes are left.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array::<4>(field)?))
    }

    /// Reads a big-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] naming `field` if fewer than 8 bytes are left.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>(field)?))
    }

    /// Reads a `u8`-length-prefixed byte string of `min..=max` bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLong`] or [`DecodeError::TooShort`] if the announced length is
    /// outside `min..=max` (checked before the string is read), [`DecodeError::Truncated`]
    /// if the prefix or the string is cut short.
    pub fn bytes_u8(&mut self, field: &'static str, min: usize, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u8(field)?);
        self.bounded(field, len, min, max)
    }

    /// Reads a `u16`-length-prefixed byte string of `min..=max` bytes.
    ///
    /// # Errors
    ///
    /// As [`Reader::bytes_u8`]: [`DecodeError::TooLong`], [`DecodeError::TooShort`] or
    /// [`DecodeError::Truncated`].
    pub fn bytes_u16(&mut self, field: &'static str, min: usize, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.bounded(field, len, min, max)
    }

    /// Checks a count read from the wire against `min..=max` (for lists).
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLong`] if `len` is above `max`, [`DecodeError::TooShort`] if it is
    /// below `min`.
    pub fn check_count(field: &'static str, len: usize, min: usize, max: usize) -> Result<usize, DecodeError> {
        if len > max {
            Err(DecodeError::TooLong { field, len, max })
        } else if len < min {
            Err(DecodeError::TooShort { field, len, min })
        } else {
            Ok(len)
        }
    }

    fn bounded(&mut self, field: &'static str, len: usize, min: usize, max: usize) -> Result<&'a [u8], DecodeError> {
        Self::check_count(field, len, min, max)?;
        self.take(len, field)
    }

    /// Ends decoding: fails if any byte is left.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TrailingBytes`] naming `what` and how many bytes were left.
    pub fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.rest.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes { what, extra: self.rest.len() }) }
    }
}

/// Appends a `u8`-length-prefixed byte string. Encoders call this only with values
/// whose length was validated when they were constructed; an oversized value is
/// clamped to the limit rather than wrapping (and then fails to decode).
pub fn put_bytes_u8(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

/// Appends a `u16`-length-prefixed byte string (see [`put_bytes_u8`] on lengths).
pub fn put_bytes_u16(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_short_and_trailing_input() {
        let mut r = Reader::new(&[0, 3, 1, 2]);
        assert_eq!(r.bytes_u16("x", 0, 8), Err(DecodeError::Truncated { field: "x" }));
        let mut r = Reader::new(&[2, 1, 2, 9]);
        assert_eq!(r.bytes_u8("x", 0, 8), Ok(&[1u8, 2][..]));
        assert_eq!(r.finish("m"), Err(DecodeError::TrailingBytes { what: "m", extra: 1 }));
    }

    #[test]
    fn reader_rejects_oversized_length_before_reading() {
        let mut r = Reader::new(&[0xff, 0xff]);
        assert_eq!(r.bytes_u16("x", 0, 16), Err(DecodeError::TooLong { field: "x", len: 0xffff, max: 16 }));
    }
}
