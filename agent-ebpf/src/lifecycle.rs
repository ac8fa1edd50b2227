//! Watched status follows processes: children inherit it, and it ends with the process.
use agent_common::{ExeKey, WATCHED_RESERVED, counter};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_send_signal},
    },
    macros::{lsm, raw_tracepoint},
    programs::{LsmContext, RawTracePointContext},
};

use crate::{
    EXEC_EXPECT, PAUSED, UNIX_PEER, WATCH_CGROUP, WATCH_EXE, WATCH_UID, WATCHED, count,
    exec::read_ptr, is_watched, offsets,
};

/// Deepest cgroup level checked against `WATCH_CGROUP` (pods sit at about 4 to 6).
const MAX_CGROUP_DEPTH: i32 = 12;

const CLONE_THREAD: u64 = 0x0001_0000;
const EAGAIN: i32 = 11;
const SIGKILL: u32 = 9;

/// The slot key of the fork the current thread is making. A thread forks one child at
/// a time, so its id names the fork; a fork that failed after `task_alloc` leaves its
/// slot to the thread's next fork (updating an existing key takes no new slot) and it
/// goes when the thread exits.
#[inline(always)]
fn reservation() -> u32 {
    WATCHED_RESERVED | (bpf_get_current_pid_tgid() as u32)
}

// int task_alloc(struct task_struct *task, unsigned long clone_flags), then the previous
// return value. A watched process may only fork while its child can be watched too: the
// fork tracepoint cannot refuse a fork, so the child's slot in `WATCHED` is taken here,
// where the fork can still fail, and handed to the child in `on_fork`.
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
    // SAFETY: the value is copied out at once.
    let Some(&subject) = (unsafe { WATCHED.get(tgid) }) else {
        return 0;
    };
    if WATCHED.insert(reservation(), subject, 0).is_ok() {
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
    if cpid != ctgid || ctgid == ptgid {
        return 0;
    }
    // SAFETY: the value is copied out at once.
    let Some(&subject) = (unsafe { WATCHED.get(ptgid) }) else {
        return 0;
    };
    // The child takes the slot its fork reserved in `task_alloc`: when the map is full
    // the child's own key goes in once the reservation is out of the way.
    let slot = reservation();
    if WATCHED.insert(ctgid, subject, 0).is_err() {
        let _ = WATCHED.remove(slot);
        if WATCHED.insert(ctgid, subject, 0).is_err() {
            count(counter::WATCH_FAILED);
        }
    }
    let _ = WATCHED.remove(slot);
    0
}

/// The subject a process that just exec'd becomes watched as, if any: by its uid, the
/// file it now runs, or a cgroup it is in (innermost first).
#[inline(always)]
fn watch_match(bprm: *const u8) -> Option<u32> {
    let uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: values are copied out at once.
    if let Some(&subject) = unsafe { WATCH_UID.get(uid) } {
        return Some(subject);
    }
    let off = offsets();
    if let Some(file) = read_ptr(bprm, off.bprm_file)
        && let Some(inode) = read_ptr(file, off.file_inode)
        && let Some(sb) = read_ptr(inode, off.inode_sb)
    {
        // SAFETY: reading kernel memory through the helper.
        let ino = unsafe { bpf_probe_read_kernel(inode.add(off.inode_ino as usize).cast::<u64>()) };
        // SAFETY: as above.
        let dev = unsafe { bpf_probe_read_kernel(sb.add(off.sb_dev as usize).cast::<u32>()) };
        if let (Ok(ino), Ok(dev)) = (ino, dev) {
            let key = ExeKey { dev, _pad: 0, ino };
            // SAFETY: as above.
            if let Some(&subject) = unsafe { WATCH_EXE.get(key) } {
                return Some(subject);
            }
        }
    }
    let mut level = MAX_CGROUP_DEPTH;
    while level > 0 {
        // SAFETY: plain helper call; 0 means the process is not that deep.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id != 0 {
            // SAFETY: as above.
            if let Some(&subject) = unsafe { WATCH_CGROUP.get(id) } {
                return Some(subject);
            }
        }
        level -= 1;
    }
    None
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm):
// the exec has happened, so the uid, file and cgroup are the ones the process now runs
// with. A process that is already watched stays as it is.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn on_exec(ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    if let Some(&subject) = unsafe { WATCHED.get(tgid) } {
        crate::image::check(tgid, subject);
        return 0;
    }
    let bprm: *const u8 = ctx.arg(2);
    if let Some(subject) = watch_match(bprm)
        && WATCHED.insert(tgid, subject, 0).is_err()
    {
        // It must not run unwatched: kill it before its first instruction (the signal
        // is acted on before the exec returns to user space).
        count(counter::WATCH_FAILED);
        count(counter::WATCH_KILLED);
        // SAFETY: plain helper call; it signals the current (exec'ing) process.
        unsafe { bpf_send_signal(SIGKILL) };
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
    // A fork of this thread that failed after task_alloc left its slot reserved.
    let _ = WATCHED.remove(WATCHED_RESERVED | pid);
    // SAFETY: reading kernel memory through the helper.
    let Ok(signal) =
        (unsafe { bpf_probe_read_kernel(task.add(off.task_signal as usize).cast::<*const u8>()) })
    else {
        return 0;
    };
    if read_u32(signal, off.signal_live) == Some(0) {
        let _ = WATCHED.remove(tgid);
        // An expectation for an exec that never came (killed, or denied after all) would
        // otherwise stay in the map for good, and a full map refuses the next allow.
        let _ = EXEC_EXPECT.remove(tgid);
        let _ = UNIX_PEER.remove(tgid);
    }
    0
}
