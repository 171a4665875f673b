//! The checks after each kill: nothing the child reported is lost, nothing is held twice,
//! every copy of every chain verifies and is the same, and both devices hold one state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use tandem::adapters::fs_relay::FsRelay;
use tandem::adapters::sqlite::SqliteJournal;
use tandem::app::sync::DeviceSync;
use tandem::domain::ids::{DeviceId, Seq};
use tandem::domain::oplog::{verify_chain, ChainTip, OpId, OpRecord};
use tandem::ports::{BatchLimit, Journal, PullCursors, Relay};

use super::fixture::{device_id, relay_dir, CONVERSATION, DEVICE_A, DEVICE_B};

/// An append the child reported as committed.
#[derive(Debug, Clone)]
pub struct Ack {
    pub seq: Seq,
    pub text: String,
    pub cycle: u64,
}

/// What one verification found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Ops in A's chain.
    pub a_ops: usize,
    /// Of those, committed but never reported (the kill came before the line).
    pub unreported: usize,
    /// Ops in B's chain.
    pub b_ops: usize,
}

/// Both chains as one journal holds them.
async fn chains(journal: &Arc<SqliteJournal>) -> Result<BTreeMap<DeviceId, Vec<OpRecord>>, String> {
    let journal = Arc::clone(journal);
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for n in [DEVICE_A, DEVICE_B] {
            let ops = journal
                .ops_from(device_id(n), Seq::ZERO, BatchLimit::ops(usize::MAX))
                .map_err(|e| format!("read journal: {e}"))?;
            out.insert(device_id(n), ops);
        }
        Ok(out)
    })
    .await
    .map_err(|e| format!("journal reader: {e}"))?
}

/// Both chains as the relay holds them, read by a device not in the roster.
async fn relay_chains(dir: &Path) -> Result<BTreeMap<DeviceId, Vec<OpRecord>>, String> {
    let path = relay_dir(dir);
    let relay = tokio::task::spawn_blocking(move || FsRelay::open(path))
        .await
        .map_err(|e| format!("relay opener: {e}"))?
        .map_err(|e| format!("open relay: {e}"))?;
    let batch = relay
        .pull(
            device_id(0xFF),
            &PullCursors::new(),
            BatchLimit::ops(usize::MAX),
            0,
        )
        .await
        .map_err(|e| format!("pull everything: {e}"))?;
    if batch.more {
        return Err("an unlimited pull said more".into());
    }
    Ok(batch.ops)
}

/// Checks the two converged devices against everything the child reported and B appended.
pub async fn verify(
    dir: &Path,
    (a, a_journal): (&DeviceSync, &Arc<SqliteJournal>),
    (b, b_journal): (&DeviceSync, &Arc<SqliteJournal>),
    acks: &HashMap<OpId, Ack>,
    b_texts: &[String],
) -> Result<Verified, String> {
    if a.frontier() != b.frontier() {
        return Err(format!(
            "the devices did not converge: A {:?}, B {:?}",
            a.frontier(),
            b.frontier()
        ));
    }
    if a.state_hash() != b.state_hash() {
        return Err("same frontier, different state hashes".into());
    }

    // Every copy of every chain verifies from genesis and is the same.
    let in_a = chains(a_journal).await?;
    let in_b = chains(b_journal).await?;
    let on_relay = relay_chains(dir).await?;
    for n in [DEVICE_A, DEVICE_B] {
        let d = device_id(n);
        let ours = in_a.get(&d).cloned().unwrap_or_default();
        verify_chain(&ours, &ChainTip::genesis(d), None)
            .map_err(|e| format!("chain {n:X} in A's journal does not verify: {e}"))?;
        if in_b.get(&d).cloned().unwrap_or_default() != ours {
            return Err(format!("chain {n:X} differs between A's and B's journals"));
        }
        if on_relay.get(&d).cloned().unwrap_or_default() != ours {
            return Err(format!(
                "chain {n:X} differs between A's journal and the relay"
            ));
        }
    }

    // Nothing reported is lost.
    let a_chain = &in_a[&device_id(DEVICE_A)];
    for (op_id, ack) in acks {
        let held = usize::try_from(ack.seq.get())
            .ok()
            .and_then(|i| a_chain.get(i))
            .map(OpRecord::op_id);
        if held != Some(*op_id) {
            return Err(format!(
                "reported append {op_id} ({:?}, cycle {}) is not at seq {} of A's chain",
                ack.text, ack.cycle, ack.seq
            ));
        }
    }

    // Nothing is held twice: one turn per op, every text once.
    let turns = a.transcript(CONVERSATION);
    if turns != b.transcript(CONVERSATION) {
        return Err("the devices' transcripts differ".into());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in &turns {
        *seen.entry(t.text.as_str()).or_default() += 1;
    }
    if let Some((text, n)) = seen.iter().find(|(_, n)| **n > 1) {
        return Err(format!("turn {text:?} is held {n} times"));
    }
    let b_chain_len = in_a[&device_id(DEVICE_B)].len();
    if turns.len() != a_chain.len() + b_chain_len {
        return Err(format!(
            "{} turns for {} ops of A and {b_chain_len} of B",
            turns.len(),
            a_chain.len()
        ));
    }
    for ack in acks.values() {
        if seen.get(ack.text.as_str()) != Some(&1) {
            return Err(format!(
                "reported turn {:?} is not in the transcript",
                ack.text
            ));
        }
    }
    if b_texts.len() != b_chain_len {
        return Err(format!(
            "B appended {} turns but its chain has {b_chain_len} ops",
            b_texts.len()
        ));
    }
    if let Some(missing) = b_texts.iter().find(|t| seen.get(t.as_str()) != Some(&1)) {
        return Err(format!("B's turn {missing:?} is not in the transcript"));
    }
    Ok(Verified {
        a_ops: a_chain.len(),
        unreported: a_chain.len().saturating_sub(acks.len()),
        b_ops: b_chain_len,
    })
}
