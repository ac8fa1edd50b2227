//! The Unix socket a verdict allowed is the one reached.
//!
//! A connect or send to a pathname socket is held in `socket_connect`/`socket_sendmsg`,
//! before the kernel resolves the path; the daemon shows the reviewer the socket the
//! path led to then. When the call restarts the path is resolved again, so a symlink
//! swapped during the pause could lead to another socket. With an allow the daemon
//! writes the vouched socket's identity ([`UnixPeer`]); the verdict's consumption arms
//! it, and the hooks that see the socket the kernel found check it.
use agent_common::{UnixPeer, counter};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::lsm,
    programs::LsmContext,
};

use crate::{UNIX_PEER, count, exec::read_ptr, gate, offsets};

const EPERM: i32 = 1;

/// After a Unix connect or send was judged: arm the expectation if that call consumed an
/// allow; drop one armed by an earlier call that never reached a socket (it failed).
#[inline(always)]
pub fn after_check(tgid: u32, consumed_allow: bool) {
    let Some(e) = UNIX_PEER.get_ptr_mut(tgid) else {
        return;
    };
    // SAFETY: a map value pointer, valid for this program run.
    let e = unsafe { &mut *e };
    if consumed_allow {
        e.armed = 1;
    } else if e.armed != 0 {
        let _ = UNIX_PEER.remove(tgid);
    }
}

// int unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk),
// then the previous program's return value.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    if let Err(ret) = gate(ctx.arg(3)) {
        return ret;
    }
    check(ctx.arg(1))
}

// int unix_may_send(struct socket *sock, struct socket *other), then the previous
// program's return value.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    if let Err(ret) = gate(ctx.arg(2)) {
        return ret;
    }
    let other: *const u8 = ctx.arg(1);
    let off = offsets();
    match read_ptr(other, off.socket_sk) {
        Some(sk) => check(sk),
        None => check(core::ptr::null()),
    }
}

/// Checks the socket `other` (a `struct sock` of the Unix family) against an armed
/// expectation of the current process, which it spends.
#[inline(always)]
fn check(other: *const u8) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let Some(want) = (unsafe { UNIX_PEER.get(tgid) }).copied() else {
        return 0;
    };
    if want.armed == 0 {
        return 0;
    }
    let _ = UNIX_PEER.remove(tgid);
    match identity(other) {
        Some(got) if got.dev == want.dev && got.ino == want.ino => 0,
        _ => {
            count(counter::UNIX_PEER_DENIED);
            -EPERM
        }
    }
}

/// The socket file a bound Unix socket lives at: `unix_sk(sk)->path.dentry->d_inode`.
/// `None` for an abstract or unbound socket.
#[inline(always)]
fn identity(sk: *const u8) -> Option<UnixPeer> {
    if sk.is_null() {
        return None;
    }
    let off = offsets();
    // SAFETY: pointer arithmetic only; reads go through the helper.
    let path = unsafe { sk.add(off.unix_path as usize) };
    let dentry = read_ptr(path, off.path_dentry)?;
    if dentry.is_null() {
        return None;
    }
    let inode = read_ptr(dentry, off.dentry_inode)?;
    if inode.is_null() {
        return None;
    }
    // SAFETY: as above.
    let ino =
        unsafe { bpf_probe_read_kernel(inode.add(off.inode_ino as usize).cast::<u64>()) }.ok()?;
    let sb = read_ptr(inode, off.inode_sb)?;
    // SAFETY: as above.
    let dev = unsafe { bpf_probe_read_kernel(sb.add(off.sb_dev as usize).cast::<u32>()) }.ok()?;
    Some(UnixPeer { dev, armed: 0, ino })
}
