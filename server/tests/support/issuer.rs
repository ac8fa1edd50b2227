//! A real OIDC issuer on loopback for tests: discovery, JWKS, the device authorization
//! and token endpoints (RFC 8628), the authorization code flow with PKCE (RFC 6749 §4.1,
//! RFC 7636, OpenID Connect Core §3.1) behind a tiny HTML login form, and ID tokens
//! signed with keys generated here. Plain HTTP: belay accepts `http` only for loopback
//! issuers. Shared by server/tests and cli/tests (included with `#[path]`).
//!
//! The code flow, as a test drives it:
//! ```ignore
//! let issuer = TestIssuer::start(TestKey::es256("k1")).await;
//! issuer.allow_redirect("https://127.0.0.1:8443/auth/callback");
//! issuer.add_user("alice", json!({"email": "alice@example.com", "email_verified": true, "groups": ["sre"]}));
//! // the browser signs in as "alice" on the issuer's form; then:
//! assert_eq!(issuer.codes_redeemed(), 1);
//! assert_eq!(issuer.last_authorization().unwrap().code_challenge_method, "S256");
//! ```
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::RngCore as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl TestKey {
    pub fn es256(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
        )
    }

    pub fn rs256(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let secret = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let der = secret.to_pkcs1_der().unwrap();
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The client id the issuer knows (RFC 6749 §2.2), the `aud` of its ID tokens: belay's
/// `audience`.
pub const AUDIENCE: &str = "belay-cli";

/// How long an authorization code is good for, unless a test sets another
/// (`set_code_lifetime`). RFC 6749 §4.1.2 says at most ten minutes; one minute is what
/// real issuers tend to use.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// What the relying party sent to `GET /authorize`, as received (before validation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub response_type: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    pub nonce: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    /// Every query parameter, in order, duplicates included.
    pub params: Vec<(String, String)>,
}

