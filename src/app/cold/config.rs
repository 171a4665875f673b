//! Settings of the cold consumer.

use std::time::Duration;

use crate::domain::backoff::Backoff;
use crate::domain::ConsumerName;

/// Settings of the [`ColdConsumer`](super::ColdConsumer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdConfig {
    /// The consumer's cursor name in the effect log (default `cold`).
    pub consumer: ConsumerName,
    /// Most messages per upsert call (default 50).
    pub batch_size: usize,
    /// Longest a partial message batch waits for more messages (default 500 ms).
    pub flush_interval: Duration,
    /// How long runtime status updates are gathered before the newest per session is sent
    /// (default 120 ms).
    pub status_window: Duration,
    /// Retry schedule for transient, network and repeated authentication failures (default
    /// 2 s doubling to 300 s).
    pub backoff: Backoff,
    /// How often an idle consumer looks at the log when no doorbell rings (default 1 s).
    pub idle_poll: Duration,
    /// Most effects read from the log per step (default 500; at least `batch_size`).
    pub read_limit: usize,
}

impl Default for ColdConfig {
    fn default() -> Self {
        Self {
            consumer: default_consumer(),
            batch_size: 50,
            flush_interval: Duration::from_millis(500),
            status_window: Duration::from_millis(120),
            backoff: Backoff::DEFAULT,
            idle_poll: Duration::from_secs(1),
            read_limit: 500,
        }
    }
}

impl ColdConfig {
    /// The effective read limit: never below the batch size, so a full batch is always seen.
    pub(crate) fn effective_read_limit(&self) -> usize {
        self.read_limit.max(self.batch_size).max(1)
    }

    /// The effective batch size (at least 1).
    pub(crate) fn effective_batch_size(&self) -> usize {
        self.batch_size.max(1)
    }
}

fn default_consumer() -> ConsumerName {
    // A constant that satisfies the name rules: not input, so it cannot fail at run time.
    ConsumerName::parse("cold").expect("`cold` is a valid consumer name")
}
