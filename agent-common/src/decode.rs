//! Userspace half: decode what the kernel wrote into checked Rust types.
extern crate std;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    string::String,
};

use crate::{KernelDecision, RawEvent, VerdictKey, family, flags, kind, sock_type};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event is {got} bytes, expected {expected}")]
    Size { got: usize, expected: usize },
    #[error("unknown event kind {0}")]
    Kind(u32),
    #[error("unknown address family {0} in a connect event")]
    Family(u16),
}

/// Transport of a socket, from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// Another socket type (raw value of `socket::type`).
    Other(u16),
}

impl Transport {
    fn from_sock_type(t: u16) -> Self {
        match t {
            sock_type::STREAM => Self::Tcp,
            sock_type::DGRAM => Self::Udp,
            other => Self::Other(other),
        }
    }
}

/// The action a paused task was about to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `execve`/`execveat` of `path` (as passed to the kernel), resolved to this file.
    Exec { path: String, ino: u64, dev: u32 },
    /// `connect` to this address.
    Connect {
        addr: SocketAddr,
        transport: Transport,
    },
    /// `sendto`/`sendmsg`/`sendmmsg` naming this destination (UDP, TCP Fast Open).
    Send {
        addr: SocketAddr,
        transport: Transport,
    },
    /// `connect` to a Unix socket: a path, or `@name` for an abstract socket.
    ConnectUnix { path: String, transport: Transport },
    /// A datagram sent to a named Unix socket.
    SendUnix { path: String, transport: Transport },
}

/// A Unix socket name as people write it: the path, or `@` and the abstract name (NUL
/// bytes in it shown as `@`, as `ss` does).
fn unix_name(raw: &[u8]) -> String {
    match raw.split_first() {
        Some((0, rest)) => {
            let shown: std::vec::Vec<u8> = rest
                .iter()
                .map(|&b| if b == 0 { b'@' } else { b })
                .collect();
            std::format!("@{}", String::from_utf8_lossy(&shown))
        }
        _ => c_string(raw),
    }
}

/// A task the kernel has stopped, waiting for a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseEvent {
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// The subject (policy) the process is watched as; 0 when unknown.
    pub subject: u32,
    pub action: Action,
    /// Where the verdict for exactly this action goes.
    pub key: VerdictKey,
    /// Zero for a pause. Otherwise the kernel could not pause the task and denied the
    /// action itself; this event is a report and needs no verdict. See [`flags`].
    pub flags: u32,
}

impl PauseEvent {
    /// True when the task is stopped and waits for a verdict.
    pub fn is_pause(&self) -> bool {
        self.flags == 0
    }

    /// The policy action the kernel applied itself, if this is a report of one.
    pub fn policy_action(&self) -> Option<KernelDecision> {
        if self.flags & flags::POLICY_KILL != 0 {
            Some(KernelDecision::Kill)
        } else if self.flags & flags::POLICY_DENY != 0 {
            Some(KernelDecision::Deny)
        } else if self.flags & flags::POLICY_AUDIT != 0 {
            Some(KernelDecision::Audit)
        } else {
            None
        }
    }