impl AuthorizationRequest {
    fn from_params(params: &[(String, String)]) -> Self {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Self {
            response_type: get("response_type"),
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            scope: get("scope"),
            state: get("state"),
            nonce: get("nonce"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            params: params.to_vec(),
        }
    }
}

#[derive(Default)]
struct Device {
    user_code: String,
    /// The claims of the ID token, once the user approved.
    approved: Option<Value>,
    slow_down_sent: bool,
}

/// An authorization code and everything the token request is checked against.
struct Code {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: String,
    username: String,
    expires: Instant,
    /// Any redemption attempt uses a code up, failed ones too, so a stolen code cannot
    /// be tried against guessed verifiers.
    used: bool,
}

struct State {
    /// Keys published in the JWKS; the first signs.
    keys: Vec<TestKey>,
    jwks_fetches: usize,
    devices: HashMap<String, Device>,
    polls: Vec<Instant>,
    /// Answer the first token poll with `slow_down`.
    slow_down_once: bool,
    next_device: u32,
    /// Exact redirect URIs registered for `AUDIENCE`.
    redirects: HashSet<String>,
    /// Username -> claims of their ID tokens.
    users: HashMap<String, Value>,
    codes: HashMap<String, Code>,
    codes_redeemed: usize,
    last_authorization: Option<AuthorizationRequest>,
    token_lifetime: Duration,
    code_lifetime: Duration,
    /// When set, token requests must authenticate the client with it.
    client_secret: Option<String>,
    /// Merged over every code-flow ID token; `null` removes a claim.
    claim_overrides: Option<Value>,
    /// Signs code-flow ID tokens instead of the published key.
    forging_key: Option<TestKey>,
}

pub struct TestIssuer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestIssuer {
    pub async fn start(key: TestKey) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            keys: vec![key],
            jwks_fetches: 0,
            devices: HashMap::new(),
            polls: Vec::new(),
            slow_down_once: false,
            next_device: 0,
            redirects: HashSet::new(),
            users: HashMap::new(),
            codes: HashMap::new(),
            codes_redeemed: 0,
            last_authorization: None,
            token_lifetime: Duration::from_secs(300),
            code_lifetime: CODE_LIFETIME,
            client_secret: None,
            claim_overrides: None,
            forging_key: None,
        }));
        let url = format!("http://{addr}");
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let state = Arc::clone(&state);
                    let url = url.clone();
                    tokio::spawn(async move {
                        let _ = serve_one(stream, &state, &url).await;
                    });
                }
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.url())
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.url())
    }

    /// Claims of a valid ID token for `email`, member of `groups`.
    pub fn claims(&self, email: &str, groups: &[&str]) -> Value {
        json!({
            "iss": self.url(),
            "aud": AUDIENCE,
            "sub": format!("sub-{email}"),
            "email": email,
            "email_verified": true,
            "groups": groups,
            "iat": now(),
            "exp": now() + 300,
        })
    }

    /// `claims` signed with the issuer's current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.state.lock().unwrap().keys[0].sign(claims)
    }

    pub fn token(&self, email: &str, groups: &[&str]) -> String {
        self.sign(&self.claims(email, groups))
    }

    /// Publishes `key` alone from now on, and signs with it.
    pub fn rotate(&self, key: TestKey) {
        self.state.lock().unwrap().keys = vec![key];
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    pub fn slow_down_once(&self) {
        self.state.lock().unwrap().slow_down_once = true;
    }

    /// The user approves the sign-in with `user_code` in their browser, as `claims`.
    pub fn approve(&self, user_code: &str, claims: Value) {
        let mut state = self.state.lock().unwrap();
        let device = state
            .devices
            .values_mut()
            .find(|d| d.user_code == user_code)
            .expect("no device authorization with that user code");
        device.approved = Some(claims);
    }

    /// When the token endpoint was polled.
    pub fn polls(&self) -> Vec<Instant> {
        self.state.lock().unwrap().polls.clone()
    }

    /// Registers `redirect_uri` for the client `AUDIENCE`. Authorization requests must
    /// name a registered one, compared as exact strings (no prefix, no normalisation).
    pub fn allow_redirect(&self, redirect_uri: &str) {
        self.state
            .lock()
            .unwrap()
            .redirects
            .insert(redirect_uri.to_owned());
    }

    /// A person who can sign in on the login form as `username`. `claims` (a JSON object:
    /// email, email_verified, groups, ...) go into their ID tokens; `sub` defaults to
    /// `sub-<username>`. iss, aud, iat, exp and nonce are always the issuer's own.
    pub fn add_user(&self, username: &str, claims: Value) {
        assert!(claims.is_object(), "a user's claims must be a JSON object");
        self.state
            .lock()
            .unwrap()
            .users
            .insert(username.to_owned(), claims);
    }

    /// `exp - iat` of code-flow ID tokens and the `expires_in` beside them (default
    /// 300 s): short lifetimes make short console sessions.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.lock().unwrap().token_lifetime = lifetime;
    }

    /// Codes issued from now on are redeemable for `lifetime` (default `CODE_LIFETIME`), so a test
    /// can see an expired code refused without waiting a minute.
    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.state.lock().unwrap().code_lifetime = lifetime;
    }

    /// From now on the token endpoint authenticates the client (client_secret_basic or
    /// client_secret_post, RFC 6749 §2.3.1) with `secret`: a confidential client.
    pub fn require_client_secret(&self, secret: &str) {
        self.state.lock().unwrap().client_secret = Some(secret.to_owned());
    }

    /// Merges `overrides` (a JSON object) over every code-flow ID token issued from now
    /// on, after the issuer's own claims: `{"nonce": "other"}` or `{"aud": "x"}` make
    /// tokens a relying party must refuse; a `null` value removes the claim.
    pub fn override_id_token_claims(&self, overrides: Value) {
        assert!(overrides.is_object(), "overrides must be a JSON object");
        self.state.lock().unwrap().claim_overrides = Some(overrides);
    }

    /// Signs code-flow ID tokens with `key` (not published in the JWKS) from now on:
    /// forged tokens.
    pub fn sign_id_tokens_with(&self, key: TestKey) {
        self.state.lock().unwrap().forging_key = Some(key);
    }

    /// How many authorization codes were exchanged for tokens successfully.
    pub fn codes_redeemed(&self) -> usize {
        self.state.lock().unwrap().codes_redeemed
    }

    /// The last `GET /authorize`, as received (so tests can check the relying party sent
    /// S256, a nonce, a state, ...).
    pub fn last_authorization(&self) -> Option<AuthorizationRequest> {
        self.state.lock().unwrap().last_authorization.clone()
    }
}

