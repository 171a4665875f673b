//! Canonical encodings: canonical JSON and the op-id recipe.
//!
//! Every device must derive the same bytes from the same op, or op ids (content addresses),
//! state hashes and checkpoint ids would disagree. This module is the single place those bytes
//! are defined. Changing anything here changes every op id: the golden vectors in the tests pin
//! the format, and a new format needs a new version tag.
//!
//! # Canonical JSON
//!
//! [`canonical_json`] writes a [`serde_json::Value`] as:
//!
//! - objects with their keys sorted by byte order (UTF-8 bytes compared lexicographically),
//!   whatever order the input had, as `{"k":v,...}`;
//! - arrays in their given order, as `[a,b,...]`;
//! - no whitespace anywhere outside strings;
//! - numbers exactly as `serde_json` prints them (integers in decimal, floats in the shortest
//!   form that reads back to the same `f64`, such as `1.5`, `-0.0` or `1.5e+300`);
//! - strings escaped exactly as `serde_json` escapes them: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//!   `\t`, other control characters below U+0020 as `\u00xx` (lowercase hex), everything else
//!   (including non-ASCII and `/`) as raw UTF-8;
//! - `true`, `false`, `null`.
//!
//! Floats read back exactly: this crate builds `serde_json` with its `float_roundtrip`
//! feature, so parsing the shortest printed form of an `f64` gives that same `f64`, and a
//! payload holding any finite float re-encodes to the bytes it was read from. (Without that
//! feature `serde_json`'s float parser may land one ULP away, and such a payload could fail
//! to re-verify after travelling as JSON; a crate linked into the same build cannot turn the
//! feature off, because Cargo features only add.)
//!
//! NaN and infinities need no rejection here: a `serde_json::Value` cannot hold them
//! (`Number::from_f64` refuses them and the parser does not accept them), so every `Value` has
//! a canonical form and the encoder is total.
//!
//! # The op-id recipe
//!
//! With `lp(x) = u64_be(len(x)) || x` (an 8-byte big-endian length, then the bytes; the same
//! framing as the crate's AEAD associated data), the op id is
//!
//! ```text
//! op_id = SHA-256(
//!     lp("tandem-op-v1")          domain-separation tag and recipe version
//!     lp(device)                  16 raw UUID bytes of the authoring device
//!     lp(seq)                     u64 big-endian
//!     lp(prev)                    32 raw bytes of the previous op id, or empty at seq 0
//!     lp(hlc.wall_ms)             u64 big-endian
//!     lp(hlc.counter)             u32 big-endian
//!     lp(hlc.device)              16 raw UUID bytes
//!     lp(scope)                   UTF-8 of "personal" or "shared:<org>"
//!     lp(surface)                 UTF-8 of the surface string, e.g. "registry:agents"
//!     payload
//! )
//! ```
//!
//! where `payload` is, for a plaintext payload,
//!
//! ```text
//!     lp("plain") || lp(canonical_json(value))
//! ```
//!
//! and, for a sealed payload (so the id covers the ciphertext actually stored),
//!
//! ```text
//!     lp("sealed") || lp(key_epoch as u32 big-endian) || lp(nonce, 24 bytes) || lp(ciphertext)
//! ```
//!
//! Everything before `payload` is the *op header encoding* ([`op_header_bytes`]); it is also
//! what a sealing step binds as associated data, so a ciphertext cannot be moved to another op.
//! Every field is length-prefixed, even fixed-size ones, so the encoding is injective without
//! reasoning about widths.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::hlc::Hlc;
use super::op::{OpId, OpPayload};
use super::scope::Scope;
use super::surface::Surface;
use crate::domain::ids::{DeviceId, Seq};

/// The domain-separation tag and version of the op-id recipe.
pub const OP_ID_TAG: &str = "tandem-op-v1";

/// Writes `value` as canonical JSON (see the module docs) and returns the bytes.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_canonical_json(value, &mut out);
    out
}

/// [`canonical_json`] as text. Canonical JSON of a `Value` is UTF-8: strings are copied from
/// UTF-8 and everything else is ASCII.
pub(crate) fn canonical_json_text(value: &Value) -> String {
    String::from_utf8(canonical_json(value)).expect("canonical JSON is UTF-8")
}

