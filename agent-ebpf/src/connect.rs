//! `socket_connect`: outbound connections of watched processes.
use agent_common::{FNV_OFFSET, family, fnv1a, kind};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::lsm,
    programs::LsmContext,
};

use crate::{is_watched, pause};

// int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen), then
// the previous program's return value.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_watched(tgid) {
        return 0;
    }
    try_connect(&ctx).unwrap_or(0)
}

#[inline(always)]
fn try_connect(ctx: &LsmContext) -> Option<i32> {
    let sa: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    // The address is the kernel's copy (move_addr_to_kernel), so what is checked here is
    // what the protocol will use.
    // SAFETY: reading kernel memory through the helper.
    let fam: u16 = unsafe { bpf_probe_read_kernel(sa.cast::<u16>()) }.ok()?;
    // SAFETY: as above; sin_port / sin6_port sit at offset 2 in both families.
    let port_be: u16 = unsafe { bpf_probe_read_kernel(sa.add(2).cast::<u16>()) }.ok()?;
    let ev = pause::scratch_event(kind::CONNECT)?;
    match fam {
        // A short address fails in the protocol with EINVAL; nothing to hold.
        family::INET if len >= 16 => {
            // SAFETY: sin_addr at offset 4.
            let a: [u8; 4] = unsafe { bpf_probe_read_kernel(sa.add(4).cast::<[u8; 4]>()) }.ok()?;
            ev.addr[..4].copy_from_slice(&a);
        }
        family::INET6 if len >= 24 => {
            // SAFETY: sin6_addr at offset 8.
            ev.addr = unsafe { bpf_probe_read_kernel(sa.add(8).cast::<[u8; 16]>()) }.ok()?;
        }
        // Other families are the enforcement issue's work (Unix sockets are policy too).
        _ => return None,
    }
    ev.family = fam;
    ev.port = u16::from_be(port_be);
    let mut h = fnv1a(FNV_OFFSET, &fam.to_ne_bytes());
    h = fnv1a(h, &port_be.to_ne_bytes());
    h = fnv1a(h, &ev.addr);
    ev.action_hash = h;
    Some(pause::hold(ev))
}
