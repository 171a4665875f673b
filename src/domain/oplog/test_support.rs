//! Test-only generators: multi-device op sets for the fold and checkpoint properties, and
//! arbitrary JSON values for the canonical encoding's.

use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::author::OpAuthor;
use super::intent::{Intent, IntentId, IntentStatus};
use super::op::{OpPayload, OpRecord};
use super::scope::Scope;
use super::surface::Surface;
use crate::domain::ids::{DeviceId, Epoch, RunId};

/// Device `n` (n > 0).
pub(super) fn dev(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(n)).expect("non-nil")
}

/// `n` personal user turns in conversation `c` authored by device `device`, turn `i` saying
/// `text(i)`.
pub(super) fn user_turns(device: u128, n: usize, text: impl Fn(usize) -> String) -> Vec<OpRecord> {
    let mut author = OpAuthor::new(dev(device));
    (0..n)
        .map(|i| {
            let payload = json!({"conversation_id": "c", "role": "user", "text": text(i)});
            author
                .append(
                    1,
                    Scope::Personal,
                    Surface::Conversation,
                    OpPayload::Plain(payload),
                )
                .expect("authoring a valid op")
        })
        .collect()
}

/// A valid chain of `n` run-surface ops authored by `device`, the first stamped at
/// `first_wall_ms` and each later one a millisecond after.
pub(super) fn chain(device: DeviceId, n: usize, first_wall_ms: u64) -> Vec<OpRecord> {
    let mut author = OpAuthor::new(device);
    (0..n)
        .map(|i| {
            author
                .append(
                    first_wall_ms + i as u64,
                    Scope::Personal,
                    Surface::Run,
                    OpPayload::Plain(json!({ "i": i })),
                )
                .expect("authoring a valid op")
        })
        .collect()
}

/// Run `n` (n > 0).
pub(super) fn run(n: u128) -> RunId {
    RunId::from_uuid(Uuid::from_u128(n)).expect("non-nil")
}

/// What one generated op says, before it is authored.
#[derive(Debug, Clone)]
pub(super) enum OpSpec {
    Turn {
        role: u8,
        text: u8,
    },
    Fact {
        key: u8,
        value: u8,
        deleted: bool,
    },
    Pref {
        key: u8,
        value: u8,
        shared: bool,
    },
    Command {
        text: u8,
    },
    Intent {
        intent: u8,
        run: u8,
        status: u8,
        epoch: u8,
    },
}

pub(super) fn arb_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        (0u8..3, 0u8..3).prop_map(|(role, text)| OpSpec::Turn { role, text }),
        (0u8..3, 0u8..4, any::<bool>()).prop_map(|(key, value, deleted)| OpSpec::Fact {
            key,
            value,
            deleted
        }),
        (0u8..2, 0u8..4, any::<bool>()).prop_map(|(key, value, shared)| OpSpec::Pref {
            key,
            value,
            shared
        }),
        (0u8..3).prop_map(|text| OpSpec::Command { text }),
        (0u8..2, 0u8..2, 0u8..5, 0u8..3).prop_map(|(intent, run, status, epoch)| OpSpec::Intent {
            intent,
            run,
            status,
            epoch
        }),
    ]
}

fn to_op(spec: &OpSpec) -> (Scope, Surface, Value) {
    match *spec {
        OpSpec::Turn { role, text } => {
            let role = ["user", "assistant", "system"][usize::from(role)];
            // Identical turns on purpose: they must stay distinct entries.
            let payload =
                json!({"conversation_id": "c1", "role": role, "text": format!("t{text}")});
            (Scope::Personal, Surface::Conversation, payload)
        }
        OpSpec::Fact {
            key,
            value,
            deleted,
        } => {
            let mut payload = json!({"key": format!("f{key}"), "body": value});
            if deleted {
                payload["deleted"] = json!(true);
            }
            (Scope::Personal, Surface::Knowledge, payload)
        }
        OpSpec::Pref { key, value, shared } => {
            let scope = if shared {
                Scope::shared("acme").expect("valid org")
            } else {
                Scope::Personal
            };
            let payload = json!({"key": format!("p{key}"), "value": value});
            (scope, Surface::Preference, payload)
        }
        OpSpec::Command { text } => (
            Scope::Personal,
            Surface::Command,
            json!(format!("ls {text}")),
        ),
        OpSpec::Intent {
            intent,
            run: r,
            status,
            epoch,
        } => {
            let status = match status {
                0 => IntentStatus::Pending,
                1 => IntentStatus::Dispatched {
                    epoch: Epoch::new(u64::from(epoch)),
                },
                2 => IntentStatus::Committed,
                3 => IntentStatus::Failed,
                _ => IntentStatus::Cancelled,
            };
            let intent = Intent {
                intent_id: IntentId::parse(&format!("i{intent}")).expect("valid id"),
                run_id: run(u128::from(r) + 1),
                status,
            };
            (Scope::Personal, Surface::Intent, intent.to_payload())
        }
    }
}

/// One device's chain: specs with the physical time step before each.
pub(super) type ChainSpec = Vec<(u8, OpSpec)>;

/// Up to three devices, each with up to `max_ops` ops.
pub(super) fn arb_chains(max_ops: usize) -> impl Strategy<Value = Vec<ChainSpec>> {
    prop::collection::vec(
        prop::collection::vec((0u8..4, arb_spec()), 0..=max_ops),
        1..=3,
    )
}

/// Authors the chains: device `i + 1` writes chain `i`; physical time advances by the steps
/// (often by zero, so stamps collide on wall time and the counter and device break ties).
pub(super) fn author(chains: &[ChainSpec]) -> Vec<Vec<OpRecord>> {
    chains
        .iter()
        .enumerate()
        .map(|(i, chain)| {
            let mut a = OpAuthor::new(dev(i as u128 + 1));
            let mut now = 1_000;
            chain
                .iter()
                .map(|(step, spec)| {
                    now += u64::from(*step);
                    let (scope, surface, payload) = to_op(spec);
                    a.append(now, scope, surface, OpPayload::Plain(payload))
                        .expect("generated payloads are valid")
                })
                .collect()
        })
        .collect()
}

/// Arbitrary JSON values: every kind of leaf, keys that need escaping and non-ASCII.
pub(super) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        // serde_json is built with float_roundtrip, so any finite float reads back exactly.
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (-1_000_000i32..1_000_000).prop_map(|k| Value::from(f64::from(k) / 8.0)),
        "[\\PC\\x00-\\x1f\"\\\\/é☃]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-c\"\\\\\\x00-\\x1f é☃]{0,3}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
