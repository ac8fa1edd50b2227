//! belay's kernel programs.
//!
//! A watched task that is about to exec or connect is stopped with a thread-directed
//! SIGSTOP and its syscall returns -ERESTARTNOINTR, so the kernel restarts it once the
//! daemon has written a verdict and sent SIGCONT. The restarted hook consumes the
//! verdict and lets the call through or fails it with EPERM. See ../shared/DESIGN.md,
//! "Pausing a syscall", for the measurements behind each step.
#![no_std]
#![no_main]

mod connect;
mod dns;
mod exec;
mod image;
mod lifecycle;
mod pause;
mod policy;
mod ptrace;
mod sctp;
mod sendmsg;
mod unix_peer;

use agent_common::{
    DaemonState, EGRESS_RULES_MAX, EgressRule, ExeKey, ExecExpect, ExecRuleKey, KernelOffsets,
    RawEvent, SubjectConf, UnixPeer, VerdictKey, counter,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};

/// Read-only data filled in by the daemon from the running kernel's BTF before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: OFFSETS is a plain static; read_volatile keeps the compiler from folding
    // the zero initialiser into the code, as the loader rewrites it.
    unsafe { core::ptr::read_volatile(&raw const OFFSETS) }
}

// Maps that carry state across a daemon restart are pinned (by name, in the daemon's pin
// directory): who is watched, verdicts in flight, tasks stopped now, and the heartbeat.

/// Thread-group ids of watched processes, with the id of the subject (policy) each is
/// watched as; 0 when the subject is unknown (everything pauses).
#[map]
static WATCHED: HashMap<u32, u32> = HashMap::pinned(16_384, 0);

// Policy compiled by the daemon: what the kernel decides without a pause, and which
// processes become watched on exec. Pinned with the rest, so programs attached by an
// earlier daemon and those of the next share them.

/// Per-subject defaults and where its egress rules are, by subject id.
#[map]
static SUBJECTS: HashMap<u32, SubjectConf> = HashMap::pinned(1_024, 0);

/// Executables with an in-kernel decision, per subject; the value is a `rule_action`.
#[map]
static EXEC_RULES: HashMap<ExecRuleKey, u32> = HashMap::pinned(16_384, 0);

/// Egress rules, walked in order per subject (see `SubjectConf`).
#[map]
static EGRESS_RULES: Array<EgressRule> = Array::pinned(EGRESS_RULES_MAX, 0);

/// Processes running as these uids become watched (as the value's subject) on exec.
#[map]
static WATCH_UID: HashMap<u32, u32> = HashMap::pinned(1_024, 0);

/// Processes that exec these files become watched.
#[map]
static WATCH_EXE: HashMap<ExeKey, u32> = HashMap::pinned(1_024, 0);

/// Processes that exec inside these cgroups (v2 ids, whole subtrees) become watched.
#[map]
static WATCH_CGROUP: HashMap<u64, u32> = HashMap::pinned(4_096, 0);

/// One-shot verdicts written by the daemon, consumed by the restarted hook.
#[map]
static VERDICTS: HashMap<VerdictKey, u32> = HashMap::pinned(16_384, 0);

/// What execs allowed by a verdict must run with (argv, environment), by tgid.
#[map]
static EXEC_EXPECT: HashMap<u32, ExecExpect> = HashMap::pinned(4_096, 0);

/// Which Unix socket connects and sends allowed by a verdict must reach, by tgid.
#[map]
static UNIX_PEER: HashMap<u32, UnixPeer> = HashMap::pinned(4_096, 0);

/// Tasks stopped right now, by thread id, with the event that stopped them: a daemon
/// that restarts finds them here and resolves them.
#[map]
static PAUSED: HashMap<u32, RawEvent> = HashMap::pinned(4_096, 0);

/// [`DaemonState`] at index 0.
#[map]
static DAEMON: Array<DaemonState> = Array::pinned(1, 0);

/// Pause events for the daemon, and reports of actions decided in the kernel.
#[map]
static EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// DNS answers watched processes received. Apart from `EVENTS`: a process can make
/// itself receive any number of them, and they must never take the room a pause needs.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// Scratch space for building an event: it does not fit the 512-byte BPF stack with
/// everything else.
#[map]
static SCRATCH: PerCpuArray<RawEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *slot += 1 };
    }
}

/// The start every LSM hook shares: an earlier LSM's denial stands, and an unwatched
/// process pays this one map lookup. `Err` is the hook's answer; `Ok` is the subject the
/// current process is watched as, whose action needs a closer look.
#[inline(always)]
fn gate(prev: i32) -> Result<u32, i32> {
    if prev != 0 {
        return Err(prev);
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    match unsafe { WATCHED.get(tgid) } {
        Some(&subject) => Ok(subject),
        None => Err(0),
    }
}

#[inline(always)]
fn is_watched(tgid: u32) -> bool {
    // SAFETY: only the presence of the key is used.
    unsafe { WATCHED.get(tgid) }.is_some()
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

// A host build of this crate is only ever type-checked (clippy); std brings the panic
// handler there, and on the host `agent-common` may link std anyway (its `user` feature).
#[cfg(not(target_arch = "bpf"))]
extern crate std;

/// LSM programs must be GPL-compatible.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
