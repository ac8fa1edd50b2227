//! `belay-agent` standalone: paused tasks are decided by the policy or become requests,
//! decided on this host through the local socket or by their deadline.
//!
//! The daemon runs on any [`Backend`]: [`run`] on belay's BPF LSM programs, [`run_on`]
//! on the one it is given (the host tests give it `kernel::FakeKernel`'s).
mod api;
mod config;
mod pause;
mod policy_changes;
mod server_messages;
mod shared;
pub mod socket;
#[cfg(test)]
mod tests;

use std::{
    future::Future,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::SignalKind;
use tracing::{info, warn};

pub use self::config::Config;
use self::{
    server_messages::from_server,
    shared::{ServerIds, Shared, sweep},
};
use crate::{
    dns::{Learner, NameCache, TrustedResolvers},
    kernel::{Backend, DnsMessage, Enforcer, Loaded, LsmBackend},
    metrics::Metrics,
    policy::Policy,
    reload::LivePolicy,
    requests::{Outcome, RequestBook},
    upstream::Upstream,
};

/// How often the policy file is checked for edits, cgroups for new members, and the
/// compiled policy for files that changed under it.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// Addresses remembered from DNS answers, over all processes.
const MAX_NAMES: usize = 65_536;
/// How often requests are checked for their deadline and for processes gone.
const SWEEP_EVERY: Duration = Duration::from_millis(200);
/// How long a stopping daemon waits for resumed tasks to consume their verdicts.
const VERDICTS_CONSUMED_WITHIN: Duration = Duration::from_secs(2);

/// [`run_on`] belay's BPF LSM programs, loaded (or taken over from a previous daemon)
/// in `config.pin_dir`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_on(
        config,
        |config| {
            let loaded =
                Loaded::load(&config.pin_dir).context("loading belay's kernel programs")?;
            LsmBackend::new(loaded, config.stale_after, config.fail_mode)
                .context("starting the heartbeat")
        },
        shutdown,
    )
    .await
}

