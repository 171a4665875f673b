//! `tandem sync`: one device's sync session from the command line, over a relay directory.
//!
//! Each invocation opens the device kept in a data directory, does one thing and exits:
//!
//! | File in the data directory | What it holds |
//! |---|---|
//! | `sync.db` | the device's journal (its id, every op it holds, its base checkpoint) |
//! | `leases.db` | the lease database of `lease` and `fence` (`--lease-db` names a shared one) |
//! | `sync.keys` | the scope keys, owner-only (`--key-file` names another file) |
//! | `sync.lock` | a lock each command holds while it runs, so commands on one device take turns |
//!
//! `init` creates the directory and the relay directory. It creates the key file, with a fresh
//! personal key, only for a relay no device uses yet; a device set up later is told to copy
//! the key file of a device already there, instead of getting a key its peers cannot use. Every
//! other command refuses to start on a data directory, relay directory or key file that is not
//! there, so a typo never starts a new device or a new relay. Ops that do not open with the
//! device's key file are refused with a hint to copy it again.
//!
//! Leases (`lease acquire | renew | release | status`) and the dispatch fence (`fence`, after
//! `intent` records a run's progress) work as the library's do. Devices contend for a lease
//! only through one lease database: each has its own unless `--lease-db` names a shared file,
//! which `init` creates and every other command requires to exist. The SQLite coordinator is
//! safe across processes on one host, not across machines sharing a synced folder.
//!
//! Two devices converge when they point at the same relay directory (two processes on one host,
//! or two machines sharing a synced folder), hold the same key file (copied over a channel you
//! trust; it must stay readable by its owner only) and each run `pump`. Ops are sealed before
//! they reach the relay, so the relay directory holds no message text.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::adapters::fs_relay::FsRelay;
use crate::adapters::keys::FileKeyProvider;
use crate::adapters::sqlite::{SqliteJournal, SqliteLeaseCoordinator, SqliteOptions};
use crate::adapters::system::SystemClock;
use crate::domain::ids::{Epoch, RunId};
use crate::domain::oplog::{
    CheckpointId, DispatchDecision, Frontier, IntentId, RepairReport, Scope, SealError, Turn,
};
use crate::domain::Role;
use crate::ports::{Clock, KeyProvider, Relay};

use super::sync::{DeviceSync, SyncError, SyncStatus};

mod leases;

pub use leases::{IntentState, LeaseCommand, DEFAULT_LEASE_TTL_MS};

/// The journal's file in a data directory.
pub const JOURNAL_FILE: &str = "sync.db";
/// The lease database's file in a data directory.
pub const LEASES_FILE: &str = "leases.db";
/// The lock file in a data directory: one command at a time runs on a device.
pub const LOCK_FILE: &str = "sync.lock";
/// The key file's default name in a data directory.
pub const KEY_FILE: &str = "sync.keys";
/// Pump rounds `pump` runs by default before it stops with ops still waiting.
pub const DEFAULT_PUMP_ROUNDS: usize = 64;

/// Where a device keeps its state and which relay it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPaths {
    /// The device's data directory (journal, lease database, default key file).
    pub data_dir: PathBuf,
    /// The relay directory every device of the user shares.
    pub relay_dir: PathBuf,
    /// The key file, if not `sync.keys` in the data directory.
    pub key_file: Option<PathBuf>,
    /// The lease database, if not `leases.db` in the data directory.
    pub lease_db: Option<PathBuf>,
}

impl SyncPaths {
    /// The key file in use.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(KEY_FILE))
    }

    /// The lease database in use.
    pub fn lease_db(&self) -> PathBuf {
        self.lease_db
            .clone()
            .unwrap_or_else(|| self.data_dir.join(LEASES_FILE))
    }

    fn journal(&self) -> PathBuf {
        self.data_dir.join(JOURNAL_FILE)
    }
}

