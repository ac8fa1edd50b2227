//! `belay --server URL ...`: the same review commands against belay-server's reviewer
//! service, for hosts whose agents send their requests there.
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use belay_proto::v1::{self, reviewer_service_client::ReviewerServiceClient};
use serde_json::{Value, json};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::Output;
use crate::render::{self, esc};

fn verdict_name(v: i32) -> &'static str {
    match v1::Verdict::try_from(v) {
        Ok(v1::Verdict::Allow) => "allow",
        Ok(v1::Verdict::Deny) => "deny",
        Ok(v1::Verdict::Kill) => "kill",
        _ => "unspecified",
    }
}

pub(crate) fn state_name(s: i32) -> &'static str {
    match v1::RequestState::try_from(s) {
        Ok(v1::RequestState::Pending) => "pending",
        Ok(v1::RequestState::Approved) => "approved",
        Ok(v1::RequestState::Denied) => "denied",
        Ok(v1::RequestState::Expired) => "expired",
        Ok(v1::RequestState::Cancelled) => "cancelled",
        _ => "unspecified",
    }
}

pub(crate) fn unix_ms(t: Option<&prost_types::Timestamp>) -> u64 {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The action as JSON (the real values) and as one line for people (escaped).
pub(crate) fn action(a: Option<&v1::Action>) -> (Value, String) {
    use v1::action::Kind;
    match a.and_then(|a| a.kind.as_ref()) {
        Some(Kind::Exec(e)) => (
            json!({"kind": "exec", "path": e.path, "argv": e.argv, "env": e.env, "cwd": e.cwd}),
            format!("exec {} {}", esc(&e.path), render::argv(&e.argv)),
        ),
        Some(Kind::Connect(c)) => {
            let proto = match v1::Protocol::try_from(c.protocol) {
                Ok(v1::Protocol::Udp) => "udp",
                _ => "tcp",
            };
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

pub(crate) fn to_json(r: &v1::Request) -> Value {
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
        "context": crate::review::context_json(r.context.as_ref()),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn print_one(r: &v1::Request) {
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
    crate::review::print_context(r.context.as_ref());
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

/// The reviewer commands `run` understands in server mode.
pub enum Call<'a> {
    Watch,
    Policy(crate::policy::Prepared),
    Agents,
    AuditLog {
        after: u64,
        limit: Option<u64>,
    },
    Pending,
    Show(&'a str),
    Decide {
        id: &'a str,
        verdict: v1::Verdict,
        reason: &'a str,
        reviewer: &'a str,
        /// `None`: this request only.
        scope: Option<v1::Scope>,
    },
}

/// The channel settings for `url`: an https:// server is trusted through `ca` (its CA
/// certificate, PEM) and nothing else.
fn endpoint(url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad server URL {url:?}"))?
        .connect_timeout(Duration::from_secs(10));
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let ca = ca.with_context(|| {
        format!("{url} uses TLS: name the server's CA with --server-ca FILE (BELAY_SERVER_CA)")
    })?;
    let pem =
        std::fs::read(ca).with_context(|| format!("cannot read the server CA {}", ca.display()))?;
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .context("cannot set up TLS")
}

/// tonic's transport errors say "transport error"; the why is in their sources.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

pub fn run(url: &str, ca: Option<&Path>, output: Output, call: Call<'_>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let channel = endpoint(url, ca)?.connect().await.map_err(|err| {
            anyhow::anyhow!("cannot reach belay-server at {url}: {}", with_sources(&err))
        })?;
        let bearer = crate::credentials::Bearer::new(crate::credentials::bearer().await?)?;
        let signed_in = bearer.is_some();
        let mut client = ReviewerServiceClient::with_interceptor(channel, bearer);
        let status = |s: tonic::Status| anyhow::anyhow!("belay-server: {}", s.message());
        match call {
            Call::Watch => return crate::review::watch(&mut client, output).await,
            Call::Agents => return crate::review::agents(&mut client, output).await,
            Call::Policy(prepared) => return crate::policy::run(&mut client, output, prepared).await,
            Call::AuditLog { after, limit } => {
                return crate::review::audit_log(&mut client, output, after, limit).await;
            }
            Call::Pending => {
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
            }
            Call::Show(id) => {
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
            }
            Call::Decide {
                id,
                verdict,
                reason,
                reviewer,
                scope,
            } => {
                if reviewer.is_empty() && !signed_in {
                    bail!("a decision needs a reviewer: `belay login`, or --reviewer for a server run with --insecure");
                }
                let scoped = scope.is_some();
                let answer = client
                    .decide(v1::DecideRequest {
                        request_id: id.to_owned(),
                        verdict: verdict as i32,
                        reason: reason.to_owned(),
                        reviewer: reviewer.to_owned(),
                        scope,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                let r = answer
                    .request
                    .context("belay-server sent no request")?;
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
                    let grant = if scoped { " (and granted for the stated time)" } else { "" };
                    println!(
                        "request {}: {}{grant}",
                        esc(&r.id),
                        verdict_name(verdict as i32)
                    );
                }
            }
        }
        Ok(())
    })
}
