//! DNS answers received by watched processes, so that a reviewer sees the hostname a
//! destination address was looked up as (the process's own lookup, not a reverse one).
//!
//! `skb_consume_udp` runs in `udp_recvmsg`/`udpv6_recvmsg` once the datagram has been
//! copied to the process: the UDP header is already pulled, so `skb->data` is the
//! payload, and the header is still at `skb->head + skb->transport_header`.
use agent_common::{DNS_CAPTURE, DnsEvent, counter, family, kind};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
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
    let (from_family, from_addr) = source(skb, head).unwrap_or((0, [0; 16]));
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
        (*ev).from_family = from_family;
        (*ev).from_port = u16::from_be(sport);
        (*ev).from_addr = from_addr;
        (*ev).userns_level = level;
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
