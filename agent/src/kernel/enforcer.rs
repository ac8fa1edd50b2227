//! The one task that owns the enforcement backend. Everything else talks to it through
//! an [`Enforcer`] handle, so map updates and signals are never interleaved by two
//! writers.
use std::{
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use agent_common::{VerdictKey, decode::PauseEvent};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
};
use tracing::{debug, error};

use super::{
    Loaded,
    backend::{
        Backend, Counters, DnsMessage, EnforcerError, Expectation, FailMode, KernelEvent, Verdict,
    },
    lsm::LsmBackend,
};
use crate::policy::KernelTables;

/// How often verdicts of processes that are gone are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Called by the owner task with each DNS message a watched process received, before
/// any later event is passed on (so a name is known by the time a connect to it pauses).
pub type DnsSink = Box<dyn FnMut(&DnsMessage<'_>) + Send>;

type Reply<T> = oneshot::Sender<Result<T, EnforcerError>>;

enum Command {
    Watch(u32, u32, Reply<()>),
    Unwatch(u32, Reply<()>),
    WatchedSubject(u32, Reply<Option<u32>>),
    Watched(Reply<Vec<(u32, u32)>>),
    Resolve(VerdictKey, Verdict, Option<Expectation>, Reply<()>),
    ApplyPolicy(Box<KernelTables>, Reply<()>),
    SetFailMode(FailMode, Reply<()>),
    Counters(Reply<Counters>),
    /// Verdicts written but not yet consumed by a restarted hook.
    PendingVerdicts(Reply<usize>),
    /// Stop the heartbeat and end enforcement once the owner task ends.
    Detach(Reply<()>),
}

/// Handle to the enforcer task. Cheap to clone.
#[derive(Clone)]
pub struct Enforcer {
    tx: mpsc::Sender<Command>,
}

/// Lets the owner wait on a backend's event fd without owning it.
struct EventFd(RawFd);

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Enforcer {
    /// Starts the owner task over belay's BPF LSM programs, and the heartbeat the hooks
    /// check (a daemon silent for `stale_after` gets `fail_mode` applied instead of
    /// pauses). Kernel events arrive on the returned receiver, first those of tasks
    /// an earlier daemon left stopped: each pause ([`PauseEvent::is_pause`]) must get
    /// exactly one [`Enforcer::resolve`]; the others report actions the kernel decided
    /// itself.
    pub fn start(
        loaded: Loaded,
        stale_after: Duration,
        fail_mode: FailMode,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PauseEvent>), EnforcerError> {
        Self::start_backend(
            LsmBackend::new(loaded, stale_after, fail_mode)?,
            Box::new(|_| {}),
        )
    }

    /// [`Enforcer::start`] with any [`Backend`], and a sink for DNS answers.
    pub fn start_backend<B: Backend>(
        mut backend: B,
        dns: DnsSink,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PauseEvent>), EnforcerError> {
        // SAFETY: the fd belongs to `backend`, which moves into the owner task together
        // with this AsyncFd and outlives it there (see `Owner::run`).
        let events = unsafe {
            AsyncFd::register_with_interest(EventFd(backend.event_fd()), Interest::READABLE)
        }
        .map_err(|e| EnforcerError::Poll(e.into()))?;
        // SAFETY: as above.
        let answers = unsafe {
            AsyncFd::register_with_interest(EventFd(backend.dns_fd()), Interest::READABLE)
        }
        .map_err(|e| EnforcerError::Poll(e.into()))?;
        let (tx, rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        for ev in backend.recover() {
            let _ = ev_tx.send(ev);
        }
        let owner = Owner { backend, dns };
        tokio::spawn(owner.run(events, answers, rx, ev_tx));
        Ok((Self { tx }, ev_rx))
    }

    /// Ends enforcement on purpose: the hooks detach (after the owner task ends) instead
    /// of applying the fail mode.
    pub async fn detach(&self) -> Result<(), EnforcerError> {
        self.call(Command::Detach).await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EnforcerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| EnforcerError::Stopped)?;
        rx.await.map_err(|_| EnforcerError::Stopped)?
    }

    /// Watches a process (and, from now on, the children it forks) with subject 0: no
    /// policy, every action pauses.
    pub async fn watch(&self, tgid: u32) -> Result<(), EnforcerError> {
        self.watch_as(tgid, 0).await
    }

    /// Watches a process as `subject` (a policy subject's id).
    pub async fn watch_as(&self, tgid: u32, subject: u32) -> Result<(), EnforcerError> {
        self.call(|r| Command::Watch(tgid, subject, r)).await
    }

    pub async fn unwatch(&self, tgid: u32) -> Result<(), EnforcerError> {
        self.call(|r| Command::Unwatch(tgid, r)).await
    }

    pub async fn is_watched(&self, tgid: u32) -> Result<bool, EnforcerError> {
        Ok(self.watched_subject(tgid).await?.is_some())
    }

    pub async fn watched_subject(&self, tgid: u32) -> Result<Option<u32>, EnforcerError> {
        self.call(|r| Command::WatchedSubject(tgid, r)).await
    }

    /// Every watched process with its subject id.
    pub async fn watched(&self) -> Result<Vec<(u32, u32)>, EnforcerError> {
        self.call(Command::Watched).await
    }

    /// Ends a pause: writes the verdict for exactly this action and resumes the task, or
    /// kills it.
    pub async fn resolve(&self, key: VerdictKey, verdict: Verdict) -> Result<(), EnforcerError> {
        self.call(|r| Command::Resolve(key, verdict, None, r)).await
    }

    /// [`Enforcer::resolve`] with what an allow binds besides the action: what an exec's
    /// new image must carry (the process is killed if it carries anything else), or the
    /// Unix socket a connect or send must reach (denied if it reaches another).
    pub async fn resolve_expecting(
        &self,
        key: VerdictKey,
        verdict: Verdict,
        expect: Expectation,
    ) -> Result<(), EnforcerError> {
        self.call(|r| Command::Resolve(key, verdict, Some(expect), r))
            .await
    }

    /// Replaces the policy the kernel applies by itself.
    pub async fn apply_policy(&self, tables: KernelTables) -> Result<(), EnforcerError> {
        self.call(|r| Command::ApplyPolicy(Box::new(tables), r))
            .await
    }

    pub async fn set_fail_mode(&self, mode: FailMode) -> Result<(), EnforcerError> {
        self.call(|r| Command::SetFailMode(mode, r)).await
    }

    pub async fn counters(&self) -> Result<Counters, EnforcerError> {
        self.call(Command::Counters).await
    }

    pub async fn pending_verdicts(&self) -> Result<usize, EnforcerError> {
        self.call(Command::PendingVerdicts).await
    }
}

struct Owner<B> {
    backend: B,
    dns: DnsSink,
}

impl<B: Backend> Owner<B> {
    async fn run(
        mut self,
        events: AsyncFd<EventFd>,
        answers: AsyncFd<EventFd>,
        mut commands: mpsc::Receiver<Command>,
        out: mpsc::UnboundedSender<PauseEvent>,
    ) {
        // Locals of the body drop before the parameters: the registrations end before
        // the backend closes the fds.
        let mut events = events;
        let mut answers = answers;
        debug!(fd = events.get_ref().0, "enforcer started");
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.backend.sweep(),
                ready = answers.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            error!(error = %e, "polling the DNS answers failed; enforcer stops");
                            return;
                        }
                    };
                    let dns = &mut self.dns;
                    let more = self.backend.drain_dns(&mut |ev| {
                        if let KernelEvent::Dns(answer) = ev {
                            dns(&answer);
                        }
                    });
                    // Left ready when more wait: the next turn of the loop (after the
                    // pauses and commands, if any) reads on.
                    if !more {
                        guard.clear_ready();
                    }
                }
                ready = events.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            error!(error = %e, "polling the kernel events failed; enforcer stops");
                            return;
                        }
                    };
                    let mut unheard = Vec::new();
                    let dns = &mut self.dns;
                    self.backend.drain(&mut |ev| match ev {
                        KernelEvent::Dns(answer) => dns(&answer),
                        KernelEvent::Action(ev) => {
                            let is_pause = ev.is_pause();
                            if out.send(ev.clone()).is_err() && is_pause {
                                unheard.push(ev.key);
                            }
                        }
                    });
                    // Nobody will decide: fail closed rather than leave them stopped.
                    for key in unheard {
                        let _ = self.backend.resolve(key, Verdict::Deny);
                    }
                    guard.clear_ready();
                }
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(cmd) => self.handle(cmd),
                },
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        let b = &mut self.backend;
        match cmd {
            Command::Watch(tgid, subject, r) => {
                let _ = r.send(b.watch(tgid, subject));
            }
            Command::Unwatch(tgid, r) => {
                let _ = r.send(b.unwatch(tgid));
            }
            Command::WatchedSubject(tgid, r) => {
                let _ = r.send(Ok(b.watched_subject(tgid)));
            }
            Command::Watched(r) => {
                let _ = r.send(Ok(b.watched()));
            }
            Command::Resolve(key, v, expect, r) => {
                let result = match expect {
                    Some(Expectation::Exec(e)) if v == Verdict::Allow => {
                        b.expect_exec(key.tgid, e).and_then(|()| b.resolve(key, v))
                    }
                    Some(Expectation::UnixPeer(p)) if v == Verdict::Allow => b
                        .expect_unix_peer(key.tgid, p)
                        .and_then(|()| b.resolve(key, v)),
                    _ => b.resolve(key, v),
                };
                let _ = r.send(result);
            }
            Command::ApplyPolicy(t, r) => {
                let _ = r.send(b.apply_policy(&t));
            }
            Command::SetFailMode(mode, r) => {
                let _ = r.send(b.set_fail_mode(mode));
            }
            Command::Counters(r) => {
                let _ = r.send(b.counters());
            }
            Command::PendingVerdicts(r) => {
                let _ = r.send(Ok(b.pending_verdicts()));
            }
            Command::Detach(r) => {
                b.detach();
                let _ = r.send(Ok(()));
            }
        }
    }
}