/// Runs until `shutdown` completes, then ends every pending request with the shutdown
/// verdict and waits for the kernel to apply them. The backend is made by
/// `start_backend` once the configuration checks out (the policy loads, the host's
/// certificate is there), so a bad start leaves the kernel alone.
pub async fn run_on<B: Backend>(
    config: Config,
    start_backend: impl FnOnce(&Config) -> anyhow::Result<B>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let fallback = Policy::standalone_default(config.decide_timeout, config.default_verdict);
    // Before anything touches the kernel: a host that is not enrolled fails at once.
    let tls = match &config.server {
        Some(url) if url.starts_with("https://") => Some(
            crate::enroll::CertDir::new(&config.server_cert_dir)
                .client_tls()
                .context("loading this host's belay-server certificate")?,
        ),
        _ => None,
    };
    let live = if config.policy_from_server {
        let state = config.server_cert_dir.join(crate::server_policy::FILE_NAME);
        LivePolicy::from_server(&state, fallback)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("loading the policy last received from belay-server")?
    } else {
        LivePolicy::load(config.policy.as_deref(), fallback)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("loading the policy")?
    };
    let backend = start_backend(&config)?;
    let names = Arc::new(Mutex::new(NameCache::new(MAX_NAMES)));
    let metrics = Arc::new(Metrics::default());
    let resolvers =
        TrustedResolvers::from_host(Path::new("/etc/resolv.conf"), &config.dns_resolvers);
    info!(
        resolvers = ?resolvers.addrs().collect::<Vec<_>>(),
        "hostnames are learned from these resolvers' answers only"
    );
    let sink = {
        let counted = metrics.clone();
        let ignored = Box::new(move |why| counted.dns_ignored(why));
        let mut learner = Learner::new(resolvers, names.clone(), ignored);
        Box::new(move |message: &DnsMessage<'_>| {
            let _ = learner.observe(message, Instant::now());
        })
    };
    let (enforcer, mut events) =
        Enforcer::start_backend(backend, sink).context("starting the enforcer")?;
    let (down_tx, mut down) = tokio::sync::mpsc::unbounded_channel();
    let upstream = config
        .server
        .clone()
        .map(|url| {
            let hello = belay_proto::v1::Hello {
                host: crate::context::hostname(),
                version: env!("CARGO_PKG_VERSION").into(),
                owner: config.server_owner.clone(),
            };
            info!(server = %url, "requests that need a person go to belay-server");
            Upstream::start(url, tls, hello, down_tx)
        })
        .transpose()
        .context("starting the link to belay-server")?;
    let shared = Shared {
        upstream,
        server_ids: Arc::new(ServerIds::new()),
        server_policy: Arc::default(),
        enforcer,
        book: Arc::new(Mutex::new(RequestBook::default())),
        metrics,
        config: Arc::new(config),
        policy: Arc::new(live),
        names,
        intents: Arc::default(),
        applied: Arc::new(Mutex::new(None)),
    };
    shared
        .apply(shared.policy.get(), true)
        .await
        .context("applying the policy")?;
    let enroll_as = shared
        .policy
        .get()
        .default_enroll_subject()
        .map_or(0, |s| s.id);
    for &pid in &shared.config.watch_pids {
        shared
            .enforcer
            .watch_as(pid, enroll_as)
            .await
            .with_context(|| format!("watching pid {pid}"))?;
    }
    if let Some(addr) = shared.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        info!(%addr, "serving Prometheus metrics on /metrics");
        let s = shared.clone();
        tokio::spawn(crate::metrics::serve(listener, move || {
            let s = s.clone();
            async move {
                let kernel = s.enforcer.counters().await.unwrap_or_default();
                let pending = s.book().len();
                s.metrics.render(pending, &kernel)
            }
        }));
    }
    let mut hangup = tokio::signal::unix::signal(SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    // Ready only once every listener is up.
    let listener = socket::bind(&shared.config.socket, shared.config.socket_access)?;
    info!(
        socket = %shared.config.socket.display(),
        policy = shared.policy.status().source.as_deref().unwrap_or("built-in"),
        "belay-agent ready"
    );
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ev = events.recv() => match ev {
                Some(ev) => { tokio::spawn(pause::on_event(shared.clone(), ev)); }
                None => anyhow::bail!("the enforcer task stopped"),
            },
            _ = tick.tick() => sweep(&shared).await,
            Some(d) = down.recv() => { tokio::spawn(from_server(shared.clone(), d)); }
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the policy");
                shared.reload().await;
            }
            _ = reconcile.tick() => {
                if shared.policy.changed_on_disk() {
                    info!("policy file changed: reloading");
                    shared.reload().await;
                } else if let Err(e) = shared.apply(shared.policy.get(), false).await {
                    warn!(error = format!("{e:#}"), "refreshing the policy failed");
                }
                shared.names().prune(Instant::now());
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(api::serve(shared.clone(), stream)); }
                Err(e) => warn!(error = %e, "accepting a connection failed"),
            },
        }
    }

    info!("shutting down: ending pending requests");
    let pending = shared.book().take_all();
    for p in pending {
        shared
            .end(p, Outcome::Decided(shared.config.shutdown_verdict))
            .await;
    }
    // The programs must stay attached until each resumed task has consumed its verdict,
    // or the restarted syscall would run unchecked.
    // tokio's clock (the host tests pause it); the real one outside tests.
    let until = tokio::time::Instant::now() + VERDICTS_CONSUMED_WITHIN;
    while shared.enforcer.pending_verdicts().await.unwrap_or(0) > 0
        && tokio::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A deliberate stop ends enforcement; a crash leaves the hooks in fail mode.
    shared
        .enforcer
        .detach()
        .await
        .context("detaching the hooks")?;
    let _ = std::fs::remove_file(&shared.config.socket);
    Ok(())
}