/// A parsed HTTP/1.1 request: one per connection.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn json(status: &'static str, body: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    fn html(status: &'static str, body: String) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            headers: vec![("cache-control", "no-store".to_owned())],
            body,
        }
    }

    fn see_other(location: String) -> Self {
        Self {
            status: "303 See Other",
            content_type: "text/plain",
            headers: vec![("location", location), ("cache-control", "no-store".into())],
            body: String::new(),
        }
    }

    /// RFC 6749 §5.2: a token error, JSON.
    fn token_error(error: &str, description: &str) -> Self {
        Self::json(
            "400 Bad Request",
            json!({"error": error, "error_description": description}),
        )
    }
}

async fn serve_one(mut stream: TcpStream, state: &Mutex<State>, url: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).into_owned();
    let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("").to_owned();
    let target = request_line.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method,
        path: path.to_owned(),
        query: form(query),
        form: form(&body),
        headers,
    };
    let reply = route(state, url, &request);
    let mut response = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&reply.body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// `application/x-www-form-urlencoded` pairs, in order, duplicates kept (RFC 6749 §3.1:
/// a parameter sent twice is an error, so it must stay visible).
fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The one value of `name`: `Ok(None)` when absent or empty (RFC 6749 §3.1: "parameters
/// sent without a value MUST be treated as if they were omitted"), `Err` when repeated.
fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut values = params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(format!("{name} is repeated"));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// A code verifier or S256 challenge: 43 to 128 characters of `[A-Za-z0-9-._~]`
/// (RFC 7636 §4.1, §4.2).
fn pkce_syntax(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// BASE64URL(SHA256(ASCII(code_verifier))), RFC 7636 §4.2.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `uri` with `params` added to its query, keeping any query it has (RFC 6749 §3.1.2).
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(&format!("{}={}", encode(k), encode(v)));
        sep = '&';
    }
    out
}

