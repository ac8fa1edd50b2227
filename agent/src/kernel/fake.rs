//! A [`Backend`] without a kernel, for host tests of everything above the seam: the
//! enforcer task, the daemon's request lifecycle, reloads, the server link, recovery.
//!
//! [`FakeKernel`] is what the kernel holds: the watched processes, the pauses not yet
//! resolved, the verdicts written, the policy tables. Like belay's pinned maps it outlives
//! the daemon: [`FakeKernel::backend`] again after a daemon is gone is what a restarted
//! daemon finds. Tests inject pauses with [`FakeKernel::pause`] (only a watched process
//! pauses, with the subject it is watched as, as in the kernel) and read back the verdicts
//! the daemon gave.
//!
//! What it does not prove (that the hooks stop the task, that a verdict resumes it, that
//! the maps hold what the kernel reads) stays with the VM tests in `tests/`.
use std::{
    collections::{BTreeMap, VecDeque},
    io::{ErrorKind, Read as _, Write as _},
    net::SocketAddr,
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::net::UnixStream,
    },
    sync::{Arc, Mutex, MutexGuard},
};

use agent_common::{ExecExpect, UnixPeer, VerdictKey, decode::PauseEvent, kind};
use tokio::sync::Notify;

use super::{
    Action,
    backend::{
        Backend, Counters, DnsDirection, DnsMessage, EnforcerError, FailMode, KernelEvent, Verdict,
    },
};
use crate::policy::KernelTables;

/// How long [`FakeKernel`]'s waits last (on a paused clock: virtual seconds).
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A DNS query or answer waiting for the daemon, as the kernel's DNS ring holds it.
#[derive(Debug, Clone)]
struct DnsRecord {
    tgid: u32,
    direction: DnsDirection,
    sock: u64,
    peer: Option<SocketAddr>,
    host_netns: bool,
    message: Vec<u8>,
}

/// The socket the fake's DNS messages go through.
const DNS_SOCK: u64 = 1;

/// The write ends of the current backend's event fds: a byte makes its fd readable.
struct Bells {
    events: UnixStream,
    dns: UnixStream,
}

#[derive(Default)]
struct State {
    watched: BTreeMap<u32, u32>,
    /// Paused and not yet resolved, in pause order (the kernel's PAUSED map): what a
    /// restarted daemon recovers.
    held: Vec<PauseEvent>,
    /// Written and not yet drained (the event ring buffer).
    ring: VecDeque<PauseEvent>,
    dns: VecDeque<DnsRecord>,
    /// Every verdict given, in order.
    verdicts: Vec<(VerdictKey, Verdict)>,
    exec_expect: BTreeMap<u32, ExecExpect>,
    unix_peer: BTreeMap<u32, UnixPeer>,
    /// Every policy applied, in order.
    tables: Vec<KernelTables>,
    fail_mode: Option<FailMode>,
    detached: bool,
    /// Processes that exited: a verdict for them fails with [`EnforcerError::Gone`].
    gone: Vec<u32>,
    pending_verdicts: usize,
    pauses: u64,
    next_hash: u64,
    bells: Option<Bells>,
}

impl State {
    fn ring(&mut self, dns: bool) {
        if let Some(bells) = &mut self.bells {
            let bell = if dns {
                &mut bells.dns
            } else {
                &mut bells.events
            };
            // Full means readable already: the daemon will drain it.
            let _ = bell.write(&[1]);
        }
    }
}

