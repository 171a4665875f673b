//! `tandem sync`: devices driven through the command line, one process per command, converge
//! over a shared relay directory; bad paths, a missing key file and bad arguments are refused
//! with a message and change nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Text in every turn of the tests: it must never appear in the relay directory.
const CANARY: &str = "canary-7f3a-plaintext";

/// One device's data directory beside the shared relay directory `relay`.
struct Device {
    data: PathBuf,
    relay: PathBuf,
    /// `--lease-db`, when not the device's own.
    lease_db: Option<PathBuf>,
}

impl Device {
    fn new(root: &Path, name: &str) -> Self {
        Self {
            data: root.join(name),
            relay: root.join("relay"),
            lease_db: None,
        }
    }

    /// This device contending for leases through `lease_db`.
    fn with_lease_db(self, lease_db: &Path) -> Self {
        Self {
            lease_db: Some(lease_db.to_path_buf()),
            ..self
        }
    }

    /// `tandem sync` for this device, before its subcommand.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .arg("sync")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--relay")
            .arg(&self.relay)
            .env_remove("TANDEM_KEY_FILE")
            .env_remove("TANDEM_LEASE_DB");
        if let Some(lease_db) = &self.lease_db {
            command.arg("--lease-db").arg(lease_db);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run tandem")
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tandem sync {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Runs a command that must fail with exit code `code`; returns its standard error.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "tandem sync {args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).expect("utf-8 output")
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status JSON")
    }

    fn transcript(&self, conversation: &str) -> Vec<(String, String)> {
        let turns: Value =
            serde_json::from_str(&self.ok(&["transcript", conversation, "--json"])).expect("JSON");
        turns
            .as_array()
            .expect("an array of turns")
            .iter()
            .map(|t| {
                (
                    t["role"].as_str().expect("a role").to_owned(),
                    t["text"].as_str().expect("a text").to_owned(),
                )
            })
            .collect()
    }

    fn key_file(&self) -> PathBuf {
        self.data.join("sync.keys")
    }

    /// Gives this device a copy of `from`'s key file, as a user would (owner-only).
    fn copy_key_from(&self, from: &Device) {
        std::fs::create_dir_all(&self.data).expect("data dir");
        std::fs::copy(from.key_file(), self.key_file()).expect("copy the key file");
    }
}

/// Turns as `Device::transcript` returns them.
fn turns(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(role, text)| ((*role).to_owned(), (*text).to_owned()))
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn devices_driven_by_the_cli_converge_and_a_new_device_bootstraps_from_a_checkpoint() {
    let root = tempfile::tempdir().expect("temp dir");
    let (a, b) = (Device::new(root.path(), "a"), Device::new(root.path(), "b"));

    let init = a.ok(&["init"]);
    assert!(init.contains("(created)"), "{init}");
    let a_id = a.status()["device"].as_str().expect("an id").to_owned();
    assert!(init.starts_with(&format!("device {a_id}\n")), "{init}");
    // A second init changes nothing.
    assert!(a.ok(&["init"]).starts_with(&format!("device {a_id}\n")));

    // B cannot make its own key for a relay A already uses.
    let refused = b.fails(&["init"], 1);
    assert!(
        refused.contains("already serves 1 device(s)") && refused.contains("copy the key file"),
        "{refused}"
    );
    assert!(!b.key_file().exists());
    b.copy_key_from(&a);
    assert!(b.ok(&["init"]).contains("(found)"));

    a.ok(&[
        "say",
        "fix-upload",
        "user",
        &format!("why does it fail? {CANARY}"),
    ]);
    a.ok(&[
        "say",
        "fix-upload",
        "assistant",
        &format!("it sleeps {CANARY}"),
    ]);
    b.ok(&["say", "fix-upload", "user", &format!("fix it {CANARY}")]);

    let pumped = a.ok(&["pump"]);
    assert!(pumped.contains("pushed 2"), "{pumped}");
    let pumped = b.ok(&["pump"]);
    assert!(
        pumped.contains("pushed 1") && pumped.contains("pulled 2"),
        "{pumped}"
    );
    assert!(
        pumped.contains("up to date: 3 ops from 2 devices"),
        "{pumped}"
    );
    a.ok(&["pump"]);

    let (sa, sb) = (a.status(), b.status());
    assert_eq!(sa["state_hash"], sb["state_hash"]);
    assert_eq!(sa["journal_frontier"], sb["journal_frontier"]);
    let turns = b.transcript("fix-upload");
    assert_eq!(turns, a.transcript("fix-upload"));
    assert_eq!(turns.len(), 3);
    assert_eq!(
        turns.iter().filter(|(role, _)| role == "user").count(),
        2,
        "{turns:?}"
    );
    let text = b.ok(&["transcript", "fix-upload"]);
    assert!(
        text.contains(&format!("assistant: it sleeps {CANARY}")),
        "{text}"
    );
    assert_eq!(b.ok(&["transcript", "nothing-here"]), "(no turns)\n");

    let human = b.ok(&["status"]);
    assert!(human.contains("roster         2 devices"), "{human}");
    assert!(human.contains(&format!("{a_id}: acked 3 ops")), "{human}");

    // Sealed before they reach the relay: no file there holds the text.
    for file in files_under(&a.relay) {
        let bytes = std::fs::read(&file).expect("read a relay file");
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "{} holds plaintext",
            file.display()
        );
    }

