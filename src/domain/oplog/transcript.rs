//! Transcripts and resume: conversation turns in, provider-valid messages out.
//!
//! A conversation is the `conversation`-surface ops whose payload names it, in `(hlc, op_id)`
//! order ([`conversation_turns`]). Turns written concurrently by several devices, or cut short
//! by a crash, are not necessarily something a model provider accepts: a tool result may have
//! lost its call, a call may never have been answered, two user turns may sit side by side.
//! [`resume`] repairs that and says what it did; [`is_provider_valid`] states the target.
//!
//! # The turn shape
//!
//! A turn (and a conversation op's payload, which adds `"conversation_id"`) is
//! `{"role": "user" | "assistant" | "system" | "tool", "text": "...", "tool_calls": [{"id":
//! "...", "name": "...", "arguments": <any>}], "tool_call_id": "..."}`. `text` defaults to
//! empty, `tool_calls` to none, `tool_call_id` to absent.
//!
//! # Provider validity (what [`is_provider_valid`] checks)
//!
//! 1. Only assistant messages carry tool calls; only tool messages carry a `tool_call_id`.
//! 2. User and system messages have non-blank text; an assistant message has non-blank text or
//!    at least one tool call. (Tool results may be empty.)
//! 3. Every tool-call id is non-empty and unique across the transcript.
//! 4. Tool messages come in a block right after an assistant message with tool calls; each
//!    names, by a non-empty `tool_call_id`, a call of that assistant message not answered yet.
//! 5. Every tool call is answered within that block.
//! 6. No two adjacent messages share a role, except the tool messages of one block.
//!
//! # Repairs (what [`resume`] does, in order)
//!
//! 1. Tool calls on non-assistant turns and `tool_call_id`s on non-tool turns are cleared
//!    (`stray_fields_cleared`).
//! 2. Calls are paired with results by id, in turn order: a call with an empty id or an id
//!    already used by an earlier call is stripped (`unanswered_calls_stripped`,
//!    `duplicate_calls_stripped`); a tool result whose id names no earlier call is dropped
//!    (`orphan_results_dropped`), a second result for the same call too
//!    (`duplicate_results_dropped`). Calls left without a result are stripped
//!    (`unanswered_calls_stripped`).
//! 3. Each result is placed right after the assistant message holding its call (results of one
//!    message keep their input order); results that had a non-tool turn between them and their
//!    call are listed in `results_reordered`.
//! 4. Turns left empty (blank user/system text; assistant with blank text and no calls) are
//!    dropped (`empty_turns_dropped`).
//! 5. Adjacent same-role messages are merged, texts joined by a blank line and tool calls
//!    concatenated (`merged`).
//!
//! The report names turns by their index in the input and calls by their tool-call id; it
//! never carries text. Resuming an already valid transcript changes nothing and reports
//! nothing.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fold::State;
use super::payload::{Payload, PayloadError};
use super::surface::Surface;
use crate::domain::message::Role;

/// Longest accepted conversation id, in bytes.
pub const MAX_CONVERSATION_ID_LEN: usize = 256;

/// A tool invocation requested by the assistant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Pairs the call with its result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the provider gave them.
    #[serde(default)]
    pub arguments: Value,
}

/// One conversation turn as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who spoke.
    pub role: Role,
    /// The text.
    #[serde(default)]
    pub text: String,
    /// Tool calls (assistant turns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call this turn answers (tool turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Turn {
    /// A turn with text only.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A conversation op's payload: a turn and the conversation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTurn {
    /// The conversation (1–256 bytes).
    pub conversation_id: String,
    /// The turn.
    pub turn: Turn,
}