/// The kernel side of a fake backend, shared by the test and the backends made from it.
#[derive(Clone, Default)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeKernel {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// A backend over this kernel, as a (re)started daemon loads one. Events go to the
    /// newest backend only.
    pub fn backend(&self) -> std::io::Result<FakeBackend> {
        let (events, events_bell) = UnixStream::pair()?;
        let (dns, dns_bell) = UnixStream::pair()?;
        for s in [&events, &dns, &events_bell, &dns_bell] {
            s.set_nonblocking(true)?;
        }
        let mut state = self.state();
        state.bells = Some(Bells {
            events: events_bell,
            dns: dns_bell,
        });
        // Whatever was written before this backend existed is read by its first drain.
        if !state.ring.is_empty() {
            state.ring(false);
        }
        drop(state);
        Ok(FakeBackend {
            kernel: self.clone(),
            events,
            dns,
        })
    }

    /// `tgid`, watched, stops at `action` as user `uid`: the pause the daemon must end
    /// with one verdict. Panics if `tgid` is not watched: the kernel pauses nothing else.
    pub fn pause(&self, tgid: u32, uid: u32, action: Action) -> PauseEvent {
        self.event(tgid, uid, action, 0)
    }

    /// An action the kernel decided by itself and only reports (`flags`, one of
    /// `agent_common::flags`, not 0).
    pub fn report(&self, tgid: u32, uid: u32, action: Action, flags: u32) -> PauseEvent {
        assert_ne!(flags, 0, "a report has flags; use pause for a pause");
        self.event(tgid, uid, action, flags)
    }

    fn event(&self, tgid: u32, uid: u32, action: Action, flags: u32) -> PauseEvent {
        let mut state = self.state();
        let subject = *state
            .watched
            .get(&tgid)
            .unwrap_or_else(|| panic!("process {tgid} is not watched: it cannot pause"));
        state.next_hash += 1;
        let kind = match &action {
            Action::Exec { .. } => kind::EXEC,
            Action::Connect { .. } | Action::ConnectUnix { .. } => kind::CONNECT,
            Action::Send { .. } | Action::SendUnix { .. } => kind::SEND,
        };
        let ev = PauseEvent {
            tgid,
            pid: tgid,
            uid,
            gid: uid,
            comm: "fake-agent".into(),
            subject,
            flags,
            action,
            key: VerdictKey {
                tgid,
                kind,
                action_hash: state.next_hash,
            },
        };
        if ev.is_pause() {
            state.pauses += 1;
            state.held.push(ev.clone());
        }
        state.ring.push_back(ev.clone());
        state.ring(false);
        ev
    }

    /// A DNS answer `tgid` received from `from`.
    pub fn dns_answer(&self, tgid: u32, from: SocketAddr, message: Vec<u8>) {
        self.dns(tgid, DnsDirection::Answer, from, message);
    }

    /// A DNS query `tgid` sent to `to` (on the same socket as its answers).
    pub fn dns_query(&self, tgid: u32, to: SocketAddr, message: Vec<u8>) {
        self.dns(tgid, DnsDirection::Query, to, message);
    }

    fn dns(&self, tgid: u32, direction: DnsDirection, peer: SocketAddr, message: Vec<u8>) {
        let mut state = self.state();
        state.dns.push_back(DnsRecord {
            tgid,
            direction,
            sock: DNS_SOCK,
            peer: Some(peer),
            host_netns: true,
            message,
        });
        state.ring(true);
    }

    /// Every verdict given, in order.
    pub fn verdicts(&self) -> Vec<(VerdictKey, Verdict)> {
        self.state().verdicts.clone()
    }

    /// The verdicts given for exactly the action `key` names.
    pub fn verdicts_for(&self, key: VerdictKey) -> Vec<Verdict> {
        self.state()
            .verdicts
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|&(_, v)| v)
            .collect()
    }

    /// Waits until the action `key` names has a verdict, and returns the first.
    pub async fn verdict(&self, key: VerdictKey) -> Verdict {
        self.until(|s| s.verdicts.iter().find(|(k, _)| *k == key).map(|&(_, v)| v))
            .await
    }

    /// Waits until `tgid` is watched, and returns its subject.
    pub async fn watched_as(&self, tgid: u32) -> u32 {
        self.until(|s| s.watched.get(&tgid).copied()).await
    }

    /// Waits until at least `n` policies were applied, and returns the last.
    pub async fn applied(&self, n: usize) -> KernelTables {
        self.until(|s| {
            (s.tables.len() >= n)
                .then(|| s.tables.last().cloned())
                .flatten()
        })
        .await
    }

    /// Waits until the backend was detached (a deliberate stop).
    pub async fn until_detached(&self) {
        self.until(|s| s.detached.then_some(())).await;
    }

    /// Waits for `found` to find something; panics after [`PATIENCE`], so a test whose
    /// daemon never acts fails instead of hanging.
    async fn until<T>(&self, found: impl FnMut(&State) -> Option<T>) -> T {
        tokio::time::timeout(PATIENCE, self.until_found(found))
            .await
            .expect("the fake kernel waited in vain")
    }

    async fn until_found<T>(&self, mut found: impl FnMut(&State) -> Option<T>) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change in between is not missed.
            changed.as_mut().enable();
            if let Some(t) = found(&self.state()) {
                return t;
            }
            changed.await;
        }
    }

    fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// Pauses not yet resolved.
    pub fn held(&self) -> Vec<PauseEvent> {
        self.state().held.clone()
    }

    pub fn watched(&self) -> BTreeMap<u32, u32> {
        self.state().watched.clone()
    }

    /// Every policy applied, in order.
    pub fn tables(&self) -> Vec<KernelTables> {
        self.state().tables.clone()
    }

    pub fn fail_mode(&self) -> Option<FailMode> {
        self.state().fail_mode
    }

    pub fn exec_expect(&self, tgid: u32) -> Option<ExecExpect> {
        self.state().exec_expect.get(&tgid).copied()
    }

    /// The Unix socket an allow told `tgid`'s connect or send to reach.
    pub fn unix_peer(&self, tgid: u32) -> Option<UnixPeer> {
        self.state().unix_peer.get(&tgid).copied()
    }

    pub fn detached(&self) -> bool {
        self.state().detached
    }

    /// The process exited: verdicts for it fail as for a process that is gone.
    pub fn exit(&self, tgid: u32) {
        let mut state = self.state();
        state.gone.push(tgid);
        state.held.retain(|ev| ev.tgid != tgid);
        state.watched.remove(&tgid);
    }

    /// Verdicts written and not yet consumed, as [`Backend::pending_verdicts`] reports.
    pub fn set_pending_verdicts(&self, n: usize) {
        self.state().pending_verdicts = n;
    }
}

