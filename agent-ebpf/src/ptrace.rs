//! `ptrace_access_check`: a watched process may not reach into a process outside its
//! subject. Attaching with ptrace, writing `/proc/PID/mem`, `process_vm_writev` and
//! `pidfd_getfd` all pass this hook with `PTRACE_MODE_ATTACH`; with any of them a
//! watched agent could act through an unwatched process of the same user (use its
//! connected socket, make it exec) and never be held.
use agent_common::counter;
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};

use crate::{WATCHED, count, gate, offsets};

/// `PTRACE_MODE_ATTACH` in the mode argument (`PTRACE_MODE_READ` is 0x01).
const PTRACE_MODE_ATTACH: u32 = 0x02;
const EPERM: i32 = 1;

// int ptrace_access_check(struct task_struct *child, unsigned int mode), then the
// previous program's return value.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let subject = match gate(ctx.arg(2)) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let mode: u32 = ctx.arg(1);
    // Reading (/proc/PID/stat, environ, kcmp) does not act through the target.
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    let child: *const u8 = ctx.arg(0);
    let off = offsets();
    // SAFETY: reading kernel memory through the helper.
    let tgid = unsafe { bpf_probe_read_kernel(child.add(off.task_tgid as usize).cast::<u32>()) };
    // SAFETY: the value is copied out at once.
    let target = tgid.ok().and_then(|t| unsafe { WATCHED.get(t) }.copied());
    if target == Some(subject) {
        // Inside its own subject (itself, its children): what it could do anyway.
        return 0;
    }
    count(counter::PTRACE_DENIED);
    -EPERM
}
