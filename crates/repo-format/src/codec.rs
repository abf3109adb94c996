//! The byte-level primitives every encoded structure is built from (SPEC.md §2).
//!
//! All integers are little-endian and fixed width; byte strings carry a length prefix.
//! The reader never panics: every read that would run past the end, or any length that
//! exceeds what remains, is a [`DecodeError`].

use crate::id::Id;

/// Why a structure could not be decoded; carried inside [`crate::Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the structure did.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Byte offset of the failing read.
        offset: usize,
        /// How many bytes it wanted.
        needed: usize,
    },
    /// A field held a value the format does not allow.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The structure was written by another format version.
    #[error("{what} version {found} (this build reads version {supported})")]
    Version {
        /// Which structure.
        what: &'static str,
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// Bytes remained after the structure ended.
    #[error("{0} trailing bytes after the end of the structure")]
    Trailing(usize),
    /// The structure uses something only a newer holdfast understands (an unknown
    /// critical extension), which must not be guessed at.
    #[error("{0} (written by a newer holdfast)")]
    Newer(String),
}

/// Builds a `DecodeError::Invalid`.
pub fn invalid(field: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// Appends encoded fields to a byte vector.
#[derive(Default, Debug)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// u16, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// u32, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// u64, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// i64, little-endian two's complement.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Raw bytes with no length prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A 32-byte ID.
    pub fn id(&mut self, id: &Id) {
        self.buf.extend_from_slice(&id.0);
    }
    /// Bytes with a u16 length prefix (names, users, xattr names). Panics never: longer
    /// input is a caller bug, reported as an error by the encoders that check it.
    pub fn bytes16(&mut self, v: &[u8]) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.buf.extend_from_slice(&v[..len as usize]);
    }
    /// Bytes with a u32 length prefix.
    pub fn bytes32(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(&v[..len as usize]);
    }
    /// A string with a u16 length prefix.
    pub fn str16(&mut self, v: &str) {
        self.bytes16(v.as_bytes());
    }
    /// Consumes the writer.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads encoded fields from a byte slice, failing cleanly on truncation.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// u16, little-endian.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// u32, little-endian.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// u64, little-endian.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// i64, little-endian.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A 32-byte ID.
    pub fn id(&mut self) -> Result<Id, DecodeError> {
        Ok(Id(self.array()?))
    }
    /// Bytes with a u16 length prefix.
    pub fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    /// Bytes with a u32 length prefix.
    pub fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A UTF-8 string with a u16 length prefix.
    pub fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).map_err(|_| invalid(field, "not UTF-8"))
    }
    /// A count of items that each take at least `min_item_len` bytes; rejects counts the
    /// remaining input cannot hold, so a corrupt count never drives a huge allocation.
    pub fn count(
        &mut self,
        field: &'static str,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(invalid(
                field,
                format!("count {n} exceeds the {} bytes left", self.remaining()),
            ));
        }
        Ok(n)
    }
    /// Reads a version byte and fails unless it is `supported`.
    pub fn version(&mut self, what: &'static str, supported: u8) -> Result<(), DecodeError> {
        let found = self.u8()?;
        if found != supported {
            return Err(DecodeError::Version {
                what,
                found,
                supported,
            });
        }
        Ok(())
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn primitives_round_trip(a: u8, b: u16, c: u32, d: u64, e: i64, s in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut w = Writer::new();
            w.u8(a); w.u16(b); w.u32(c); w.u64(d); w.i64(e); w.bytes16(&s); w.bytes32(&s);
            let buf = w.finish();
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.u8().unwrap(), a);
            prop_assert_eq!(r.u16().unwrap(), b);
            prop_assert_eq!(r.u32().unwrap(), c);
            prop_assert_eq!(r.u64().unwrap(), d);
            prop_assert_eq!(r.i64().unwrap(), e);
            prop_assert_eq!(r.bytes16().unwrap(), &s[..]);
            prop_assert_eq!(r.bytes32().unwrap(), &s[..]);
            r.finish().unwrap();
            // Every truncation fails cleanly.
            for cut in 0..buf.len() {
                let mut r = Reader::new(&buf[..cut]);
                let ok = (|| -> Result<(), DecodeError> {
                    r.u8()?; r.u16()?; r.u32()?; r.u64()?; r.i64()?; r.bytes16()?; r.bytes32()?; Ok(())
                })();
                prop_assert!(ok.is_err());
            }
        }
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert!(matches!(r.count("x", 1), Err(DecodeError::Invalid { .. })));
    }
}
