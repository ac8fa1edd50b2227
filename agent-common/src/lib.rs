//! Types shared by belay's kernel programs (`agent-ebpf`) and its host daemon (`agent`).
//!
//! Every type that crosses the kernel/user boundary is `#[repr(C)]`, has its size checked
//! at compile time, and carries enum-like values as raw integers: the kernel side writes
//! plain numbers and the user side decodes them with `TryFrom`, so a corrupted or
//! newer-version event is an error instead of undefined behaviour.
#![no_std]

#[cfg(feature = "user")]
pub mod decode;
mod dns;
mod offsets;

pub use dns::{DNS_CAPTURE, DnsEvent};
pub use offsets::KernelOffsets;

/// Length of `task_struct::comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of an exec'd path kept in an event (and hashed into the verdict key).
pub const PATH_LEN: usize = 256;

/// Kind of action a paused event describes, as carried in [`RawEvent::kind`] and
/// [`VerdictKey::kind`].
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const CONNECT: u32 = 2;
    /// `sendto`/`sendmsg`/`sendmmsg` with a destination address (UDP datagrams, TCP Fast
    /// Open).
    pub const SEND: u32 = 3;
    /// Not an action: a DNS answer a watched process received ([`super::DnsEvent`]).
    pub const DNS: u32 = 4;
    /// Not an action: a process stopped at its first instruction after an exec allowed
    /// by a verdict, for the daemon to check its new image ([`super::ExecExpect`]).
    pub const IMAGE: u32 = 5;
    /// Not an action: a DNS query a watched process sent ([`super::DnsEvent`]), so that only
    /// an answer to it may teach a name.
    pub const DNS_QUERY: u32 = 6;
}

/// `socket::type` values shown to reviewers.
pub mod sock_type {
    pub const STREAM: u16 = 1;
    pub const DGRAM: u16 = 2;
}

/// A policy rule's action the kernel applied by itself and reported (the `POLICY_*`
/// [`flags`], decoded by `decode::PauseEvent::policy_action`): the only ones it can apply without the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelDecision {
    /// Denied (EPERM).
    Deny,
    /// Denied and the process killed.
    Kill,
    /// Allowed and reported.
    Audit,
}

impl KernelDecision {
    /// The rule action's name in the policy language.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Kill => "kill",
            Self::Audit => "audit",
        }
    }
}

impl core::fmt::Display for KernelDecision {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verdict values stored in the `VERDICTS` map. Kill has no kernel value: the daemon
/// sends SIGKILL, which also ends a stopped task.
pub mod verdict {
    pub const ALLOW: u32 = 1;
    pub const DENY: u32 = 2;
}

/// Why an action could not be paused and was denied in the kernel instead
/// ([`RawEvent::flags`]). Such events are reports, not requests.
pub mod flags {
    /// An io_uring worker thread: it cannot be stopped by a signal.
    pub const IO_URING_WORKER: u32 = 1 << 0;
    /// The task is ptraced: its tracer could swallow the SIGSTOP and turn the pause into
    /// a busy loop of restarts.
    pub const PTRACED: u32 = 1 << 1;
    /// The action does not come from a syscall the kernel restarts after a stop (for
    /// example io_uring's inline issue of a connect inside `io_uring_enter`).
    pub const NOT_RESTARTABLE: u32 = 1 << 2;
    /// The daemon's heartbeat is stale (it died or hangs): the configured fail verdict
    /// was applied instead of a pause that nobody would resolve.
    pub const DAEMON_STALE: u32 = 1 << 3;
    /// Denied in the kernel by a policy rule compiled into the rule maps.
    pub const POLICY_DENY: u32 = 1 << 4;
    /// Denied and the process killed in the kernel by a policy rule.
    pub const POLICY_KILL: u32 = 1 << 5;
    /// Allowed in the kernel by a policy rule whose action is `audit`: reported only.
    pub const POLICY_AUDIT: u32 = 1 << 6;
}

/// What a policy rule compiled into the kernel's maps does with a watched process's
/// action ([`SubjectConf`], [`EgressRule`], the `EXEC_RULES` map values).
///
/// [`ASK`](rule_action::ASK) is zero so that anything missing or zeroed falls back to
/// the slow, safe path: pause, and let the daemon evaluate the whole policy.
pub mod rule_action {
    pub const ASK: u32 = 0;
    pub const ALLOW: u32 = 1;
    pub const DENY: u32 = 2;
    pub const KILL: u32 = 3;
    /// Allow, and report the action to the daemon.
    pub const AUDIT: u32 = 4;
}

/// Most egress rules the kernel walks for one subject; rules past this many are left to
/// the daemon (the subject's `egress_miss` becomes [`rule_action::ASK`]).
pub const EGRESS_RULES_PER_SUBJECT: u32 = 64;
/// Size of the `EGRESS_RULES` array: two generations (the one in force and the one
/// being written on a reload) of this many rules.
pub const EGRESS_RULES_MAX: u32 = 2048;

/// One subject's in-kernel policy, in the `SUBJECTS` map keyed by subject id (the value
/// of its processes' entries in `WATCHED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubjectConf {
    /// [`rule_action`] for an exec whose file has no entry in `EXEC_RULES`.
    pub exec_miss: u32,
    /// [`rule_action`] for a destination no egress rule matches.
    pub egress_miss: u32,
    /// This subject's rules are `EGRESS_RULES[egress_first..egress_first + egress_len]`,
    /// walked in order; the first that matches decides.
    pub egress_first: u32,
    pub egress_len: u32,
    /// [`rule_action`] for a Unix socket destination (connect, or a datagram sent to a
    /// named socket): the subject's egress default when none of its rules names Unix
    /// sockets, else [`rule_action::ASK`] (the daemon matches the path).
    pub unix_action: u32,
    pub _pad: u32,
}

