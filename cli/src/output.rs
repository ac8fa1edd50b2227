//! Human tables and JSON for every answer of the agent's local socket. Every value is
//! escaped (`crate::render`): the agent sends raw paths, argv and environments, and an
//! older agent may send anything.
use belay_agent_api::{ActionView, ApiResponse, RequestView};

use crate::Output;
use crate::render::{self, esc, esc_or};

fn action(a: &ActionView) -> String {
    match a {
        ActionView::Exec {
            path, file, argv, ..
        } => {
            let what = match file {
                Some(file) if file != path => format!("{} (as {})", esc(file), esc(path)),
                _ => esc(path).to_string(),
            };
            match argv {
                Some(argv) => format!("exec {what} {}", render::argv(argv)),
                None => format!("exec {what}"),
            }
        }
        ActionView::Connect {
            address,
            port,
            protocol,
            hostnames,
        } => format!(
            "connect {} {}{}",
            esc(protocol),
            host_port(address, *port),
            names(hostnames)
        ),
        ActionView::Send {
            address,
            port,
            protocol,
            hostnames,
        } => format!(
            "send {} {}{}",
            esc(protocol),
            host_port(address, *port),
            names(hostnames)
        ),
        ActionView::ConnectUnix { path, protocol } => unix("connect", path, protocol),
        ActionView::SendUnix { path, protocol } => unix("send", path, protocol),
    }
}

fn unix(verb: &str, path: &str, protocol: &str) -> String {
    format!("{verb} {} {}", esc(protocol), esc(path))
}

fn names(hostnames: &[String]) -> String {
    if hostnames.is_empty() {
        String::new()
    } else {
        format!(" ({})", render::list(hostnames))
    }
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{}]:{port}", esc(address))
    } else {
        format!("{}:{port}", esc(address))
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
            esc_or(r.subject.as_deref(), "-"),
            esc(&r.comm),
            format!("{left}s"),
            action(&r.action)
        );
    }
}

pub fn print(output: Output, response: &ApiResponse) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", render::json_pretty(response)?);
        return Ok(());
    }
    match response {
        ApiResponse::Requests { requests } => table(requests),
        ApiResponse::Request { request: r } => {
            println!("request   {}", r.id);
            println!("action    {}", action(&r.action));
            if let ActionView::Exec { env, .. } = &r.action {
                for line in render::env_lines(env.as_deref()) {
                    println!("{line}");
                }
            }
            if let Some(subject) = &r.subject {
                let owner = esc_or(r.owner.as_deref(), "?");
                println!("agent     {} (owner {owner})", esc(subject));
            }
            println!(
                "rule      {}",
                esc_or(r.rule.as_deref(), "(the subject's default)")
            );
            let c = &r.context;
            if !c.host.is_empty() {
                println!("host      {}", esc(&c.host));
            }
            println!(
                "process   {} (thread {}), comm {}",
                r.tgid,
                r.pid,
                esc(&r.comm)
            );
            match &c.user {
                Some(user) => println!("user      {} (uid {})", esc(user), r.uid),
                None => println!("uid       {}", r.uid),
            }
            if let Some(cwd) = &r.cwd {
                println!("cwd       {}", esc(cwd));
            }
            for (i, a) in c.ancestry.iter().enumerate() {
                let label = if i == 0 { "ancestry" } else { "" };
                let exe = esc_or(a.exe.as_deref(), "?");
                println!("{label:<9} {} {} ({exe})", a.pid, esc(&a.comm));
            }
            if c.ancestry.is_empty()
                && let Some(ppid) = r.ppid
            {
                println!("parent    {ppid}");
            }
            if let Some(cg) = &c.cgroup {
                println!("cgroup    {}", esc(cg));
            }
            if let Some(id) = &c.container_id {
                println!("container {}", esc(id));
            }
            if let Some(pod) = &c.pod_uid {
                println!("pod       {}", esc(pod));
            }
            if let Some(intent) = &r.intent {
                println!(
                    "intent    {} (declared by the agent, unverified)",
                    esc(&intent.text)
                );
                let details = [
                    ("model", &intent.model),
                    ("session", &intent.session_id),
                    ("tool call", &intent.tool_call_id),
                    ("user request", &intent.user_request_id),
                ];
                for (label, value) in details {
                    if let Some(value) = value {
                        println!("          {label} {}", esc(value));
                    }
                }
                println!("          declared by process {}", intent.declared_by_pid);
            }
            let left = r.deadline_unix_ms.saturating_sub(now_ms()) / 1000;
            println!("deadline  in {left}s, then {}", r.default_verdict);
        }
        ApiResponse::Decided { id, verdict } => println!("request {id}: {verdict}"),
        ApiResponse::Status { status } => {
            println!("belay-agent {}", esc(&status.version));
            let p = &status.policy;
            println!(
                "policy             {} ({} subjects: {})",
                esc_or(p.source.as_deref(), "built-in"),
                p.subjects.len(),
                render::list(&p.subjects)
            );
            println!(
                "policy reloads     {} ok, {} failed",
                p.reloads, p.failed_reloads
            );
            if let (Some(version), Some(sha256)) = (p.server_version, &p.server_sha256) {
                println!(
                    "fleet policy       version {version} from belay-server (sha256 {})",
                    esc(sha256)
                );
            }
            if let Some(e) = &p.last_error {
                println!(
                    "policy error       {} (previous policy in force)",
                    render::lines(e)
                );
            }
            for w in &p.warnings {
                println!("policy warning     {}", esc(w));
            }
            if let Some(s) = &status.server {
                let state = if s.connected {
                    "connected"
                } else {
                    "not connected"
                };
                println!(
                    "belay-server       {} ({state}; {} awaiting a decision)",
                    esc(&s.url),
                    s.awaiting
                );
                if let (false, Some(e)) = (s.connected, &s.last_error) {
                    println!("server error       {}", esc(e));
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
            println!("unix peer changed  {}", status.kernel.unix_peer_denied);
            println!("dropped events     {}", status.kernel.dropped_events);
            println!("signal failures    {}", status.kernel.signal_failed);
            println!("undecodable events {}", status.kernel.undecodable_events);
        }
        ApiResponse::IntentDeclared { tgid, .. } => {
            println!("intent declared for process {tgid}");
        }
        ApiResponse::Enrolled { tgid, subject } => {
            println!("enrolled {tgid} as {}", esc(subject));
        }
        ApiResponse::Error { message } => anyhow::bail!("{message}"),
    }
    Ok(())
}
