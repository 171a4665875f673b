//! The compact binary form of an [`OpRecord`], used by the local journal and the file relay.
//!
//! JSON stays the human-facing form (`serde`); this one is what is stored and exchanged in
//! bulk. A sealed 200-byte message is about 400 bytes here against about 1 KB as JSON, and
//! encoding it is a few copies, with no hex and no escaping.
//!
//! ```text
//! u8       format            0xB1 (never '{', so a reader can tell it from a JSON record)
//! [u8; 32] op id
//! [u8; 16] device            (the stamp's device: a record's device always is)
//! varint   seq
//! varint   stamp wall_ms
//! varint   stamp counter
//! u8       prev              0 = none, 1 = followed by [u8; 32]
//! bytes    scope             varint length + UTF-8 text form ("personal", "shared:<org>")
//! bytes    surface           varint length + UTF-8 text form ("conversation", "registry:<kind>")
//! u8       payload kind      0 = plain, 1 = sealed
//!   plain:  bytes            canonical JSON of the value
//!   sealed: varint key epoch, [u8; 24] nonce, bytes ciphertext (tag included)
//! ```
//!
//! Varints are unsigned LEB128. Decoding is strict: every input has at most one accepted
//! form (minimal varints, canonical JSON, known tags, no trailing bytes), so a record that
//! decodes re-encodes to exactly the bytes read. A decoded record carries the id it claims:
//! run chain verification before trusting it. Decoding never panics, whatever the input.

use uuid::Uuid;

use super::binary::{
    bytes_len, canonical_json_value, put_bytes, put_varint, varint_len, Malformed, Reader,
};
use super::canonical::write_canonical_json;
use super::hlc::Hlc;
use super::op::{OpId, OpPayload, OpRecord, SEALED_NONCE_LEN};
use super::scope::Scope;
use super::surface::Surface;
use crate::domain::ids::{DeviceId, Seq};

/// The first byte of every binary op record.
pub const OP_FORMAT: u8 = 0xB1;

const PREV_NONE: u8 = 0;
const PREV_SOME: u8 = 1;
const PAYLOAD_PLAIN: u8 = 0;
const PAYLOAD_SEALED: u8 = 1;

/// Why bytes are not a binary op record. The message never quotes payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a binary op record: {0}")]
pub struct OpDecodeError(&'static str);

impl From<Malformed> for OpDecodeError {
    fn from(m: Malformed) -> Self {
        Self(m.0)
    }
}

/// Appends the binary form of `op` to `out`.
pub fn encode_op_into(op: &OpRecord, out: &mut Vec<u8>) {
    out.push(OP_FORMAT);
    out.extend_from_slice(op.op_id().as_bytes());
    out.extend_from_slice(op.device().as_uuid().as_bytes());
    put_varint(out, op.seq().get());
    put_varint(out, op.hlc().wall_ms);
    put_varint(out, u64::from(op.hlc().counter));
    match op.prev() {
        None => out.push(PREV_NONE),
        Some(prev) => {
            out.push(PREV_SOME);
            out.extend_from_slice(prev.as_bytes());
        }
    }
    put_bytes(out, op.scope().to_string().as_bytes());
    put_bytes(out, op.surface().to_string().as_bytes());
    match op.payload() {
        OpPayload::Plain(value) => {
            out.push(PAYLOAD_PLAIN);
            let mut json = Vec::new();
            write_canonical_json(value, &mut json);
            put_bytes(out, &json);
        }
        OpPayload::Sealed {
            key_epoch,
            nonce,
            ciphertext,
        } => {
            out.push(PAYLOAD_SEALED);
            put_varint(out, u64::from(*key_epoch));
            out.extend_from_slice(nonce);
            put_bytes(out, ciphertext);
        }
    }
}

/// The binary form of `op`.
pub fn encode_op(op: &OpRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + payload_len_hint(op.payload()));
    encode_op_into(op, &mut out);
    out
}

/// The length of [`encode_op`]'s output for `op`, computed without encoding it (a plain
/// payload is written out to be measured). Batch limits measure ops by it.
pub fn encoded_len(op: &OpRecord) -> usize {
    let prev = match op.prev() {
        None => 1,
        Some(_) => 1 + 32,
    };
    let payload = match op.payload() {
        OpPayload::Plain(value) => {
            let mut json = Vec::new();
            write_canonical_json(value, &mut json);
            1 + bytes_len(json.len())
        }
        OpPayload::Sealed {
            key_epoch,
            ciphertext,
            ..
        } => 1 + varint_len(u64::from(*key_epoch)) + SEALED_NONCE_LEN + bytes_len(ciphertext.len()),
    };
    1 + 32
        + 16
        + varint_len(op.seq().get())
        + varint_len(op.hlc().wall_ms)
        + varint_len(u64::from(op.hlc().counter))
        + prev
        + bytes_len(display_len(op.scope()))
        + bytes_len(display_len(op.surface()))
        + payload
}

