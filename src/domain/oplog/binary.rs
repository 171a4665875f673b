//! Pieces shared by the binary encodings of this module (op records and the state layout):
//! unsigned LEB128 varints in their minimal form, length-prefixed bytes, a strict reader, and
//! canonical JSON text checked on the way in.

use serde_json::Value;

use super::canonical_check::check_canonical_json;

/// Why binary input does not decode: a fixed description, never quoting the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) &'static str);

/// `v` as a minimal unsigned LEB128 varint: the bytes, and how many of them it takes.
pub(super) fn varint_bytes(mut v: u64) -> ([u8; 10], usize) {
    let mut bytes = [0; 10];
    let mut len = 0;
    while v >= 0x80 {
        // Truncation is the point: the low seven bits, with the continuation bit set.
        bytes[len] = (v as u8) | 0x80;
        len += 1;
        v >>= 7;
    }
    bytes[len] = v as u8;
    (bytes, len + 1)
}

/// Appends `v` as a minimal unsigned LEB128 varint.
pub(super) fn put_varint(out: &mut Vec<u8>, v: u64) {
    let (bytes, len) = varint_bytes(v);
    out.extend_from_slice(&bytes[..len]);
}

/// Appends `bytes` after their length as a varint.
pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Bytes [`put_varint`] writes for `v`.
pub(super) fn varint_len(v: u64) -> usize {
    let bits = 64 - v.max(1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes [`put_bytes`] writes for `len` bytes.
pub(super) fn bytes_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

/// The value of canonical JSON text, refusing text that is not JSON or not in canonical form
/// (so a value has exactly one accepted spelling). The form is checked in one pass before the
/// text is parsed, never by encoding the value again.
pub(super) fn canonical_json_value(json: &[u8]) -> Result<Value, Malformed> {
    const INVALID: Malformed = Malformed("invalid JSON payload");
    if check_canonical_json(json).is_err() {
        // Only to say which of the two it is.
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok();
        return Err(if is_json {
            Malformed("payload JSON is not canonical")
        } else {
            INVALID
        });
    }
    serde_json::from_slice(json).map_err(|_| INVALID)
}

/// Why a payload's bytes were refused by [`check_canonical`] or [`canonical_text`].
pub(super) const NOT_CANONICAL: Malformed = Malformed("payload is not canonical JSON");

/// Refuses bytes that are not canonical JSON (the same bytes [`canonical_json_value`]
/// refuses, without parsing them).
pub(super) fn check_canonical(json: &[u8]) -> Result<(), Malformed> {
    check_canonical_json(json).map_err(|_| NOT_CANONICAL)
}

/// Canonical JSON text, refusing bytes that are not (see [`check_canonical`]).
pub(super) fn canonical_text(json: &[u8]) -> Result<&str, Malformed> {
    check_canonical(json)?;
    std::str::from_utf8(json).map_err(|_| NOT_CANONICAL)
}

/// Reads binary input front to back; every read fails cleanly past the end.
#[derive(Clone)]
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Whether everything was read.
    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// How many bytes are left.
    pub(super) fn len(&self) -> usize {
        self.rest.len()
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next byte.
    pub(super) fn byte(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    /// The next `N` bytes, as an array.
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A minimal varint of at most 64 bits.
    pub(super) fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(Malformed("varint overflows 64 bits"));
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(Malformed("varint is not minimal"));
                }
                return Ok(value);
            }
        }
        Err(Malformed("varint overflows 64 bits"))
    }

    /// A varint count of items that each take at least `min_item_len` bytes: refused when
    /// the input left could not hold them, so a forged count never sizes an allocation.
    pub(super) fn count(&mut self, min_item_len: usize) -> Result<usize, Malformed> {
        let n = usize::try_from(self.varint()?).map_err(|_| Malformed("truncated"))?;
        if n.saturating_mul(min_item_len.max(1)) > self.rest.len() {
            return Err(Malformed("truncated"));
        }
        Ok(n)
    }

    /// Length-prefixed bytes.
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Malformed("truncated"))?;
        self.take(len)
    }

    /// Length-prefixed UTF-8 text.
    pub(super) fn text(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width_and_only_in_minimal_form() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.is_empty());
        }
        assert_eq!(
            Reader::new(&[0x80, 0x00]).varint(),
            Err(Malformed("varint is not minimal"))
        );
        assert_eq!(
            Reader::new(&[0xff; 10]).varint(),
            Err(Malformed("varint overflows 64 bits"))
        );
        assert_eq!(Reader::new(&[0x80]).varint(), Err(Malformed("truncated")));
    }

    #[test]
    fn a_count_larger_than_the_input_could_hold_is_refused() {
        let mut out = Vec::new();
        put_varint(&mut out, 3);
        out.extend_from_slice(&[0; 6]);
        assert_eq!(Reader::new(&out).count(2), Ok(3));
        assert_eq!(Reader::new(&out).count(3), Err(Malformed("truncated")));
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert_eq!(Reader::new(&huge).count(0), Err(Malformed("truncated")));
    }

    #[test]
    fn canonical_json_has_one_accepted_spelling() {
        assert_eq!(
            canonical_json_value(br#"{"a":1,"b":[true]}"#),
            Ok(serde_json::json!({"a": 1, "b": [true]}))
        );
        for other in [&br#"{"b":[true],"a":1}"#[..], br#"{"a": 1}"#, b"{"] {
            assert!(canonical_json_value(other).is_err(), "{other:?}");
        }
    }
}
