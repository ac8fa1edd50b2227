//! DNS queries sent and answers received by watched processes, so that a reviewer sees
//! the hostname a destination address was looked up as (the process's own lookup, not a
//! reverse one), and hostname rules can match it. The daemon learns a name only from an
//! answer that matches a query the process sent, on the same socket, to the same server.
//!
//! Answers: `skb_consume_udp` runs in `udp_recvmsg`/`udpv6_recvmsg` once the datagram
//! has been copied to the process: the UDP header is already pulled, so `skb->data` is
//! the payload, and the header is still at `skb->head + skb->transport_header`.
//!
//! Queries: `socket_sendmsg` (see `connect.rs`) hands over each UDP datagram to port 53
//! it lets through; the payload is read from the process's buffer through the message's
//! `iov_iter`.
use agent_common::{DNS_CAPTURE, DnsEvent, counter, family, kind};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_user_buf,
    },
    macros::kprobe,
    programs::ProbeContext,
};

use crate::{DNS_EVENTS, count, is_watched, offsets};

const DNS_PORT: u16 = 53;

// int skb_consume_udp(struct sock *sk, struct sk_buff *skb, int len)
#[kprobe]
pub fn on_udp_consume(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_watched(tgid) {
        return 0;
    }
    let (Some(sk), Some(skb)) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1)) else {
        return 0;
    };
    let _ = try_capture(tgid, sk, skb);
    0
}

/// The level of the user namespace owning the network namespace of `sk`: 0 is the
/// host's. In a network namespace an unprivileged process made, it can give itself any
/// address, that of a trusted resolver too.
#[inline(always)]
fn userns_level(sk: *const u8) -> Option<u32> {
    let off = offsets();
    let net: *const u8 = read(sk, off.sk_net)?;
    let user_ns: *const u8 = read(net, off.net_user_ns)?;
    read(user_ns, off.userns_level)
}

/// IP version 4 or 6 from the first byte of the header.
const IPV4: u8 = 4;
const IPV6: u8 = 6;

/// The sender of the datagram, from its IP header: (family, address).
#[inline(always)]
fn source(skb: *const u8, head: *const u8) -> Option<(u16, [u8; 16])> {
    let off = offsets();
    let nh: u16 = read(skb, off.skb_network_header)?;
    let ip = u32::from(nh);
    let first: u8 = read(head, ip)?;
    let mut addr = [0u8; 16];
    match first >> 4 {
        IPV4 => {
            // iphdr.saddr at offset 12.
            let a: [u8; 4] = read(head, ip + 12)?;
            addr[..4].copy_from_slice(&a);
            Some((family::INET, addr))
        }
        // ipv6hdr.saddr at offset 8.
        IPV6 => Some((family::INET6, read(head, ip + 8)?)),
        _ => None,
    }
}

#[inline(always)]
fn read<T>(base: *const u8, off: u32) -> Option<T> {
    // SAFETY: reading kernel memory through the helper.
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()) }.ok()
}

#[inline(always)]
fn try_capture(tgid: u32, sk: *const u8, skb: *const u8) -> Option<()> {
    let off = offsets();
    let head: *const u8 = read(skb, off.skb_head)?;
    let th: u16 = read(skb, off.skb_transport_header)?;
    // udphdr.source, network order.
    let sport: u16 = read(head, u32::from(th))?;
    if u16::from_be(sport) != DNS_PORT {
        return None;
    }
    let data: *const u8 = read(skb, off.skb_data)?;
    let len: u32 = read(skb, off.skb_len)?;
    let paged: u32 = read(skb, off.skb_data_len)?;
    // Only the linear part can be read directly; answers this small nearly always are.
    let linear = len.saturating_sub(paged);
    let take = if linear as usize > DNS_CAPTURE {
        DNS_CAPTURE
    } else {
        linear as usize
    };
    if take == 0 {
        return None;
    }
    let (peer_family, peer_addr) = source(skb, head).unwrap_or((0, [0; 16]));
    let level = userns_level(sk).unwrap_or(u32::MAX);
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count(counter::DNS_DROPPED);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the reservation is exactly one DnsEvent; fields are written before submit.
    unsafe {
        (*ev).kind = kind::DNS;
        (*ev).tgid = tgid;
        (*ev).wire_len = len;
        (*ev).peer_family = peer_family;
        (*ev).peer_port = u16::from_be(sport);
        (*ev).peer_addr = peer_addr;
        (*ev).userns_level = level;
        (*ev).sock = sk as u64;
        // The verifier needs the length visibly within the buffer.
        let n = take & (DNS_CAPTURE * 2 - 1);
        let n = if n > DNS_CAPTURE { DNS_CAPTURE } else { n };
        if bpf_probe_read_kernel_buf(data, &mut (&mut (*ev).data)[..n]).is_err() {
            entry.discard(0);
            count(counter::DNS_DROPPED);
            return None;
        }
        (*ev).len = n as u32;
    }
    entry.submit(0);
    Some(())
}

/// `SOCK_DGRAM` of `enum sock_type`.
const SOCK_DGRAM: u16 = 2;

