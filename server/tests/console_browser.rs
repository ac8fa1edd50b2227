//! The reviewer console in a real browser: Debian's Chromium, headless, driven over
//! WebDriver, against a real belay-server whose console signs reviewers in with a test
//! OIDC issuer, and simulated agents over gRPC. Screenshots of the queue and a request
//! page land in `target/console-screenshots/` (the README shows one).
//!
//! One browser at a time (a lock below): the "within a second" figure must not measure
//! two Chromiums fighting over two cores.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/console.rs"]
mod console;
#[path = "support/console_client.rs"]
mod console_client;
#[path = "support/issuer.rs"]
mod issuer;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use belay_proto::v1;
use browser::{Browser, Session, StaticSite, WAIT};
use console::{CAROL_TOKEN, TestConsole, email, urlencode};
use serde_json::{Value, json};
use support::{TestAgent, connect_request};

const HOUR: Duration = Duration::from_secs(3600);

static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Signs `username` in the way a person does: the console's sign-in button, the
/// issuer's form, and back to the queue.
async fn sign_in(page: &Session, console: &TestConsole, username: &str) {
    page.goto(&format!("{}/", console.origin)).await;
    page.click("#login").await;
    page.wait_for_url(&console.issuer.url(), WAIT).await;
    page.type_into("#username", username).await;
    page.click("#sign-in").await;
    page.wait_for_url(&console.origin, WAIT).await;
    page.wait_for_text("#identity", &email(username), WAIT)
        .await;
}

async fn open_request(page: &Session, console: &TestConsole, id: &str) {
    page.goto(&format!("{}/requests/{}", console.origin, urlencode(id)))
        .await;
    page.wait_for(".countdown", WAIT).await;
}

