//! `tandem demo`: a readable walk through the engine on embedded defaults.
//!
//! Act one, the session engine: it creates a repository and a session, appends messages while
//! a live subscriber on another thread prints them, records a runtime status, closes the
//! session, reopens the database to show silent recovery, and drains the effect log with a
//! named consumer.
//!
//! Act two, two devices: a laptop and a desktop, each with its own database, share a relay
//! directory and a lease database. The laptop writes a conversation through its engine and
//! the oplog tee, both pump until their state hashes are equal, the desktop resumes the
//! laptop's conversation (with the repairs a provider needs), and an agent's execution lease
//! passes from the laptop to the desktop while the dispatch fence refuses the laptop's stale
//! epoch and a second dispatch of a committed run.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::Mutex;
use uuid::Uuid;

use crate::adapters::fs_relay::FsRelay;
use crate::adapters::keys::FileKeyProvider;
use crate::adapters::sink::RecordingSink;
use crate::adapters::sqlite::{SqliteJournal, SqliteLeaseCoordinator, SqliteOptions, SqliteStore};
use crate::adapters::system::SystemClock;
use crate::domain::ids::RunId;
use crate::domain::oplog::{DispatchDecision, Intent, IntentId, IntentStatus, RepairReport, Scope};
use crate::domain::{ConsumerName, NewMessage, Role, RuntimeState, RuntimeStatus, SessionId};
use crate::ports::{Clock, KeyProvider, Relay};

use super::engine::{Engine, LiveEvent};
use super::sync::{DeviceSync, DeviceSyncBuilder};
use super::tee::OplogTee;

/// Any failure of the demo, with a readable message.
pub type DemoError = Box<dyn std::error::Error>;

