//! The pause protocol shared by every hook.
use agent_common::{
    PF_IO_WORKER, RawEvent, VerdictKey, counter, flags, fnv1a, rule_action, syscall, verdict,
};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
    generated::{
        bpf_get_current_task, bpf_get_current_task_btf, bpf_send_signal, bpf_send_signal_thread,
        bpf_task_pt_regs,
    },
};

use crate::{DAEMON, EVENTS, PAUSED, SCRATCH, VERDICTS, count, offsets};

/// `struct pt_regs::orig_ax` on x86_64: the number of the syscall in progress.
const PT_REGS_ORIG_AX: usize = 120;

const SIGSTOP: u32 = 19;
const SIGKILL: u32 = 9;
const EPERM: i32 = 1;
/// The kernel restarts the syscall after the stop ends; the verifier accepts it as an
/// LSM return value.
const ERESTARTNOINTR: i32 = 513;

/// A zeroed scratch event for the current task, with identity fields filled in.
#[inline(always)]
pub fn scratch_event(kind: u32, subject: u32) -> Option<&'static mut RawEvent> {
    let ev = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, used only for the duration of this program run.
    let ev = unsafe { &mut *ev };
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.kind = kind;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    ev.flags = 0;
    ev.action_hash = 0;
    ev.family = 0;
    ev.port = 0;
    ev.sock_type = 0;
    ev.ino = 0;
    ev.dev = 0;
    ev.subject = subject;
    ev.addr = [0; 16];
    Some(ev)
}

/// Who is acting, for an event the daemon will read. Left out of [`scratch_event`]:
/// an action the kernel allows by policy needs none of it.
#[inline(always)]
fn identify(ev: &mut RawEvent) {
    let uid_gid = bpf_get_current_uid_gid();
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Decides a watched task's action: apply a verdict left for exactly this action, or
/// what policy settles in the kernel (`action`, a `rule_action`), or stop the task and
/// tell the daemon. Returns the LSM return value.
#[inline(always)]
pub fn hold(ev: &mut RawEvent, action: u32) -> i32 {
    hold_verdict(ev, action).0
}

/// [`hold`], and whether an allow verdict (a decision on exactly this action) was
/// consumed.
#[inline(always)]
pub fn hold_verdict(ev: &mut RawEvent, action: u32) -> (i32, bool) {
    // Bind the action to this very process: a pid reused after it exits starts later.
    ev.action_hash = fnv1a(ev.action_hash, &process_start().to_ne_bytes());
    let key = VerdictKey {
        tgid: ev.tgid,
        kind: ev.kind,
        action_hash: ev.action_hash,
    };
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(v) = unsafe { VERDICTS.get(key) }.copied() {
        // One-shot: the next identical action asks again.
        let _ = VERDICTS.remove(key);
        let _ = PAUSED.remove(ev.pid);
        count(counter::VERDICTS_APPLIED);
        return if v == verdict::ALLOW {
            (0, true)
        } else {
            (-EPERM, false)
        };
    }
    (hold_policy(ev, action), false)
}

#[inline(always)]
fn hold_policy(ev: &mut RawEvent, action: u32) -> i32 {
    // The rest of the policy the kernel knows; a verdict above came first: a person's
    // decision on exactly this action stands even if a reload changed the rules since.
    match action {
        rule_action::ALLOW => {
            count(counter::POLICY_DECIDED);
            return 0;
        }
        rule_action::AUDIT => {
            count(counter::POLICY_DECIDED);
            report(ev, flags::POLICY_AUDIT);
            return 0;
        }
        rule_action::DENY => {
            count(counter::POLICY_DECIDED);
            report(ev, flags::POLICY_DENY);
            return -EPERM;
        }
        rule_action::KILL => {
            count(counter::POLICY_DECIDED);
            // SAFETY: plain helper call; the whole process is killed, as a reviewer's
            // kill would. The call still fails in case the signal is not yet delivered.
            unsafe { bpf_send_signal(SIGKILL) };
            report(ev, flags::POLICY_KILL);
            return -EPERM;
        }
        _ => {}
    }

    let why = unpausable();
    if why != 0 {
        count(counter::UNPAUSABLE_DENIED);
        report(ev, why);
        return -EPERM;
    }

    // Nobody would resume a task stopped now: apply the fail verdict instead.
    if let Some(fail_verdict) = daemon_stale() {
        count(counter::FAIL_MODE);
        report(ev, flags::DAEMON_STALE);
        return if fail_verdict == verdict::ALLOW {
            0
        } else {
            -EPERM
        };
    }

    identify(ev);
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
    // Recorded for a daemon that restarts while this task is stopped. If the map is full
    // the pause still works; only a restart would not find this task.
    let _ = PAUSED.insert(ev.pid, *ev, 0);
    entry.submit(0);
    count(counter::PAUSED);
    -ERESTARTNOINTR
}

/// When the current process (its thread-group leader) started, in ns since boot; 0 if
/// it cannot be read (the hash is then as before, bound to the pid only).
#[inline(always)]
fn process_start() -> u64 {
    let off = offsets();
    // SAFETY: plain helper call; the pointer is only read through probe_read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: reading kernel memory through the helper.
    let Ok(leader) = (unsafe {
        bpf_probe_read_kernel(task.add(off.task_group_leader as usize).cast::<*const u8>())
    }) else {
        return 0;
    };
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(leader.add(off.task_start_time as usize).cast::<u64>()) }
        .unwrap_or(0)
}

