//! A real belay-server with its reviewer console on HTTPS, a test OIDC issuer that signs
//! reviewers in, and sign-ins driven over HTTP the way a browser makes them (for the
//! tests that need no browser, and for the VM test).
//! Included with `#[path]` as `console`, beside `mod support` and `issuer.rs` as
//! `issuer`.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use belay_server::approvals::{Approvals, MemoryStore};
use belay_server::auth::{AuthConfig, Authenticator, ReviewerAuth};
use belay_server::console::{AuditCheck, ConsoleOptions};
use belay_server::pki::Ca;
use serde_json::json;

#[allow(unused_imports)]
pub use crate::console_client::{SignedIn, set_cookie, sign_in, urlencode};

use crate::issuer::{AUDIENCE, TestIssuer, TestKey};
use crate::support::{TestServer, hex_sha256};

/// An API token of every test console (role reviewer, acting for carol).
pub const CAROL_TOKEN: &str = "belay_0123456789abcdef0123456789abcdef";

/// The server, the issuer its console signs in with, and how to reach the console.
pub struct TestConsole {
    pub server: TestServer,
    pub issuer: TestIssuer,
    /// `https://127.0.0.1:PORT`
    pub origin: String,
    /// The CA that issued the console's certificate.
    pub ca_pem: String,
    /// `http://127.0.0.1:PORT/metrics`
    pub metrics_url: String,
}

/// People the issuer knows: alice owns the agents of the tests; bob and carol review;
/// vera only views; mallory is signed in but in no group that has a role.
const PEOPLE: &[(&str, &[&str])] = &[
    ("alice", &["sre"]),
    ("bob", &["sre"]),
    ("carol", &["sre"]),
    ("dave", &["belay-admins"]),
    ("vera", &["auditors"]),
    ("mallory", &[]),
];

pub fn email(username: &str) -> String {
    format!("{username}@example.com")
}

impl TestConsole {
    /// A console over a memory store (no audit log to verify).
    pub async fn start(quorum: u32, session_ttl: Duration) -> Self {
        let approvals = Approvals::new(MemoryStore::default())
            .with_quorum(std::num::NonZeroU32::new(quorum).unwrap());
        Self::start_with(approvals, AuditCheck::Unavailable, session_ttl).await
    }

    /// A console over a SQLite database in `dir`, whose audit log the console verifies.
    pub async fn start_sqlite(dir: &Path) -> Self {
        let store = belay_server::approvals::SqliteStore::open(dir.join("server.db")).unwrap();
        let check = AuditCheck::Sqlite {
            path: store.path().to_owned(),
            public_key: store.audit_public_key(),
        };
        Self::start_with(Approvals::new(store), check, Duration::from_secs(3600)).await
    }

    pub async fn start_with<S: belay_server::approvals::Store>(
        approvals: Approvals<S>,
        audit: AuditCheck,
        session_ttl: Duration,
    ) -> Self {
        Self::start_with_chat(approvals, audit, session_ttl, None).await
    }

    /// A console that also serves chat approvals with `chat`.
    pub async fn start_with_chat<S: belay_server::approvals::Store>(
        approvals: Approvals<S>,
        audit: AuditCheck,
        session_ttl: Duration,
        chat: Option<belay_server::chat::ChatConfig>,
    ) -> Self {
        let issuer = TestIssuer::start(TestKey::es256("console-key")).await;
        for (name, groups) in PEOPLE {
            issuer.add_user(
                name,
                json!({"email": email(name), "email_verified": true, "groups": groups}),
            );
        }
        let config = format!(
            r#"
[[oidc]]
issuer = "{}"
audience = "{AUDIENCE}"

[[api_token]]
name = "ci-bot"
sha256 = "{}"
roles = ["reviewer"]
owner = "carol@example.com"

[groups]
"sre" = "reviewer"
"belay-admins" = "admin"
"auditors" = "viewer"
"#,
            issuer.url(),
            hex_sha256(CAROL_TOKEN),
        );
        let config = AuthConfig::parse(Path::new("auth.toml"), &config).unwrap();
        let auth = Arc::new(Authenticator::new(config).unwrap());

        let ca = Ca::generate().unwrap();
        let issued = ca.issue_server(&["127.0.0.1".to_owned()]).unwrap();
        let tls = belay_server::console::tls::server_config(issued.chain, issued.key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("https://{}", listener.local_addr().unwrap());
        issuer.allow_redirect(&format!("{origin}/auth/callback"));

        let mut options = belay_server::ServeOptions::default();
        options.reviewer_auth = ReviewerAuth::Verified(auth);
        options.console = Some(ConsoleOptions {
            listener,
            tls: Arc::new(tls),
            origin: origin.clone(),
            session_ttl,
            audit,
        });
        options.chat = chat;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_url = format!("http://{}/metrics", http.local_addr().unwrap());
        options.http = Some(http);
        let server = TestServer::start_approvals(approvals, options).await;
        Self {
            server,
            issuer,
            origin,
            ca_pem: ca.cert_pem().to_owned(),
            metrics_url,
        }
    }

    /// A client that trusts the console's CA and follows no redirects (each step of a
    /// sign-in is looked at).
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Signs `username` in through the console's OIDC login, as a browser does.
    pub async fn sign_in(&self, username: &str) -> SignedIn {
        sign_in(&self.http(), &self.origin, username).await
    }
}
