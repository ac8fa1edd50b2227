//! A real OIDC issuer on loopback for tests: discovery, JWKS, the device authorization
//! and token endpoints (RFC 8628), and ID tokens signed with keys generated here.
//! Shared by server/tests and cli/tests (included with `#[path]`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
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

#[derive(Default)]
struct Device {
    user_code: String,
    /// The claims of the ID token, once the user approved.
    approved: Option<Value>,
    slow_down_sent: bool,
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

pub const AUDIENCE: &str = "belay-cli";

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
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
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
    let method = request_line.next().unwrap_or("");
    let path = request_line.next().unwrap_or("");
    let (status, reply) = route(state, url, method, path, &form(&body));
    let text = reply.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
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
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    state: &Mutex<State>,
    url: &str,
    method: &str,
    path: &str,
    form: &HashMap<String, String>,
) -> (&'static str, Value) {
    let mut state = state.lock().unwrap();
    match (method, path) {
        ("GET", "/.well-known/openid-configuration") => (
            "200 OK",
            json!({
                "issuer": url,
                "jwks_uri": format!("{url}/jwks"),
                "device_authorization_endpoint": format!("{url}/device"),
                "token_endpoint": format!("{url}/token"),
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }),
        ),
        ("GET", "/jwks") => {
            state.jwks_fetches += 1;
            let set = JwkSet {
                keys: state.keys.iter().map(|k| k.jwk.clone()).collect(),
            };
            ("200 OK", serde_json::to_value(set).unwrap())
        }
        ("POST", "/device") => {
            if form.get("client_id").map(String::as_str) != Some(AUDIENCE) {
                return ("401 Unauthorized", json!({"error": "invalid_client"}));
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
            (
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
        ("POST", "/token") => {
            state.polls.push(Instant::now());
            if form.get("grant_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:grant-type:device_code")
            {
                return (
                    "400 Bad Request",
                    json!({"error": "unsupported_grant_type"}),
                );
            }
            let slow_down_once = state.slow_down_once;
            let signer = state.keys[0].clone();
            let Some(device) = form
                .get("device_code")
                .and_then(|code| state.devices.get_mut(code))
            else {
                return ("400 Bad Request", json!({"error": "invalid_grant"}));
            };
            if slow_down_once && !device.slow_down_sent {
                device.slow_down_sent = true;
                return ("400 Bad Request", json!({"error": "slow_down"}));
            }
            match &device.approved {
                None => ("400 Bad Request", json!({"error": "authorization_pending"})),
                Some(claims) => (
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
        _ => ("404 Not Found", json!({"error": "not_found"})),
    }
}

/// Long enough for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(20);
