//! `belay-agent` standalone: paused tasks become requests, decided on this host through
//! the local socket or by their deadline.
use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::{
    api::{ApiRequest, ApiResponse, MAX_REQUEST_BYTES, StatusView},
    authz,
    kernel::{Action, Enforcer, EnforcerError, FailMode, Loaded, PauseEvent, Verdict},
    metrics::{Ended, Metrics},
    requests::{Outcome, Pending, RequestBook},
    task,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// How long a request waits for a person before its default verdict applies.
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
    pub fail_mode: FailMode,
    /// Members of this group may decide besides root.
    pub decider_gid: Option<u32>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Clone)]
struct Shared {
    enforcer: Enforcer,
    book: Arc<Mutex<RequestBook>>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, RequestBook> {
        // A panic while holding the lock cannot leave the book half-updated: every
        // method is a single map operation.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn end(&self, p: Pending, outcome: Outcome) {
        let id = p.view.id;
        let (verdict, ended) = match outcome {
            Outcome::Decided(v @ Verdict::Allow) => (v, Ended::Allowed),
            Outcome::Decided(v @ Verdict::Deny) => (v, Ended::Denied),
            Outcome::Decided(v @ Verdict::Kill) => (v, Ended::Killed),
            Outcome::Expired(v) => (v, Ended::Expired),
            Outcome::Cancelled => {
                self.cancelled(&p);
                return;
            }
        };
        match self.enforcer.resolve(p.key, verdict).await {
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

    fn cancelled(&self, p: &Pending) {
        self.metrics.ended(Ended::Cancelled, p.opened.elapsed());
        info!(
            request = p.view.id,
            tgid = p.view.tgid,
            "request cancelled: process gone"
        );
    }
}

/// Runs until `shutdown` completes, then ends every pending request with the shutdown
/// verdict and waits for the kernel to apply them.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let loaded = Loaded::load(&config.pin_dir).context("loading belay's kernel programs")?;
    let (enforcer, mut events) = Enforcer::start(loaded, config.stale_after, config.fail_mode)
        .context("starting the enforcer")?;
    for &pid in &config.watch_pids {
        enforcer
            .watch(pid)
            .await
            .with_context(|| format!("watching pid {pid}"))?;
    }
    let shared = Shared {
        enforcer,
        book: Arc::new(Mutex::new(RequestBook::default())),
        metrics: Arc::new(Metrics::default()),
        config: Arc::new(config),
    };
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
    // Ready only once every listener is up.
    let listener = bind(&shared.config.socket)?;
    info!(socket = %shared.config.socket.display(), "belay-agent ready");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ev = events.recv() => match ev {
                Some(ev) => { tokio::spawn(on_pause(shared.clone(), ev)); }
                None => anyhow::bail!("the enforcer task stopped"),
            },
            _ = tick.tick() => sweep(&shared).await,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(serve(shared.clone(), stream)); }
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

fn bind(path: &PathBuf) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Anyone may enroll themselves; deciding is checked per caller (see `authorize`).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    Ok(listener)
}

async fn on_pause(shared: Shared, ev: PauseEvent) {
    if !ev.is_pause() {
        warn!(
            tgid = ev.tgid,
            comm = %ev.comm,
            action = ?ev.action,
            why = ?ev.unpausable_reasons(),
            "denied in the kernel without a pause: the task cannot be paused safely"
        );
        return;
    }
    // The stop is queued before the event is sent, but reading argv needs the task to
    // have actually stopped.
    let (tgid, pid) = (ev.tgid, ev.pid);
    let is_exec = matches!(ev.action, Action::Exec { .. });
    let (ctx, argv) = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if task::state(pid) == Some('T') {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let argv = if is_exec {
            task::exec_argv(tgid, pid)
        } else {
            None
        };
        (task::context(tgid), argv)
    })
    .await
    .unwrap_or_default();
    let cfg = &shared.config;
    let mut book = shared.book();
    let p = book.open(&ev, ctx, argv, cfg.decide_timeout, cfg.default_verdict);
    let action = serde_json::to_string(&p.view.action).unwrap_or_default();
    info!(request = p.view.id, tgid, comm = %ev.comm, %action, "paused; waiting for a decision");
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