/// Key of the `EXEC_RULES` map: an executable file (as the kernel identifies the file
/// it is about to run), for one subject.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecRuleKey {
    pub subject: u32,
    /// `super_block::s_dev` (the kernel's encoding, `major << 20 | minor`).
    pub dev: u32,
    pub ino: u64,
}

/// Key of the `WATCH_EXE` map: running this file makes a process watched.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// One egress rule as the kernel matches it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressRule {
    /// IPv6, or IPv4 as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), network order.
    pub addr: [u8; 16],
    /// Leading bits of `addr` that must match, 0..=128 (IPv4 /n is 96 + n).
    pub prefix_len: u8,
    /// 0 for any, else the socket type ([`sock_type`]).
    pub proto: u8,
    pub _pad: u16,
    /// Inclusive port range, host order; 0..=65535 for any.
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`rule_action`].
    pub action: u32,
}

/// The daemon's liveness, in the `DAEMON` array at index 0. The daemon rewrites it
/// every few hundred milliseconds; the hooks apply `fail_verdict` instead of pausing
/// once `heartbeat_ns` (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`) is older than
/// `stale_after_ns`, and when it was never written.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DaemonState {
    pub heartbeat_ns: u64,
    pub stale_after_ns: u64,
    /// [`verdict::ALLOW`] or [`verdict::DENY`]; anything else denies.
    pub fail_verdict: u32,
    pub _pad: u32,
}

/// x86_64 syscalls whose hook may pause: each restarts on -ERESTARTNOINTR.
pub mod syscall {
    pub const CONNECT: u64 = 42;
    pub const SENDTO: u64 = 44;
    pub const SENDMSG: u64 = 46;
    pub const EXECVE: u64 = 59;
    pub const SENDMMSG: u64 = 307;
    pub const EXECVEAT: u64 = 322;
}

/// Most bytes of an exec's argument area, and of its environment area, checked against
/// what was reviewed ([`ExecExpect`]); an exec with more is never granted.
pub const EXEC_IMAGE_MAX: u32 = 128 * 1024;

/// What an exec allowed by a verdict must run with, in the `EXEC_EXPECT` map by tgid:
/// written by the daemon with the verdict, from the argv and environment it read (and
/// showed) while the task was stopped. Once the new image is in place, the kernel stops
/// the task before its first instruction ([`kind::IMAGE`]) and the daemon compares the
/// kernel's own final copy of both; a process whose copy differs (rewritten by another
/// thread or process after the review) is killed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecExpect {
    /// [`image_hash`] of the last `args_len` bytes of the argument area (NUL-terminated
    /// strings): all of argv, or for a script the arguments after the script's path,
    /// which follow the interpreter's own.
    pub args_hash: u64,
    /// [`image_hash`] of the whole environment area.
    pub env_hash: u64,
    pub args_len: u32,
    pub env_len: u32,
    /// The `linux_binprm` of the exec that consumed the verdict, set by the kernel (0:
    /// not yet consumed). An expectation armed by another exec is stale.
    pub bprm: u64,
}

