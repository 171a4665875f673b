//! One device's chain on disk: fixed-size, append-only segments of ops in their compact
//! binary form ([`crate::domain::oplog::op_codec`]), each with a fixed-width index of record end
//! offsets (u64, big-endian). Segments written by format-1 relays hold one JSON op per line
//! instead; they are still read.
//!
//! Locating seq `s` is arithmetic: segment `s / segment_ops`, index slot `s % segment_ops`;
//! so reading `n` ops costs `n` index entries and `n` records, whatever the history length.
//!
//! Appends write the segment log, then its index, fsync both, and only then does the caller
//! replace the manifest: bytes past the manifest's head are a torn tail. Readers never look
//! past the head; the next writer (holding the chain lock exclusively) truncates the tail away.
//!
//! Everything read back is untrusted: offsets must increase, each record must decode in its
//! one accepted form, and [`ChainFiles::read_verified`] re-runs chain verification (ids, seqs,
//! prev links, stamps) from the op before the window, or the compaction base. Data that is
//! missing (a segment or index shorter than the head says, as while a synced folder catches
//! up) ends the answer early: only a verified prefix is served.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{corrupt, io_err, json_problem};
use super::files::{ensure_dir, numbered_files, remove_if_present, sync_dir};
use super::manifest::{BaseFiles, Manifest};
use crate::adapters::relay_core::{self, HeldChain};
use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{
    decode_op, encode_op_into, verify_chain, ChainHead, ChainTip, OpRecord, VerifyError, OP_FORMAT,
};
use crate::ports::{BatchFill, BatchLimit, RelayError};

/// Width of one index entry.
const ENTRY: u64 = 8;

/// How much chain data was read (for tests that check read cost).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records decoded from segment logs.
    pub(crate) records: AtomicU64,
    /// Bytes read from segment logs and indexes.
    pub(crate) bytes: AtomicU64,
}

/// The files of one device's chain.
#[derive(Debug)]
pub(crate) struct ChainFiles<'a> {
    dir: PathBuf,
    device: DeviceId,
    segment_ops: u64,
    counters: &'a Counters,
}

impl<'a> ChainFiles<'a> {
    /// The chain of `device` stored in `dir`.
    pub(crate) fn new(
        dir: PathBuf,
        device: DeviceId,
        segment_ops: u64,
        counters: &'a Counters,
    ) -> Self {
        Self {
            dir,
            device,
            segment_ops,
            counters,
        }
    }

    /// Whether the chain's directory exists.
    pub(crate) fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Creates the chain's directory if missing.
    pub(crate) fn create_dir(&self) -> Result<(), RelayError> {
        ensure_dir(&self.dir)
    }

    /// The chain's lock file.
    pub(crate) fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The chain's manifest.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// The chain's base files (written by gc only).
    pub(crate) fn bases(&self) -> BaseFiles {
        BaseFiles::new(&self.dir)
    }

    /// Reads the manifest, joined with the newest base file.
    pub(crate) fn manifest(&self) -> Result<Manifest, RelayError> {
        Manifest::read(&self.manifest_path(), &self.bases(), self.device)
    }

