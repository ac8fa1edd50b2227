//! What was reviewed is what runs: an exec allowed by a verdict is checked, once its new
//! image is in place and before its first instruction, against the argv and environment
//! the daemon read and showed while the task was stopped. Another thread or process could
//! rewrite those strings in the caller's memory between the review and the restarted
//! exec copying them; the kernel's own final copy in the new image cannot be.
//!
//! The check itself is the daemon's: hashing up to 128 KiB here would take the verifier
//! past its limits. At `sched_process_exec` the task is stopped (before it returns to
//! user space) and reported; the daemon compares `/proc/PID/cmdline` and `environ` (the
//! new image's areas) with the expectation and resumes or kills it.
use agent_common::{counter, kind, verdict};
use aya_ebpf::helpers::generated::bpf_send_signal;

use crate::{EVENTS, EXEC_EXPECT, PAUSED, count, pause};

const SIGSTOP: u32 = 19;
const SIGKILL: u32 = 9;

/// The exec that consumes an allow verdict arms the expectation the daemon wrote with
/// it; any other exec of the process finds an expectation armed by an exec that failed
/// after its check, and drops it.
#[inline(always)]
pub fn after_check(tgid: u32, bprm: u64, consumed_allow: bool) {
    let Some(e) = EXEC_EXPECT.get_ptr_mut(tgid) else {
        return;
    };
    // SAFETY: a map value pointer, valid for this program run.
    let e = unsafe { &mut *e };
    if consumed_allow {
        e.bprm = bprm;
    } else if e.bprm != 0 && e.bprm != bprm {
        let _ = EXEC_EXPECT.remove(tgid);
    }
}

#[inline(always)]
fn kill() {
    count(counter::EXEC_MISMATCH_KILLED);
    // SAFETY: plain helper call on the current task.
    unsafe { bpf_send_signal(SIGKILL) };
}

/// At `sched_process_exec` of a watched process with an armed expectation: stop it and
/// tell the daemon, which checks the new image. When nobody would check (the daemon is
/// gone, the event cannot be sent), the fail verdict decides: deny kills.
#[inline(always)]
pub fn check(tgid: u32, subject: u32) {
    // SAFETY: the value is copied out at once.
    let Some(e) = (unsafe { EXEC_EXPECT.get(tgid) }).copied() else {
        return;
    };
    if e.bprm == 0 {
        // Written for a pause whose exec has not consumed its verdict yet.
        return;
    }
    if let Some(fail) = pause::daemon_stale() {
        let _ = EXEC_EXPECT.remove(tgid);
        if fail != verdict::ALLOW {
            kill();
        }
        return;
    }
    let Some(ev) = pause::scratch_event(kind::IMAGE, subject) else {
        kill();
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<agent_common::RawEvent>(0) else {
        let _ = EXEC_EXPECT.remove(tgid);
        kill();
        return;
    };
    entry.write(*ev);
    // Stopped before the event is visible (see `pause::hold`): a daemon's SIGCONT must
    // not come first.
    // SAFETY: plain helper call on the current task.
    unsafe { bpf_send_signal(SIGSTOP) };
    let _ = PAUSED.insert(ev.pid, *ev, 0);
    entry.submit(0);
}
