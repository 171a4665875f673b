//! What the parent and the child share: the devices, the keys, the relay directory layout.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tandem::adapters::fs_relay::FsRelay;
use tandem::adapters::keys::StaticKeyProvider;
use tandem::adapters::memory::InMemoryLeaseCoordinator;
use tandem::adapters::sqlite::{SqliteJournal, SqliteOptions};
use tandem::adapters::system::SystemClock;
use tandem::app::sync::DeviceSync;
use tandem::domain::crypto::{KeyEpoch, SessionKey};
use tandem::domain::ids::DeviceId;
use tandem::domain::oplog::{ConversationTurn, Scope, Turn};
use tandem::domain::Role;
use tandem::ports::Journal;
use uuid::Uuid;

/// The device the child runs.
pub const DEVICE_A: u128 = 0xA;
/// The device the parent runs.
pub const DEVICE_B: u128 = 0xB;
/// The conversation every turn goes to.
pub const CONVERSATION: &str = "crash";

/// Device `n`'s id.
pub fn device_id(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(
        0xC2A5_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .expect("non-nil")
}

/// The relay directory inside the test directory.
pub fn relay_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("relay")
}

/// A user turn in [`CONVERSATION`].
pub fn turn_payload(text: &str) -> Value {
    ConversationTurn {
        conversation_id: CONVERSATION.to_owned(),
        turn: Turn::text(Role::User, text),
    }
    .to_payload()
}

/// Opens device `n` on the journal file `db` in `dir` over the shared relay, with the
/// personal key both processes derive from `seed`. Returns the journal too, for checks.
pub async fn open_device(
    dir: &Path,
    db: &str,
    n: u128,
    seed: u64,
) -> Result<(DeviceSync, Arc<SqliteJournal>), String> {
    let (path, relay_path) = (dir.join(db), relay_dir(dir));
    // Opening files and SQLite blocks: off the runtime.
    let (journal, relay) = tokio::task::spawn_blocking(move || {
        let journal = SqliteJournal::open(&path, SqliteOptions::default())
            .map_err(|e| format!("open journal {}: {e}", path.display()))?;
        let relay = FsRelay::open(relay_path).map_err(|e| format!("open relay: {e}"))?;
        Ok::<_, String>((Arc::new(journal), relay))
    })
    .await
    .map_err(|e| format!("opener: {e}"))??;
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let keys = StaticKeyProvider::new().with_key(
        Scope::Personal,
        KeyEpoch::FIRST,
        SessionKey::from_bytes(key),
    );
    let sync = DeviceSync::builder(
        Arc::clone(&journal) as Arc<dyn Journal>,
        Arc::new(relay),
        Arc::new(InMemoryLeaseCoordinator::new(Arc::new(SystemClock))),
        Arc::new(keys),
    )
    .device_candidate(device_id(n))
    .open()
    .await
    .map_err(|e| format!("open device {n:x}: {e}"))?;
    Ok((sync, journal))
}
