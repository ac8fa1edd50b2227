//! A [`RequestCard`] as an Adaptive Card 1.5 with Universal Actions (`Action.Execute`),
//! the only kind Teams lets a bot update for everyone and refresh per viewer.
//!
//! Everything the agent or the host sent (argv, paths, context, the declared intent) is
//! untrusted: it goes into `TextRun`s of `RichTextBlock`s, which Adaptive Cards never
//! read as Markdown (a `TextBlock` would turn `[approve](https://evil)` into a link), and
//! through [`belay_proto::display::escape`] first, so control and bidi characters show
//! as escapes instead of reordering what a reviewer reads. Long values are cut: Teams
//! refuses cards over about 28 KB.

use std::time::SystemTime;

use belay_proto::display::escape;
use belay_proto::domain::{Action, Outcome, Request, Verdict};
use serde_json::{Value, json};

use crate::chat::card::RequestCard;
use crate::chat::decide::{Button, GRANT_MINUTES, MAX_TYPED_REASON};

/// The `contentType` of an Adaptive Card attachment and of an invoke response's card.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The verb of the card's `refresh` action: answered with the current card, never a
/// decision.
pub const REFRESH_VERB: &str = "belay_refresh";
/// Characters of one untrusted value shown; the rest is cut.
const MAX_VALUE_CHARS: usize = 600;
/// Ancestors of the paused process shown.
const MAX_ANCESTORS: usize = 4;

/// The card of `card` at this moment: buttons while open, the outcome once resolved.
/// `refresh_ids` are the Teams user ids whose clients refresh it by themselves (others
/// can still refresh it from the card's menu).
pub fn render(card: &RequestCard, refresh_ids: &[String]) -> Value {
    let request = &card.request;
    let mut body = vec![title(card)];
    body.extend(facts(request));
    body.extend(intent(request));
    body.push(progress_or_outcome(card));
    let mut adaptive = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    });
    if card.is_open() {
        if let Some(body) = adaptive["body"].as_array_mut() {
            body.push(reason_input());
        }
        adaptive["actions"] = Value::Array(actions(request));
        // Viewers of an older copy get the current one: the same card after someone
        // else's approval, or the outcome. Teams refreshes by itself only for the
        // `userIds` listed (at most 60; an empty list: nobody, as channels can be
        // large); everyone else can refresh from the card's menu.
        adaptive["refresh"] = json!({
            "action": {
                "type": "Action.Execute",
                "title": "Refresh",
                "verb": REFRESH_VERB,
                "data": { "request_id": request.id.as_str() },
            },
            "userIds": refresh_ids,
        });
    }
    adaptive
}

/// A card with `notice` (why nothing was decided) above the request as it now is, or
/// alone when the request cannot be shown.
pub fn with_notice(notice: &str, card: Option<(&RequestCard, &[String])>) -> Value {
    let banner = json!({
        "type": "Container",
        "style": "attention",
        "items": [plain_block(&[("", notice)], true)],
    });
    match card {
        Some((card, refresh_ids)) => {
            let mut rendered = render(card, refresh_ids);
            if let Some(body) = rendered["body"].as_array_mut() {
                body.insert(0, banner);
            }
            rendered
        }
        None => json!({
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.5",
            "body": [banner],
        }),
    }
}

fn title(card: &RequestCard) -> Value {
    let (text, color) = match card.request.resolution.as_ref().map(|r| &r.outcome) {
        None => ("belay: approval needed", "warning"),
        Some(Outcome::Decided {
            verdict: Verdict::Allow,
            ..
        }) => ("belay: approved", "good"),
        Some(Outcome::Decided {
            verdict: Verdict::Deny,
            ..
        }) => ("belay: denied", "attention"),
        Some(Outcome::Decided {
            verdict: Verdict::Kill,
            ..
        }) => ("belay: denied, process killed", "attention"),
        Some(Outcome::Expired { .. }) => ("belay: expired", "default"),
        Some(Outcome::Cancelled) => ("belay: withdrawn", "default"),
    };
    json!({
        "type": "TextBlock",
        "text": text,
        "size": "Medium",
        "weight": "Bolder",
        "color": color,
        "wrap": true,
    })
}

fn facts(request: &Request) -> Vec<Value> {
    let mut rows: Vec<(&str, String)> = vec![
        ("Request", request.id.to_string()),
        ("Host", request.host.to_string()),
        ("Agent", request.agent_name.to_string()),
        ("Owner", request.owner.to_string()),
    ];
    match &request.action {
        Action::Exec(exec) => {
            rows.push(("Action", format!("exec {}", exec.path())));
            if !exec.argv().is_empty() {
                let argv: Vec<String> = exec.argv().iter().map(|a| format!("{a:?}")).collect();
                rows.push(("Arguments", argv.join(" ")));
            }
            if let Some(cwd) = exec.cwd() {
                rows.push(("Directory", cwd.to_owned()));
            }
            if !exec.env().is_empty() {
                rows.push(("Environment (masked)", exec.env().join(" ")));
            }
        }
        Action::Connect(connect) => rows.push((
            "Action",
            format!(
                "connect {} {}:{}",
                connect.protocol, connect.address, connect.port
            ),
        )),
    }
    rows.push(("Rule", request.rule.to_string()));
    rows.push((
        "Deadline",
        format!(
            "{} (then {})",
            utc(request.deadline),
            request.default_verdict
        ),
    ));
    let context = &request.context;
    let optional = [
        ("User", context.user()),
        ("Process directory", context.cwd()),
        ("Container", context.container_id()),
        ("Pod", context.pod_uid()),
        ("Subject", context.subject()),
    ];
    rows.extend(
        optional
            .into_iter()
            .filter_map(|(label, value)| value.map(|v| (label, v.to_owned()))),
    );
    if !context.hostnames().is_empty() {
        rows.push(("Host names", context.hostnames().join(", ")));
    }
    if !context.ancestry().is_empty() {
        let chain: Vec<String> = context
            .ancestry()
            .iter()
            .take(MAX_ANCESTORS)
            .map(|a| format!("{} ({})", a.comm(), a.pid()))
            .collect();
        rows.push(("Started by", chain.join(" < ")));
    }
    rows.iter()
        .map(|(label, value)| plain_block(&[(label, value)], false))
        .collect()
}

