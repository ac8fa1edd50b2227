//! SCTP and MPTCP: IP transports with their own ways to name a destination.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

pub const IPPROTO_SCTP: i32 = 132;
pub const IPPROTO_MPTCP: i32 = 262;
const SOL_SCTP: i32 = 132;
const SCTP_SOCKOPT_CONNECTX: i32 = 110;
const SCTP_DSTADDRV4: i32 = 7;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn v4(addr: &str) -> Result<SocketAddrV4, i32> {
    addr.parse().map_err(|_| {
        eprintln!("need an IPv4 address:port, got {addr}");
        libc::EINVAL
    })
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn socket(ty: i32, proto: i32) -> Result<OwnedFd, i32> {
    // SAFETY: plain syscall; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, ty, proto) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `connect(2)` on a socket of protocol `proto` (MPTCP, or SCTP one-to-one).
pub fn connect(proto: i32, addr: &str) -> Result<(), i32> {
    let sa = sockaddr(v4(addr)?);
    let sock = socket(libc::SOCK_STREAM, proto)?;
    // SAFETY: sa is a valid sockaddr_in of the size given.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// `sctp_connectx`: one association to every address of `addrs` (comma-separated),
/// named in a setsockopt rather than a connect.
pub fn connectx(addrs: &str) -> Result<(), i32> {
    let mut packed = Vec::new();
    for a in addrs.split(',') {
        let sa = sockaddr(v4(a)?);
        // SAFETY: sockaddr_in is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const sa).cast::<u8>(), size_of::<libc::sockaddr_in>())
        };
        packed.extend_from_slice(bytes);
    }
    let sock = socket(libc::SOCK_STREAM, IPPROTO_SCTP)?;
    // SAFETY: packed holds packed.len() bytes of sockaddr_in.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            SOL_SCTP,
            SCTP_SOCKOPT_CONNECTX,
            packed.as_ptr().cast(),
            packed.len() as u32,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// A message on a one-to-many SCTP socket to `to`, opening an association; with
/// `extra` (not `-`), an `SCTP_DSTADDRV4` control message adds that peer to it.
pub fn send_dstaddr(to: &str, extra: &str) -> Result<(), i32> {
    let mut sa = sockaddr(v4(to)?);
    let sock = socket(libc::SOCK_SEQPACKET, IPPROTO_SCTP)?;
    let mut data = *b"hello";
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // One cmsghdr (16 bytes) and an in_addr, aligned: CMSG_SPACE(4) = 24.
    let mut ctl = [0u8; 24];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut sa).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if extra != "-" {
        let ip: Ipv4Addr = extra.parse().map_err(|_| libc::EINVAL)?;
        ctl[..8].copy_from_slice(&20u64.to_ne_bytes()); // CMSG_LEN(4)
        ctl[8..12].copy_from_slice(&SOL_SCTP.to_ne_bytes());
        ctl[12..16].copy_from_slice(&SCTP_DSTADDRV4.to_ne_bytes());
        ctl[16..20].copy_from_slice(&ip.octets());
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = ctl.len();
    }
    // SAFETY: msg is fully set up above.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, 0) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}
