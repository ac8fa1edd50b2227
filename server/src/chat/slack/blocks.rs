//! A request card as Slack Block Kit. Everything that comes from an agent (names, argv,
//! context, the declared intent) is untrusted: it goes into `plain_text` objects only
//! (Slack renders no mentions, links or formatting there), after
//! `belay_proto::display::escape` took out control and bidi characters, and cut to
//! Slack's limits. The few `mrkdwn` objects hold our own words, with `&`, `<`, `>`
//! escaped wherever a value is interpolated.

use std::borrow::Cow;
use std::time::SystemTime;

use belay_proto::display::escape;
use belay_proto::domain::{Action, Outcome, Request, Verdict};
use serde_json::{Value, json};

use crate::chat::card::RequestCard;
use crate::chat::decide::{Button, GRANT_MINUTES, MAX_TYPED_REASON};

/// Slack's limit on a text object (3000) and on a section field (2000), with room for
/// the cut marker.
const MAX_TEXT: usize = 1900;
const MAX_HEADER: usize = 150;

/// The label every declared intent carries: nothing checks what the agent says.
pub const INTENT_LABEL: &str = "Declared by the agent (unverified)";

/// The `text` and `blocks` of a `chat.postMessage` / `chat.update` body.
pub fn render(card: &RequestCard) -> Value {
    let request = &card.request;
    let mut blocks = vec![json!({
        "type": "header",
        "text": plain(&headline(card), MAX_HEADER),
    })];
    blocks.push(json!({
        "type": "section",
        "fields": [
            plain(&format!("Host: {}", e(request.host.as_str())), MAX_TEXT),
            plain(&format!("Agent: {} (pid {}, uid {})", e(request.agent_name.as_str()), request.pid, request.uid), MAX_TEXT),
            plain(&format!("Owner: {}", e(request.owner.as_str())), MAX_TEXT),
            plain(&format!("Rule: {}", e(request.rule.as_str())), MAX_TEXT),
        ],
    }));
    blocks.push(json!({"type": "section", "text": plain(&action(&request.action), MAX_TEXT)}));
    if let Some(context) = context(request) {
        blocks.push(json!({"type": "section", "text": plain(&context, MAX_TEXT)}));
    }
    if let Some(intent) = request.context.intent() {
        let mut text = format!("{INTENT_LABEL}:\n“{}”", e(intent.text()));
        let details = [
            ("model", intent.model()),
            ("session", intent.session_id()),
            ("tool call", intent.tool_call_id()),
            ("user request", intent.user_request_id()),
        ];
        for (name, value) in details {
            if let Some(value) = value {
                text.push_str(&format!("\n{name}: {}", e(value)));
            }
        }
        text.push_str(&format!("\ndeclared by pid {}", intent.declared_by_pid()));
        blocks.push(json!({"type": "section", "text": plain(&text, MAX_TEXT)}));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": status_line(card)}],
    }));
    if card.is_open() {
        blocks.push(reason_input());
        blocks.push(buttons(request));
    } else if let Some(resolution) = &request.resolution {
        blocks.push(json!({
            "type": "section",
            "text": plain(&format!("Reason: {}", e(resolution.reason.as_str())), MAX_TEXT),
        }));
    }
    json!({"text": fallback(card), "blocks": blocks})
}

fn headline(card: &RequestCard) -> String {
    let request = &card.request;
    let what = match &request.action {
        Action::Exec(_) => "run a program",
        Action::Connect(_) => "connect",
    };
    match &request.resolution {
        None => format!(
            "Approval needed: {} wants to {what}",
            e(request.host.as_str())
        ),
        Some(resolution) => format!(
            "{}: {} ({what})",
            outcome(&resolution.outcome),
            e(request.host.as_str())
        ),
    }
}

fn outcome(outcome: &Outcome) -> Cow<'static, str> {
    match outcome {
        Outcome::Decided {
            verdict: Verdict::Allow,
            reviewer,
        } => format!("Approved by {}", e(reviewer.as_str())).into(),
        Outcome::Decided {
            verdict: Verdict::Deny,
            reviewer,
        } => format!("Denied by {}", e(reviewer.as_str())).into(),
        Outcome::Decided {
            verdict: Verdict::Kill,
            reviewer,
        } => format!("Killed by {}", e(reviewer.as_str())).into(),
        Outcome::Expired { verdict } => format!("Expired ({verdict} by default)").into(),
        Outcome::Cancelled => "Withdrawn by the agent".into(),
    }
}