    /// Why the kernel denied without pausing, in words.
    pub fn unpausable_reasons(&self) -> std::vec::Vec<&'static str> {
        [
            (flags::IO_URING_WORKER, "io_uring worker"),
            (flags::PTRACED, "ptraced"),
            (
                flags::NOT_RESTARTABLE,
                "not a restartable syscall (e.g. io_uring)",
            ),
            (
                flags::DAEMON_STALE,
                "no daemon heartbeat: the fail mode decided",
            ),
        ]
        .into_iter()
        .filter(|(bit, _)| self.flags & bit != 0)
        .map(|(_, why)| why)
        .collect()
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl TryFrom<&RawEvent> for PauseEvent {
    type Error = DecodeError;

    fn try_from(raw: &RawEvent) -> Result<Self, Self::Error> {
        let action = match raw.kind {
            kind::EXEC => Action::Exec {
                path: c_string(&raw.path),
                ino: raw.ino,
                dev: raw.dev,
            },
            kind::CONNECT | kind::SEND if raw.family == family::UNIX => {
                let n = usize::from(raw.port).min(108);
                let path = unix_name(&raw.path[..n]);
                let transport = Transport::from_sock_type(raw.sock_type);
                if raw.kind == kind::CONNECT {
                    Action::ConnectUnix { path, transport }
                } else {
                    Action::SendUnix { path, transport }
                }
            }
            kind::CONNECT | kind::SEND => {
                let ip = match raw.family {
                    family::INET => IpAddr::V4(Ipv4Addr::new(
                        raw.addr[0],
                        raw.addr[1],
                        raw.addr[2],
                        raw.addr[3],
                    )),
                    // An IPv4-mapped address reaches that IPv4 host: show it as such.
                    family::INET6 => Ipv6Addr::from(raw.addr).to_canonical(),
                    other => return Err(DecodeError::Family(other)),
                };
                let addr = SocketAddr::new(ip, raw.port);
                let transport = Transport::from_sock_type(raw.sock_type);
                if raw.kind == kind::CONNECT {
                    Action::Connect { addr, transport }
                } else {
                    Action::Send { addr, transport }
                }
            }
            other => return Err(DecodeError::Kind(other)),
        };
        Ok(Self {
            tgid: raw.tgid,
            pid: raw.pid,
            uid: raw.uid,
            gid: raw.gid,
            comm: c_string(&raw.comm),
            subject: raw.subject,
            flags: raw.flags,
            action,
            key: VerdictKey {
                tgid: raw.tgid,
                kind: raw.kind,
                action_hash: raw.action_hash,
            },
        })
    }
}

impl TryFrom<&[u8]> for PauseEvent {
    type Error = DecodeError;

