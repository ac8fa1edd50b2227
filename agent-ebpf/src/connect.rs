//! Egress: `socket_connect`, and `socket_sendmsg` when the call names a destination
//! (UDP `sendto`/`sendmsg`/`sendmmsg`, TCP Fast Open with `MSG_FASTOPEN`). What else a
//! send carries is looked at by a second program on the same hook (`sendmsg.rs`), which
//! keeps each within the verifier's stack and the 6.1 kernel's instruction budget.
use agent_common::{FNV_OFFSET, FNV_PRIME, RawEvent, counter, family, fnv1a, kind};
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::lsm,
    programs::LsmContext,
};

use crate::{count, gate, offsets, pause, policy, unix_peer};

const EPERM: i32 = 1;

/// `SS_CONNECTED` of `enum socket_state`.
const SS_CONNECTED: u32 = 3;
const SOCK_STREAM: u16 = 1;

// int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen), then
// the previous program's return value.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let subject = match gate(ctx.arg(3)) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let sock: *const u8 = ctx.arg(0);
    let sa: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    hold_destination(kind::CONNECT, subject, socket_sk(sock), sa, len).unwrap_or(0)
}

// int socket_sendmsg(struct socket *sock, struct msghdr *msg, int size), then the
// previous program's return value.
#[lsm(hook = "socket_sendmsg")]
pub fn socket_sendmsg(ctx: LsmContext) -> i32 {
    let subject = match gate(ctx.arg(3)) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let sock: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    try_sendmsg(subject, sock, msg).unwrap_or(0)
}

#[inline(always)]
fn try_sendmsg(subject: u32, sock: *const u8, msg: *const u8) -> Option<i32> {
    // msg_name and msg_namelen lead struct msghdr; msg_name points at the kernel's copy
    // of the address (move_addr_to_kernel / copy_msghdr_from_user).
    // SAFETY: reading kernel memory through the helper.
    let name: *const u8 = unsafe { bpf_probe_read_kernel(msg.cast::<*const u8>()) }.ok()?;
    if name.is_null() {
        // No address: the destination is the one the socket connected to, already held.
        return None;
    }
    // SAFETY: as above.
    let len: i32 = unsafe { bpf_probe_read_kernel(msg.add(8).cast::<i32>()) }.ok()?;
    let off = offsets();
    // SAFETY: as above.
    let ty: u16 =
        unsafe { bpf_probe_read_kernel(sock.add(off.socket_type as usize).cast::<u16>()) }.ok()?;
    // SAFETY: as above.
    let state: u32 =
        unsafe { bpf_probe_read_kernel(sock.add(off.socket_state as usize).cast::<u32>()) }.ok()?;
    // A connected stream socket ignores the address; a datagram socket does not.
    if ty == SOCK_STREAM && state == SS_CONNECTED {
        return None;
    }
    hold_destination(kind::SEND, subject, socket_sk(sock), name, len)
}

/// `sock->sk`; null when it cannot be read (judged as an IP socket, so denied).
#[inline(always)]
pub fn socket_sk(sock: *const u8) -> *const u8 {
    let off = offsets();
    // SAFETY: reading kernel memory through the helper.
    unsafe { bpf_probe_read_kernel(sock.add(off.socket_sk as usize).cast::<*const u8>()) }
        .unwrap_or(core::ptr::null())
}

/// The address family of the socket itself (`sk->sk_family`), which decides how the
/// protocol reads an address whatever family the caller wrote into it.
#[inline(always)]
fn socket_family(sk: *const u8) -> Option<u16> {
    if sk.is_null() {
        return None;
    }
    let off = offsets();
    // SAFETY: reading kernel memory through the helper.
    unsafe { bpf_probe_read_kernel(sk.add(off.sk_family as usize).cast::<u16>()) }.ok()
}

/// `SOCK_SEQPACKET`, which SCTP sockets are judged as whatever their style.
const SOCK_SEQPACKET: u16 = 5;
const IPPROTO_SCTP: u16 = 132;

