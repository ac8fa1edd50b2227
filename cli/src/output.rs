//! Human tables and JSON for every answer.
use belay_agent::api::{ActionView, ApiResponse, RequestView};

use crate::Output;

fn action(a: &ActionView) -> String {
    match a {
        ActionView::Exec { path, file, argv } => {
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
        } => format!("connect {protocol} {}", host_port(address, *port)),
        ActionView::Send {
            address,
            port,
            protocol,
        } => format!("send {protocol} {}", host_port(address, *port)),
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
        "{:<6} {:<8} {:<6} {:<16} {:<10} ACTION",
        "ID", "PID", "UID", "COMM", "DEADLINE"
    );
    let now = now_ms();
    for r in requests {
        let left = r.deadline_unix_ms.saturating_sub(now) / 1000;
        println!(
            "{:<6} {:<8} {:<6} {:<16} {:<10} {}",
            r.id,
            r.tgid,
            r.uid,
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
            println!("process   {} (thread {}), comm {}", r.tgid, r.pid, r.comm);
            if let Some(ppid) = r.ppid {
                println!("parent    {ppid}");
            }
            println!("uid       {}", r.uid);
            if let Some(cwd) = &r.cwd {
                println!("cwd       {cwd}");
            }
            let left = r.deadline_unix_ms.saturating_sub(now_ms()) / 1000;
            println!("deadline  in {left}s, then {}", r.default_verdict);
        }
        ApiResponse::Decided { id, verdict } => println!("request {id}: {verdict}"),
        ApiResponse::Status { status } => {
            println!("belay-agent {}", status.version);
            println!("pending requests   {}", status.pending);
            println!("decided requests   {}", status.decided);
            println!("paused (kernel)    {}", status.kernel.paused);
            println!("verdicts applied   {}", status.kernel.verdicts_applied);
            println!("denied unpausable  {}", status.kernel.unpausable_denied);
            println!("fail mode applied  {}", status.kernel.fail_mode);
            println!("forks refused      {}", status.kernel.fork_refused);
            println!("dropped events     {}", status.kernel.dropped_events);
            println!("signal failures    {}", status.kernel.signal_failed);
            println!("undecodable events {}", status.kernel.undecodable_events);
        }
        ApiResponse::Enrolled { tgid } => println!("enrolled {tgid}"),
        ApiResponse::Error { message } => anyhow::bail!("{message}"),
    }
    Ok(())
}
