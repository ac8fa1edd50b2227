//! `belay-server`: runs the approval service.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use belay_server::approvals::{Approvals, MemoryStore, SqliteStore, Store};
use clap::Parser;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        serve(args.listen, MemoryStore::new()).await
    } else {
        let store = open_sqlite(args.db).await?;
        tracing::info!(db = %store.path().display(), "requests are stored in SQLite");
        serve(args.listen, store).await
    }
}

/// Opens the SQLite store, creating its directory (private: requests show what people
/// run and where they connect) if missing.
async fn open_sqlite(path: PathBuf) -> anyhow::Result<SqliteStore> {
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
        Ok(SqliteStore::open(&path)?)
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
    let mut server = tokio::spawn(belay_server::serve(listener, approvals, async {
        // A dropped sender also means stop.
        let _ = stopped.await;
    }));
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
