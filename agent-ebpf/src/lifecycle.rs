//! Watched status follows processes: children inherit it, and it ends with the process.
use agent_common::counter;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{lsm, raw_tracepoint},
    programs::{LsmContext, RawTracePointContext},
};

use crate::{PAUSED, WATCHED, count, is_watched, offsets};

const CLONE_THREAD: u64 = 0x0001_0000;
const EAGAIN: i32 = 11;
/// Keys that are never thread-group ids (pid_max is at most 2^22), used to probe for
/// free room in `WATCHED`.
const PROBES: [u32; 4] = [u32::MAX, u32::MAX - 1, u32::MAX - 2, u32::MAX - 3];

/// True when `WATCHED` has room for a few more entries. Inserting a new key into a full
/// hash map fails, so try the probe keys and take them out again; a margin of four
/// covers forks racing on other CPUs between this check and the fork tracepoint.
#[inline(always)]
fn watched_has_room() -> bool {
    let mut room = true;
    for k in PROBES {
        if WATCHED.insert(k, 0, 0).is_err() {
            room = false;
        }
    }
    for k in PROBES {
        let _ = WATCHED.remove(k);
    }
    room
}

// int task_alloc(struct task_struct *task, unsigned long clone_flags), then the previous
// return value. A watched process may only fork while its child can be watched too: the
// fork tracepoint cannot refuse a fork, so a full map would let children escape.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_THREAD != 0 {
        // A thread shares its process's entry.
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_watched(tgid) || watched_has_room() {
        return 0;
    }
    count(counter::FORK_REFUSED);
    -EAGAIN
}

#[inline(always)]
fn read_u32(base: *const u8, off: u32) -> Option<u32> {
    // SAFETY: reading kernel memory through the helper.
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<u32>()) }.ok()
}

// sched_process_fork(struct task_struct *parent, struct task_struct *child)
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn on_fork(ctx: RawTracePointContext) -> i32 {
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let off = offsets();
    let (Some(ptgid), Some(cpid), Some(ctgid)) = (
        read_u32(parent, off.task_tgid),
        read_u32(child, off.task_pid),
        read_u32(child, off.task_tgid),
    ) else {
        return 0;
    };
    // A new thread shares its process's entry; only a new process needs one.
    if cpid == ctgid && ctgid != ptgid && is_watched(ptgid) {
        let _ = WATCHED.insert(ctgid, 0, 0);
    }
    0
}

// sched_process_exit(struct task_struct *p). It fires for every thread, after do_exit
// has decremented signal->live: the process is gone when live reaches zero, whichever
// thread exits last (the leader may exit first with pthread_exit).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn on_exit(ctx: RawTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let off = offsets();
    let (Some(tgid), Some(pid)) = (read_u32(task, off.task_tgid), read_u32(task, off.task_pid))
    else {
        return 0;
    };
    if !is_watched(tgid) {
        return 0;
    }
    // A thread killed while stopped is no longer paused.
    let _ = PAUSED.remove(pid);
    // SAFETY: reading kernel memory through the helper.
    let Ok(signal) =
        (unsafe { bpf_probe_read_kernel(task.add(off.task_signal as usize).cast::<*const u8>()) })
    else {
        return 0;
    };
    if read_u32(signal, off.signal_live) == Some(0) {
        let _ = WATCHED.remove(tgid);
    }
    0
}