    // Both acknowledged everything, so a checkpoint covers it; a third device starts from it.
    let published = a.ok(&["checkpoint"]);
    let id = published
        .strip_prefix("checkpoint ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a checkpoint id in {published:?}"))
        .to_owned();
    let c = Device::new(root.path(), "c");
    c.copy_key_from(&a);
    c.ok(&["init"]);
    assert_eq!(c.ok(&["rebase"]), format!("rebased on checkpoint {id}\n"));
    assert!(c.ok(&["rebase"]).starts_with("nothing to do"));
    c.ok(&["pump"]);
    assert_eq!(c.status()["state_hash"], sa["state_hash"]);
    assert_eq!(c.transcript("fix-upload"), turns);
}

#[test]
fn the_cli_refuses_missing_paths_keys_and_bad_arguments_and_keeps_what_was_written() {
    let root = tempfile::tempdir().expect("temp dir");
    let a = Device::new(root.path(), "a");

    let refused = a.fails(&["status"], 1);
    assert!(
        refused.contains("holds no device; run `tandem sync init` first"),
        "{refused}"
    );
    assert!(!a.data.join("sync.db").exists(), "status created a journal");

    a.ok(&["init"]);
    // Nothing acknowledged yet: no checkpoint to publish, none to rebase on.
    assert!(a.ok(&["checkpoint"]).starts_with("no checkpoint: "));
    assert!(a.ok(&["rebase"]).starts_with("nothing to do: "));
    a.ok(&["say", "c", "user", "kept"]);
    let before = a.status();

    let elsewhere = Device {
        data: a.data.clone(),
        relay: root.path().join("no-such-relay"),
        lease_db: None,
    };
    let refused = elsewhere.fails(&["pump"], 1);
    assert!(refused.contains("no relay directory at"), "{refused}");
    assert!(!elsewhere.relay.exists(), "pump created a relay");

    let refused = a.fails(&["pump", "--max-rounds", "0"], 1);
    assert!(refused.contains("at least one round"), "{refused}");
    let refused = a.fails(&["say", "c", "robot", "hi"], 2);
    assert!(refused.contains("unknown role"), "{refused}");

    let moved = root.path().join("keys-elsewhere");
    std::fs::rename(a.key_file(), &moved).expect("move the key file");
    let refused = a.fails(&["say", "c", "user", "lost?"], 1);
    assert!(refused.contains("no key file at"), "{refused}");
    // A key file named explicitly is used instead of the default one.
    let output = a
        .command()
        .arg("--key-file")
        .arg(&moved)
        .args(["say", "c", "assistant", "found"])
        .output()
        .expect("run tandem");
    assert!(output.status.success(), "{output:?}");
    std::fs::rename(&moved, a.key_file()).expect("move the key file back");

    // Nothing the refused commands touched was lost, and the last turn was recorded.
    let after = a.status();
    assert_eq!(after["device"], before["device"]);
    assert_eq!(
        a.transcript("c"),
        turns(&[("user", "kept"), ("assistant", "found")])
    );
}