/// What one `tandem sync` invocation does. It is also the command line's subcommand (its doc
/// comments are the help text).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum SyncCommand {
    /// Creates the device (data directory, journal, relay directory, key file if missing),
    /// registers it on the relay's roster and prints its id. Running it again changes nothing
    /// but the device's last-seen time.
    Init,
    /// Prints where the device stands: state hash, frontiers, roster, base checkpoint.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Records one turn of a conversation (sealed and journaled; the next `pump` sends it).
    Say {
        /// The conversation id (1 to 256 bytes).
        conversation: String,
        /// Who speaks: user, assistant, system or tool.
        #[arg(value_parser = parse_role)]
        role: Role,
        /// What they say.
        text: String,
    },
    /// Pushes this device's ops, pulls everyone's and acknowledges them, until up to date.
    Pump {
        /// Stop after this many rounds even if more ops wait (at least 1).
        #[arg(long, default_value_t = DEFAULT_PUMP_ROUNDS)]
        max_rounds: usize,
    },
    /// Prints a conversation's turns in order.
    Transcript {
        /// The conversation id.
        conversation: String,
        /// Print the turns as a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prints a conversation repaired into messages a model provider accepts, and what was
    /// repaired.
    Resume {
        /// The conversation id.
        conversation: String,
        /// Print `{"messages": [...], "repairs": {...}}` instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publishes a checkpoint at the relay's stable frontier (lets the relay compact what it
    /// covers).
    Checkpoint,
    /// Re-anchors the journal on the relay's latest checkpoint.
    Rebase,
    /// Leases on a resource: one device at a time holds one, each new holder at a larger
    /// fencing epoch.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Records where an intent of a run stands (sealed and journaled; `pump` sends it). Once a
    /// device holds a run's `committed` intent, its fence refuses to dispatch the run again.
    Intent {
        /// The intent id (1 to 128 of `A-Z a-z 0-9 _ . : -`).
        intent_id: IntentId,
        /// The run it belongs to (a UUID).
        run_id: RunId,
        /// Where it stands.
        #[arg(value_enum)]
        status: IntentState,
        /// The fencing epoch it was dispatched at (for `dispatched` only).
        #[arg(long, value_parser = leases::parse_epoch)]
        epoch: Option<Epoch>,
    },
    /// Asks the dispatch fence whether this device may run a run under its lease on a
    /// resource at an epoch. Prints `proceed`, or fails saying why not (the run is committed,
    /// the epoch is stale, or the lease is not held).
    Fence {
        /// The leased resource.
        resource: String,
        /// The run to dispatch (a UUID).
        run_id: RunId,
        /// The epoch `lease acquire` printed.
        #[arg(value_parser = leases::parse_epoch)]
        epoch: Epoch,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).map_err(|e| e.to_string())
}

/// Why a `tandem sync` command failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncCliError {
    /// The data directory holds no device.
    #[error("{} holds no device; run `tandem sync init` first", .data_dir.display())]
    NotInitialised {
        /// The data directory named.
        data_dir: PathBuf,
    },
    /// The relay directory does not exist.
    #[error(
        "no relay directory at {}; check the path, or run `tandem sync init` to create it",
        .relay_dir.display()
    )]
    NoRelay {
        /// The relay directory named.
        relay_dir: PathBuf,
    },
    /// The key file does not exist.
    #[error(
        "no key file at {}; copy the key file of a device that syncs over this relay \
         (keep it readable by its owner only), or run `tandem sync init` on the first device",
        .path.display()
    )]
    NoKeyFile {
        /// The key file named.
        path: PathBuf,
    },
    /// The lease database named with `--lease-db` does not exist.
    #[error(
        "no lease database at {}; check the path, or run `tandem sync init` with this \
         --lease-db to create it (devices share leases only through one file on one host)",
        .path.display()
    )]
    NoLeaseDb {
        /// The lease database named.
        path: PathBuf,
    },
    /// `init` found no key file for a relay other devices already use.
    #[error(
        "the relay already serves {devices} device(s) but there is no key file at {}; copy the \
         key file of one of them there (keep it readable by its owner only) and run init again",
        .path.display()
    )]
    KeyNeeded {
        /// The key file named.
        path: PathBuf,
        /// Devices on the relay's roster.
        devices: usize,
    },
    /// `pump` was asked for zero rounds.
    #[error("pump needs at least one round")]
    NoRounds,
    /// `intent` got `--epoch` for a status other than `dispatched`, or none for `dispatched`.
    #[error("{}", if *.given {
        "--epoch is for a dispatched intent only"
    } else {
        "a dispatched intent needs --epoch (the epoch of the lease it was dispatched under)"
    })]
    IntentEpoch {
        /// Whether an epoch was given.
        given: bool,
    },
    /// The dispatch fence refused: do not run the effect.
    #[error("{}", leases::refusal(.resource, .run_id, .epoch, .decision))]
    Fenced {
        /// The leased resource.
        resource: String,
        /// The run.
        run_id: RunId,
        /// The epoch asked about.
        epoch: Epoch,
        /// The fence's decision (never `Proceed`).
        decision: DispatchDecision,
    },
    /// Ops or a checkpoint on the relay do not open with this device's key file: most often
    /// a key file created for, or copied from, another relay.
    #[error(
        "{source}; every device on a relay needs a copy of the same key file: if this one was \
         created here or copied from elsewhere, copy it again from a device of this relay"
    )]
    DoesNotOpen {
        /// The refusal.
        source: SyncError,
    },
    /// The sync session failed (journal, relay, keys, verification, ...).
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Writing the output or creating a directory failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs `command` for the device at `paths`, writing what it did to `out`.
pub fn run(
    paths: &SyncPaths,
    command: SyncCommand,
    out: &mut dyn Write,
) -> Result<(), SyncCliError> {
    if command == (SyncCommand::Pump { max_rounds: 0 }) {
        return Err(SyncCliError::NoRounds);
    }
    if command != SyncCommand::Init {
        check_prepared(paths)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(async {
        std::fs::create_dir_all(&paths.data_dir)?;
        let _device_lock = lock_device(paths)?;
        let relay = Arc::new(FsRelay::open(&paths.relay_dir).map_err(SyncError::from)?);
        let keys = Arc::new(FileKeyProvider::open(paths.key_file()).map_err(SyncError::from)?);
        let key_created =
            command == SyncCommand::Init && prepare(paths, relay.as_ref(), keys.as_ref()).await?;
        let mut device = open(paths, Arc::clone(&relay), keys).await?;
        match command {
            SyncCommand::Init => {
                // On the roster from now on, so a device set up next knows to copy the key.
                relay
                    .register(device.device_id(), now_ms())
                    .await
                    .map_err(SyncError::from)?;
                init(paths, &device, key_created, out)
            }
            SyncCommand::Status { json } => {
                let status = device.status().await?;
                if json {
                    write_json(out, &status)
                } else {
                    print_status(&status, now_ms(), out)
                }
            }
            SyncCommand::Say {
                conversation,
                role,
                text,
            } => {
                let appended = device
                    .record_turn(Scope::Personal, &conversation, Turn::text(role, text))
                    .await?;
                writeln!(
                    out,
                    "recorded op {} ({} turn of {conversation}); `tandem sync pump` sends it",
                    appended.op_id,
                    role.as_str()
                )?;
                Ok(())
            }
            SyncCommand::Pump { max_rounds } => pump(&mut device, max_rounds, out).await,
            SyncCommand::Transcript { conversation, json } => {
                let turns = device.transcript(&conversation);
                if json {
                    write_json(out, &turns)
                } else {
                    print_turns(&turns, out)
                }
            }
            SyncCommand::Resume { conversation, json } => {
                let (messages, repairs) = device.resume(&conversation);
                if json {
                    write_json(
                        out,
                        &serde_json::json!({ "messages": messages, "repairs": repairs }),
                    )
                } else {
                    let turns: Vec<Turn> = messages.into_iter().map(Turn::from).collect();
                    print_turns(&turns, out)?;
                    writeln!(out, "repairs: {}", describe_repairs(&repairs))?;
                    Ok(())
                }
            }
            SyncCommand::Checkpoint => {
                match device.publish_checkpoint().await? {
                    Some(id) => writeln!(out, "checkpoint {id} at the stable frontier")?,
                    None => writeln!(
                        out,
                        "no checkpoint: no op is acknowledged by every live device yet, or this \
                         device does not hold all that is (pump, then try again)"
                    )?,
                }
                Ok(())
            }
            SyncCommand::Lease(command) => leases::lease(&device, command, out).await,
            SyncCommand::Intent {
                intent_id,
                run_id,
                status,
                epoch,
            } => leases::intent(&mut device, intent_id, run_id, status, epoch, out).await,
            SyncCommand::Fence {
                resource,
                run_id,
                epoch,
            } => leases::fence(&device, resource, run_id, epoch, out).await,
            SyncCommand::Rebase => {
                if device.rebase().await? {
                    writeln!(
                        out,
                        "rebased on checkpoint {}",
                        base_text(device.base_checkpoint())
                    )?;
                } else {
                    writeln!(out, "nothing to do: no newer checkpoint on the relay")?;
                }
                Ok(())
            }
        }
    });
    done.map_err(explain)
}

/// Adds what to do to a refusal a user can fix.
fn explain(e: SyncCliError) -> SyncCliError {
    match e {
        SyncCliError::Sync(
            source @ SyncError::Seal(
                SealError::Decrypt { .. } | SealError::CheckpointDecrypt { .. },
            ),
        ) => SyncCliError::DoesNotOpen { source },
        other => other,
    }
}

/// Creates what `init` needs; returns whether it created the key file. A new key is made only
/// for a relay no device uses yet: ops sealed under another key would not open on the devices
/// already there (nor theirs here).
async fn prepare(
    paths: &SyncPaths,
    relay: &FsRelay,
    keys: &FileKeyProvider,
) -> Result<bool, SyncCliError> {
    let key_file = paths.key_file();
    if key_file.exists() {
        return Ok(false);
    }
    let devices = relay.roster().await.map_err(SyncError::from)?.len();
    if devices > 0 {
        return Err(SyncCliError::KeyNeeded {
            path: key_file,
            devices,
        });
    }
    // The first use of the personal scope creates its key (and the file).
    keys.current(&Scope::Personal).map_err(SyncError::from)?;
    Ok(true)
}

/// Refuses to start on a device, relay or key file that is not there.
fn check_prepared(paths: &SyncPaths) -> Result<(), SyncCliError> {
    if !paths.journal().is_file() {
        return Err(SyncCliError::NotInitialised {
            data_dir: paths.data_dir.clone(),
        });
    }
    if !paths.relay_dir.is_dir() {
        return Err(SyncCliError::NoRelay {
            relay_dir: paths.relay_dir.clone(),
        });
    }
    let key_file = paths.key_file();
    if !key_file.is_file() {
        return Err(SyncCliError::NoKeyFile { path: key_file });
    }
    // A mistyped shared lease database must not quietly become a new one: two devices on
    // different files would both hold the "same" lease.
    if let Some(lease_db) = &paths.lease_db {
        if !lease_db.is_file() {
            return Err(SyncCliError::NoLeaseDb {
                path: lease_db.clone(),
            });
        }
    }
    Ok(())
}

/// Waits until no other command runs on this device, and keeps it so until the returned file
/// is dropped (or the process ends). Two commands on one device at once would both author
/// the chain's next op; the journal would refuse the second, losing what it was to record.
fn lock_device(paths: &SyncPaths) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(paths.data_dir.join(LOCK_FILE))?;
    file.lock()?;
    Ok(file)
}

