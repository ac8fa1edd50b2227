//! The console's command line, flattened into belay-server's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{AuditCheck, ConsoleOptions, tls};

#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Serve the reviewer console (HTTPS) on this address, e.g. 0.0.0.0:8443. Off unless
    /// given. Needs --auth-config with an [[oidc]] issuer for browser sign-in (API tokens
    /// work for scripts); the issuer must allow the redirect URI
    /// <--console-url>/auth/callback.
    #[arg(
        long = "console-listen",
        env = "BELAY_CONSOLE_LISTEN",
        value_name = "ADDR"
    )]
    pub console_listen: Option<SocketAddr>,

    /// The console's address as browsers reach it: https://HOST[:PORT], no path. Default:
    /// https://<first --tls-name>:<port of --console-listen>.
    #[arg(long = "console-url", env = "BELAY_CONSOLE_URL", value_name = "URL")]
    pub console_url: Option<String>,

    /// Serve this certificate chain (PEM) instead of one issued by the server's CA
    /// (which browsers do not trust until it is installed); with --console-key.
    #[arg(
        long = "console-cert",
        env = "BELAY_CONSOLE_CERT",
        value_name = "FILE",
        requires = "console_key"
    )]
    pub console_cert: Option<PathBuf>,

    /// The private key (PEM) of --console-cert.
    #[arg(
        long = "console-key",
        env = "BELAY_CONSOLE_KEY",
        value_name = "FILE",
        requires = "console_cert"
    )]
    pub console_key: Option<PathBuf>,

    /// How long a console sign-in lasts, in minutes.
    #[arg(long = "console-session-minutes", env = "BELAY_CONSOLE_SESSION_MINUTES",
          default_value_t = 480, value_name = "MINUTES",
          value_parser = clap::value_parser!(u32).range(1..=10080))]
    pub console_session_minutes: u32,
}

/// Makes a serving configuration with a certificate from the server's CA for the names.
pub type IssueCertificate<'a> = dyn Fn(&[String]) -> Result<rustls::ServerConfig, String> + 'a;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleSetupError {
    #[error(
        "--console-listen needs TLS: pass --console-cert and --console-key, or run without --insecure so that the server's CA issues the console's certificate"
    )]
    NoCertificate,
    #[error(
        "--console-listen needs --auth-config: the console signs reviewers in with its OIDC issuers (or API tokens)"
    )]
    NoAuth,
    #[error("invalid --console-url {url:?}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("cannot listen for the console on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot issue the console's certificate: {0}")]
    Issue(String),
}

/// `https://HOST[:PORT]` with nothing after it: the origin browsers send.
pub fn check_origin(url: &str) -> Result<String, ConsoleSetupError> {
    let bad = |problem: &str| ConsoleSetupError::BadUrl {
        url: url.to_owned(),
        problem: problem.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|err| bad(&err.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(bad("the console is served over HTTPS only: use https://"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("no host"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return Err(bad("an origin has no path, query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("no user name or password in the URL"));
    }
    // The origin as a browser serialises it (default port left out, host lower case).
    Ok(parsed.origin().ascii_serialization())
}

impl ConsoleArgs {
    /// The console's options, or `None` without --console-listen. `issue` makes a
    /// certificate from the server's CA for the given names (`None` with --insecure).
    pub async fn options(
        &self,
        tls_names: &[String],
        issue: Option<&IssueCertificate<'_>>,
        has_auth: bool,
        audit: AuditCheck,
    ) -> Result<Option<ConsoleOptions>, ConsoleSetupError> {
        let Some(addr) = self.console_listen else {
            return Ok(None);
        };
        if !has_auth {
            return Err(ConsoleSetupError::NoAuth);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ConsoleSetupError::Bind { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| ConsoleSetupError::Bind { addr, source })?
            .port();
        let origin = match &self.console_url {
            Some(url) => check_origin(url)?,
            None => {
                let host = tls_names.first().map_or("localhost", String::as_str);
                let host = match host.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => format!("[{host}]"),
                    Err(_) => host.to_owned(),
                };
                check_origin(&format!("https://{host}:{port}"))?
            }
        };
        let config = match (&self.console_cert, &self.console_key, issue) {
            (Some(cert), Some(key), _) => tls::load_pem(cert, key)?,
            (_, _, Some(issue)) => issue(tls_names).map_err(ConsoleSetupError::Issue)?,
            _ => return Err(ConsoleSetupError::NoCertificate),
        };
        Ok(Some(ConsoleOptions {
            listener,
            tls: Arc::new(config),
            origin,
            session_ttl: Duration::from_secs(u64::from(self.console_session_minutes) * 60),
            audit,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn the_console_url_is_an_https_origin() {
        assert_eq!(
            check_origin("https://Belay.Example.com:443/").unwrap(),
            "https://belay.example.com"
        );
        assert_eq!(
            check_origin("https://127.0.0.1:8443").unwrap(),
            "https://127.0.0.1:8443"
        );
        for bad in [
            "http://belay.example.com",
            "https://belay.example.com/console",
            "https://u:p@belay.example.com",
            "belay.example.com",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