#[test]
fn commands_run_at_once_on_one_device_take_turns_and_all_record() {
    let root = tempfile::tempdir().expect("temp dir");
    let a = Device::new(root.path(), "a");
    a.ok(&["init"]);
    const WRITERS: usize = 8;
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            a.command()
                .args(["say", "busy", "user", &format!("writer {i}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn tandem")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("wait for tandem");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut texts: Vec<String> = a.transcript("busy").into_iter().map(|(_, t)| t).collect();
    texts.sort();
    let expected: Vec<String> = (0..WRITERS).map(|i| format!("writer {i}")).collect();
    assert_eq!(texts, expected);
}

#[test]
fn resume_repairs_a_conversation_for_a_provider_and_says_what_it_repaired() {
    let root = tempfile::tempdir().expect("temp dir");
    let a = Device::new(root.path(), "a");
    a.ok(&["init"]);
    a.ok(&["say", "c", "user", "first"]);
    a.ok(&["say", "c", "user", "second"]);
    a.ok(&["say", "c", "tool", "a result no call asked for"]);
    assert_eq!(a.transcript("c").len(), 3);

    let resumed: Value =
        serde_json::from_str(&a.ok(&["resume", "c", "--json"])).expect("resume JSON");
    let messages = resumed["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{resumed}");
    assert_eq!(messages[0]["role"], "user");
    let text = messages[0]["text"].as_str().expect("text");
    assert!(text.contains("first") && text.contains("second"), "{text}");
    assert_eq!(
        resumed["repairs"]["merged"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        resumed["repairs"]["orphan_results_dropped"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let human = a.ok(&["resume", "c"]);
    assert!(
        human.ends_with(
            "repairs: 1 orphan tool results dropped, 1 adjacent same-role turns merged\n"
        ),
        "{human}"
    );
    assert!(!human.contains("a result no call asked for"), "{human}");
}

#[test]
fn a_device_holding_another_relays_key_is_refused_when_it_pumps_and_nothing_is_lost() {
    let root = tempfile::tempdir().expect("temp dir");
    let a = Device::new(root.path(), "a");
    a.ok(&["init"]);
    a.ok(&["say", "c", "user", "from a"]);
    a.ok(&["pump"]);
    // Another relay's device, whose key file is copied to the wrong place.
    let other = Device {
        data: root.path().join("other"),
        relay: root.path().join("other-relay"),
        lease_db: None,
    };
    other.ok(&["init"]);
    let d = Device::new(root.path(), "d");
    d.copy_key_from(&other);
    d.ok(&["init"]);
    d.ok(&["say", "c", "user", "from d"]);

    let refused = d.fails(&["pump"], 1);
    assert!(refused.contains("does not open: wrong key"), "{refused}");
    assert!(
        refused.contains("copy it again from a device of this relay"),
        "{refused}"
    );
    let refused = a.fails(&["pump"], 1);
    assert!(refused.contains("does not open: wrong key"), "{refused}");

    // Each keeps what it wrote and folded nothing it could not open.
    assert_eq!(a.transcript("c"), turns(&[("user", "from a")]));
    assert_eq!(d.transcript("c"), turns(&[("user", "from d")]));
}

#[test]
fn a_lease_passes_between_devices_sharing_a_lease_db_and_the_fence_refuses_stale_epochs_and_committed_runs(
) {
    let root = tempfile::tempdir().expect("temp dir");
    let shared = root.path().join("leases.db");
    let a = Device::new(root.path(), "a").with_lease_db(&shared);
    let b = Device::new(root.path(), "b").with_lease_db(&shared);
    a.ok(&["init"]);
    b.copy_key_from(&a);
    b.ok(&["init"]);
    let a_id = a.status()["device"].as_str().expect("an id").to_owned();
    let b_id = b.status()["device"].as_str().expect("an id").to_owned();
    let (run, next_run) = (
        "0192d8a4-0000-7000-8000-000000000001",
        "0192d8a4-0000-7000-8000-000000000002",
    );

    let held = a.ok(&["lease", "acquire", "agent-1"]);
    assert!(
        held.starts_with("agent-1: epoch 1, held by") && held.contains("(this device)"),
        "{held}"
    );
    let refused = b.fails(&["lease", "acquire", "agent-1"], 1);
    assert!(
        refused.contains(&format!("leased to {a_id} at epoch 1")),
        "{refused}"
    );

    // A dispatches the run under epoch 1 and commits it; B learns of it by pumping.
    assert!(a.ok(&["fence", "agent-1", run, "1"]).starts_with("proceed"));
    a.ok(&["intent", "agent-1:step", run, "dispatched", "--epoch", "1"]);
    a.ok(&["intent", "agent-1:step", run, "committed"]);
    a.ok(&["pump"]);
    b.ok(&["pump"]);

    // The lease passes to B at a larger epoch.
    assert!(a
        .ok(&["lease", "release", "agent-1", "1"])
        .contains("released agent-1"));
    assert!(b
        .ok(&["lease", "acquire", "agent-1"])
        .starts_with("agent-1: epoch 2"));
    let status: Value =
        serde_json::from_str(&a.ok(&["lease", "status", "agent-1", "--json"])).expect("JSON");
    assert_eq!(status["holder"], b_id.as_str());
    assert_eq!(status["epoch"], 2);

    // B never runs the committed run again; A's epoch is stale; B may run a new run.
    let committed = b.fails(&["fence", "agent-1", run, "2"], 1);
    assert!(committed.contains("already committed"), "{committed}");
    let stale = a.fails(&["fence", "agent-1", next_run, "1"], 1);
    assert!(
        stale.contains("epoch 1 is stale") && stale.contains("at epoch 2"),
        "{stale}"
    );
    assert!(a
        .fails(&["lease", "renew", "agent-1", "1"], 1)
        .contains("not by the caller"));
    assert!(b
        .ok(&["fence", "agent-1", next_run, "2"])
        .starts_with("proceed"));
    assert!(b
        .ok(&["lease", "renew", "agent-1", "2", "--ttl-ms", "60000"])
        .contains("epoch 2"));

    // Intent arguments that do not fit are refused before anything is recorded.
    let before = a.status()["journal_frontier"].clone();
    let missing = a.fails(&["intent", "i2", next_run, "dispatched"], 1);
    assert!(missing.contains("needs --epoch"), "{missing}");
    let extra = a.fails(&["intent", "i2", next_run, "pending", "--epoch", "3"], 1);
    assert!(extra.contains("dispatched intent only"), "{extra}");
    assert!(a
        .fails(&["intent", "bad id!", next_run, "pending"], 2)
        .contains("invalid"));
    assert!(a
        .fails(&["fence", "agent-1", "not-a-uuid", "1"], 2)
        .contains("not a UUID"));
    assert!(a
        .fails(&["lease", "acquire", "x", "--ttl-ms", "0"], 2)
        .contains("--ttl-ms"));
    assert_eq!(a.status()["journal_frontier"], before);

    // Without --lease-db each device has its own: no contention, epochs of its own.
    let own = Device::new(root.path(), "b");
    assert!(own
        .ok(&["lease", "status", "agent-1"])
        .contains("agent-1: no lease"));
    // A mistyped shared lease database is refused, not created.
    let typo = root.path().join("lease.db");
    let refused = Device::new(root.path(), "b")
        .with_lease_db(&typo)
        .fails(&["lease", "acquire", "agent-1"], 1);
    assert!(refused.contains("no lease database at"), "{refused}");
    assert!(!typo.exists());
}