/// The backend a daemon owns, over a [`FakeKernel`].
pub struct FakeBackend {
    kernel: FakeKernel,
    /// Read ends of the bells: readable while events wait.
    events: UnixStream,
    dns: UnixStream,
}

/// Reads a bell empty, so its fd is readable again only when something new waits.
fn silence(bell: &mut UnixStream) {
    let mut buf = [0u8; 64];
    loop {
        match bell.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl FakeBackend {
    fn state(&self) -> MutexGuard<'_, State> {
        self.kernel.state()
    }

    fn hand_dns(records: Vec<DnsRecord>, sink: &mut dyn FnMut(KernelEvent<'_>)) {
        for r in &records {
            sink(KernelEvent::Dns(DnsMessage {
                tgid: r.tgid,
                direction: r.direction,
                sock: r.sock,
                peer: r.peer,
                host_netns: r.host_netns,
                message: &r.message,
            }));
        }
    }
}

impl Backend for FakeBackend {
    fn event_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    fn dns_fd(&self) -> RawFd {
        self.dns.as_raw_fd()
    }

    fn drain(&mut self, sink: &mut dyn FnMut(KernelEvent<'_>)) {
        silence(&mut self.events);
        loop {
            // Not held across `sink`: it may call back into the test's handle.
            let (dns, ev) = {
                let mut state = self.state();
                let Some(ev) = state.ring.pop_front() else {
                    return;
                };
                // As the LSM backend does: the answers written before an action first.
                (state.dns.drain(..).collect(), ev)
            };
            Self::hand_dns(dns, sink);
            sink(KernelEvent::Action(ev));
        }
    }

    fn drain_dns(&mut self, sink: &mut dyn FnMut(KernelEvent<'_>)) -> bool {
        silence(&mut self.dns);
        let dns = self.state().dns.drain(..).collect();
        Self::hand_dns(dns, sink);
        false
    }

    fn set_fail_mode(&mut self, fail_mode: FailMode) -> Result<(), EnforcerError> {
        self.state().fail_mode = Some(fail_mode);
        self.kernel.changed();
        Ok(())
    }

    fn watch(&mut self, tgid: u32, subject: u32) -> Result<(), EnforcerError> {
        self.state().watched.insert(tgid, subject);
        self.kernel.changed();
        Ok(())
    }

    fn unwatch(&mut self, tgid: u32) -> Result<(), EnforcerError> {
        self.state().watched.remove(&tgid);
        self.kernel.changed();
        Ok(())
    }

    fn watched_subject(&self, tgid: u32) -> Option<u32> {
        self.state().watched.get(&tgid).copied()
    }

    fn watched(&self) -> Vec<(u32, u32)> {
        self.state().watched.iter().map(|(&t, &s)| (t, s)).collect()
    }

    fn resolve(&mut self, key: VerdictKey, verdict: Verdict) -> Result<(), EnforcerError> {
        let mut state = self.state();
        if state.gone.contains(&key.tgid) {
            return Err(EnforcerError::Gone(key.tgid));
        }
        state.verdicts.push((key, verdict));
        state.held.retain(|ev| ev.key != key);
        drop(state);
        self.kernel.changed();
        Ok(())
    }

    fn expect_exec(&mut self, tgid: u32, expect: ExecExpect) -> Result<(), EnforcerError> {
        self.state().exec_expect.insert(tgid, expect);
        Ok(())
    }

    fn expect_unix_peer(&mut self, tgid: u32, peer: UnixPeer) -> Result<(), EnforcerError> {
        self.state().unix_peer.insert(tgid, peer);
        Ok(())
    }

    fn apply_policy(&mut self, tables: &KernelTables) -> Result<(), EnforcerError> {
        self.state().tables.push(tables.clone());
        self.kernel.changed();
        Ok(())
    }

    fn sweep(&mut self) {}

    /// The pauses still held: a restarted daemon must decide them. The events of the
    /// run that died are not read again (the held ones come back here instead).
    fn recover(&mut self) -> Vec<PauseEvent> {
        let mut state = self.state();
        state.ring.clear();
        state.held.clone()
    }

    fn counters(&self) -> Result<Counters, EnforcerError> {
        let state = self.state();
        Ok(Counters {
            paused: state.pauses,
            verdicts_applied: state.verdicts.len() as u64,
            ..Counters::default()
        })
    }

    fn pending_verdicts(&self) -> usize {
        self.state().pending_verdicts
    }

    fn detach(&mut self) {
        self.state().detached = true;
        self.kernel.changed();
    }
}
