//! The `dead_letters` table: effects a consumer could not deliver, kept for an operator.
//!
//! Inserting is idempotent on (consumer, effect seq): a consumer that crashes between
//! dead-lettering an effect and advancing its cursor dead-letters the same effect again on
//! restart, and the table still holds one row for it.

use rusqlite::{params, OptionalExtension, Row};

use crate::domain::backoff::RetryClass;
use crate::domain::{ConsumerName, EffectSeq, SideEffect};
use crate::ports::StoreError;

use super::cold_store::{as_i64, parse_retry_class, retry_class_name, SqliteColdStore};
use super::error::map_sqlite;

const LETTER_COLUMNS: &str = "id, consumer, effect_seq, payload, reason, retry_class, attempts, \
                              created_at_ms, last_attempt_at_ms";

/// The id of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadLetterId(i64);

impl DeadLetterId {
    /// Wraps a raw id (as listed by [`SqliteColdStore::dead_letters`]).
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The raw id.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// An effect to dead-letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// The consumer that gave up.
    pub consumer: ConsumerName,
    /// The effect's position in the log.
    pub effect_seq: EffectSeq,
    /// The effect (ids and runtime status only, never message content).
    pub effect: SideEffect,
    /// Why it failed (the classified error's message; never secrets or content).
    pub reason: String,
    /// How the failure was classified.
    pub retry_class: RetryClass,
    /// Attempts made so far (at least 1).
    pub attempts: u32,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id.
    pub id: DeadLetterId,
    /// The consumer that gave up.
    pub consumer: ConsumerName,
    /// The effect's position in the log.
    pub effect_seq: EffectSeq,
    /// The effect.
    pub effect: SideEffect,
    /// Why the last attempt failed.
    pub reason: String,
    /// How the last failure was classified (`retry_after` is not kept).
    pub retry_class: RetryClass,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was dead-lettered, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it was last attempted, Unix milliseconds.
    pub last_attempt_at_ms: i64,
}

impl DeadLetter {
    /// The effect's kind (`message_appended`, ...).
    pub fn kind(&self) -> &'static str {
        self.effect.kind()
    }
}

fn decode(row: &Row<'_>) -> Result<DeadLetter, StoreError> {
    let get = |row: &Row<'_>| -> rusqlite::Result<_> {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, i64>(7)?,
            row.get::<_, i64>(8)?,
        ))
    };
    let (id, consumer, seq, payload, reason, class, attempts, created, last) =
        get(row).map_err(map_sqlite)?;
    let invalid = |what: &str| StoreError::Decode(format!("dead letter {id}: invalid {what}"));
    Ok(DeadLetter {
        id: DeadLetterId(id),
        consumer: ConsumerName::parse(&consumer).map_err(|_| invalid("consumer"))?,
        effect_seq: EffectSeq::new(u64::try_from(seq).map_err(|_| invalid("effect seq"))?),
        effect: serde_json::from_str(&payload).map_err(|_| invalid("payload"))?,
        reason,
        retry_class: parse_retry_class(&class).ok_or_else(|| invalid("retry class"))?,
        attempts: u32::try_from(attempts).map_err(|_| invalid("attempts"))?,
        created_at_ms: created,
        last_attempt_at_ms: last,
    })
}

