//! Bounds-checked reading and padded writing of OpenFlow wire structures.
//!
//! Every OpenFlow structure is big-endian and most are padded to a multiple
//! of 8 bytes (OpenFlow 1.3.5 §7.1). Decoding never trusts a length field:
//! `Reader` checks every read against what is left, so a truncated or
//! lying message becomes a [`DecodeError`] instead of a panic.

use bytes::BufMut;

/// A message, or part of one, that does not follow OpenFlow 1.3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes remain than the structure needs.
    #[error("{what}: truncated, needs {need} bytes but {have} remain")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A length field that is too small, too large or not allowed.
    #[error("{what}: invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    /// A field whose value is not allowed here.
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// A value that cannot be put on the wire, almost always because it is too
/// large for the 8- or 16-bit length field that would describe it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} would be {len} bytes, more than its length field allows ({max})")]
pub struct EncodeError {
    pub what: &'static str,
    pub len: usize,
    pub max: usize,
}

/// A cursor over a byte slice that checks every read.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `what` names the structure in error messages.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated {
                what: self.what,
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A nested reader over the next `n` bytes, naming a new structure.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.bytes(n)?, what))
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// An error about this structure.
    pub(crate) fn invalid(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            what: self.what,
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_length(&self, len: usize) -> DecodeError {
        DecodeError::BadLength {
            what: self.what,
            len,
        }
    }
}

/// Rounds `len` up to the next multiple of 8.
pub(crate) fn round8(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Appends zeros until the bytes written since `start` are a multiple of 8.
pub(crate) fn pad_to_8(out: &mut Vec<u8>, start: usize) {
    let written = out.len() - start;
    out.put_bytes(0, round8(written) - written);
}

/// Checks that `len` fits a 16-bit length field.
pub(crate) fn len_u16(what: &'static str, len: usize) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError {
        what,
        len,
        max: usize::from(u16::MAX),
    })
}

/// Writes a 16-bit length at `at`, which an earlier write left as zero.
pub(crate) fn patch_len(
    out: &mut [u8],
    at: usize,
    what: &'static str,
    len: usize,
) -> Result<(), EncodeError> {
    let len = len_u16(what, len)?;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_instead_of_panicking() {
        let mut r = Reader::new(&[1, 2, 3], "thing");
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(
            r.u32(),
            Err(DecodeError::Truncated {
                what: "thing",
                need: 4,
                have: 1
            })
        );
        assert_eq!(r.u8(), Ok(3));
        assert!(r.is_empty());
    }

    #[test]
    fn padding_rounds_up_to_eight() {
        assert_eq!(round8(0), 0);
        assert_eq!(round8(1), 8);
        assert_eq!(round8(8), 8);
        assert_eq!(round8(9), 16);
        let mut v = vec![9; 3];
        v.extend_from_slice(&[1, 2, 3, 4, 5]);
        pad_to_8(&mut v, 3);
        assert_eq!(v.len(), 11);
        pad_to_8(&mut v, 0);
        assert_eq!(v.len(), 16);
    }

    #[test]
    fn oversize_lengths_are_refused() {
        assert!(len_u16("x", 65535).is_ok());
        assert_eq!(
            len_u16("x", 65536),
            Err(EncodeError {
                what: "x",
                len: 65536,
                max: 65535
            })
        );
    }
}
