//! `belay-server`: runs the approval service.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use belay_server::approvals::{
    Approvals, AuditOptions, MemoryStore, PostgresStore, SqliteStore, Store, is_postgres_url,
};
use belay_server::audit;
use belay_server::console::AuditCheck;
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
    /// A `postgres://` or `postgresql://` URL uses that PostgreSQL database instead,
    /// which several replicas can share (give each the same --audit-key). `:memory:`
    /// keeps requests in process memory, lost on restart (tests and development).
    #[arg(long, env = "BELAY_DB", default_value = "/var/lib/belay/server.db")]
    db: PathBuf,

    /// Key signing the audit log's checkpoints, created (mode 0600) if missing. Default:
    /// the database path with `.audit-key` appended.
    #[arg(long, env = "BELAY_AUDIT_KEY", value_name = "PATH")]
    audit_key: Option<PathBuf>,

    /// Audit records between two signed checkpoints.
    #[arg(long, default_value_t = audit::DEFAULT_CHECKPOINT_EVERY, value_name = "N")]
    audit_checkpoint_every: u64,

    /// Distinct reviewers an approval needs (none of them the agent's owner). A single
    /// denial or kill always suffices. With 2 or more, `belay approve` answers
    /// "1 of 2 approvals" until the last one arrives.
    #[arg(long, env = "BELAY_QUORUM", default_value = "1", value_name = "N")]
    quorum: std::num::NonZeroU32,

    /// Export the audit log to SIEMs. TOML: a `[spool]` on disk and any number of
    /// `[[sink]]`s, each of type jsonl, syslog (udp, tcp or tls), splunk_hec or otlp, in
    /// native or ocsf format; README "Export to a SIEM" has an example. Errors name
    /// FILE:LINE:COL and stop the start.
    #[arg(long, env = "BELAY_EXPORT_CONFIG", value_name = "FILE")]
    export_config: Option<PathBuf>,

    /// Chat approvals in Slack and Microsoft Teams: TOML with a `[slack]` and/or a
    /// `[teams]` section (secrets read from files it names), `[reviewers]` and
    /// `[[route]]`s; README "Chat approvals" has examples. Needs --console-listen: Slack
    /// posts button presses to https://<console>/chat/slack/interactions (or, in Socket
    /// Mode, belay-server connects out to Slack), Teams to
    /// https://<console>/chat/teams/messages. Errors name FILE:LINE:COL.
    #[arg(long, env = "BELAY_CHAT_CONFIG", value_name = "FILE")]
    chat_config: Option<PathBuf>,

    #[command(flatten)]
    http: belay_server::http::HttpArgs,

    #[command(flatten)]
    pki: belay_server::pki::PkiArgs,

    #[command(flatten)]
    auth: belay_server::auth::AuthArgs,

    #[command(flatten)]
    console: belay_server::console::ConsoleArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The audit log of a database.
    #[command(subcommand)]
    Audit(AuditCommand),
    #[command(flatten)]
    Pki(belay_server::pki::cli::PkiCommand),
    /// Check a reviewer auth config (--auth-config) file, or with --chat a chat config
    /// (--chat-config): "ok", or FILE:LINE:COL: problem.
    CheckConfig {
        file: PathBuf,
        /// The file is a --chat-config file.
        #[arg(long)]
        chat: bool,
    },
    /// Reviewer API tokens for --auth-config's [[api_token]] entries.
    #[command(subcommand)]
    ApiToken(belay_server::auth::TokenCommand),
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
    if let Some(Command::Pki(command)) = args.command {
        return Ok(belay_server::pki::cli::run(command));
    }
    if let Some(Command::CheckConfig { file, chat }) = &args.command {
        if *chat {
            println!("{}", belay_server::chat::config::check_config(file)?);
        } else {
            println!("{}", belay_server::auth::check_config(file)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::ApiToken(command)) = &args.command {
        command.run()?;
        return Ok(ExitCode::SUCCESS);
    }
    run_server(args)?;
    Ok(ExitCode::SUCCESS)
}

/// `belay-server audit ...`: prints to stdout, problems to stderr.
fn run_audit(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::PublicKey { db, audit_key } => {
            match public_key_of(&db, None, audit_key.as_deref()) {
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
            let report = public_key_of(&db, public_key.as_deref(), audit_key.as_deref())
                .and_then(|key| verify_log(&db, &key));
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

/// The database of `db` if it names a PostgreSQL one: its URL.
fn postgres_url(db: &Path) -> Option<&str> {
    db.to_str().filter(|db| is_postgres_url(db))
}

/// [`audit::resolve_public_key`], except that a PostgreSQL database has no default key
/// path: the key must be given.
fn public_key_of(
    db: &Path,
    public_key: Option<&str>,
    audit_key: Option<&Path>,
) -> Result<ed25519_dalek::VerifyingKey, audit::AuditError> {
    if let Some(url) = postgres_url(db)
        && public_key.is_none()
        && audit_key.is_none()
    {
        return Err(audit::AuditError::Key {
            path: belay_server::database_url::redact_url(url),
            problem: "a PostgreSQL database has no default key: give --public-key or \
                      --audit-key"
                .into(),
        });
    }
    audit::resolve_public_key(db, public_key, audit_key)
}

fn verify_log(
    db: &Path,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<audit::Report, audit::AuditError> {
    let Some(url) = postgres_url(db) else {
        return audit::verify(db, key);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| audit::AuditError::Read {
            path: belay_server::database_url::redact_url(url),
            problem: format!("cannot start a runtime: {err}"),
        })?;
    runtime.block_on(audit::postgres::verify(url, key))
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

    let mut options = belay_server::ServeOptions::default();
    // Checked first: a mistake in it stops the start before anything listens.
    options.chat = args
        .chat_config
        .as_deref()
        .map(belay_server::chat::ChatConfig::load)
        .transpose()?;
    if options.chat.is_some() && args.console.console_listen.is_none() {
        anyhow::bail!(
            "--chat-config needs --console-listen: Slack posts button presses to \
             https://<console>/chat/slack/interactions"
        );
    }
    options.http = Some(args.http.bind().await?);
    options.tls = args.pki.server_tls(&args.db)?;
    options.reviewer_auth = args.auth.reviewer_auth(args.pki.insecure)?;
    options.export = args
        .export_config
        .as_deref()
        .map(belay_export::ExportConfig::load)
        .transpose()?;

    if args.db == Path::new(IN_MEMORY) {
        tracing::warn!("requests are kept in memory only: a restart loses them");
        let key = audit::AuditKey::generate().context("cannot generate the audit key")?;
        let store =
            MemoryStore::with_audit(audit::AuditSigner::new(key, args.audit_checkpoint_every));
        tracing::info!(
            public_key = %audit::public_key_hex(&store.audit_public_key()),
            "audit log in memory, checkpoints signed with a key of this run only"
        );
        options.console = console_options(&args, &options, AuditCheck::Unavailable).await?;
        serve(args.listen, store, args.quorum, options).await
    } else if let Some(url) = postgres_url(&args.db) {
        let audit_options = AuditOptions {
            key: args.audit_key.clone(),
            checkpoint_every: args.audit_checkpoint_every,
        };
        let store = PostgresStore::connect(url, audit_options)
            .await
            .context("cannot open the PostgreSQL store")?;
        tracing::info!(db = store.target(), "requests are stored in PostgreSQL");
        tracing::info!(
            public_key = %audit::public_key_hex(&store.audit_public_key()),
            "audit log checkpoints are signed; verify with this public key"
        );
        let check = AuditCheck::Postgres {
            url: url.to_owned(),
            public_key: store.audit_public_key(),
        };
        options.console = console_options(&args, &options, check).await?;
        serve(args.listen, store, args.quorum, options).await
    } else {
        let audit_options = AuditOptions {
            key: args.audit_key.clone(),
            checkpoint_every: args.audit_checkpoint_every,
        };
        let store = open_sqlite(args.db.clone(), audit_options).await?;
        tracing::info!(db = %store.path().display(), "requests are stored in SQLite");
        tracing::info!(
            public_key = %audit::public_key_hex(&store.audit_public_key()),
            "audit log checkpoints are signed; verify with this public key"
        );
        let check = AuditCheck::Sqlite {
            path: store.path().to_owned(),
            public_key: store.audit_public_key(),
        };
        options.console = console_options(&args, &options, check).await?;
        serve(args.listen, store, args.quorum, options).await
    }
}

/// The console's options (`None` without --console-listen); its certificate is issued
/// by the server's CA unless --console-cert gives one.
async fn console_options(
    args: &Args,
    options: &belay_server::ServeOptions,
    audit: AuditCheck,
) -> anyhow::Result<Option<belay_server::console::ConsoleOptions>> {
    let issue = options.tls.as_ref().map(|tls| {
        let ca = tls.ca();
        move |names: &[String]| {
            let issued = ca.issue_server(names).map_err(|err| err.to_string())?;
            belay_server::console::tls::server_config(issued.chain, issued.key)
                .map_err(|err| err.to_string())
        }
    });
    let has_auth = matches!(
        options.reviewer_auth,
        belay_server::auth::ReviewerAuth::Verified(_)
    );
    let console = args
        .console
        .options(
            &args.pki.tls_names(),
            issue
                .as_ref()
                .map(|f| f as &belay_server::console::IssueCertificate<'_>),
            has_auth,
            audit,
        )
        .await
        .context("cannot set up the reviewer console")?;
    Ok(console)
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
async fn serve<S: Store>(
    listen: SocketAddr,
    store: S,
    quorum: std::num::NonZeroU32,
    options: belay_server::ServeOptions,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    let approvals = Arc::new(Approvals::new(store).with_quorum(quorum));
    if quorum.get() > 1 {
        tracing::info!(quorum = quorum.get(), "approvals need several reviewers");
    }

    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(belay_server::serve(listener, approvals, options, async {
        // A dropped sender also means stop.
        let _ = stopped.await;
    }));
    // Watched before "listening" is logged: whoever waits for that line may signal at once.
    let signalled = shutdown_signal()?;
    tracing::info!(%local, "belay-server listening");

    tokio::select! {
        result = &mut server => {
            return result.context("server task panicked")?.context("server failed");
        }
        signal = signalled => {
            tracing::info!(signal, "shutting down");
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

/// Starts watching SIGINT and SIGTERM now; the future ends with the first one's name.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
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
