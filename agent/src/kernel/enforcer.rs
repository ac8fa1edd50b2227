//! The one task that owns the kernel programs' maps. Everything else talks to it through
//! an [`Enforcer`] handle, so map updates and signals are never interleaved by two
//! writers.
use std::{os::fd::AsRawFd as _, time::Duration};

use agent_common::{
    DaemonState, RawEvent, VerdictKey, counter,
    decode::{DecodeError, PauseEvent},
    verdict,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
};
use tracing::{debug, error, warn};

use super::Loaded;

/// What happens to a paused action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The syscall runs.
    Allow,
    /// The syscall fails with EPERM.
    Deny,
    /// The process is killed (SIGKILL) without resuming.
    Kill,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Kill => "kill",
        })
    }
}

/// What the hooks do when the daemon's heartbeat is stale (it died or hangs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Watched processes' actions fail with EPERM until a daemon is back.
    Deny,
    /// Watched processes' actions run unchecked until a daemon is back.
    Allow,
}

/// How often the owner task writes the heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// How often verdicts of processes that are gone are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC is the clock of bpf_ktime_get_ns.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("kernel map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("signalling process {tgid}: {source}")]
    Signal {
        tgid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("the enforcer task has stopped")]
    Stopped,
    #[error("watching the event ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub dropped_events: u64,
    pub signal_failed: u64,
    pub paused: u64,
    pub verdicts_applied: u64,
    /// Actions denied in the kernel because the task could not be paused (io_uring,
    /// ptraced, not a restartable syscall).
    pub unpausable_denied: u64,
    /// Actions decided by the fail mode while the daemon's heartbeat was stale.
    pub fail_mode: u64,
    /// Forks of watched processes refused because no more processes could be watched.
    pub fork_refused: u64,
    /// Events the daemon could not decode (their tasks were denied).
    pub undecodable_events: u64,
}

type Reply<T> = oneshot::Sender<Result<T, EnforcerError>>;

enum Command {
    Watch(u32, Reply<()>),
    Unwatch(u32, Reply<()>),
    IsWatched(u32, Reply<bool>),
    Resolve(VerdictKey, Verdict, Reply<()>),
    Counters(Reply<Counters>),
    /// Verdicts written but not yet consumed by a restarted hook.
    PendingVerdicts(Reply<usize>),
    /// Stop the heartbeat and remove the link pins: the hooks detach when the owner
    /// task ends.
    Detach(Reply<()>),
}

/// Handle to the enforcer task. Cheap to clone.
#[derive(Clone)]
pub struct Enforcer {
    tx: mpsc::Sender<Command>,
}

