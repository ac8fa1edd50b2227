//! `--console-pages N`: the reviewer console under load. The server runs with an
//! `--auth-config` whose OIDC issuer is a test issuer in this process
//! (server/tests/support/issuer.rs) and whose API token the automated reviewers use, and
//! with its console on HTTPS (a self-signed certificate made here). N headless Chromium
//! windows (server/tests/support/browser.rs) sign in as reviewers, through the issuer's
//! form as people do, and keep the live queue open while the fleet offers its load.
//! Each marker request's row carries `data-seen-at`, the page's `Date.now()` when it
//! first drew the row; against the marker's send time (same machine, same clock) that
//! is the submission-to-browser latency.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::browser::{Browser, CHROMEDRIVER, CHROMIUM, Session, WAIT};
use crate::issuer::{AUDIENCE, TestIssuer, TestKey};
use crate::markers;

/// The group the issuer puts the page reviewers in, mapped to the reviewer role.
const GROUP: &str = "bench-reviewers";

fn email(page: usize) -> String {
    format!("bench-reviewer-{page}@example.com")
}

/// The issuer, the API token and the server arguments of a console run.
pub struct Setup {
    issuer: TestIssuer,
    /// The automated reviewers' API token.
    pub token: String,
    /// `https://127.0.0.1:PORT`
    pub origin: String,
    /// For the server: `--auth-config`, `--console-*`.
    pub server_args: Vec<OsString>,
}

/// Fails with what to do when Chromium or chromedriver is missing.
pub fn check_browser() -> anyhow::Result<()> {
    for program in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(program).exists() {
            bail!(
                "{program} is missing: --console-pages needs Chromium and chromedriver; \
                 run `cargo xtask setup`"
            );
        }
    }
    Ok(())
}

/// Starts the issuer and writes the auth config and the console's certificate into
/// `dir`.
pub async fn setup(dir: &Path, pages: usize) -> anyhow::Result<Setup> {
    let issuer = TestIssuer::start(TestKey::es256("bench-console")).await;
    for page in 0..pages {
        issuer.add_user(
            &format!("reviewer-{page}"),
            json!({"email": email(page), "email_verified": true, "groups": [GROUP]}),
        );
    }
    let token = belay_server::auth::generate_token().context("making an API token")?;
    let config = format!(
        r#"[[oidc]]
issuer = "{}"
audience = "{AUDIENCE}"

[[api_token]]
name = "bench-reviewer"
{}
roles = ["reviewer"]

[groups]
"{GROUP}" = "reviewer"
"#,
        issuer.url(),
        belay_server::auth::hash_line(&token),
    );
    let auth = dir.join("auth.toml");
    std::fs::write(&auth, config).context("writing the auth config")?;

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .context("making the console's certificate")?;
    let (cert, key) = (dir.join("console.crt"), dir.join("console.key"));
    std::fs::write(&cert, certified.cert.pem()).context("writing the certificate")?;
    std::fs::write(&key, certified.signing_key.serialize_pem()).context("writing its key")?;

    // The console binds its own listener; --console-url must name its port beforehand.
    let addr = crate::server::free_port()?;
    let origin = format!("https://{addr}");
    issuer.allow_redirect(&format!("{origin}/auth/callback"));
    let server_args = vec![
        "--auth-config".into(),
        auth.into_os_string(),
        "--console-listen".into(),
        addr.to_string().into(),
        "--console-url".into(),
        origin.clone().into(),
        "--console-cert".into(),
        cert.into_os_string(),
        "--console-key".into(),
        key.into_os_string(),
    ];
    Ok(Setup {
        issuer,
        token,
        origin,
        server_args,
    })
}

/// The signed-in windows, each on the live queue.
pub struct Pages {
    sessions: Vec<Session>,
    browser: Browser,
}

/// Opens `count` windows and signs each in as its own reviewer, the way a person does:
/// the console's sign-in button, the issuer's form, back on the queue, live.
pub async fn open(setup: &Setup, count: usize) -> Pages {
    // On this one machine the pages stand for browsers on reviewers' own machines:
    // they get the CPU the server leaves.
    let browser = Browser::start_idle().await;
    let mut sessions = Vec::with_capacity(count);
    for page in 0..count {
        let session = browser.new_session().await;
        session.goto(&format!("{}/", setup.origin)).await;
        session.click("#login").await;
        session.wait_for_url(&setup.issuer.url(), WAIT).await;
        session
            .type_into("#username", &format!("reviewer-{page}"))
            .await;
        session.click("#sign-in").await;
        session.wait_for_url(&setup.origin, WAIT).await;
        session.wait_for_text("#identity", &email(page), WAIT).await;
        session.wait_for_text("#live", "connected", WAIT).await;
        sessions.push(session);
    }
    Pages { sessions, browser }
}

/// How long reading one page's rows may take.
const READ_PATIENCE: Duration = Duration::from_secs(20);

const MARKER_ROWS: &str = r#"
    return [...document.querySelectorAll('tr[data-request-id^="bench-marker:"]')]
        .map((row) => [row.getAttribute('data-request-id'), row.getAttribute('data-seen-at')]);
"#;

impl Pages {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Per page: marker id -> `data-seen-at` (Unix ms).
    async fn seen(&self) -> Vec<HashMap<String, i64>> {
        let mut all = Vec::with_capacity(self.sessions.len());
        for (page, session) in self.sessions.iter().enumerate() {
            // A page swamped by the load may not answer: its markers count as missing.
            let rows = match tokio::time::timeout(
                READ_PATIENCE,
                session.client().execute(MARKER_ROWS, Vec::new()),
            )
            .await
            {
                Ok(Ok(rows)) => rows,
                Ok(Err(err)) => {
                    eprintln!("console page {page}: cannot read its rows: {err}");
                    Value::Null
                }
                Err(_) => {
                    eprintln!("console page {page}: no answer within {READ_PATIENCE:?}");
                    Value::Null
                }
            };
            let seen = rows
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|row| {
                    let id = row.get(0)?.as_str()?.to_owned();
                    let at = row.get(1).and_then(Value::as_str)?.parse().ok()?;
                    Some((id, at))
                })
                .collect();
            all.push(seen);
        }
        all
    }

    /// Waits (up to `patience`) until every page shows every marker, then returns
    /// seen - sent in ms for each (page, marker) shown, and how many were not shown.
    pub async fn latencies(&self, sent: &[markers::Sent], patience: Duration) -> (Vec<f64>, usize) {
        let started = Instant::now();
        loop {
            let seen = self.seen().await;
            let missing: usize = seen
                .iter()
                .map(|page| sent.iter().filter(|m| !page.contains_key(&m.id)).count())
                .sum();
            if missing == 0 || started.elapsed() > patience {
                #[allow(clippy::cast_precision_loss)]
                let latencies = seen
                    .iter()
                    .flat_map(|page| {
                        sent.iter()
                            .filter_map(|m| page.get(&m.id).map(|at| (at - m.at_ms) as f64))
                    })
                    .collect();
                return (latencies, missing);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn close(self) {
        for session in self.sessions {
            session.close().await;
        }
        drop(self.browser);
    }
}
