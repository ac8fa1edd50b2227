//! SCTP destinations that `connect` and `sendmsg`'s address do not name.
//!
//! `connectx` (`setsockopt(SCTP_SOCKOPT_CONNECTX*)`) opens an association to a packed
//! list of addresses: only `security_sctp_bind_connect` sees them. A single address is
//! held like a connect. Several are denied and counted: they cannot be paused one at a
//! time (the verdict on the first would be spent before the second is asked about), and
//! a multi-homed association is nothing an agent needs.
//!
//! `sendmsg` on an SCTP socket may add peers to the association it opens with
//! `SCTP_DSTADDRV4`/`SCTP_DSTADDRV6` control messages, which no hook sees: such a send is
//! denied and counted (see `connect.rs`).
use agent_common::{counter, family, kind};
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};

use crate::{connect, count, gate, offsets};

const EPERM: i32 = 1;
const IPPROTO_SCTP: u16 = 132;
const SOL_SCTP: i32 = 132;
/// The `optname` the kernel passes for every `connectx` variant.
const SCTP_SOCKOPT_CONNECTX: i32 = 110;
const SCTP_DSTADDRV4: i32 = 7;
const SCTP_DSTADDRV6: i32 = 8;
/// Control messages of one `sendmsg` looked at; more are denied.
const MAX_CMSGS: usize = 8;

// int sctp_bind_connect(struct sock *sk, int optname, struct sockaddr *address,
// int addrlen), then the previous program's return value.
#[lsm(hook = "sctp_bind_connect")]
pub fn sctp_bind_connect(ctx: LsmContext) -> i32 {
    let subject = match gate(ctx.arg(4)) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let optname: i32 = ctx.arg(1);
    // The other options name addresses of this host (bindx, ASCONF) or choose among
    // peers the association already has (primary address); SCTP_SENDMSG_CONNECT is
    // the address `socket_sendmsg` already judged.
    if optname != SCTP_SOCKOPT_CONNECTX {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    let sa: *const u8 = ctx.arg(2);
    let len: i32 = ctx.arg(3);
    match connectx(subject, sk, sa, len) {
        Some(ret) => ret,
        None => deny(),
    }
}

#[inline(always)]
fn deny() -> i32 {
    count(counter::UNCLASSIFIED_DENIED);
    -EPERM
}

/// The size of a packed address of family `fam`, as `__sctp_connect` walks them.
#[inline(always)]
fn packed_len(fam: u16) -> Option<usize> {
    match fam {
        family::INET => Some(16),
        family::INET6 => Some(28),
        _ => None,
    }
}

#[inline(always)]
fn connectx(subject: u32, sk: *const u8, sa: *const u8, len: i32) -> Option<i32> {
    // SAFETY: reading kernel memory through the helper.
    let first: u16 = unsafe { bpf_probe_read_kernel(sa.cast::<u16>()) }.ok()?;
    if usize::try_from(len).ok()? != packed_len(first)? {
        // More than one address (or a malformed list the kernel would refuse).
        return None;
    }
    connect::hold_destination(kind::CONNECT, subject, sk, sa, len)
}

/// Whether a `sendmsg` on `sk` may add SCTP peers that no hook sees: its control
/// messages (the kernel's copy) hold `SCTP_DSTADDRV4`/`V6`, or more of them than are
/// looked at, or they cannot be read.
#[inline(always)]
pub fn adds_destinations(sk: *const u8, msg: *const u8) -> bool {
    if sk.is_null() {
        return false;
    }
    let off = offsets();
    // SAFETY: reading kernel memory through the helper.
    let proto: u16 =
        match unsafe { bpf_probe_read_kernel(sk.add(off.sk_protocol as usize).cast::<u16>()) } {
            Ok(p) => p,
            Err(_) => return true,
        };
    if proto != IPPROTO_SCTP {
        return false;
    }
    // SAFETY: as above.
    let ctl: *const u8 = match unsafe {
        bpf_probe_read_kernel(msg.add(off.msg_control as usize).cast::<*const u8>())
    } {
        Ok(p) => p,
        Err(_) => return true,
    };
    // SAFETY: as above.
    let clen: u64 = match unsafe {
        bpf_probe_read_kernel(msg.add(off.msg_controllen as usize).cast::<u64>())
    } {
        Ok(n) => n,
        Err(_) => return true,
    };
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }, each aligned
    // to 8 bytes (CMSG_NXTHDR).
    let mut at = 0u64;
    let mut i = 0;
    while i < MAX_CMSGS {
        if at + 16 > clen {
            return false;
        }
        // SAFETY: pointer arithmetic only; reads go through the helper.
        let h = unsafe { ctl.add(at as usize) };
        // SAFETY: as above.
        let Ok(cmsg_len) = (unsafe { bpf_probe_read_kernel(h.cast::<u64>()) }) else {
            return true;
        };
        // SAFETY: as above.
        let Ok(level) = (unsafe { bpf_probe_read_kernel(h.add(8).cast::<i32>()) }) else {
            return true;
        };
        // SAFETY: as above.
        let Ok(ty) = (unsafe { bpf_probe_read_kernel(h.add(12).cast::<i32>()) }) else {
            return true;
        };
        if level == SOL_SCTP && (ty == SCTP_DSTADDRV4 || ty == SCTP_DSTADDRV6) {
            return true;
        }
        if cmsg_len < 16 {
            // The kernel refuses the message (EINVAL).
            return false;
        }
        at += (cmsg_len + 7) & !7;
        i += 1;
    }
    at + 16 <= clen
}
