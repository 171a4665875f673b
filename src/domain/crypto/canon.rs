//! Canonical byte encoding for associated data, key-derivation info and signed transcripts.
//!
//! Every byte string that is authenticated (AEAD associated data, HKDF info, Ed25519 signed
//! bytes) is built with [`Canon`], so all of them share one unambiguous layout:
//!
//! ```text
//! lp(tag) || lp(field_1) || lp(field_2) || ...      where lp(x) = u64_be(len(x)) || x
//! ```
//!
//! The first field is always an ASCII domain-separation tag carrying a version (for example
//! `tandem-msg-v1`), so bytes built for one purpose can never be mistaken for bytes built for
//! another. Every field, even a fixed-size one, is length-prefixed: the encoding is injective
//! without having to reason about which fields are fixed. Ids are encoded as their 16 raw
//! UUID bytes, counters as big-endian integers of their natural width.

use uuid::Uuid;

/// A builder for one canonical byte string.
#[derive(Debug)]
pub(crate) struct Canon(Vec<u8>);

impl Canon {
    /// Starts a new encoding whose first field is the domain-separation `tag`.
    pub(crate) fn new(tag: &str) -> Self {
        let mut canon = Self(Vec::with_capacity(160));
        canon.bytes(tag.as_bytes());
        canon
    }

    /// Appends one length-prefixed field.
    pub(crate) fn bytes(&mut self, field: &[u8]) -> &mut Self {
        // usize always fits in u64 on supported targets; saturate rather than panic.
        let len = u64::try_from(field.len()).unwrap_or(u64::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(field);
        self
    }

    /// Appends a UUID as its 16 raw bytes.
    pub(crate) fn uuid(&mut self, id: Uuid) -> &mut Self {
        self.bytes(id.as_bytes())
    }

    /// Appends a `u32` as 4 big-endian bytes.
    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    /// Appends a `u64` as 8 big-endian bytes.
    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    /// The finished encoding.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_length_prefixed_big_endian() {
        let bytes = Canon::new("t").u32(7).bytes(b"ab").finish();
        let mut expected = Vec::new();
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.push(b't');
        expected.extend_from_slice(&4u64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 7]);
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(b"ab");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = Canon::new("t").bytes(b"ab").bytes(b"c").finish();
        let b = Canon::new("t").bytes(b"a").bytes(b"bc").finish();
        assert_ne!(a, b);
    }
}
