//! Ops: the content-addressed, hash-chained records of the per-device oplog.
//!
//! An [`OpRecord`] is one entry of one device's chain: its `seq` is contiguous from 0 per
//! device, `prev` names the op at `seq - 1` (and is absent only at seq 0), and its [`OpId`] is
//! the SHA-256 content address defined in the `canonical` module, over the header and the
//! payload bytes as stored. For a sealed payload the id therefore covers the ciphertext, so
//! the relay can check ids without ever seeing plaintext.
//!
//! [`OpRecord::new`] computes the id; a record can only be built with a matching id.
//! Deserialized records carry the id they claim: run `verify_chain` before trusting one.
//!
//! A record's `device` is always its stamp's device (`hlc.device`): `new` derives it, and
//! verification refuses records where the two differ.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canonical::{from_hex_array, hex_serde, to_hex, OpHeader};
use super::hlc::Hlc;
use super::payload::PayloadError;
use super::scope::Scope;
use super::surface::Surface;
use crate::domain::ids::{DeviceId, IdError, Seq};

/// Length of a sealed payload's nonce (XChaCha20-Poly1305, 192 bits).
pub const SEALED_NONCE_LEN: usize = 24;

/// The content address of an op: a SHA-256 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct OpId([u8; 32]);

impl<'de> Deserialize<'de> for OpId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::domain::ids::deserialize_parsed(
            d,
            "an op id (64 lowercase hex characters)",
            Self::parse,
        )
    }
}

impl OpId {
    /// Wraps a digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() != 64 {
            return Err(IdError {
                kind: "op",
                reason: "must be 64 hex characters",
            });
        }
        from_hex_array(s).map(Self).ok_or(IdError {
            kind: "op",
            reason: "only lowercase hex digits are allowed",
        })
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({self})")
    }
}

impl FromStr for OpId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for OpId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OpId> for String {
    fn from(id: OpId) -> String {
        id.to_string()
    }
}

/// An op's payload as stored and hashed.
///
/// In JSON: `{"plain": <value>}` or
/// `{"sealed": {"key_epoch": n, "nonce": "<48 hex>", "ciphertext": "<hex>"}}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpPayload {
    /// Cleartext JSON (a personal-scope op on a device without E2E, or an op after opening).
    Plain(Value),
    /// Ciphertext sealed with the scope key (sealing happens in the crypto module).
    Sealed {
        /// The scope-key epoch the payload was sealed under.
        key_epoch: u32,
        /// The AEAD nonce.
        #[serde(
            serialize_with = "hex_serde::serialize",
            deserialize_with = "hex_serde::deserialize_array"
        )]
        nonce: [u8; SEALED_NONCE_LEN],
        /// The ciphertext including its authentication tag.
        #[serde(
            serialize_with = "hex_serde::serialize",
            deserialize_with = "hex_serde::deserialize_vec"
        )]
        ciphertext: Vec<u8>,
    },
}

impl OpPayload {
    /// The cleartext value, if the payload is not sealed.
    pub fn as_plain(&self) -> Option<&Value> {
        match self {
            Self::Plain(v) => Some(v),
            Self::Sealed { .. } => None,
        }
    }
}

// Payloads are user data: keep them out of logs and `Debug` output.
impl fmt::Debug for OpPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Sealed {
                key_epoch,
                ciphertext,
                ..
            } => write!(
                f,
                "Sealed {{ key_epoch: {key_epoch}, ciphertext: <{} bytes> }}",
                ciphertext.len()
            ),
        }
    }
}

/// Why an op could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// Seq 0 starts a chain and must have no `prev`.
    #[error("the op at seq 0 must not name a previous op")]
    PrevAtGenesis,
    /// Every op after seq 0 must name its predecessor.
    #[error("the op at seq {seq} must name the previous op")]
    MissingPrev {
        /// The op's seq.
        seq: Seq,
    },
    /// The plaintext payload does not have the shape its surface requires.
    #[error("payload refused for surface {surface}: {source}")]
    InvalidPayload {
        /// The surface.
        surface: Surface,
        /// What was wrong (never the payload content).
        source: PayloadError,
    },
}

/// One op of one device's chain. See the module docs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OpRecord {
    op_id: OpId,
    hlc: Hlc,
    device: DeviceId,
    seq: Seq,
    prev: Option<OpId>,
    scope: Scope,
    surface: Surface,
    payload: OpPayload,
}

