//! A second program on `socket_sendmsg`, for what a send carries besides its address:
//! SCTP control messages that add destinations no hook sees (denied), and DNS queries
//! (passed on, so that only answers to them teach names).
//!
//! BPF LSM programs on one hook each see the previous one's answer, in an order belay
//! does not choose. Either order is sound: a denial by the other program stands here
//! (`gate`), and a query passed on for a send the other program then holds or denies
//! is one no resolver answers, which teaches nothing.
use agent_common::counter;
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};

use crate::{connect, count, dns, gate, sctp};

const EPERM: i32 = 1;

// int socket_sendmsg(struct socket *sock, struct msghdr *msg, int size), then the
// previous program's return value.
#[lsm(hook = "socket_sendmsg")]
pub fn socket_sendmsg_content(ctx: LsmContext) -> i32 {
    if let Err(ret) = gate(ctx.arg(3)) {
        return ret;
    }
    let sock: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    if sctp::adds_destinations(connect::socket_sk(sock), msg) {
        count(counter::UNCLASSIFIED_DENIED);
        return -EPERM;
    }
    // msg_name and msg_namelen lead struct msghdr.
    // SAFETY: reading kernel memory through the helper.
    let name: *const u8 =
        unsafe { bpf_probe_read_kernel(msg.cast::<*const u8>()) }.unwrap_or(core::ptr::null());
    // SAFETY: as above.
    let len: i32 = unsafe { bpf_probe_read_kernel(msg.add(8).cast::<i32>()) }.unwrap_or(0);
    let _ = dns::note_query(sock, msg, name, len);
    0
}
