//! The `tandem` command line: wiring only; the work lives in `tandem::app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tandem::app::sync_cli;
use tandem::domain::Role;

/// Durable, synchronised AI coding-agent sessions.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a readable end-to-end scenario on embedded defaults.
    Demo {
        /// Where to keep the database (default: a fresh temporary directory, removed after).
        #[arg(long, env = "TANDEM_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// One device's sync session over a relay directory shared with the user's other devices.
    ///
    /// Run `init` once per device; copy the key file it creates to every other device (keep
    /// it readable by its owner only). Devices that share the relay directory converge when
    /// each runs `pump`.
    Sync {
        /// The device's data directory (journal, lease database, default key file).
        #[arg(long, env = "TANDEM_DATA_DIR")]
        data_dir: PathBuf,
        /// The relay directory the user's devices share (a local or synced folder).
        #[arg(long, env = "TANDEM_RELAY_DIR")]
        relay: PathBuf,
        /// The key file (default: `sync.keys` in the data directory).
        #[arg(long, env = "TANDEM_KEY_FILE")]
        key_file: Option<PathBuf>,
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Tools for testing tandem itself.
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Creates the device (and the relay directory and key file if missing); prints its id.
    Init,
    /// Prints the device's state hash, frontiers, roster and base checkpoint.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Records one turn of a conversation; the next `pump` sends it.
    Say {
        /// The conversation id.
        conversation: String,
        /// Who speaks: user, assistant, system or tool.
        #[arg(value_parser = parse_role)]
        role: Role,
        /// What they say.
        text: String,
    },
    /// Pushes this device's ops, pulls everyone's and acknowledges them, until up to date.
    Pump {
        /// Stop after this many rounds even if more ops wait.
        #[arg(long, default_value_t = sync_cli::DEFAULT_PUMP_ROUNDS)]
        max_rounds: usize,
    },
    /// Prints a conversation's turns in order.
    Transcript {
        /// The conversation id.
        conversation: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prints a conversation repaired into messages a model provider accepts, and the repairs.
    Resume {
        /// The conversation id.
        conversation: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publishes a checkpoint at the stable frontier (lets the relay compact what it covers).
    Checkpoint,
    /// Re-anchors the journal on the relay's latest checkpoint.
    Rebase,
}

impl From<SyncCommand> for sync_cli::SyncCommand {
    fn from(command: SyncCommand) -> Self {
        match command {
            SyncCommand::Init => Self::Init,
            SyncCommand::Status { json } => Self::Status { json },
            SyncCommand::Say {
                conversation,
                role,
                text,
            } => Self::Say {
                conversation,
                role,
                text,
            },
            SyncCommand::Pump { max_rounds } => Self::Pump { max_rounds },
            SyncCommand::Transcript { conversation, json } => {
                Self::Transcript { conversation, json }
            }
            SyncCommand::Resume { conversation, json } => Self::Resume { conversation, json },
            SyncCommand::Checkpoint => Self::Checkpoint,
            SyncCommand::Rebase => Self::Rebase,
        }
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Appends messages in a loop, printing one `ack` line per committed message (used by the
    /// crash-safety test, which kills this process at random moments).
    AppendLoop {
        /// The database file.
        #[arg(long)]
        db: PathBuf,
        /// Seed for the pseudo-random workload.
        #[arg(long)]
        seed: u64,
        /// Stop after this many messages (default: run until killed).
        #[arg(long)]
        max: Option<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { data_dir } => {
            tandem::app::demo::run(data_dir.as_deref(), &mut std::io::stdout())
        }
        Command::Sync {
            data_dir,
            relay,
            key_file,
            command,
        } => {
            let paths = sync_cli::SyncPaths {
                data_dir,
                relay_dir: relay,
                key_file,
            };
            sync_cli::run(&paths, command.into(), &mut std::io::stdout()).map_err(Into::into)
        }
        Command::Debug {
            command: DebugCommand::AppendLoop { db, seed, max },
        } => tandem::app::crash_writer::run(&db, seed, max, &mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    }
}