    /// Decodes a ring buffer record. The record is copied out first: ring buffer memory
    /// is only 8-byte aligned by convention, and a short record must not be read past.
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        let expected = core::mem::size_of::<RawEvent>();
        if bytes.len() != expected {
            return Err(DecodeError::Size {
                got: bytes.len(),
                expected,
            });
        }
        // SAFETY: the length was checked above, RawEvent is repr(C) plain data for which
        // any bit pattern is valid, and read_unaligned has no alignment requirement.
        let raw = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) };
        Self::try_from(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes(raw: &RawEvent) -> &[u8] {
        // SAFETY: RawEvent is repr(C) plain data; viewing it as bytes is always valid.
        unsafe {
            core::slice::from_raw_parts(
                (raw as *const RawEvent).cast::<u8>(),
                core::mem::size_of::<RawEvent>(),
            )
        }
    }

    #[test]
    fn decodes_ipv4_connect() {
        let mut raw = RawEvent::zeroed();
        raw.kind = kind::CONNECT;
        raw.tgid = 42;
        raw.pid = 43;
        raw.family = family::INET;
        raw.port = 8080;
        raw.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.comm[..4].copy_from_slice(b"curl");
        raw.action_hash = 7;
        raw.sock_type = sock_type::STREAM;
        let ev = PauseEvent::try_from(as_bytes(&raw)).unwrap();
        assert_eq!(
            ev.action,
            Action::Connect {
                addr: "127.0.0.1:8080".parse().unwrap(),
                transport: Transport::Tcp,
            }
        );
        assert_eq!(ev.comm, "curl");
        assert_eq!(
            ev.key,
            VerdictKey {
                tgid: 42,
                kind: kind::CONNECT,
                action_hash: 7
            }
        );
    }

    #[test]
    fn decodes_unix_socket_names_pathname_and_abstract() {
        let mut raw = RawEvent::zeroed();
        raw.kind = kind::CONNECT;
        raw.family = family::UNIX;
        raw.sock_type = sock_type::STREAM;
        let name = b"/run/docker.sock";
        raw.path[..name.len()].copy_from_slice(name);
        raw.path[name.len()] = 0;
        raw.port = (name.len() + 1) as u16;
        assert_eq!(
            PauseEvent::try_from(&raw).unwrap().action,
            Action::ConnectUnix {
                path: "/run/docker.sock".into(),
                transport: Transport::Tcp,
            }
        );
        // Abstract: a leading NUL, NULs inside shown as '@', only `port` bytes count.
        raw.kind = kind::SEND;
        raw.sock_type = sock_type::DGRAM;
        raw.path[..7].copy_from_slice(b"\0x\0y/zq");
        raw.port = 6;
        assert_eq!(
            PauseEvent::try_from(&raw).unwrap().action,
            Action::SendUnix {
                path: "@x@y/z".into(),
                transport: Transport::Udp,
            }
        );
        // A length past sun_path is clamped, never read beyond the event.
        raw.port = u16::MAX;
        assert!(PauseEvent::try_from(&raw).is_ok());
    }

    #[test]
    fn decodes_ipv6_connect_and_exec_path() {
        let mut raw = RawEvent::zeroed();
        raw.kind = kind::CONNECT;
        raw.family = family::INET6;
        raw.port = 443;
        raw.addr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        raw.sock_type = 5;
        let ev = PauseEvent::try_from(&raw).unwrap();
        assert_eq!(
            ev.action,
            Action::Connect {
                addr: "[2001:db8::1]:443".parse().unwrap(),
                transport: Transport::Other(5),
            }
        );

        let mut raw = RawEvent::zeroed();
        raw.kind = kind::EXEC;
        raw.path[..8].copy_from_slice(b"/bin/sh\0");
        raw.ino = 99;
        let ev = PauseEvent::try_from(&raw).unwrap();
        assert_eq!(
            ev.action,
            Action::Exec {
                path: "/bin/sh".into(),
                ino: 99,
                dev: 0
            }
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_shown_as_the_ipv4_it_reaches() {
        let mut raw = RawEvent::zeroed();
        raw.kind = kind::SEND;
        raw.family = family::INET6;
        raw.port = 53;
        raw.sock_type = sock_type::DGRAM;
        raw.addr = "::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets();
        let ev = PauseEvent::try_from(&raw).unwrap();
        assert_eq!(
            ev.action,
            Action::Send {
                addr: "10.1.2.3:53".parse().unwrap(),
                transport: Transport::Udp,
            }
        );
    }

    #[test]
    fn flags_mark_reports_not_pauses() {
        let mut raw = RawEvent::zeroed();
        raw.kind = kind::EXEC;
        assert!(PauseEvent::try_from(&raw).unwrap().is_pause());
        raw.flags = flags::PTRACED | flags::NOT_RESTARTABLE;
        let ev = PauseEvent::try_from(&raw).unwrap();
        assert!(!ev.is_pause());
        assert_eq!(
            ev.unpausable_reasons(),
            ["ptraced", "not a restartable syscall (e.g. io_uring)"]
        );
        assert_eq!(ev.policy_action(), None);
        raw.flags = flags::POLICY_KILL;
        raw.subject = 77;
        let ev = PauseEvent::try_from(&raw).unwrap();
        assert!(!ev.is_pause());
        assert_eq!(
            (ev.policy_action(), ev.subject),
            (Some(KernelDecision::Kill), 77)
        );
        raw.flags = flags::POLICY_AUDIT;
        assert_eq!(
            PauseEvent::try_from(&raw).unwrap().policy_action(),
            Some(KernelDecision::Audit)
        );
    }

    #[test]
    fn rejects_bad_kind_family_and_size() {
        let mut raw = RawEvent::zeroed();
        raw.kind = 77;
        assert_eq!(PauseEvent::try_from(&raw), Err(DecodeError::Kind(77)));
        raw.kind = kind::CONNECT;
        raw.family = 16; // AF_NETLINK: never held
        assert_eq!(PauseEvent::try_from(&raw), Err(DecodeError::Family(16)));
        let bytes = as_bytes(&raw);
        assert_eq!(
            PauseEvent::try_from(&bytes[..10]),
            Err(DecodeError::Size {
                got: 10,
                expected: core::mem::size_of::<RawEvent>()
            })
        );
    }

    #[test]
    fn fnv_matches_reference_vector() {
        // Published FNV-1a 64 test vector for "a".
        assert_eq!(crate::fnv1a(crate::FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
