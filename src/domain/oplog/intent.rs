//! The intent ledger: which runs were requested, dispatched and finished.
//!
//! An [`Intent`] is a statement about one intent (`intent_id`) of one run (`run_id`): its
//! status is `pending`, `dispatched` at a lease epoch, or one of the terminal statuses
//! `committed`, `failed`, `cancelled`. Intents travel as `intent`-surface ops with the payload
//! `{"intent_id": "...", "run_id": "<uuid>", "status": "pending" | "dispatched" | "committed" |
//! "failed" | "cancelled", "epoch": n}` (`epoch` only, and always, with `dispatched`).
//!
//! # Resolution
//!
//! The ledger keeps every intent op it has folded, and an intent's view is a pure function of
//! that set: its ops are replayed in `(hlc, op_id)` order through the transition rules below.
//! Arrival order therefore never matters, and re-folding an op changes nothing.
//!
//! | from \ to          | pending | dispatched{e2}                      | committed | failed / cancelled |
//! |--------------------|---------|-------------------------------------|-----------|--------------------|
//! | (none)             | accept  | accept                              | accept    | accept             |
//! | pending            | (same)  | accept unless `e2` < highest epoch  | accept    | accept             |
//! | dispatched{e}      | accept  | `e2 > e` accept, `=` same, `<` stale| accept    | accept             |
//! | committed          | ignored | ignored                             | (same)    | ignored            |
//! | failed / cancelled | ignored | ignored                             | accept    | (same) / ignored   |
//!
//! "(same)" restates the current status and changes nothing silently. Every "ignored" op is
//! reported as an [`IgnoredTransition`]: leaving a terminal status
//! ([`IgnoreReason::LeavesTerminal`]), dispatching at an epoch below the highest already seen
//! ([`IgnoreReason::StaleEpoch`]), or naming another run than the intent's first op
//! ([`IgnoreReason::RunMismatch`]).
//!
//! `committed` overrides `failed` and `cancelled`: it records that the effect *happened*, a
//! fact that outranks a report that it failed (a timeout can be wrong; a commit cannot). This is
//! what makes a committed run stay committed however late other ops arrive.
//!
//! # The committed-run oracle
//!
//! [`IntentLedger::is_run_committed`] is true once any folded op says `committed` for the run.
//! It only ever grows with the op set (no later op can revoke it), so a device that once saw a
//! run committed never dispatches it again: a committed run never goes back to pending.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hlc::Hlc;
use super::op::OpId;
use super::payload::{Payload, PayloadError};
use super::scope::Scope;
use crate::domain::ids::{Epoch, IdError, RunId};

/// Longest accepted intent id, in bytes.
pub const MAX_INTENT_ID_LEN: usize = 128;

/// Identifies an intent: 1–128 characters of `[A-Za-z0-9_.:-]` (so callers can derive it,
/// e.g. `agent:run`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IntentId(String);