/// An authorization request that passed every check.
struct Authorization {
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    /// The parameters to carry through the login form.
    carried: Vec<(&'static str, String)>,
}

enum AuthorizationError {
    /// RFC 6749 §4.1.2.1: with a bad client_id or redirect_uri the user is told, never
    /// sent anywhere (an open redirector otherwise).
    NoRedirect(String),
    /// Every other problem goes back to the (verified) redirect_uri.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

fn validate_authorization(
    state: &State,
    params: &[(String, String)],
) -> Result<Authorization, AuthorizationError> {
    use AuthorizationError::{NoRedirect, Redirect};
    let client_id = single(params, "client_id")
        .map_err(NoRedirect)?
        .ok_or_else(|| NoRedirect("client_id is missing".into()))?;
    if client_id != AUDIENCE {
        return Err(NoRedirect(format!("unknown client_id {client_id:?}")));
    }
    let redirect_uri = single(params, "redirect_uri")
        .map_err(NoRedirect)?
        .ok_or_else(|| NoRedirect("redirect_uri is missing".into()))?;
    if !state.redirects.contains(redirect_uri) {
        return Err(NoRedirect(format!(
            "redirect_uri {redirect_uri:?} is not registered for {client_id}"
        )));
    }
    // State goes back with any error, if it can be read.
    let state_param = single(params, "state").ok().flatten().map(str::to_owned);
    let fail = |error: &'static str, description: String| Redirect {
        redirect_uri: redirect_uri.to_owned(),
        error,
        description,
        state: state_param.clone(),
    };
    let required = |name: &str| match single(params, name) {
        Err(problem) => Err(fail("invalid_request", problem)),
        Ok(None) => Err(fail("invalid_request", format!("{name} is missing"))),
        Ok(Some(value)) => Ok(value),
    };
    let response_type = required("response_type")?;
    if response_type != "code" {
        return Err(fail(
            "unsupported_response_type",
            format!("response_type {response_type:?}: only \"code\" is supported"),
        ));
    }
    let scope = required("scope")?;
    if !scope.split(' ').any(|s| s == "openid") {
        // OIDC Core §3.1.2.1: without openid this is plain OAuth, not a sign-in.
        return Err(fail(
            "invalid_scope",
            format!("scope {scope:?} lacks \"openid\""),
        ));
    }
    // Optional in the specs, required here: belay's console must bind each login to its
    // browser (state, RFC 6749 §10.12) and each ID token to its login (nonce, OIDC Core
    // §15.5.2), so a console that leaves them out fails its tests.
    let state_value = required("state")?;
    let nonce = required("nonce")?;
    // RFC 7636 §4.4.1: PKCE is required; a missing method means "plain", not offered.
    let code_challenge = required("code_challenge")?;
    let method = single(params, "code_challenge_method")
        .map_err(|p| fail("invalid_request", p))?
        .unwrap_or("plain");
    if method != "S256" {
        return Err(fail(
            "invalid_request",
            format!("code_challenge_method {method:?} is not supported: use S256"),
        ));
    }
    if !pkce_syntax(code_challenge) {
        return Err(fail(
            "invalid_request",
            "code_challenge is not 43 to 128 unreserved characters".into(),
        ));
    }
    let carried = vec![
        ("response_type", response_type.to_owned()),
        ("client_id", client_id.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("scope", scope.to_owned()),
        ("state", state_value.to_owned()),
        ("nonce", nonce.to_owned()),
        ("code_challenge", code_challenge.to_owned()),
        ("code_challenge_method", method.to_owned()),
    ];
    Ok(Authorization {
        redirect_uri: redirect_uri.to_owned(),
        state: state_value.to_owned(),
        nonce: nonce.to_owned(),
        code_challenge: code_challenge.to_owned(),
        carried,
    })
}

fn authorization_failure(error: AuthorizationError) -> Response {
    match error {
        AuthorizationError::NoRedirect(problem) => Response::html(
            "400 Bad Request",
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in error</title></head>\
                 <body><h1>Sign-in error</h1><p id=\"error\">{}</p></body></html>",
                html_escape(&problem)
            ),
        ),
        AuthorizationError::Redirect {
            redirect_uri,
            error,
            description,
            state,
        } => {
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(state) = &state {
                params.push(("state", state.as_str()));
            }
            Response::see_other(with_query(&redirect_uri, &params))
        }
    }
}

fn login_form(authorization: &Authorization, problem: Option<&str>) -> Response {
    let hidden: String = authorization
        .carried
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                html_escape(value)
            )
        })
        .collect();
    let problem = problem
        .map(|p| format!("<p id=\"error\" role=\"alert\">{}</p>", html_escape(p)))
        .unwrap_or_default();
    Response::html(
        "200 OK",
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Test issuer: sign in</title></head>\
             <body><h1>Sign in</h1>{problem}<form method=\"post\" action=\"/authorize\">{hidden}\
             <label for=\"username\">Username</label> <input type=\"text\" name=\"username\" id=\"username\" autocomplete=\"off\" autofocus> \
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form></body></html>"
        ),
    )
}

fn authorize(state: &mut State, request: &Request) -> Response {
    if request.method == "GET" {
        state.last_authorization = Some(AuthorizationRequest::from_params(&request.query));
        return match validate_authorization(state, &request.query) {
            Ok(authorization) => login_form(&authorization, None),
            Err(error) => authorization_failure(error),
        };
    }
    // The form's POST: the hidden fields came back through the browser, so they are
    // checked again rather than trusted.
    let authorization = match validate_authorization(state, &request.form) {
        Ok(authorization) => authorization,
        Err(error) => return authorization_failure(error),
    };
    let username = single(&request.form, "username").ok().flatten();
    let Some(username) = username.filter(|u| state.users.contains_key(*u)) else {
        return login_form(
            &authorization,
            Some(&format!("unknown user {:?}", username.unwrap_or(""))),
        );
    };
    let code = random_token();
    state.codes.insert(
        code.clone(),
        Code {
            client_id: AUDIENCE.to_owned(),
            redirect_uri: authorization.redirect_uri.clone(),
            code_challenge: authorization.code_challenge,
            nonce: authorization.nonce,
            username: username.to_owned(),
            expires: Instant::now() + state.code_lifetime,
            used: false,
        },
    );
    Response::see_other(with_query(
        &authorization.redirect_uri,
        &[("code", &code), ("state", &authorization.state)],
    ))
}