/// The length of `value`'s text form, counted without building it.
fn display_len(value: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting never fails, and `Display` impls only fail when the writer does.
    let _ = std::fmt::write(&mut count, format_args!("{value}"));
    count.0
}

fn payload_len_hint(payload: &OpPayload) -> usize {
    match payload {
        OpPayload::Plain(_) => 256,
        OpPayload::Sealed { ciphertext, .. } => ciphertext.len() + SEALED_NONCE_LEN + 8,
    }
}

/// Decodes one whole binary op record.
pub fn decode_op(bytes: &[u8]) -> Result<OpRecord, OpDecodeError> {
    let mut r = Reader::new(bytes);
    if r.byte()? != OP_FORMAT {
        return Err(OpDecodeError("unknown format byte"));
    }
    let op_id = OpId::from_bytes(r.array()?);
    let device = DeviceId::from_uuid(Uuid::from_bytes(r.array()?))
        .map_err(|_| OpDecodeError("nil device"))?;
    let seq = Seq::new(r.varint()?);
    let wall_ms = r.varint()?;
    let counter =
        u32::try_from(r.varint()?).map_err(|_| OpDecodeError("stamp counter out of range"))?;
    let prev = match r.byte()? {
        PREV_NONE => None,
        PREV_SOME => Some(OpId::from_bytes(r.array()?)),
        _ => return Err(OpDecodeError("unknown prev tag")),
    };
    let scope = Scope::parse(r.text()?).map_err(|_| OpDecodeError("invalid scope"))?;
    let surface = Surface::parse(r.text()?).map_err(|_| OpDecodeError("invalid surface"))?;
    let payload = match r.byte()? {
        PAYLOAD_PLAIN => OpPayload::Plain(canonical_json_value(r.bytes()?)?),
        PAYLOAD_SEALED => {
            let key_epoch =
                u32::try_from(r.varint()?).map_err(|_| OpDecodeError("key epoch out of range"))?;
            let nonce: [u8; SEALED_NONCE_LEN] = r.array()?;
            let ciphertext = r.bytes()?.to_vec();
            OpPayload::Sealed {
                key_epoch,
                nonce,
                ciphertext,
            }
        }
        _ => return Err(OpDecodeError("unknown payload tag")),
    };
    if !r.is_empty() {
        return Err(OpDecodeError("trailing bytes"));
    }
    Ok(OpRecord::claimed(
        op_id,
        Hlc::new(wall_ms, counter, device),
        seq,
        prev,
        scope,
        surface,
        payload,
    ))
}

