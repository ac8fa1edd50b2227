//! `belay --server URL pending | show | approve | deny | kill | watch | agents | audit
//! log`: the reviewer's calls on belay-server.
use anyhow::{Context as _, bail};
use belay_proto::{domain::Verdict, v1};
use serde_json::{Value, json};

use crate::Output;
use crate::render::{self, esc};
use crate::server_client::{Client, status};
use crate::server_request::{action, ago, now_ms, print_one, state_name, to_json, unix_ms};

/// Records asked for per call; the server allows up to 1000.
const AUDIT_PAGE: u32 = 500;

/// `HH:MM:SSZ` of a time, UTC (no time zone database needed).
fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
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

/// The requests waiting for a decision, on every host that sends them here.
pub async fn pending(client: &mut Client, output: Output) -> anyhow::Result<()> {
    let list = client
        .list_pending(v1::ListPendingRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .requests;
    if output == Output::Json {
        let v: Vec<Value> = list.iter().map(to_json).collect();
        println!("{}", render::json_pretty(&json!({"requests": v}))?);
    } else if list.is_empty() {
        println!("no pending requests");
    } else {
        println!(
            "{:<28} {:<16} {:<16} {:<10} ACTION",
            "ID", "HOST", "AGENT", "DEADLINE"
        );
        for r in &list {
            let left = unix_ms(r.deadline.as_ref()).saturating_sub(now_ms()) / 1000;
            println!(
                "{:<28} {:<16} {:<16} {:<10} {}",
                esc(&r.id),
                esc(&r.host),
                esc(&r.agent_name),
                format!("{left}s"),
                action(r.action.as_ref()).1
            );
        }
    }
    Ok(())
}

pub async fn show(client: &mut Client, output: Output, id: &str) -> anyhow::Result<()> {
    let r = client
        .get_request(v1::GetRequestRequest {
            request_id: id.to_owned(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .request
        .context("belay-server sent no request")?;
    if output == Output::Json {
        println!("{}", render::json_pretty(&to_json(&r))?);
    } else {
        print_one(&r);
    }
    Ok(())
}

/// A reviewer's decision on one request.
pub struct Decision<'a> {
    pub id: &'a str,
    pub verdict: Verdict,
    pub reason: &'a str,
    pub reviewer: &'a str,
    /// `None`: this request only.
    pub scope: Option<v1::Scope>,
}

pub async fn decide(
    client: &mut Client,
    output: Output,
    signed_in: bool,
    decision: Decision<'_>,
) -> anyhow::Result<()> {
    let Decision {
        id,
        verdict,
        reason,
        reviewer,
        scope,
    } = decision;
    if reviewer.is_empty() && !signed_in {
        bail!(
            "a decision needs a reviewer: `belay login`, or --reviewer for a server run with --insecure"
        );
    }
    let scoped = scope.is_some();
    let answer = client
        .decide(v1::DecideRequest {
            request_id: id.to_owned(),
            verdict: v1::Verdict::from(verdict) as i32,
            reason: reason.to_owned(),
            reviewer: reviewer.to_owned(),
            scope,
        })
        .await
        .map_err(status)?
        .into_inner();
    let r = answer.request.context("belay-server sent no request")?;
    let waiting = r.state == v1::RequestState::Pending as i32;
    if output == Output::Json {
        let mut json = to_json(&r);
        json["approvals"] = answer.approvals.into();
        json["quorum"] = answer.quorum.into();
        println!("{}", render::json_pretty(&json)?);
    } else if waiting {
        println!(
            "request {}: approval counted, {} of {} needed",
            esc(&r.id),
            answer.approvals,
            answer.quorum
        );
    } else {
        let grant = if scoped {
            " (and granted for the stated time)"
        } else {
            ""
        };
        println!("request {}: {}{grant}", esc(&r.id), verdict.as_str());
    }
    Ok(())
}
