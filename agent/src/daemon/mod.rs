//! `belay-agent` standalone: paused tasks are decided by the policy or become requests,
//! decided on this host through the local socket or by their deadline.
mod api;
mod pause;
pub mod socket;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use agent_common::{ExecExpect, VerdictKey};
use anyhow::Context as _;
use belay_proto::{
    display::Escaped,
    domain::{PolicyOutcome, PolicyReport},
};
use tokio::signal::unix::SignalKind;
use tracing::{error, info, warn};

use crate::{
    dns::{Learner, NameCache, TrustedResolvers},
    kernel::{
        DnsMessage, Enforcer, EnforcerError, FailMode, Loaded, LsmBackend, PauseEvent, Verdict,
    },
    metrics::{Ended, Metrics},
    policy::{self, HostResolver, Policy},
    reload::{Installed, LivePolicy, ServerPolicyError},
    requests::{Outcome, Pending, RequestBook},
    sync::lock,
    upstream::{Down, Up, Upstream},
    watch,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// Who may connect to `socket` (mode and group).
    pub socket_access: socket::SocketAccess,
    /// The policy file; None runs the built-in standalone policy (one subject,
    /// "enrolled", where every action asks a person).
    pub policy: Option<PathBuf>,
    /// How long a request waits for a person before its default verdict applies (for
    /// the built-in policy and processes whose subject is unknown).
    pub decide_timeout: Duration,
    pub default_verdict: Verdict,
    /// Applied to every pending request when the daemon shuts down.
    pub shutdown_verdict: Verdict,
    /// Processes to watch from the start (besides those that enroll).
    pub watch_pids: Vec<u32>,
    /// Where maps and links are pinned (a bpf filesystem), so enforcement survives a
    /// daemon crash and the next daemon takes over.
    pub pin_dir: PathBuf,
    /// How long the hooks wait for a heartbeat before applying `fail_mode`.
    pub stale_after: Duration,
    /// Used unless the policy sets `fail_mode`.
    pub fail_mode: FailMode,
    /// Members of this group may decide besides root.
    pub decider_gid: Option<u32>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// belay-server's URL: requests that need a person are decided there instead of on
    /// the local socket.
    pub server: Option<String>,
    /// The identity this host's agents belong to, as told to belay-server (it never
    /// lets that identity approve their requests).
    pub server_owner: String,
    /// Where `belay-agent enroll` put this host's certificate, key and the server's CA,
    /// used with an `https://` server.
    pub server_cert_dir: PathBuf,
    /// Enforce the fleet policy belay-server sends (saved in `server_cert_dir`) instead
    /// of `policy`; without it, the agent tells the server it keeps its own.
    pub policy_from_server: bool,
    /// Resolvers trusted for hostnames besides those in /etc/resolv.conf.
    pub dns_resolvers: Vec<std::net::IpAddr>,
}

/// How often the policy file is checked for edits, cgroups for new members, and the
/// compiled policy for files that changed under it.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// Addresses remembered from DNS answers, over all processes.
const MAX_NAMES: usize = 65_536;

#[derive(Clone)]
struct Shared {
    enforcer: Enforcer,
    book: Arc<Mutex<RequestBook>>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    policy: Arc<LivePolicy>,
    names: Arc<Mutex<NameCache>>,
    /// The kernel tables last applied, to skip identical re-applies.
    applied: Arc<Mutex<Option<policy::KernelTables>>>,
    upstream: Option<Upstream>,
    /// Makes request ids on belay-server unique: `host.start.counter`.
    server_ids: Arc<ServerIds>,
    /// Held while a fleet policy is installed and applied: messages from the server are
    /// handled on tasks of their own, and two versions applied at once could leave the
    /// older one in the kernel.
    server_policy: Arc<tokio::sync::Mutex<()>>,
}

