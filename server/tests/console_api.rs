//! The reviewer console's HTTP surface without a browser: sign-in (PKCE, state, nonce,
//! cookies), the CSRF and origin checks, and that every decision obeys the same rules
//! as over gRPC. The browser tests (console_browser.rs) show the page doing the same.

#[path = "support/console.rs"]
mod console;
#[path = "support/console_client.rs"]
mod console_client;
#[path = "support/issuer.rs"]
mod issuer;
mod support;

use std::time::Duration;

use console::{CAROL_TOKEN, TestConsole, email, urlencode};
use serde_json::{Value, json};
use support::{PATIENCE, TestAgent, connect_request};

const HOUR: Duration = Duration::from_secs(3600);

/// Submits a connect request from alice's agent on web-1 and waits until the console
/// lists it.
async fn alice_asks(console: &TestConsole, id: &str) -> TestAgent {
    let agent = console.server.agent("web-1", &email("alice")).await;
    agent.submit(connect_request(id, 5432)).await;
    let viewer = console.sign_in("vera").await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let (_, pending) = viewer.get("/api/requests").await;
            if pending["requests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == id)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the request never reached the console");
    agent
}

async fn state_of(console: &TestConsole, id: &str) -> Value {
    let viewer = console.sign_in("vera").await;
    let (status, body) = viewer
        .get(&format!("/api/requests/{}", urlencode(id)))
        .await;
    assert_eq!(status, 200, "{body}");
    body["request"]["state"].clone()
}

#[tokio::test]
async fn sign_in_uses_pkce_and_a_nonce_and_sets_a_host_only_strict_http_only_cookie() {
    let console = TestConsole::start(1, HOUR).await;
    let bob = console.sign_in("bob").await;
    let asked = console
        .issuer
        .last_authorization()
        .expect("an authorization request");
    assert_eq!(asked.code_challenge_method, "S256");
    assert!(asked.code_challenge.len() >= 43, "{asked:?}");
    assert!(asked.nonce.len() >= 32, "{asked:?}");
    assert!(asked.state.len() >= 32, "{asked:?}");
    let header = bob.set_cookie_header.to_ascii_lowercase();
    for attribute in ["path=/", "secure", "httponly", "samesite=strict"] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }
    assert!(!header.contains("domain="), "{header}");
    let (status, session) = bob.get("/api/session").await;
    assert_eq!(status, 200);
    assert_eq!(session["identity"], "bob@example.com");
    assert_eq!(session["role"], "reviewer");
}

#[tokio::test]
async fn a_sign_in_cannot_be_finished_twice_nor_in_another_browser() {
    let console = TestConsole::start(1, HOUR).await;
    let http = console.http();
    let login = http
        .get(format!("{}/login", console.origin))
        .send()
        .await
        .unwrap();
    let (login_cookie, _) = console::set_cookie(&login, "__Host-belay-login").unwrap();
    let authorize = login.headers()["location"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&authorize).unwrap();
    let mut form: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("username".into(), "mallory".into()));
    let mut base = url.clone();
    base.set_query(None);
    let back = http.post(base).form(&form).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();

    // The attacker's finished sign-in, planted in a victim's browser (no login cookie).
    let planted = http.get(&callback).send().await.unwrap();
    assert_eq!(planted.status(), 400);
    assert!(console::set_cookie(&planted, "__Host-belay-session").is_none());
    // The state is spent even so: the real browser cannot finish it either.
    let again = http
        .get(&callback)
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert!(console::set_cookie(&again, "__Host-belay-session").is_none());
}

