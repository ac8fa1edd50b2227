//! DNS messages of watched processes, as the kernel hands them to the daemon.

/// Bytes of a DNS message's UDP payload kept in a [`DnsEvent`] (the classic DNS size).
pub const DNS_CAPTURE: usize = 512;

/// A DNS message of a watched process: a query it sent to port 53 ([`crate::kind::DNS_QUERY`])
/// or an answer it received from port 53 ([`crate::kind::DNS`]). A name is learned only from an
/// answer that matches a query the same process sent on the same socket to the same
/// server. Both travel in one ring buffer of their own (`DNS_EVENTS`), so a query is
/// always read before its answer, and the daemon drains it before it handles each
/// pause, so the answer is read before any connect that follows it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    /// [`crate::kind::DNS`] or [`crate::kind::DNS_QUERY`].
    pub kind: u32,
    pub tgid: u32,
    /// Bytes of `data` that hold the message.
    pub len: u32,
    /// Length of the whole message (more than `len` when it was cut).
    pub wire_len: u32,
    /// The other end: for an answer its sender, from the datagram's IP header; for a
    /// query its destination, as the socket will send it. [`crate::family`] `INET` (address in
    /// the first 4 bytes) or `INET6`; 0 when it could not be read.
    pub peer_family: u16,
    /// The other end's port, host order.
    pub peer_port: u16,
    /// Level of the user namespace that owns the socket's network namespace: 0 for the
    /// host's; more for one an unprivileged process may have made (in which any address
    /// can be anyone). `u32::MAX` when it could not be read.
    pub userns_level: u32,
    /// The socket (the kernel's `struct sock` address, only ever compared): an answer
    /// must arrive on the socket its query left from.
    pub sock: u64,
    pub peer_addr: [u8; 16],
    pub data: [u8; DNS_CAPTURE],
}