/// Request ids for belay-server: `HOST:START:N`, unique across hosts (the host name, as
/// the hello names it: belay-server takes from a host only ids in its namespace) and
/// restarts (the daemon's start time), in the server's id alphabet.
struct ServerIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl ServerIds {
    fn new() -> Self {
        let hostname = crate::context::hostname();
        let host: String = hostname
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if host != hostname {
            // The server takes only ids that start with the hello's host name.
            error!(
                hostname,
                "this host name cannot start a belay-server request id ([A-Za-z0-9._-] only): belay-server will refuse every request, and each ends with its default verdict (never allow)"
            );
        }
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self {
            prefix: format!("{host}:{start}"),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.prefix)
    }
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, RequestBook> {
        lock(&self.book)
    }

    fn names(&self) -> MutexGuard<'_, NameCache> {
        lock(&self.names)
    }

    async fn end(&self, p: Pending, outcome: Outcome) {
        crate::export::ended(&p.view, &outcome);
        let id = p.view.id;
        let (verdict, ended) = match outcome {
            Outcome::Decided(v) => (v, Ended::from(v)),
            Outcome::Expired(v) => (v, Ended::Expired),
            Outcome::Refused(v) => (v, Ended::Refused),
            Outcome::Cancelled => {
                self.cancelled(&p);
                return;
            }
        };
        self.withdraw(&p, || format!("ended on the host ({verdict})"));
        match self.apply_verdict(p.key, verdict, p.expect).await {
            Ok(()) => {
                self.metrics.ended(ended, p.opened.elapsed());
                info!(request = id, tgid = p.view.tgid, %verdict, ?outcome, "request ended");
            }
            // Gone before the verdict could reach it: counted as cancelled, not as the verdict.
            Err(EnforcerError::Gone(_)) => self.cancelled(&p),
            Err(e) => {
                self.metrics.ended(ended, p.opened.elapsed());
                error!(request = id, error = %e, "applying the verdict failed");
            }
        }
    }

    /// Writes a verdict. An exec is allowed only together with what its new image must
    /// carry (what was read and shown): without that (argv or the environment could not
    /// be read whole), nobody saw all of it, and the allow becomes a deny.
    async fn apply_verdict(
        &self,
        key: VerdictKey,
        verdict: Verdict,
        expect: Option<ExecExpect>,
    ) -> Result<(), EnforcerError> {
        if key.kind != agent_common::kind::EXEC || verdict != Verdict::Allow {
            return self.enforcer.resolve(key, verdict).await;
        }
        match expect {
            Some(e) => self.enforcer.resolve_exec(key, verdict, e).await,
            None => {
                warn!(
                    tgid = key.tgid,
                    "exec denied instead of allowed: its argv or environment was not read whole"
                );
                self.enforcer.resolve(key, Verdict::Deny).await
            }
        }
    }

    /// Applies a verdict the policy settled, without opening a request.
    async fn resolve_now(
        &self,
        ev: &PauseEvent,
        verdict: Verdict,
        expect: Option<ExecExpect>,
        outcome: Outcome,
    ) {
        if let Err(e) = self.apply_verdict(ev.key, verdict, expect).await
            && !matches!(e, EnforcerError::Gone(_))
        {
            error!(tgid = ev.tgid, error = %e, ?outcome, "applying the policy's verdict failed");
        }
    }

    /// Tells belay-server a request it holds ended here (deadline, shutdown, process
    /// gone), so reviewers no longer see it.
    fn withdraw(&self, p: &Pending, reason: impl FnOnce() -> String) {
        if let (Some(up), Some(id)) = (&self.upstream, &p.view.server_id) {
            up.send(Up::Withdraw {
                id: id.clone(),
                reason: reason(),
            });
        }
    }

    fn cancelled(&self, p: &Pending) {
        self.withdraw(p, || "the process is gone".into());
        self.metrics.ended(Ended::Cancelled, p.opened.elapsed());
        info!(
            request = p.view.id,
            tgid = p.view.tgid,
            "request cancelled: process gone"
        );
    }

    /// Compiles `policy` into the kernel and watches the running processes it names.
    /// `scan_all` walks every process (start and reloads); otherwise only the subjects'
    /// cgroups are read.
    async fn apply(&self, policy: Arc<Policy>, scan_all: bool) -> anyhow::Result<()> {
        let p = policy.clone();
        let tables = tokio::task::spawn_blocking(move || policy::compile(&p, &HostResolver))
            .await
            .context("compiling the policy")?;
        let same = lock(&self.applied).as_ref() == Some(&tables);
        if !same {
            for w in &tables.warnings {
                warn!(warning = %w, "policy");
            }
            self.policy.set_warnings(tables.warnings.clone());
            self.enforcer
                .apply_policy(tables.clone())
                .await
                .context("writing the policy into the kernel maps")?;
            *lock(&self.applied) = Some(tables);
        }
        let fail_mode = match policy.fail_mode {
            Some(policy::FailMode::Allow) => FailMode::Allow,
            Some(policy::FailMode::Deny) => FailMode::Deny,
            None => self.config.fail_mode,
        };
        self.enforcer
            .set_fail_mode(fail_mode)
            .await
            .context("setting the fail mode")?;
        let except = vec![std::process::id()];
        let found = tokio::task::spawn_blocking(move || {
            if scan_all {
                watch::scan_all(std::path::Path::new("/proc"), &policy, &except)
            } else {
                watch::scan_cgroups(std::path::Path::new(watch::CGROUP_ROOT), &policy, &except)
            }
        })
        .await
        .context("scanning for processes to watch")?;
        for (tgid, subject) in found {
            if self.enforcer.watched_subject(tgid).await?.is_none() {
                match self.enforcer.watch_as(tgid, subject).await {
                    Ok(()) => info!(tgid, subject, "watching a running process the policy names"),
                    Err(e) => warn!(tgid, error = %e, "could not watch a process the policy names"),
                }
            }
        }
        Ok(())
    }

    /// A fleet policy from belay-server: installed and applied if this agent takes the
    /// server's policy; the answer for the server either way.
    async fn install_server_policy(&self, version: u64, text: &str) -> PolicyReport {
        let report = |outcome, message: &str| PolicyReport::clipped(version, outcome, message);
        let _one_at_a_time = self.server_policy.lock().await;
        match self.policy.install_from_server(version, text) {
            Ok(Installed::Unchanged) => report(PolicyOutcome::Applied, ""),
            Ok(Installed::New(policy)) => {
                self.metrics.policy_reloaded(true);
                match self.apply(policy, true).await {
                    Ok(()) => {
                        info!(
                            version,
                            subjects = self.policy.status().subjects.len(),
                            "fleet policy from belay-server in force"
                        );
                        report(
                            PolicyOutcome::Applied,
                            &self.policy.status().warnings.join("\n"),
                        )
                    }
                    Err(e) => {
                        let message = format!("applying the policy to the kernel failed: {e:#}");
                        error!(version, error = %message, "fleet policy not applied");
                        report(PolicyOutcome::Failed, &message)
                    }
                }
            }
            Err(ServerPolicyError::NotAccepted) => {
                info!(
                    version,
                    "belay-server sent a fleet policy; this agent keeps its local policy"
                );
                report(
                    PolicyOutcome::NotAccepted,
                    "not accepted: this agent uses a local policy (run without --policy-from-server)",
                )
            }
            Err(e) => {
                self.metrics.policy_reloaded(false);
                error!(version, error = %e, "fleet policy refused; the previous policy stays in force");
                report(PolicyOutcome::Failed, &e.to_string())
            }
        }
    }

    /// SIGHUP or an edit of the file: load it again; a bad file changes nothing.
    async fn reload(&self) {
        match self.policy.reload() {
            Ok(Some(policy)) => {
                self.metrics.policy_reloaded(true);
                match self.apply(policy, true).await {
                    Ok(()) => info!(
                        subjects = self.policy.status().subjects.len(),
                        "policy reloaded"
                    ),
                    Err(e) => error!(
                        error = format!("{e:#}"),
                        "applying the reloaded policy failed"
                    ),
                }
            }
            Ok(None) => info!("no policy file to reload (built-in policy, or belay-server's)"),
            Err(e) => {
                self.metrics.policy_reloaded(false);
                error!(error = %e, "policy not reloaded; the previous policy stays in force");
            }
        }
    }
}

