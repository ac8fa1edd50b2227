//! belay-server run by the VM tests: TLS with its own CA, a database, and reviewers with
//! API tokens, all in a directory the test owns, so that a restart finds them again.
//! A test that needs more reviewer authentication (an OIDC issuer) writes
//! `auth-extra.toml` into that directory before the first start.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use belay_tests::{binary, wait_until};
use serde_json::Value;

use super::{LONG, ok};

/// Reviewers with an API token on every test server.
pub const REVIEWERS: [&str; 2] = ["bob", "carol@example.com"];

/// A belay-server serving TLS (the default) with its CA and database in a directory the
/// test owns, so that a restart finds both again.
pub struct Server {
    child: Child,
    pub url: String,
    pub state: PathBuf,
}

impl Server {
    pub fn start(state: &Path) -> Self {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Self::start_on(addr, state)
    }

    /// A server on `addr` with the database, CA and reviewers' API tokens in `state`
    /// (created on first start).
    pub fn start_on(addr: std::net::SocketAddr, state: &Path) -> Self {
        Self::start_with(addr, state, &[])
    }

    pub fn start_with(addr: std::net::SocketAddr, state: &Path, extra: &[&str]) -> Self {
        Self::spawn(addr, state, extra, Stdio::inherit())
    }

    /// A server whose log (stderr) goes to the file `log`, for a test to read.
    pub fn start_logging_to(
        addr: std::net::SocketAddr,
        state: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("the server's log file");
        Self::spawn(addr, state, extra, Stdio::from(file))
    }

    pub fn spawn(addr: std::net::SocketAddr, state: &Path, extra: &[&str], stderr: Stdio) -> Self {
        let auth = state.join("auth.toml");
        if !auth.exists() {
            let mut config = String::new();
            for reviewer in REVIEWERS {
                let out = Command::new(binary("belay-server").unwrap())
                    .args(["api-token", "new"])
                    .output()
                    .unwrap();
                let token = ok(&out).trim().to_owned();
                let hash = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                config.push_str(&format!(
                    "[[api_token]]\nname = \"{reviewer}\"\n{hash}\nroles = [\"reviewer\"]\n\n"
                ));
                std::fs::write(state.join(format!("{reviewer}.token")), token).unwrap();
            }
            if let Ok(extra) = std::fs::read_to_string(state.join("auth-extra.toml")) {
                config.push_str(&extra);
            }
            std::fs::write(&auth, config).unwrap();
        }
        let child = Command::new(binary("belay-server").unwrap())
            .env("BELAY_HTTP_LISTEN", "127.0.0.1:0")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--db")
            .arg(state.join("server.db"))
            .arg("--auth-config")
            .arg(&auth)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("belay-server starts");
        assert!(
            wait_until(LONG, || TcpStream::connect(addr).is_ok()),
            "belay-server listens on {addr}"
        );
        Self {
            child,
            url: format!("https://{addr}"),
            state: state.to_owned(),
        }
    }

    /// `belay-server ARGS` on this server's database.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(binary("belay-server").unwrap())
            .args(args)
            .arg("--db")
            .arg(self.state.join("server.db"))
            .output()
            .expect("belay-server runs");
        ok(&out).trim().to_owned()
    }

    /// Enrolls this host the way an operator does: a one-time token from the server, the
    /// CA's fingerprint read off the server, and `belay-agent enroll`. Returns the
    /// directory holding the agent's certificate.
    pub fn enroll(&self) -> tempfile::TempDir {
        let token = self.admin(&["token", "create", "--ttl", "10m"]);
        let fingerprint = self.admin(&["ca", "fingerprint"]);
        let certs = tempfile::tempdir().unwrap();
        let out = Command::new(binary("belay-agent").unwrap())
            .args(["enroll", "--server", &self.url, "--token", &token])
            .args(["--ca-fingerprint", &fingerprint])
            .arg("--cert-dir")
            .arg(certs.path())
            .output()
            .expect("belay-agent enroll runs");
        let said = ok(&out);
        assert!(said.contains("enrolled"), "{said}");
        // Used once, the token enrolls nobody else.
        let again = Command::new(binary("belay-agent").unwrap())
            .args(["enroll", "--server", &self.url, "--token", &token])
            .args(["--ca-fingerprint", &fingerprint])
            .arg("--cert-dir")
            .arg(tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        assert!(!again.status.success());
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(err.contains("already used"), "{err}");
        certs
    }

    /// `belay --server URL --reviewer REVIEWER ARGS`.
    pub fn belay(&self, reviewer: &str, args: &[&str]) -> std::process::Output {
        Command::new(binary("belay").unwrap())
            .args(["--server", &self.url, "--reviewer", reviewer])
            .arg("--server-ca")
            .arg(self.state.join("ca.pem"))
            .env(
                "BELAY_TOKEN",
                std::fs::read_to_string(self.state.join(format!("{reviewer}.token"))).unwrap(),
            )
            .args(args)
            .output()
            .expect("belay runs")
    }

    /// Waits for a pending request on the server whose action is `kind`.
    pub fn pending(&self, kind: &str) -> Value {
        let mut found = None;
        assert!(
            wait_until(LONG, || {
                let out = self.belay("bob", &["pending", "--output", "json"]);
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                found = v["requests"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["action"]["kind"] == kind).cloned());
                found.is_some()
            }),
            "a pending {kind} request on belay-server"
        );
        found.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