impl SqliteColdStore {
    /// Dead-letters an effect; `false` when (consumer, effect seq) already was (the stored row
    /// is kept as it is).
    pub fn insert_dead_letter(&self, letter: &NewDeadLetter) -> Result<bool, StoreError> {
        let payload =
            serde_json::to_string(&letter.effect).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let n = self
            .conn()
            .prepare_cached(
                "INSERT INTO dead_letters (consumer, effect_seq, kind, payload, reason, \
                 retry_class, attempts, created_at_ms, last_attempt_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
                 ON CONFLICT (consumer, effect_seq) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    letter.consumer.as_str(),
                    as_i64(letter.effect_seq.get()),
                    letter.effect.kind(),
                    payload,
                    letter.reason,
                    retry_class_name(&letter.retry_class),
                    letter.attempts.max(1),
                    letter.at_ms
                ])
            })
            .map_err(map_sqlite)?;
        Ok(n == 1)
    }

    /// A consumer's dead letters, in effect order.
    pub fn dead_letters(&self, consumer: &ConsumerName) -> Result<Vec<DeadLetter>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE consumer = ?1 \
                 ORDER BY effect_seq"
            ))
            .map_err(map_sqlite)?;
        let mut rows = stmt.query([consumer.as_str()]).map_err(map_sqlite)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_sqlite)? {
            out.push(decode(row)?);
        }
        Ok(out)
    }

    /// One dead letter.
    pub fn dead_letter(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = ?1"
            ))
            .map_err(map_sqlite)?;
        let found = stmt
            .query_row([id.0], |row| Ok(decode(row)))
            .optional()
            .map_err(map_sqlite)?;
        found.transpose()
    }

    /// How many dead letters a consumer has.
    pub fn dead_letter_count(&self, consumer: &ConsumerName) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM dead_letters WHERE consumer = ?1",
                [consumer.as_str()],
                |r| r.get(0),
            )
            .map_err(map_sqlite)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records one more failed attempt; `false` if the letter is gone.
    pub fn record_dead_letter_attempt(
        &self,
        id: DeadLetterId,
        reason: &str,
        class: &RetryClass,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE dead_letters SET attempts = attempts + 1, reason = ?2, \
                 retry_class = ?3, last_attempt_at_ms = ?4 WHERE id = ?1",
                params![id.0, reason, retry_class_name(class), at_ms],
            )
            .map_err(map_sqlite)?;
        Ok(n == 1)
    }

    /// Removes a dead letter (it was delivered); `false` if it was already gone.
    pub fn remove_dead_letter(&self, id: DeadLetterId) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM dead_letters WHERE id = ?1", [id.0])
            .map_err(map_sqlite)?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::SessionId;

    fn letter(seq: u64, reason: &str) -> NewDeadLetter {
        NewDeadLetter {
            consumer: ConsumerName::parse("cold").unwrap(),
            effect_seq: EffectSeq::new(seq),
            effect: SideEffect::SessionDeleted {
                session_id: SessionId::from_uuid(Uuid::from_u128(1)).unwrap(),
            },
            reason: reason.into(),
            retry_class: RetryClass::Permanent,
            attempts: 1,
            at_ms: 100,
        }
    }

    #[test]
    fn dead_lettering_is_idempotent_per_consumer_and_effect() {
        let db = SqliteColdStore::open_in_memory().unwrap();
        assert!(db.insert_dead_letter(&letter(5, "first")).unwrap());
        assert!(!db.insert_dead_letter(&letter(5, "again")).unwrap());
        let mut other = letter(5, "other consumer");
        other.consumer = ConsumerName::parse("hot").unwrap();
        assert!(db.insert_dead_letter(&other).unwrap());
        let cold = db
            .dead_letters(&ConsumerName::parse("cold").unwrap())
            .unwrap();
        assert_eq!(cold.len(), 1);
        assert_eq!(cold[0].reason, "first");
        assert_eq!(cold[0].kind(), "session_deleted");
        assert_eq!(cold[0].effect, letter(5, "").effect);
        assert_eq!(
            db.dead_letter_count(&ConsumerName::parse("cold").unwrap())
                .unwrap(),
            1
        );
    }

    #[test]
    fn attempts_are_recorded_and_delivery_removes_the_row() {
        let db = SqliteColdStore::open_in_memory().unwrap();
        db.insert_dead_letter(&letter(7, "x")).unwrap();
        let id = db
            .dead_letters(&ConsumerName::parse("cold").unwrap())
            .unwrap()[0]
            .id;
        assert!(db
            .record_dead_letter_attempt(id, "still refused", &RetryClass::Network, 200)
            .unwrap());
        let row = db.dead_letter(id).unwrap().unwrap();
        assert_eq!(
            (row.attempts, row.reason.as_str(), row.last_attempt_at_ms),
            (2, "still refused", 200)
        );
        assert_eq!(row.retry_class, RetryClass::Network);
        assert_eq!(row.created_at_ms, 100);
        assert!(db.remove_dead_letter(id).unwrap());
        assert!(!db.remove_dead_letter(id).unwrap());
        assert_eq!(db.dead_letter(id).unwrap(), None);
    }
}