/// The agent's declared intent, in a container of its own that says it is unverified:
/// an agent can claim any reason, and a reviewer must not read it as a fact.
fn intent(request: &Request) -> Option<Value> {
    let intent = request.context.intent()?;
    let mut rows = vec![("Intent", intent.text())];
    let optional = [
        ("Model", intent.model()),
        ("Session", intent.session_id()),
        ("Tool call", intent.tool_call_id()),
        ("User request", intent.user_request_id()),
    ];
    rows.extend(
        optional
            .into_iter()
            .filter_map(|(label, value)| value.map(|v| (label, v))),
    );
    let mut items = vec![json!({
        "type": "TextBlock",
        "text": "Declared by the agent (unverified)",
        "weight": "Bolder",
        "isSubtle": true,
        "wrap": true,
    })];
    items.extend(rows.iter().map(|(l, v)| plain_block(&[(l, v)], false)));
    Some(json!({ "type": "Container", "style": "emphasis", "items": items }))
}

fn progress_or_outcome(card: &RequestCard) -> Value {
    let request = &card.request;
    let Some(resolution) = &request.resolution else {
        let text = if card.quorum > 1 {
            format!(
                "Approvals: {} of {}",
                card.approvals.min(card.quorum),
                card.quorum
            )
        } else {
            "Waiting for a reviewer".to_owned()
        };
        return plain_block(&[("", &text)], true);
    };
    let outcome = match &resolution.outcome {
        Outcome::Decided { verdict, reviewer } => {
            let how = match verdict {
                Verdict::Allow => "Approved",
                Verdict::Deny => "Denied",
                Verdict::Kill => "Killed",
            };
            format!("{how} by {reviewer} at {}", utc(resolution.resolved_at))
        }
        Outcome::Expired { verdict } => format!(
            "No decision before the deadline: {verdict} by default, at {}",
            utc(resolution.resolved_at)
        ),
        Outcome::Cancelled => "Withdrawn by the agent: nothing was applied".to_owned(),
    };
    let mut lines = vec![("", outcome)];
    if !resolution.reason.as_str().is_empty() {
        lines.push(("Reason", resolution.reason.to_string()));
    }
    json!({
        "type": "Container",
        "separator": true,
        "items": lines
            .iter()
            .map(|(label, text)| plain_block(&[(label, text)], true))
            .collect::<Vec<_>>(),
    })
}

/// The id of the reason input; Teams merges its value into the pressed action's data.
pub const REASON_INPUT: &str = "reason";

/// An optional reason typed in the card, kept with the decision.
fn reason_input() -> Value {
    json!({
        "type": "Input.Text",
        "id": REASON_INPUT,
        "label": "Reason (optional)",
        "placeholder": "Why approve or deny: shown here and in the audit log",
        "maxLength": MAX_TYPED_REASON,
        "isMultiline": false,
    })
}

fn actions(request: &Request) -> Vec<Value> {
    let button = |button: Button, title: String, style: &str| {
        json!({
            "type": "Action.Execute",
            "title": title,
            "verb": button.id(),
            "style": style,
            "data": { "request_id": request.id.as_str() },
        })
    };
    vec![
        button(Button::Approve, "Approve".into(), "positive"),
        button(
            Button::ApproveFor30m,
            format!("Approve for {GRANT_MINUTES}m"),
            "default",
        ),
        button(Button::Deny, "Deny".into(), "destructive"),
        button(Button::Kill, "Kill".into(), "destructive"),
    ]
}

/// One line of label + value as `TextRun`s: never Markdown, always escaped and cut.
fn plain_block(parts: &[(&str, &str)], bold: bool) -> Value {
    let mut inlines = Vec::new();
    for (label, value) in parts {
        if !label.is_empty() {
            inlines.push(json!({
                "type": "TextRun",
                "text": format!("{label}: "),
                "weight": "Bolder",
            }));
        }
        inlines.push(json!({
            "type": "TextRun",
            "text": shown(value),
            "weight": if bold { "Bolder" } else { "Default" },
        }));
    }
    json!({ "type": "RichTextBlock", "inlines": inlines })
}

/// `value` escaped for a person's screen and cut to [`MAX_VALUE_CHARS`].
pub fn shown(value: &str) -> String {
    let escaped = escape(value);
    if escaped.chars().count() <= MAX_VALUE_CHARS {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(MAX_VALUE_CHARS).collect();
    cut.push_str(" [cut]");
    cut
}

/// `time` as `2026-12-07 06:30:00 UTC`.
fn utc(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
#[path = "card_tests.rs"]
mod tests;
