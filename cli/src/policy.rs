//! `belay --server URL policy push | show`: the fleet policy belay-server sends to the
//! agents run with `--policy-from-server`.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use belay_proto::v1;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::Output;
use crate::render::{self, esc};
use crate::server_client::{Client, status};
use crate::server_request::{ago, unix_ms};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Make FILE the fleet policy (needs the admin role). FILE is first checked here
    /// with belay-agent's own parser: a file with errors is refused (FILE:LINE:COL:
    /// problem) and nothing is sent. Agents that take the server's policy apply it, or
    /// keep their previous one and report why (`belay policy show`).
    Push {
        file: PathBuf,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// The fleet policy (version, SHA-256, who pushed it and when) and what each agent
    /// connected to this server made of it.
    Show {
        /// Print the policy document itself instead.
        #[arg(long)]
        text: bool,
    },
}

/// A command ready for the server: a push's file already read and checked.
#[derive(Debug)]
pub enum Prepared {
    Push { text: Vec<u8>, reason: String },
    Show { text: bool },
}

/// Reads and checks a pushed file before anything is sent; errors name the file, line
/// and column, as belay-agent's do.
pub fn prepare(command: &PolicyCommand) -> anyhow::Result<Prepared> {
    Ok(match command {
        PolicyCommand::Push { file, reason } => Prepared::Push {
            text: checked(file)?,
            reason: reason.clone().unwrap_or_default(),
        },
        PolicyCommand::Show { text } => Prepared::Show { text: *text },
    })
}

fn checked(file: &Path) -> anyhow::Result<Vec<u8>> {
    // The agent's loader: the same size limit, encoding and parser as on the hosts.
    belay_policy::Policy::load(file).map_err(|e| anyhow::anyhow!("{e}\nnothing was pushed"))?;
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

pub(crate) fn outcome_name(outcome: i32) -> &'static str {
    match v1::PolicyOutcome::try_from(outcome) {
        Ok(v1::PolicyOutcome::Applied) => "applied",
        Ok(v1::PolicyOutcome::Failed) => "failed",
        Ok(v1::PolicyOutcome::NotAccepted) => "not-accepted",
        _ => "unknown",
    }
}

fn policy_json(p: &v1::FleetPolicy) -> Value {
    json!({
        "version": p.version,
        "sha256": p.sha256,
        "size": p.size,
        "pushed_by": p.pushed_by,
        "pushed_unix_ms": unix_ms(p.pushed_at.as_ref()),
        "reason": p.reason,
    })
}

pub async fn run(client: &mut Client, output: Output, prepared: Prepared) -> anyhow::Result<()> {
    match prepared {
        Prepared::Push { text, reason } => {
            let sha256 = belay_proto::domain::sha256_hex(&text);
            let response = client
                .push_policy(v1::PushPolicyRequest { text, reason })
                .await
                .map_err(status)?
                .into_inner();
            let Some(pushed) = response.policy else {
                // The server needs more admins (--quorum): this push counted as one.
                if output == Output::Json {
                    let waiting = serde_json::json!({
                        "pushed": false,
                        "sha256": sha256,
                        "approvals": response.approvals,
                        "quorum": response.quorum,
                    });
                    println!("{}", serde_json::to_string_pretty(&waiting)?);
                } else {
                    println!(
                        "counted: {} of {} admins have pushed this policy (sha256 {sha256}); it is sent to the fleet once {} different admins push the same file within an hour",
                        response.approvals, response.quorum, response.quorum
                    );
                }
                return Ok(());
            };
            if output == Output::Json {
                println!("{}", render::json_pretty(&policy_json(&pushed))?);
            } else {
                println!(
                    "fleet policy version {} pushed (sha256 {}); agents apply it as they receive it",
                    pushed.version,
                    esc(&pushed.sha256)
                );
            }
        }
        Prepared::Show { text } => {
            let view = client
                .get_policy(v1::GetPolicyRequest { include_text: text })
                .await
                .map_err(status)?
                .into_inner();
            if text {
                let policy = view.policy.context("no fleet policy has been pushed")?;
                // The document as lines: a pushed file's escape sequences stay text.
                println!("{}", render::lines(&String::from_utf8_lossy(&policy.text)));
                return Ok(());
            }
            show(&view, output)?;
        }
    }
    Ok(())
}

fn show(view: &v1::GetPolicyResponse, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        let agents: Vec<Value> = view
            .agents
            .iter()
            .map(|a| match &a.status {
                Some(s) => json!({
                    "host": a.host,
                    "version": s.version,
                    "outcome": outcome_name(s.outcome),
                    "message": s.message,
                    "reported_unix_ms": unix_ms(s.reported_at.as_ref()),
                }),
                None => json!({"host": a.host, "outcome": null}),
            })
            .collect();
        let policy = view.policy.as_ref().map_or(Value::Null, policy_json);
        println!(
            "{}",
            render::json_pretty(&json!({"policy": policy, "agents": agents}))?
        );
        return Ok(());
    }
    match &view.policy {
        None => println!("no fleet policy has been pushed"),
        Some(p) => {
            println!("version    {}", p.version);
            println!("sha256     {}", esc(&p.sha256));
            println!("size       {} bytes", p.size);
            println!(
                "pushed     by {}, {} ago",
                esc(&p.pushed_by),
                ago(unix_ms(p.pushed_at.as_ref()))
            );
            if !p.reason.is_empty() {
                println!("reason     {}", esc(&p.reason));
            }
        }
    }
    if view.agents.is_empty() {
        println!("no agents connected");
        return Ok(());
    }
    println!();
    println!("{:<24} {:<8} {:<13} MESSAGE", "HOST", "VERSION", "STATUS");
    for a in &view.agents {
        match &a.status {
            Some(s) => {
                // One line per agent: the first line of a long error.
                let message = s.message.lines().next().unwrap_or("");
                println!(
                    "{:<24} {:<8} {:<13} {}",
                    esc(&a.host),
                    s.version,
                    outcome_name(s.outcome),
                    esc(message)
                );
            }
            None => println!("{:<24} {:<8} {:<13}", esc(&a.host), "-", "no-answer"),
        }
    }
    Ok(())
}