/// The payload's fields, listed out rather than `#[serde(flatten)]`-ing a [`Turn`]: flatten
/// buffers every field into an intermediate tree first, and this runs for every conversation
/// op folded or checked (a checkpoint holds one per message). Same fields, defaults and
/// tolerance of unknown fields as [`Turn`].
#[derive(Deserialize)]
struct TurnWire {
    conversation_id: String,
    role: Role,
    #[serde(default)]
    text: String,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// [`TurnWire`] read without copying: what checking a payload needs.
#[derive(Deserialize)]
struct TurnCheck {
    conversation_id: StrLen,
    #[serde(rename = "role")]
    _role: Role,
    #[serde(default, rename = "text")]
    _text: StrLen,
    #[serde(default, rename = "tool_calls")]
    _tool_calls: Vec<ToolCallCheck>,
    #[serde(default, rename = "tool_call_id")]
    _tool_call_id: Option<StrLen>,
}

/// [`ToolCall`] read without copying (any JSON is valid arguments).
#[derive(Deserialize)]
struct ToolCallCheck {
    #[serde(rename = "id")]
    _id: StrLen,
    #[serde(rename = "name")]
    _name: StrLen,
    #[serde(default, rename = "arguments")]
    _arguments: serde::de::IgnoredAny,
}

/// A JSON string, read (from a parsed tree or from text, escaped or not) and measured but
/// never copied.
#[derive(Default)]
struct StrLen(usize);

impl<'de> Deserialize<'de> for StrLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Measure;
        impl serde::de::Visitor<'_> for Measure {
            type Value = StrLen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StrLen, E> {
                Ok(StrLen(s.len()))
            }
        }
        d.deserialize_str(Measure)
    }
}

const TURN_SHAPE: &str = "needs \"conversation_id\" and \"role\"; \"text\", \"tool_calls\" and \
                          \"tool_call_id\" must have their documented types";
const CONVERSATION_ID_SIZE: &str = "\"conversation_id\" must be 1 to 256 bytes";

fn check_conversation_id(len: usize) -> Result<(), PayloadError> {
    if len == 0 || len > MAX_CONVERSATION_ID_LEN {
        return Err(PayloadError::InvalidTurn(CONVERSATION_ID_SIZE));
    }
    Ok(())
}

impl ConversationTurn {
    /// Checks that `payload` is a conversation turn, as [`ConversationTurn::from_payload`]
    /// would read it, without copying any of it.
    pub fn check_payload(payload: &Value) -> Result<(), PayloadError> {
        if !payload.is_object() {
            return Err(PayloadError::NotAnObject);
        }
        let wire =
            TurnCheck::deserialize(payload).map_err(|_| PayloadError::InvalidTurn(TURN_SHAPE))?;
        check_conversation_id(wire.conversation_id.0)
    }

    /// [`ConversationTurn::check_payload`] for canonical JSON text, read without building a
    /// tree (canonical text has no whitespace, so an object starts with `{`).
    pub(super) fn check_text(text: &str) -> Result<(), PayloadError> {
        if !text.starts_with('{') {
            return Err(PayloadError::NotAnObject);
        }
        let wire: TurnCheck =
            serde_json::from_str(text).map_err(|_| PayloadError::InvalidTurn(TURN_SHAPE))?;
        check_conversation_id(wire.conversation_id.0)
    }

    /// Reads a conversation op's payload.
    pub fn from_payload(payload: &Value) -> Result<Self, PayloadError> {
        if !payload.is_object() {
            return Err(PayloadError::NotAnObject);
        }
        // Deserialized from the borrowed value: no copy of the whole payload first.
        Self::from_wire(
            TurnWire::deserialize(payload).map_err(|_| PayloadError::InvalidTurn(TURN_SHAPE))?,
        )
    }

    /// Reads a folded conversation payload straight from its text.
    pub fn from_folded(payload: &Payload) -> Result<Self, PayloadError> {
        if !payload.as_str().starts_with('{') {
            return Err(PayloadError::NotAnObject);
        }
        Self::from_wire(
            payload
                .parse()
                .map_err(|_| PayloadError::InvalidTurn(TURN_SHAPE))?,
        )
    }

    fn from_wire(wire: TurnWire) -> Result<Self, PayloadError> {
        check_conversation_id(wire.conversation_id.len())?;
        Ok(Self {
            conversation_id: wire.conversation_id,
            turn: Turn {
                role: wire.role,
                text: wire.text,
                tool_calls: wire.tool_calls,
                tool_call_id: wire.tool_call_id,
            },
        })
    }

