//! How `belay --server` shows a belay-server request: as JSON (the real values), in one
//! line, and in full for `show`; and the names and times those are made of.
use std::time::{SystemTime, UNIX_EPOCH};

use belay_proto::domain::{Protocol, RequestState, Verdict};
use belay_proto::v1;
use serde_json::{Value, json};

use crate::render::{self, esc};

/// The domain's name of a wire verdict; `unspecified` for anything it does not know.
pub fn verdict_name(v: i32) -> &'static str {
    Verdict::from_wire(v).map_or("unspecified", Verdict::as_str)
}

pub fn state_name(s: i32) -> &'static str {
    RequestState::from_wire(s).map_or("unspecified", RequestState::as_str)
}

/// A connection's protocol; a value the domain does not know shows as such, not as tcp.
pub fn protocol_name(p: i32) -> &'static str {
    Protocol::from_wire(p).map_or("unspecified", Protocol::as_str)
}

pub fn unix_ms(t: Option<&prost_types::Timestamp>) -> u64 {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long ago, roughly: `42s`, `5m`, `3h`, `2d`.
pub fn ago(unix_ms: u64) -> String {
    let secs = now_ms().saturating_sub(unix_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The action as JSON (the real values) and as one line for people (escaped).
pub fn action(a: Option<&v1::Action>) -> (Value, String) {
    use v1::action::Kind;
    match a.and_then(|a| a.kind.as_ref()) {
        Some(Kind::Exec(e)) => (
            json!({"kind": "exec", "path": e.path, "argv": e.argv, "env": e.env, "cwd": e.cwd}),
            format!("exec {} {}", esc(&e.path), render::argv(&e.argv)),
        ),
        Some(Kind::Connect(c)) => {
            let proto = protocol_name(c.protocol);
            let hp = if c.address.contains(':') {
                format!("[{}]:{}", esc(&c.address), c.port)
            } else {
                format!("{}:{}", esc(&c.address), c.port)
            };
            (
                json!({"kind": "connect", "address": c.address, "port": c.port, "protocol": proto}),
                format!("connect {proto} {hp}"),
            )
        }
        None => (json!(null), "?".into()),
    }
}

pub fn to_json(r: &v1::Request) -> Value {
    let (a, _) = action(r.action.as_ref());
    json!({
        "id": r.id,
        "host": r.host,
        "agent": r.agent_name,
        "owner": r.owner,
        "pid": r.pid,
        "uid": r.uid,
        "rule": r.rule,
        "state": state_name(r.state),
        "action": a,
        "created_unix_ms": unix_ms(r.created_at.as_ref()),
        "deadline_unix_ms": unix_ms(r.deadline.as_ref()),
        "default_verdict": verdict_name(r.default_verdict),
        "resolution": r.resolution.as_ref().map(|res| json!({
            "verdict": verdict_name(res.verdict),
            "reason": res.reason,
            "reviewer": res.reviewer,
        })),
        "context": context_json(r.context.as_ref()),
    })
}

/// `show`: every field on a line of its own.
pub fn print_one(r: &v1::Request) {
    let (_, what) = action(r.action.as_ref());
    println!("request   {}", esc(&r.id));
    println!("action    {what}");
    if let Some(v1::action::Kind::Exec(exec)) = r.action.as_ref().and_then(|a| a.kind.as_ref()) {
        // Masked on the host, like argv. An agent that read none sends none.
        let env = (!exec.env.is_empty()).then_some(exec.env.as_slice());
        for line in render::env_lines(env) {
            println!("{line}");
        }
    }
    println!(
        "agent     {} (owner {}) on {}",
        esc(&r.agent_name),
        esc(&r.owner),
        esc(&r.host)
    );
    println!("rule      {}", esc(&r.rule));
    println!("process   {} (uid {})", r.pid, r.uid);
    print_context(r.context.as_ref());
    println!("state     {}", state_name(r.state));
    let left = unix_ms(r.deadline.as_ref()).saturating_sub(now_ms()) / 1000;
    println!(
        "deadline  in {left}s, then {}",
        verdict_name(r.default_verdict)
    );
    if let Some(res) = &r.resolution {
        println!(
            "decided   {} by {} ({})",
            verdict_name(res.verdict),
            esc(if res.reviewer.is_empty() {
                "-"
            } else {
                &res.reviewer
            }),
            esc(&res.reason)
        );
    }
}

/// The context of a request for `--output json`.
pub fn context_json(c: Option<&v1::RequestContext>) -> Value {
    let Some(c) = c else { return Value::Null };
    let ancestry: Vec<Value> = c
        .ancestry
        .iter()
        .map(|a| json!({"pid": a.pid, "comm": a.comm, "exe": a.exe}))
        .collect();
    json!({
        "ancestry": ancestry,
        "user": c.user,
        "cgroup": c.cgroup,
        "container_id": c.container_id,
        "pod_uid": c.pod_uid,
        "cwd": c.cwd,
        "subject": c.subject,
        "hostnames": c.hostnames,
        "intent": c.intent.as_ref().map(intent_json),
    })
}

/// A declared intent for `--output json`; `verified` is always false, so that no
/// consumer can mistake the agent's words for a fact.
fn intent_json(i: &v1::DeclaredIntent) -> Value {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    json!({
        "text": i.text,
        "model": opt(&i.model),
        "session_id": opt(&i.session_id),
        "tool_call_id": opt(&i.tool_call_id),
        "user_request_id": opt(&i.user_request_id),
        "declared_by_pid": i.declared_by_pid,
        "declared_unix_ms": unix_ms(i.declared_at.as_ref()),
        "verified": false,
    })
}

/// The context lines of `show`, aligned with its other lines; unknown fields left out.
pub fn print_context(c: Option<&v1::RequestContext>) {
    let Some(c) = c else { return };
    let fields = [
        ("subject", &c.subject),
        ("user", &c.user),
        ("cwd", &c.cwd),
        ("cgroup", &c.cgroup),
        ("container", &c.container_id),
        ("pod", &c.pod_uid),
    ];
    for (name, value) in fields {
        if !value.is_empty() {
            println!("{name:<9} {}", esc(value));
        }
    }
    if !c.hostnames.is_empty() {
        println!("{:<9} {}", "names", render::list(&c.hostnames));
    }
    for (i, a) in c.ancestry.iter().enumerate() {
        let label = if i == 0 { "ancestry" } else { "" };
        let exe = esc(if a.exe.is_empty() { "?" } else { &a.exe });
        println!("{label:<9} {} {} ({exe})", a.pid, esc(&a.comm));
    }
    if let Some(intent) = &c.intent {
        println!(
            "{:<9} {} (declared by the agent, unverified)",
            "intent",
            esc(&intent.text)
        );
        let details = [
            ("model", &intent.model),
            ("session", &intent.session_id),
            ("tool call", &intent.tool_call_id),
            ("user request", &intent.user_request_id),
        ];
        for (label, value) in details {
            if !value.is_empty() {
                println!("{:<9} {label} {}", "", esc(value));
            }
        }
    }
}
