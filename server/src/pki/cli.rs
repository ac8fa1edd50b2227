//! `belay-server token create` and `belay-server ca fingerprint`.

use crate::store::EnrollmentStore as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use belay_proto::domain::{EnrollSecret, HostName};

use super::{CA_CERT_FILE, IN_MEMORY_DB, PkiArgs, ca, token};
use crate::approvals::{AuditOptions, PostgresStore, SqliteStore, is_postgres_url, token_id};

const DEFAULT_DB: &str = "/var/lib/belay/server.db";

/// Subcommands of `belay-server`, flattened into its command enum.
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// One-time tokens agents enroll with.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The CA that issues the server's and the agents' certificates.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a one-time enrollment token and print it. It is shown only this once: the
    /// database keeps only its hash. Hand it to `belay-agent enroll --token`.
    Create {
        /// The belay-server database the server uses.
        #[arg(long, env = "BELAY_DB", default_value = DEFAULT_DB)]
        db: PathBuf,
        /// The audit key of that database (default: `<db>.audit-key`).
        #[arg(long, env = "BELAY_AUDIT_KEY", value_name = "PATH")]
        audit_key: Option<PathBuf>,
        /// Only the agent of this host may enroll with the token. Needed to enroll a host
        /// again: without it, the token enrolls only a host that never enrolled before.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// How long the token stays usable: s, m, h or d, at most 30d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Print the SHA-256 fingerprint of the CA certificate, for `belay-agent enroll
    /// --ca-fingerprint`.
    Fingerprint {
        /// The database the server uses; the CA is in its directory by default.
        #[arg(long, env = "BELAY_DB", default_value = DEFAULT_DB)]
        db: PathBuf,
        /// The server's --state-dir.
        #[arg(long, env = "BELAY_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The server's --ca-cert.
        #[arg(long, env = "BELAY_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    token::parse_ttl(text).map_err(|err| err.to_string())
}

/// Runs a subcommand: results on stdout, problems on stderr (exit status 1).
pub fn run(command: PkiCommand) -> ExitCode {
    let result = match command {
        PkiCommand::Token(TokenCommand::Create {
            db,
            audit_key,
            host,
            ttl,
        }) => create_token(&db, audit_key, host, ttl).map(|secret| println!("{secret}")),
        PkiCommand::Ca(CaCommand::Fingerprint {
            db,
            state_dir,
            ca_cert,
        }) => ca_fingerprint(&db, state_dir, ca_cert).map(|print| println!("{print}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("belay-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn create_token(
    db: &Path,
    audit_key: Option<PathBuf>,
    host: Option<String>,
    ttl: Duration,
) -> anyhow::Result<EnrollSecret> {
    if db == Path::new(IN_MEMORY_DB) {
        anyhow::bail!(
            "a token in an in-memory database would be gone at once: pass the server's --db"
        );
    }
    let host = host
        .map(|host| {
            let host = HostName::new(host)?;
            // Enrollment refuses non-ASCII names (they cannot go into the certificate).
            match host.as_str().chars().find(|c| !c.is_ascii()) {
                Some(c) => anyhow::bail!("invalid host: contains the forbidden character {c:?}"),
                None => Ok(host),
            }
        })
        .transpose()?;
    let (secret, stored) = token::generate(host.clone(), ttl, SystemTime::now())?;
    let stored_hash = stored.hash;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = AuditOptions {
        key: audit_key,
        ..AuditOptions::default()
    };
    let url = db.to_string_lossy();
    if is_postgres_url(&url) {
        runtime.block_on(async {
            let store = PostgresStore::connect(&url, options).await?;
            store
                .add_enroll_token(stored)
                .await
                .context("cannot store the token")
        })?;
    } else {
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| {
                    format!("cannot create the database directory {}", parent.display())
                })?;
        }
        let store = SqliteStore::open_with(db, options)?;
        runtime
            .block_on(store.add_enroll_token(stored))
            .context("cannot store the token")?;
    }
    // The id (not the secret) is what the audit record of the enrollment names.
    eprintln!(
        "belay-server: one-time enrollment token {} for {}, usable for {} s; it is not shown \
         again",
        token_id(&stored_hash),
        host.as_ref()
            .map_or("any new host (not one enrolled before)", HostName::as_str),
        ttl.as_secs()
    );
    Ok(secret)
}

fn ca_fingerprint(
    db: &Path,
    state_dir: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
) -> anyhow::Result<String> {
    let path = match ca_cert {
        Some(path) => path,
        None => {
            let args = PkiArgs {
                insecure: false,
                state_dir,
                ca_cert: None,
                ca_key: None,
                tls_names: Vec::new(),
                agent_cert_days: 1,
            };
            let dir = args.state_dir(db).ok_or(super::PkiError::NoStateDir)?;
            let path = dir.join(CA_CERT_FILE);
            if !path.exists() {
                return Err(super::PkiError::NoCa { dir }.into());
            }
            path
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let der = ca::first_pem_cert(&text).map_err(|problem| {
        anyhow::anyhow!("{} is not a PEM certificate: {problem}", path.display())
    })?;
    Ok(ca::fingerprint(&der))
}