#[tokio::test]
async fn changes_from_another_origin_or_without_the_csrf_token_are_refused_and_change_nothing() {
    let console = TestConsole::start(1, HOUR).await;
    let _agent = alice_asks(&console, "web-1:csrf").await;
    let bob = console.sign_in("bob").await;
    let path = format!("/api/requests/{}/decision", urlencode("web-1:csrf"));
    let body = json!({"verdict": "allow", "reason": "forged", "scope": "once"});
    let csrf = bob.csrf.clone();
    let cases: [(&str, Option<&str>, Option<&str>); 4] = [
        ("another origin", Some("https://evil.example"), Some(&csrf)),
        ("no origin", None, Some(&csrf)),
        ("no CSRF token", Some(&bob.origin), None),
        ("a wrong CSRF token", Some(&bob.origin), Some("AAAA")),
    ];
    for (what, origin, token) in cases {
        let (status, answer) = bob.post_with(&path, &body, origin, token).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert!(answer["error"].as_str().is_some(), "{what}: {answer}");
    }
    // A form post (what a cross-site <form> can send) is not JSON.
    let form = bob
        .http
        .post(format!("{}{path}", bob.origin))
        .header("cookie", &bob.cookie)
        .header("origin", &bob.origin)
        .header("x-belay-csrf", &bob.csrf)
        .form(&[("verdict", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    assert_eq!(state_of(&console, "web-1:csrf").await, "pending");
}

#[tokio::test]
async fn the_owner_cannot_approve_from_the_console_and_a_viewer_cannot_decide() {
    let console = TestConsole::start(1, HOUR).await;
    let _agent = alice_asks(&console, "web-1:own").await;
    let alice = console.sign_in("alice").await;
    let (status, page) = alice
        .get(&format!("/api/requests/{}", urlencode("web-1:own")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["you_are_owner"], true);
    let (status, answer) = alice.decide("web-1:own", "allow", "mine").await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("own"),
        "{answer}"
    );
    let vera = console.sign_in("vera").await;
    let (status, answer) = vera.decide("web-1:own", "deny", "looks bad").await;
    assert_eq!(status, 403, "{answer}");
    let mallory = console.sign_in("mallory").await;
    let (status, _) = mallory.get("/api/requests").await;
    assert_eq!(status, 403, "no role: no reads");
    assert_eq!(state_of(&console, "web-1:own").await, "pending");
}

#[tokio::test]
async fn an_approval_from_the_console_reaches_the_agent_with_the_signed_in_identity() {
    let console = TestConsole::start(1, HOUR).await;
    let mut agent = alice_asks(&console, "web-1:ok").await;
    let bob = console.sign_in("bob").await;
    let (status, answer) = bob.decide("web-1:ok", "allow", "db migration").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["request"]["state"], "approved");
    assert_eq!(
        answer["request"]["resolution"]["reviewer"],
        "bob@example.com"
    );
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.request_id, "web-1:ok");
    assert_eq!(decision.verdict, belay_proto::v1::Verdict::Allow as i32);
    // Decided once: a second decision conflicts.
    let carol = console.sign_in("carol").await;
    let (status, _) = carol.decide("web-1:ok", "deny", "too late").await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_quorum_of_two_needs_two_different_reviewers() {
    let console = TestConsole::start(2, HOUR).await;
    let mut agent = alice_asks(&console, "web-1:q").await;
    let bob = console.sign_in("bob").await;
    let (status, first) = bob.decide("web-1:q", "allow", "ok by me").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["approvals"].as_u64(), first["quorum"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(first["request"]["state"], "pending");
    let (status, again) = bob.decide("web-1:q", "allow", "really").await;
    assert_eq!(status, 409, "{again}");
    let (_, page) = bob
        .get(&format!("/api/requests/{}", urlencode("web-1:q")))
        .await;
    assert_eq!(page["votes"][0]["reviewer"], "bob@example.com");
    let carol = console.sign_in("carol").await;
    let (status, second) = carol.decide("web-1:q", "allow", "agreed").await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["request"]["state"], "approved");
    assert_eq!(agent.skip_to_decision().await.request_id, "web-1:q");
}

#[tokio::test]
async fn a_session_ends_at_its_expiry_and_at_logout() {
    let console = TestConsole::start(1, Duration::from_secs(2)).await;
    let bob = console.sign_in("bob").await;
    assert_eq!(bob.get("/api/session").await.0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, answer) = bob.get("/api/session").await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["login"], "/login");

    let console = TestConsole::start(1, HOUR).await;
    let carol = console.sign_in("carol").await;
    let (status, _) = carol
        .post_with(
            "/logout",
            &json!({}),
            Some(&carol.origin.clone()),
            Some(&carol.csrf.clone()),
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(carol.get("/api/session").await.0, 401);
}

#[tokio::test]
async fn an_api_token_decides_through_the_console_endpoint_as_its_owner() {
    let console = TestConsole::start(1, HOUR).await;
    let mut agent = alice_asks(&console, "web-1:bot").await;
    let http = console.http();
    let url = format!(
        "{}/api/requests/{}/decision",
        console.origin,
        urlencode("web-1:bot")
    );
    let answer: Value = http
        .post(&url)
        .bearer_auth(CAROL_TOKEN)
        .json(&json!({"verdict": "deny", "reason": "scripted"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["request"]["state"], "denied", "{answer}");
    assert_eq!(
        answer["request"]["resolution"]["reviewer"],
        "carol@example.com"
    );
    assert!(
        answer["request"]["resolution"]["reason"]
            .as_str()
            .unwrap()
            .contains("[API token ci-bot]"),
        "{answer}"
    );
    assert_eq!(agent.skip_to_decision().await.request_id, "web-1:bot");
    // A wrong token is refused.
    let refused = http
        .post(&url)
        .bearer_auth("belay_wrong")
        .json(&json!({"verdict": "deny", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn every_response_carries_a_strict_content_security_policy() {
    let console = TestConsole::start(1, HOUR).await;
    let http = console.http();
    for path in ["/", "/app.js", "/api/session", "/requests/x", "/nowhere"] {
        let response = http
            .get(format!("{}{path}", console.origin))
            .send()
            .await
            .unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let weight = belay_server::console::assets::page_weight();
    assert!(weight < 64 * 1024, "the page weighs {weight} bytes");
}

#[tokio::test]
async fn every_viewer_sees_the_agents_and_only_admins_the_fleet_policy_text() {
    let console = TestConsole::start(1, HOUR).await;
    let _agent = console.server.agent("web-1", &email("alice")).await;
    let admin_token = console.issuer.token("dave@example.com", &["belay-admins"]);
    let text = "version: 1\nsubjects:\n  - name: ci\n    owner: o\n    default: ask\n";
    console
        .server
        .reviewer()
        .await
        .push_policy(support::with_bearer(
            &admin_token,
            belay_proto::v1::PushPolicyRequest {
                text: text.as_bytes().to_vec(),
                reason: "rollout".into(),
            },
        ))
        .await
        .unwrap();
    let vera = console.sign_in("vera").await;
    let (status, seen) = vera.get("/api/agents").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["agents"][0]["host"], "web-1", "{seen}");
    assert!(
        seen["fleet_policy"].is_null(),
        "a viewer saw the policy: {seen}"
    );
    let dave = console.sign_in("dave").await;
    let (_, seen) = dave.get("/api/agents").await;
    assert_eq!(seen["fleet_policy"]["text"], text, "{seen}");
    assert_eq!(seen["fleet_policy"]["pushed_by"], "dave@example.com");
}

#[tokio::test]
async fn a_grant_made_in_the_console_is_listed_and_revoked_there_and_the_log_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let console = TestConsole::start_sqlite(dir.path()).await;
    let mut agent = alice_asks(&console, "web-1:g1").await;
    let bob = console.sign_in("bob").await;
    let (status, answer) = bob
        .post(
            &format!("/api/requests/{}/decision", urlencode("web-1:g1")),
            &json!({"verdict": "allow", "reason": "for the migration", "scope": "host", "duration_seconds": 1800}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    agent.skip_to_decision().await;
    let (_, grants) = bob.get("/api/grants").await;
    assert_eq!(grants["grants"][0]["id"], "web-1:g1", "{grants}");
    assert_eq!(grants["grants"][0]["scope"], "host");
    assert_eq!(grants["grants"][0]["action"], "connect tcp 192.0.2.10:5432");

    // A viewer may not revoke; a reviewer may, once.
    let vera = console.sign_in("vera").await;
    let revoke = format!("/api/grants/{}/revoke", urlencode("web-1:g1"));
    let (status, _) = vera.post(&revoke, &json!({"reason": "no"})).await;
    assert_eq!(status, 403);
    let (status, answer) = bob.post(&revoke, &json!({"reason": "done with it"})).await;
    assert_eq!(status, 200, "{answer}");
    let (status, again) = bob.post(&revoke, &json!({"reason": "twice"})).await;
    assert_eq!(status, 409, "{again}");
    let (_, grants) = bob.get("/api/grants").await;
    assert_eq!(grants["grants"], json!([]), "{grants}");

    // The same action asks a person again, and its page shows the earlier decision.
    agent
        .submit(support::connect_request("web-1:g2", 5432))
        .await;
    let (status, page) = tokio::time::timeout(PATIENCE, async {
        loop {
            let got = bob
                .get(&format!("/api/requests/{}", urlencode("web-1:g2")))
                .await;
            if got.0 == 200 {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        page["request"]["state"], "pending",
        "the revoked grant still settled it"
    );
    assert_eq!(page["history"][0]["id"], "web-1:g1", "{page}");

    let (_, log) = bob.get("/api/audit?after=0&limit=1000").await;
    let kinds: Vec<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"grant_revoked"), "{kinds:?}");
    let (_, verified) = bob.get("/api/audit/verify").await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        verified["records"].as_u64().unwrap() >= kinds.len() as u64,
        "{verified}"
    );
    let (status, _) = bob.get("/api/audit?limit=5000").await;
    assert_eq!(status, 400);
}