impl Enforcer {
    /// Starts the owner task, which writes the heartbeat the hooks check (a daemon silent
    /// for `stale_after` gets `fail_mode` applied instead of pauses). Kernel events arrive
    /// on the returned receiver, first those of tasks an earlier daemon left stopped:
    /// each pause ([`PauseEvent::is_pause`]) must get exactly one [`Enforcer::resolve`];
    /// the others report actions the kernel decided itself.
    pub fn start(
        loaded: Loaded,
        stale_after: Duration,
        fail_mode: FailMode,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PauseEvent>), EnforcerError> {
        let Loaded {
            _ebpf,
            links,
            watched,
            verdicts,
            paused,
            daemon,
            events,
            counters,
            offsets: _,
            pin_dir: _,
        } = loaded;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which keeps it
        // open and registered for as long as it lives.
        let events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| EnforcerError::Poll(e.into()))?;
        let (tx, rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut owner = Owner {
            _ebpf,
            links,
            watched,
            verdicts,
            paused,
            daemon,
            counters,
            undecodable: 0,
            liveness: DaemonState {
                heartbeat_ns: 0,
                stale_after_ns: stale_after.as_nanos() as u64,
                fail_verdict: match fail_mode {
                    FailMode::Allow => verdict::ALLOW,
                    FailMode::Deny => verdict::DENY,
                },
                _pad: 0,
            },
            beating: true,
        };
        owner.heartbeat()?;
        owner.recover(&ev_tx);
        tokio::spawn(owner.run(events, rx, ev_tx));
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

    /// Watches a process (and, from now on, the children it forks).
    pub async fn watch(&self, tgid: u32) -> Result<(), EnforcerError> {
        self.call(|r| Command::Watch(tgid, r)).await
    }

    pub async fn unwatch(&self, tgid: u32) -> Result<(), EnforcerError> {
        self.call(|r| Command::Unwatch(tgid, r)).await
    }

    pub async fn is_watched(&self, tgid: u32) -> Result<bool, EnforcerError> {
        self.call(|r| Command::IsWatched(tgid, r)).await
    }

    /// Ends a pause: writes the verdict for exactly this action and resumes the task, or
    /// kills it.
    pub async fn resolve(&self, key: VerdictKey, verdict: Verdict) -> Result<(), EnforcerError> {
        self.call(|r| Command::Resolve(key, verdict, r)).await
    }

    pub async fn counters(&self) -> Result<Counters, EnforcerError> {
        self.call(Command::Counters).await
    }

    pub async fn pending_verdicts(&self) -> Result<usize, EnforcerError> {
        self.call(Command::PendingVerdicts).await
    }
}

struct Owner {
    _ebpf: aya::Ebpf,
    links: Vec<aya::programs::links::PinnedLink>,
    watched: aya::maps::HashMap<aya::maps::MapData, u32, u32>,
    verdicts: aya::maps::HashMap<aya::maps::MapData, VerdictKey, u32>,
    paused: aya::maps::HashMap<aya::maps::MapData, u32, RawEvent>,
    daemon: aya::maps::Array<aya::maps::MapData, DaemonState>,
    counters: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    undecodable: u64,
    liveness: DaemonState,
    beating: bool,
}

fn signal(tgid: u32, sig: Signal) -> Result<(), EnforcerError> {
    match kill(Pid::from_raw(tgid as i32), sig) {
        Ok(()) => Ok(()),
        Err(nix::Error::ESRCH) => Err(EnforcerError::Gone(tgid)),
        Err(source) => Err(EnforcerError::Signal { tgid, source }),
    }
}

impl Owner {
    async fn run(
        mut self,
        mut events: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
        mut commands: mpsc::Receiver<Command>,
        out: mpsc::UnboundedSender<PauseEvent>,
    ) {
        debug!(fd = events.get_ref().as_raw_fd(), "enforcer started");
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = beat.tick(), if self.beating => {
                    if let Err(e) = self.heartbeat() {
                        error!(error = %e, "writing the heartbeat failed");
                    }
                }
                _ = sweep.tick() => self.sweep_verdicts(),
                ready = events.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            error!(error = %e, "polling the event ring buffer failed; enforcer stops");
                            return;
                        }
                    };
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        match PauseEvent::try_from(&*item) {
                            Ok(ev) => {
                                let is_pause = ev.is_pause();
                                if out.send(ev.clone()).is_err() && is_pause {
                                    // Nobody will decide: fail closed rather than leave it stopped.
                                    let _ = self.resolve(ev.key, Verdict::Deny);
                                }
                            }
                            Err(e) => self.undecodable(&item, e),
                        }
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

