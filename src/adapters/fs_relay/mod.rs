//! [`FsRelay`]: a [`Relay`] in a shared directory, the embedded default.
//!
//! Two daemons on one host, or two machines sharing a synced folder, exchange their chains
//! through one directory (the layout is described in the `layout` module):
//!
//! - **Per-device append-only chains.** Each device's ops go into fixed-size segments of
//!   binary op records ([`crate::domain::oplog::op_codec`]), with a fixed-width index of end
//!   offsets beside each segment. The seq of an op
//!   gives its segment and index slot by arithmetic, so a push reads the stored head (one
//!   record) and writes only the new ops, and a pull reads only the ops it returns plus the one
//!   before them: both cost what is new, not what the history holds.
//! - **Atomic commit points per chain.** A push appends and fsyncs the segment and its
//!   index, then replaces the chain's small manifest (temp write, fsync, rename, fsync of the
//!   directory). Bytes past the manifest's head are a torn tail from a crash: never served,
//!   and truncated by the next push. gc records each compaction base in an immutable file of
//!   its own, named by the base's seq, so the manifest has one writer: the chain's device.
//! - **Small files for the rest.** One roster file per device and one checkpoint file, each
//!   replaced atomically and carrying a digest of its content, so concurrent acks of
//!   different devices never collide and any damage is caught on read.
//! - **Locks.** Pushing and gc hold the chain's lock file exclusively, pulls hold it shared;
//!   roster and checkpoint updates hold their own lock files ([`std::fs::File::lock`]).
//! - **Untrusted bytes.** Everything read back is re-verified before it is served (op ids,
//!   contiguous seqs, prev links, increasing stamps, the manifest's head), and each record
//!   must be byte-identical to the op's own serialization; damage is reported
//!   as [`RelayError::Corrupt`] or [`RelayError::Verify`], never served and never a panic.
//!   Data that is merely missing (a segment shorter than the manifest says, as while a synced
//!   folder catches up) ends the answer early instead: a verified prefix is served.
//! - **gc in whole segments.** Only segments whose every op is covered are deleted, and never
//!   the segment holding a chain's head, so a chain may keep a few covered ops until more are
//!   pushed; [`RelayError::Compacted`] names the first seq actually kept.
//! - **Crash leftovers.** Temp files older than an hour (a write that never reached its rename)
//!   are removed when the relay is opened; younger ones may be another process's write.
//!
//! Locks coordinate processes on one host. On a folder synced between machines there is no
//! shared lock, and no file needs one: each device writes only its own chain and roster
//! entry, and gc writes only new base files and deletes whole segments below a base (and base
//! files a newer one supersedes), which no push touches again. A reader whose copy of a
//! manifest is older than the newest base file reads the chain as ending at the base until the
//! manifest arrives. Two machines running gc at the same moment write either the same bytes
//! to one base file or two different base files; the sync keeps both and the newer base
//! wins. Concurrent checkpoint puts from two machines leave one of the (verified) checkpoints.
//!
//! Every call runs on tokio's blocking pool; [`FsRelay::open`] itself blocks briefly.

mod chain_file;
mod checkpoint_file;
mod error;
mod files;
mod layout;
mod lock;
mod manifest;
mod ops;
mod roster;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;

use self::error::FsRelayError;
use self::ops::Inner;
use crate::domain::ids::DeviceId;
use crate::domain::oplog::{Checkpoint, Frontier, OpRecord};
use crate::ports::{
    BatchLimit, GcReport, PullBatch, PullCursors, PushOutcome, Relay, RelayError, RosterEntry,
};

/// How a new relay directory is laid out. Fixed when the directory is created: later opens
/// use what the directory records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsRelayOptions {
    /// Ops per segment file (1 to 1,048,576). Smaller segments let gc free space sooner;
    /// larger ones mean fewer files.
    pub segment_ops: u64,
}

impl Default for FsRelayOptions {
    fn default() -> Self {
        Self { segment_ops: 1024 }
    }
}