    /// The op payload for this turn.
    pub fn to_payload(&self) -> Value {
        let t = &self.turn;
        let mut m = Map::new();
        m.insert(
            "conversation_id".into(),
            Value::from(self.conversation_id.as_str()),
        );
        m.insert("role".into(), Value::from(t.role.as_str()));
        m.insert("text".into(), Value::from(t.text.as_str()));
        if !t.tool_calls.is_empty() {
            let calls = t.tool_calls.iter().map(|c| {
                let mut call = Map::new();
                call.insert("id".into(), Value::from(c.id.as_str()));
                call.insert("name".into(), Value::from(c.name.as_str()));
                call.insert("arguments".into(), c.arguments.clone());
                Value::Object(call)
            });
            m.insert("tool_calls".into(), Value::Array(calls.collect()));
        }
        if let Some(id) = &t.tool_call_id {
            m.insert("tool_call_id".into(), Value::from(id.as_str()));
        }
        Value::Object(m)
    }
}

/// The turns of one conversation in `(hlc, op_id)` order.
pub fn conversation_turns(state: &State, conversation_id: &str) -> Vec<Turn> {
    state
        .events(&Surface::Conversation)
        // The fold validated every conversation payload, so none fails to parse here.
        .filter_map(|e| ConversationTurn::from_folded(&e.payload).ok())
        .filter(|c| c.conversation_id == conversation_id)
        .map(|c| c.turn)
        .collect()
}

/// A message ready to send to a model provider (see the validity rules in the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeMessage {
    /// Who spoke.
    pub role: Role,
    /// The text.
    pub text: String,
    /// Tool calls (assistant messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call answered (tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl From<ResumeMessage> for Turn {
    fn from(m: ResumeMessage) -> Self {
        Self {
            role: m.role,
            text: m.text,
            tool_calls: m.tool_calls,
            tool_call_id: m.tool_call_id,
        }
    }
}

/// A repaired tool result: the input turn and the id it named (if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultRepair {
    /// Index of the tool turn in the input.
    pub index: usize,
    /// Its `tool_call_id`.
    pub tool_call_id: Option<String>,
}

/// A repaired tool call: the assistant turn holding it and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRepair {
    /// Index of the assistant turn in the input.
    pub index: usize,
    /// The call's id.
    pub tool_call_id: String,
}

/// Two input turns merged into one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MergeRepair {
    /// Index of the first turn of the message merged into.
    pub into: usize,
    /// Index of the turn merged.
    pub from: usize,
}

/// Everything [`resume`] repaired. The count of each kind is its list's length.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Turns that carried fields their role may not have (indices).
    pub stray_fields_cleared: Vec<usize>,
    /// Tool results naming no earlier call.
    pub orphan_results_dropped: Vec<ResultRepair>,
    /// Second results for an already answered call.
    pub duplicate_results_dropped: Vec<ResultRepair>,
    /// Results moved up to follow their call.
    pub results_reordered: Vec<ResultRepair>,
    /// Calls never answered (or with an empty id).
    pub unanswered_calls_stripped: Vec<CallRepair>,
    /// Calls re-using an earlier call's id.
    pub duplicate_calls_stripped: Vec<CallRepair>,
    /// Turns left without content (indices).
    pub empty_turns_dropped: Vec<usize>,
    /// Adjacent same-role turns merged.
    pub merged: Vec<MergeRepair>,
}

impl RepairReport {
    /// The total number of repairs.
    pub fn total(&self) -> usize {
        self.stray_fields_cleared.len()
            + self.orphan_results_dropped.len()
            + self.duplicate_results_dropped.len()
            + self.results_reordered.len()
            + self.unanswered_calls_stripped.len()
            + self.duplicate_calls_stripped.len()
            + self.empty_turns_dropped.len()
            + self.merged.len()
    }