/// Notifications and clients without blocks show this; it is mrkdwn, hence escaped.
fn fallback(card: &RequestCard) -> String {
    mrkdwn_escape(&headline(card)).into_owned()
}

fn action(action: &Action) -> String {
    match action {
        Action::Exec(exec) => {
            let mut text = format!("Run: {}", e(exec.path()));
            if !exec.argv().is_empty() {
                text.push_str(&format!("\nargv: {}", argv(exec.argv())));
            }
            if let Some(cwd) = exec.cwd() {
                text.push_str(&format!("\nin: {}", e(cwd)));
            }
            if !exec.env().is_empty() {
                text.push_str(&format!("\nenv: {}", joined(exec.env(), " ")));
            }
            text
        }
        Action::Connect(connect) => {
            let address = match connect.address {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            format!("Connect: {address}:{} ({})", connect.port, connect.protocol)
        }
    }
}

fn context(request: &Request) -> Option<String> {
    let c = &request.context;
    let mut lines = Vec::new();
    let mut add = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            lines.push(format!("{name}: {}", e(value)));
        }
    };
    add("subject", c.subject());
    add("user", c.user());
    add("cwd", c.cwd());
    add("cgroup", c.cgroup());
    add("container", c.container_id());
    add("pod", c.pod_uid());
    if !c.hostnames().is_empty() {
        lines.push(format!("looked up as: {}", joined(c.hostnames(), ", ")));
    }
    if !c.ancestry().is_empty() {
        let chain: Vec<String> = c
            .ancestry()
            .iter()
            .map(|a| format!("{} ({})", e(a.comm()), a.pid()))
            .collect();
        lines.push(format!("started by: {}", chain.join(" < ")));
    }
    (!lines.is_empty()).then(|| format!("Context (masked on the host):\n{}", lines.join("\n")))
}

/// Our words and numbers only; the deadline in each reader's own time zone.
fn status_line(card: &RequestCard) -> String {
    let request = &card.request;
    let id = mrkdwn_escape(request.id.as_str());
    match &request.resolution {
        None if card.quorum > 1 => format!(
            "Request `{id}` · approvals: *{} of {}* · decide by {} · default: {}",
            card.approvals,
            card.quorum,
            slack_date(request.deadline),
            request.default_verdict
        ),
        None => format!(
            "Request `{id}` · decide by {} · default: {}",
            slack_date(request.deadline),
            request.default_verdict
        ),
        Some(resolution) => format!(
            "Request `{id}` · {} {}",
            resolution.outcome.state(),
            slack_date(resolution.resolved_at)
        ),
    }
}

fn slack_date(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let utc = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fallback = format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute()
    );
    format!("<!date^{secs}^{{date_short_pretty}} {{time_secs}}|{fallback}>")
}

/// The block and action ids of the reason input, read back from a press's `state`.
pub const REASON_BLOCK: &str = "belay_reason";
pub const REASON_INPUT: &str = "belay_reason_text";

/// An optional reason typed in the message itself: Slack sends what it holds with the
/// button press (`state.values`).
fn reason_input() -> Value {
    json!({
        "type": "input",
        "block_id": REASON_BLOCK,
        "optional": true,
        "label": {"type": "plain_text", "text": "Reason (optional)"},
        "hint": {"type": "plain_text", "text": "Kept with your decision: shown here and in the audit log."},
        "element": {
            "type": "plain_text_input",
            "action_id": REASON_INPUT,
            "max_length": MAX_TYPED_REASON,
            "placeholder": {"type": "plain_text", "text": "Why approve or deny"},
        },
    })
}

fn buttons(request: &Request) -> Value {
    let id = request.id.as_str();
    let button = |b: Button, label: &str| {
        json!({
            "type": "button",
            "action_id": b.id(),
            "text": {"type": "plain_text", "text": label},
            "value": id,
        })
    };
    let mut approve = button(Button::Approve, "Approve");
    approve["style"] = json!("primary");
    let mut kill = button(Button::Kill, "Kill");
    kill["style"] = json!("danger");
    kill["confirm"] = json!({
        "title": {"type": "plain_text", "text": "Kill the process?"},
        "text": plain(&format!("The process on {} is killed, not just refused.", e(request.host.as_str())), 300),
        "confirm": {"type": "plain_text", "text": "Kill"},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    });
    json!({
        "type": "actions",
        "block_id": "belay_decision",
        "elements": [
            approve,
            button(Button::Deny, "Deny"),
            kill,
            button(Button::ApproveFor30m, &format!("Approve for {GRANT_MINUTES}m")),
        ],
    })
}

