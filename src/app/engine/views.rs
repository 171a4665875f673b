//! Derived, in-memory read views: an immutable per-session snapshot plus the delta appended
//! since. Rebuilt from the store only at open and on `refresh_snapshot`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{
    Message, Repository, RepositoryId, RuntimeStatusEnvelope, Seq, Session, SessionId,
};
use crate::ports::StoreContents;

/// One session's view: metadata, the snapshot of its messages, and the delta since.
#[derive(Debug, Clone)]
pub(crate) struct SessionView {
    pub(crate) session: Session,
    /// Messages with seq 1..=snapshot.len(); shared, never mutated.
    snapshot: Arc<[Arc<Message>]>,
    /// Messages appended since the snapshot, continuing the seq.
    delta: Vec<Arc<Message>>,
}

impl SessionView {
    pub(crate) fn new(session: Session, messages: Vec<Message>) -> Self {
        let snapshot: Arc<[Arc<Message>]> = messages.into_iter().map(Arc::new).collect();
        Self {
            session,
            snapshot,
            delta: Vec::new(),
        }
    }

    /// The seq of the newest message (0 when empty). Seqs are contiguous from 1, so this is
    /// also the message count.
    pub(crate) fn last_seq(&self) -> Seq {
        Seq::new((self.snapshot.len() + self.delta.len()) as u64)
    }

    pub(crate) fn push(&mut self, message: Arc<Message>) {
        debug_assert_eq!(message.seq, self.last_seq().next());
        self.delta.push(message);
    }

    /// Messages with `seq > after`, in order.
    pub(crate) fn after(&self, after: Seq) -> Vec<Arc<Message>> {
        let skip = usize::try_from(after.get()).unwrap_or(usize::MAX);
        let total = self.snapshot.len() + self.delta.len();
        let mut out = Vec::with_capacity(total.saturating_sub(skip));
        if skip < self.snapshot.len() {
            out.extend(self.snapshot[skip..].iter().cloned());
            out.extend(self.delta.iter().cloned());
        } else {
            let from = (skip - self.snapshot.len()).min(self.delta.len());
            out.extend(self.delta[from..].iter().cloned());
        }
        out
    }

    /// How many messages sit in the delta (appended since the last snapshot).
    pub(crate) fn delta_len(&self) -> usize {
        self.delta.len()
    }
}

/// Everything the engine serves reads from.
#[derive(Debug, Default)]
pub(crate) struct Views {
    pub(crate) repositories: HashMap<RepositoryId, Repository>,
    pub(crate) sessions: HashMap<SessionId, SessionView>,
    pub(crate) runtime: HashMap<SessionId, RuntimeStatusEnvelope>,
}

impl Views {
    pub(crate) fn from_contents(contents: StoreContents) -> Self {
        Self {
            repositories: contents
                .repositories
                .into_iter()
                .map(|r| (r.id, r))
                .collect(),
            sessions: contents
                .sessions
                .into_iter()
                .map(|(s, msgs)| (s.id, SessionView::new(s, msgs)))
                .collect(),
            runtime: contents
                .runtime_statuses
                .into_iter()
                .map(|e| (e.session_id, e))
                .collect(),
        }
    }

    /// Removes a session and its runtime status.
    pub(crate) fn remove_session(&mut self, id: SessionId) {
        self.sessions.remove(&id);
        self.runtime.remove(&id);
    }

    /// The sessions of a repository.
    pub(crate) fn sessions_of(&self, repository: RepositoryId) -> Vec<SessionId> {
        self.sessions
            .values()
            .filter(|v| v.session.repository_id == repository)
            .map(|v| v.session.id)
            .collect()
    }
}