/// The client a token request authenticates as (RFC 6749 §2.3), or its error response.
fn token_client(state: &State, request: &Request) -> Result<String, Response> {
    let invalid_client = |description: &str| {
        let mut response = Response::json(
            "401 Unauthorized",
            json!({"error": "invalid_client", "error_description": description}),
        );
        response
            .headers
            .push(("www-authenticate", "Basic realm=\"test-issuer\"".into()));
        Err(response)
    };
    let basic = request
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .map(|encoded| {
            let decoded = STANDARD.decode(encoded.trim()).unwrap_or_default();
            let decoded = String::from_utf8_lossy(&decoded).into_owned();
            let (id, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
            // §2.3.1: both are form-urlencoded before going into the header.
            (decode(id), decode(secret))
        });
    let form_id = single(&request.form, "client_id")
        .map_err(|p| Response::token_error("invalid_request", &p))?;
    let form_secret = single(&request.form, "client_secret")
        .map_err(|p| Response::token_error("invalid_request", &p))?;
    if basic.is_some() && form_secret.is_some() {
        return Err(Response::token_error(
            "invalid_request",
            "more than one client authentication method",
        ));
    }
    let (client_id, secret) = match &basic {
        Some((id, secret)) => {
            if form_id.is_some_and(|f| f != id.as_str()) {
                return Err(Response::token_error(
                    "invalid_request",
                    "client_id differs from the authenticated client",
                ));
            }
            (id.clone(), Some(secret.clone()))
        }
        None => match form_id {
            Some(id) => (id.to_owned(), form_secret.map(str::to_owned)),
            None => {
                return Err(Response::token_error(
                    "invalid_request",
                    "client_id is missing",
                ));
            }
        },
    };
    if client_id != AUDIENCE {
        return invalid_client(&format!("unknown client {client_id:?}"));
    }
    if let Some(expected) = &state.client_secret
        && secret.as_deref() != Some(expected.as_str())
    {
        return invalid_client("client authentication failed");
    }
    Ok(client_id)
}

fn token_authorization_code(state: &mut State, url: &str, request: &Request) -> Response {
    let client_id = match token_client(state, request) {
        Ok(client_id) => client_id,
        Err(response) => return response,
    };
    let param = |name: &str| single(&request.form, name);
    let code = match param("code") {
        Ok(Some(code)) => code,
        Ok(None) => return Response::token_error("invalid_request", "code is missing"),
        Err(problem) => return Response::token_error("invalid_request", &problem),
    };
    let Some(grant) = state.codes.get_mut(code) else {
        return Response::token_error("invalid_grant", "unknown authorization code");
    };
    if std::mem::replace(&mut grant.used, true) {
        return Response::token_error("invalid_grant", "authorization code already used");
    }
    if Instant::now() > grant.expires {
        return Response::token_error("invalid_grant", "authorization code expired");
    }
    if grant.client_id != client_id {
        return Response::token_error("invalid_grant", "code was issued to another client");
    }
    match param("redirect_uri") {
        Ok(Some(uri)) if uri == grant.redirect_uri => {}
        Ok(Some(_)) => {
            return Response::token_error(
                "invalid_grant",
                "redirect_uri differs from the authorization request's",
            );
        }
        Ok(None) => return Response::token_error("invalid_request", "redirect_uri is missing"),
        Err(problem) => return Response::token_error("invalid_request", &problem),
    }
    match param("code_verifier") {
        Ok(Some(verifier)) if pkce_syntax(verifier) && s256(verifier) == grant.code_challenge => {}
        Ok(Some(_)) => {
            return Response::token_error(
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            );
        }
        Ok(None) => return Response::token_error("invalid_request", "code_verifier is missing"),
        Err(problem) => return Response::token_error("invalid_request", &problem),
    }
    let nonce = grant.nonce.clone();
    let username = grant.username.clone();
    let Some(user) = state.users.get(&username) else {
        return Response::token_error("invalid_grant", "the user is gone");
    };
    let lifetime = state.token_lifetime.as_secs();
    let mut claims = user.as_object().cloned().unwrap_or_default();
    claims
        .entry("sub")
        .or_insert_with(|| json!(format!("sub-{username}")));
    let issued_at = now();
    for (name, value) in [
        ("iss", json!(url)),
        ("aud", json!(client_id)),
        ("iat", json!(issued_at)),
        ("auth_time", json!(issued_at)),
        ("exp", json!(issued_at + lifetime)),
        ("nonce", json!(nonce)),
    ] {
        claims.insert(name.to_owned(), value);
    }
    if let Some(Value::Object(overrides)) = &state.claim_overrides {
        for (name, value) in overrides {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
    }
    let signer = state
        .forging_key
        .clone()
        .unwrap_or_else(|| state.keys[0].clone());
    state.codes_redeemed += 1;
    let mut response = Response::json(
        "200 OK",
        json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "id_token": signer.sign(&Value::Object(claims)),
        }),
    );
    // RFC 6749 §5.1: token responses must not be cached.
    response.headers.push(("cache-control", "no-store".into()));
    response.headers.push(("pragma", "no-cache".into()));
    response
}

