//! Command-line side of reviewer authentication: `--auth-config`, `--insecure`, and the
//! `check-config` and `token` subcommands' work.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use super::{AuthConfig, Authenticator, ReviewerAuth, api_token};

#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Reviewer authentication (TOML): OIDC issuers, API token hashes, group roles.
    /// Checked with `belay-server check-config FILE`. Without it, reviewer calls are
    /// refused, unless --insecure is given: then reviewers are whoever they claim to be.
    #[arg(long, env = "BELAY_AUTH_CONFIG", value_name = "FILE")]
    pub auth_config: Option<PathBuf>,
}

impl AuthArgs {
    /// How the reviewer service checks callers, from these flags and the server's one
    /// `--insecure` flag (shared with plaintext transport); logs what it chose.
    pub fn reviewer_auth(&self, insecure: bool) -> anyhow::Result<ReviewerAuth> {
        match &self.auth_config {
            Some(path) => {
                let config = AuthConfig::load(path)?;
                tracing::info!(config = %path.display(), "reviewer authentication: {config}");
                let authenticator = Authenticator::new(config)?;
                Ok(ReviewerAuth::Verified(Arc::new(authenticator)))
            }
            None if insecure => {
                tracing::warn!(
                    "--insecure without --auth-config: reviewers are NOT authenticated; anyone who reaches this server can decide as anyone"
                );
                Ok(ReviewerAuth::Insecure)
            }
            None => {
                tracing::warn!(
                    "no --auth-config: every reviewer call is refused (give --auth-config FILE, or --insecure for development)"
                );
                Ok(ReviewerAuth::Unconfigured)
            }
        }
    }
}

/// `belay-server api-token ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Read a token on stdin; print the `sha256 = "..."` line for its [[api_token]].
    Hash,
    /// Make a random token; print it, then its hash line (to stderr), for [[api_token]].
    New,
}

impl TokenCommand {
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            TokenCommand::Hash => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    eprintln!("token (then Enter):");
                }
                let mut line = String::new();
                stdin
                    .lock()
                    .read_line(&mut line)
                    .context("reading the token on stdin")?;
                let token = line.trim_end_matches(['\n', '\r']);
                anyhow::ensure!(!token.is_empty(), "no token on stdin");
                println!("{}", api_token::hash_line(token));
            }
            TokenCommand::New => {
                let token = api_token::generate().context("reading /dev/urandom")?;
                println!("{token}");
                eprintln!("{}", api_token::hash_line(&token));
            }
        }
        Ok(())
    }
}

/// `belay-server check-config FILE`: `Ok` with a summary, or the located problem.
pub fn check_config(path: &Path) -> anyhow::Result<String> {
    let config = AuthConfig::load(path)?;
    Ok(format!("{}: ok: {config}", path.display()))
}
