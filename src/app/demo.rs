//! `tandem demo`: a readable walk through the engine on embedded defaults.
//!
//! It creates a repository and a session, appends messages while a live subscriber on another
//! thread prints them, records a runtime status, closes the session, reopens the database to
//! show silent recovery, and drains the effect log with a named consumer.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::adapters::sink::RecordingSink;
use crate::adapters::sqlite::{SqliteOptions, SqliteStore};
use crate::domain::{ConsumerName, NewMessage, Role, RuntimeState, RuntimeStatus};

use super::engine::{Engine, LiveEvent};

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
    writeln!(out, "done.")?;
    Ok(())
}