/// The op id a binary record claims, read without decoding the rest.
pub fn claimed_op_id(bytes: &[u8]) -> Result<OpId, OpDecodeError> {
    match bytes {
        [OP_FORMAT, rest @ ..] if rest.len() >= 32 => {
            let mut id = [0; 32];
            id.copy_from_slice(&rest[..32]);
            Ok(OpId::from_bytes(id))
        }
        [OP_FORMAT, ..] => Err(OpDecodeError("truncated")),
        _ => Err(OpDecodeError("unknown format byte")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::domain::oplog::test_support::dev;

    fn plain(seq: u64, prev: Option<OpId>, value: Value) -> OpRecord {
        OpRecord::new(
            Hlc::new(1_700_000_000_000 + seq, 3, dev(0xA)),
            Seq::new(seq),
            prev,
            Scope::Personal,
            Surface::Conversation,
            OpPayload::Plain(value),
        )
        .unwrap()
    }

    fn sealed(ciphertext: Vec<u8>) -> OpRecord {
        OpRecord::new(
            Hlc::new(u64::MAX, u32::MAX, dev(0xB)),
            Seq::new(u64::MAX),
            Some(OpId::from_bytes([9; 32])),
            Scope::shared("acme").unwrap(),
            Surface::registry("agents").unwrap(),
            OpPayload::Sealed {
                key_epoch: u32::MAX,
                nonce: [7; SEALED_NONCE_LEN],
                ciphertext,
            },
        )
        .unwrap()
    }

    #[test]
    fn round_trips_plain_and_sealed_records_exactly() {
        let records = [
            plain(0, None, json!({"b": [1, 2.5, null], "a": "é\n\"x\""})),
            sealed(vec![0xde, 0xad, 0xbe, 0xef]),
            sealed(Vec::new()),
        ];
        for op in records {
            let bytes = encode_op(&op);
            assert_eq!(bytes[0], OP_FORMAT);
            let back = decode_op(&bytes).unwrap();
            assert_eq!(back, op);
            assert_eq!(back.computed_id(), op.op_id());
            assert_eq!(encode_op(&back), bytes);
            assert_eq!(claimed_op_id(&bytes).unwrap(), op.op_id());
            assert_eq!(encoded_len(&op), bytes.len());
        }
    }

    #[test]
    fn encoded_len_counts_every_varint_width() {
        for seq in [0, 1, 127, 128, 16_383, 16_384, u64::MAX / 2, u64::MAX] {
            let prev = (seq > 0).then(|| OpId::from_bytes([3; 32]));
            for len in [0, 1, 127, 128, 300, 20_000] {
                let op = OpRecord::new(
                    Hlc::new(seq, u32::try_from(seq % 300).unwrap(), dev(0xC)),
                    Seq::new(seq),
                    prev,
                    Scope::Personal,
                    Surface::Conversation,
                    OpPayload::Sealed {
                        key_epoch: u32::try_from(seq % 200).unwrap(),
                        nonce: [1; SEALED_NONCE_LEN],
                        ciphertext: vec![0; len],
                    },
                )
                .unwrap();
                assert_eq!(
                    encoded_len(&op),
                    encode_op(&op).len(),
                    "seq {seq}, len {len}"
                );
            }
        }
    }

    #[test]
    fn a_sealed_message_is_less_than_half_its_json_size() {
        let op = sealed(vec![0x55; 266]);
        let binary = encode_op(&op).len();
        let json = serde_json::to_vec(&op).unwrap().len();
        assert!(
            binary * 2 < json,
            "binary {binary} bytes, JSON {json} bytes"
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode_op(&plain(1, Some(OpId::from_bytes([1; 32])), json!({"t": 1})));
        for cut in 0..bytes.len() {
            assert!(decode_op(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn trailing_bytes_other_spellings_and_unknown_tags_are_refused() {
        let op = plain(0, None, json!({"a": 1}));
        let bytes = encode_op(&op);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_op(&trailing), Err(OpDecodeError("trailing bytes")));

        // seq 0 written as a two-byte varint.
        let mut long = bytes[..49].to_vec();
        long.extend_from_slice(&[0x80, 0x00]);
        long.extend_from_slice(&bytes[50..]);
        assert_eq!(
            decode_op(&long),
            Err(OpDecodeError("varint is not minimal"))
        );

        // The JSON payload with a space in it.
        let mut spaced = Vec::new();
        let mut op_bytes = bytes.clone();
        let json_at = op_bytes.len() - br#"{"a":1}"#.len();
        op_bytes.truncate(json_at - 1);
        spaced.extend_from_slice(&op_bytes);
        put_bytes(&mut spaced, br#"{"a": 1}"#);
        assert_eq!(
            decode_op(&spaced),
            Err(OpDecodeError("payload JSON is not canonical"))
        );

        let mut json_record = serde_json::to_vec(&op).unwrap();
        assert_eq!(
            decode_op(&json_record),
            Err(OpDecodeError("unknown format byte"))
        );
        json_record.clear();
        assert!(decode_op(&json_record).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut framed = vec![OP_FORMAT];
            framed.extend_from_slice(&bytes);
            for input in [&bytes[..], &framed[..]] {
                if let Ok(op) = decode_op(input) {
                    prop_assert_eq!(encode_op(&op), input.to_vec());
                }
            }
        }

        #[test]
        fn encoded_len_is_the_encoding_s_length(text in "\\PC{0,300}", seq in 0u64..(1 << 62)) {
            let prev = (seq > 0).then(|| OpId::from_bytes([4; 32]));
            let op = plain(seq, prev, json!({"text": text, "n": seq}));
            prop_assert_eq!(encoded_len(&op), encode_op(&op).len());
        }

        #[test]
        fn any_single_bit_flip_is_refused_or_changes_the_claimed_content(
            flip in 0usize..4096,
            text in "[a-z ]{0,40}",
        ) {
            let op = plain(5, Some(OpId::from_bytes([2; 32])), json!({"text": text}));
            let mut bytes = encode_op(&op);
            let bit = flip % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            if let Ok(changed) = decode_op(&bytes) {
                prop_assert!(changed != op);
            }
        }
    }
}
