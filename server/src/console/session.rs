//! Console sign-ins: a random token in an HttpOnly cookie, and what it stands for kept
//! here, in this process (a load balancer in front of several replicas must keep a
//! browser on one; signing in again is the cost of landing elsewhere).
//!
//! The map is keyed by the SHA-256 of the token, so the tokens themselves are never
//! kept, and a lookup compares digests, not secrets an attacker can time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};

use crate::auth::Reviewer;

/// The session cookie. `__Host-`: the browser only accepts it from a secure origin,
/// for the whole host (no Domain, Path=/), so a sibling subdomain cannot plant one.
pub const COOKIE: &str = "__Host-belay-session";
/// Binds a sign-in in progress to the browser that started it (login CSRF).
pub const LOGIN_COOKIE: &str = "__Host-belay-login";
/// Sessions kept at most; past it, the oldest sign-ins are dropped first.
const MAX_SESSIONS: usize = 10_000;
/// Sign-ins started and not yet finished, at most.
const MAX_LOGINS: usize = 1_000;
/// How long a browser has between leaving for the issuer and coming back.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

/// 32 random bytes, base64url: session tokens, CSRF tokens, PKCE verifiers, states,
/// nonces.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub reviewer: Reviewer,
    /// Sent back in `X-Belay-CSRF` with every change.
    pub csrf: String,
    pub expires_at: SystemTime,
    deadline: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// A new session for `reviewer`, lasting `ttl`; returns its token (the cookie value).
    pub fn create(&self, reviewer: Reviewer, ttl: Duration) -> (String, Session) {
        let token = random_token();
        let session = Session {
            reviewer,
            csrf: random_token(),
            expires_at: SystemTime::now() + ttl,
            deadline: Instant::now() + ttl,
        };
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.deadline > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.deadline)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(digest(&token), session.clone());
        (token, session)
    }

    /// The live session of `token`; an expired one is forgotten.
    pub fn get(&self, token: &str) -> Option<Session> {
        let key = digest(token);
        let mut sessions = self.lock();
        match sessions.get(&key) {
            Some(session) if session.deadline > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, token: &str) {
        self.lock().remove(&digest(token));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sign-in between the redirect to the issuer and the callback.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// Index of the issuer in the auth config.
    pub issuer: usize,
    pub verifier: String,
    pub nonce: String,
    /// The value of [`LOGIN_COOKIE`] in the browser that started it.
    pub browser: String,
    /// Where to go once signed in (a path on the console).
    pub next: String,
    deadline: Instant,
}

/// Sign-ins in progress, by `state`; each is taken once.
#[derive(Debug, Default)]
pub struct PendingLogins {
    by_state: Mutex<HashMap<String, PendingLogin>>,
}

impl PendingLogins {
    /// Remembers a sign-in; returns its `state`.
    pub fn start(
        &self,
        issuer: usize,
        verifier: String,
        nonce: String,
        browser: String,
        next: String,
    ) -> String {
        let state = random_token();
        let login = PendingLogin {
            issuer,
            verifier,
            nonce,
            browser,
            next,
            deadline: Instant::now() + LOGIN_TIMEOUT,
        };
        let mut logins = self.by_state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        logins.retain(|_, l| l.deadline > now);
        if logins.len() >= MAX_LOGINS
            && let Some(oldest) = logins
                .iter()
                .min_by_key(|(_, l)| l.deadline)
                .map(|(k, _)| k.clone())
        {
            logins.remove(&oldest);
        }
        logins.insert(state.clone(), login);
        state
    }

    /// The sign-in `state` names, which ends it: a state works once.
    pub fn take(&self, state: &str) -> Option<PendingLogin> {
        let mut logins = self.by_state.lock().unwrap_or_else(|e| e.into_inner());
        logins
            .remove(state)
            .filter(|login| login.deadline > Instant::now())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a `__Host-` cookie: Secure, HttpOnly, Path=/, no Domain.
pub fn set_cookie(name: &str, value: &str, same_site: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={}",
        max_age.as_secs()
    )
}

pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Two secrets compared in time that depends on their length only (all of belay's
/// tokens have one length), never on where they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}