/// `sk->sk_type` (`SOCK_STREAM`, ...), which `tcp`/`udp` rules match; 0 when it cannot be
/// read. An SCTP socket of the one-to-one style is a `SOCK_STREAM` too, but it is not
/// TCP: it counts as `SOCK_SEQPACKET`, which only rules without a protocol match.
#[inline(always)]
pub fn socket_type(sk: *const u8) -> u16 {
    if sk.is_null() {
        return 0;
    }
    let off = offsets();
    // SAFETY: reading kernel memory through the helper.
    let proto = unsafe { bpf_probe_read_kernel(sk.add(off.sk_protocol as usize).cast::<u16>()) }
        .unwrap_or(0);
    if proto == IPPROTO_SCTP {
        return SOCK_SEQPACKET;
    }
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(sk.add(off.sk_type as usize).cast::<u16>()) }.unwrap_or(0)
}

/// How the kernel will read the address of a connect or send, as the family whose
/// layout it uses; `None` when it reaches no destination at all.
enum Reading {
    /// Judge the address as this family (`family::INET`, `INET6` or `UNIX`).
    As(u16),
    /// Nothing is sent anywhere by this address (a disconnect, or a protocol error).
    Nowhere,
    /// An IP socket with an address belay cannot classify: deny.
    Unclassified,
}

/// The caller chooses `sa_family`, the kernel chooses what to do with it: UDP and raw
/// IPv4 `sendmsg` send an `AF_UNSPEC` address as IPv4, IPv6 raw sockets read it as
/// IPv6. So an address is judged by the layout the socket's protocol will use, and an
/// IP socket's address of any family belay does not know is denied, never let through.
#[inline(always)]
fn reading(kind: u32, fam: u16, len: i32, sock_family: Option<u16>) -> Reading {
    // A socket whose family cannot be read counts as an IP socket: deny, not pass.
    let ip_socket = !matches!(sock_family, Some(f) if f != family::INET && f != family::INET6);
    match fam {
        family::UNIX => Reading::As(family::UNIX),
        // A short address fails in the protocol with EINVAL; nothing to hold.
        family::INET if len >= 16 => Reading::As(family::INET),
        family::INET6 if len >= 24 => Reading::As(family::INET6),
        family::INET | family::INET6 => Reading::Nowhere,
        // connect(AF_UNSPEC) on an IP socket dissolves its association.
        family::UNSPEC if kind == kind::CONNECT => Reading::Nowhere,
        family::UNSPEC if sock_family == Some(family::INET) && len >= 16 => {
            Reading::As(family::INET)
        }
        _ if ip_socket => Reading::Unclassified,
        // Other families (netlink, packet, vsock, ...) on their own sockets are not held.
        _ => Reading::Nowhere,
    }
}

#[inline(always)]
pub fn hold_destination(
    kind: u32,
    subject: u32,
    sk: *const u8,
    sa: *const u8,
    len: i32,
) -> Option<i32> {
    // The address is the kernel's copy, so what is checked here is what the protocol
    // will use.
    // SAFETY: reading kernel memory through the helper.
    let fam: u16 = unsafe { bpf_probe_read_kernel(sa.cast::<u16>()) }.ok()?;
    let fam = match reading(kind, fam, len, socket_family(sk)) {
        Reading::As(fam) => fam,
        Reading::Nowhere => return None,
        Reading::Unclassified => {
            count(counter::UNCLASSIFIED_DENIED);
            return Some(-EPERM);
        }
    };
    let ev = pause::scratch_event(kind, subject)?;
    if fam == family::UNIX {
        return hold_unix(ev, sk, sa, len);
    }
    let port = destination(sa, fam, &mut ev.addr)?;
    ev.sock_type = socket_type(sk);
    ev.family = fam;
    ev.port = port;
    // With the kind and tgid, the destination is the whole action: a verdict serves only
    // the restarted call to this same place.
    let port_be = port.to_be();
    let mut h = fnv1a(FNV_OFFSET, &fam.to_ne_bytes());
    h = fnv1a(h, &port_be.to_ne_bytes());
    h = fnv1a(h, &ev.addr);
    ev.action_hash = h;
    let action = policy::egress_action(subject, fam, &ev.addr, ev.port, ev.sock_type);
    Some(pause::hold(ev, action))
}