impl OpRecord {
    /// Builds an op authored by `hlc.device` at `seq` and computes its id.
    ///
    /// `prev` must be `None` exactly when `seq` is 0.
    pub fn new(
        hlc: Hlc,
        seq: Seq,
        prev: Option<OpId>,
        scope: Scope,
        surface: Surface,
        payload: OpPayload,
    ) -> Result<Self, OpError> {
        match (seq.get(), prev) {
            (0, Some(_)) => return Err(OpError::PrevAtGenesis),
            (n, None) if n > 0 => return Err(OpError::MissingPrev { seq }),
            _ => {}
        }
        let mut op = Self::claimed(
            OpId::from_bytes([0; 32]),
            hlc,
            seq,
            prev,
            scope,
            surface,
            payload,
        );
        op.op_id = op.computed_id();
        Ok(op)
    }

    /// A record as decoded from a stored or exchanged form: it carries the id it claims,
    /// unchecked (like a deserialized one). Its device is the stamp's.
    pub(crate) fn claimed(
        op_id: OpId,
        hlc: Hlc,
        seq: Seq,
        prev: Option<OpId>,
        scope: Scope,
        surface: Surface,
        payload: OpPayload,
    ) -> Self {
        Self {
            op_id,
            hlc,
            device: hlc.device,
            seq,
            prev,
            scope,
            surface,
            payload,
        }
    }

    /// Gives up the record for its scope, surface and payload.
    pub(crate) fn into_parts(self) -> (Scope, Surface, OpPayload) {
        (self.scope, self.surface, self.payload)
    }

    /// The id this record claims (computed by `new`, or as read from the wire).
    pub fn op_id(&self) -> OpId {
        self.op_id
    }

    /// The id recomputed from the header and payload; equals [`OpRecord::op_id`] unless the
    /// record was tampered with (or opened, see [`OpRecord::opened`]).
    pub fn computed_id(&self) -> OpId {
        self.header().op_id(&self.payload)
    }

    /// The op header encoding (the recipe's fields before the payload), which sealing binds as
    /// associated data.
    pub fn header_bytes(&self) -> Vec<u8> {
        self.header().bytes()
    }

