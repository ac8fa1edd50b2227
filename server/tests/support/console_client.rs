//! A reviewer's browser as far as the console can tell, over plain HTTP: the OIDC sign-in
//! step by step, then the API with the session cookie, the CSRF token and the Origin the
//! console's page sends. Depends on reqwest and serde_json only, so the VM tests include
//! it too (`#[path]`, as `console_client`).
#![allow(dead_code)]

use serde_json::{Value, json};

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