/// A `plain_text` object cut to `max` characters; every untrusted value in `text` went
/// through [`e`] already (so a newline in an argv cannot forge a line of ours).
pub fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": cut(text, max), "emoji": false})
}

/// An untrusted value ready for a screen: control, bidi and invisible characters escaped.
fn e(value: &str) -> Cow<'_, str> {
    escape(value)
}

/// Arguments as a shell would need them, so that one argument with spaces does not read
/// as several.
fn argv(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            let arg = e(arg);
            if !arg.is_empty() && !arg.contains(|c: char| c.is_whitespace() || "'\"\\".contains(c))
            {
                arg.into_owned()
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn joined(values: &[String], separator: &str) -> String {
    values
        .iter()
        .map(|v| e(v))
        .collect::<Vec<_>>()
        .join(separator)
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// For text inside `mrkdwn`: Slack's three control characters escaped, so no `<!channel>`,
/// `<@U...>` or link can be formed.
pub fn mrkdwn_escape(text: &str) -> Cow<'_, str> {
    let escaped = escape(text);
    if !escaped.contains(['&', '<', '>']) {
        return escaped;
    }
    escaped
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .into()
}

#[cfg(test)]
mod tests {
    use belay_proto::domain::{Intent, IntentDetails, RequestContext};
    use belay_proto::v1;

    use super::*;
    use crate::chat::fixtures::{at, exec, request_with};

    fn card() -> RequestCard {
        let context = RequestContext::try_from(v1::RequestContext {
            subject: "deploy-<!channel>".into(),
            ..Default::default()
        })
        .unwrap();
        let intent = Intent::new(
            "rotate the <@U999|admin> keys & <https://evil.example|docs>".into(),
            IntentDetails {
                model: Some("gpt-x".into()),
                ..Default::default()
            },
            4242,
            at(1_800_000_000),
        )
        .unwrap();
        let action = exec(
            "/usr/bin/ssh",
            &[
                "ssh",
                "<!here>",
                "line\nApproved by mallory",
                "\u{202e}txt.exe",
            ],
        );
        RequestCard {
            request: request_with(
                "web-1",
                "alice@example.com",
                context.with_intent(Some(intent)),
                action,
            ),
            approvals: 1,
            quorum: 2,
        }
    }

    /// Every `mrkdwn` object in a rendered message.
    fn mrkdwn_texts(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("mrkdwn")) {
                    out.push(map["text"].as_str().unwrap().to_owned());
                }
                map.values().for_each(|v| mrkdwn_texts(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| mrkdwn_texts(v, out)),
            _ => {}
        }
    }

    #[test]
    fn untrusted_text_stays_plain_and_escaped() {
        let message = render(&card());
        let text = message.to_string();
        let mut mrkdwn = Vec::new();
        mrkdwn_texts(&message, &mut mrkdwn);
        mrkdwn.push(message["text"].as_str().unwrap().to_owned());
        for m in &mrkdwn {
            assert!(
                !m.contains("<!channel") && !m.contains("<!here") && !m.contains("<@U"),
                "{m}"
            );
            assert!(!m.contains("evil"), "agent text in mrkdwn: {m}");
        }
        // The argv's newline and bidi override are shown escaped, not obeyed.
        assert!(!text.contains("line\\nApproved by mallory"), "{text}");
        // One argument with spaces reads as one.
        assert!(text.contains(r"'line\\nApproved by mallory'"), "{text}");
        assert!(!text.contains('\u{202e}'));
        assert!(text.contains(INTENT_LABEL));
        assert!(text.contains("1 of 2"));
        assert!(text.contains("model: gpt-x"));
    }

    #[test]
    fn an_open_request_has_the_four_buttons_and_kill_asks_first() {
        let message = render(&card());
        let actions = message["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "actions")
            .unwrap();
        let ids: Vec<&str> = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["action_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "belay_approve",
                "belay_deny",
                "belay_kill",
                "belay_approve_30m"
            ]
        );
        assert_eq!(actions["elements"][0]["style"], "primary");
        assert_eq!(actions["elements"][2]["style"], "danger");
        assert!(actions["elements"][2]["confirm"].is_object());
        assert!(
            actions["elements"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["value"] == "web-1:1")
        );
    }
}