/// Appends the canonical JSON of `value` to `out`.
pub fn write_canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_display(out, n),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // serde_json's default map iterates in key order already; sort only if a build
            // with `preserve_order` hands the keys over in insertion order.
            if map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes()) {
                write_members(map.iter(), out);
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                write_members(entries.into_iter(), out);
            }
        }
    }
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, item)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(key, out);
        out.push(b':');
        write_canonical_json(item, out);
    }
    out.push(b'}');
}

/// Appends `value`'s `Display` text without an intermediate `String`.
pub(super) fn write_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Appends the lowercase hex of `bytes`.
pub(super) fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// Writes `s` as a JSON string literal with `serde_json`'s escaping.
pub(super) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Whether a byte needs escaping: control characters, the quote and the backslash.
    const NEEDS_ESCAPE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            table[b] = true;
            b += 1;
        }
        table[b'"' as usize] = true;
        table[b'\\' as usize] = true;
        table
    };
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[usize::from(b)] {
            continue;
        }
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => b"",
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Where a [`Framer`] writes: a buffer that keeps the bytes, or a hash that only digests them.
pub(super) trait FrameSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl FrameSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl FrameSink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// A builder for `lp(field_1) || lp(field_2) || ...`, into a buffer ([`Framer::new`]) or
/// straight into SHA-256 ([`Framer::hashing`]), which never holds the encoding: an op id or a
/// state hash costs no copy of the payload or state it covers.
#[derive(Debug)]
pub(super) struct Framer<S = Vec<u8>>(S);

impl Framer {
    /// Starts an encoding whose first field is the domain-separation `tag`.
    pub(super) fn new(tag: &str) -> Self {
        let mut framer = Self(Vec::with_capacity(192));
        framer.field(tag.as_bytes());
        framer
    }

    /// The finished bytes.
    pub(super) fn finish(self) -> Vec<u8> {
        self.0
    }
}

impl Framer<Sha256> {
    /// Starts hashing an encoding whose first field is the domain-separation `tag`.
    pub(super) fn hashing(tag: &str) -> Self {
        let mut framer = Self::hashing_after(&[]);
        framer.field(tag.as_bytes());
        framer
    }

    /// Starts hashing an encoding that continues `framed`, bytes already framed (a header).
    pub(super) fn hashing_after(framed: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(framed);
        Self(hasher)
    }

    /// SHA-256 of everything framed.
    pub(super) fn digest(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl<S: FrameSink> Framer<S> {
    /// Appends one length-prefixed field.
    pub(super) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        // usize always fits in u64 on supported targets; saturate rather than panic.
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.0.put(&len.to_be_bytes());
        self.0.put(bytes);
        self
    }

    /// Appends `value`'s text form as one length-prefixed field, without building a string.
    /// The value is formatted twice (to count, then to write), so its `Display` must write the
    /// same text each time, as the scope and surface forms do.
    pub(super) fn display_field(&mut self, value: &impl fmt::Display) -> &mut Self {
        /// Counts the bytes a `Display` writes.
        struct Count(u64);
        impl fmt::Write for Count {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 += u64::try_from(s.len()).unwrap_or(u64::MAX);
                Ok(())
            }
        }
        /// Passes the bytes a `Display` writes to a sink.
        struct Put<'a, S>(&'a mut S);
        impl<S: FrameSink> fmt::Write for Put<'_, S> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.put(s.as_bytes());
                Ok(())
            }
        }
        // Neither writer fails, and a `Display` only passes on its writer's errors.
        let mut count = Count(0);
        let _ = fmt::write(&mut count, format_args!("{value}"));
        self.0.put(&count.0.to_be_bytes());
        let _ = fmt::write(&mut Put(&mut self.0), format_args!("{value}"));
        self
    }
}

/// The header of an op, borrowed: every field of the op-id recipe before the payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpHeader<'a> {
    /// The authoring device.
    pub device: DeviceId,
    /// Position in the device's chain.
    pub seq: Seq,
    /// The id of the op before it in the chain.
    pub prev: Option<&'a OpId>,
    /// Its stamp.
    pub hlc: &'a Hlc,
    /// Its scope.
    pub scope: &'a Scope,
    /// Its surface.
    pub surface: &'a Surface,
}

