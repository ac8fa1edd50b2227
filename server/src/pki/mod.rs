//! Agents authenticate with mTLS: the server runs its own CA, issues its serving
//! certificate from it at every start, and issues each agent a client certificate once
//! the agent enrolls with a one-time token.
//!
//! - [`Ca`]: the CA, created in the state directory on first start or given as files;
//! - [`EnrollApi`]: `belay.v1.EnrollService`, token + CSR in, certificate out;
//! - [`AgentAuthenticator`]: the host named by an agent's client certificate, for
//!   AgentService, which requires one;
//! - [`ServerTls`]: everything [`crate::serve`] needs to serve TLS;
//! - [`cli`]: `belay-server token create` and `belay-server ca fingerprint`.

mod ca;
pub mod cli;
mod enroll;
mod identity;
mod tls;
pub mod token;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use ca::{CA_CERT_FILE, CA_KEY_FILE, Ca, CaError, CsrError, Issued, fingerprint};
pub use enroll::EnrollApi;
pub use identity::{AgentAuthenticator, AuthError, host_of};
pub use tls::incoming;

/// `--db` value that keeps everything in memory (main.rs's `IN_MEMORY`).
const IN_MEMORY_DB: &str = ":memory:";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Transport security and agent identities, flattened into `belay-server`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PkiArgs {
    /// Serve plaintext gRPC: no TLS, agents not authenticated and free to name any host.
    /// For development and tests only.
    #[arg(long, env = "BELAY_SERVER_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,

    /// Directory holding the CA (ca.pem, and ca.key with mode 0600), created with a new
    /// CA on first start. Default: the database's directory.
    #[arg(long, env = "BELAY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Use this CA certificate (PEM) instead of the state directory's; with --ca-key.
    #[arg(long, env = "BELAY_CA_CERT", value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// The private key (PEM) of --ca-cert.
    #[arg(long, env = "BELAY_CA_KEY", value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Name (DNS name or IP address) agents and reviewers reach this server by, put in
    /// its serving certificate. Repeatable. Default: this host's name, localhost and
    /// 127.0.0.1.
    #[arg(
        long = "tls-name",
        env = "BELAY_TLS_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub tls_names: Vec<String>,

    /// Days an enrolled agent's certificate stays valid.
    #[arg(long, env = "BELAY_AGENT_CERT_DAYS", default_value_t = 365, value_name = "DAYS",
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub agent_cert_days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error(
        "no CA in {}: it is created when belay-server first starts there (or pass \
         --ca-cert and --ca-key)",
        dir.display()
    )]
    NoCa { dir: PathBuf },
    #[error(
        "--db {IN_MEMORY_DB} has no directory to keep the CA in: pass --state-dir, or \
         --ca-cert and --ca-key"
    )]
    NoStateDir,
    #[error(
        "a PostgreSQL --db has no directory to keep the CA in, and every replica must use \
         the same CA: pass --ca-cert and --ca-key (the same files on every replica), or \
         --state-dir"
    )]
    NoStateDirForUrl,
}

/// Everything the server needs to serve TLS and authenticate agents.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    ca: Arc<Ca>,
    agents: Arc<AgentAuthenticator>,
    agent_cert_validity: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("ca", &self.ca)
            .field("agent_cert_validity", &self.agent_cert_validity)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Serves with a certificate for `names` issued by `ca`.
    pub fn new(ca: Ca, names: &[String], agent_cert_validity: Duration) -> Result<Self, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let agents = AgentAuthenticator::new(ca.cert_der(), Arc::clone(&provider))?;
        let serving = ca.issue_server(names)?;
        let config = tls::server_config(serving, agents.verifier(), provider)?;
        Ok(Self {
            config: Arc::new(config),
            ca: Arc::new(ca),
            agents: Arc::new(agents),
            agent_cert_validity,
        })
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    pub fn ca(&self) -> Arc<Ca> {
        Arc::clone(&self.ca)
    }

    pub fn agents(&self) -> Arc<AgentAuthenticator> {
        Arc::clone(&self.agents)
    }

    pub fn agent_cert_validity(&self) -> Duration {
        self.agent_cert_validity
    }
}

impl PkiArgs {
    /// The TLS setup these arguments ask for, creating the CA on first start; `None` with
    /// --insecure. `db` is the `--db` value, next to which the CA lives by default.
    pub fn server_tls(&self, db: &Path) -> Result<Option<ServerTls>, PkiError> {
        if self.insecure {
            tracing::warn!(
                "INSECURE: serving plaintext gRPC without TLS; agents are not authenticated \
                 and any client can act as any host. Never run this way in production."
            );
            return Ok(None);
        }
        let ca = match self.ca_files() {
            Some((cert, key)) => {
                let ca = Ca::load(cert, key)?;
                tracing::info!(cert = %cert.display(), "CA loaded");
                ca
            }
            None if self.state_dir.is_none() && db.to_string_lossy().contains("://") => {
                return Err(PkiError::NoStateDirForUrl);
            }
            None => match self.state_dir(db) {
                Some(dir) => {
                    let (ca, created) = Ca::load_or_create(&dir)?;
                    if created {
                        tracing::info!(dir = %dir.display(), "created a new CA");
                    }
                    ca
                }
                None => {
                    tracing::warn!(
                        "CA kept in memory only: agents enrolled now must enroll again after \
                         a restart (pass --state-dir to keep it)"
                    );
                    Ca::generate()?
                }
            },
        };
        let names = self.tls_names();
        let tls = ServerTls::new(ca, &names, DAY * self.agent_cert_days)?;
        tracing::info!(
            ca_fingerprint = %tls.ca.fingerprint(),
            names = ?names,
            "serving TLS; agents enroll with `belay-agent enroll --ca-fingerprint` and this fingerprint"
        );
        Ok(Some(tls))
    }

    fn ca_files(&self) -> Option<(&Path, &Path)> {
        Some((self.ca_cert.as_deref()?, self.ca_key.as_deref()?))
    }

    /// `None`: the database is in memory and no directory was given.
    fn state_dir(&self, db: &Path) -> Option<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Some(dir.clone());
        }
        if db == Path::new(IN_MEMORY_DB) {
            return None;
        }
        Some(match db.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => parent.to_owned(),
            None => PathBuf::from("."),
        })
    }

    /// The names the serving certificates are issued for.
    pub fn tls_names(&self) -> Vec<String> {
        if !self.tls_names.is_empty() {
            return self.tls_names.clone();
        }
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim();
            if !host.is_empty() && !names.iter().any(|name| name == host) {
                names.insert(0, host.to_owned());
            }
        }
        names
    }
}