/// The Unix socket a connect or send allowed by a verdict must reach: the socket file
/// (device and inode) whose path the daemon vouched for and the reviewer saw. The path
/// is resolved again when the call restarts, so a symlink or directory swapped during
/// the pause could lead elsewhere; the kernel checks the socket it actually found
/// (`unix_stream_connect`, `unix_may_send`) against this and denies anything else.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnixPeer {
    /// `super_block::s_dev`, the kernel's encoding.
    pub dev: u32,
    /// Set by the kernel when the verdict is consumed: only that call is checked.
    pub armed: u32,
    pub ino: u64,
}

/// The hash [`ExecExpect`] holds: FNV-1a over 8-byte little-endian words, then the
/// remaining bytes one by one.
pub fn image_hash(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let words = bytes.len() / 8;
    let mut i = 0;
    while i < words {
        let w = &bytes[i * 8..i * 8 + 8];
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ w).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    let mut j = words * 8;
    while j < bytes.len() {
        h = (h ^ bytes[j] as u64).wrapping_mul(FNV_PRIME);
        j += 1;
    }
    h
}

/// `WATCHED` keys at and above this are never thread-group ids (pid_max is at most
/// 2^22): `WATCHED_RESERVED | tid` holds the slot of a child that watched thread `tid`
/// is forking, from `task_alloc` (which can still refuse the fork) to the fork
/// tracepoint (which cannot).
pub const WATCHED_RESERVED: u32 = 0x8000_0000;

/// `task_struct::flags` bit of io_uring worker threads.
pub const PF_IO_WORKER: u32 = 0x10;

/// Address families the connect hook understands (values of `sa_family_t`).
pub mod family {
    /// On an IPv4 socket, UDP and raw `sendmsg` treat it as `AF_INET`; `connect` with it
    /// disconnects.
    pub const UNSPEC: u16 = 0;
    pub const UNIX: u16 = 1;
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// Identifies one paused action: the process and a hash of the kernel's own copy of what
/// was checked (the sockaddr for connect; the path, inode and device for exec), mixed
/// with the start time of the process, so a later process that reuses the pid can never
/// consume a verdict left for an earlier one. A verdict
/// is consumed by the first hook run that matches it, so a process that changes its
/// action after resuming is paused again as a new request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub tgid: u32,
    pub kind: u32,
    pub action_hash: u64,
}

/// What the kernel tells the daemon when it pauses a task.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawEvent {
    /// One of [`kind`].
    pub kind: u32,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread id of the task that was stopped.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// [`flags`]: zero for a pause; otherwise why the action was decided in the kernel
    /// without pausing.
    pub flags: u32,
    pub action_hash: u64,
    /// Connect: `sa_family_t` and port in host byte order; zero for exec.
    pub family: u16,
    pub port: u16,
    /// Connect and send: `socket::type` (see [`sock_type`]).
    pub sock_type: u16,
    pub _pad: u16,
    /// Exec: inode number and device of the file the kernel is about to run.
    pub ino: u64,
    pub dev: u32,
    /// Id of the subject the process is watched as (its `WATCHED` value).
    pub subject: u32,
    /// Connect: IPv4 in the first 4 bytes, or IPv6, network byte order.
    pub addr: [u8; 16],
    pub comm: [u8; COMM_LEN],
    /// Exec: the path as the kernel received it (`linux_binprm::filename`), NUL-padded.
    pub path: [u8; PATH_LEN],
}