    fn header(&self) -> OpHeader<'_> {
        OpHeader {
            device: self.device,
            seq: self.seq,
            prev: self.prev.as_ref(),
            hlc: &self.hlc,
            scope: &self.scope,
            surface: &self.surface,
        }
    }

    /// The HLC stamp.
    pub fn hlc(&self) -> Hlc {
        self.hlc
    }

    /// The authoring device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Position in the device's chain, from 0.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The id of the op at `seq - 1`; `None` at seq 0.
    pub fn prev(&self) -> Option<OpId> {
        self.prev
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The surface.
    pub fn surface(&self) -> &Surface {
        &self.surface
    }

    /// The payload as stored.
    pub fn payload(&self) -> &OpPayload {
        &self.payload
    }

    /// The same op with its sealed payload replaced by the decrypted `plaintext`, for folding.
    ///
    /// The op id is kept (it names the op everywhere, and it covers the ciphertext), so an
    /// opened record no longer re-verifies: verify the sealed record first, then open it.
    #[must_use]
    pub fn opened(mut self, plaintext: Value) -> Self {
        self.payload = OpPayload::Plain(plaintext);
        self
    }

    /// A copy of this record opened to `plaintext` (see [`OpRecord::opened`]), without
    /// copying the sealed payload first.
    #[must_use]
    pub fn opened_copy(&self, plaintext: Value) -> Self {
        Self {
            scope: self.scope.clone(),
            surface: self.surface.clone(),
            payload: OpPayload::Plain(plaintext),
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::canonical::{op_id_from_header, Framer};
    use crate::domain::oplog::test_support::dev;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    fn device_a() -> DeviceId {
        DeviceId::parse("018f2b6e-0000-7000-8000-00000000000a").unwrap()
    }

    fn genesis(payload: OpPayload) -> OpRecord {
        OpRecord::new(
            Hlc::new(1_700_000_000_000, 0, device_a()),
            Seq::new(0),
            None,
            Scope::Personal,
            Surface::Conversation,
            payload,
        )
        .unwrap()
    }

    fn plain_genesis() -> OpRecord {
        genesis(OpPayload::Plain(json!({
            "conversation_id": "c1",
            "role": "user",
            "text": "hello, world"
        })))
    }

    fn sealed_second(prev: OpId) -> OpRecord {
        OpRecord::new(
            Hlc::new(1_700_000_000_005, 2, device_a()),
            Seq::new(1),
            Some(prev),
            Scope::shared("acme").unwrap(),
            Surface::registry("agents").unwrap(),
            OpPayload::Sealed {
                key_epoch: 3,
                nonce: [7; SEALED_NONCE_LEN],
                ciphertext: vec![0xde, 0xad, 0xbe, 0xef],
            },
        )
        .unwrap()
    }

    /// Golden vectors: computed once from the recipe and frozen. If one of these changes, the
    /// op-id format changed and every stored op id broke; bump the version tag instead.
    const GOLDEN_PLAIN: &str = "a0b22bfedb757ee41f4af2a702804f4453f6dffa427184c82a5b93d0dd80b13f";
    const GOLDEN_SEALED: &str = "bdd4cbcae56ade8ff169b8e7b4bdcf09295da92b4ce7a52b97e9bbb9903333bb";

    #[test]
    fn golden_vector_plain_payload() {
        assert_eq!(plain_genesis().op_id().to_string(), GOLDEN_PLAIN);
    }

    #[test]
    fn golden_vector_sealed_payload() {
        let op = sealed_second(OpId::parse(GOLDEN_PLAIN).unwrap());
        assert_eq!(op.op_id().to_string(), GOLDEN_SEALED);
    }

    /// The public two-step form (header bytes, then the payload) gives the id the record
    /// computes in one pass (the one the golden vectors pin).
    #[test]
    fn the_id_over_header_bytes_is_the_computed_id() {
        let plain = plain_genesis();
        let sealed = sealed_second(plain.op_id());
        for op in [plain, sealed] {
            assert_eq!(
                op_id_from_header(&op.header_bytes(), &op.payload),
                op.op_id()
            );
        }
    }

    #[test]
    fn key_order_in_the_input_json_does_not_change_the_id() {
        let reordered: Value =
            serde_json::from_str(r#"{"text":"hello, world","role":"user","conversation_id":"c1"}"#)
                .unwrap();
        let spaced: Value = serde_json::from_str(
            "{ \"role\" : \"user\",\n \"conversation_id\": \"c1\", \"text\": \"hello, world\" }",
        )
        .unwrap();
        assert_eq!(
            genesis(OpPayload::Plain(reordered)).op_id().to_string(),
            GOLDEN_PLAIN
        );
        assert_eq!(
            genesis(OpPayload::Plain(spaced)).op_id().to_string(),
            GOLDEN_PLAIN
        );
    }

    /// The recipe in the `canonical` module docs, spelled out byte by byte.
    #[test]
    fn the_documented_recipe_is_the_implemented_one() {
        let op = plain_genesis();
        let mut f = Framer::new("tandem-op-v1");
        f.field(device_a().as_uuid().as_bytes())
            .field(&0u64.to_be_bytes())
            .field(b"")
            .field(&1_700_000_000_000u64.to_be_bytes())
            .field(&0u32.to_be_bytes())
            .field(device_a().as_uuid().as_bytes())
            .field(b"personal")
            .field(b"conversation")
            .field(b"plain")
            .field(br#"{"conversation_id":"c1","role":"user","text":"hello, world"}"#);
        let digest: [u8; 32] = Sha256::digest(f.finish()).into();
        assert_eq!(op.op_id(), OpId::from_bytes(digest));

        let sealed = sealed_second(op.op_id());
        let mut f = Framer::new("tandem-op-v1");
        f.field(device_a().as_uuid().as_bytes())
            .field(&1u64.to_be_bytes())
            .field(op.op_id().as_bytes())
            .field(&1_700_000_000_005u64.to_be_bytes())
            .field(&2u32.to_be_bytes())
            .field(device_a().as_uuid().as_bytes())
            .field(b"shared:acme")
            .field(b"registry:agents")
            .field(b"sealed")
            .field(&3u32.to_be_bytes())
            .field(&[7; 24])
            .field(&[0xde, 0xad, 0xbe, 0xef]);
        let digest: [u8; 32] = Sha256::digest(f.finish()).into();
        assert_eq!(sealed.op_id(), OpId::from_bytes(digest));
    }

    #[test]
    fn every_header_field_and_the_payload_change_the_id() {
        let base = plain_genesis();
        let other = |hlc: Hlc, scope: Scope, surface: Surface, payload: Value| {
            OpRecord::new(
                hlc,
                Seq::new(0),
                None,
                scope,
                surface,
                OpPayload::Plain(payload),
            )
            .unwrap()
            .op_id()
        };
        let hlc = base.hlc();
        let payload = base.payload().as_plain().unwrap().clone();
        let ids = [
            other(
                Hlc::new(hlc.wall_ms + 1, 0, hlc.device),
                Scope::Personal,
                Surface::Conversation,
                payload.clone(),
            ),
            other(
                Hlc::new(hlc.wall_ms, 1, hlc.device),
                Scope::Personal,
                Surface::Conversation,
                payload.clone(),
            ),
            other(
                Hlc::new(hlc.wall_ms, 0, dev(9)),
                Scope::Personal,
                Surface::Conversation,
                payload.clone(),
            ),
            other(
                hlc,
                Scope::shared("acme").unwrap(),
                Surface::Conversation,
                payload.clone(),
            ),
            other(hlc, Scope::Personal, Surface::Trajectory, payload),
            other(
                hlc,
                Scope::Personal,
                Surface::Conversation,
                json!({"text": "hello"}),
            ),
        ];
        for id in ids {
            assert_ne!(id, base.op_id());
        }
        let next = |prev| {
            OpRecord::new(
                hlc,
                Seq::new(1),
                Some(prev),
                Scope::Personal,
                Surface::Run,
                OpPayload::Plain(json!(1)),
            )
            .unwrap()
            .op_id()
        };
        assert_ne!(next(base.op_id()), next(OpId::from_bytes([1; 32])));
    }

    #[test]
    fn seq_and_prev_must_agree() {
        let h = Hlc::new(1, 0, dev(1));
        let p = || OpPayload::Plain(json!(null));
        assert_eq!(
            OpRecord::new(
                h,
                Seq::new(0),
                Some(OpId::from_bytes([0; 32])),
                Scope::Personal,
                Surface::Run,
                p()
            ),
            Err(OpError::PrevAtGenesis)
        );
        assert_eq!(
            OpRecord::new(h, Seq::new(3), None, Scope::Personal, Surface::Run, p()),
            Err(OpError::MissingPrev { seq: Seq::new(3) })
        );
    }

    #[test]
    fn op_ids_parse_strictly() {
        let id = plain_genesis().op_id();
        assert_eq!(OpId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(
            OpId::parse("abc").unwrap_err().reason,
            "must be 64 hex characters"
        );
        let upper = id.to_string().to_uppercase();
        assert!(OpId::parse(&upper).is_err() || upper == id.to_string());
        assert!(OpId::parse(&"g".repeat(64)).is_err());
        assert!(format!("{id:?}").starts_with("OpId("));
    }

    #[test]
    fn records_round_trip_through_json_and_keep_their_id() {
        let a = plain_genesis();
        let b = sealed_second(a.op_id());
        for op in [a, b] {
            let json = serde_json::to_string(&op).unwrap();
            let back: OpRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back, op);
            assert_eq!(back.computed_id(), op.op_id());
        }
        let sealed = serde_json::to_value(sealed_second(OpId::from_bytes([0; 32]))).unwrap();
        assert_eq!(sealed["payload"]["sealed"]["ciphertext"], json!("deadbeef"));
        assert_eq!(sealed["payload"]["sealed"]["nonce"], json!("07".repeat(24)));
        assert_eq!(sealed["scope"], json!("shared:acme"));
        assert_eq!(sealed["surface"], json!("registry:agents"));
    }

    #[test]
    fn malformed_sealed_payloads_are_refused() {
        let bad_nonce = json!({"sealed": {"key_epoch": 1, "nonce": "0102", "ciphertext": "00"}});
        assert!(serde_json::from_value::<OpPayload>(bad_nonce).is_err());
        let bad_ct =
            json!({"sealed": {"key_epoch": 1, "nonce": "00".repeat(24), "ciphertext": "XYZ"}});
        assert!(serde_json::from_value::<OpPayload>(bad_ct).is_err());
    }

    #[test]
    fn debug_never_shows_payload_content() {
        let op = plain_genesis();
        assert!(!format!("{op:?}").contains("hello"));
        let sealed = sealed_second(op.op_id());
        assert!(format!("{sealed:?}").contains("<4 bytes>"));
    }

    #[test]
    fn opened_records_keep_their_id_but_no_longer_verify() {
        let sealed = sealed_second(OpId::from_bytes([0; 32]));
        let id = sealed.op_id();
        let opened = sealed.opened(json!({"key": "k"}));
        assert_eq!(opened.op_id(), id);
        assert_ne!(opened.computed_id(), id);
        assert_eq!(opened.payload().as_plain(), Some(&json!({"key": "k"})));
    }
}
