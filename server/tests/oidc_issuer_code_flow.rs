//! The test issuer's authorization code flow with PKCE, checked against the specs
//! (RFC 6749 §4.1, RFC 7636, OpenID Connect Core §3.1) with a plain HTTP client: the
//! console's browser tests trust this issuer to refuse what a real one refuses, so a
//! lenient issuer would let a careless console pass.

#[path = "support/issuer.rs"]
mod issuer;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use issuer::{AUDIENCE, TestIssuer, TestKey, encode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const CALLBACK: &str = "https://127.0.0.1:8443/auth/callback";
/// RFC 7636 Appendix B: this verifier's S256 challenge, computed by the RFC's authors,
/// so the issuer's own hashing is not what the test checks it against.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Flow {
    issuer: TestIssuer,
    http: reqwest::Client,
}

impl Flow {
    async fn start() -> Self {
        let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
        issuer.allow_redirect(CALLBACK);
        issuer.add_user(
            "alice",
            json!({"email": "alice@example.com", "email_verified": true, "groups": ["sre"]}),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { issuer, http }
    }

    /// A valid authorization request for `CALLBACK` with `CHALLENGE`.
    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("response_type", "code".into()),
            ("client_id", AUDIENCE.into()),
            ("redirect_uri", CALLBACK.into()),
            ("scope", "openid email groups".into()),
            ("state", "state-123".into()),
            ("nonce", "nonce-456".into()),
            ("code_challenge", CHALLENGE.into()),
            ("code_challenge_method", "S256".into()),
        ]
    }

    async fn get_authorize(&self, params: &[(&str, String)]) -> reqwest::Response {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        self.http
            .get(format!(
                "{}?{}",
                self.issuer.authorization_endpoint(),
                query.join("&")
            ))
            .send()
            .await
            .unwrap()
    }

    /// What the login form posts when the person types `username`.
    async fn sign_in(&self, params: &[(&str, String)], username: &str) -> reqwest::Response {
        let mut body = form_body(params);
        body.push_str(&format!("&username={}", encode(username)));
        self.http
            .post(self.issuer.authorization_endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Signs in as alice with `params` and returns the code from the redirect.
    async fn code(&self, params: &[(&str, String)]) -> String {
        let response = self.sign_in(params, "alice").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let query = redirect_query(&response, CALLBACK);
        let state = params.iter().find(|(k, _)| *k == "state").unwrap();
        assert_eq!(
            query_value(&query, "state").as_deref(),
            Some(state.1.as_str())
        );
        query_value(&query, "code").expect("no code in the redirect")
    }

    async fn redeem(&self, code: &str, redirect_uri: &str, verifier: &str) -> (StatusCode, Value) {
        let body = form_body(&[
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("redirect_uri", redirect_uri.into()),
            ("client_id", AUDIENCE.into()),
            ("code_verifier", verifier.into()),
        ]);
        self.post_token(body, None).await
    }

    async fn post_token(&self, body: String, basic: Option<(&str, &str)>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.issuer.token_endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// The ID token's claims, its signature checked against the issuer's JWKS.
    async fn verify(&self, id_token: &str) -> Value {
        let jwks: JwkSet = self
            .http
            .get(format!("{}/jwks", self.issuer.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(id_token).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[self.issuer.url()]);
        jsonwebtoken::decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims
    }
}

fn form_body(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn with(
    params: &[(&'static str, String)],
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut params = params.to_vec();
    params.retain(|(k, _)| *k != name);
    params.push((name, value.into()));
    params
}

fn without(params: &[(&'static str, String)], name: &str) -> Vec<(&'static str, String)> {
    params.iter().filter(|(k, _)| *k != name).cloned().collect()
}

/// The query of the redirect `response` sends the browser to, which must be `base`.
fn redirect_query(response: &reqwest::Response, base: &str) -> String {
    let location = response
        .headers()
        .get("location")
        .expect("no Location")
        .to_str()
        .unwrap();
    let (target, query) = location.split_once('?').expect("no query in Location");
    assert_eq!(target, base);
    query.to_owned()
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            let bytes = v.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

#[tokio::test]
async fn discovery_advertises_the_code_flow_with_s256_only() {
    let flow = Flow::start().await;
    let discovery: Value = flow
        .http
        .get(format!(
            "{}/.well-known/openid-configuration",
            flow.issuer.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], json!(flow.issuer.url()));
    assert_eq!(
        discovery["authorization_endpoint"],
        json!(flow.issuer.authorization_endpoint())
    );
    assert_eq!(
        discovery["token_endpoint"],
        json!(flow.issuer.token_endpoint())
    );
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(discovery["response_types_supported"], json!(["code"]));
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));
}

#[tokio::test]
async fn code_flow_issues_an_id_token_bound_to_the_nonce() {
    let flow = Flow::start().await;
    flow.issuer.set_token_lifetime(Duration::from_secs(90));

    let form = flow.get_authorize(&flow.params()).await;
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    for needle in [
        r#"id="username""#,
        r#"name="username""#,
        r#"id="sign-in""#,
        r#"action="/authorize""#,
        r#"name="nonce" value="nonce-456""#,
        &format!(r#"name="code_challenge" value="{CHALLENGE}""#),
    ] {
        assert!(
            html.contains(needle),
            "the login form lacks {needle}: {html}"
        );
    }
    let seen = flow.issuer.last_authorization().unwrap();
    assert_eq!(seen.code_challenge_method, "S256");
    assert_eq!(seen.code_challenge, CHALLENGE);
    assert_eq!(seen.nonce, "nonce-456");
    assert_eq!(seen.state, "state-123");
    assert_eq!(seen.redirect_uri, CALLBACK);

    let code = flow.code(&flow.params()).await;
    assert_eq!(flow.issuer.codes_redeemed(), 0);
    let (status, tokens) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 90);
    assert!(
        tokens["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(flow.issuer.codes_redeemed(), 1);

    let claims = flow.verify(tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["nonce"], "nonce-456");
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["iss"], json!(flow.issuer.url()));
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], json!(["sre"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        90
    );
}

#[tokio::test]
async fn a_random_verifier_works_too() {
    // The Appendix B vector alone would let a hard-coded challenge pass.
    let flow = Flow::start().await;
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let code = flow
        .code(&with(&flow.params(), "code_challenge", &challenge))
        .await;
    let (status, tokens) = flow.redeem(&code, CALLBACK, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
}

fn rand_bytes() -> [u8; 32] {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant_and_burns_the_code() {
    let flow = Flow::start().await;
    let code = flow.code(&flow.params()).await;
    let other = URL_SAFE_NO_PAD.encode(rand_bytes());
    let (status, error) = flow.redeem(&code, CALLBACK, &other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    // The challenge itself is not a verifier (plain PKCE is not offered).
    let code = flow.code(&flow.params()).await;
    let (status, error) = flow.redeem(&code, CALLBACK, CHALLENGE).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    // Whoever stole the code gets one guess: the right verifier afterwards fails too.
    let (status, error) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert_eq!(flow.issuer.codes_redeemed(), 0);
}

#[tokio::test]
async fn reused_code_is_invalid_grant() {
    let flow = Flow::start().await;
    let code = flow.code(&flow.params()).await;
    let (status, _) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    assert!(error.get("id_token").is_none());
    assert_eq!(flow.issuer.codes_redeemed(), 1);
}

#[tokio::test]
async fn wrong_redirect_uri_at_the_token_endpoint_is_invalid_grant() {
    let flow = Flow::start().await;
    // Registered too: what matters is that it is not the one the code was issued for.
    let other = "https://127.0.0.1:8443/other/callback";
    flow.issuer.allow_redirect(other);
    let code = flow.code(&flow.params()).await;
    let (status, error) = flow.redeem(&code, other, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    assert_eq!(flow.issuer.codes_redeemed(), 0);
}

#[tokio::test]
async fn expired_code_is_invalid_grant() {
    let flow = Flow::start().await;
    flow.issuer.set_code_lifetime(Duration::from_millis(200));
    let code = flow.code(&flow.params()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, error) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
}

#[tokio::test]
async fn token_requests_missing_a_parameter_are_invalid_request() {
    let flow = Flow::start().await;
    for missing in ["code", "redirect_uri", "code_verifier", "client_id"] {
        let code = flow.code(&flow.params()).await;
        let params = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", CALLBACK.into()),
            ("client_id", AUDIENCE.into()),
            ("code_verifier", VERIFIER.into()),
        ];
        let (status, error) = flow
            .post_token(form_body(&without(&params, missing)), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "without {missing}");
        assert_eq!(error["error"], "invalid_request", "without {missing}");
    }
    let (status, error) = flow
        .post_token(form_body(&[("grant_type", "password".into())]), None)
        .await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &json!("unsupported_grant_type"))
    );
    assert_eq!(flow.issuer.codes_redeemed(), 0);
}

#[tokio::test]
async fn confidential_client_must_authenticate() {
    let flow = Flow::start().await;
    flow.issuer.require_client_secret("s3cret");
    let code = flow.code(&flow.params()).await;
    let (status, error) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"], "invalid_client");

    let code = flow.code(&flow.params()).await;
    let body = form_body(&[
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", CALLBACK.into()),
        ("code_verifier", VERIFIER.into()),
    ]);
    let (status, error) = flow
        .post_token(body.clone(), Some((AUDIENCE, "wrong")))
        .await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
    );
    // The failed authentication did not touch the code: another client cannot burn it.
    let (status, tokens) = flow.post_token(body, Some((AUDIENCE, "s3cret"))).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
}

#[tokio::test]
async fn unregistered_redirect_or_unknown_client_gets_a_page_not_a_redirect() {
    let flow = Flow::start().await;
    for params in [
        with(
            &flow.params(),
            "redirect_uri",
            "https://evil.example/callback",
        ),
        // Exact match: a prefix or an added query is another URI.
        with(
            &flow.params(),
            "redirect_uri",
            "https://127.0.0.1:8443/auth/callback/x",
        ),
        with(
            &flow.params(),
            "redirect_uri",
            &format!("{CALLBACK}?next=/"),
        ),
        without(&flow.params(), "redirect_uri"),
        with(&flow.params(), "client_id", "someone-else"),
        without(&flow.params(), "client_id"),
    ] {
        let response = flow.get_authorize(&params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(response.headers().get("location").is_none(), "{params:?}");
        // Nor does the form's POST accept what the GET refused.
        let response = flow.sign_in(&params, "alice").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(response.headers().get("location").is_none(), "{params:?}");
    }
}

#[tokio::test]
async fn other_authorization_errors_go_back_to_the_client_with_the_state() {
    let flow = Flow::start().await;
    let cases = [
        (without(&flow.params(), "code_challenge"), "invalid_request"),
        (
            with(&flow.params(), "code_challenge_method", "plain"),
            "invalid_request",
        ),
        (
            without(&flow.params(), "code_challenge_method"),
            "invalid_request",
        ),
        (
            with(&flow.params(), "code_challenge", "too-short"),
            "invalid_request",
        ),
        (without(&flow.params(), "nonce"), "invalid_request"),
        (without(&flow.params(), "response_type"), "invalid_request"),
        (
            with(&flow.params(), "response_type", "token"),
            "unsupported_response_type",
        ),
        (
            with(&flow.params(), "scope", "email groups"),
            "invalid_scope",
        ),
        (
            {
                let mut twice = flow.params();
                twice.push(("nonce", "second".into()));
                twice
            },
            "invalid_request",
        ),
    ];
    for (params, expected) in cases {
        let response = flow.get_authorize(&params).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{params:?}");
        let query = redirect_query(&response, CALLBACK);
        assert_eq!(
            query_value(&query, "error").as_deref(),
            Some(expected),
            "{params:?}"
        );
        assert_eq!(query_value(&query, "state").as_deref(), Some("state-123"));
        assert_eq!(query_value(&query, "code"), None);
    }
    // Without a state there is none to return.
    let response = flow.get_authorize(&without(&flow.params(), "state")).await;
    let query = redirect_query(&response, CALLBACK);
    assert_eq!(
        query_value(&query, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_value(&query, "state"), None);
}

#[tokio::test]
async fn unknown_user_sees_the_form_again() {
    let flow = Flow::start().await;
    let response = flow.sign_in(&flow.params(), "mallory").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("location").is_none());
    let html = response.text().await.unwrap();
    assert!(
        html.contains(r#"id="error""#) && html.contains("mallory"),
        "{html}"
    );
    assert!(html.contains(r#"id="sign-in""#), "{html}");
}

#[tokio::test]
async fn the_form_escapes_what_it_echoes() {
    let flow = Flow::start().await;
    let params = with(&flow.params(), "state", "\"><script>alert(1)</script>");
    let html = flow.get_authorize(&params).await.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    // And the state survives the round trip through the hidden field intact.
    let code = flow.code(&params).await;
    assert!(!code.is_empty());
}

#[tokio::test]
async fn overrides_and_forged_keys_reach_the_id_token() {
    // The console's tests make the issuer misbehave through these; they must bite.
    let flow = Flow::start().await;
    flow.issuer
        .override_id_token_claims(json!({"nonce": "replayed", "email_verified": null}));
    let code = flow.code(&flow.params()).await;
    let (_, tokens) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    let claims = flow.verify(tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["nonce"], "replayed");
    assert!(claims.get("email_verified").is_none());

    flow.issuer.sign_id_tokens_with(TestKey::es256("ec-1"));
    let code = flow.code(&flow.params()).await;
    let (_, tokens) = flow.redeem(&code, CALLBACK, VERIFIER).await;
    let header = jsonwebtoken::decode_header(tokens["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.kid.as_deref(), Some("ec-1"));
    let jwks: JwkSet = flow
        .http
        .get(format!("{}/jwks", flow.issuer.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = DecodingKey::from_jwk(jwks.find("ec-1").unwrap()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[AUDIENCE]);
    assert!(
        jsonwebtoken::decode::<Value>(tokens["id_token"].as_str().unwrap(), &key, &validation)
            .is_err(),
        "a token signed with the forging key verified against the published one"
    );
}