async fn serve(shared: Shared, stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no peer credentials on the socket");
            return;
        }
    };
    let span = info_span!("api", peer_uid = cred.uid(), peer_pid = cred.pid());
    async move {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut limited = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
        let response = match limited.read_line(&mut line).await {
            Err(e) => ApiResponse::Error {
                message: format!("reading the request: {e}"),
            },
            Ok(_) if line.len() > MAX_REQUEST_BYTES => ApiResponse::Error {
                message: format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            },
            Ok(_) => match serde_json::from_str::<ApiRequest>(&line) {
                Err(e) => ApiResponse::Error {
                    message: format!("malformed request: {e}"),
                },
                Ok(req) => handle(&shared, (cred.uid(), cred.gid()), cred.pid(), req).await,
            },
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        if let Err(e) = write.write_all(&out).await {
            warn!(error = %e, "writing the answer failed");
        }
    }
    .instrument(span)
    .await;
}

fn error(message: impl Into<String>) -> ApiResponse {
    ApiResponse::Error {
        message: message.into(),
    }
}

/// Who the caller is, for [`authz::may_decide`].
async fn caller(
    shared: &Shared,
    uid: u32,
    gid: u32,
    pid: Option<i32>,
) -> Result<authz::Caller, String> {
    let Some(pid) = pid.and_then(|p| u32::try_from(p).ok()) else {
        return Err("caller's pid is unknown; refusing to decide".into());
    };
    let watched = shared
        .enforcer
        .is_watched(pid)
        .await
        .map_err(|e| format!("cannot check the caller: {e}"))?;
    Ok(authz::Caller {
        pid,
        uid,
        gid,
        groups: authz::groups_of(pid),
        watched,
    })
}

async fn handle(
    shared: &Shared,
    (uid, gid): (u32, u32),
    pid: Option<i32>,
    req: ApiRequest,
) -> ApiResponse {
    match req {
        ApiRequest::Enroll => {
            let Some(tgid) = pid.and_then(|p| u32::try_from(p).ok()) else {
                return error("caller's pid is unknown; cannot enroll it");
            };
            match shared.enforcer.watch(tgid).await {
                Ok(()) => {
                    info!(tgid, uid, "process enrolled");
                    ApiResponse::Enrolled { tgid }
                }
                Err(e) => error(format!("enrolling {tgid}: {e}")),
            }
        }
        ApiRequest::Pending => ApiResponse::Requests {
            requests: shared.book().list(),
        },
        ApiRequest::Show { id } => match shared.book().get(id) {
            Some(p) => ApiResponse::Request {
                request: p.view.clone(),
            },
            None => error(format!("no pending request {id}")),
        },
        ApiRequest::Decide {
            id,
            verdict,
            reason,
        } => {
            let owner_uid = match shared.book().get(id) {
                Some(p) => p.view.uid,
                None => {
                    return error(format!(
                        "no pending request {id} (unknown, or already ended)"
                    ));
                }
            };
            let allowed = match caller(shared, uid, gid, pid).await {
                Ok(c) => authz::may_decide(&c, shared.config.decider_gid, owner_uid),
                Err(why) => Err(why),
            };
            if let Err(why) = allowed {
                warn!(request = id, %why, "decision refused");
                return error(why);
            }
            // Closing is the decision: of two concurrent deciders, one gets None here.
            let Some(p) = shared.book().close(id) else {
                return error(format!(
                    "no pending request {id} (unknown, or already ended)"
                ));
            };
            info!(request = id, %verdict, reason = reason.as_deref().unwrap_or(""), uid, "decided");
            shared.end(p, Outcome::Decided(verdict)).await;
            ApiResponse::Decided { id, verdict }
        }
        ApiRequest::Status => {
            let kernel = match shared.enforcer.counters().await {
                Ok(c) => c,
                Err(e) => return error(format!("reading kernel counters: {e}")),
            };
            let book = shared.book();
            ApiResponse::Status {
                status: StatusView {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pending: book.len(),
                    decided: book.decided(),
                    kernel,
                },
            }
        }
    }
}
