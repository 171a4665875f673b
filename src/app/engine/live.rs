//! Live subscriptions: bounded per-session fan-out of newly committed messages.
//!
//! Each session with subscribers has one bounded broadcast ring. The writer never waits: when a
//! subscriber falls more than the ring's capacity behind, its oldest undelivered items are
//! overwritten and it receives [`LiveEvent::Lagged`] with the seq to resume from (read the gap
//! back with [`Engine::messages_after`](super::Engine::messages_after)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::domain::{Message, Seq, SessionId};

/// What the ring carries.
#[derive(Debug, Clone)]
pub(crate) enum LiveItem {
    Message(Arc<Message>),
    Closed,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A newly committed message, in seq order.
    Message(Arc<Message>),
    /// The subscriber fell behind; `missed` items were dropped. Messages from `resume_from_seq`
    /// on may be missing: read them with `messages_after(session, resume_from_seq - 1)`.
    Lagged {
        /// How many items were dropped.
        missed: u64,
        /// The first seq this subscriber did not receive.
        resume_from_seq: Seq,
    },
    /// The session was closed; no more messages will come.
    Closed,
    /// The session was deleted or the engine dropped; the subscription is over.
    Ended,
}

/// A live feed of one session's new messages. Messages committed before `subscribe` returned
/// are not replayed (read them from the views); every later one is delivered once, in order,
/// unless the subscriber lags.
#[derive(Debug)]
pub struct Subscription {
    session: SessionId,
    rx: broadcast::Receiver<LiveItem>,
    next_seq: Seq,
    closed_pending: bool,
    finished: bool,
}

impl Subscription {
    /// The session this subscription follows.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// Waits for the next event, blocking the thread. Do not call from async code: use
    /// [`Subscription::recv_async`] there.
    pub fn recv(&mut self) -> LiveEvent {
        loop {
            if let Some(ev) = self.early() {
                return ev;
            }
            let r = self.rx.blocking_recv();
            if let Some(ev) = self.translate(r) {
                return ev;
            }
        }
    }

    /// Waits for the next event asynchronously.
    pub async fn recv_async(&mut self) -> LiveEvent {
        loop {
            if let Some(ev) = self.early() {
                return ev;
            }
            let r = self.rx.recv().await;
            if let Some(ev) = self.translate(r) {
                return ev;
            }
        }
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<LiveEvent> {
        loop {
            if let Some(ev) = self.early() {
                return Some(ev);
            }
            let r = match self.rx.try_recv() {
                Ok(item) => Ok(item),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if let Some(ev) = self.translate(r) {
                return Some(ev);
            }
        }
    }

    fn early(&mut self) -> Option<LiveEvent> {
        if self.finished {
            return Some(LiveEvent::Ended);
        }
        if self.closed_pending {
            self.closed_pending = false;
            return Some(LiveEvent::Closed);
        }
        None
    }

    /// `None` means "nothing to report, keep waiting" (a message already seen).
    fn translate(&mut self, r: Result<LiveItem, RecvError>) -> Option<LiveEvent> {
        match r {
            Ok(LiveItem::Message(m)) => {
                if m.seq < self.next_seq {
                    return None;
                }
                self.next_seq = m.seq.next();
                Some(LiveEvent::Message(m))
            }
            Ok(LiveItem::Closed) => Some(LiveEvent::Closed),
            Err(RecvError::Lagged(missed)) => Some(LiveEvent::Lagged {
                missed,
                resume_from_seq: self.next_seq,
            }),
            Err(RecvError::Closed) => {
                self.finished = true;
                Some(LiveEvent::Ended)
            }
        }
    }
}

/// The per-session rings.
#[derive(Debug)]
pub(crate) struct LiveHub {
    capacity: usize,
    channels: Mutex<HashMap<SessionId, broadcast::Sender<LiveItem>>>,
}

impl LiveHub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, broadcast::Sender<LiveItem>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a receiver. The caller reads `last_seq` from the views *after* this returns,
    /// then calls [`Subscription`] construction through [`LiveHub::finish`], so no message can
    /// fall between the views and the ring.
    pub(crate) fn receiver(&self, session: SessionId) -> broadcast::Receiver<LiveItem> {
        let mut channels = self.lock();
        channels
            .entry(session)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    pub(crate) fn finish(
        session: SessionId,
        rx: broadcast::Receiver<LiveItem>,
        last_seq: Seq,
        closed: bool,
    ) -> Subscription {
        Subscription {
            session,
            rx,
            next_seq: last_seq.next(),
            closed_pending: closed,
            finished: false,
        }
    }

    pub(crate) fn publish(&self, session: SessionId, items: impl IntoIterator<Item = LiveItem>) {
        let mut channels = self.lock();
        if let Some(tx) = channels.get(&session) {
            if tx.receiver_count() == 0 {
                channels.remove(&session);
                return;
            }
            for item in items {
                // Fails only when every receiver is gone, which is fine.
                let _ = tx.send(item);
            }
        }
    }

    /// Drops the session's ring: its subscribers see [`LiveEvent::Ended`].
    pub(crate) fn end(&self, session: SessionId) {
        self.lock().remove(&session);
    }
}