/// Tells the daemon about an action decided without a pause. Decided either way.
#[inline(always)]
fn report(ev: &mut RawEvent, why: u32) {
    // Flags are set in the scratch event itself: a copy would not fit the stack.
    ev.flags = why;
    identify(ev);
    match EVENTS.reserve::<RawEvent>(0) {
        Some(mut entry) => {
            entry.write(*ev);
            entry.submit(0);
        }
        None => count(counter::DROPPED_EVENTS),
    }
}

/// The fail verdict when the daemon's heartbeat is stale or was never written.
#[inline(always)]
pub fn daemon_stale() -> Option<u32> {
    let Some(state) = DAEMON.get(0) else {
        return Some(verdict::DENY);
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if state.heartbeat_ns == 0 || now.saturating_sub(state.heartbeat_ns) > state.stale_after_ns {
        Some(state.fail_verdict)
    } else {
        None
    }
}

/// Why the current task cannot be paused safely, as [`flags`] bits; 0 when it can.
///
/// A pause relies on the stop ending in a restart of the same syscall. io_uring workers
/// cannot be stopped, io_uring's inline issue inside `io_uring_enter` is not restarted
/// (the completion would carry -ERESTARTNOINTR), and a tracer may swallow the SIGSTOP
/// so the restart loops. Those are denied in the kernel instead.
#[inline(always)]
fn unpausable() -> u32 {
    let off = offsets();
    // SAFETY: plain helper call; the pointer is only read through probe_read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut why = 0;
    // SAFETY: reading kernel memory through the helper.
    let task_flags: u32 =
        unsafe { bpf_probe_read_kernel(task.add(off.task_flags as usize).cast::<u32>()) }
            .unwrap_or(0);
    if task_flags & PF_IO_WORKER != 0 {
        why |= flags::IO_URING_WORKER;
    }
    // SAFETY: as above.
    let ptrace: u32 =
        unsafe { bpf_probe_read_kernel(task.add(off.task_ptrace as usize).cast::<u32>()) }
            .unwrap_or(1);
    if ptrace != 0 {
        why |= flags::PTRACED;
    }
    // SAFETY: helper calls on the current task, whose pt_regs always exist.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    // SAFETY: reading kernel memory through the helper.
    let nr = unsafe { bpf_probe_read_kernel(regs.wrapping_add(PT_REGS_ORIG_AX).cast::<u64>()) };
    let restartable = matches!(
        nr,
        Ok(syscall::CONNECT
            | syscall::SENDTO
            | syscall::SENDMSG
            | syscall::SENDMMSG
            | syscall::EXECVE
            | syscall::EXECVEAT)
    );
    if !restartable {
        why |= flags::NOT_RESTARTABLE;
    }
    why
}