fn token_device_code(state: &mut State, form: &HashMap<String, String>) -> Response {
    let slow_down_once = state.slow_down_once;
    let signer = state.keys[0].clone();
    let Some(device) = form
        .get("device_code")
        .and_then(|code| state.devices.get_mut(code))
    else {
        return Response::json("400 Bad Request", json!({"error": "invalid_grant"}));
    };
    if slow_down_once && !device.slow_down_sent {
        device.slow_down_sent = true;
        return Response::json("400 Bad Request", json!({"error": "slow_down"}));
    }
    match &device.approved {
        None => Response::json("400 Bad Request", json!({"error": "authorization_pending"})),
        Some(claims) => Response::json(
            "200 OK",
            json!({
                "access_token": "opaque-access-token",
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": signer.sign(claims),
            }),
        ),
    }
}

fn route(state: &Mutex<State>, url: &str, request: &Request) -> Response {
    let mut state = state.lock().unwrap();
    let form: HashMap<String, String> = request.form.iter().cloned().collect();
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/.well-known/openid-configuration") => Response::json(
            "200 OK",
            json!({
                "issuer": url,
                "authorization_endpoint": format!("{url}/authorize"),
                "token_endpoint": format!("{url}/token"),
                "jwks_uri": format!("{url}/jwks"),
                "device_authorization_endpoint": format!("{url}/device"),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": [
                    "authorization_code",
                    "urn:ietf:params:oauth:grant-type:device_code",
                ],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "scopes_supported": ["openid", "email", "profile", "groups"],
                "token_endpoint_auth_methods_supported": [
                    "none",
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": [
                    "iss", "aud", "sub", "exp", "iat", "auth_time", "nonce",
                    "email", "email_verified", "groups",
                ],
            }),
        ),
        ("GET", "/jwks") => {
            state.jwks_fetches += 1;
            let set = JwkSet {
                keys: state.keys.iter().map(|k| k.jwk.clone()).collect(),
            };
            Response::json("200 OK", serde_json::to_value(set).unwrap())
        }
        ("GET" | "POST", "/authorize") => authorize(&mut state, request),
        ("POST", "/device") => {
            if form.get("client_id").map(String::as_str) != Some(AUDIENCE) {
                return Response::json("401 Unauthorized", json!({"error": "invalid_client"}));
            }
            state.next_device += 1;
            let device_code = format!("device-{}", state.next_device);
            let user_code = format!("WDJB-MJH{}", state.next_device);
            state.devices.insert(
                device_code.clone(),
                Device {
                    user_code: user_code.clone(),
                    ..Device::default()
                },
            );
            Response::json(
                "200 OK",
                json!({
                    "device_code": device_code,
                    "user_code": user_code,
                    "verification_uri": format!("{url}/activate"),
                    "verification_uri_complete": format!("{url}/activate?user_code={user_code}"),
                    "expires_in": 600,
                    "interval": 1,
                }),
            )
        }
        ("POST", "/token") => match form.get("grant_type").map(String::as_str) {
            Some("urn:ietf:params:oauth:grant-type:device_code") => {
                state.polls.push(Instant::now());
                token_device_code(&mut state, &form)
            }
            Some("authorization_code") => token_authorization_code(&mut state, url, request),
            _ => Response::json(
                "400 Bad Request",
                json!({"error": "unsupported_grant_type"}),
            ),
        },
        _ => Response::json("404 Not Found", json!({"error": "not_found"})),
    }
}

/// Long enough for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(20);