/// Opens the device's sync session over its journal and lease database, `relay` and `keys`.
async fn open(
    paths: &SyncPaths,
    relay: Arc<FsRelay>,
    keys: Arc<FileKeyProvider>,
) -> Result<DeviceSync, SyncError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let journal = Arc::new(SqliteJournal::open(
        paths.journal(),
        SqliteOptions::default(),
    )?);
    let leases = Arc::new(SqliteLeaseCoordinator::open(
        paths.lease_db(),
        Arc::clone(&clock),
    )?);
    DeviceSync::builder(journal, relay, leases, keys)
        .clock(clock)
        .open()
        .await
}

fn init(
    paths: &SyncPaths,
    device: &DeviceSync,
    key_created: bool,
    out: &mut dyn Write,
) -> Result<(), SyncCliError> {
    writeln!(out, "device {}", device.device_id())?;
    writeln!(out, "journal {}", paths.journal().display())?;
    writeln!(out, "relay {}", paths.relay_dir.display())?;
    let key_file = paths.key_file();
    if key_created {
        writeln!(
            out,
            "key file {} (created): copy it to every other device that syncs over this relay",
            key_file.display()
        )?;
    } else {
        writeln!(out, "key file {} (found)", key_file.display())?;
    }
    Ok(())
}

async fn pump(
    device: &mut DeviceSync,
    max_rounds: usize,
    out: &mut dyn Write,
) -> Result<(), SyncCliError> {
    for round in 1..=max_rounds {
        let report = device.pump().await?;
        writeln!(
            out,
            "round {round}: pushed {} (resent {}), pulled {}, journaled {}, folded {}{}",
            report.pushed,
            report.push_duplicates,
            report.pulled,
            report.journaled,
            report.folded,
            if report.rebased {
                ", rebased on the relay's checkpoint"
            } else {
                ""
            }
        )?;
        if !report.more {
            writeln!(
                out,
                "up to date: {}, state {}",
                coverage(device.frontier()),
                device.state_hash_hex()
            )?;
            return Ok(());
        }
    }
    writeln!(
        out,
        "stopped after {max_rounds} rounds with more ops waiting; run `tandem sync pump` again"
    )?;
    Ok(())
}