    /// Whether nothing needed repair.
    pub fn is_clean(&self) -> bool {
        self.total() == 0
    }
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// Repairs `turns` into provider-valid messages (see the module docs for the exact repairs).
pub fn resume(turns: &[Turn]) -> (Vec<ResumeMessage>, RepairReport) {
    let mut report = RepairReport::default();

    // 1. Clear stray fields.
    let mut work: Vec<Turn> = turns.to_vec();
    for (i, t) in work.iter_mut().enumerate() {
        let stray_calls = t.role != Role::Assistant && !t.tool_calls.is_empty();
        let stray_id = t.role != Role::Tool && t.tool_call_id.is_some();
        if stray_calls {
            t.tool_calls.clear();
        }
        if stray_id {
            t.tool_call_id = None;
        }
        if stray_calls || stray_id {
            report.stray_fields_cleared.push(i);
        }
    }

    // 2. Pair calls and results by id, in order.
    let mut owner: HashMap<String, usize> = HashMap::new(); // call id -> assistant index
    let mut answer: HashMap<String, usize> = HashMap::new(); // call id -> tool index
    for (i, t) in work.iter_mut().enumerate() {
        match t.role {
            Role::Assistant => t.tool_calls.retain(|c| {
                if c.id.is_empty() {
                    report.unanswered_calls_stripped.push(call_repair(i, c));
                    false
                } else if owner.contains_key(&c.id) {
                    report.duplicate_calls_stripped.push(call_repair(i, c));
                    false
                } else {
                    owner.insert(c.id.clone(), i);
                    true
                }
            }),
            Role::Tool => {
                let repair = ResultRepair {
                    index: i,
                    tool_call_id: t.tool_call_id.clone(),
                };
                match t.tool_call_id.as_deref() {
                    Some(id) if owner.contains_key(id) => {
                        if answer.contains_key(id) {
                            report.duplicate_results_dropped.push(repair);
                        } else {
                            answer.insert(id.to_owned(), i);
                        }
                    }
                    _ => report.orphan_results_dropped.push(repair),
                }
            }
            Role::User | Role::System => {}
        }
    }
    for (i, t) in work.iter_mut().enumerate() {
        t.tool_calls.retain(|c| {
            let answered = answer.contains_key(&c.id);
            if !answered {
                report.unanswered_calls_stripped.push(call_repair(i, c));
            }
            answered
        });
    }
    report
        .unanswered_calls_stripped
        .sort_by(|a, b| (a.index, &a.tool_call_id).cmp(&(b.index, &b.tool_call_id)));

    // 3–5. Emit, placing results after their calls, dropping empties, merging neighbours.
    let mut out: Vec<ResumeMessage> = Vec::with_capacity(work.len());
    let mut first_index: Vec<usize> = Vec::with_capacity(work.len());
    for (i, t) in work.iter().enumerate() {
        if t.role == Role::Tool {
            continue;
        }
        if is_blank(&t.text) && t.tool_calls.is_empty() {
            report.empty_turns_dropped.push(i);
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == t.role => {
                if is_blank(&last.text) {
                    last.text = t.text.clone();
                } else if !is_blank(&t.text) {
                    last.text = format!("{}\n\n{}", last.text, t.text);
                }
                last.tool_calls.extend(t.tool_calls.iter().cloned());
                report.merged.push(MergeRepair {
                    into: first_index.last().copied().unwrap_or(i),
                    from: i,
                });
            }
            _ => {
                out.push(ResumeMessage {
                    role: t.role,
                    text: t.text.clone(),
                    tool_calls: t.tool_calls.clone(),
                    tool_call_id: None,
                });
                first_index.push(i);
            }
        }
        // Every remaining call is answered; results keep their input order.
        let mut results: Vec<(usize, &ToolCall)> = t
            .tool_calls
            .iter()
            .filter_map(|c| answer.get(&c.id).map(|&j| (j, c)))
            .collect();
        results.sort_by_key(|&(j, _)| j);
        for (j, call) in results {
            if work[i + 1..j].iter().any(|x| x.role != Role::Tool) {
                report.results_reordered.push(ResultRepair {
                    index: j,
                    tool_call_id: Some(call.id.clone()),
                });
            }
            out.push(ResumeMessage {
                role: Role::Tool,
                text: work[j].text.clone(),
                tool_calls: Vec::new(),
                tool_call_id: Some(call.id.clone()),
            });
            first_index.push(j);
        }
    }
    report.results_reordered.sort_by_key(|r| r.index);
    (out, report)
}

fn call_repair(index: usize, call: &ToolCall) -> CallRepair {
    CallRepair {
        index,
        tool_call_id: call.id.clone(),
    }
}

/// Whether `messages` satisfy every provider-validity rule in the module docs.
pub fn is_provider_valid(messages: &[ResumeMessage]) -> bool {
    let mut seen_calls: HashSet<&str> = HashSet::new();
    let mut open_block: Option<HashSet<&str>> = None;
    for (i, m) in messages.iter().enumerate() {
        if m.role != Role::Assistant && !m.tool_calls.is_empty() {
            return false;
        }
        if m.role == Role::Tool {
            let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) else {
                return false;
            };
            if open_block
                .as_mut()
                .is_some_and(|pending| pending.remove(id))
            {
                continue;
            }
            return false;
        }
        if open_block.take().is_some_and(|pending| !pending.is_empty()) {
            return false;
        }
        if m.tool_call_id.is_some() || (i > 0 && messages[i - 1].role == m.role) {
            return false;
        }
        if m.role == Role::Assistant {
            if is_blank(&m.text) && m.tool_calls.is_empty() {
                return false;
            }
            for c in &m.tool_calls {
                if c.id.is_empty() || !seen_calls.insert(&c.id) {
                    return false;
                }
            }
            if !m.tool_calls.is_empty() {
                open_block = Some(m.tool_calls.iter().map(|c| c.id.as_str()).collect());
            }
        } else if is_blank(&m.text) {
            return false;
        }
    }
    open_block.is_none_or(|pending| pending.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::author::OpAuthor;
    use crate::domain::oplog::fold::fold;
    use crate::domain::oplog::test_support::dev;
    use crate::domain::oplog::{OpPayload, Scope};
    use proptest::prelude::*;
    use serde_json::json;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "grep".into(),
            arguments: json!({"q": id}),
        }
    }

    fn user(t: &str) -> Turn {
        Turn::text(Role::User, t)
    }

    fn asst(t: &str, calls: &[&str]) -> Turn {
        Turn {
            tool_calls: calls.iter().map(|c| call(c)).collect(),
            ..Turn::text(Role::Assistant, t)
        }
    }

    fn tool(id: &str, t: &str) -> Turn {
        Turn {
            tool_call_id: Some(id.into()),
            ..Turn::text(Role::Tool, t)
        }
    }

    fn roles(ms: &[ResumeMessage]) -> Vec<&'static str> {
        ms.iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn a_valid_transcript_is_unchanged_and_unreported() {
        let turns = vec![
            Turn::text(Role::System, "be brief"),
            user("find x"),
            asst("looking", &["a", "b"]),
            tool("b", "B"),
            tool("a", ""),
            asst("done", &[]),
        ];
        let (out, report) = resume(&turns);
        assert!(report.is_clean(), "{report:?}");
        assert!(is_provider_valid(&out));
        let back: Vec<Turn> = out.into_iter().map(Turn::from).collect();
        assert_eq!(back, turns);
    }

    #[test]
    fn orphan_results_are_dropped() {
        let (out, report) = resume(&[user("hi"), tool("ghost", "boo"), asst("hello", &[])]);
        assert_eq!(roles(&out), ["user", "assistant"]);
        assert_eq!(
            report.orphan_results_dropped,
            vec![ResultRepair {
                index: 1,
                tool_call_id: Some("ghost".into())
            }]
        );
        // A result before its call is an orphan too, and so is one without an id.
        let (out, report) = resume(&[
            user("q"),
            tool("a", "early"),
            Turn::text(Role::Tool, "x"),
            asst("", &["a"]),
            tool("a", "ok"),
        ]);
        assert_eq!(roles(&out), ["user", "assistant", "tool"]);
        assert_eq!(report.orphan_results_dropped.len(), 2);
        assert_eq!(report.orphan_results_dropped[1].tool_call_id, None);
        assert_eq!(out[2].text, "ok");
    }

    #[test]
    fn unanswered_calls_are_stripped_and_empty_turns_dropped() {
        let (out, report) = resume(&[user("q"), asst("let me see", &["a", "b"]), tool("a", "A")]);
        assert_eq!(roles(&out), ["user", "assistant", "tool"]);
        assert_eq!(out[1].tool_calls, vec![call("a")]);
        assert_eq!(
            report.unanswered_calls_stripped,
            vec![CallRepair {
                index: 1,
                tool_call_id: "b".into()
            }]
        );
        // An assistant turn that only held unanswered calls disappears.
        let (out, report) = resume(&[user("q"), asst(" ", &["z"]), user("again")]);
        assert_eq!(roles(&out), ["user"]);
        assert_eq!(out[0].text, "q\n\nagain");
        assert_eq!(report.empty_turns_dropped, vec![1]);
        assert_eq!(report.merged, vec![MergeRepair { into: 0, from: 2 }]);
    }

    #[test]
    fn duplicate_calls_and_results_are_removed() {
        let (out, report) = resume(&[
            user("q"),
            asst("one", &["a", "a", ""]),
            tool("a", "first"),
            tool("a", "second"),
            asst("two", &["a"]),
        ]);
        assert!(is_provider_valid(&out));
        assert_eq!(out[1].tool_calls, vec![call("a")]);
        assert_eq!(out[2].text, "first");
        assert_eq!(report.duplicate_calls_stripped.len(), 2);
        assert_eq!(
            report.duplicate_results_dropped,
            vec![ResultRepair {
                index: 3,
                tool_call_id: Some("a".into())
            }]
        );
        assert_eq!(
            report.unanswered_calls_stripped,
            vec![CallRepair {
                index: 1,
                tool_call_id: String::new()
            }]
        );
        assert_eq!(roles(&out), ["user", "assistant", "tool", "assistant"]);
    }

    #[test]
    fn results_move_up_to_their_call() {
        let (out, report) = resume(&[
            user("q"),
            asst("calling", &["a"]),
            user("hurry"),
            tool("a", "A"),
        ]);
        assert_eq!(roles(&out), ["user", "assistant", "tool", "user"]);
        assert_eq!(
            report.results_reordered,
            vec![ResultRepair {
                index: 3,
                tool_call_id: Some("a".into())
            }]
        );
        assert!(is_provider_valid(&out));
    }

    #[test]
    fn adjacent_same_roles_merge_and_stray_fields_clear() {
        let mut stray_user = user("two");
        stray_user.tool_calls = vec![call("x")];
        stray_user.tool_call_id = Some("y".into());
        let (out, report) = resume(&[
            user("one"),
            stray_user,
            asst("a", &[]),
            asst("b", &["c"]),
            tool("c", "C"),
        ]);
        assert_eq!(roles(&out), ["user", "assistant", "tool"]);
        assert_eq!(out[0].text, "one\n\ntwo");
        assert_eq!(out[1].text, "a\n\nb");
        assert_eq!(out[1].tool_calls, vec![call("c")]);
        assert_eq!(report.stray_fields_cleared, vec![1]);
        assert_eq!(
            report.merged,
            vec![
                MergeRepair { into: 0, from: 1 },
                MergeRepair { into: 2, from: 3 }
            ]
        );
        assert_eq!(report.total(), 3);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["merged"][0]["from"], json!(1));
    }

    #[test]
    fn clearing_a_stray_id_keeps_the_assistant_calls() {
        let mut a = asst("x", &["c"]);
        a.tool_call_id = Some("bogus".into());
        let (out, report) = resume(&[user("q"), a, tool("c", "C")]);
        assert_eq!(out[1].tool_calls, vec![call("c")]);
        assert_eq!(out[1].tool_call_id, None);
        assert_eq!(report.stray_fields_cleared, vec![1]);
        assert_eq!(roles(&out), ["user", "assistant", "tool"]);
    }

    #[test]
    fn the_empty_transcript_is_valid() {
        let (out, report) = resume(&[]);
        assert!(out.is_empty() && report.is_clean() && is_provider_valid(&out));
    }

    fn msg(role: Role, text: &str, calls: &[&str], id: Option<&str>) -> ResumeMessage {
        ResumeMessage {
            role,
            text: text.into(),
            tool_calls: calls.iter().map(|c| call(c)).collect(),
            tool_call_id: id.map(Into::into),
        }
    }

    #[test]
    fn each_validity_rule_is_enforced() {
        use Role::*;
        let ok = [
            msg(User, "q", &[], None),
            msg(Assistant, "", &["a"], None),
            msg(Tool, "", &[], Some("a")),
        ];
        assert!(is_provider_valid(&ok));
        let invalid: Vec<Vec<ResumeMessage>> = vec![
            // 1. fields on the wrong role
            vec![msg(User, "q", &["a"], None)],
            vec![msg(User, "q", &[], Some("a"))],
            // 2. blank content
            vec![msg(User, " ", &[], None)],
            vec![msg(User, "q", &[], None), msg(Assistant, "", &[], None)],
            // 3. empty or repeated call ids
            vec![
                msg(Assistant, "", &[""], None),
                msg(Tool, "", &[], Some("")),
            ],
            vec![
                msg(Assistant, "", &["a"], None),
                msg(Tool, "", &[], Some("a")),
                msg(User, "q", &[], None),
                msg(Assistant, "", &["a"], None),
                msg(Tool, "", &[], Some("a")),
            ],
            // 4. results outside their block
            vec![msg(Tool, "", &[], Some("a"))],
            vec![
                msg(Assistant, "hi", &[], None),
                msg(Tool, "", &[], Some("a")),
            ],
            vec![
                msg(Assistant, "", &["a"], None),
                msg(Tool, "", &[], Some("b")),
            ],
            vec![
                msg(Assistant, "", &["a"], None),
                msg(Tool, "", &[], Some("a")),
                msg(Tool, "", &[], Some("a")),
            ],
            vec![msg(Assistant, "", &["a"], None), msg(Tool, "", &[], None)],
            // 5. unanswered calls, at the end or before the next message
            vec![msg(Assistant, "", &["a"], None)],
            vec![
                msg(Assistant, "", &["a", "b"], None),
                msg(Tool, "", &[], Some("a")),
                msg(User, "q", &[], None),
            ],
            // 6. adjacent same roles
            vec![msg(User, "q", &[], None), msg(User, "q", &[], None)],
            vec![msg(System, "s", &[], None), msg(System, "s", &[], None)],
        ];
        for (i, ms) in invalid.iter().enumerate() {
            assert!(!is_provider_valid(ms), "case {i} should be invalid");
        }
    }

    fn object_of(v: &mut Value) -> &mut serde_json::Map<String, Value> {
        v.as_object_mut().unwrap()
    }

    #[test]
    fn conversation_payloads_round_trip_and_validate() {
        let c = ConversationTurn {
            conversation_id: "c1".into(),
            turn: asst("x", &["a"]),
        };
        assert_eq!(ConversationTurn::from_payload(&c.to_payload()), Ok(c));
        let t = ConversationTurn {
            conversation_id: "c1".into(),
            turn: tool("a", "r"),
        };
        assert_eq!(
            ConversationTurn::from_payload(&t.to_payload()),
            Ok(t.clone())
        );
        // The payload reader and `Turn`'s own serde agree, and unknown fields are tolerated.
        let mut payload = t.to_payload();
        let object = object_of(&mut payload);
        object.remove("conversation_id");
        object.insert("added_later".into(), json!({"any": "thing"}));
        assert_eq!(
            serde_json::from_value::<Turn>(payload.clone()).unwrap(),
            t.turn
        );
        object_of(&mut payload).insert("conversation_id".into(), json!("c1"));
        assert_eq!(ConversationTurn::from_payload(&payload), Ok(t));
        assert_eq!(
            ConversationTurn::from_payload(&json!(1)),
            Err(PayloadError::NotAnObject)
        );
        let bad = [
            json!({"role": "user"}),
            json!({"conversation_id": "", "role": "user"}),
            json!({"conversation_id": "x".repeat(257), "role": "user"}),
            json!({"conversation_id": "c", "role": "robot"}),
            json!({"conversation_id": "c", "role": "user", "text": 5}),
            json!({"conversation_id": "c", "role": "user", "tool_calls": [{"id": "a"}]}),
        ];
        for b in bad {
            assert!(matches!(
                ConversationTurn::from_payload(&b),
                Err(PayloadError::InvalidTurn(_))
            ));
        }
    }

    #[test]
    fn checking_a_payload_agrees_with_reading_it() {
        let payloads = [
            json!({"conversation_id": "c", "role": "user"}),
            json!({"conversation_id": "c", "role": "user", "text": "hi", "extra": [1, {"a": 2}]}),
            json!({"conversation_id": "c", "role": "assistant", "text": "",
                   "tool_calls": [{"id": "a", "name": "ls", "arguments": {"path": "/"}},
                                  {"id": "b", "name": "pwd"}]}),
            json!({"conversation_id": "c", "role": "tool", "tool_call_id": "a", "text": "r"}),
            json!({"conversation_id": "c", "role": "tool", "tool_call_id": null}),
            json!({"conversation_id": "c", "role": "user", "text": null}),
            json!({"conversation_id": "c", "role": "user", "tool_calls": null}),
            json!({"conversation_id": "c", "role": "user", "tool_calls": [{"id": "a"}]}),
            json!({"conversation_id": "c", "role": "user", "tool_calls": [{"id": 1, "name": "x"}]}),
            json!({"conversation_id": "c", "role": "user", "tool_calls": {"id": "a"}}),
            json!({"conversation_id": "c", "role": "user", "tool_call_id": 7}),
            json!({"conversation_id": "c", "role": "user", "text": ["hi"]}),
            json!({"conversation_id": "c", "role": "robot"}),
            json!({"conversation_id": "c", "role": null}),
            json!({"conversation_id": 5, "role": "user"}),
            json!({"conversation_id": "", "role": "user"}),
            json!({"conversation_id": "x".repeat(256), "role": "user"}),
            json!({"conversation_id": "x".repeat(257), "role": "user"}),
            json!({"conversation_id": "c\u{e9}\n\"", "role": "system", "text": "\u{1F600}"}),
            json!({"role": "user"}),
            json!({}),
            json!([]),
            json!("c"),
            json!(null),
        ];
        for p in payloads {
            let read = ConversationTurn::from_payload(&p).map(|_| ());
            assert_eq!(ConversationTurn::check_payload(&p), read, "{p}");
            let text = String::from_utf8(crate::domain::oplog::canonical_json(&p)).unwrap();
            assert_eq!(ConversationTurn::check_text(&text), read, "{p} as text");
        }
    }

    #[test]
    fn turns_come_from_the_state_in_stamp_order_per_conversation() {
        let mut a = OpAuthor::new(dev(1));
        let mut b = OpAuthor::new(dev(2));
        let put = |au: &mut OpAuthor, now: u64, conv: &str, turn: Turn| {
            let payload = ConversationTurn {
                conversation_id: conv.into(),
                turn,
            }
            .to_payload();
            au.append(
                now,
                Scope::Personal,
                Surface::Conversation,
                OpPayload::Plain(payload),
            )
            .unwrap()
        };
        let ops = [
            put(&mut a, 10, "c1", user("hello")),
            put(&mut b, 20, "c1", asst("hi", &[])),
            put(&mut a, 15, "c2", user("elsewhere")),
        ];
        let state = fold([&ops[1], &ops[2], &ops[0]]).unwrap();
        let turns = conversation_turns(&state, "c1");
        assert_eq!(turns, vec![user("hello"), asst("hi", &[])]);
        assert_eq!(conversation_turns(&state, "c2").len(), 1);
        assert!(conversation_turns(&state, "none").is_empty());
    }

    fn arb_turn() -> impl Strategy<Value = Turn> {
        let ids = prop::sample::select(vec!["a", "b", "c", ""]);
        let text = prop::sample::select(vec!["", " ", "x", "y z"]);
        let role =
            prop::sample::select(vec![Role::User, Role::Assistant, Role::System, Role::Tool]);
        (
            role,
            text,
            prop::collection::vec(ids.clone(), 0..3),
            prop::option::of(ids),
        )
            .prop_map(|(role, text, calls, id)| Turn {
                role,
                text: text.into(),
                tool_calls: calls.into_iter().map(call).collect(),
                tool_call_id: id.map(Into::into),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// (c) Resume always yields provider-valid output, and resuming that changes nothing.
        #[test]
        fn resume_always_yields_valid_messages(turns in prop::collection::vec(arb_turn(), 0..14)) {
            let (out, _) = resume(&turns);
            prop_assert!(is_provider_valid(&out), "invalid: {:?}", out);
            let again: Vec<Turn> = out.iter().cloned().map(Turn::from).collect();
            let (out2, report2) = resume(&again);
            prop_assert!(report2.is_clean(), "{:?}", report2);
            prop_assert_eq!(out2, out);
        }
    }
}
