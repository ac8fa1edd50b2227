//! `bprm_check_security`: every exec (execve, execveat, and each interpreter of a script)
//! of a watched process.
use agent_common::{FNV_OFFSET, FNV_PRIME, fnv1a, kind};
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::lsm,
    programs::LsmContext,
};

use crate::{gate, image, offsets, pause, policy};

// int bprm_check_security(struct linux_binprm *bprm), then the previous return value.
#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    match gate(ctx.arg(1)) {
        Ok(subject) => try_exec(&ctx, subject).unwrap_or(0),
        Err(ret) => ret,
    }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, off: u32) -> Option<*const u8> {
    // SAFETY: reading kernel memory through the helper.
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<*const u8>()) }.ok()
}

#[inline(always)]
fn try_exec(ctx: &LsmContext, subject: u32) -> Option<i32> {
    let off = offsets();
    let bprm: *const u8 = ctx.arg(0);
    let ev = pause::scratch_event(kind::EXEC, subject)?;

    let filename = read_ptr(bprm, off.bprm_filename)?;
    ev.path[0] = 0;
    // SAFETY: kernel string read through the helper, bounded by the buffer.
    unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut ev.path) }.ok()?;
    // Hash up to the NUL the helper wrote, walking the fixed-size buffer: the verifier
    // cannot bound a loop over the helper's returned slice. Bytes after the NUL are
    // stale from an earlier event and must not count.
    let mut h = FNV_OFFSET;
    for &b in ev.path.iter() {
        if b == 0 {
            break;
        }
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }

    // The file the kernel opened, so a path swapped after the check is a new action.
    let file = read_ptr(bprm, off.bprm_file)?;
    let inode = read_ptr(file, off.file_inode)?;
    // SAFETY: as read_ptr.
    ev.ino =
        unsafe { bpf_probe_read_kernel(inode.add(off.inode_ino as usize).cast::<u64>()) }.ok()?;
    let sb = read_ptr(inode, off.inode_sb)?;
    // SAFETY: as read_ptr.
    ev.dev = unsafe { bpf_probe_read_kernel(sb.add(off.sb_dev as usize).cast::<u32>()) }.ok()?;
    h = fnv1a(h, &ev.ino.to_ne_bytes());
    h = fnv1a(h, &ev.dev.to_ne_bytes());
    ev.action_hash = h;
    let tgid = ev.tgid;
    let (ret, consumed_allow) =
        pause::hold_verdict(ev, policy::exec_action(subject, ev.dev, ev.ino));
    image::after_check(tgid, bprm as u64, consumed_allow);
    Some(ret)
}
