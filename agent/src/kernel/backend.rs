//! The seam between belay and the kernel mechanism that holds actions.
//!
//! Everything above this trait (policy, requests, the local API, the CLI) only talks to
//! an [`super::Enforcer`] handle. The BPF LSM backend ([`super::LsmBackend`]) is one
//! implementation; a backend for hosts without BPF LSM (cgroup sock_addr hooks and
//! fanotify, ../shared/DESIGN.md "Without BPF LSM") implements the same trait and
//! nothing above changes. [`super::FakeKernel`] (tests, or the `fake-backend` feature) implements it
//! in memory, so the daemon above it is tested on the host.
use std::os::fd::RawFd;

use agent_common::{ExecExpect, UnixPeer, VerdictKey, decode::PauseEvent};
pub use belay_agent_api::Counters;
/// What the hooks do when the daemon's heartbeat is stale (it died or hangs): the
/// policy's own type, so a policy's `fail_mode` reaches the kernel unconverted.
pub use belay_policy::FailMode;
pub use belay_policy::Verdict;

use crate::policy::KernelTables;

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
    #[error("starting the heartbeat thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("policy does not fit the kernel maps: {0}")]
    Policy(String),
}

/// What an allow binds besides the action it names: what an exec's new image must
/// carry, or which Unix socket a connect or send must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    Exec(ExecExpect),
    UnixPeer(UnixPeer),
}

/// Which way a DNS message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsDirection {
    /// A query the process sent to port 53.
    Query,
    /// An answer the process received from port 53.
    Answer,
}

/// A DNS message a watched process sent or received, with the other end as the kernel
/// saw it.
#[derive(Debug, Clone, Copy)]
pub struct DnsMessage<'a> {
    pub tgid: u32,
    pub direction: DnsDirection,
    /// The socket it went through: an answer counts only on its query's socket.
    pub sock: u64,
    /// An answer's sender, from the datagram's IP header, or a query's destination, as
    /// the socket sends it; `None` when it could not be read.
    pub peer: Option<std::net::SocketAddr>,
    /// Sent or received in a network namespace of the host's own user namespace:
    /// addresses there are as the host assigned them (in one an unprivileged process
    /// made, it can be any address it likes).
    pub host_netns: bool,
    pub message: &'a [u8],
}

/// One record from the kernel.
#[derive(Debug)]
pub enum KernelEvent<'a> {
    /// An action of a watched process: a pause to resolve, or a report of a decision
    /// the kernel took itself ([`PauseEvent::is_pause`]).
    Action(PauseEvent),
    /// A DNS message a watched process sent or received.
    Dns(DnsMessage<'a>),
}

/// A mechanism that holds watched processes' actions. Implementations are owned by one
/// task (see [`super::Enforcer`]), so methods take `&mut self` and never run
/// concurrently.
pub trait Backend: Send + 'static {
    /// Becomes readable when [`Backend::drain`] has actions.
    fn event_fd(&self) -> RawFd;
    /// Becomes readable when DNS answers wait: they have a buffer of their own, so a
    /// flood of them cannot crowd out the actions.
    fn dns_fd(&self) -> RawFd;
    /// Hands every waiting action to `sink`. Before each, the DNS answers the kernel
    /// wrote until then are handed over (a batch of them under a flood), so a name is
    /// known before a connect to it is.
    fn drain(&mut self, sink: &mut dyn FnMut(KernelEvent<'_>));
    /// Hands a batch of the waiting DNS answers to `sink`; true when more may wait.
    fn drain_dns(&mut self, sink: &mut dyn FnMut(KernelEvent<'_>)) -> bool;
    /// Changes what the hooks do once the heartbeat is stale.
    fn set_fail_mode(&mut self, fail_mode: FailMode) -> Result<(), EnforcerError>;
    /// Watches a process as `subject` (its children inherit it).
    fn watch(&mut self, tgid: u32, subject: u32) -> Result<(), EnforcerError>;
    fn unwatch(&mut self, tgid: u32) -> Result<(), EnforcerError>;
    /// The subject a process is watched as, if it is watched.
    fn watched_subject(&self, tgid: u32) -> Option<u32>;
    /// Every watched process with its subject.
    fn watched(&self) -> Vec<(u32, u32)>;
    /// Ends a pause with a verdict for exactly the action `key` names.
    fn resolve(&mut self, key: VerdictKey, verdict: Verdict) -> Result<(), EnforcerError>;
    /// Before an exec's allow verdict: what its new image must carry (see
    /// [`agent_common::ExecExpect`]).
    fn expect_exec(&mut self, tgid: u32, expect: ExecExpect) -> Result<(), EnforcerError>;
    /// Before a Unix connect's or send's allow verdict: the socket it must reach (see
    /// [`agent_common::UnixPeer`]).
    fn expect_unix_peer(&mut self, tgid: u32, peer: UnixPeer) -> Result<(), EnforcerError>;
    /// Replaces what the kernel decides by itself and who becomes watched.
    fn apply_policy(&mut self, tables: &KernelTables) -> Result<(), EnforcerError>;
    /// Periodic cleanup (verdicts of processes that are gone).
    fn sweep(&mut self);
    /// Tasks an earlier daemon left paused.
    fn recover(&mut self) -> Vec<PauseEvent>;
    fn counters(&self) -> Result<Counters, EnforcerError>;
    /// Verdicts written but not yet consumed.
    fn pending_verdicts(&self) -> usize;
    /// Ends enforcement on purpose (not a crash): hooks go once the backend is dropped.
    fn detach(&mut self);
}