impl IntentId {
    /// Parses and validates an intent id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_INTENT_ID_LEN {
            return Err(IdError {
                kind: "intent",
                reason: "must be 1 to 128 characters",
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return Err(IdError {
                kind: "intent",
                reason: "only A-Z, a-z, 0-9, '_', '.', ':' and '-' are allowed",
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IntentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for IntentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<IntentId> for String {
    fn from(i: IntentId) -> String {
        i.0
    }
}

/// Where an intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntentStatus {
    /// Requested, not dispatched.
    Pending,
    /// Dispatched by the lease holder at `epoch`.
    Dispatched {
        /// The fencing epoch of the dispatching lease.
        epoch: Epoch,
    },
    /// The effect happened (terminal).
    Committed,
    /// The effect did not happen and will not be retried (terminal).
    Failed,
    /// Withdrawn before it happened (terminal).
    Cancelled,
}

impl IntentStatus {
    /// Whether no further transition is accepted (except `committed` over `failed`/`cancelled`).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Committed | Self::Failed | Self::Cancelled)
    }

    /// The wire name of the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dispatched { .. } => "dispatched",
            Self::Committed => "committed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dispatched { epoch } => write!(f, "dispatched@{epoch}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// One statement about an intent (the payload of an `intent`-surface op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The intent.
    pub intent_id: IntentId,
    /// The run it belongs to.
    pub run_id: RunId,
    /// Its status.
    pub status: IntentStatus,
}

impl Intent {
    /// The op payload for this intent (see the module docs).
    pub fn to_payload(&self) -> Value {
        let mut m = Map::new();
        m.insert("intent_id".into(), Value::from(self.intent_id.as_str()));
        m.insert("run_id".into(), Value::from(self.run_id.to_string()));
        m.insert("status".into(), Value::from(self.status.as_str()));
        if let IntentStatus::Dispatched { epoch } = self.status {
            m.insert("epoch".into(), Value::from(epoch.get()));
        }
        Value::Object(m)
    }

    /// Reads an intent from an op payload. Unknown fields are allowed; `epoch` is required
    /// with `dispatched` and refused with any other status.
    pub fn from_payload(payload: &Value) -> Result<Self, PayloadError> {
        let invalid = PayloadError::InvalidIntent;
        let o = payload.as_object().ok_or(PayloadError::NotAnObject)?;
        let text = |field: &'static str, missing: &'static str| {
            o.get(field).and_then(Value::as_str).ok_or(invalid(missing))
        };
        let intent_id = IntentId::parse(text("intent_id", "needs an \"intent_id\" string")?)
            .map_err(|_| invalid("malformed \"intent_id\""))?;
        let run_id = RunId::parse(text("run_id", "needs a \"run_id\" string")?)
            .map_err(|_| invalid("malformed \"run_id\""))?;
        let epoch = o.get("epoch");
        let status = match (text("status", "needs a \"status\" string")?, epoch) {
            ("dispatched", Some(e)) => IntentStatus::Dispatched {
                epoch: Epoch::new(e.as_u64().ok_or(invalid("\"epoch\" must be an integer"))?),
            },
            ("dispatched", None) => return Err(invalid("\"dispatched\" needs an \"epoch\"")),
            (_, Some(_)) => return Err(invalid("only \"dispatched\" carries an \"epoch\"")),
            ("pending", None) => IntentStatus::Pending,
            ("committed", None) => IntentStatus::Committed,
            ("failed", None) => IntentStatus::Failed,
            ("cancelled", None) => IntentStatus::Cancelled,
            (_, None) => return Err(invalid("unknown \"status\"")),
        };
        Ok(Self {
            intent_id,
            run_id,
            status,
        })
    }
}

/// Why an intent op did not change its intent's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// It would leave a terminal status.
    LeavesTerminal,
    /// It dispatches at an epoch below one already seen for this intent.
    StaleEpoch,
    /// It names another run than the intent's first op.
    RunMismatch,
}

/// An intent op the ledger ignored, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredTransition {
    /// The ignored op.
    pub op_id: OpId,
    /// The status it found.
    pub from: IntentStatus,
    /// The status it asked for.
    pub to: IntentStatus,
    /// Why it was ignored.
    pub reason: IgnoreReason,
}

/// The resolved state of one intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    /// The intent.
    pub intent_id: IntentId,
    /// Its run (from its first op in `(hlc, op_id)` order).
    pub run_id: RunId,
    /// Its current status.
    pub status: IntentStatus,
    /// The op that set the current status.
    pub decided_by: OpId,
    /// Ops that were ignored, in `(hlc, op_id)` order.
    pub ignored: Vec<IgnoredTransition>,
}

/// One folded intent op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentEntry {
    /// The op.
    pub op_id: OpId,
    /// Its stamp.
    pub hlc: Hlc,
    /// Its scope.
    pub scope: Scope,
    /// What it said.
    pub intent: Intent,
    /// The op payload as folded (kept verbatim for the state encoding).
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct History {
    entries: BTreeMap<(Hlc, OpId), IntentEntry>,
    view: IntentView,
}

/// Every intent op folded so far, resolved per intent. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentLedger {
    intents: BTreeMap<IntentId, History>,
    committed_runs: BTreeSet<RunId>,
}