    fn log_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.log"))
    }

    fn idx_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.idx"))
    }

    fn segment_first(&self, seq: u64) -> u64 {
        seq - seq % self.segment_ops
    }

    /// Up to `n` ops from `from` on, verified: as a continuation of the op before `from` (or of
    /// the compaction base) and, where the window reaches the head, ending in the head.
    /// `from` must not be below the first stored seq. Stops early where data is missing.
    pub(crate) fn read_verified(
        &self,
        manifest: &Manifest,
        from: Seq,
        n: usize,
    ) -> Result<Vec<OpRecord>, RelayError> {
        self.read_verified_into(manifest, from, n, &mut BatchLimit::UNLIMITED.fill())
    }

    /// [`ChainFiles::read_verified`] for the ops `fill` admits too: it measures each record by
    /// its length in the index, so a record it refuses is never read from the log.
    pub(crate) fn read_verified_into(
        &self,
        manifest: &Manifest,
        from: Seq,
        n: usize,
        fill: &mut BatchFill,
    ) -> Result<Vec<OpRecord>, RelayError> {
        relay_core::check_cursor(self.device, manifest.base, from)?;
        let n = n.min(fill.ops_left()) as u64;
        if n == 0 {
            return Ok(Vec::new());
        }
        // The op before `from`, read to anchor the chain check, is not part of the batch.
        let mut admit = |seq: u64, len: u64| {
            seq < from.get() || fill.admit(|| usize::try_from(len).unwrap_or(usize::MAX))
        };
        let (tip, ops) = if from == manifest.first_stored() {
            let tip = ChainTip {
                device: self.device,
                head: manifest.base,
            };
            (tip, self.read_raw(from.get(), n, &mut admit)?)
        } else {
            let before = from.get() - 1;
            let mut ops = self.read_raw(before, n.saturating_add(1), &mut admit)?;
            if ops.is_empty() {
                return Ok(ops);
            }
            let prev = ops.remove(0);
            let tip = ChainTip {
                device: self.device,
                head: Some(self.check_single(&prev, before)?),
            };
            (tip, ops)
        };
        verify_chain(&ops, &tip, None).map_err(RelayError::Verify)?;
        if let (Some(last), Some(head)) = (ops.last(), manifest.head) {
            if last.seq() == head.seq && last.op_id() != head.op_id {
                return Err(corrupt(
                    &self.manifest_path(),
                    "the stored chain does not end in the manifest's head",
                ));
            }
        }
        Ok(ops)
    }

    /// Checks that the manifest's head is the op stored at its seq (one record read).
    pub(crate) fn check_head(&self, manifest: &Manifest) -> Result<(), RelayError> {
        let Some(head) = manifest.head else {
            return Ok(());
        };
        if head.seq < manifest.first_stored() {
            return Ok(()); // every op was compacted; the base is the head
        }
        let ops = self.read_raw(head.seq.get(), 1, &mut |_, _| true)?;
        let Some(op) = ops.first() else {
            return Err(corrupt(
                &self.log_path(self.segment_first(head.seq.get())),
                format!("the committed head at seq {} is missing", head.seq),
            ));
        };
        let found = self.check_single(op, head.seq.get())?;
        if found != head {
            return Err(corrupt(
                &self.manifest_path(),
                "the manifest's head is not the op stored at its seq",
            ));
        }
        Ok(())
    }

    /// Appends `ops`, which continue the manifest's head (already verified), to the segment
    /// files and fsyncs them. The caller commits by writing the new manifest.
    pub(crate) fn append(&self, manifest: &Manifest, ops: &[OpRecord]) -> Result<(), RelayError> {
        let mut rest = ops;
        let mut seq = manifest.next_seq().get();
        while !rest.is_empty() {
            let first = self.segment_first(seq);
            let room = usize::try_from(first + self.segment_ops - seq).unwrap_or(usize::MAX);
            let (chunk, tail) = rest.split_at(room.min(rest.len()));
            self.append_segment(first, seq - first, chunk)?;
            seq += chunk.len() as u64;
            rest = tail;
        }
        sync_dir(&self.dir)
    }

    /// Deletes every segment whose ops all lie below `first_kept` (a segment boundary).
    pub(crate) fn delete_segments_below(&self, first_kept: u64) -> Result<(), RelayError> {
        let below = numbered_files(&self.dir, &[".log", ".idx"])?
            .into_iter()
            .filter(|(first, _)| *first < first_kept);
        for (_, path) in below {
            remove_if_present(&path)?;
        }
        sync_dir(&self.dir)
    }

    /// Checks a single op read at `seq` on its own: its id, position and device.
    fn check_single(&self, op: &OpRecord, seq: u64) -> Result<ChainHead, RelayError> {
        let computed = op.computed_id();
        if computed != op.op_id() {
            return Err(RelayError::Verify(VerifyError::OpIdMismatch {
                device: op.device(),
                seq: op.seq(),
                claimed: op.op_id(),
                computed,
            }));
        }
        if op.seq().get() != seq || op.device() != self.device || op.hlc().device != self.device {
            return Err(corrupt(
                &self.log_path(self.segment_first(seq)),
                format!("the record at seq {seq} is not this chain's op at that seq"),
            ));
        }
        Ok(ChainHead::of(op))
    }

    /// Up to `n` records from `from` on, decoded but not verified; stops at missing data.
    fn read_raw(&self, from: u64, n: u64, admit: Admit<'_>) -> Result<Vec<OpRecord>, RelayError> {
        let mut out = Vec::with_capacity(usize::try_from(n.min(1024)).unwrap_or(1024));
        let end = from.saturating_add(n);
        let mut seq = from;
        while seq < end {
            let first = self.segment_first(seq);
            let stop = end.min(first.saturating_add(self.segment_ops));
            let got = self.read_segment(first, seq - first, stop - first, &mut out, admit)?;
            if got < stop - seq {
                break;
            }
            seq = stop;
        }
        Ok(out)
    }

    /// Decodes the records at slots `i0..i1` of the segment starting at `first` into `out`, up
    /// to the first one `admit` refuses; returns how many were complete and admitted.
    fn read_segment(
        &self,
        first: u64,
        i0: u64,
        i1: u64,
        out: &mut Vec<OpRecord>,
        admit: Admit<'_>,
    ) -> Result<u64, RelayError> {
        let idx_path = self.idx_path(first);
        let Some(mut idx) = open_existing(&idx_path)? else {
            return Ok(0);
        };
        let lo = i0.saturating_sub(1);
        let raw = read_at(&mut idx, lo * ENTRY, (i1 - lo) * ENTRY, &idx_path)?;
        self.count_bytes(raw.len());
        let entries: Vec<u64> = raw
            .chunks_exact(ENTRY as usize)
            .filter_map(be_u64)
            .collect();
        let (start, ends) = match (i0, entries.split_first()) {
            (0, _) => (0, &entries[..]),
            (_, Some((start, ends))) => (*start, ends),
            (_, None) => return Ok(0),
        };
        let mut previous = start;
        for &end in ends {
            if end <= previous {
                return Err(corrupt(&idx_path, "record offsets do not increase"));
            }
            previous = end;
        }
        let log_path = self.log_path(first);
        let Some(mut log) = open_existing(&log_path)? else {
            return Ok(0);
        };
        let log_len = log.metadata().map_err(io_err("stat", &log_path))?.len();
        let mut record_start = start;
        let complete = (first + i0..)
            .zip(ends.iter())
            .take_while(|&(seq, &end)| {
                let len = end - record_start;
                record_start = end;
                end <= log_len && admit(seq, len)
            })
            .count();
        let Some(&last_end) = complete.checked_sub(1).and_then(|i| ends.get(i)) else {
            return Ok(0);
        };
        let bytes = read_at(&mut log, start, last_end - start, &log_path)?;
        self.count_bytes(bytes.len());
        let available = start + bytes.len() as u64;
        let mut at = start;
        let mut decoded = 0;
        for (slot, &end) in (i0..).zip(&ends[..complete]) {
            if end > available {
                break; // the file shrank while being read
            }
            let record = &bytes[offset(at - start)..offset(end - start)];
            let op = decode(record).map_err(|what| {
                corrupt(&log_path, format!("record at seq {}: {what}", first + slot))
            })?;
            out.push(op);
            decoded += 1;
            at = end;
        }
        self.counters.records.fetch_add(decoded, Ordering::Relaxed);
        Ok(decoded)
    }

    /// Truncates a torn tail of the segment starting at `first` back to its `committed`
    /// records, then appends `chunk` and fsyncs the log and the index.
    fn append_segment(
        &self,
        first: u64,
        committed: u64,
        chunk: &[OpRecord],
    ) -> Result<(), RelayError> {
        let idx_path = self.idx_path(first);
        let log_path = self.log_path(first);
        let mut idx = open_rw(&idx_path)?;
        let idx_len = idx.metadata().map_err(io_err("stat", &idx_path))?.len();
        let log_end = if committed == 0 {
            0
        } else {
            if idx_len < committed * ENTRY {
                return Err(corrupt(&idx_path, "committed index entries are missing"));
            }
            let raw = read_at(&mut idx, (committed - 1) * ENTRY, ENTRY, &idx_path)?;
            be_u64(&raw).ok_or_else(|| corrupt(&idx_path, "committed index entries are missing"))?
        };
        if idx_len != committed * ENTRY {
            idx.set_len(committed * ENTRY)
                .map_err(io_err("truncate torn tail of", &idx_path))?;
        }
        let mut log = open_rw(&log_path)?;
        let log_len = log.metadata().map_err(io_err("stat", &log_path))?.len();
        if log_len < log_end {
            return Err(corrupt(&log_path, "committed records are missing"));
        }
        if log_len != log_end {
            log.set_len(log_end)
                .map_err(io_err("truncate torn tail of", &log_path))?;
        }
        let mut records = Vec::with_capacity(chunk.len() * 448);
        let mut ends = Vec::with_capacity(chunk.len() * ENTRY as usize);
        for op in chunk {
            encode_op_into(op, &mut records);
            ends.extend_from_slice(&(log_end + records.len() as u64).to_be_bytes());
        }
        write_at(&mut log, log_end, &records, &log_path)?;
        write_at(&mut idx, committed * ENTRY, &ends, &idx_path)
    }

    fn count_bytes(&self, n: usize) {
        self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Asked for each record about to be read, with its seq and length: whether to read it (and
/// go on).
type Admit<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// What push planning reads from a chain on disk.
pub(crate) struct HeldOnDisk<'f, 'a> {
    /// The chain's files.
    pub(crate) files: &'f ChainFiles<'a>,
    /// Its manifest, read under the chain lock.
    pub(crate) manifest: &'f Manifest,
}

impl HeldChain for HeldOnDisk<'_, '_> {
    fn base(&self) -> Option<ChainHead> {
        self.manifest.base
    }

    fn head(&self) -> Option<ChainHead> {
        self.manifest.head
    }

    fn held(&mut self, from: Seq, n: usize) -> Result<Vec<OpRecord>, RelayError> {
        let ops = self.files.read_verified(self.manifest, from, n)?;
        if ops.len() != n {
            return Err(corrupt(
                &self.files.dir,
                format!("committed ops from seq {from} are missing"),
            ));
        }
        Ok(ops)
    }
}

/// One record: an op in its binary form, or (format 1) a JSON object on one line; either
/// exactly as written.
fn decode(record: &[u8]) -> Result<OpRecord, String> {
    match record.first() {
        Some(&OP_FORMAT) => decode_op(record).map_err(|e| e.to_string()),
        Some(b'{') => decode_json_line(record),
        Some(_) => Err("unknown record format".into()),
        None => Err("empty record".into()),
    }
}

fn decode_json_line(record: &[u8]) -> Result<OpRecord, String> {
    let Some((b'\n', body)) = record.split_last() else {
        return Err("the record does not end a line".into());
    };
    if body.contains(&b'\n') {
        return Err("the record spans lines".into());
    }
    let op: OpRecord = serde_json::from_slice(body).map_err(|e| json_problem(&e))?;
    // Only the exact bytes written are accepted: an equivalent spelling (an upper-case UUID,
    // say) is damage too, even though it would decode to the same op.
    let canonical = serde_json::to_vec(&op).map_err(|e| json_problem(&e))?;
    if canonical != body {
        return Err("the record is not in the form it was written in".into());
    }
    Ok(op)
}

/// One index entry.
fn be_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; ENTRY as usize]>::try_from(bytes)
        .ok()
        .map(u64::from_be_bytes)
}

fn offset(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn open_existing(path: &Path) -> Result<Option<File>, RelayError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("open", path)(e)),
    }
}

fn open_rw(path: &Path) -> Result<File, RelayError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("open", path))
}

/// Reads up to `len` bytes at `at` (fewer at the end of the file).
fn read_at(file: &mut File, at: u64, len: u64, path: &Path) -> Result<Vec<u8>, RelayError> {
    file.seek(SeekFrom::Start(at))
        .map_err(io_err("seek", path))?;
    let mut bytes = Vec::with_capacity(offset(len.min(1 << 20)));
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok(bytes)
}

fn write_at(file: &mut File, at: u64, bytes: &[u8], path: &Path) -> Result<(), RelayError> {
    file.seek(SeekFrom::Start(at))
        .map_err(io_err("seek", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}
