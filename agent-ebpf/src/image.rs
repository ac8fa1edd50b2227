//! What was reviewed is what runs: an exec allowed by a verdict is checked, once its new
//! image is in place and before its first instruction, against the argv and environment
//! the daemon read and showed while the task was stopped. Another thread or process could
//! rewrite those strings in the caller's memory between the review and the restarted
//! exec copying them; the kernel's own final copy in the new image cannot be.
use agent_common::{EXEC_IMAGE_MAX, ExecExpect, FNV_OFFSET, FNV_PRIME, counter};
use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_user_buf, generated::bpf_get_current_task,
    generated::bpf_send_signal,
};

use crate::{EXEC_EXPECT, IMAGE_CHUNK, count, offsets};

/// Bytes hashed per read.
pub const CHUNK: usize = 256;
const WORDS: usize = CHUNK / 8;
const MAX_CHUNKS: u32 = EXEC_IMAGE_MAX / CHUNK as u32;
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

/// `image_hash` over `len` bytes at user address `at` of the current (new) image; `None`
/// when they cannot be read.
#[inline(always)]
fn hash_area(at: u64, len: u32) -> Option<u64> {
    let buf = IMAGE_CHUNK.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only for the duration of this program run.
    let buf = unsafe { &mut *buf };
    let mut h = FNV_OFFSET;
    let mut done: u32 = 0;
    let mut i = 0;
    while i < MAX_CHUNKS {
        if done >= len {
            break;
        }
        let left = len - done;
        let addr = (at + u64::from(done)) as *const u8;
        if left >= CHUNK as u32 {
            // SAFETY: reading user memory of the current task through the helper.
            unsafe { bpf_probe_read_user_buf(addr, &mut buf[..]) }.ok()?;
            let mut w = 0;
            while w < WORDS {
                let b = &buf[w * 8..w * 8 + 8];
                let word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                h = (h ^ word).wrapping_mul(FNV_PRIME);
                w += 1;
            }
            done += CHUNK as u32;
        } else {
            let n = (left as usize) & (CHUNK - 1);
            // SAFETY: as above; `n` is below the buffer's size.
            unsafe { bpf_probe_read_user_buf(addr, &mut buf[..n]) }.ok()?;
            let whole = n / 8;
            let mut w = 0;
            while w < WORDS {
                if w >= whole {
                    break;
                }
                let b = &buf[w * 8..w * 8 + 8];
                let word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                h = (h ^ word).wrapping_mul(FNV_PRIME);
                w += 1;
            }
            // At most 7 bytes after the whole words; the mask keeps the index visibly
            // inside the buffer for the verifier.
            let mut k = 0;
            while k < 8 {
                let j = whole * 8 + k;
                if j >= n {
                    break;
                }
                h = (h ^ buf[j & (CHUNK - 1)] as u64).wrapping_mul(FNV_PRIME);
                k += 1;
            }
            done = len;
        }
        i += 1;
    }
    (done >= len).then_some(h)
}

/// Whether the current task's new image carries the argv and environment of `e`.
#[inline(always)]
fn matches(e: &ExecExpect) -> Option<bool> {
    let off = offsets();
    // SAFETY: plain helper call; the pointer is only read through probe_read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: reading kernel memory through the helper.
    let mm: *const u8 =
        unsafe { bpf_probe_read_kernel(task.add(off.task_mm as usize).cast::<*const u8>()) }
            .ok()?;
    // SAFETY: as above: arg_start, arg_end, env_start, env_end in a row (checked by the
    // daemon against BTF).
    let area: [u64; 4] =
        unsafe { bpf_probe_read_kernel(mm.add(off.mm_arg_start as usize).cast::<[u64; 4]>()) }
            .ok()?;
    let [arg_start, arg_end, env_start, env_end] = area;
    let (args, env) = (
        arg_end.checked_sub(arg_start)?,
        env_end.checked_sub(env_start)?,
    );
    if args < u64::from(e.args_len) || env != u64::from(e.env_len) {
        return Some(false);
    }
    let from = arg_end - u64::from(e.args_len);
    Some(
        hash_area(from, e.args_len)? == e.args_hash
            && hash_area(env_start, e.env_len)? == e.env_hash,
    )
}

/// At `sched_process_exec` of a watched process: an armed expectation is checked and
/// consumed; a mismatch, or an image that cannot be read, kills the process before it
/// runs anything.
#[inline(always)]
pub fn check(tgid: u32) {
    // SAFETY: the value is copied out at once.
    let Some(e) = (unsafe { EXEC_EXPECT.get(tgid) }).copied() else {
        return;
    };
    if e.bprm == 0 {
        // Written for a pause whose exec has not consumed its verdict yet.
        return;
    }
    let _ = EXEC_EXPECT.remove(tgid);
    if matches(&e) != Some(true) {
        count(counter::EXEC_MISMATCH_KILLED);
        // SAFETY: plain helper call on the current task.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}
