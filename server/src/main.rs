//! `belay-server`: runs the approval service.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use belay_server::approvals::{Approvals, AuditOptions, MemoryStore, SqliteStore, Store};
use belay_server::audit;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tracing_subscriber::EnvFilter;

/// How long a shutdown waits for in-flight calls before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// `--db` value that keeps requests in process memory instead of a file.
const IN_MEMORY: &str = ":memory:";

/// Central approval service of belay: agents submit held actions, reviewers decide.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on for gRPC (agents and reviewers).
    #[arg(long, env = "BELAY_SERVER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,belay_server=debug`).
    #[arg(long, env = "BELAY_LOG", default_value = "info")]
    log: String,

    /// SQLite database holding the requests, created with its directory if missing.
    /// `:memory:` keeps them in process memory instead, lost on restart (tests and
    /// development).
    #[arg(long, env = "BELAY_DB", default_value = "/var/lib/belay/server.db")]
    db: PathBuf,

    /// Key signing the audit log's checkpoints, created (mode 0600) if missing. Default:
    /// the database path with `.audit-key` appended.
    #[arg(long, env = "BELAY_AUDIT_KEY", value_name = "PATH")]
    audit_key: Option<PathBuf>,

    /// Audit records between two signed checkpoints.
    #[arg(long, default_value_t = audit::DEFAULT_CHECKPOINT_EVERY, value_name = "N")]
    audit_checkpoint_every: u64,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The audit log of a database.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; print the first edited, removed
    /// or reordered record. Exit status 0: intact; 1: a problem; 2: cannot check.
    Verify {
        /// The belay-server database.
        #[arg(long, env = "BELAY_DB")]
        db: PathBuf,
        /// Public key of the checkpoints (hex). Default: the one of --audit-key.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// Signing key to take the public key from. Default: `<db>.audit-key`.
        #[arg(long, value_name = "PATH")]
        audit_key: Option<PathBuf>,
    },
    /// Print the public key (hex) that verifies the checkpoints.
    PublicKey {
        #[arg(long, env = "BELAY_DB")]
        db: PathBuf,
        #[arg(long, value_name = "PATH")]
        audit_key: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(Command::Audit(command)) = args.command {
        return Ok(run_audit(command));
    }
    run_server(args)?;
    Ok(ExitCode::SUCCESS)
}

/// `belay-server audit ...`: prints to stdout, problems to stderr.
fn run_audit(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::PublicKey { db, audit_key } => {
            match audit::resolve_public_key(&db, None, audit_key.as_deref()) {
                Ok(key) => {
                    println!("{}", audit::public_key_hex(&key));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("audit: {err}");
                    ExitCode::from(2)
                }
            }
        }
        AuditCommand::Verify {
            db,
            public_key,
            audit_key,
        } => {
            let report =
                audit::resolve_public_key(&db, public_key.as_deref(), audit_key.as_deref())
                    .and_then(|key| audit::verify(&db, &key));
            match report {
                Ok(report) => {
                    if let Some(problem) = &report.first_problem {
                        eprintln!("audit: {problem}");
                        return ExitCode::FAILURE;
                    }
                    println!(
                        "audit: {} records intact, {} checkpoints verified with key {}",
                        report.records, report.checkpoints, report.key_id
                    );
                    if report.unsigned_tail > 0 {
                        println!(
                            "audit: unsigned tail: {} records after the last checkpoint",
                            report.unsigned_tail
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("audit: {err}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

#[tokio::main]
async fn run_server(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_new(&args.log)
                .with_context(|| format!("invalid log filter {:?}", args.log))?,
        )
        .init();

    if args.db == Path::new(IN_MEMORY) {
        tracing::warn!("requests are kept in memory only: a restart loses them");
        let key = audit::AuditKey::generate().context("cannot generate the audit key")?;
        let store =
            MemoryStore::with_audit(audit::AuditSigner::new(key, args.audit_checkpoint_every));
        tracing::info!(
            public_key = %audit::public_key_hex(&store.audit_public_key()),
            "audit log in memory, checkpoints signed with a key of this run only"
        );
        serve(args.listen, store).await
    } else {
        let options = AuditOptions {
            key: args.audit_key,
            checkpoint_every: args.audit_checkpoint_every,
        };
        let store = open_sqlite(args.db, options).await?;
        tracing::info!(db = %store.path().display(), "requests are stored in SQLite");
        tracing::info!(
            public_key = %audit::public_key_hex(&store.audit_public_key()),
            "audit log checkpoints are signed; verify with this public key"
        );
        serve(args.listen, store).await
    }
}

/// Opens the SQLite store, creating its directory (private: requests show what people
/// run and where they connect) if missing.
async fn open_sqlite(path: PathBuf, options: AuditOptions) -> anyhow::Result<SqliteStore> {
    // Opening reads the file and may migrate it: blocking work, off the runtime.
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| {
                    format!("cannot create the database directory {}", parent.display())
                })?;
        }
        Ok(SqliteStore::open_with(&path, options)?)
    })
    .await
    .context("opening the database panicked")?
}

/// Serves on `listen` with requests in `store` until SIGINT or SIGTERM.
async fn serve<S: Store>(listen: SocketAddr, store: S) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    let approvals = Arc::new(Approvals::new(store));

    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(belay_server::serve(
        listener,
        approvals,
        belay_server::ServeOptions::default(),
        async {
            // A dropped sender also means stop.
            let _ = stopped.await;
        },
    ));
    tracing::info!(%local, "belay-server listening");

    tokio::select! {
        result = &mut server => {
            return result.context("server task panicked")?.context("server failed");
        }
        signal = shutdown_signal() => {
            tracing::info!(signal = signal?, "shutting down");
        }
    }
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result
            .context("server task panicked")?
            .context("server failed")?,
        Err(_) => tracing::warn!(
            "in-flight calls still open after {} s; exiting anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM and returns its name.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Args;

    #[test]
    fn command_line_is_well_formed() {
        Args::command().debug_assert();
    }
}