/// Ops a frontier covers (every chain from seq 0 to its head).
fn op_count(frontier: &Frontier) -> u64 {
    frontier.iter().map(|(_, head)| head.seq.get() + 1).sum()
}

/// What a frontier covers, as "N ops from M devices".
fn coverage(frontier: &Frontier) -> String {
    format!(
        "{} from {}",
        count(op_count(frontier), "op"),
        count(frontier.len() as u64, "device")
    )
}

/// A base checkpoint's id, or "none".
fn base_text(base: Option<CheckpointId>) -> String {
    base.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

/// `n` and `noun`, plural unless `n` is 1.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn print_status(status: &SyncStatus, now_ms: u64, out: &mut dyn Write) -> Result<(), SyncCliError> {
    writeln!(out, "device         {}", status.device)?;
    writeln!(out, "state hash     {}", status.state_hash)?;
    writeln!(out, "journal        {}", coverage(&status.journal_frontier))?;
    writeln!(out, "stable         {}", coverage(&status.stable_frontier))?;
    writeln!(out, "base           {}", base_text(status.base_checkpoint))?;
    writeln!(out, "clock ahead    {} ms", status.clock_ahead_ms)?;
    if !status.held_back.is_empty() {
        let held: Vec<String> = status.held_back.iter().map(ToString::to_string).collect();
        writeln!(out, "held back      {}", held.join(", "))?;
    }
    writeln!(
        out,
        "roster         {}",
        count(status.roster.len() as u64, "device")
    )?;
    for entry in &status.roster {
        let marker = if entry.device == status.device {
            " (this device)"
        } else {
            ""
        };
        writeln!(
            out,
            "  {}{marker}: acked {}, last seen {} s ago",
            entry.device,
            count(op_count(&entry.acked), "op"),
            now_ms.saturating_sub(entry.last_seen_ms) / 1000
        )?;
    }
    Ok(())
}