impl OpHeader<'_> {
    /// The header encoding (see [`op_header_bytes`]).
    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut f = Framer::new(OP_ID_TAG);
        self.frame(&mut f);
        f.finish()
    }

    /// The op id of this header followed by `payload`, hashed as it is framed: the same id as
    /// [`op_id_from_header`] over [`OpHeader::bytes`], without building the header.
    pub(super) fn op_id(&self, payload: &OpPayload) -> OpId {
        let mut f = Framer::hashing(OP_ID_TAG);
        self.frame(&mut f);
        frame_op_payload(&mut f, payload);
        OpId::from_bytes(f.digest())
    }

    /// The header fields, after the recipe's tag.
    fn frame<S: FrameSink>(&self, f: &mut Framer<S>) {
        f.field(self.device.as_uuid().as_bytes())
            .field(&self.seq.get().to_be_bytes())
            .field(self.prev.map_or(&[][..], |p| &p.as_bytes()[..]))
            .field(&self.hlc.wall_ms.to_be_bytes())
            .field(&self.hlc.counter.to_be_bytes())
            .field(self.hlc.device.as_uuid().as_bytes())
            .display_field(self.scope)
            .display_field(self.surface);
    }
}

/// The op header encoding: every `lp(...)` field of the op-id recipe before the payload.
pub fn op_header_bytes(
    device: DeviceId,
    seq: Seq,
    prev: Option<&OpId>,
    hlc: &Hlc,
    scope: &Scope,
    surface: &Surface,
) -> Vec<u8> {
    OpHeader {
        device,
        seq,
        prev,
        hlc,
        scope,
        surface,
    }
    .bytes()
}

/// The op id of a header encoding (from [`op_header_bytes`]) followed by `payload`.
pub fn op_id_from_header(header: &[u8], payload: &OpPayload) -> OpId {
    let mut f = Framer::hashing_after(header);
    frame_op_payload(&mut f, payload);
    OpId::from_bytes(f.digest())
}

