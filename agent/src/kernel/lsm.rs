//! The BPF LSM backend: the maps of belay's kernel programs.
use std::{
    collections::{BTreeMap, BTreeSet},
    hash::Hash,
    os::fd::{AsRawFd as _, RawFd},
};

use agent_common::{
    DNS_CAPTURE, DaemonState, DnsEvent, EGRESS_RULES_MAX, ExecExpect, RawEvent, SubjectConf,
    UnixPeer, VerdictKey, counter,
    decode::{DecodeError, PauseEvent},
    kind, verdict,
};
use aya::maps::{HashMap, MapData, MapError, RingBuf};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{debug, error, info, warn};

use super::{
    Loaded,
    backend::{
        Backend, Counters, DnsDirection, DnsMessage, EnforcerError, FailMode, KernelEvent, Verdict,
    },
    heartbeat::Heartbeat,
};
use crate::policy::KernelTables;

fn fail_verdict(mode: FailMode) -> u32 {
    match mode {
        FailMode::Allow => verdict::ALLOW,
        FailMode::Deny => verdict::DENY,
    }
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> EnforcerError {
    move |source| EnforcerError::Map { map, source }
}

fn signal(tgid: u32, sig: Signal) -> Result<(), EnforcerError> {
    match kill(Pid::from_raw(tgid as i32), sig) {
        Ok(()) => Ok(()),
        Err(nix::Error::ESRCH) => Err(EnforcerError::Gone(tgid)),
        Err(source) => Err(EnforcerError::Signal { tgid, source }),
    }
}

/// Makes the hash map `map` hold exactly `want`: new and changed entries first, then
/// stale ones removed, so each entry is always either the old or the new rule.
fn sync_map<K, V>(
    name: &'static str,
    map: &mut HashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
) -> Result<(), EnforcerError>
where
    K: aya::Pod + Ord + Hash,
    V: aya::Pod + PartialEq,
{
    for (k, v) in want {
        if map.get(k, 0).ok().as_ref() != Some(v) {
            map.insert(k, v, 0).map_err(map_err(name))?;
        }
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        match map.remove(&k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(())
}

pub struct LsmBackend {
    /// The programs, their maps and links, and the pin directory's lock (released when
    /// the backend goes).
    k: Loaded,
    undecodable: u64,
    heartbeat: Heartbeat,
    /// New images killed here for not carrying what was reviewed.
    images_killed: u64,
}

impl LsmBackend {
    /// Takes over the loaded programs and starts writing the heartbeat (the hooks pause
    /// again from the first write on).
    pub fn new(
        mut loaded: Loaded,
        stale_after: std::time::Duration,
        fail_mode: FailMode,
    ) -> Result<Self, EnforcerError> {
        let daemon = loaded.daemon.take().ok_or(EnforcerError::Stopped)?;
        let heartbeat = Heartbeat::start(
            daemon,
            DaemonState {
                heartbeat_ns: 0,
                stale_after_ns: stale_after.as_nanos() as u64,
                fail_verdict: fail_verdict(fail_mode),
                _pad: 0,
            },
        )?;
        Ok(Self {
            k: loaded,
            undecodable: 0,
            heartbeat,
            images_killed: 0,
        })
    }

    /// A record the daemon cannot read may stand for a stopped task: deny it.
    fn undecodable(&mut self, bytes: &[u8], err: DecodeError) {
        self.undecodable += 1;
        error!(error = %err, "undecodable kernel event");
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

    /// A task stopped at its first instruction after an exec allowed by a verdict
    /// ([`kind::IMAGE`]): resumed if its new image carries the argv and environment
    /// that were reviewed, killed if not (or if nothing was expected of it).
    fn check_image(&mut self, tgid: u32, pid: u32) {
        let _ = self.k.paused.remove(&pid);
        let expect = self.k.exec_expect.get(&tgid, 0).ok();
        let _ = self.k.exec_expect.remove(&tgid);
        if expect.is_some_and(|e| image_matches(tgid, &e)) {
            debug!(tgid, "the new image carries what was reviewed");
            if let Err(e) = signal(tgid, Signal::SIGCONT) {
                warn!(tgid, error = %e, "resuming a checked image failed");
            }
            return;
        }
        self.images_killed += 1;
        warn!(
            tgid,
            "killed: the new image's argv or environment is not what was reviewed"
        );
        let _ = signal(tgid, Signal::SIGKILL);
    }

    /// The half of `EGRESS_RULES` the subjects point into now (0 or 1); a reload writes
    /// the other half, then repoints the subjects.
    fn egress_half_in_use(&self) -> u32 {
        let half = EGRESS_RULES_MAX / 2;
        let upper = self
            .k
            .subjects
            .iter()
            .filter_map(Result::ok)
            .any(|(_, c)| c.egress_len > 0 && c.egress_first >= half);
        u32::from(upper)
    }
}

/// A DNS record from the ring buffer, if `bytes` is one.
fn dns_message(bytes: &[u8]) -> Option<DnsMessage<'_>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    if bytes.len() != size_of::<DnsEvent>() {
        return None;
    }
    // SAFETY: the length was checked, DnsEvent is repr(C) plain data for which any bit
    // pattern is valid, and read_unaligned has no alignment requirement.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DnsEvent>()) };
    let direction = match ev.kind {
        kind::DNS => DnsDirection::Answer,
        kind::DNS_QUERY => DnsDirection::Query,
        _ => return None,
    };
    let a = ev.peer_addr;
    let ip = match ev.peer_family {
        agent_common::family::INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        agent_common::family::INET6 => Some(IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    };
    let start = std::mem::offset_of!(DnsEvent, data);
    let len = (ev.len as usize).min(DNS_CAPTURE);
    Some(DnsMessage {
        tgid: ev.tgid,
        direction,
        sock: ev.sock,
        peer: ip.map(|ip| SocketAddr::new(ip, ev.peer_port)),
        host_netns: ev.userns_level == 0,
        message: &bytes[start..start + len],
    })
}

/// Whether the new image of `tgid` (its argument and environment areas, as
/// `/proc/PID/cmdline` and `environ` give them) is what `e` expects.
fn image_matches(tgid: u32, e: &ExecExpect) -> bool {
    let (Ok(args), Ok(env)) = (
        std::fs::read(format!("/proc/{tgid}/cmdline")),
        std::fs::read(format!("/proc/{tgid}/environ")),
    ) else {
        return false;
    };
    let n = e.args_len as usize;
    args.len() >= n
        && env.len() == e.env_len as usize
        && agent_common::image_hash(&args[args.len() - n..]) == e.args_hash
        && agent_common::image_hash(&env) == e.env_hash
}

/// Most DNS answers handed over in one go: a process that floods itself with answers
/// refills the buffer as fast as it is read, and the owner task has pauses to pass on.
const DNS_BATCH: usize = 256;

/// Hands up to [`DNS_BATCH`] DNS answers waiting in `ring` to `sink`; true when more
/// may wait. A record of another shape is logged and skipped (no task waits on it).
fn drain_dns(ring: &mut RingBuf<MapData>, sink: &mut dyn FnMut(KernelEvent<'_>)) -> bool {
    for _ in 0..DNS_BATCH {
        let Some(item) = ring.next() else {
            return false;
        };
        match dns_message(&item) {
            Some(answer) => sink(KernelEvent::Dns(answer)),
            None => warn!(
                len = item.len(),
                "a DNS record of an unknown shape was skipped"
            ),
        }
    }
    true
}

impl Backend for LsmBackend {
    fn event_fd(&self) -> RawFd {
        self.k.events.as_raw_fd()
    }

    fn dns_fd(&self) -> RawFd {
        self.k.dns_events.as_raw_fd()
    }

    fn drain(&mut self, sink: &mut dyn FnMut(KernelEvent<'_>)) {
        let mut bad = Vec::new();
        let mut images = Vec::new();
        while let Some(item) = self.k.events.next() {
            if let Ok(raw) = <&[u8; size_of::<RawEvent>()]>::try_from(&*item)
                && u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]) == kind::IMAGE
            {
                // SAFETY: RawEvent is repr(C) plain data of exactly this size.
                let ev = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<RawEvent>()) };
                images.push((ev.tgid, ev.pid));
                continue;
            }
            match PauseEvent::try_from(&*item) {
                Ok(ev) => {
                    let _ = drain_dns(&mut self.k.dns_events, sink);
                    sink(KernelEvent::Action(ev));
                }
                Err(e) => bad.push((item.to_vec(), e)),
            }
        }
        for (bytes, e) in bad {
            self.undecodable(&bytes, e);
        }
        for (tgid, pid) in images {
            self.check_image(tgid, pid);
        }
    }

    fn drain_dns(&mut self, sink: &mut dyn FnMut(KernelEvent<'_>)) -> bool {
        drain_dns(&mut self.k.dns_events, sink)
    }

    fn set_fail_mode(&mut self, fail_mode: FailMode) -> Result<(), EnforcerError> {
        self.heartbeat.set_fail_verdict(fail_verdict(fail_mode))
    }

    fn watch(&mut self, tgid: u32, subject: u32) -> Result<(), EnforcerError> {
        self.k
            .watched
            .insert(tgid, subject, 0)
            .map_err(map_err("WATCHED"))
    }

    fn unwatch(&mut self, tgid: u32) -> Result<(), EnforcerError> {
        match self.k.watched.remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("WATCHED")(e)),
        }
    }

    fn watched_subject(&self, tgid: u32) -> Option<u32> {
        self.k.watched.get(&tgid, 0).ok()
    }

    fn watched(&self) -> Vec<(u32, u32)> {
        // Slots reserved for children being forked are not processes.
        self.k
            .watched
            .iter()
            .filter_map(Result::ok)
            .filter(|&(tgid, _)| tgid < agent_common::WATCHED_RESERVED)
            .collect()
    }

    fn resolve(&mut self, key: VerdictKey, v: Verdict) -> Result<(), EnforcerError> {
        let value = match v {
            Verdict::Kill => return signal(key.tgid, Signal::SIGKILL),
            Verdict::Allow => verdict::ALLOW,
            Verdict::Deny => verdict::DENY,
        };
        if let Err(source) = self.k.verdicts.insert(key, value, 0) {
            // Resuming without a verdict would only pause it again: end it instead.
            let _ = signal(key.tgid, Signal::SIGKILL);
            return Err(EnforcerError::Map {
                map: "VERDICTS",
                source,
            });
        }
        // SIGCONT to the process: the stop is group-wide.
        signal(key.tgid, Signal::SIGCONT).inspect_err(|_| {
            let _ = self.k.verdicts.remove(&key);
        })
    }

    fn expect_exec(&mut self, tgid: u32, expect: ExecExpect) -> Result<(), EnforcerError> {
        // Not yet armed: the restarted exec that consumes the verdict arms it.
        let expect = ExecExpect { bprm: 0, ..expect };
        self.k
            .exec_expect
            .insert(tgid, expect, 0)
            .map_err(map_err("EXEC_EXPECT"))
    }

    fn expect_unix_peer(&mut self, tgid: u32, peer: UnixPeer) -> Result<(), EnforcerError> {
        // Not yet armed: the restarted call that consumes the verdict arms it.
        let peer = UnixPeer { armed: 0, ..peer };
        self.k
            .unix_peer
            .insert(tgid, peer, 0)
            .map_err(map_err("UNIX_PEER"))
    }

    fn apply_policy(&mut self, t: &KernelTables) -> Result<(), EnforcerError> {
        let half = EGRESS_RULES_MAX / 2;
        if t.egress.len() > half as usize {
            return Err(EnforcerError::Policy(format!(
                "{} egress rules after expansion; the kernel holds at most {half}",
                t.egress.len()
            )));
        }
        // Write the idle half, then point the subjects at it: a hook sees either the old
        // rule list or the new one, never a mix.
        let base = (1 - self.egress_half_in_use()) * half;
        for (i, rule) in t.egress.iter().enumerate() {
            self.k
                .egress_rules
                .set(base + i as u32, rule, 0)
                .map_err(map_err("EGRESS_RULES"))?;
        }
        let subjects: BTreeMap<u32, SubjectConf> = t
            .subjects
            .iter()
            .map(|&(id, mut conf)| {
                conf.egress_first += base;
                (id, conf)
            })
            .collect();
        sync_map("SUBJECTS", &mut self.k.subjects, &subjects)?;
        sync_map(
            "EXEC_RULES",
            &mut self.k.exec_rules,
            &t.exec.iter().copied().collect(),
        )?;
        sync_map(
            "WATCH_UID",
            &mut self.k.watch_uid,
            &t.watch_uid.iter().copied().collect(),
        )?;
        sync_map(
            "WATCH_EXE",
            &mut self.k.watch_exe,
            &t.watch_exe.iter().copied().collect(),
        )?;
        sync_map(
            "WATCH_CGROUP",
            &mut self.k.watch_cgroup,
            &t.watch_cgroup.iter().copied().collect(),
        )?;
        let subject_ids: BTreeSet<u32> = subjects.keys().copied().collect();
        info!(
            subjects = subject_ids.len(),
            exec_rules = t.exec.len(),
            egress_rules = t.egress.len(),
            "policy compiled into the kernel"
        );
        Ok(())
    }

    /// Removes verdicts whose process is gone: one killed between our SIGCONT and its
    /// restart never consumed its verdict, and a later process reusing the pid must not
    /// find it.
    fn sweep(&mut self) {
        let dead: Vec<VerdictKey> = self
            .k
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
            let _ = self.k.verdicts.remove(&key);
        }
    }

    /// Hands over the tasks an earlier daemon left stopped; forgets those gone or running.
    fn recover(&mut self) -> Vec<PauseEvent> {
        let entries: Vec<(u32, RawEvent)> = self.k.paused.iter().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        for (tid, raw) in entries {
            let stopped = crate::task::state(tid) == Some('T');
            if raw.kind == kind::IMAGE {
                if stopped {
                    self.check_image(raw.tgid, tid);
                } else {
                    let _ = self.k.paused.remove(&tid);
                }
                continue;
            }
            match PauseEvent::try_from(&raw) {
                Ok(ev) if stopped => {
                    info!(
                        tid,
                        tgid = ev.tgid,
                        "found a task still paused by an earlier daemon"
                    );
                    out.push(ev);
                }
                _ => {
                    let _ = self.k.paused.remove(&tid);
                }
            }
        }
        out
    }

    fn counters(&self) -> Result<Counters, EnforcerError> {
        let sum = |i: u32| -> Result<u64, EnforcerError> {
            let values = self.k.counters.get(&i, 0).map_err(map_err("COUNTERS"))?;
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
            policy_decided: sum(counter::POLICY_DECIDED)?,
            watch_failed: sum(counter::WATCH_FAILED)?,
            dns_dropped: sum(counter::DNS_DROPPED)?,
            unclassified_denied: sum(counter::UNCLASSIFIED_DENIED)?,
            ptrace_denied: sum(counter::PTRACE_DENIED)?,
            watch_killed: sum(counter::WATCH_KILLED)?,
            unix_peer_denied: sum(counter::UNIX_PEER_DENIED)?,
            exec_mismatch_killed: sum(counter::EXEC_MISMATCH_KILLED)? + self.images_killed,
            undecodable_events: self.undecodable,
        })
    }

    fn pending_verdicts(&self) -> usize {
        self.k.verdicts.keys().filter(Result::is_ok).count()
    }

    fn detach(&mut self) {
        self.heartbeat.stop();
        super::unpin_links(std::mem::take(&mut self.k.links));
    }
}
