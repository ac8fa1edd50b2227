//! Human tables and JSON for every answer.
use belay_agent::api::{ActionView, ApiResponse, RequestView};

use crate::Output;

fn action(a: &ActionView) -> String {
    match a {
        ActionView::Exec {
            path, file, argv, ..
        } => {
            let what = match file {
                Some(file) if file != path => format!("{file} (as {path})"),
                _ => path.clone(),
            };
            match argv {
                Some(argv) => format!("exec {what} {argv:?}"),
                None => format!("exec {what}"),
            }
        }
        ActionView::Connect {
            address,
            port,
            protocol,
            hostnames,
        } => format!(
            "connect {protocol} {}{}",
            host_port(address, *port),
            names(hostnames)
        ),
        ActionView::Send {
            address,
            port,
            protocol,
            hostnames,
        } => format!(
            "send {protocol} {}{}",
            host_port(address, *port),
            names(hostnames)
        ),
        ActionView::ConnectUnix { path, protocol } => unix("connect", path, protocol),
        ActionView::SendUnix { path, protocol } => unix("send", path, protocol),
    }
}

fn unix(verb: &str, path: &str, protocol: &str) -> String {
    format!("{verb} {protocol} {path}")
}

fn names(hostnames: &[String]) -> String {
    if hostnames.is_empty() {
        String::new()
    } else {
        format!(" ({})", hostnames.join(", "))
    }
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn table(requests: &[RequestView]) {
    if requests.is_empty() {
        println!("no pending requests");
        return;
    }
    println!(
        "{:<6} {:<8} {:<6} {:<16} {:<16} {:<10} ACTION",
        "ID", "PID", "UID", "SUBJECT", "COMM", "DEADLINE"
    );
    let now = now_ms();
    for r in requests {
        let left = r.deadline_unix_ms.saturating_sub(now) / 1000;
        println!(
            "{:<6} {:<8} {:<6} {:<16} {:<16} {:<10} {}",
            r.id,
            r.tgid,
            r.uid,
            r.subject.as_deref().unwrap_or("-"),
            r.comm,
            format!("{left}s"),
            action(&r.action)
        );
    }
}

pub fn print(output: Output, response: &ApiResponse) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(response)?);
        return Ok(());
    }
    match response {
        ApiResponse::Requests { requests } => table(requests),
        ApiResponse::Request { request: r } => {
            println!("request   {}", r.id);
            println!("action    {}", action(&r.action));
            if let Some(subject) = &r.subject {
                let owner = r.owner.as_deref().unwrap_or("?");
                println!("agent     {subject} (owner {owner})");
            }
            println!(
                "rule      {}",
                r.rule.as_deref().unwrap_or("(the subject's default)")
            );
            let c = &r.context;
            if !c.host.is_empty() {
                println!("host      {}", c.host);
            }
            println!("process   {} (thread {}), comm {}", r.tgid, r.pid, r.comm);
            match &c.user {
                Some(user) => println!("user      {user} (uid {})", r.uid),
                None => println!("uid       {}", r.uid),
            }
            if let Some(cwd) = &r.cwd {
                println!("cwd       {cwd}");
            }
            for (i, a) in c.ancestry.iter().enumerate() {
                let label = if i == 0 { "ancestry" } else { "" };
                let exe = a.exe.as_deref().unwrap_or("?");
                println!("{label:<9} {} {} ({exe})", a.pid, a.comm);
            }
            if c.ancestry.is_empty()
                && let Some(ppid) = r.ppid
            {
                println!("parent    {ppid}");
            }
            if let Some(cg) = &c.cgroup {
                println!("cgroup    {cg}");
            }
            if let Some(id) = &c.container_id {
                println!("container {id}");
            }
            if let Some(pod) = &c.pod_uid {
                println!("pod       {pod}");
            }
            let left = r.deadline_unix_ms.saturating_sub(now_ms()) / 1000;
            println!("deadline  in {left}s, then {}", r.default_verdict);
        }
        ApiResponse::Decided { id, verdict } => println!("request {id}: {verdict}"),
        ApiResponse::Status { status } => {
            println!("belay-agent {}", status.version);
            let p = &status.policy;
            println!(
                "policy             {} ({} subjects: {})",
                p.source.as_deref().unwrap_or("built-in"),
                p.subjects.len(),
                p.subjects.join(", ")
            );
            println!(
                "policy reloads     {} ok, {} failed",
                p.reloads, p.failed_reloads
            );
            if let (Some(version), Some(sha256)) = (p.server_version, &p.server_sha256) {
                println!(
                    "fleet policy       version {version} from belay-server (sha256 {sha256})"
                );
            }
            if let Some(e) = &p.last_error {
                println!("policy error       {e} (previous policy in force)");
            }
            for w in &p.warnings {
                println!("policy warning     {w}");
            }
            if let Some(s) = &status.server {
                let state = if s.connected {
                    "connected"
                } else {
                    "not connected"
                };
                println!(
                    "belay-server       {} ({state}; {} awaiting a decision)",
                    s.url, s.awaiting
                );
                if let (false, Some(e)) = (s.connected, &s.last_error) {
                    println!("server error       {e}");
                }
            }
            println!("pending requests   {}", status.pending);
            println!("decided requests   {}", status.decided);
            println!("watched processes  {}", status.watched);
            println!("paused (kernel)    {}", status.kernel.paused);
            println!("verdicts applied   {}", status.kernel.verdicts_applied);
            println!("denied unpausable  {}", status.kernel.unpausable_denied);
            println!("fail mode applied  {}", status.kernel.fail_mode);
            println!("forks refused      {}", status.kernel.fork_refused);
            println!("kernel decisions   {}", status.kernel.policy_decided);
            println!("watch failures     {}", status.kernel.watch_failed);
            println!("dns answers lost   {}", status.kernel.dns_dropped);
            println!("unclassified addrs {}", status.kernel.unclassified_denied);
            println!("ptrace denied      {}", status.kernel.ptrace_denied);
            println!("killed unwatchable {}", status.kernel.watch_killed);
            println!("killed, argv moved {}", status.kernel.exec_mismatch_killed);
            println!("dropped events     {}", status.kernel.dropped_events);
            println!("signal failures    {}", status.kernel.signal_failed);
            println!("undecodable events {}", status.kernel.undecodable_events);
        }
        ApiResponse::Enrolled { tgid, subject } => println!("enrolled {tgid} as {subject}"),
        ApiResponse::Error { message } => anyhow::bail!("{message}"),
    }
    Ok(())
}