/// The state of request `id`, asked with the CI bot's API token (not the browser's).
async fn state_of(console: &TestConsole, id: &str) -> Value {
    let answer: Value = console
        .http()
        .get(format!("{}/api/requests/{}", console.origin, urlencode(id)))
        .bearer_auth(CAROL_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["request"]["state"].clone()
}

async fn alice_agent(console: &TestConsole) -> TestAgent {
    console.server.agent("web-1", &email("alice")).await
}

#[tokio::test]
async fn a_signed_in_reviewer_sees_a_new_request_within_a_second_without_reloading() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(1, HOUR).await;
    let browser = Browser::start().await;
    let page = browser.new_session().await;
    sign_in(&page, &console, "bob").await;
    let cookie = page
        .cookie("__Host-belay-session")
        .await
        .expect("the session cookie");
    assert!(cookie.http_only && cookie.secure, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");
    page.wait_for_text("#live", "connected", WAIT).await;
    let before = page
        .eval("return performance.getEntriesByType('navigation').length")
        .await;

    let agent = alice_agent(&console).await;
    let submitted = now_ms();
    agent.submit(connect_request("web-1:live", 5432)).await;
    let row = page
        .wait_for(r#"tr[data-request-id="web-1:live"]"#, WAIT)
        .await;
    let seen: u64 = row
        .attr("data-seen-at")
        .await
        .unwrap()
        .expect("data-seen-at")
        .parse()
        .unwrap();
    let after = page
        .eval("return performance.getEntriesByType('navigation').length")
        .await;
    assert_eq!(before, after, "the page reloaded");
    let latency = seen.saturating_sub(submitted);
    assert!(latency < 1000, "the request showed after {latency} ms");
    assert_eq!(page.eval("return document.title").await, "(1) belay");
    page.screenshot("queue").await;
}

#[tokio::test]
async fn approving_in_the_browser_reaches_the_agents_stream() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(1, HOUR).await;
    let mut agent = alice_agent(&console).await;
    let mut request = connect_request("web-1:approve", 5432);
    request.context = Some(v1::RequestContext {
        ancestry: vec![
            v1::Ancestor {
                pid: 4200,
                comm: "node".into(),
                exe: "/usr/bin/node".into(),
            },
            v1::Ancestor {
                pid: 1,
                comm: "systemd".into(),
                exe: "/usr/lib/systemd/systemd".into(),
            },
        ],
        user: "alice".into(),
        cgroup: "/system.slice/claude-agent.service".into(),
        cwd: "/srv/app".into(),
        subject: "claude-code".into(),
        hostnames: vec!["db.internal.example".into()],
        intent: Some(v1::DeclaredIntent {
            text: "apply the schema migration from ticket OPS-412, as the user asked".into(),
            model: "claude-sonnet".into(),
            tool_call_id: "toolu_01".into(),
            declared_by_pid: 4200,
            declared_at: Some(std::time::SystemTime::now().into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    agent.submit(request).await;
    let browser = Browser::start().await;
    let page = browser.new_session().await;
    sign_in(&page, &console, "bob").await;
    open_request(&page, &console, "web-1:approve").await;
    page.wait_for_text("main", "db.internal.example", WAIT)
        .await;
    // The agent's words are shown, and labelled as the agent's (the heading is set in
    // capitals by the style sheet; innerText reads it so).
    page.wait_for_text("#intent h2", "DECLARED BY THE AGENT — UNVERIFIED", WAIT)
        .await;
    page.wait_for_text("#intent", "schema migration from ticket OPS-412", WAIT)
        .await;
    page.wait_for_text("#intent", "toolu_01", WAIT).await;
    page.type_into("#reason", "the migration the ticket asks for")
        .await;
    page.screenshot("request").await;
    page.click("#approve").await;
    page.wait_for_text("#decision-result", "Approved", WAIT)
        .await;
    let decision = agent.skip_to_decision().await;
    assert_eq!(decision.request_id, "web-1:approve");
    assert_eq!(decision.verdict, v1::Verdict::Allow as i32);
    assert_eq!(state_of(&console, "web-1:approve").await, "approved");
}

#[tokio::test]
async fn the_owner_is_told_and_refused_when_approving_in_the_page() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(1, HOUR).await;
    let agent = alice_agent(&console).await;
    agent.submit(connect_request("web-1:mine", 22)).await;
    let browser = Browser::start().await;
    let page = browser.new_session().await;
    sign_in(&page, &console, "alice").await;
    open_request(&page, &console, "web-1:mine").await;
    page.wait_for_text("#owner-notice", "cannot approve", WAIT)
        .await;
    assert_eq!(
        page.eval("return document.getElementById('approve').disabled")
            .await,
        true
    );
    // The page only helps; the server decides. Enable the button as a user could.
    page.type_into("#reason", "it is mine anyway").await;
    page.eval("document.getElementById('approve').disabled = false")
        .await;
    page.click("#approve").await;
    page.wait_for_text("#error", "own", WAIT).await;
    assert_eq!(state_of(&console, "web-1:mine").await, "pending");
}

#[tokio::test]
async fn a_quorum_of_two_is_reached_from_two_browser_sessions() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(2, HOUR).await;
    let mut agent = alice_agent(&console).await;
    agent.submit(connect_request("web-1:two", 443)).await;
    let browser = Browser::start().await;
    let (bob, carol) = (browser.new_session().await, browser.new_session().await);
    sign_in(&bob, &console, "bob").await;
    sign_in(&carol, &console, "carol").await;
    open_request(&bob, &console, "web-1:two").await;
    bob.type_into("#reason", "fine by me").await;
    bob.click("#approve").await;
    bob.wait_for_text("#decision-result", "1 of 2", WAIT).await;
    assert_eq!(state_of(&console, "web-1:two").await, "pending");
    open_request(&carol, &console, "web-1:two").await;
    carol.wait_for_text("#quorum", "1 of 2", WAIT).await;
    carol.type_into("#reason", "agreed").await;
    carol.click("#approve").await;
    carol
        .wait_for_text("#decision-result", "Approved", WAIT)
        .await;
    assert_eq!(agent.skip_to_decision().await.request_id, "web-1:two");
    assert_eq!(state_of(&console, "web-1:two").await, "approved");
}

#[tokio::test]
async fn a_post_from_another_origin_changes_nothing() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(1, HOUR).await;
    let _agent = {
        let agent = alice_agent(&console).await;
        agent.submit(connect_request("web-1:csrf", 443)).await;
        agent
    };
    let browser = Browser::start().await;
    let page = browser.new_session().await;
    sign_in(&page, &console, "bob").await;
    // Same site (127.0.0.1, https), another origin: the Strict cookie goes along, so
    // only the console's origin and token checks stand in the way.
    let attacker = StaticSite::https("<!doctype html><title>cat pictures</title>").await;
    page.goto(&attacker.url()).await;
    let url = format!(
        "{}/api/requests/{}/decision",
        console.origin,
        urlencode("web-1:csrf")
    );
    let body = json!({"verdict": "allow", "reason": "forged", "scope": "once"}).to_string();
    page.post_from_page(&url, &body).await;
    page.goto(&attacker.url()).await;
    page.submit_form_from_page(&url, &[("verdict", "allow"), ("reason", "forged")])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&console, "web-1:csrf").await, "pending");
}

#[tokio::test]
async fn markup_and_terminal_escapes_from_agents_and_reviewers_are_shown_as_text() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(1, HOUR).await;
    let agent = alice_agent(&console).await;
    let payloads = [
        "<script>document.title='pwned'</script>",
        "<img src=x onerror=\"document.title='pwned'\">",
        "\u{1b}[2J\u{1b}[31mred",
        "\u{202e}evil",
    ];
    let mut argv = vec!["sh".to_owned(), "-c".to_owned()];
    argv.extend(payloads.iter().map(|p| (*p).to_owned()));
    agent
        .submit(v1::NewRequest {
            id: "web-1:xss".into(),
            agent_name: "<b>agent</b>".into(),
            pid: 7,
            uid: 1000,
            action: Some(v1::Action {
                kind: Some(v1::action::Kind::Exec(v1::Exec {
                    path: "/bin/sh".into(),
                    argv,
                    cwd: "/tmp".into(),
                    env: vec!["NOTE=<iframe src=javascript:alert(1)>".into()],
                })),
            }),
            deadline: Some((SystemTime::now() + Duration::from_secs(300)).into()),
            default_verdict: v1::Verdict::Deny.into(),
            rule: "shell".into(),
            context: Some(v1::RequestContext {
                user: "<svg onload=alert(1)>".into(),
                subject: "claude".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let browser = Browser::start().await;
    let page = browser.new_session().await;
    sign_in(&page, &console, "bob").await;
    page.wait_for(r#"tr[data-request-id="web-1:xss"]"#, WAIT)
        .await;
    open_request(&page, &console, "web-1:xss").await;
    page.wait_for_text("main", "<script>document.title='pwned'</script>", WAIT)
        .await;
    page.wait_for_text("main", "<img src=x onerror=", WAIT)
        .await;
    page.wait_for_text("main", "\\x1b[2J", WAIT).await;
    page.wait_for_text("main", "\\u202e", WAIT).await;
    page.wait_for_text("main", "NOTE=<iframe", WAIT).await;
    page.wait_for_text("main", "<svg onload=alert(1)>", WAIT)
        .await;
    // A reason with markup, shown back once decided.
    page.type_into(
        "#reason",
        "<img src=x onerror=\"document.title='pwned'\"> no",
    )
    .await;
    page.click("#deny").await;
    page.wait_for_text("#decision-result", "Denied", WAIT).await;
    page.wait_for_text(
        "main",
        "<img src=x onerror=\"document.title='pwned'\"> no",
        WAIT,
    )
    .await;
    page.screenshot("request-hostile-text").await;
    let injected = page
        .eval(
            "return document.querySelectorAll('main script, main img, main iframe, main svg, main b').length",
        )
        .await;
    assert_eq!(injected, 0, "markup from the request became elements");
    assert_ne!(page.eval("return document.title").await, "pwned");
}

#[tokio::test]
async fn an_expired_session_is_shown_and_decisions_stop() {
    let _one = ONE_BROWSER.lock().await;
    let console = TestConsole::start(1, Duration::from_secs(4)).await;
    let agent = alice_agent(&console).await;
    agent.submit(connect_request("web-1:late", 443)).await;
    let browser = Browser::start().await;
    let page = browser.new_session().await;
    sign_in(&page, &console, "bob").await;
    open_request(&page, &console, "web-1:late").await;
    page.wait_for_text(
        "#session-expired",
        "session has expired",
        Duration::from_secs(20),
    )
    .await;
    page.screenshot("session-expired").await;
    // Whatever the page still shows, the server no longer takes the cookie.
    page.type_into("#reason", "too late").await;
    page.eval("for (const b of document.querySelectorAll('button')) b.disabled = false")
        .await;
    page.click("#approve").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&console, "web-1:late").await, "pending");
}