/// Runs the demo in `data_dir` (or a fresh temporary directory, removed afterwards), writing
/// the narration to `out`.
pub fn run(data_dir: Option<&Path>, out: &mut dyn Write) -> Result<(), DemoError> {
    let temp;
    let dir = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.to_owned()
        }
        None => {
            temp = tempfile::Builder::new().prefix("tandem-demo-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let db = dir.join("tandem.db");
    writeln!(out, "tandem demo: database {}", db.display())?;
    writeln!(out)?;

    // Act 1: write.
    let store = Arc::new(SqliteStore::open(&db, SqliteOptions::default())?);
    let sink = Arc::new(RecordingSink::new());
    let engine = Engine::builder(store).sink(sink.clone()).open()?;
    writeln!(
        out,
        "1. opened the engine (SQLite WAL, synchronous=FULL), device {}",
        engine.device_id()
    )?;

    let repo = engine.create_repository("tandem-demo", Some("https://example.invalid/demo.git"))?;
    let session = engine.create_session(repo.id, "Fix the flaky upload test")?;
    writeln!(
        out,
        "2. created repository {:?} and session {:?}",
        repo.name, session.title
    )?;

    let mut subscription = engine.subscribe(session.id)?;
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let printer = thread::spawn(move || loop {
        let line = match subscription.recv() {
            LiveEvent::Message(m) => {
                format!("   live > #{} {:<9} {}", m.seq, m.role.as_str(), m.content)
            }
            LiveEvent::Lagged {
                missed,
                resume_from_seq,
            } => {
                format!("   live > lagged: {missed} missed, resume from #{resume_from_seq}")
            }
            LiveEvent::Closed => "   live > session closed".to_owned(),
            LiveEvent::Ended => break,
        };
        let closed = line.ends_with("session closed");
        if lines_tx.send(line).is_err() || closed {
            break;
        }
    });
    let show_live = |out: &mut dyn Write, n: usize| -> Result<(), DemoError> {
        for _ in 0..n {
            let line = lines_rx.recv_timeout(Duration::from_secs(5))?;
            writeln!(out, "{line}")?;
        }
        Ok(())
    };

    writeln!(
        out,
        "3. appending while a live subscriber on another thread prints:"
    )?;
    engine.append_message(
        session.id,
        NewMessage::new(Role::User, "The upload test fails one run in ten. Why?"),
    )?;
    show_live(out, 1)?;
    let turn = vec![
        NewMessage::new(Role::Assistant, "Let me look at the retry loop."),
        NewMessage::new(Role::Tool, "read_file tests/upload.rs: 212 lines"),
        NewMessage::new(
            Role::Assistant,
            "The test sleeps 50 ms instead of awaiting the ack.",
        ),
        NewMessage::new(Role::Assistant, "Fixed: it now waits on the ack channel."),
    ];
    engine.append_messages(session.id, turn)?;
    writeln!(
        out,
        "   (the last four were one group commit: one transaction)"
    )?;
    show_live(out, 4)?;

    engine.update_runtime_status(
        session.id,
        RuntimeStatus {
            status: RuntimeState::Idle,
            error_message: None,
        },
    )?;
    writeln!(out, "4. runtime status set to idle")?;
    engine.close_session(session.id)?;
    writeln!(out, "5. closed the session")?;
    show_live(out, 1)?;
    // The printer thread stops after the close; joining cannot hang.
    printer.join().map_err(|_| "live printer thread panicked")?;
    let late = engine.append_message(session.id, NewMessage::new(Role::User, "one more thing"));
    if let Err(e) = late {
        writeln!(out, "   appending now is refused: {e}")?;
    }
    let emitted = sink.len();
    drop(engine);

    // Act 2: reopen.
    let store = Arc::new(SqliteStore::open(&db, SqliteOptions::default())?);
    let sink = Arc::new(RecordingSink::new());
    let engine = Engine::builder(store).sink(sink.clone()).open()?;
    let transcript = engine.transcript(session.id)?;
    writeln!(
        out,
        "6. reopened the database: {} session(s), {} message(s) rebuilt; effects emitted on reopen: {} (the first run emitted {emitted})",
        engine.sessions().len(),
        transcript.len(),
        sink.len()
    )?;

    // Act 3: the effect log.
    let log = engine.effect_log();
    let consumer = log.consumer(ConsumerName::parse("demo")?);
    writeln!(out, "7. the durable effect log (head {}):", log.head()?)?;
    let records = consumer.read(100)?;
    for r in &records {
        writeln!(out, "   #{:<3} {}", r.seq, r.effect.kind())?;
    }
    let halfway = records[records.len() / 2].seq;
    consumer.ack(halfway)?;
    writeln!(
        out,
        "   consumer \"demo\" acknowledged up to #{halfway}: cursor {}, still behind by {}",
        consumer.position()?,
        consumer.lag()?
    )?;
    writeln!(out)?;

    // Act two: two devices.
    two_devices(&dir, out)?;
    writeln!(out)?;
    writeln!(out, "done.")?;
    Ok(())
}

/// The lease resource of act two: one agent's runs.
const AGENT: &str = "agent:fix-upload";
/// How long act two's leases last.
const LEASE_TTL_MS: u64 = 30_000;
/// Pump rounds act two allows before it gives up on convergence.
const MAX_PUMP_ROUNDS: usize = 8;

/// Act two: two devices over a shared relay directory (see the module docs). Everything that
/// blocks (files, SQLite, the engine) is opened and written here; the device-sync session,
/// which moves its own blocking work off the runtime, runs inside [`share`].
fn two_devices(dir: &Path, out: &mut dyn Write) -> Result<(), DemoError> {
    let relay: Arc<dyn Relay> = Arc::new(FsRelay::open(dir.join("relay"))?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The laptop's key file creates the personal scope key on first use; the desktop holds
    // the same key (in production it arrives through a signed key wrap).
    let laptop_keys = Arc::new(FileKeyProvider::open(dir.join("laptop.keys"))?);
    let (epoch, key) = laptop_keys.current(&Scope::Personal)?;
    let desktop_keys = Arc::new(FileKeyProvider::open(dir.join("desktop.keys"))?);
    desktop_keys.import(&Scope::Personal, epoch, key)?;
    // Each device opens the lease database on its own connection, as another process on the
    // same host would.
    let leases_db = dir.join("leases.db");
    let laptop_leases = Arc::new(SqliteLeaseCoordinator::open(
        &leases_db,
        Arc::clone(&clock),
    )?);
    let desktop_leases = Arc::new(SqliteLeaseCoordinator::open(
        &leases_db,
        Arc::clone(&clock),
    )?);
    writeln!(
        out,
        "8. two devices, laptop and desktop, share the relay directory {}",
        dir.join("relay").display()
    )?;

    // The laptop: engine, journal and tee over one database file.
    let store = Arc::new(SqliteStore::open(
        dir.join("laptop.db"),
        SqliteOptions::default(),
    )?);
    let engine = Engine::builder(store.clone()).open()?;
    let laptop = DeviceSync::builder(
        Arc::new(SqliteJournal::beside(&store)?),
        Arc::clone(&relay),
        laptop_leases,
        laptop_keys,
    );
    let desktop = DeviceSync::builder(
        Arc::new(SqliteJournal::open(
            dir.join("desktop.db"),
            SqliteOptions::default(),
        )?),
        relay,
        desktop_leases,
        desktop_keys,
    );
    let repo = engine.create_repository("tandem-demo", None)?;
    let session = engine.create_session(repo.id, "Fix the flaky upload test")?;
    engine.append_messages(
        session.id,
        vec![
            NewMessage::new(Role::User, "The upload test fails one run in ten. Why?"),
            NewMessage::new(Role::Assistant, "Let me read the test."),
            NewMessage::new(Role::Tool, "read_file tests/upload.rs: 212 lines"),
            NewMessage::new(
                Role::Assistant,
                "It sleeps 50 ms instead of awaiting the ack.",
            ),
            NewMessage::new(Role::User, "Fix it, please."),
            NewMessage::new(
                Role::Assistant,
                "Fixed: the test now waits on the ack channel.",
            ),
        ],
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(share(store, session.id, laptop, desktop, out))
}

/// Act two on the runtime: the tee, the pumps, the resume and the lease hand-off.
async fn share(
    store: Arc<SqliteStore>,
    session: SessionId,
    laptop: DeviceSyncBuilder,
    desktop: DeviceSyncBuilder,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let laptop = Arc::new(Mutex::new(laptop.open().await?));
    let mut desktop = desktop.open().await?;
    let tee = OplogTee::new(store, Arc::clone(&laptop));
    let recorded = tee.catch_up(16).await?;
    writeln!(
        out,
        "9. the laptop's engine wrote 6 messages; its oplog tee recorded {recorded} sealed conversation ops"
    )?;

    // Pump until both hold the same ops.
    for round in 1..=MAX_PUMP_ROUNDS {
        let l = laptop.lock().await.pump().await?;
        let d = desktop.pump().await?;
        writeln!(
            out,
            "   pump round {round}: laptop pushed {} pulled {}; desktop pushed {} pulled {}",
            l.pushed, l.pulled, d.pushed, d.pulled
        )?;
        let a = laptop.lock().await;
        if a.frontier() == desktop.frontier() && !l.more && !d.more {
            break;
        }
    }
    let (lh, dh) = (
        laptop.lock().await.state_hash_hex(),
        desktop.state_hash_hex(),
    );
    writeln!(out, "10. state hash of the laptop:  {lh}")?;
    writeln!(out, "    state hash of the desktop: {dh}")?;
    if lh != dh {
        return Err("the devices did not converge".into());
    }
    writeln!(out, "    equal: the devices converged")?;

    // The desktop resumes the laptop's conversation.
    let (messages, report) = desktop.resume(&session.to_string());
    writeln!(
        out,
        "11. the desktop resumes the conversation: {} turns recorded, {} messages after repair",
        desktop.transcript(&session.to_string()).len(),
        messages.len()
    )?;
    for m in &messages {
        writeln!(
            out,
            "   {:<9} {}",
            m.role.as_str(),
            m.text.replace("\n\n", " / ")
        )?;
    }
    writeln!(out, "    repairs: {}", describe_repairs(&report)?)?;

    // The lease passes from the laptop to the desktop.
    let (first_run, second_run) = (
        RunId::from_uuid(Uuid::now_v7())?,
        RunId::from_uuid(Uuid::now_v7())?,
    );
    let (laptop_lease, decision) = {
        let mut a = laptop.lock().await;
        let lease = a.lease_acquire(AGENT, LEASE_TTL_MS).await?;
        let decision = a.fence_check(AGENT, first_run, lease.epoch).await?;
        if decision.may_dispatch() {
            for status in [
                IntentStatus::Dispatched { epoch: lease.epoch },
                IntentStatus::Committed,
            ] {
                let intent = Intent {
                    intent_id: IntentId::parse(&format!("fix-upload:{first_run}"))?,
                    run_id: first_run,
                    status,
                };
                a.record_intent(Scope::Personal, &intent).await?;
            }
            a.pump().await?;
        }
        (lease, decision)
    };
    writeln!(
        out,
        "12. the laptop leases {AGENT:?} at epoch {}: the fence says {}",
        laptop_lease.epoch,
        decision_name(decision)
    )?;
    if !decision.may_dispatch() {
        return Err("the fence refused the laptop's fresh lease".into());
    }
    writeln!(
        out,
        "    it runs the agent, records the run dispatched then committed, and pumps"
    )?;
    laptop
        .lock()
        .await
        .lease_release(AGENT, laptop_lease.epoch)
        .await?;
    let desktop_lease = desktop.lease_acquire(AGENT, LEASE_TTL_MS).await?;
    writeln!(
        out,
        "13. the laptop releases it; the desktop acquires it at epoch {}",
        desktop_lease.epoch
    )?;
    desktop.pump().await?;
    let stale = laptop
        .lock()
        .await
        .fence_check(AGENT, second_run, laptop_lease.epoch)
        .await?;
    let again = desktop
        .fence_check(AGENT, first_run, desktop_lease.epoch)
        .await?;
    let fresh = desktop
        .fence_check(AGENT, second_run, desktop_lease.epoch)
        .await?;
    writeln!(out, "14. the dispatch fence:")?;
    let checks = [
        ("laptop", laptop_lease.epoch, "a new run", stale),
        ("desktop", desktop_lease.epoch, "the committed run", again),
        ("desktop", desktop_lease.epoch, "a new run", fresh),
    ];
    for (device, epoch, run, decision) in checks {
        let asked = format!("{device} at epoch {epoch}, {run}:");
        writeln!(out, "   {asked:<40}{}", decision_name(decision))?;
    }
    desktop.lease_release(AGENT, desktop_lease.epoch).await?;
    Ok(())
}

/// A fence decision as its wire name, with the current epoch of a stale one.
fn decision_name(decision: DispatchDecision) -> String {
    match decision {
        DispatchDecision::Proceed => "proceed".to_owned(),
        DispatchDecision::AlreadyCommitted => "already_committed".to_owned(),
        DispatchDecision::StaleEpoch { current } => format!("stale_epoch (current {current})"),
        DispatchDecision::NotHeld => "not_held".to_owned(),
    }
}

/// The non-empty kinds of a repair report, compactly.
fn describe_repairs(report: &RepairReport) -> Result<String, DemoError> {
    if report.is_clean() {
        return Ok("none".to_owned());
    }
    let fields = serde_json::to_value(report)?;
    let parts: Vec<String> = fields
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    Ok(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.lines()
            .skip_while(|l| !l.starts_with(marker))
            .collect()
    }

    #[test]
    fn both_acts_run_and_the_second_shows_convergence_resume_and_the_fence() {
        let dir = tempfile::tempdir().unwrap();
        // Twice on the same directory: a rerun continues from what the first left.
        for pass in 0..2 {
            let mut out = Vec::new();
            run(Some(dir.path()), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("5 message(s) rebuilt"),
                "act one, pass {pass}"
            );
            assert!(text.trim_end().ends_with("done."));

            let hashes: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("state hash of the"))
                .filter_map(|l| l.split_whitespace().last())
                .collect();
            assert_eq!(hashes.len(), 2);
            assert_eq!(hashes[0], hashes[1], "pass {pass}");
            assert_eq!(hashes[0].len(), 64);
            assert!(text.contains("recorded 6 sealed conversation ops"));

            let resumed = lines_after(&text, "11. ");
            assert!(resumed[0].contains("6 turns recorded, 4 messages after repair"));
            assert_eq!(
                resumed[2].split_whitespace().collect::<Vec<_>>()[..2],
                ["assistant", "Let"],
                "the tool result was dropped and the two assistant turns merged"
            );
            assert!(resumed[2].contains("It sleeps 50 ms"));
            assert!(resumed[5].contains("orphan_results_dropped"));
            assert!(resumed[5].contains("merged"));

            let epoch = |marker: &str, prefix: &str| -> u64 {
                let line = text.lines().find(|l| l.starts_with(marker)).unwrap();
                let at = line.find(prefix).unwrap() + prefix.len();
                line[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let laptop = epoch("12. ", "at epoch ");
            let desktop = epoch("13. ", "at epoch ");
            assert!(desktop > laptop, "pass {pass}: {laptop} then {desktop}");
            assert!(text.contains("the fence says proceed"));
            let fence = lines_after(&text, "14. ");
            assert!(fence[1].contains(&format!("stale_epoch (current {desktop})")));
            assert!(fence[2].ends_with("already_committed"));
            assert!(fence[3].ends_with("proceed"));
        }
    }
}
