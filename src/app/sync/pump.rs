//! The pump: push own ops, pull and ingest everyone's, acknowledge what is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{DriftGuard, OpRecord, ReadyOp};
use crate::ports::{BatchLimit, PullBatch, PullCursors, RelayError};

use super::replay::{blocking, ingest, joined, Opener};
use super::{DeviceSync, PumpReport, SyncError};

impl DeviceSync {
    /// One reconciliation round: push own ops the relay has not acknowledged, pull everything
    /// after the journal's frontier (rebasing from the relay's checkpoint if the relay has
    /// compacted what this device needs), verify, open, journal and fold it, then acknowledge
    /// the journal's frontier as read back from durable state.
    ///
    /// A refused batch (tampered, forked or undecryptable ops, a payload that does not fit its
    /// surface) fails the pump with a typed error and leaves the journal and the fold exactly
    /// as they were; batches of earlier rounds stay journaled. Safe to call again after any
    /// error or crash.
    ///
    /// An op that cannot be taken *yet* holds back only its own chain: one stamped further
    /// ahead of local time than [`SyncConfig::max_drift_ms`](super::SyncConfig::max_drift_ms)
    /// ([`VerifyError::TooFarInFuture`](crate::domain::oplog::VerifyError::TooFarInFuture)),
    /// or one sealed under a scope key this device does not hold
    /// ([`KeyError::NoKey`](crate::ports::KeyError::NoKey),
    /// [`KeyError::UnknownEpoch`](crate::ports::KeyError::UnknownEpoch)). The pump journals the
    /// ops before it and every other chain, acknowledges what it journaled, and then returns
    /// that error (the first held chain's, by device id), so one device with a clock far ahead
    /// or a key still on its way does not stop the others syncing. A later pump takes the
    /// held chain once local time or the key has caught up. Until then
    /// [`SyncStatus::held_back`](super::SyncStatus::held_back) lists it, and
    /// [`DeviceSync::fence_check`] authorises no dispatch.
    ///
    /// While one pulled batch is ingested, the next is already being pulled (from the cursors
    /// the journal will have once the batch is journaled), so the relay's reads overlap the
    /// journal's writes; a batch pulled ahead is ingested only if the journal ended up exactly
    /// at its cursors. Likewise the next batch of own ops is read from the journal while one
    /// is pushed.
    pub async fn pump(&mut self) -> Result<PumpReport, SyncError> {
        let mut report = PumpReport::default();
        self.refresh_current_keys().await?;
        self.relay.register(self.device, self.now_ms()).await?;
        self.push(&mut report).await?;
        let held = self.pull(&mut report).await?;
        // A pull that went through to the end: exactly these chains are held back now.
        self.held_back = held.keys().copied().collect();
        let journal = Arc::clone(&self.journal);
        let durable = blocking(move || Ok(journal.frontier()?)).await?;
        self.relay.ack(self.device, &durable, self.now_ms()).await?;
        self.frontier = durable.clone();
        report.acked = durable;
        match held.into_values().next() {
            Some(not_yet) => Err(not_yet),
            None => Ok(report),
        }
    }

    async fn push(&mut self, report: &mut PumpReport) -> Result<(), SyncError> {
        let device = self.device;
        let limit = BatchLimit::new(self.config.push_batch.max(1), self.config.batch_bytes);
        let journal = Arc::clone(&self.journal);
        let mut ops: Vec<OpRecord> = blocking(move || {
            let from = journal.push_cursor(device)?;
            Ok(journal.ops_from(device, from, limit)?)
        })
        .await?;
        for round in 0..self.config.max_rounds {
            let Some(next) = ops.last().map(|op| op.seq().next()) else {
                return Ok(());
            };
            // The next batch is read from the journal while this one is pushed; after the last
            // round's push, only whether there is one.
            let ahead = if round + 1 < self.config.max_rounds {
                limit
            } else {
                BatchLimit::ops(1)
            };
            let journal = Arc::clone(&self.journal);
            let ahead = tokio::task::spawn_blocking(move || journal.ops_from(device, next, ahead));
            let outcome = self.relay.push(device, &ops, self.now_ms()).await?;
            report.pushed += outcome.accepted;
            report.push_duplicates += outcome.duplicates;
            let journal = Arc::clone(&self.journal);
            blocking(move || Ok(journal.advance_push_cursor(device, next)?)).await?;
            ops = joined(ahead).await??;
        }
        report.more = !ops.is_empty();
        Ok(())
    }

