//! belay's benchmark, run inside the VM by `cargo xtask bench`. Every figure is measured
//! in the same run, side by side, and printed as `bench: <name> <value> <unit>`; rates
//! are compared as ratios, because absolute numbers on an emulated CPU mean little.
//!
//! - exec and connect rates of a process without belay, with belay loaded and the
//!   process unwatched, and watched with policy that allows both in the kernel
//!   (interleaved rounds, median of each; the loops run in a `belay-actor` child);
//! - pause -> automatic decision by the enforcer -> resume, as the paused process sees
//!   its connect take, against a bare SIGSTOP/SIGCONT cycle through another process.
use std::{net::TcpListener, time::Duration};

use anyhow::{Context as _, bail};
use belay_agent::{
    kernel::{Enforcer, FailMode, Loaded, Verdict},
    policy::{self, HostResolver, Policy},
};
use belay_tests::{Actor, PinDir};
use nix::{
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

const ROUNDS: usize = 5;
const EXECS: u32 = 150;
const CONNECTS: u32 = 1500;
const PAUSES: u32 = 300;

/// How the measuring process runs.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Not watched (belay loaded or not).
    Unwatched,
    /// Watched as the bench subject, whose policy allows the loop in the kernel.
    Watched(&'a Belay, &'a tokio::runtime::Runtime),
}

/// Runs one measuring loop in a belay-actor child and returns its rate.
fn rate(mode: Mode<'_>, args: &[&str]) -> anyhow::Result<f64> {
    let mut actor = Actor::spawn(args)?;
    if let Mode::Watched(b, rt) = mode {
        rt.block_on(b.enforcer.watch_as(actor.pid, SUBJECT_ID))?;
    }
    actor.go()?;
    let (out, status) = actor.finish(Duration::from_secs(300))?;
    if !status.success() {
        bail!("{args:?} failed: {out}");
    }
    out.lines()
        .find_map(|l| l.strip_prefix("rate "))
        .and_then(|r| r.trim().parse().ok())
        .with_context(|| format!("no rate in {out:?}"))
}

fn exec_rate(mode: Mode<'_>) -> anyhow::Result<f64> {
    rate(mode, &["exec-rate", &EXECS.to_string()])
}

fn connect_rate(mode: Mode<'_>, addr: std::net::SocketAddr) -> anyhow::Result<f64> {
    rate(
        mode,
        &["connect-rate", &addr.to_string(), &CONNECTS.to_string()],
    )
}

const SUBJECT: &str = "bench";
const SUBJECT_ID: u32 = agent_common::subject_id(SUBJECT.as_bytes());

