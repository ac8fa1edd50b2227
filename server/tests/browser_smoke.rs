//! The browser harness itself, before any console test leans on it: a real headless
//! Chromium runs a page's script, reports cookies as set, keeps sessions apart, sends
//! cross-origin requests the way an attacker's page would, and signs in on the test
//! issuer's login form.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/issuer.rs"]
mod issuer;

use browser::{Browser, StaticSite, WAIT};
use issuer::{AUDIENCE, TestIssuer, TestKey, encode};
use serde_json::json;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title></head>
<body>
<button id="press">Press</button>
<p id="out">waiting</p>
<input id="name">
<script>
  document.getElementById("press").addEventListener("click", () => {
    // Later than the click itself, so wait_for_text has to wait.
    setTimeout(() => {
      document.getElementById("out").textContent =
        "pressed by " + document.getElementById("name").value;
    }, 300);
  });
</script>
</body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_runs_its_script_and_is_screenshotted() {
    let site = StaticSite::http(PAGE).await;
    let browser = Browser::start().await;
    let session = browser.new_session().await;
    session.goto(&format!("{}/index.html", site.url())).await;
    assert_eq!(session.text("#out").await, "waiting");
    session.type_into("#name", "alice").await;
    session.click("#press").await;
    session
        .wait_for_text("#out", "pressed by alice", WAIT)
        .await;
    assert_eq!(session.eval("return document.title").await, json!("smoke"));
    assert_eq!(
        session
            .eval_with("return arguments[0] + 1", vec![json!(41)])
            .await,
        json!(42)
    );
    let shot = session.screenshot("browser-smoke").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        shot.display()
    );
    assert!(shot.ends_with("console-screenshots/browser-smoke.png"));
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_have_their_own_cookies_and_see_their_attributes() {
    // Cookie attributes are asserted on the console's session cookie through this; the
    // harness must report them as the browser stored them, HttpOnly ones included.
    let site = StaticSite::https_with_headers(
        "<!doctype html><title>cookies</title>",
        &[(
            "set-cookie",
            "__Host-sid=s1; Path=/; Secure; HttpOnly; SameSite=Strict",
        )],
    )
    .await;
    let browser = Browser::start().await;
    let alice = browser.new_session().await;
    let bob = browser.new_session().await;
    alice.goto(&site.url()).await;
    bob.goto(&site.url()).await;
    alice
        .eval(r#"document.cookie = "who=alice; Secure; SameSite=Strict; Path=/""#)
        .await;
    let cookie = alice.cookie("who").await.expect("alice's cookie is gone");
    assert_eq!(cookie.value, "alice");
    assert!(cookie.secure);
    assert!(!cookie.http_only);
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    assert_eq!(cookie.path.as_deref(), Some("/"));
    assert!(bob.cookie("who").await.is_none(), "bob sees alice's cookie");

    let server_set = alice.cookie("__Host-sid").await.expect("no __Host-sid");
    assert!(server_set.http_only && server_set.secure);
    assert_eq!(server_set.same_site.as_deref(), Some("Strict"));
    assert_eq!(
        server_set.domain.as_deref().unwrap_or("127.0.0.1"),
        "127.0.0.1"
    );
    assert_eq!(server_set.expires, None);
    // HttpOnly: the page's own script cannot read it.
    let visible = alice.eval("return document.cookie").await;
    assert!(
        !visible.as_str().unwrap().contains("__Host-sid"),
        "{visible}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_posts_with_the_browsers_cookies() {
    // Same site, other origin: the case where only the target's Origin and CSRF checks
    // stand between an attacker's page and a SameSite=Strict session.
    let target = StaticSite::https("<!doctype html><title>target</title>").await;
    let attacker = StaticSite::https("<!doctype html><title>attacker</title>").await;
    let browser = Browser::start().await;
    let session = browser.new_session().await;
    session.goto(&target.url()).await;
    session
        .eval(r#"document.cookie = "session=s1; Secure; SameSite=Strict; Path=/""#)
        .await;
    session.goto(&attacker.url()).await;
    let url = format!("{}/api/requests/r1/decision", target.url());
    let seen = session.post_from_page(&url, r#"{"verdict":"allow"}"#).await;
    assert_eq!(seen["type"], "opaque", "{seen}");

    let requests = target.requests();
    let post = requests
        .iter()
        .find(|r| r.method == "POST")
        .expect("the POST never reached the target");
    assert_eq!(post.target, "/api/requests/r1/decision");
    assert_eq!(post.header("origin"), Some(attacker.url().as_str()));
    assert_eq!(post.header("cookie"), Some("session=s1"));
    assert_eq!(post.header("content-type"), Some("text/plain"));
    assert_eq!(post.header("x-belay-csrf"), None);
    assert_eq!(post.body, r#"{"verdict":"allow"}"#);

    // A plain-http page on the same host is another site (schemeful same-site): the
    // browser leaves the SameSite=Strict cookie home, so a cross-origin test of the
    // console that used one would pass without the console checking anything.
    let other_site = StaticSite::http("<!doctype html><title>other site</title>").await;
    session.goto(&other_site.url()).await;
    let seen = session
        .post_from_page(&format!("{}/cross-site", target.url()), "{}")
        .await;
    assert_eq!(seen["type"], "opaque", "{seen}");
    let post = target
        .requests()
        .into_iter()
        .find(|r| r.target == "/cross-site")
        .expect("the cross-site POST never reached the target");
    assert_eq!(post.header("origin"), Some(other_site.url().as_str()));
    assert_eq!(post.header("cookie"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_on_the_issuers_form_lands_on_the_redirect_uri_with_code_and_state() {
    let callback_site = StaticSite::http("<!doctype html><title>callback</title>").await;
    let callback = format!("{}/auth/callback", callback_site.url());
    let issuer = TestIssuer::start(TestKey::es256("ec-1")).await;
    issuer.allow_redirect(&callback);
    issuer.add_user(
        "alice",
        json!({"email": "alice@example.com", "email_verified": true, "groups": ["sre"]}),
    );
    let params = [
        ("response_type", "code"),
        ("client_id", AUDIENCE),
        ("redirect_uri", &callback),
        ("scope", "openid email"),
        ("state", "st-789"),
        ("nonce", "n-1"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
        ("code_challenge_method", "S256"),
    ];
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let browser = Browser::start().await;
    let session = browser.new_session().await;
    session
        .goto(&format!(
            "{}?{}",
            issuer.authorization_endpoint(),
            query.join("&")
        ))
        .await;

    session.type_into("#username", "mallory").await;
    session.click("#sign-in").await;
    session.wait_for_text("#error", "mallory", WAIT).await;
    assert!(callback_site.requests().is_empty());

    session.type_into("#username", "alice").await;
    session.click("#sign-in").await;
    let landed = session.wait_for_url(&callback, WAIT).await;
    let (_, query) = landed.split_once('?').expect("no query on the callback");
    let pairs: Vec<(&str, &str)> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    assert!(
        pairs.iter().any(|(k, v)| *k == "code" && !v.is_empty()),
        "{landed}"
    );
    assert!(pairs.contains(&("state", "st-789")), "{landed}");
    let callbacks: Vec<_> = callback_site
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/auth/callback"))
        .collect();
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(callbacks[0].method, "GET");
    assert_eq!(issuer.codes_redeemed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "shows \"never\"")]
async fn a_wait_that_times_out_fails_the_test() {
    let site = StaticSite::http(PAGE).await;
    let browser = Browser::start().await;
    let session = browser.new_session().await;
    session.goto(&site.url()).await;
    session
        .wait_for_text("#out", "never", std::time::Duration::from_millis(500))
        .await;
}
