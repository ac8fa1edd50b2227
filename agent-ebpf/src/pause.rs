//! The pause protocol shared by every hook.
use agent_common::{RawEvent, VerdictKey, counter, verdict};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::bpf_send_signal_thread,
};

use crate::{EVENTS, SCRATCH, VERDICTS, count};

const SIGSTOP: u32 = 19;
const EPERM: i32 = 1;
/// The kernel restarts the syscall after the stop ends; the verifier accepts it as an
/// LSM return value.
const ERESTARTNOINTR: i32 = 513;

/// A zeroed scratch event for the current task, with identity fields filled in.
#[inline(always)]
pub fn scratch_event(kind: u32) -> Option<&'static mut RawEvent> {
    let ev = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, used only for the duration of this program run.
    let ev = unsafe { &mut *ev };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    ev.kind = kind;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    ev.flags = 0;
    ev.action_hash = 0;
    ev.family = 0;
    ev.port = 0;
    ev.ino = 0;
    ev.dev = 0;
    ev.addr = [0; 16];
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    Some(ev)
}

/// Decides a watched task's action: apply a verdict left for exactly this action, or
/// stop the task and tell the daemon. Returns the LSM return value.
#[inline(always)]
pub fn hold(ev: &RawEvent) -> i32 {
    let key = VerdictKey {
        tgid: ev.tgid,
        kind: ev.kind,
        action_hash: ev.action_hash,
    };
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(v) = unsafe { VERDICTS.get(key) }.copied() {
        // One-shot: the next identical action asks again.
        let _ = VERDICTS.remove(key);
        count(counter::VERDICTS_APPLIED);
        return if v == verdict::ALLOW { 0 } else { -EPERM };
    }

    // Reserve before signalling: if the daemon cannot be told, the task must not stop.
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        count(counter::DROPPED_EVENTS);
        return -EPERM;
    };
    entry.write(*ev);
    // Signal before the event is visible, or the daemon's SIGCONT could come first and
    // leave the task stopped for good. Thread-directed: a process-wide signal loses the
    // race when another thread already has a SIGSTOP pending.
    // SAFETY: plain helper call.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        entry.discard(0);
        count(counter::SIGNAL_FAILED);
        return -EPERM;
    }
    entry.submit(0);
    count(counter::PAUSED);
    -ERESTARTNOINTR
}
