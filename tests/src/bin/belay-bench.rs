//! belay's benchmark, run inside the VM by `cargo xtask bench`. Every figure is measured
//! in the same run, side by side, and printed as `bench: <name> <value> <unit>`; rates
//! are compared as ratios, because absolute numbers on an emulated CPU mean little.
//!
//! - exec and connect rates of an unwatched process, with belay loaded against without
//!   (interleaved rounds, median of each);
//! - pause -> automatic decision by the enforcer -> resume, as the paused process sees
//!   its connect take, against a bare SIGSTOP/SIGCONT cycle through another process.
use std::{
    net::{TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use belay_agent::kernel::{Enforcer, FailMode, Loaded, Verdict};
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

fn exec_rate() -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..EXECS {
        let st = Command::new("/bin/true")
            .status()
            .context("running /bin/true")?;
        if !st.success() {
            bail!("/bin/true failed: {st}");
        }
    }
    Ok(f64::from(EXECS) / t.elapsed().as_secs_f64())
}

fn connect_rate(addr: std::net::SocketAddr) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..CONNECTS {
        drop(TcpStream::connect(addr).context("connecting to the local listener")?);
    }
    Ok(f64::from(CONNECTS) / t.elapsed().as_secs_f64())
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

fn load(rt: &tokio::runtime::Runtime) -> anyhow::Result<Belay> {
    let pins = PinDir::new();
    let loaded = Loaded::load(&pins.0).context("loading belay")?;
    let (enforcer, events) =
        rt.block_on(async { Enforcer::start(loaded, Duration::from_secs(30), FailMode::Deny) })?;
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

    let (mut bare_exec, mut bare_conn, mut belay_exec, mut belay_conn) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        bare_exec.push(exec_rate()?);
        bare_conn.push(connect_rate(addr)?);
        let b = load(&rt)?;
        belay_exec.push(exec_rate()?);
        belay_conn.push(connect_rate(addr)?);
        unload(&rt, b)?;
        eprintln!("bench: round {} of {ROUNDS} done", round + 1);
    }
    let (be, bc) = (median(&mut bare_exec), median(&mut bare_conn));
    let (we, wc) = (median(&mut belay_exec), median(&mut belay_conn));
    println!("bench: exec_bare_per_s {be:.0} 1/s");
    println!("bench: exec_unwatched_per_s {we:.0} 1/s");
    println!("bench: exec_unwatched_ratio {:.3} ratio", we / be);
    println!("bench: connect_bare_per_s {bc:.0} 1/s");
    println!("bench: connect_unwatched_per_s {wc:.0} 1/s");
    println!("bench: connect_unwatched_ratio {:.3} ratio", wc / bc);

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
    let mut b = load(&rt)?;
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
