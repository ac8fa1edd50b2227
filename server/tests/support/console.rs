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
use serde_json::{Value, json};

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
    pub async fn start(quorum: u32, session_ttl: Duration) -> Self {
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
            audit: AuditCheck::Unavailable,
        });
        let approvals = Approvals::new(MemoryStore::default())
            .with_quorum(std::num::NonZeroU32::new(quorum).unwrap());
        let server = TestServer::start_approvals(approvals, options).await;
        Self {
            server,
            issuer,
            origin,
            ca_pem: ca.cert_pem().to_owned(),
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

/// The `name=value` of a `Set-Cookie` header naming `name`, and the whole header.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|header| {
            let pair = header.split(';').next().unwrap().to_owned();
            (pair, header.to_owned())
        })
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("no Location in a {} answer", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The sign-in, step by step: the console sends the browser to the issuer; the person
/// signs in on the issuer's form; the issuer sends the browser back with a code; the
/// console trades it for a session cookie.
pub async fn sign_in(http: &reqwest::Client, origin: &str, username: &str) -> SignedIn {
    let login = http
        .get(format!("{origin}/login?next=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303, "GET /login");
    let (login_cookie, _) = set_cookie(&login, "__Host-belay-login").expect("the login cookie");
    let authorize = location(&login);
    let form_page = http.get(&authorize).send().await.unwrap();
    assert_eq!(form_page.status(), 200, "the issuer's login form");
    // The issuer's form, submitted with the parameters it carries.
    let url = reqwest::Url::parse(&authorize).unwrap();
    let mut form: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("username".into(), username.into()));
    let mut base = url.clone();
    base.set_query(None);
    let signed = http.post(base).form(&form).send().await.unwrap();
    assert_eq!(signed.status(), 303, "the issuer's login form");
    let callback = location(&signed);
    assert!(
        callback.starts_with(&format!("{origin}/auth/callback?")),
        "{callback}"
    );
    let back = http
        .get(&callback)
        .header(reqwest::header::COOKIE, &login_cookie)
        .send()
        .await
        .unwrap();
    let status = back.status();
    let session = set_cookie(&back, "__Host-belay-session");
    let Some((cookie, set_cookie_header)) = session else {
        panic!(
            "sign-in of {username} failed: {status} {}",
            back.text().await.unwrap_or_default()
        );
    };
    let mut signed_in = SignedIn {
        http: http.clone(),
        origin: origin.to_owned(),
        cookie,
        set_cookie_header,
        csrf: String::new(),
    };
    let (status, session) = signed_in.get("/api/session").await;
    assert_eq!(status, 200, "{session}");
    signed_in.csrf = session["csrf"].as_str().unwrap().to_owned();
    signed_in
}

/// A signed-in browser, as far as the server can tell.
#[derive(Clone)]
pub struct SignedIn {
    pub http: reqwest::Client,
    pub origin: String,
    /// `__Host-belay-session=...`
    pub cookie: String,
    /// The whole `Set-Cookie` header it came in.
    pub set_cookie_header: String,
    pub csrf: String,
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl SignedIn {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.origin))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    /// A POST as the console's page makes it: same origin, CSRF token, JSON.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(
            path,
            body,
            Some(&self.origin.clone()),
            Some(&self.csrf.clone()),
        )
        .await
    }

    /// A POST with the given Origin and CSRF headers (`None`: left out).
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        origin: Option<&str>,
        csrf: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.origin))
            .header(reqwest::header::COOKIE, &self.cookie)
            .json(body);
        if let Some(origin) = origin {
            request = request.header(reqwest::header::ORIGIN, origin);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-belay-csrf", csrf);
        }
        answer(request.send().await.unwrap()).await
    }

    /// `POST /api/requests/{id}/decision`.
    pub async fn decide(&self, id: &str, verdict: &str, reason: &str) -> (u16, Value) {
        let path = format!("/api/requests/{}/decision", urlencode(id));
        self.post(
            &path,
            &json!({"verdict": verdict, "reason": reason, "scope": "once"}),
        )
        .await
    }
}

/// A path segment with `:` and friends escaped.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
