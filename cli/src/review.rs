//! `belay --server URL watch | agents | audit log`: the reviewer calls beyond single
//! requests, and the request context as `show` prints it.
use std::time::{SystemTime, UNIX_EPOCH};

use belay_proto::v1::{self, reviewer_service_client::ReviewerServiceClient};
use serde_json::{Value, json};

use crate::Output;
use crate::render::{self, esc};
use crate::server::{action, state_name, to_json, unix_ms};

/// The client `server::run` connects; one name to change if its stack changes.
pub type Client = ReviewerServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        crate::credentials::Bearer,
    >,
>;

/// Records asked for per call; the server allows up to 1000.
const AUDIT_PAGE: u32 = 500;

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("belay-server: {}", s.message())
}

/// `HH:MM:SSZ` of a time, UTC (no time zone database needed).
fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long ago, roughly: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn ago(unix_ms: u64) -> String {
    let secs = now_ms().saturating_sub(unix_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// One line per request event: when it happened, its state, and what it is.
fn watch_line(r: &v1::Request) -> String {
    let at = r
        .resolution
        .as_ref()
        .map_or(unix_ms(r.created_at.as_ref()), |res| {
            unix_ms(res.resolved_at.as_ref())
        });
    let mut line = format!(
        "{} {:<9} {} {} {} {}",
        clock(at),
        state_name(r.state),
        esc(&r.id),
        esc(&r.host),
        esc(&r.agent_name),
        action(r.action.as_ref()).1
    );
    if let Some(res) = &r.resolution {
        if !res.reviewer.is_empty() {
            line.push_str(&format!(" by {}", esc(&res.reviewer)));
        }
        if !res.reason.is_empty() {
            line.push_str(&format!(" ({})", esc(&res.reason)));
        }
    }
    line
}

/// Prints requests as they come and change, until the server ends the stream.
pub async fn watch(client: &mut Client, output: Output) -> anyhow::Result<()> {
    use v1::watch_requests_response::Kind;
    let mut stream = client
        .watch_requests(v1::WatchRequestsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(status)? {
        let line = match (message.kind, output) {
            (Some(Kind::Request(r)), Output::Json) => {
                render::json_line(&json!({"kind": "request", "request": to_json(&r)}))?
            }
            (Some(Kind::Request(r)), Output::Table) => watch_line(&r),
            (Some(Kind::Synced(_)), Output::Json) => render::json_line(&json!({"kind": "synced"}))?,
            (Some(Kind::Synced(_)), Output::Table) => "-- pending above; live from here --".into(),
            (None, _) => continue,
        };
        println!("{line}");
    }
    Ok(())
}

pub async fn agents(client: &mut Client, output: Output) -> anyhow::Result<()> {
    let agents = client
        .list_agents(v1::ListAgentsRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .agents;
    if output == Output::Json {
        let list: Vec<Value> = agents
            .iter()
            .map(|a| {
                json!({
                    "host": a.host,
                    "owner": a.owner,
                    "version": a.version,
                    "connected_unix_ms": unix_ms(a.connected_at.as_ref()),
                    "pending": a.pending,
                    "policy": a.policy.as_ref().map(|p| json!({
                        "version": p.version,
                        "outcome": crate::policy::outcome_name(p.outcome),
                        "message": p.message,
                    })),
                })
            })
            .collect();
        println!("{}", render::json_pretty(&json!({"agents": list}))?);
    } else if agents.is_empty() {
        println!("no agents connected");
    } else {
        println!(
            "{:<24} {:<24} {:<12} {:<10} {:<18} PENDING",
            "HOST", "OWNER", "VERSION", "CONNECTED", "POLICY"
        );
        for a in &agents {
            let policy = a.policy.as_ref().map_or("-".to_owned(), |p| {
                format!("v{}:{}", p.version, crate::policy::outcome_name(p.outcome))
            });
            println!(
                "{:<24} {:<24} {:<12} {:<10} {:<18} {}",
                esc(&a.host),
                esc(&a.owner),
                esc(&a.version),
                format!("{} ago", ago(unix_ms(a.connected_at.as_ref()))),
                policy,
                a.pending
            );
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records after `after`, at most `limit` of them (all when `None`), a page at a time.
pub async fn audit_log(
    client: &mut Client,
    output: Output,
    after: u64,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let mut after_seq = after;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut records = Vec::new();
    while left > 0 {
        let page = client
            .query_audit(v1::QueryAuditRequest {
                after_seq,
                limit: u32::try_from(left).unwrap_or(AUDIT_PAGE).min(AUDIT_PAGE),
            })
            .await
            .map_err(status)?
            .into_inner();
        if page.records.is_empty() {
            break;
        }
        left = left.saturating_sub(page.records.len() as u64);
        after_seq = page.next_after_seq;
        records.extend(page.records);
    }
    if output == Output::Json {
        let list: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "seq": r.seq,
                    "at_unix_ms": unix_ms(r.at.as_ref()),
                    "kind": r.kind,
                    "request_id": r.request_id,
                    "body": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::String(r.body.clone())),
                    "prev_hash": hex(&r.prev_hash),
                    "hash": hex(&r.hash),
                })
            })
            .collect();
        let doc = json!({"records": list, "next_after_seq": after_seq});
        println!("{}", render::json_pretty(&doc)?);
    } else if records.is_empty() {
        println!("no audit records after {after}");
    } else {
        println!(
            "{:<6} {:<9} {:<10} {:<28} DETAILS",
            "SEQ", "TIME", "KIND", "REQUEST"
        );
        for r in &records {
            println!(
                "{:<6} {:<9} {:<10} {:<28} {}",
                r.seq,
                clock(unix_ms(r.at.as_ref())),
                esc(&r.kind),
                esc(&r.request_id),
                esc(&r.body)
            );
        }
    }
    Ok(())
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
}