/// Where a datagram goes: (family, port in host order, address).
type Peer = (u16, u16, [u8; 16]);

/// The destination of a datagram sent with the address `sa` (`len` bytes) on a socket of
/// family `sock_family`, read as the protocol will (an `AF_UNSPEC` address on an IPv4
/// socket is sent as IPv4).
#[inline(always)]
fn named_peer(sa: *const u8, len: i32, sock_family: u16) -> Option<Peer> {
    let fam: u16 = read(sa, 0)?;
    let port: u16 = read(sa, 2)?;
    let port = u16::from_be(port);
    let v4 = fam == family::INET || (fam == family::UNSPEC && sock_family == family::INET);
    let mut addr = [0u8; 16];
    if v4 && len >= 16 {
        let a: [u8; 4] = read(sa, 4)?;
        addr[..4].copy_from_slice(&a);
        Some((family::INET, port, addr))
    } else if fam == family::INET6 && len >= 24 {
        Some((family::INET6, port, read(sa, 8)?))
    } else {
        None
    }
}

/// The peer a connected socket sends to.
#[inline(always)]
fn connected_peer(sk: *const u8, sock_family: u16) -> Option<Peer> {
    let off = offsets();
    let port: u16 = read(sk, off.sk_dport)?;
    let port = u16::from_be(port);
    let mut addr = [0u8; 16];
    if sock_family == family::INET {
        let a: [u8; 4] = read(sk, off.sk_daddr)?;
        addr[..4].copy_from_slice(&a);
        Some((family::INET, port, addr))
    } else if sock_family == family::INET6 {
        Some((family::INET6, port, read(sk, off.sk_v6_daddr)?))
    } else {
        None
    }
}

/// Passes on a DNS query that `socket_sendmsg` lets through: a UDP datagram to port 53,
/// to the address `sa` (`len` bytes) or, when `sa` is null, to the socket's peer. A query
/// that cannot be read whole is not passed on, and so no answer to it teaches a name.
#[inline(always)]
pub fn note_query(sock: *const u8, msg: *const u8, sa: *const u8, len: i32) -> Option<()> {
    let off = offsets();
    let ty: u16 = read(sock, off.socket_type)?;
    if ty != SOCK_DGRAM {
        return None;
    }
    let sk: *const u8 = read(sock, off.socket_sk)?;
    if sk.is_null() {
        return None;
    }
    let sock_family: u16 = read(sk, off.sk_family)?;
    let peer = if sa.is_null() {
        connected_peer(sk, sock_family)?
    } else {
        named_peer(sa, len, sock_family)?
    };
    if peer.1 != DNS_PORT {
        return None;
    }
    let (buf, size) = payload(msg)?;
    if size == 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let level = userns_level(sk).unwrap_or(u32::MAX);
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count(counter::DNS_DROPPED);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the reservation is exactly one DnsEvent; fields are written before submit.
    unsafe {
        (*ev).kind = kind::DNS_QUERY;
        (*ev).tgid = tgid;
        (*ev).wire_len = size as u32;
        (*ev).peer_family = peer.0;
        (*ev).peer_port = peer.1;
        (*ev).peer_addr = peer.2;
        (*ev).userns_level = level;
        (*ev).sock = sk as u64;
        // The length is bounded here, right before the read: computed earlier, LLVM
        // keeps it on the stack, where the 6.1 verifier forgets the bound.
        let raw = core::ptr::read_volatile(&raw const (*ev).wire_len) as usize;
        let n = if raw > DNS_CAPTURE { DNS_CAPTURE } else { raw };
        if bpf_probe_read_user_buf(buf, &mut (&mut (*ev).data)[..n]).is_err() {
            entry.discard(0);
            return None;
        }
        (*ev).len = n as u32;
    }
    entry.submit(0);
    Some(())
}

/// The process's buffer the datagram will be copied from, and the datagram's size: the
/// first segment of the message's `iov_iter` (`ITER_UBUF`, or the first `iovec` of an
/// `ITER_IOVEC`). A query in more than one segment is read in part and will not parse.
#[inline(always)]
fn payload(msg: *const u8) -> Option<(*const u8, u64)> {
    let off = offsets();
    // SAFETY: pointer arithmetic only; every read goes through the helper.
    let it = unsafe { msg.add(off.msg_iter as usize) };
    let ty: u8 = read(it, off.iter_type)?;
    let count: u64 = read(it, off.iter_count)?;
    let skip: u64 = read(it, off.iter_iov_offset)?;
    let ptr: u64 = read(it, off.iter_ubuf)?;
    if u32::from(ty) == off.iter_kind_ubuf {
        return Some(((ptr + skip) as *const u8, count));
    }
    if u32::from(ty) != off.iter_kind_iovec {
        return None;
    }
    // struct iovec { void __user *iov_base; size_t iov_len; }
    let iov = ptr as *const u8;
    let base: u64 = read(iov, 0)?;
    let len: u64 = read(iov, 8)?;
    let first = len.checked_sub(skip)?;
    Some((
        (base + skip) as *const u8,
        if first < count { first } else { count },
    ))
}