/// Runs until `shutdown` completes, then ends every pending request with the shutdown
/// verdict and waits for the kernel to apply them.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
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
    let loaded = Loaded::load(&config.pin_dir).context("loading belay's kernel programs")?;
    let names = Arc::new(Mutex::new(NameCache::new(MAX_NAMES)));
    let metrics = Arc::new(Metrics::default());
    let resolvers =
        TrustedResolvers::from_host(Path::new("/etc/resolv.conf"), &config.dns_resolvers);
    info!(
        resolvers = ?resolvers.addrs().collect::<Vec<_>>(),
        "hostnames are learned from these resolvers' answers only"
    );
    let sink = {
        let mut learner = Learner::new(resolvers, names.clone(), metrics.clone());
        Box::new(move |message: &DnsMessage<'_>| {
            let _ = learner.observe(message, Instant::now());
        })
    };
    let backend = LsmBackend::new(loaded, config.stale_after, config.fail_mode)
        .context("starting the heartbeat")?;
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
    let mut tick = tokio::time::interval(Duration::from_millis(200));
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
    let until = Instant::now() + Duration::from_secs(2);
    while shared.enforcer.pending_verdicts().await.unwrap_or(0) > 0 && Instant::now() < until {
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

/// A decision (or a refusal) from belay-server for one of this host's requests.
async fn from_server(shared: Shared, d: Down) {
    match d {
        Down::Decided {
            id,
            verdict,
            reason,
            expired,
        } => {
            let p = {
                let mut book = shared.book();
                book.by_server_id(&id).and_then(|local| book.close(local))
            };
            let Some(mut p) = p else {
                // Already ended here (deadline, process gone): nothing to apply.
                return;
            };
            // The server has it resolved already: nothing to withdraw there.
            p.view.server_id = None;
            info!(request = p.view.id, server_id = %id, %verdict, reason = %Escaped(&reason), "decided on belay-server");
            let outcome = if expired {
                Outcome::Expired(verdict)
            } else {
                Outcome::Decided(verdict)
            };
            shared.end(p, outcome).await;
        }
        Down::Policy { version, text } => {
            let report = shared.install_server_policy(version, &text).await;
            if let Some(up) = &shared.upstream {
                up.send(Up::PolicyReport(report));
            }
        }
        Down::Refused { id, message } => {
            // Never handed to the local socket: one local root could then approve alone
            // what was meant for belay-server's reviewers (and its quorum). It ends now.
            let Some(mut p) = shared.book().refused(&id) else {
                // Already ended here (deadline, process gone): nothing to apply.
                return;
            };
            // The server holds nothing to withdraw.
            p.view.server_id = None;
            let verdict = crate::requests::refused_verdict(p.view.default_verdict);
            error!(request = p.view.id, server_id = %id, %verdict, %message, "belay-server refused the request; it ends without a decision");
            shared.end(p, Outcome::Refused(verdict)).await;
        }
    }
}

async fn sweep(shared: &Shared) {
    let (expired, gone) = {
        let mut book = shared.book();
        let expired = book.take_expired(Instant::now());
        let gone = book.take_gone(|tgid| std::path::Path::new(&format!("/proc/{tgid}")).exists());
        (expired, gone)
    };
    for p in expired {
        let v = p.view.default_verdict;
        shared.end(p, Outcome::Expired(v)).await;
    }
    for p in gone {
        shared.end(p, Outcome::Cancelled).await;
    }
}