impl RawEvent {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            tgid: 0,
            pid: 0,
            uid: 0,
            gid: 0,
            flags: 0,
            action_hash: 0,
            family: 0,
            port: 0,
            sock_type: 0,
            _pad: 0,
            ino: 0,
            dev: 0,
            subject: 0,
            addr: [0; 16],
            comm: [0; COMM_LEN],
            path: [0; PATH_LEN],
        }
    }
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// A task could not be paused because the event ring buffer was full; the action
    /// was denied instead (fail closed).
    pub const DROPPED_EVENTS: u32 = 0;
    /// `bpf_send_signal_thread` failed; the action was denied instead.
    pub const SIGNAL_FAILED: u32 = 1;
    /// Tasks stopped and reported to the daemon.
    pub const PAUSED: u32 = 2;
    /// Verdicts found and consumed on restart.
    pub const VERDICTS_APPLIED: u32 = 3;
    /// Actions denied without a pause because the task could not be paused (see
    /// [`super::flags`]).
    pub const UNPAUSABLE_DENIED: u32 = 4;
    /// Actions decided by the fail verdict because the daemon's heartbeat was stale.
    pub const FAIL_MODE: u32 = 5;
    /// Forks of watched processes refused (EAGAIN) because `WATCHED` was nearly full:
    /// the child could not have been watched.
    pub const FORK_REFUSED: u32 = 6;
    /// Actions of watched processes decided by policy rules in the kernel, without a
    /// pause.
    pub const POLICY_DECIDED: u32 = 7;
    /// A process that should have become watched (a watched parent's child, or a match
    /// of a subject's uid, executable or cgroup) could not be added to `WATCHED`.
    pub const WATCH_FAILED: u32 = 8;
    /// DNS answers to watched processes not passed on (ring buffer full).
    pub const DNS_DROPPED: u32 = 9;
    /// Sends and connects of watched processes on IPv4/IPv6 sockets with an address
    /// belay cannot classify (a family other than the socket's own that the kernel may
    /// still act on): denied in the kernel.
    pub const UNCLASSIFIED_DENIED: u32 = 10;
    /// ptrace-class access (attach, `/proc/PID/mem`, `process_vm_writev`,
    /// `pidfd_getfd`) from a watched process to a process outside its subject: denied.
    pub const PTRACE_DENIED: u32 = 11;
    /// Processes that exec'd into a watched subject but did not fit `WATCHED`: killed
    /// before their first instruction rather than left to run unwatched.
    pub const WATCH_KILLED: u32 = 12;
    /// Execs whose new image's argv or environment differ from what was reviewed (or
    /// could not be read): killed before their first instruction.
    pub const EXEC_MISMATCH_KILLED: u32 = 13;
    /// Unix connects and sends allowed by a verdict that reached another socket than
    /// the one reviewed (its path was changed during the pause): denied.
    pub const UNIX_PEER_DENIED: u32 = 14;
    pub const COUNT: u32 = 15;
}

const _: () = assert!(core::mem::size_of::<VerdictKey>() == 16);
const _: () = assert!(core::mem::size_of::<RawEvent>() == 344);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 176);
const _: () = assert!(core::mem::size_of::<DnsEvent>() == 560);
const _: () = assert!(core::mem::size_of::<DaemonState>() == 24);
const _: () = assert!(core::mem::size_of::<SubjectConf>() == 24);
const _: () = assert!(core::mem::size_of::<ExecRuleKey>() == 16);
const _: () = assert!(core::mem::size_of::<ExeKey>() == 16);
const _: () = assert!(core::mem::size_of::<EgressRule>() == 28);
const _: () = assert!(core::mem::size_of::<ExecExpect>() == 32);
const _: () = assert!(core::mem::size_of::<UnixPeer>() == 16);

/// FNV-1a, 32 bit, of a subject's name: its id in the kernel's maps. Stable across
/// reloads and daemon restarts, so pinned `WATCHED` entries keep meaning the same
/// subject. 0 is never produced for a real name (the policy loader refuses it), and
/// means "watched, subject unknown".
pub const fn subject_id(name: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        hash ^= name[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// FNV-1a, 64 bit. Used on both sides so tests can recompute a key; it only has to
/// separate actions of one process, not resist an adversary who controls both inputs
/// (the key also holds the tgid, and verdicts are one-shot).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are repr(C), Copy, made only of integers and byte arrays, with
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::VerdictKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RawEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DaemonState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SubjectConf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecRuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EgressRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DnsEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecExpect {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnixPeer {}
}
