//! Watched status follows processes: children inherit it, and it ends with the process.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};

use crate::{PAUSED, WATCHED, is_watched, offsets};

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