/// The payload fields of the op-id recipe.
fn frame_op_payload<S: FrameSink>(f: &mut Framer<S>, payload: &OpPayload) {
    match payload {
        OpPayload::Plain(value) => {
            f.field(b"plain").field(&canonical_json(value));
        }
        OpPayload::Sealed {
            key_epoch,
            nonce,
            ciphertext,
        } => {
            f.field(b"sealed")
                .field(&key_epoch.to_be_bytes())
                .field(nonce)
                .field(ciphertext);
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    write_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Decodes lowercase hex; `None` on odd length or any other character (uppercase included, so
/// every byte string has exactly one accepted spelling).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((hex_nibble(pair[0])? << 4) | hex_nibble(pair[1])?))
        .collect()
}

/// Decodes exactly `N` bytes of lowercase hex.
pub(super) fn from_hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *byte = (hex_nibble(pair[0])? << 4) | hex_nibble(pair[1])?;
    }
    Some(out)
}

/// The value of one lowercase hex digit.
fn hex_nibble(c: u8) -> Option<u8> {
    // A table, not a match: op ids are decoded by the hundred thousand from a checkpoint.
    const INVALID: u8 = 0xff;
    const VALUES: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    match VALUES[usize::from(c)] {
        INVALID => None,
        v => Some(v),
    }
}

/// Serde helpers that write byte strings as lowercase hex.
pub(super) mod hex_serde {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    /// Serializes bytes as a lowercase hex string.
    pub(in crate::domain::oplog) fn serialize<S: Serializer>(
        bytes: &impl AsRef<[u8]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(bytes.as_ref()))
    }

    /// Deserializes a lowercase hex string into a byte vector.
    pub(in crate::domain::oplog) fn deserialize_vec<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::from_hex(&s).ok_or_else(|| D::Error::custom("expected lowercase hex"))
    }

    /// Deserializes a lowercase hex string of exactly `N` bytes.
    pub(in crate::domain::oplog) fn deserialize_array<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        super::from_hex_array(&s)
            .ok_or_else(|| D::Error::custom("expected lowercase hex of the right length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::test_support::arb_json;
    use proptest::prelude::*;
    use serde_json::json;

    fn text(v: &Value) -> String {
        canonical_json_text(v)
    }

    #[test]
    fn keys_are_sorted_and_whitespace_removed() {
        let v: Value =
            serde_json::from_str(r#"{ "b": 1, "a": [ true, null, {"z": "x", "y": 2.5} ] }"#)
                .unwrap();
        assert_eq!(text(&v), r#"{"a":[true,null,{"y":2.5,"z":"x"}],"b":1}"#);
    }

    #[test]
    fn key_order_is_byte_order() {
        // 'B' (0x42) < '_' (0x5f) < 'a' (0x61) < 'é' (0xc3 0xa9); "a" < "aa".
        let v = json!({"é": 1, "aa": 2, "a": 3, "_": 4, "B": 5});
        assert_eq!(text(&v), r#"{"B":5,"_":4,"a":3,"aa":2,"é":1}"#);
    }

    #[test]
    fn numbers_print_as_serde_json_prints_them() {
        let v: Value = serde_json::from_str(
            "[1, -0, 1.0, 1e2, 1.5e300, 18446744073709551615, -9223372036854775808, 0.1]",
        )
        .unwrap();
        assert_eq!(
            text(&v),
            "[1,-0.0,1.0,100.0,1.5e+300,18446744073709551615,-9223372036854775808,0.1]"
        );
        // The canonical form reads back to itself.
        let again: Value = serde_json::from_slice(&canonical_json(&v)).unwrap();
        assert_eq!(canonical_json(&again), canonical_json(&v));
    }

    #[test]
    fn strings_escape_like_serde_json() {
        let s = "quote\" back\\ nl\n cr\r tab\t bs\u{8} ff\u{c} nul\u{0} us\u{1f} del\u{7f} é / ☃";
        let v = Value::String(s.into());
        assert_eq!(text(&v), serde_json::to_string(s).unwrap());
        assert!(text(&v).contains("\\u0000") && text(&v).contains("\\u001f"));
    }

    #[test]
    fn non_finite_floats_cannot_reach_the_encoder() {
        assert!(serde_json::Number::from_f64(f64::NAN).is_none());
        assert!(serde_json::Number::from_f64(f64::INFINITY).is_none());
        assert!(serde_json::from_str::<Value>("NaN").is_err());
        assert!(serde_json::from_str::<Value>("[Infinity]").is_err());
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00abff").unwrap(), vec![0x00, 0xab, 0xff]);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("AB").is_none());
        assert!(from_hex("zz").is_none());
        assert_eq!(from_hex_array::<2>("0102"), Some([1, 2]));
        assert_eq!(from_hex_array::<2>("010203"), None);
    }

    #[test]
    fn framer_length_prefixes_every_field() {
        let mut f = Framer::new("t");
        f.field(b"ab").field(b"");
        assert_eq!(
            f.finish(),
            [
                &[0, 0, 0, 0, 0, 0, 0, 1][..],
                b"t",
                &[0, 0, 0, 0, 0, 0, 0, 2],
                b"ab",
                &[0; 8]
            ]
            .concat()
        );
    }

    #[test]
    fn a_hashing_framer_digests_what_a_buffer_framer_builds() {
        let scope = Scope::shared("acme").unwrap();
        let surface = Surface::registry("agents").unwrap();
        let mut buffer = Framer::new("t");
        buffer
            .field(b"ab")
            .field(b"")
            .display_field(&scope)
            .display_field(&surface);
        let bytes = buffer.finish();
        let mut hashing = Framer::hashing("t");
        hashing
            .field(b"ab")
            .field(b"")
            .display_field(&scope)
            .display_field(&surface);
        assert_eq!(hashing.digest(), <[u8; 32]>::from(Sha256::digest(&bytes)));
        // A text field is framed as its string form would be.
        let mut by_string = Framer::new("t");
        by_string
            .field(b"ab")
            .field(b"")
            .field(b"shared:acme")
            .field(b"registry:agents");
        assert_eq!(bytes, by_string.finish());
        // Hashing after framed bytes continues them.
        let mut after = Framer::hashing_after(&bytes[..9]);
        after
            .field(b"ab")
            .field(b"")
            .display_field(&scope)
            .display_field(&surface);
        assert_eq!(after.digest(), <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The canonical form is valid JSON, equal to the input, and stable when re-encoded.
        #[test]
        fn canonical_json_round_trips(v in arb_json()) {
            let bytes = canonical_json(&v);
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(&canonical_json(&back), &bytes);
            // With serde_json's sorted maps, compact output matches byte for byte.
            prop_assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
        }

        /// Strings escape exactly as `serde_json` escapes them, wherever the bytes to escape
        /// fall (runs of 0 to 40 clean bytes between them).
        #[test]
        fn strings_escape_like_serde_json_at_every_offset(
            parts in prop::collection::vec(
                ("[a-z é☃/]{0,40}", prop::sample::select(vec!["\"", "\\", "\n", "\u{0}", "\u{1f}", "\u{7f}", ""])),
                0..12,
            )
        ) {
            let s: String = parts.iter().flat_map(|(clean, odd)| [clean.as_str(), odd]).collect();
            let mut out = Vec::new();
            write_json_string(&s, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }
}
