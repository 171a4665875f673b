//! The workload every row shares: chat messages of about 200 bytes, and small helpers to
//! measure what a side left behind (bytes on disk, peak memory).

use std::fmt::Write as _;
use std::path::Path;

/// Messages per conversation (a new conversation id every this many messages).
const CONVERSATION_LEN: usize = 1_000;
/// Target length of a message's text, in bytes.
const TEXT_LEN: usize = 200;

/// Words the texts are drawn from: English-like text, about as compressible as chat.
const WORDS: &[&str] = &[
    "the",
    "build",
    "failed",
    "in",
    "linker",
    "step",
    "undefined",
    "reference",
    "to",
    "sqlite",
    "I",
    "rebuilt",
    "with",
    "bundled",
    "feature",
    "cleared",
    "target",
    "and",
    "error",
    "is",
    "gone",
    "next",
    "will",
    "rerun",
    "integration",
    "suite",
    "test",
    "passes",
    "now",
    "after",
    "changing",
    "timeout",
    "file",
    "function",
    "returns",
    "value",
    "when",
    "config",
    "missing",
    "should",
    "we",
    "add",
    "a",
    "check",
    "for",
    "empty",
    "input",
    "here",
    "that",
    "makes",
    "sense",
    "let",
    "me",
    "look",
    "at",
    "stack",
    "trace",
    "first",
    "it",
    "points",
    "parser",
    "module",
    "line",
    "42",
    "commit",
    "branch",
    "merge",
    "review",
    "comment",
    "fixed",
];

/// One chat message, the same on every side of every row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// `user` or `assistant`, alternating.
    pub role: &'static str,
    /// About [`TEXT_LEN`] bytes of text, different for every message.
    pub text: String,
}

/// Message `i` of the workload (deterministic: every side and process builds the same ones).
pub fn message(i: usize) -> Message {
    let mut text = String::with_capacity(TEXT_LEN + 16);
    let _ = write!(text, "#{i} ");
    // A small LCG seeded by the index picks the words; no randomness shared with anything.
    let mut state = (i as u64).wrapping_mul(6_364_136_223_846_793_005) ^ 0x9E37_79B9_7F4A_7C15;
    while text.len() < TEXT_LEN {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let word = WORDS[((state >> 33) as usize) % WORDS.len()];
        text.push_str(word);
        text.push(' ');
    }
    text.truncate(TEXT_LEN);
    Message {
        conversation_id: format!("conversation-{:05}", i / CONVERSATION_LEN),
        role: if i.is_multiple_of(2) {
            "user"
        } else {
            "assistant"
        },
        text,
    }
}

/// Messages `from..to`.
pub fn messages(from: usize, to: usize) -> Vec<Message> {
    (from..to).map(message).collect()
}

/// Total size of the regular files under `dir` (recursively); 0 if it does not exist.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Copies the directory tree `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// This process's peak resident set (`VmHWM` in `/proc/self/status`), in KiB; `None` where
/// the file does not exist (non-Linux).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A fresh temp dir (on the same disk as everything else under the system temp dir).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tandem-rbench-")
        .tempdir()
        .expect("temp dir")
}
