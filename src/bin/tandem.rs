//! The `tandem` command line: wiring only; the work lives in `tandem::app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tandem::app::sync_cli;

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
        /// The lease database (default: `leases.db` in the data directory). Devices contend
        /// for a lease only through a shared one: one file on one host.
        #[arg(long, env = "TANDEM_LEASE_DB")]
        lease_db: Option<PathBuf>,
        #[command(subcommand)]
        command: sync_cli::SyncCommand,
    },
    /// Tools for testing tandem itself.
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
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
            lease_db,
            command,
        } => {
            let paths = sync_cli::SyncPaths {
                data_dir,
                relay_dir: relay,
                key_file,
                lease_db,
            };
            sync_cli::run(&paths, command, &mut std::io::stdout()).map_err(Into::into)
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