fn print_turns(turns: &[Turn], out: &mut dyn Write) -> Result<(), SyncCliError> {
    if turns.is_empty() {
        writeln!(out, "(no turns)")?;
    }
    for turn in turns {
        writeln!(out, "{}: {}", turn.role.as_str(), turn.text)?;
        for call in &turn.tool_calls {
            writeln!(out, "  calls {} ({})", call.name, call.id)?;
        }
    }
    Ok(())
}

/// Writes `value` as pretty JSON and a newline.
fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), SyncCliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// What `report` repaired, as "none" or a list of counts by kind.
fn describe_repairs(report: &RepairReport) -> String {
    let kinds = [
        (report.stray_fields_cleared.len(), "stray fields cleared"),
        (
            report.orphan_results_dropped.len(),
            "orphan tool results dropped",
        ),
        (
            report.duplicate_results_dropped.len(),
            "duplicate tool results dropped",
        ),
        (
            report.results_reordered.len(),
            "tool results moved after their call",
        ),
        (
            report.unanswered_calls_stripped.len(),
            "unanswered tool calls stripped",
        ),
        (
            report.duplicate_calls_stripped.len(),
            "duplicate tool calls stripped",
        ),
        (report.empty_turns_dropped.len(), "empty turns dropped"),
        (report.merged.len(), "adjacent same-role turns merged"),
    ];
    let done: Vec<String> = kinds
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if done.is_empty() {
        "none".to_owned()
    } else {
        done.join(", ")
    }
}

fn now_ms() -> u64 {
    u64::try_from(SystemClock.now_ms()).unwrap_or(0)
}
