//! [`ColdConsumer`]: drains the effect log into the cloud tables, one unit per [`tick`].
//!
//! A step overlaps three things: the upload of its unit, the reading and sealing of the next
//! batch, and the durable cursor commit of the unit the previous step delivered (see
//! [`super::ack`]). A step that sends nothing, and [`run`] when it stops, finish that commit
//! before they return.
//!
//! [`tick`]: ColdConsumer::tick
//! [`run`]: ColdConsumer::run

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::adapters::sqlite::{NewDeadLetter, SqliteColdStore};
use crate::app::auth::AuthState;
use crate::app::devices::Devices;
use crate::app::effect_log::EffectConsumer;
use crate::domain::backoff::RetryClass;
use crate::domain::{EffectRecord, EffectSeq};
use crate::ports::{
    AccessToken, AuthContext, Clock, CloudSync, SessionMetadataProvider, StoreError, TokenRefresher,
};

use super::ack::{cursor_committed, InFlightAck};
use super::config::ColdConfig;
use super::doorbell::Doorbell;
use super::error::ColdError;
use super::execute::{Failure, Pending};
use super::jitter::Jitter;
use super::plan::{plan, MessageItem, Plan, Unit, WindowKind, Work};

/// What one [`ColdConsumer::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// No auth context is set: nothing was read, sent or acknowledged.
    NoContext,
    /// Nothing after the cursor.
    Idle,
    /// A batch (or status window) is gathering until `until`.
    Batching {
        /// When it will be sent even if it has not grown.
        until: Instant,
    },
    /// A failed unit waits for its retry time.
    BackingOff {
        /// When it will be retried.
        until: Instant,
    },
    /// Effects the cold path ignores were passed over.
    Skipped {
        /// The new cursor position.
        through: EffectSeq,
    },
    /// A unit reached the cloud. Its cursor commit has started and is finished by the next
    /// step, alongside that step's upload: until then [`ColdConsumer::position`] may still
    /// name the unit before. Should the commit fail, the next step reports it as
    /// [`Self::Failed`] and the unit is sent again before anything after it.
    Delivered {
        /// Effects delivered (messages in the batch, statuses, or 1).
        items: usize,
        /// Where the cursor moves once the commit finishes.
        through: EffectSeq,
    },
    /// The cloud refused a unit for good and the cursor advanced past it. A unit of one
    /// effect is dead-lettered; a batch is sent again one item at a time, and only the items
    /// refused on their own are dead-lettered while the others land.
    DeadLettered {
        /// Effects dead-lettered.
        items: usize,
        /// Effects of the unit that landed when sent on their own.
        delivered: usize,
        /// The new cursor position.
        through: EffectSeq,
    },
    /// A unit failed and will be retried at `retry_at`.
    Failed {
        /// How the failure was classified.
        class: RetryClass,
        /// When it will be retried.
        retry_at: Instant,
    },
}

/// How far behind the cold path is, for health reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdLag {
    /// Effects committed but not yet acknowledged (an upper bound: the log may have gaps, and
    /// while the consumer is busy it counts the unit just delivered whose cursor commit is
    /// still in flight).
    pub behind: u64,
    /// Age of the oldest unacknowledged effect.
    pub oldest_unsent_age: Option<Duration>,
    /// The last failure, until the next success.
    pub last_error: Option<String>,
    /// Dead letters waiting for an operator.
    pub dead_letters: u64,
    /// Whether the consumer is paused for want of an auth context.
    pub waiting_for_auth: bool,
}

#[derive(Debug, Default)]
pub(super) struct Worker {
    pending: Option<Pending>,
    window: Option<(WindowKind, EffectSeq, Instant)>,
    retry_at: Option<Instant>,
    /// The token of the last unauthenticated failure: a new token cuts the backoff short.
    refused_token: Option<AccessToken>,
    failures: u32,
    /// The effects right after the cursor as last read (a prefix of the log, in order):
    /// units that are ready on them are planned without reading the log again.
    lookahead: Vec<EffectRecord>,
    /// The cursor commit of the unit the last step delivered, if not yet seen to finish.
    ack: Option<InFlightAck>,
}