impl IntentLedger {
    /// Folds one intent op; returns `false` if it was already folded.
    pub(super) fn insert(&mut self, entry: IntentEntry) -> bool {
        let key = (entry.hlc, entry.op_id);
        if entry.intent.status == IntentStatus::Committed {
            self.committed_runs.insert(entry.intent.run_id);
        }
        let id = entry.intent.intent_id.clone();
        match self.intents.get_mut(&id) {
            Some(history) => {
                if history.entries.contains_key(&key) {
                    return false;
                }
                history.entries.insert(key, entry);
                if let Some(view) = resolve(&history.entries) {
                    history.view = view;
                }
            }
            None => {
                let mut entries = BTreeMap::new();
                entries.insert(key, entry);
                if let Some(view) = resolve(&entries) {
                    self.intents.insert(id, History { entries, view });
                }
            }
        }
        true
    }

    /// The resolved view of one intent.
    pub fn get(&self, intent_id: &IntentId) -> Option<&IntentView> {
        self.intents.get(intent_id).map(|h| &h.view)
    }

    /// Every intent's view, by intent id.
    pub fn views(&self) -> impl Iterator<Item = &IntentView> {
        self.intents.values().map(|h| &h.view)
    }

    /// Every folded op of one intent, in `(hlc, op_id)` order.
    pub fn entries(&self, intent_id: &IntentId) -> impl Iterator<Item = &IntentEntry> {
        self.intents
            .get(intent_id)
            .into_iter()
            .flat_map(|h| h.entries.values())
    }

    /// Every ignored op, by intent.
    pub fn ignored(&self) -> impl Iterator<Item = (&IntentId, &IgnoredTransition)> {
        self.intents
            .iter()
            .flat_map(|(id, h)| h.view.ignored.iter().map(move |t| (id, t)))
    }

    /// The committed-run oracle: whether any folded op committed `run_id`.
    pub fn is_run_committed(&self, run_id: &RunId) -> bool {
        self.committed_runs.contains(run_id)
    }

    /// The number of intents.
    pub fn len(&self) -> usize {
        self.intents.len()
    }

    /// Whether no intent op was folded.
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }
}

/// What a transition does.
enum Step {
    Accept,
    Same,
    Ignore(IgnoreReason),
}

fn step(from: IntentStatus, to: IntentStatus, highest: Option<Epoch>) -> Step {
    use IntentStatus::*;
    match (from, to) {
        (Committed, Committed) => Step::Same,
        (Committed, _) => Step::Ignore(IgnoreReason::LeavesTerminal),
        (Failed | Cancelled, Committed) => Step::Accept,
        (Failed, Failed) | (Cancelled, Cancelled) => Step::Same,
        (Failed | Cancelled, _) => Step::Ignore(IgnoreReason::LeavesTerminal),
        (_, Dispatched { epoch }) if highest.is_some_and(|h| epoch < h) => {
            Step::Ignore(IgnoreReason::StaleEpoch)
        }
        (a, b) if a == b => Step::Same,
        _ => Step::Accept,
    }
}

/// Replays a history through the transition rules; `None` only for an empty history.
fn resolve(entries: &BTreeMap<(Hlc, OpId), IntentEntry>) -> Option<IntentView> {
    let mut iter = entries.values();
    let first = iter.next()?;
    let mut view = IntentView {
        intent_id: first.intent.intent_id.clone(),
        run_id: first.intent.run_id,
        status: first.intent.status,
        decided_by: first.op_id,
        ignored: Vec::new(),
    };
    let mut highest = dispatched_epoch(first.intent.status);
    for entry in iter {
        let to = entry.intent.status;
        let outcome = if entry.intent.run_id != view.run_id {
            Step::Ignore(IgnoreReason::RunMismatch)
        } else {
            step(view.status, to, highest)
        };
        match outcome {
            Step::Accept => {
                view.status = to;
                view.decided_by = entry.op_id;
                highest = highest.max(dispatched_epoch(to));
            }
            Step::Same => {}
            Step::Ignore(reason) => view.ignored.push(IgnoredTransition {
                op_id: entry.op_id,
                from: view.status,
                to,
                reason,
            }),
        }
    }
    Some(view)
}