    /// Pulls and ingests batches until the relay has nothing more (or `max_rounds`). Returns
    /// the chains held back (see `ingest`), each with why; later rounds skip them.
    async fn pull(
        &mut self,
        report: &mut PumpReport,
    ) -> Result<BTreeMap<DeviceId, SyncError>, SyncError> {
        let limit = BatchLimit::new(self.config.pull_batch.max(1), self.config.batch_bytes);
        let mut held = BTreeMap::new();
        // The next batch, pulled while the current one is verified, opened and journaled.
        let mut ahead: Option<PullAhead> = None;
        for round in 0..self.config.max_rounds {
            let mut cursors = self.journal_cursors().await?;
            // A cursor past any seq asks for nothing more of a held chain.
            for device in held.keys() {
                cursors.insert(*device, Seq::new(u64::MAX));
            }
            let pulled = match ahead.take() {
                Some(next) if next.cursors == cursors => next.batch().await?,
                stale => {
                    if let Some(next) = stale {
                        // Pulled from cursors the journal did not end up at: only its failure
                        // counts (every relay call that fails fails the pump).
                        next.batch().await??;
                    }
                    self.relay
                        .pull(self.device, &cursors, limit, self.now_ms())
                        .await
                }
            };
            let batch = match pulled {
                Ok(batch) => batch,
                Err(RelayError::Compacted { .. }) if !report.rebased => {
                    if !self.rebase().await? {
                        return Err(SyncError::NoCheckpoint);
                    }
                    report.rebased = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if batch.is_empty() {
                return Ok(held);
            }
            let more = batch.more;
            if more && round + 1 < self.config.max_rounds {
                ahead = Some(PullAhead::start(self, after(&cursors, &batch), limit));
            }
            let ops: Vec<OpRecord> = batch.ops.into_values().flatten().collect();
            report.pulled += ops.len();
            let (journal, keys) = (Arc::clone(&self.journal), Arc::clone(&self.keys));
            let drift = DriftGuard {
                now_ms: self.now_ms(),
                max_drift_ms: self.config.max_drift_ms,
            };
            let plaintext_ok = !self.config.e2e;
            let ingested = blocking(move || {
                ingest(
                    journal.as_ref(),
                    &mut Opener::new(keys),
                    ops,
                    drift,
                    plaintext_ok,
                )
            })
            .await?;
            report.journaled += ingested.journaled;
            self.frontier = ingested.frontier;
            let newest = ingested.opened.iter().map(ReadyOp::hlc).max();
            let summary = self.state.apply_ready(ingested.opened);
            report.folded += summary.changed;
            if let Some(newest) = newest {
                // Verified against the same drift bound, so the merge is accepted.
                let _ = self.author.observe(&newest, drift.now_ms);
            }
            for (device, why) in ingested.held {
                tracing::warn!(%device, error = %why, "holding back a chain this device cannot take yet");
                // Known to the fence at once, also if a later round fails the pump.
                self.held_back.insert(device);
                held.entry(device).or_insert(why);
            }
            if !more {
                return Ok(held);
            }
        }
        report.more = true;
        Ok(held)
    }

    /// Per chain, the next seq wanted, from the journal's frontier.
    async fn journal_cursors(&self) -> Result<PullCursors, SyncError> {
        let journal = Arc::clone(&self.journal);
        let frontier = blocking(move || Ok(journal.frontier()?)).await?;
        Ok(frontier
            .iter()
            .map(|(device, head)| (*device, head.seq.next()))
            .collect::<PullCursors>())
    }
}

/// A pull started ahead of the ingest of the batch before it, from the cursors the journal
/// will be at once that batch is journaled. Dropping it cancels the pull (a pull changes
/// nothing at the relay but the reader's last-seen time).
struct PullAhead {
    cursors: PullCursors,
    task: JoinHandle<Result<PullBatch, RelayError>>,
}

impl PullAhead {
    fn start(sync: &DeviceSync, cursors: PullCursors, limit: BatchLimit) -> Self {
        let (relay, device, now) = (Arc::clone(&sync.relay), sync.device, sync.now_ms());
        let from = cursors.clone();
        let task = tokio::spawn(async move { relay.pull(device, &from, limit, now).await });
        Self { cursors, task }
    }

    /// The relay's answer. A panic in the pull is resumed here.
    async fn batch(mut self) -> Result<Result<PullBatch, RelayError>, SyncError> {
        joined(&mut self.task).await
    }
}

impl Drop for PullAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cursors after `batch` is journaled: each pulled chain continues after its last op.
fn after(cursors: &PullCursors, batch: &PullBatch) -> PullCursors {
    let mut next = cursors.clone();
    for (device, ops) in &batch.ops {
        if let Some(last) = ops.last() {
            next.insert(*device, last.seq().next());
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use uuid::Uuid;

    use crate::adapters::keys::StaticKeyProvider;
    use crate::adapters::sqlite::{SqliteJournal, SqliteOptions};
    use crate::adapters::system::ManualClock;
    use crate::app::sync::{DeviceSync, SyncConfig, SyncError};
    use crate::domain::ids::{DeviceId, Seq};
    use crate::domain::oplog::{OpAuthor, OpPayload, OpRecord, Scope, Surface};
    use crate::ports::lease::MockLeaseCoordinator;
    use crate::ports::relay::MockRelay;
    use crate::ports::{BatchLimit, Journal, PullBatch, PullCursors, PushOutcome, RelayError};

    fn local() -> DeviceId {
        DeviceId::from_uuid(Uuid::from_u128(0xA)).unwrap()
    }

    fn remote() -> DeviceId {
        DeviceId::from_uuid(Uuid::from_u128(0xB)).unwrap()
    }

    /// A chain of `n` plain run ops authored by `device`.
    fn chain_of(device: DeviceId, n: usize) -> Vec<OpRecord> {
        let mut author = OpAuthor::new(device);
        (0..n)
            .map(|i| {
                author
                    .append(
                        10,
                        Scope::Personal,
                        Surface::Run,
                        OpPayload::Plain(json!(i)),
                    )
                    .unwrap()
            })
            .collect()
    }

    /// An empty journal of the local device.
    fn journal() -> Arc<SqliteJournal> {
        let journal = Arc::new(SqliteJournal::open_in_memory(SqliteOptions::default()).unwrap());
        journal.local_device_id(local()).unwrap();
        journal
    }

    /// The local device's session over `journal` and `relay`, E2E off.
    async fn session(
        journal: Arc<SqliteJournal>,
        relay: MockRelay,
        config: SyncConfig,
    ) -> DeviceSync {
        DeviceSync::builder(
            journal,
            Arc::new(relay),
            Arc::new(MockLeaseCoordinator::new()),
            Arc::new(StaticKeyProvider::new()),
        )
        .clock(Arc::new(ManualClock::new(100)))
        .device_candidate(local())
        .config(config)
        .e2e(false)
        .open()
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn pump_pushes_durable_own_ops_once_and_acks_the_journal_frontier() {
        let device = local();
        let journal = journal();
        let ops = chain_of(device, 2);
        journal.commit(&ops).unwrap();
        let durable = journal.frontier().unwrap();

        let mut relay = MockRelay::new();
        relay.expect_register().times(2).returning(|_, _| Ok(()));
        let pushed = ops.clone();
        relay
            .expect_push()
            .times(1)
            .withf(move |d, sent, _| *d == device && sent == pushed.as_slice())
            .returning(|_, sent, _| {
                Ok(PushOutcome {
                    accepted: sent.len(),
                    duplicates: 0,
                })
            });
        relay
            .expect_pull()
            .times(2)
            .returning(|_, _, _, _| Ok(PullBatch::default()));
        let expected = durable.clone();
        relay
            .expect_ack()
            .times(2)
            .withf(move |d, f, _| *d == device && *f == expected)
            .returning(|_, _, _| Ok(()));

        let mut sync = session(journal.clone(), relay, SyncConfig::default()).await;
        assert_eq!(
            sync.state().events(&Surface::Run).count(),
            2,
            "rebuilt on open"
        );
        let first = sync.pump().await.unwrap();
        assert_eq!((first.pushed, first.acked.clone()), (2, durable));
        // The cursor moved durably: the second pump pushes nothing.
        let second = sync.pump().await.unwrap();
        assert_eq!(second.pushed, 0);
        assert_eq!(journal.push_cursor(device).unwrap().get(), 2);
    }

    /// A relay holding `chain`, answering pulls of two ops at most and recording each pull's
    /// cursors; `on_pull` may replace an answer (and act) given the pull's cursors.
    fn relay_of(
        remote: DeviceId,
        chain: Vec<OpRecord>,
        pulls: Arc<Mutex<Vec<PullCursors>>>,
        on_pull: impl Fn(&PullCursors) -> Option<Result<PullBatch, RelayError>> + Send + Sync + 'static,
    ) -> MockRelay {
        let mut relay = MockRelay::new();
        relay.expect_register().returning(|_, _| Ok(()));
        relay.expect_ack().returning(|_, _, _| Ok(()));
        relay
            .expect_pull()
            .returning(move |_, cursors: &PullCursors, limit: BatchLimit, _| {
                pulls.lock().unwrap().push(cursors.clone());
                if let Some(answer) = on_pull(cursors) {
                    return answer;
                }
                let from = cursors.get(&remote).map_or(0, |s| s.get() as usize);
                let end = (from + limit.ops).min(chain.len());
                let mut batch = PullBatch {
                    more: end < chain.len(),
                    ..PullBatch::default()
                };
                if from < end {
                    batch.ops.insert(remote, chain[from..end].to_vec());
                }
                Ok(batch)
            });
        relay
    }

    fn pull_two() -> SyncConfig {
        SyncConfig {
            pull_batch: 2,
            ..SyncConfig::default()
        }
    }

    fn cursor(device: DeviceId, next: u64) -> PullCursors {
        [(device, Seq::new(next))].into()
    }

    /// The ops of `device`'s chain the journal holds.
    fn held(journal: &SqliteJournal, device: DeviceId) -> Vec<OpRecord> {
        journal
            .ops_from(device, Seq::ZERO, BatchLimit::ops(100))
            .unwrap()
    }

    #[tokio::test]
    async fn each_batch_is_pulled_once_from_the_cursors_the_journal_reaches() {
        let (remote, chain) = (remote(), chain_of(remote(), 6));
        let pulls = Arc::new(Mutex::new(Vec::new()));
        let relay = relay_of(remote, chain.clone(), Arc::clone(&pulls), |_| None);
        let journal = journal();
        let mut sync = session(Arc::clone(&journal), relay, pull_two()).await;
        let report = sync.pump().await.unwrap();
        assert_eq!((report.pulled, report.journaled), (6, 6));
        assert_eq!(
            *pulls.lock().unwrap(),
            vec![PullCursors::new(), cursor(remote, 2), cursor(remote, 4)],
            "every batch pulled once, from the cursors the journal reached"
        );
        assert_eq!(held(&journal, remote), chain);
    }

    #[tokio::test]
    async fn a_batch_pulled_ahead_is_dropped_when_the_journal_ends_elsewhere() {
        let (remote, chain) = (remote(), chain_of(remote(), 6));
        let pulls = Arc::new(Mutex::new(Vec::new()));
        let journal = journal();
        // Another writer journals ops 0..=3 while the first batch (ops 0 and 1) is in flight,
        // so the journal ends at seq 3, not at the batch's end.
        let (other, first_four) = (Arc::clone(&journal), chain[..4].to_vec());
        let relay = relay_of(remote, chain.clone(), Arc::clone(&pulls), move |c| {
            if c.is_empty() {
                other.commit(&first_four).unwrap();
            }
            None
        });
        let mut sync = session(Arc::clone(&journal), relay, pull_two()).await;
        let report = sync.pump().await.unwrap();
        // Ops 2 and 3, pulled ahead from seq 2, were not ingested: ops 4 and 5 were pulled
        // again from where the journal ended.
        assert_eq!((report.pulled, report.journaled), (4, 2));
        assert_eq!(
            *pulls.lock().unwrap(),
            vec![PullCursors::new(), cursor(remote, 2), cursor(remote, 4)]
        );
        assert_eq!(held(&journal, remote), chain);
    }

    #[tokio::test]
    async fn a_failed_pull_ahead_fails_the_pump_and_keeps_what_was_journaled() {
        let (remote, chain) = (remote(), chain_of(remote(), 6));
        let pulls = Arc::new(Mutex::new(Vec::new()));
        let relay = relay_of(remote, chain.clone(), Arc::clone(&pulls), move |c| {
            (c.get(&remote).map(|s| s.get()) == Some(2))
                .then(|| Err(RelayError::Backend("line down".into())))
        });
        let journal = journal();
        let mut sync = session(Arc::clone(&journal), relay, pull_two()).await;
        let err = sync.pump().await.unwrap_err();
        assert!(
            matches!(err, SyncError::Relay(RelayError::Backend(_))),
            "{err}"
        );
        // The first batch stays journaled; the next pump carries on from it.
        assert_eq!(held(&journal, remote), chain[..2].to_vec());
    }

    #[tokio::test]
    async fn own_ops_are_pushed_in_order_once_while_the_next_batch_is_read() {
        let (device, journal) = (local(), journal());
        let ops = chain_of(device, 7);
        journal.commit(&ops).unwrap();
        let pushed: Arc<Mutex<Vec<Vec<OpRecord>>>> = Arc::default();
        let mut relay = MockRelay::new();
        relay.expect_register().returning(|_, _| Ok(()));
        relay.expect_ack().returning(|_, _, _| Ok(()));
        relay
            .expect_pull()
            .returning(|_, _, _, _| Ok(PullBatch::default()));
        let seen = Arc::clone(&pushed);
        relay.expect_push().returning(move |_, batch, _| {
            seen.lock().unwrap().push(batch.to_vec());
            Ok(PushOutcome {
                accepted: batch.len(),
                duplicates: 0,
            })
        });
        let config = SyncConfig {
            push_batch: 2,
            max_rounds: 3,
            ..SyncConfig::default()
        };
        let mut sync = session(Arc::clone(&journal), relay, config).await;
        // Three rounds of two: the pump stops at the round limit and says more is left.
        let first = sync.pump().await.unwrap();
        assert_eq!((first.pushed, first.more), (6, true));
        assert_eq!(journal.push_cursor(device).unwrap(), Seq::new(6));
        let second = sync.pump().await.unwrap();
        assert_eq!((second.pushed, second.more), (1, false));
        let batches: Vec<Vec<OpRecord>> = ops.chunks(2).map(<[OpRecord]>::to_vec).collect();
        assert_eq!(*pushed.lock().unwrap(), batches);
        assert_eq!(journal.push_cursor(device).unwrap(), Seq::new(7));
    }
}