impl Worker {
    /// The cursor reached (or is being committed to) `through`: what lies before it is done.
    fn acknowledged(&mut self, through: EffectSeq) {
        self.lookahead.retain(|r| r.seq > through);
    }

    /// Takes the outcome of the finished cursor commit, if any (see [`Self::commit_failed`]).
    fn settle_ack(&mut self) -> Result<(), Failure> {
        match InFlightAck::take_finished(&mut self.ack) {
            None | Some(Ok(())) => Ok(()),
            Some(Err((failure, delivered))) => {
                self.commit_failed(delivered);
                Err(failure)
            }
        }
    }

    /// The cursor commit past `delivered` failed: that unit is pending again, in place of
    /// whatever came after it, and what was read ahead is forgotten (it no longer starts at
    /// the cursor).
    fn commit_failed(&mut self, delivered: Pending) {
        self.pending = Some(delivered);
        self.lookahead.clear();
    }
}

/// Waits for the cursor commit in `slot`, if any, to finish (cancel-safe).
async fn finish_commit(slot: &mut Option<InFlightAck>) {
    if let Some(ack) = slot {
        ack.finish().await;
    }
}

/// The cold path: drains the effect log into the cloud tables. See the module docs of
/// [`crate::app::cold`].
pub struct ColdConsumer {
    pub(super) cloud: Arc<dyn CloudSync>,
    pub(super) devices: Arc<Devices>,
    pub(super) log: EffectConsumer,
    pub(super) store: Arc<SqliteColdStore>,
    pub(super) metadata: Arc<dyn SessionMetadataProvider>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) jitter: Arc<dyn Jitter>,
    pub(super) config: ColdConfig,
    pub(super) doorbell: Arc<Doorbell>,
    pub(super) worker: tokio::sync::Mutex<Worker>,
    pub(super) last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for ColdConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdConsumer")
            .field("consumer", &self.config.consumer)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ColdConsumer {
    /// The auth state: set a context to start, clear it to pause.
    pub fn auth(&self) -> &Arc<AuthState> {
        self.devices.auth()
    }

    /// The device service (registration, revocation, key distribution) sharing this
    /// consumer's keyring.
    pub fn devices(&self) -> &Arc<Devices> {
        &self.devices
    }

    /// The doorbell that wakes the consumer (give it to the engine as a sink).
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// Settings.
    pub fn config(&self) -> &ColdConfig {
        &self.config
    }

    /// The last effect acknowledged durably. Exact whenever the consumer is not busy: after
    /// a step that returned anything but [`TickOutcome::Delivered`], and after [`Self::run`]
    /// returned. Right after a `Delivered` step the unit's cursor commit may still be in
    /// flight (the next step finishes it), so this may still name the effect before it.
    pub async fn position(&self) -> Result<EffectSeq, ColdError> {
        let log = self.log.clone();
        Ok(blocking_store(move || log.position()).await?)
    }

    pub(crate) fn cloud(&self) -> &Arc<dyn CloudSync> {
        &self.cloud
    }

    pub(crate) fn refresher(&self) -> &Arc<dyn TokenRefresher> {
        self.devices.refresher()
    }

    pub(crate) fn store(&self) -> &Arc<SqliteColdStore> {
        &self.store
    }

    pub(crate) fn metadata(&self) -> &Arc<dyn SessionMetadataProvider> {
        &self.metadata
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Does one unit of work (or reports why it cannot). Never sends anything without an auth
    /// context; moves the cursor only past effects that reached the cloud, were dead-lettered,
    /// or need nothing, and in order.
    ///
    /// The cursor commit of a unit delivered by the previous step runs alongside this step's
    /// upload, and is finished before this step returns, whatever it returns; a step that
    /// uploads nothing finishes it before planning anything. A failed commit is this step's
    /// outcome ([`TickOutcome::Failed`]): its unit is sent again, then what follows. So a
    /// crash at any point re-sends at most the units whose commits had not finished, and
    /// skips none.
    pub async fn tick(&self) -> TickOutcome {
        let mut guard = self.worker.lock().await;
        let worker = &mut *guard;
        let Some(context) = self.auth().current() else {
            return self.after_commit(worker, TickOutcome::NoContext).await;
        };
        let now = Instant::now();
        if let Some(until) = worker.retry_at {
            let token_changed = worker
                .refused_token
                .as_ref()
                .is_some_and(|refused| *refused != context.access_token);
            if now < until && !token_changed {
                return self
                    .after_commit(worker, TickOutcome::BackingOff { until })
                    .await;
            }
            worker.retry_at = None;
            worker.refused_token = None;
        }
        if worker.pending.is_none() {
            // Planning reads the log from the durable cursor: the last commit finishes first.
            if let Err(failure) = self.finish_ack(worker).await {
                return self.failed(worker, failure, None);
            }
            match self.next_unit(worker, now).await {
                Ok(Next::Unit(unit)) if unit.work == Work::Skip => {
                    let through = unit.through;
                    return match self.ack(through).await {
                        Ok(()) => {
                            worker.acknowledged(through);
                            TickOutcome::Skipped { through }
                        }
                        Err(failure) => self.failed(worker, failure, None),
                    };
                }
                Ok(Next::Unit(unit)) => worker.pending = Some(Pending::new(unit)),
                Ok(Next::Idle) => return TickOutcome::Idle,
                Ok(Next::Wait(until)) => return TickOutcome::Batching { until },
                Err(failure) => return self.failed(worker, failure, None),
            }
        }
        let ahead = worker.pending.as_ref().map(|p| {
            let through = p.unit.through;
            let left = worker.lookahead.iter().filter(|r| r.seq > through).count();
            let running_out = left < self.config.effective_batch_size();
            (
                through,
                self.batch_after(&worker.lookahead, through),
                running_out,
            )
        });
        let Some(pending) = worker.pending.as_mut() else {
            return TickOutcome::Idle;
        };
        // The next batch is read and sealed while this unit is in flight; it is used only if
        // this unit lands, so the cursor still advances in order. When what was read runs
        // out, the log is read on from this unit's end.
        let seal_ahead = async {
            let (through, ready, running_out) = ahead?;
            let (fresh, (unit, items)) = match ready {
                Some(found) => (None, found),
                None if !running_out => return None,
                None => {
                    let records = self.read_after(through).await?;
                    let found = self.batch_after(&records, through)?;
                    (Some(records), found)
                }
            };
            let rows = self.seal_ahead(&items, context.device_id).await?;
            Some((fresh, Pending::sealed(unit, rows)))
        };
        // The previous unit's cursor commit finishes while this unit uploads.
        let (result, next, ()) = tokio::join!(
            self.attempt(pending, &context),
            seal_ahead,
            finish_commit(&mut worker.ack),
        );
        let (through, items) = (pending.unit.through, pending.unit.len());
        // That commit comes first: if it failed, its unit is sent again before this one, and
        // whatever this step did is dropped (sending it again is harmless).
        if let Some(Err((failure, delivered))) = InFlightAck::take_finished(&mut worker.ack) {
            worker.commit_failed(delivered);
            return self.failed(worker, failure, None);
        }
        match result {
            Ok(()) => {
                let delivered = worker.pending.take();
                worker.ack = delivered.map(|d| InFlightAck::start(self.log.clone(), d));
                worker.acknowledged(through);
                if let Some((fresh, next)) = next {
                    if let Some(records) = fresh {
                        worker.lookahead = records;
                    }
                    worker.pending = Some(next);
                }
                worker.failures = 0;
                self.set_last_error(None);
                TickOutcome::Delivered { items, through }
            }
            Err(Failure::NoContext) => TickOutcome::NoContext,
            Err(Failure::Retry {
                class: RetryClass::Permanent,
                reason,
            }) => {
                // A batch the cloud refused as a whole is sent again item by item, so that
                // only what it refuses on its own is dead-lettered.
                let dead = if items > 1 {
                    self.split_refused(&pending.unit, &context).await
                } else {
                    self.dead_letter(&pending.unit, &reason)
                        .await
                        .map(|()| items)
                };
                match dead {
                    Ok(dead) => {
                        tracing::warn!(items, dead, %through, %reason, "cold path dead-lettered effects of a refused unit");
                        worker.acknowledged(through);
                        worker.pending = None;
                        worker.failures = 0;
                        self.set_last_error(Some(reason));
                        TickOutcome::DeadLettered {
                            items: dead,
                            delivered: items - dead,
                            through,
                        }
                    }
                    Err(failure) => self.failed(worker, failure, None),
                }
            }
            Err(failure) => {
                // The token last refused is the current one (a refresh may have replaced
                // the one this step started with).
                let refused = self.auth().current().map(|c| c.access_token);
                self.failed(worker, failure, refused)
            }
        }
    }

    /// Finishes the cursor commit left by the last `Delivered` step, if any, and takes its
    /// outcome (a failure makes that unit pending again).
    async fn finish_ack(&self, worker: &mut Worker) -> Result<(), Failure> {
        finish_commit(&mut worker.ack).await;
        worker.settle_ack()
    }

    /// `outcome`, once the cursor commit in flight has finished; its failure if it failed.
    async fn after_commit(&self, worker: &mut Worker, outcome: TickOutcome) -> TickOutcome {
        match self.finish_ack(worker).await {
            Ok(()) => outcome,
            Err(failure) => self.failed(worker, failure, None),
        }
    }

    /// Loops [`Self::tick`] until `shutdown` resolves, waiting between steps for the
    /// doorbell, the auth context, a batch window or a retry time, as the last step said.
    /// Before returning it finishes the cursor commit still in flight, so that
    /// [`Self::position`] is exact afterwards.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut auth_changes = self.auth().subscribe();
        loop {
            let outcome = self.tick().await;
            let deadline = match &outcome {
                TickOutcome::NoContext => None,
                TickOutcome::Idle => Some(Instant::now() + self.config.idle_poll),
                TickOutcome::Batching { until } | TickOutcome::BackingOff { until } => Some(*until),
                TickOutcome::Failed { retry_at, .. } => Some(*retry_at),
                TickOutcome::Skipped { .. }
                | TickOutcome::Delivered { .. }
                | TickOutcome::DeadLettered { .. } => Some(Instant::now()),
            };
            let wait = async {
                match deadline {
                    Some(at) if at <= Instant::now() => tokio::task::yield_now().await,
                    Some(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            () = self.doorbell.rung(), if !matches!(outcome, TickOutcome::Failed { .. } | TickOutcome::BackingOff { .. }) => {}
                            changed = auth_changes.changed() => {
                                if changed.is_err() { tokio::time::sleep_until(at).await }
                            }
                        }
                    }
                    None => {
                        if auth_changes.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = wait => {}
            }
        }
        // Leave the cursor exact: finish the commit of the last unit delivered (a failure is
        // recorded like any failed step's, and that unit is sent again by the next step).
        let mut worker = self.worker.lock().await;
        self.after_commit(&mut worker, TickOutcome::Idle).await;
    }

    /// How far behind the cold path is (for health reports).
    pub async fn lag(&self) -> Result<ColdLag, ColdError> {
        let (log, store, consumer) = (
            self.log.clone(),
            Arc::clone(&self.store),
            self.config.consumer.clone(),
        );
        let (behind, oldest, dead_letters) = blocking_store(move || {
            let behind = log.lag()?;
            let oldest = log.read(1)?.first().map(|r| r.committed_at_ms);
            let dead_letters = store.dead_letter_count(&consumer)?;
            Ok::<_, StoreError>((behind, oldest, dead_letters))
        })
        .await?;
        let now = self.clock.now_ms();
        let last_error = self.last_error().or_else(|| {
            self.auth()
                .last_refresh_error()
                .map(|e| format!("token refresh: {e}"))
        });
        Ok(ColdLag {
            behind,
            oldest_unsent_age: oldest.map(|at| {
                Duration::from_millis(u64::try_from(now.saturating_sub(at)).unwrap_or(0))
            }),
            last_error,
            dead_letters,
            waiting_for_auth: !self.auth().is_set(),
        })
    }

    /// The last failure, until the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// The message batch right after `through` if the effects already read make it ready
    /// (full, or closed by a later effect): more effects cannot change it.
    fn batch_after(
        &self,
        lookahead: &[EffectRecord],
        through: EffectSeq,
    ) -> Option<(Unit, Vec<MessageItem>)> {
        let start = lookahead.partition_point(|r| r.seq <= through);
        match plan(
            &lookahead[start..],
            self.config.effective_batch_size(),
            false,
        ) {
            Plan::Ready(unit) => match &unit.work {
                Work::Messages(items) if !items.is_empty() => {
                    let items = items.clone();
                    Some((unit, items))
                }
                _ => None,
            },
            Plan::Empty | Plan::Window { .. } => None,
        }
    }

    /// The effects after `through` (where the cursor will be once the unit in flight lands),
    /// or `None` if the log cannot be read now (the unit's own turn reports that).
    async fn read_after(&self, through: EffectSeq) -> Option<Vec<EffectRecord>> {
        let log = self.log.clone();
        let limit = self.config.effective_read_limit();
        blocking_store(move || log.read_after(through, limit))
            .await
            .ok()
    }

    async fn next_unit(&self, worker: &mut Worker, now: Instant) -> Result<Next, Failure> {
        let batch = self.config.effective_batch_size();
        // A unit that is ready on the effects already read stays the same however the log
        // grows: plan it without reading again. Anything else (nothing read, a window, the
        // end of what was read) reads the log afresh.
        if let Plan::Ready(unit) = plan(&worker.lookahead, batch, false) {
            worker.window = None;
            return Ok(Next::Unit(unit));
        }
        let log = self.log.clone();
        let limit = self.config.effective_read_limit();
        worker.lookahead =
            blocking_store(move || log.read(limit))
                .await
                .map_err(|e| Failure::Retry {
                    class: RetryClass::Transient { retry_after: None },
                    reason: format!("reading the effect log: {e}"),
                })?;
        let effects = &worker.lookahead;
        let unit = match plan(effects, batch, false) {
            Plan::Empty => {
                worker.window = None;
                return Ok(Next::Idle);
            }
            Plan::Ready(unit) => unit,
            Plan::Window { kind, head } => {
                let interval = match kind {
                    WindowKind::Messages => self.config.flush_interval,
                    WindowKind::Statuses => self.config.status_window,
                };
                let deadline = match worker.window {
                    Some((k, h, deadline)) if k == kind && h == head => deadline,
                    _ => {
                        let deadline = now + interval;
                        worker.window = Some((kind, head, deadline));
                        deadline
                    }
                };
                // An effect already older than the window (after a restart, say) waits no more.
                let age_ms = effects
                    .first()
                    .map_or(0, |r| self.now_ms().saturating_sub(r.committed_at_ms));
                let aged = u128::try_from(age_ms).unwrap_or(0) >= interval.as_millis();
                if now < deadline && !aged {
                    return Ok(Next::Wait(deadline));
                }
                match plan(effects, batch, true) {
                    Plan::Ready(unit) => unit,
                    Plan::Empty | Plan::Window { .. } => return Ok(Next::Idle),
                }
            }
        };
        worker.window = None;
        Ok(Next::Unit(unit))
    }

    /// Commits the cursor through `through` and waits for it (the steps that send nothing
    /// more after it: skips and dead letters).
    async fn ack(&self, through: EffectSeq) -> Result<(), Failure> {
        let log = self.log.clone();
        cursor_committed(blocking_store(move || log.ack(through)).await)
    }

    /// Sends the items of `unit`, which the cloud refused for good as a whole, one at a time:
    /// each one refused on its own is dead-lettered, the others land. Then commits the cursor
    /// through the unit. Returns how many were dead-lettered. Any other failure stops the
    /// split and is returned before anything is dead-lettered: the whole unit is then retried
    /// as usual (sending again what already landed is harmless).
    async fn split_refused(&self, unit: &Unit, context: &AuthContext) -> Result<usize, Failure> {
        let mut refused = Vec::new();
        for (seq, effect) in unit.effects() {
            // The commit time only matters to single-effect units, which are never split.
            let mut single = Pending::new(Unit::for_effect(EffectRecord {
                seq,
                effect,
                committed_at_ms: 0,
            }));
            match self.attempt(&mut single, context).await {
                Ok(()) => {}
                Err(Failure::Retry {
                    class: RetryClass::Permanent,
                    reason,
                }) => refused.push((single.unit, reason)),
                Err(failure) => return Err(failure),
            }
        }
        for (single, reason) in &refused {
            self.record_dead_letters(single, reason).await?;
        }
        self.ack(unit.through).await?;
        Ok(refused.len())
    }

    /// Dead-letters every effect of `unit` and commits the cursor through it.
    async fn dead_letter(&self, unit: &Unit, reason: &str) -> Result<(), Failure> {
        self.record_dead_letters(unit, reason).await?;
        self.ack(unit.through).await
    }

    /// Records every effect of `unit` as a dead letter (once: recording one again changes
    /// nothing).
    async fn record_dead_letters(&self, unit: &Unit, reason: &str) -> Result<(), Failure> {
        let letters: Vec<NewDeadLetter> = unit
            .effects()
            .into_iter()
            .map(|(effect_seq, effect)| NewDeadLetter {
                consumer: self.config.consumer.clone(),
                effect_seq,
                effect,
                reason: reason.to_owned(),
                retry_class: RetryClass::Permanent,
                attempts: 1,
                at_ms: self.now_ms(),
            })
            .collect();
        let store = Arc::clone(&self.store);
        blocking_store(move || {
            letters
                .iter()
                .try_for_each(|letter| store.insert_dead_letter(letter).map(drop))
        })
        .await
        .map_err(|e| Failure::Retry {
            class: RetryClass::Transient { retry_after: None },
            reason: format!("dead-lettering: {e}"),
        })
    }

    fn failed(
        &self,
        worker: &mut Worker,
        failure: Failure,
        token: Option<AccessToken>,
    ) -> TickOutcome {
        let (class, reason) = match failure {
            Failure::NoContext => return TickOutcome::NoContext,
            Failure::Retry { class, reason } => (class, reason),
        };
        worker.failures = worker.failures.saturating_add(1);
        let jitter = self.jitter.sample();
        let backoff = self.config.backoff;
        let delay = match class {
            // The immediate retry after a refresh already happened: back off from `base`.
            RetryClass::Unauthenticated | RetryClass::Permanent => {
                backoff.delay(worker.failures, jitter)
            }
            other => backoff
                .next_delay(&other, worker.failures, jitter)
                .unwrap_or_else(|| backoff.delay(worker.failures, jitter)),
        };
        let retry_at = Instant::now() + delay;
        worker.retry_at = Some(retry_at);
        worker.refused_token = token.filter(|_| class == RetryClass::Unauthenticated);
        tracing::warn!(?class, attempt = worker.failures, delay_ms = delay.as_millis() as u64, %reason, "cold path step failed; backing off");
        self.set_last_error(Some(reason));
        TickOutcome::Failed { class, retry_at }
    }
}

/// What the log offers next.
enum Next {
    Unit(Unit),
    Idle,
    Wait(Instant),
}

/// Runs a store operation off the runtime.
pub(crate) async fn blocking_store<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
}