/// The policy of the watched rounds: the loop's exec and connect are allowed by rules
/// the kernel applies itself; anything else would pause (and stall the bench).
fn bench_policy(addr: std::net::SocketAddr) -> anyhow::Result<policy::KernelTables> {
    let text = format!(
        "version: 1
subjects:
  - name: {SUBJECT}
    owner: bench
    default: ask
    exec:
      - {{path: /bin/true, action: allow}}
    egress:
      - {{to: [{ip}], ports: [{port}], protocol: tcp, action: allow}}
",
        ip = addr.ip(),
        port = addr.port()
    );
    let policy = Policy::parse(&text, std::path::Path::new("bench.yaml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tables = policy::compile(&policy, &HostResolver);
    if tables.exec.is_empty() || tables.egress.is_empty() {
        bail!("bench policy did not compile into the kernel: {tables:?}");
    }
    Ok(tables)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn latencies(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("lat "))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

struct Belay {
    enforcer: Enforcer,
    events: tokio::sync::mpsc::UnboundedReceiver<belay_agent::kernel::PauseEvent>,
    _pins: PinDir,
}

fn load(rt: &tokio::runtime::Runtime, tables: &policy::KernelTables) -> anyhow::Result<Belay> {
    let pins = PinDir::new();
    let loaded = Loaded::load(&pins.0).context("loading belay")?;
    let (enforcer, events) =
        rt.block_on(async { Enforcer::start(loaded, Duration::from_secs(30), FailMode::Deny) })?;
    rt.block_on(enforcer.apply_policy(tables.clone()))?;
    Ok(Belay {
        enforcer,
        events,
        _pins: pins,
    })
}

fn unload(rt: &tokio::runtime::Runtime, b: Belay) -> anyhow::Result<()> {
    rt.block_on(b.enforcer.detach())?;
    drop(b);
    // Let the owner task end so the programs are unloaded before the next bare round.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });

    let tables = bench_policy(addr)?;
    let mut rates: [Vec<f64>; 6] = Default::default();
    for round in 0..ROUNDS {
        rates[0].push(exec_rate(Mode::Unwatched)?);
        rates[1].push(connect_rate(Mode::Unwatched, addr)?);
        let b = load(&rt, &tables)?;
        rates[2].push(exec_rate(Mode::Unwatched)?);
        rates[3].push(connect_rate(Mode::Unwatched, addr)?);
        rates[4].push(exec_rate(Mode::Watched(&b, &rt))?);
        rates[5].push(connect_rate(Mode::Watched(&b, &rt), addr)?);
        let counters = rt.block_on(b.enforcer.counters())?;
        if counters.paused != 0 {
            bail!(
                "the watched loops paused {} times: the policy did not apply",
                counters.paused
            );
        }
        unload(&rt, b)?;
        eprintln!("bench: round {} of {ROUNDS} done", round + 1);
    }
    let [be, bc, ue, uc, we, wc] = rates.map(|mut r| median(&mut r));
    println!("bench: exec_bare_per_s {be:.0} 1/s");
    println!("bench: exec_unwatched_per_s {ue:.0} 1/s");
    println!("bench: exec_watched_allowed_per_s {we:.0} 1/s");
    println!("bench: exec_unwatched_ratio {:.3} ratio", ue / be);
    println!("bench: exec_watched_allowed_ratio {:.3} ratio", we / be);
    println!("bench: connect_bare_per_s {bc:.0} 1/s");
    println!("bench: connect_unwatched_per_s {uc:.0} 1/s");
    println!("bench: connect_watched_allowed_per_s {wc:.0} 1/s");
    println!("bench: connect_unwatched_ratio {:.3} ratio", uc / bc);
    println!("bench: connect_watched_allowed_ratio {:.3} ratio", wc / bc);

    // A bare stop/continue cycle: the child stops itself, this process continues it.
    let mut actor = Actor::spawn(&["stop-loop", &PAUSES.to_string()])?;
    let pid = Pid::from_raw(actor.pid as i32);
    actor.go()?;
    for _ in 0..PAUSES {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED))? {
            WaitStatus::Stopped(..) => kill(pid, Signal::SIGCONT)?,
            other => bail!("stop-loop child: {other:?}"),
        }
    }
    let (out, _) = actor.finish(Duration::from_secs(60))?;
    let mut bare = latencies(&out);

    // Pause -> the enforcer's automatic allow -> resume, seen by the paused connect.
    let mut b = load(&rt, &tables)?;
    let mut actor = Actor::spawn(&["connect-loop", &addr.to_string(), &PAUSES.to_string()])?;
    rt.block_on(b.enforcer.watch(actor.pid))?;
    let enforcer = b.enforcer.clone();
    let mut events = std::mem::replace(&mut b.events, tokio::sync::mpsc::unbounded_channel().1);
    let decider = rt.spawn(async move {
        let mut n = 0;
        while let Some(ev) = events.recv().await {
            if ev.is_pause() {
                let _ = enforcer.resolve(ev.key, Verdict::Allow).await;
                n += 1;
            }
        }
        n
    });
    actor.go()?;
    let (out, status) = actor.finish(Duration::from_secs(120))?;
    if !status.success() {
        bail!("connect-loop failed: {out}");
    }
    let counters = rt.block_on(b.enforcer.counters())?;
    unload(&rt, b)?;
    decider.abort();
    let mut paused = latencies(&out);
    if paused.len() != PAUSES as usize || counters.paused < u64::from(PAUSES) {
        bail!(
            "expected {PAUSES} pauses, measured {} (kernel counted {})",
            paused.len(),
            counters.paused
        );
    }
    println!(
        "bench: pause_resume_p50_us {:.1} us",
        percentile(&mut paused, 50)
    );
    println!(
        "bench: pause_resume_p99_us {:.1} us",
        percentile(&mut paused, 99)
    );
    println!(
        "bench: bare_stopcont_p50_us {:.1} us",
        percentile(&mut bare, 50)
    );
    println!(
        "bench: bare_stopcont_p99_us {:.1} us",
        percentile(&mut bare, 99)
    );
    println!(
        "bench: pause_resume_p99_over_bare {:.2} ratio",
        percentile(&mut paused, 99) / percentile(&mut bare, 99)
    );
    Ok(())
}
