//! `belay-server-bench`: how many agents one belay-server holds, and how fast it
//! decides, on this machine.
//!
//! It starts a real `belay-server` (a child process, so its memory can be read from
//! /proc) on a SQLite file or a throwaway PostgreSQL cluster, connects `--agents`
//! simulated agents (one HTTP/2 connection and one Session stream each, as real agents
//! have), then for `--seconds` offers `--rate` requests per second spread over the
//! agents, while automated reviewers watch the pending requests and decide each one.
//! Latency is measured where it matters: from the agent sending the request to the
//! agent receiving the decision.
//!
//! The server runs with `--insecure`: plaintext, reviewers not authenticated. TLS
//! handshakes cost once per connection, not per decision; this measures the decision
//! path. Prints `bench: server_<backend>_<figure> <value> <unit>` lines.
//!
//! With `--console-pages N` the reviewer console is on too (see `console`): reviewers
//! then authenticate (an API token, over the same plaintext gRPC), N headless Chromium
//! windows keep the live queue open, and a marker agent submits a request every
//! `MARKER_EVERY` during the load; `bench: console_event_to_browser_*` is the time from
//! a marker's send to its row in a page, over every (page, marker).

mod agents;
#[path = "../../server/tests/support/browser.rs"]
mod browser;
mod console;
#[path = "../../server/tests/support/issuer.rs"]
mod issuer;
mod markers;
mod reviewers;
mod server;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    /// Process memory (`--db :memory:`): the server without storage costs, to tell
    /// where the time goes.
    Memory,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Memory => "memory",
        }
    }
}

/// Load benchmark of belay-server on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// The belay-server binary to run (a release build for meaningful figures).
    #[arg(long)]
    server_bin: PathBuf,
    #[arg(long, value_enum)]
    backend: Backend,
    /// Simulated agents, each with its own connection and stream.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Requests offered per second, over all agents (default: the 2,000 decisions/s
    /// target, so the latency figures are those at the target load).
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// How long requests are offered.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent Decide calls the automated reviewers keep in flight.
    #[arg(long, default_value_t = 64)]
    deciders: usize,
    /// Signed-in console pages (headless Chromium) open during the load, for the
    /// submission-to-browser latency; 0: no console.
    #[arg(long, default_value_t = 0)]
    console_pages: usize,
}

/// How often the marker agent submits a request while the load runs.
const MARKER_EVERY: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.agents == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--agents, --rate and --seconds must be at least 1");
    }
    // Each agent is one socket here and one in the server (which inherits this limit).
    server::raise_fd_limit(u64::try_from(args.agents).unwrap_or(u64::MAX) + 1024)?;
    let dir = tempfile::tempdir().context("temporary directory")?;
    let db = match args.backend {
        Backend::Sqlite => dir.path().join("server.db").display().to_string(),
        Backend::Postgres => belay_server::testing::postgres::database().await,
        Backend::Memory => ":memory:".to_owned(),
    };
    let console = if args.console_pages > 0 {
        console::check_browser()?;
        Some(console::setup(dir.path(), args.console_pages).await?)
    } else {
        None
    };
    let extra = console
        .as_ref()
        .map(|c| c.server_args.clone())
        .unwrap_or_default();
    let running = server::Server::start(&args.server_bin, &db, dir.path(), &extra).await?;
    let url = running.url();
    eprintln!(
        "belay-server (pid {}) on {url}, {} store",
        running.pid(),
        args.backend.name()
    );

    let reviewers = reviewers::start(
        &url,
        args.deciders,
        console.as_ref().map(|c| c.token.as_str()),
    )
    .await?;
    let started = Instant::now();
    let fleet = agents::connect(&url, args.agents).await?;
    eprintln!(
        "{} agents connected in {:.1} s",
        fleet.len(),
        started.elapsed().as_secs_f64()
    );
    let connected = reviewers.connected_agents().await?;
    let pages = match &console {
        Some(setup) => {
            let started = Instant::now();
            let pages = console::open(setup, args.console_pages).await;
            eprintln!(
                "{} console pages signed in on {} in {:.1} s",
                pages.len(),
                setup.origin,
                started.elapsed().as_secs_f64()
            );
            Some((pages, markers::connect(&url).await?))
        }
        None => None,
    };

    let latencies = Arc::new(stats::Latencies::default());
    let load = Duration::from_secs(args.seconds);
    let rss_sampler = running.sample_rss();
    let (offered, marked) = match &pages {
        Some((_, marker)) => {
            let (offered, marked) = tokio::join!(
                fleet.offer(args.rate, load, Arc::clone(&latencies)),
                marker.run(MARKER_EVERY, load)
            );
            (offered, marked?)
        }
        None => (
            fleet.offer(args.rate, load, Arc::clone(&latencies)).await,
            Vec::new(),
        ),
    };
    // Give the last requests their decisions.
    let answered = fleet.wait_answered(offered, Duration::from_secs(10)).await;
    let elapsed = latencies.window();
    let rss_mb = rss_sampler.stop().await;
    reviewers.stop();

    // A run with pages open is told apart: the pages share the machine's cores with the
    // server, so its figures are not the bare server's.
    let backend = if args.console_pages > 0 {
        format!("{}_console", args.backend.name())
    } else {
        args.backend.name().to_owned()
    };
    let decided = latencies.count();
    let per_s = if elapsed.is_zero() {
        0.0
    } else {
        decided as f64 / elapsed.as_secs_f64()
    };
    println!("bench: server_{backend}_agents {connected} agents");
    println!(
        "bench: server_{backend}_offered_per_s {} requests/s",
        args.rate
    );
    println!("bench: server_{backend}_decisions_per_s {per_s:.0} decisions/s");
    println!(
        "bench: server_{backend}_p50_ms {:.2} ms",
        latencies.percentile_ms(50.0)
    );
    println!(
        "bench: server_{backend}_p99_ms {:.2} ms",
        latencies.percentile_ms(99.0)
    );
    println!("bench: server_{backend}_rss_mb {rss_mb:.0} MB");
    if answered < offered {
        println!(
            "bench: server_{backend}_unanswered {} requests",
            offered - answered
        );
    }
    if let Some((pages, marker)) = pages {
        // Markers stay pending (the reviewers skip them) while their agent is connected.
        let (shown, missing) = pages.latencies(&marked, Duration::from_secs(10)).await;
        let count = pages.len();
        marker.stop();
        pages.close().await;
        println!("bench: console_pages {count} pages");
        println!(
            "bench: console_event_to_browser_p50_ms {:.0} ms",
            stats::percentile(&shown, 50.0)
        );
        println!(
            "bench: console_event_to_browser_p99_ms {:.0} ms",
            stats::percentile(&shown, 99.0)
        );
        println!(
            "bench: console_event_to_browser_max_ms {:.0} ms",
            stats::percentile(&shown, 100.0)
        );
        println!("bench: console_markers {} markers", marked.len());
        println!(
            "bench: console_event_to_browser_samples {} samples",
            shown.len()
        );
        // A (page, marker) pair whose row never showed: not a sample, not hidden either.
        println!("bench: console_event_to_browser_missing {missing} samples");
    }
    running.stop().await?;
    Ok(())
}