/// How much chain data an [`FsRelay`] has read since it was opened. For tests that check
/// that reads cost what is new, not what is stored.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsRelayStats {
    /// Op records decoded from segment files.
    pub records_read: u64,
    /// Bytes read from segment files and their indexes.
    pub bytes_read: u64,
}

/// A relay in a shared directory. See the module docs.
#[derive(Debug, Clone)]
pub struct FsRelay {
    inner: Arc<Inner>,
}

impl FsRelay {
    /// The largest checkpoint file the relay stores or reads, in bytes: a checkpoint's state
    /// plus a small header (its frontier). [`Relay::put_checkpoint`] refuses a larger one with
    /// [`RelayError::CheckpointTooLarge`], storing nothing, and a larger file found on disk is
    /// refused as [`RelayError::Corrupt`] without being read into memory.
    pub const MAX_CHECKPOINT_BYTES: u64 = files::MAX_SMALL_FILE;

    /// Opens the relay in `dir`, creating it with default options if it does not exist.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, RelayError> {
        Self::open_with(dir, FsRelayOptions::default())
    }

    /// Opens the relay in `dir`, creating it with `options` if it does not exist.
    pub fn open_with(dir: impl AsRef<Path>, options: FsRelayOptions) -> Result<Self, RelayError> {
        let inner = Inner::open(dir.as_ref(), options.segment_ops)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The relay directory.
    pub fn dir(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The segment size in force (as recorded in the directory).
    pub fn segment_ops(&self) -> u64 {
        self.inner.segment_ops
    }

    /// Read counters since open.
    #[doc(hidden)]
    pub fn stats(&self) -> FsRelayStats {
        FsRelayStats {
            records_read: self.inner.counters.records.load(Ordering::Relaxed),
            bytes_read: self.inner.counters.bytes.load(Ordering::Relaxed),
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, RelayError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, RelayError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                let what = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                RelayError::from(FsRelayError::Task(what.to_owned()))
            })?
    }
}