fn dispatched_epoch(status: IntentStatus) -> Option<Epoch> {
    match status {
        IntentStatus::Dispatched { epoch } => Some(epoch),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::DeviceId;
    use serde_json::json;
    use uuid::Uuid;

    fn run(n: u128) -> RunId {
        RunId::from_uuid(Uuid::from_u128(n)).unwrap()
    }

    fn iid(s: &str) -> IntentId {
        IntentId::parse(s).unwrap()
    }

    fn entry(wall: u64, tag: u8, run_id: RunId, status: IntentStatus) -> IntentEntry {
        let intent = Intent {
            intent_id: iid("milo:run-1"),
            run_id,
            status,
        };
        IntentEntry {
            op_id: OpId::from_bytes([tag; 32]),
            hlc: Hlc::new(wall, 0, DeviceId::from_uuid(Uuid::from_u128(1)).unwrap()),
            scope: Scope::Personal,
            payload: Payload::from_value(&intent.to_payload()),
            intent,
        }
    }

    fn ledger(entries: &[IntentEntry]) -> IntentLedger {
        let mut l = IntentLedger::default();
        for e in entries {
            l.insert(e.clone());
        }
        l
    }

    fn status_of(l: &IntentLedger) -> IntentStatus {
        l.get(&iid("milo:run-1")).unwrap().status
    }

    const D: fn(u64) -> IntentStatus = |e| IntentStatus::Dispatched {
        epoch: Epoch::new(e),
    };

    #[test]
    fn payloads_round_trip_for_every_status() {
        for status in [
            IntentStatus::Pending,
            D(4),
            IntentStatus::Committed,
            IntentStatus::Failed,
            IntentStatus::Cancelled,
        ] {
            let i = Intent {
                intent_id: iid("a.b:c-d_e"),
                run_id: run(7),
                status,
            };
            assert_eq!(Intent::from_payload(&i.to_payload()), Ok(i));
        }
        assert_eq!(D(4).to_string(), "dispatched@4");
        assert_eq!(IntentStatus::Failed.to_string(), "failed");
    }

    #[test]
    fn malformed_intents_are_refused() {
        let r = run(7).to_string();
        let bad = [
            json!([]),
            json!({"run_id": r, "status": "pending"}),
            json!({"intent_id": "bad id", "run_id": r, "status": "pending"}),
            json!({"intent_id": "i", "run_id": "nope", "status": "pending"}),
            json!({"intent_id": "i", "run_id": r}),
            json!({"intent_id": "i", "run_id": r, "status": "exploded"}),
            json!({"intent_id": "i", "run_id": r, "status": "dispatched"}),
            json!({"intent_id": "i", "run_id": r, "status": "dispatched", "epoch": -1}),
            json!({"intent_id": "i", "run_id": r, "status": "pending", "epoch": 1}),
        ];
        for b in bad {
            assert!(Intent::from_payload(&b).is_err(), "{b}");
        }
        assert_eq!(
            Intent::from_payload(&json!(1)),
            Err(PayloadError::NotAnObject)
        );
    }

    #[test]
    fn intent_ids_are_validated() {
        assert!(IntentId::parse("Agent:run-1.x_y").is_ok());
        assert_eq!(IntentId::parse("").unwrap_err().kind, "intent");
        assert!(IntentId::parse(&"a".repeat(129)).is_err());
        assert!(IntentId::parse("a b").is_err());
        assert_eq!(iid("x").as_str(), "x");
        assert!(serde_json::from_str::<IntentId>("\"a/b\"").is_err());
    }

    #[test]
    fn the_happy_path_ends_committed() {
        let l = ledger(&[
            entry(1, 1, run(1), IntentStatus::Pending),
            entry(2, 2, run(1), D(1)),
            entry(3, 3, run(1), IntentStatus::Committed),
        ]);
        let v = l.get(&iid("milo:run-1")).unwrap();
        assert_eq!(v.status, IntentStatus::Committed);
        assert_eq!(v.decided_by, OpId::from_bytes([3; 32]));
        assert!(v.ignored.is_empty());
        assert!(l.is_run_committed(&run(1)));
        assert!(!l.is_run_committed(&run(2)));
        assert_eq!((l.len(), l.is_empty()), (1, false));
        assert_eq!(l.entries(&iid("milo:run-1")).count(), 3);
    }

    #[test]
    fn a_committed_run_never_goes_back_to_pending() {
        let l = ledger(&[
            entry(1, 1, run(1), IntentStatus::Committed),
            entry(2, 2, run(1), IntentStatus::Pending),
            entry(3, 3, run(1), IntentStatus::Failed),
            entry(4, 4, run(1), IntentStatus::Committed),
        ]);
        assert_eq!(status_of(&l), IntentStatus::Committed);
        let ignored: Vec<_> = l.ignored().map(|(_, t)| t.clone()).collect();
        assert_eq!(
            ignored,
            vec![
                IgnoredTransition {
                    op_id: OpId::from_bytes([2; 32]),
                    from: IntentStatus::Committed,
                    to: IntentStatus::Pending,
                    reason: IgnoreReason::LeavesTerminal,
                },
                IgnoredTransition {
                    op_id: OpId::from_bytes([3; 32]),
                    from: IntentStatus::Committed,
                    to: IntentStatus::Failed,
                    reason: IgnoreReason::LeavesTerminal,
                },
            ]
        );
    }

    #[test]
    fn committed_overrides_failed_and_cancelled_but_nothing_else_does() {
        let l = ledger(&[
            entry(1, 1, run(1), IntentStatus::Failed),
            entry(2, 2, run(1), IntentStatus::Committed),
        ]);
        assert_eq!(status_of(&l), IntentStatus::Committed);
        let l = ledger(&[
            entry(1, 1, run(1), IntentStatus::Cancelled),
            entry(2, 2, run(1), IntentStatus::Failed),
            entry(3, 3, run(1), IntentStatus::Pending),
            entry(4, 4, run(1), IntentStatus::Cancelled),
        ]);
        assert_eq!(status_of(&l), IntentStatus::Cancelled);
        assert_eq!(l.ignored().count(), 2, "the restated cancel is silent");
    }

    #[test]
    fn stale_dispatch_epochs_are_ignored() {
        let l = ledger(&[
            entry(1, 1, run(1), D(5)),
            entry(2, 2, run(1), IntentStatus::Pending),
            entry(3, 3, run(1), D(4)),
            entry(4, 4, run(1), D(5)),
            entry(5, 5, run(1), D(5)),
            entry(6, 6, run(1), D(6)),
        ]);
        assert_eq!(status_of(&l), D(6));
        let t: Vec<_> = l.ignored().map(|(_, t)| (t.op_id, t.reason)).collect();
        assert_eq!(
            t,
            vec![(OpId::from_bytes([3; 32]), IgnoreReason::StaleEpoch)]
        );
    }

    #[test]
    fn ops_naming_another_run_are_ignored() {
        let l = ledger(&[
            entry(1, 1, run(1), IntentStatus::Pending),
            entry(2, 2, run(2), IntentStatus::Failed),
        ]);
        assert_eq!(status_of(&l), IntentStatus::Pending);
        let (_, t) = l.ignored().next().unwrap();
        assert_eq!(t.reason, IgnoreReason::RunMismatch);
        assert_eq!(l.get(&iid("milo:run-1")).unwrap().run_id, run(1));
    }

    #[test]
    fn arrival_order_and_repeats_do_not_matter() {
        let es = [
            entry(1, 1, run(1), IntentStatus::Pending),
            entry(2, 2, run(1), D(2)),
            entry(3, 3, run(1), IntentStatus::Failed),
            entry(4, 4, run(1), IntentStatus::Pending),
        ];
        let forward = ledger(&es);
        let mut backward = IntentLedger::default();
        for e in es.iter().rev() {
            backward.insert(e.clone());
        }
        assert!(!backward.insert(es[0].clone()));
        assert_eq!(forward, backward);
        assert_eq!(status_of(&forward), IntentStatus::Failed);
    }

    #[test]
    fn the_oracle_only_grows() {
        // A late op with an earlier stamp changes the view, never the oracle.
        let mut l = ledger(&[entry(5, 5, run(1), IntentStatus::Committed)]);
        assert!(l.is_run_committed(&run(1)));
        l.insert(entry(1, 1, run(9), IntentStatus::Pending));
        assert_eq!(status_of(&l), IntentStatus::Pending);
        assert!(l.is_run_committed(&run(1)));
    }
}