    /// Removes verdicts whose process is gone: one killed between our SIGCONT and its
    /// restart never consumed its verdict, and a later process reusing the pid must not
    /// find it.
    fn sweep_verdicts(&mut self) {
        let dead: Vec<VerdictKey> = self
            .verdicts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !std::path::Path::new(&format!("/proc/{}", k.tgid)).exists())
            .collect();
        for key in dead {
            debug!(
                tgid = key.tgid,
                "removing the verdict of a process that is gone"
            );
            let _ = self.verdicts.remove(&key);
        }
    }

    fn heartbeat(&mut self) -> Result<(), EnforcerError> {
        self.liveness.heartbeat_ns = monotonic_ns();
        self.daemon
            .set(0, self.liveness, 0)
            .map_err(|source| EnforcerError::Map {
                map: "DAEMON",
                source,
            })
    }

    /// Hands over the tasks an earlier daemon left stopped; forgets those gone or running.
    fn recover(&mut self, out: &mpsc::UnboundedSender<PauseEvent>) {
        let entries: Vec<(u32, RawEvent)> = self.paused.iter().filter_map(Result::ok).collect();
        for (tid, raw) in entries {
            let stopped = crate::task::state(tid) == Some('T');
            match PauseEvent::try_from(&raw) {
                Ok(ev) if stopped => {
                    tracing::info!(
                        tid,
                        tgid = ev.tgid,
                        "found a task still paused by an earlier daemon"
                    );
                    let _ = out.send(ev);
                }
                _ => {
                    let _ = self.paused.remove(&tid);
                }
            }
        }
    }

    /// A record the daemon cannot read still stands for a stopped task: deny it.
    fn undecodable(&mut self, bytes: &[u8], err: DecodeError) {
        self.undecodable += 1;
        error!(error = %err, "undecodable pause event");
        if bytes.len() >= 32 {
            let u32_at =
                |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap_or_default());
            let key = VerdictKey {
                tgid: u32_at(4),
                kind: u32_at(0),
                action_hash: u64::from_ne_bytes(bytes[24..32].try_into().unwrap_or_default()),
            };
            if let Err(e) = self.resolve(key, Verdict::Deny) {
                warn!(error = %e, tgid = key.tgid, "could not deny the task of an undecodable event");
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Watch(tgid, r) => {
                let res = self
                    .watched
                    .insert(tgid, 0, 0)
                    .map_err(|source| EnforcerError::Map {
                        map: "WATCHED",
                        source,
                    });
                let _ = r.send(res);
            }
            Command::Unwatch(tgid, r) => {
                let res = match self.watched.remove(&tgid) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                    Err(source) => Err(EnforcerError::Map {
                        map: "WATCHED",
                        source,
                    }),
                };
                let _ = r.send(res);
            }
            Command::IsWatched(tgid, r) => {
                let _ = r.send(Ok(self.watched.get(&tgid, 0).is_ok()));
            }
            Command::Resolve(key, v, r) => {
                let _ = r.send(self.resolve(key, v));
            }
            Command::Counters(r) => {
                let _ = r.send(self.counters());
            }
            Command::PendingVerdicts(r) => {
                let _ = r.send(Ok(self.verdicts.keys().filter(Result::is_ok).count()));
            }
            Command::Detach(r) => {
                self.beating = false;
                super::unpin_links(std::mem::take(&mut self.links));
                let _ = r.send(Ok(()));
            }
        }
    }

    fn resolve(&mut self, key: VerdictKey, v: Verdict) -> Result<(), EnforcerError> {
        let value = match v {
            Verdict::Kill => return signal(key.tgid, Signal::SIGKILL),
            Verdict::Allow => verdict::ALLOW,
            Verdict::Deny => verdict::DENY,
        };
        if let Err(source) = self.verdicts.insert(key, value, 0) {
            // Resuming without a verdict would only pause it again: end it instead.
            let _ = signal(key.tgid, Signal::SIGKILL);
            return Err(EnforcerError::Map {
                map: "VERDICTS",
                source,
            });
        }
        // SIGCONT to the process: the stop is group-wide.
        signal(key.tgid, Signal::SIGCONT).inspect_err(|_| {
            let _ = self.verdicts.remove(&key);
        })
    }

    fn counters(&self) -> Result<Counters, EnforcerError> {
        let sum = |i: u32| -> Result<u64, EnforcerError> {
            let values = self
                .counters
                .get(&i, 0)
                .map_err(|source| EnforcerError::Map {
                    map: "COUNTERS",
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            dropped_events: sum(counter::DROPPED_EVENTS)?,
            signal_failed: sum(counter::SIGNAL_FAILED)?,
            paused: sum(counter::PAUSED)?,
            verdicts_applied: sum(counter::VERDICTS_APPLIED)?,
            unpausable_denied: sum(counter::UNPAUSABLE_DENIED)?,
            fail_mode: sum(counter::FAIL_MODE)?,
            fork_refused: sum(counter::FORK_REFUSED)?,
            undecodable_events: self.undecodable,
        })
    }
}