#[async_trait]
impl Relay for FsRelay {
    async fn register(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError> {
        self.run(move |inner| inner.register(device, now_ms)).await
    }

    async fn push(
        &self,
        device: DeviceId,
        ops: &[OpRecord],
        now_ms: u64,
    ) -> Result<PushOutcome, RelayError> {
        let ops = ops.to_vec();
        self.run(move |inner| inner.push(device, &ops, now_ms))
            .await
    }

    async fn pull(
        &self,
        reader: DeviceId,
        cursors: &PullCursors,
        limit: BatchLimit,
        now_ms: u64,
    ) -> Result<PullBatch, RelayError> {
        let cursors = cursors.clone();
        self.run(move |inner| inner.pull(reader, &cursors, limit, now_ms))
            .await
    }

    async fn ack(
        &self,
        device: DeviceId,
        frontier: &Frontier,
        now_ms: u64,
    ) -> Result<(), RelayError> {
        let frontier = frontier.clone();
        self.run(move |inner| inner.ack(device, &frontier, now_ms))
            .await
    }

    async fn roster(&self) -> Result<Vec<RosterEntry>, RelayError> {
        self.run(Inner::roster).await
    }

    async fn stable_frontier(&self, now_ms: u64, horizon_ms: u64) -> Result<Frontier, RelayError> {
        self.run(move |inner| inner.stable_frontier(now_ms, horizon_ms))
            .await
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RelayError> {
        let checkpoint = checkpoint.clone();
        self.run(move |inner| inner.put_checkpoint(&checkpoint))
            .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RelayError> {
        self.run(Inner::latest_checkpoint).await
    }

    async fn gc(&self, now_ms: u64, horizon_ms: u64) -> Result<GcReport, RelayError> {
        self.run(move |inner| inner.gc(now_ms, horizon_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{FsRelay, FsRelayOptions};

    /// A relay in a temp dir that lives as long as the relay.
    struct TempRelay {
        relay: FsRelay,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TempRelay {
        type Target = FsRelay;
        fn deref(&self) -> &FsRelay {
            &self.relay
        }
    }

    fn temp_relay() -> TempRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        let relay =
            FsRelay::open_with(dir.path(), FsRelayOptions { segment_ops: 2 }).expect("open relay");
        TempRelay { relay, _dir: dir }
    }

    crate::relay_conformance_tests!(conformance, temp_relay);

    #[tokio::test]
    async fn opening_removes_old_temp_files_and_keeps_young_ones() {
        use crate::ports::conformance::relay::{chain, device};
        use crate::ports::Relay;
        use std::time::{Duration, SystemTime};
        let relay = temp_relay();
        let a = device(1);
        relay.register(a, 1).await.expect("register");
        relay.push(a, &chain(a, 3, 1_000), 1).await.expect("push");
        let chain_dir = relay.dir().join("chains").join(a.to_string());
        let roster_dir = relay.dir().join("roster");
        let bases_dir = chain_dir.join("bases");
        std::fs::create_dir(&bases_dir).expect("bases dir");
        let temp = |dir: &std::path::Path, name: &str, age_s: u64| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).expect("create");
            let at = SystemTime::now() - Duration::from_secs(age_s);
            file.set_modified(at).expect("set mtime");
            path
        };
        let stale = [
            temp(relay.dir(), ".tmp-checkpoint-1-0", 7_200),
            temp(&roster_dir, ".tmp-roster-1-0", 7_200),
            temp(&chain_dir, ".tmp-manifest-1-0", 7_200),
            temp(&bases_dir, ".tmp-00000000000000000003.json-1-0", 7_200),
        ];
        let young = temp(&chain_dir, ".tmp-manifest-2-0", 10);
        let other = temp(&chain_dir, ".keep", 7_200);
        let again = FsRelay::open(relay.dir()).expect("reopen");
        for path in &stale {
            assert!(!path.exists(), "{} was kept", path.display());
        }
        assert!(young.exists() && other.exists());
        assert_eq!(again.roster().await.expect("roster").len(), 1);
    }

    #[tokio::test]
    async fn the_directory_keeps_its_chains_and_segment_size_across_opens() {
        use crate::ports::conformance::relay::{chain, device};
        use crate::ports::{BatchLimit, PullCursors, Relay};
        let relay = temp_relay();
        let a = device(1);
        let ops = chain(a, 5, 1_000);
        relay.register(a, 1).await.expect("register");
        relay.push(a, &ops, 1).await.expect("push");
        let again =
            FsRelay::open_with(relay.dir(), FsRelayOptions { segment_ops: 64 }).expect("reopen");
        assert_eq!(again.segment_ops(), 2, "the recorded segment size wins");
        let batch = again
            .pull(a, &PullCursors::new(), BatchLimit::ops(10), 2)
            .await
            .expect("pull");
        assert_eq!(batch.ops.get(&a), Some(&ops));
        assert_eq!(again.roster().await.expect("roster").len(), 1);
        let more = chain(a, 6, 1_000);
        assert_eq!(again.push(a, &more, 3).await.expect("push").accepted, 1);
        assert!(FsRelay::open_with(relay.dir(), FsRelayOptions { segment_ops: 0 }).is_ok());
        let fresh = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            FsRelay::open_with(fresh.path(), FsRelayOptions { segment_ops: 0 }),
            Err(crate::ports::RelayError::Backend(_))
        ));
        assert!(
            !fresh.path().join("relay.json").exists(),
            "refused options left a format file"
        );
        assert!(FsRelay::open(fresh.path()).is_ok());
    }

    /// Records `version` (with segment size 2) as the directory's format, reopens it and
    /// checks that opening upgraded it to the current format.
    fn reopen_as_format(relay: &FsRelay, version: u32) -> FsRelay {
        use super::files::{read_checked, write_checked};
        let format = relay.dir().join("relay.json");
        let old = format!(r#"{{"format":"tandem-fs-relay","version":{version},"segment_ops":2}}"#);
        write_checked(&format, old.as_bytes()).expect("format file");
        let again = FsRelay::open(relay.dir()).expect("reopen");
        let body = read_checked(&format).expect("read").expect("present");
        assert!(String::from_utf8(body).unwrap().contains(r#""version":4"#));
        again
    }

    #[tokio::test]
    async fn a_format_1_directory_is_read_upgraded_and_written_on() {
        use std::io::Write as _;

        use crate::ports::conformance::relay::{chain, device};
        use crate::ports::{BatchLimit, PullCursors, Relay};
        let relay = temp_relay();
        let a = device(1);
        let ops = chain(a, 6, 1_000);
        relay.register(a, 1).await.expect("register");
        relay.push(a, &ops[..3], 1).await.expect("push");
        // Rewrite the directory as a format-1 relay left it: JSON-line records.
        let chain_dir = relay.dir().join("chains").join(a.to_string());
        for (first, slice) in [(0u64, &ops[..2]), (2, &ops[2..3])] {
            let (mut log, mut ends) = (Vec::new(), Vec::new());
            for op in slice {
                serde_json::to_writer(&mut log, op).expect("json");
                log.push(b'\n');
                ends.extend_from_slice(&(log.len() as u64).to_be_bytes());
            }
            std::fs::write(chain_dir.join(format!("{first:020}.log")), &log).expect("log");
            std::fs::File::create(chain_dir.join(format!("{first:020}.idx")))
                .and_then(|mut f| f.write_all(&ends))
                .expect("idx");
        }
        let again = reopen_as_format(&relay, 1);
        // Old records are served; new ones are appended in binary after them.
        assert_eq!(again.push(a, &ops, 2).await.expect("push").accepted, 3);
        let batch = again
            .pull(a, &PullCursors::new(), BatchLimit::ops(10), 3)
            .await
            .expect("pull");
        assert_eq!(batch.ops.get(&a), Some(&ops));
        let second = std::fs::read(chain_dir.join(format!("{:020}.log", 2))).expect("segment");
        assert_eq!(second.first(), Some(&b'{'));
        assert!(second.contains(&crate::domain::oplog::OP_FORMAT));
    }

    fn base_file(chain_dir: &Path, seq: u64) -> std::path::PathBuf {
        chain_dir.join("bases").join(format!("{seq:020}.json"))
    }

    /// A relay holding 5 of the 9 ops of device 1's chain, then compacted to seq 1 by an older
    /// format's gc: `record_base` writes that format's record of the base into the chain's
    /// directory, segment 0 goes, and the directory is reopened as `version`. Checks that the
    /// base is read, then that a gc now records a newer base in a base file of its own, which
    /// wins; returns the chain's directory.
    async fn an_older_base_is_read_then_superseded(
        version: u32,
        record_base: impl FnOnce(&Path, &[crate::domain::oplog::OpRecord]),
    ) -> (TempRelay, std::path::PathBuf) {
        use crate::domain::ids::Seq;
        use crate::ports::conformance::relay::{chain, checkpoint, device, frontier_of};
        use crate::ports::{BatchLimit, PullBatch, PullCursors, Relay, RelayError};
        let relay = temp_relay();
        let a = device(1);
        let ops = chain(a, 9, 1_000);
        relay.register(a, 1).await.expect("register");
        relay.push(a, &ops[..5], 1).await.expect("push");
        let chain_dir = relay.dir().join("chains").join(a.to_string());
        record_base(&chain_dir, &ops);
        std::fs::remove_file(chain_dir.join("00000000000000000000.log")).expect("segment");
        let again = reopen_as_format(&relay, version);
        let from = |seq: u64| [(a, Seq::new(seq))].into_iter().collect::<PullCursors>();
        let compacted_at = |r: Result<PullBatch, RelayError>| match r {
            Err(RelayError::Compacted {
                first_available, ..
            }) => Some(first_available.get()),
            _ => None,
        };
        assert_eq!(
            compacted_at(again.pull(a, &from(0), BatchLimit::ops(10), 2).await),
            Some(2)
        );
        let batch = again
            .pull(a, &from(2), BatchLimit::ops(10), 2)
            .await
            .expect("pull");
        assert_eq!(batch.ops.get(&a).map(Vec::as_slice), Some(&ops[2..5]));

        assert_eq!(again.push(a, &ops[5..], 3).await.expect("push").accepted, 4);
        again.ack(a, &frontier_of(&[&ops]), 3).await.expect("ack");
        let covered = checkpoint(&[&ops[..6]]);
        again.put_checkpoint(&covered).await.expect("checkpoint");
        assert_eq!(again.gc(3, 1_000).await.expect("gc").deleted, 4);
        assert!(base_file(&chain_dir, 5).exists());
        assert_eq!(
            compacted_at(again.pull(a, &from(2), BatchLimit::ops(10), 4).await),
            Some(6)
        );
        let batch = again
            .pull(a, &from(6), BatchLimit::ops(10), 4)
            .await
            .expect("pull");
        assert_eq!(batch.ops.get(&a).map(Vec::as_slice), Some(&ops[6..]));
        (relay, chain_dir)
    }

    #[tokio::test]
    async fn a_format_2_directory_keeps_the_base_its_manifest_records() {
        use super::manifest::Manifest;
        use crate::domain::oplog::ChainHead;
        // Format 2 kept the base in the manifest, and had no base files.
        an_older_base_is_read_then_superseded(2, |chain_dir, ops| {
            let manifest = Manifest {
                device: ops[0].device(),
                base: Some(ChainHead::of(&ops[1])),
                head: Some(ChainHead::of(&ops[4])),
            };
            manifest
                .write(&chain_dir.join("manifest.json"))
                .expect("manifest");
        })
        .await;
    }

    #[tokio::test]
    async fn a_format_3_base_file_is_read_then_superseded_and_removed() {
        use super::manifest::BaseFiles;
        use crate::domain::oplog::ChainHead;
        // Format 3 kept the base in the chain's one `base.json`, with the body a base file has.
        let (_relay, chain_dir) = an_older_base_is_read_then_superseded(3, |chain_dir, ops| {
            BaseFiles::new(chain_dir)
                .write(ops[0].device(), ChainHead::of(&ops[1]))
                .expect("base");
            std::fs::rename(base_file(chain_dir, 1), chain_dir.join("base.json")).expect("move");
            std::fs::remove_dir(chain_dir.join("bases")).expect("bases dir");
        })
        .await;
        assert!(!chain_dir.join("base.json").exists());
    }

    #[tokio::test]
    async fn a_base_file_named_for_another_seq_is_refused() {
        use crate::ports::conformance::relay::{chain, checkpoint, device, frontier_of};
        use crate::ports::{BatchLimit, PullCursors, Relay, RelayError};
        let relay = temp_relay();
        let a = device(1);
        let ops = chain(a, 6, 1_000);
        relay.register(a, 1).await.expect("register");
        relay.push(a, &ops, 1).await.expect("push");
        relay.ack(a, &frontier_of(&[&ops]), 1).await.expect("ack");
        relay
            .put_checkpoint(&checkpoint(&[&ops[..4]]))
            .await
            .expect("checkpoint");
        relay.gc(1, 1_000).await.expect("gc");
        let chain_dir = relay.dir().join("chains").join(a.to_string());
        std::fs::rename(base_file(&chain_dir, 3), base_file(&chain_dir, 7)).expect("rename");
        let pulled = relay
            .pull(a, &PullCursors::new(), BatchLimit::ops(10), 2)
            .await;
        assert!(
            matches!(&pulled, Err(RelayError::Corrupt(what)) if what.contains("seq")),
            "{pulled:?}"
        );
    }
}
