//! Encoding oplog values into SQLite columns and back. Stored data that fails to decode is a
//! [`StoreError::Decode`], never a panic.

use std::str::FromStr;

use rusqlite::types::ValueRef;
use rusqlite::Row;

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{
    claimed_op_id, decode_op, encode_op_into, ChainHead, Checkpoint, CheckpointId, Frontier, Hlc,
    OpId, OpRecord,
};
use crate::ports::StoreError;

use super::error::map_sqlite;

/// A seq as an SQLite integer (seqs past `i64::MAX` cannot be stored).
pub(super) fn seq_to_sql(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq.get()).map_err(|_| StoreError::Decode(format!("seq {seq} is out of range")))
}

/// A stored integer as a seq.
pub(super) fn seq_from_sql(value: i64) -> Result<Seq, StoreError> {
    u64::try_from(value)
        .map(Seq::new)
        .map_err(|_| StoreError::Decode(format!("stored seq {value} is negative")))
}

fn u64_to_sql(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Decode(format!("{what} {value} is out of range")))
}

fn parse<T: FromStr>(text: &str, what: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Decode(format!("stored {what} is invalid")))
}

/// An op as stored: its binary form, appended to `buf` (cleared first).
pub(super) fn op_to_sql(op: &OpRecord, buf: &mut Vec<u8>) {
    buf.clear();
    encode_op_into(op, buf);
}

/// A stored op: binary, or JSON text in rows written before schema version 5. Its content is
/// not re-verified here.
pub(super) fn op_from_sql(value: ValueRef<'_>) -> Result<OpRecord, StoreError> {
    match value {
        ValueRef::Blob(bytes) => decode_op(bytes).map_err(|_| invalid_op()),
        ValueRef::Text(text) => serde_json::from_slice(text).map_err(|_| invalid_op()),
        _ => Err(invalid_op()),
    }
}

/// How many bytes a stored op takes: its record's length.
pub(super) fn stored_len(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => bytes.len(),
        _ => 0,
    }
}

/// The id a stored op claims, without decoding its payload where the form allows.
pub(super) fn op_id_from_sql(value: ValueRef<'_>) -> Result<OpId, StoreError> {
    match value {
        ValueRef::Blob(bytes) => claimed_op_id(bytes).map_err(|_| invalid_op()),
        other => op_from_sql(other).map(|op| op.op_id()),
    }
}

fn invalid_op() -> StoreError {
    StoreError::Decode("stored op is invalid".into())
}

/// A head row's column values.
pub(super) struct HeadRow {
    pub(super) device: String,
    pub(super) seq: i64,
    pub(super) op_id: String,
    pub(super) wall: i64,
    pub(super) counter: i64,
}

impl HeadRow {
    /// The row storing `device`'s head.
    pub(super) fn of(device: DeviceId, head: &ChainHead) -> Result<Self, StoreError> {
        Ok(Self {
            device: device.to_string(),
            seq: seq_to_sql(head.seq)?,
            op_id: head.op_id.to_string(),
            wall: u64_to_sql(head.hlc.wall_ms, "stamp")?,
            counter: i64::from(head.hlc.counter),
        })
    }
}

/// Reads a head row selected as `device, seq, op_id, hlc_wall_ms, hlc_counter`.
pub(super) fn head_from_row(row: &Row<'_>) -> Result<(DeviceId, ChainHead), StoreError> {
    let text = |i| -> Result<String, StoreError> { row.get(i).map_err(map_sqlite) };
    let int = |i| -> Result<i64, StoreError> { row.get(i).map_err(map_sqlite) };
    let device: DeviceId = parse(&text(0)?, "device id")?;
    let seq = seq_from_sql(int(1)?)?;
    let op_id: OpId = parse(&text(2)?, "op id")?;
    let wall = u64::try_from(int(3)?).map_err(|_| StoreError::Decode("negative stamp".into()))?;
    let counter = u32::try_from(int(4)?)
        .map_err(|_| StoreError::Decode("stamp counter out of range".into()))?;
    Ok((
        device,
        ChainHead {
            seq,
            op_id,
            hlc: Hlc::new(wall, counter, device),
        },
    ))
}

/// A base checkpoint's column values: id, frontier JSON, state hash hex, state bytes.
pub(super) fn checkpoint_to_sql(
    cp: &Checkpoint,
) -> Result<(String, String, String, &[u8]), StoreError> {
    let frontier =
        serde_json::to_string(cp.frontier()).map_err(|e| StoreError::Backend(Box::new(e)))?;
    Ok((
        cp.id().to_string(),
        frontier,
        crate::domain::oplog::canonical::to_hex(&cp.state_hash()),
        cp.state_bytes(),
    ))
}

/// A stored base checkpoint's frontier.
pub(super) fn frontier_from_sql(frontier: &str) -> Result<Frontier, StoreError> {
    serde_json::from_str(frontier)
        .map_err(|_| StoreError::Decode("stored checkpoint frontier is invalid".into()))
}

/// A stored base checkpoint (unverified: the caller verifies after opening it).
pub(super) fn checkpoint_from_sql(
    id: &str,
    frontier: &str,
    state_hash: &str,
    state: Vec<u8>,
) -> Result<Checkpoint, StoreError> {
    let id: CheckpointId = parse(id, "checkpoint id")?;
    let frontier = frontier_from_sql(frontier)?;
    let hash = crate::domain::oplog::canonical::from_hex(state_hash)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| StoreError::Decode("stored state hash is invalid".into()))?;
    Ok(Checkpoint::from_parts(id, frontier, hash, state))
}
