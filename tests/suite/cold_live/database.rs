//! Looking at the run's PostgreSQL database directly, as the superuser (no row-level
//! security): which tables hold a given text, and what a session's rows look like.

// A shared helper: not every test uses every function.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tandem::domain::SessionId;

use crate::cloud_live::services::LiveServices;

/// Every ordinary table outside PostgreSQL's own schemas, as `schema.table` (quoted).
pub fn tables(live: &LiveServices) -> Vec<String> {
    live.psql(
        "select format('%I.%I', table_schema, table_name) from information_schema.tables \
         where table_type = 'BASE TABLE' \
           and table_schema not in ('pg_catalog', 'information_schema') \
         order by 1",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The tables in which some row's text form (`row::text`, every column) contains `needle`,
/// with the number of such rows.
pub fn tables_containing(live: &LiveServices, needle: &str) -> Vec<(String, u64)> {
    tables(live)
        .into_iter()
        .filter_map(|table| {
            let n = live.count(&format!(
                "{table} t where strpos(t::text, {}) > 0",
                literal(needle)
            ));
            (n > 0).then_some((table, n))
        })
        .collect()
}

/// `text` as it would appear inside any standard base64 encoding of a longer byte string
/// (for each of the three alignments, the stable middle part), for leak searches.
pub fn base64_forms(text: &str) -> Vec<String> {
    (0..3)
        .filter_map(|shift| {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(text.as_bytes());
            let encoded = B64.encode(&bytes);
            // Characters touched by the padding bytes or the unknown tail are not stable.
            let start = (shift * 4).div_ceil(3) + 1;
            let end = encoded.len().saturating_sub(4);
            (end > start + 8).then(|| encoded[start..end].to_owned())
        })
        .collect()
}

/// `(sequence_number, id)` of every message row of `session`, in order.
pub fn message_keys(live: &LiveServices, session: SessionId) -> Vec<(u64, String)> {
    live.psql(&format!(
        "select sequence_number || ' ' || id from public.messages \
         where session_id = '{session}' order by sequence_number"
    ))
    .lines()
    .filter_map(|line| {
        let (seq, id) = line.split_once(' ')?;
        Some((seq.parse().ok()?, id.to_owned()))
    })
    .collect()
}
