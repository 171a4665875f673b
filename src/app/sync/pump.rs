//! The pump: push own ops, pull and ingest everyone's, acknowledge what is durable.

use std::sync::Arc;

use crate::domain::oplog::{DriftGuard, OpRecord};
use crate::ports::{PullCursors, RelayError};

use super::replay::{blocking, ingest, Opener};
use super::{DeviceSync, PumpReport, SyncError};

impl DeviceSync {
    /// One reconciliation round: push own ops the relay has not acknowledged, pull everything
    /// after the journal's frontier (rebasing from the relay's checkpoint if the relay has
    /// compacted what this device needs), verify, open, journal and fold it, then acknowledge
    /// the journal's frontier as read back from durable state.
    ///
    /// A refused batch (tampered, forked, far-future or undecryptable ops) fails the pump with
    /// a typed error and leaves the journal and the fold exactly as they were; batches of
    /// earlier rounds stay journaled. Safe to call again after any error or crash.
    pub async fn pump(&mut self) -> Result<PumpReport, SyncError> {
        let mut report = PumpReport::default();
        self.refresh_current_keys().await?;
        self.relay.register(self.device, self.now_ms()).await?;
        self.push(&mut report).await?;
        self.pull(&mut report).await?;
        let journal = Arc::clone(&self.journal);
        let durable = blocking(move || Ok(journal.frontier()?)).await?;
        self.relay.ack(self.device, &durable, self.now_ms()).await?;
        self.frontier = durable.clone();
        report.acked = durable;
        Ok(report)
    }

    async fn push(&mut self, report: &mut PumpReport) -> Result<(), SyncError> {
        let (device, limit) = (self.device, self.config.push_batch.max(1));
        for _ in 0..self.config.max_rounds {
            let journal = Arc::clone(&self.journal);
            let ops: Vec<OpRecord> = blocking(move || {
                let from = journal.push_cursor(device)?;
                Ok(journal.ops_from(device, from, limit)?)
            })
            .await?;
            let Some(next) = ops.last().map(|op| op.seq().next()) else {
                return Ok(());
            };
            let outcome = self.relay.push(device, &ops, self.now_ms()).await?;
            report.pushed += outcome.accepted;
            report.push_duplicates += outcome.duplicates;
            let journal = Arc::clone(&self.journal);
            blocking(move || Ok(journal.advance_push_cursor(device, next)?)).await?;
            if ops.len() < limit {
                return Ok(());
            }
        }
        report.more = true;
        Ok(())
    }

    async fn pull(&mut self, report: &mut PumpReport) -> Result<(), SyncError> {
        let limit = self.config.pull_batch.max(1);
        for _ in 0..self.config.max_rounds {
            let cursors = self.journal_cursors().await?;
            let batch = match self
                .relay
                .pull(self.device, &cursors, limit, self.now_ms())
                .await
            {
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
                return Ok(());
            }
            let more = batch.more;
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
            let newest = ingested.opened.iter().map(OpRecord::hlc).max();
            let summary = self.state.apply_all_owned(ingested.opened)?;
            report.folded += summary.changed;
            if let Some(newest) = newest {
                // Verified against the same drift bound, so the merge is accepted.
                let _ = self.author.observe(&newest, drift.now_ms);
            }
            if !more {
                return Ok(());
            }
        }
        report.more = true;
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use uuid::Uuid;

    use crate::adapters::keys::StaticKeyProvider;
    use crate::adapters::sqlite::{SqliteJournal, SqliteOptions};
    use crate::adapters::system::ManualClock;
    use crate::app::sync::DeviceSync;
    use crate::domain::ids::DeviceId;
    use crate::domain::oplog::{OpAuthor, OpPayload, Scope, Surface};
    use crate::ports::lease::MockLeaseCoordinator;
    use crate::ports::relay::MockRelay;
    use crate::ports::{Journal, PullBatch, PushOutcome};

    #[tokio::test]
    async fn pump_pushes_durable_own_ops_once_and_acks_the_journal_frontier() {
        let device = DeviceId::from_uuid(Uuid::from_u128(0xA)).unwrap();
        let journal = Arc::new(SqliteJournal::open_in_memory(SqliteOptions::default()).unwrap());
        journal.local_device_id(device).unwrap();
        let mut author = OpAuthor::new(device);
        let ops: Vec<_> = (0..2)
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
            .collect();
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

        let mut sync = DeviceSync::builder(
            journal.clone(),
            Arc::new(relay),
            Arc::new(MockLeaseCoordinator::new()),
            Arc::new(StaticKeyProvider::new()),
        )
        .clock(Arc::new(ManualClock::new(100)))
        .device_candidate(device)
        .e2e(false)
        .open()
        .await
        .unwrap();
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
}