/// Writes to `addr` the address an IPv4 (`fam` `INET`) or IPv6 address at `sa`
/// reaches, and returns its port (host order): the unspecified address is the loopback
/// the kernel connects it to.
#[inline(always)]
fn destination(sa: *const u8, fam: u16, addr: &mut [u8; 16]) -> Option<u16> {
    // SAFETY: reading kernel memory through the helper; sin_port / sin6_port sit at
    // offset 2 in both families.
    let port_be: u16 = unsafe { bpf_probe_read_kernel(sa.add(2).cast::<u16>()) }.ok()?;
    if fam == family::INET {
        // SAFETY: sin_addr at offset 4.
        let a: [u8; 4] = unsafe { bpf_probe_read_kernel(sa.add(4).cast::<[u8; 4]>()) }.ok()?;
        let a = if a == [0; 4] { [127, 0, 0, 1] } else { a };
        addr[..4].copy_from_slice(&a);
    } else {
        // SAFETY: sin6_addr at offset 8.
        *addr = unsafe { bpf_probe_read_kernel(sa.add(8).cast::<[u8; 16]>()) }.ok()?;
        unspecified_is_loopback(addr);
    }
    Some(u16::from_be(port_be))
}

/// `::` and `::ffff:0.0.0.0` are connected to as `::1` and `127.0.0.1` by the kernel
/// (tcp_v6_connect, ip_route_connect): judge them as the loopback they reach.
#[inline(always)]
fn unspecified_is_loopback(addr: &mut [u8; 16]) {
    let mut head_zero = true;
    let mut i = 0;
    while i < 10 {
        if addr[i] != 0 {
            head_zero = false;
        }
        i += 1;
    }
    if !head_zero {
        return;
    }
    let tail_zero = addr[12] == 0 && addr[13] == 0 && addr[14] == 0 && addr[15] == 0;
    if !tail_zero {
        return;
    }
    if addr[10] == 0 && addr[11] == 0 {
        addr[15] = 1;
    } else if addr[10] == 0xff && addr[11] == 0xff {
        addr[12] = 127;
        addr[15] = 1;
    }
}

/// `sizeof(sockaddr_un::sun_path)`.
const SUN_PATH: usize = 108;

/// A Unix socket destination: pathname (`/run/x.sock`) or abstract (`\0name`) socket.
/// The name is the kernel's copy, hashed over its length as given.
#[inline(always)]
fn hold_unix(ev: &mut RawEvent, sk: *const u8, sa: *const u8, len: i32) -> Option<i32> {
    // An unnamed address (just the family) is autobind or an error: nothing to hold.
    let n = (len - 2) as usize;
    if len <= 2 || n > SUN_PATH {
        return None;
    }
    // The kernel keeps the address in a sockaddr_storage (128 bytes), so the whole of
    // sun_path is readable whatever `len` is; only `n` bytes of it count.
    let dst = &mut ev.path[..SUN_PATH];
    // SAFETY: reading kernel memory through the helper, into a buffer of that size.
    unsafe { bpf_probe_read_kernel_buf(sa.add(2), dst) }.ok()?;
    let mut h = fnv1a(FNV_OFFSET, &family::UNIX.to_ne_bytes());
    let mut i = 0;
    while i < SUN_PATH {
        if i >= n {
            break;
        }
        h ^= ev.path[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    ev.sock_type = socket_type(sk);
    ev.family = family::UNIX;
    // For Unix sockets `port` carries the length of the name in `path`.
    ev.port = n as u16;
    ev.action_hash = h;
    let action = policy::unix_action(ev.subject);
    let tgid = ev.tgid;
    let (ret, consumed_allow) = pause::hold_verdict(ev, action);
    unix_peer::after_check(tgid, consumed_allow);
    Some(ret)
}
