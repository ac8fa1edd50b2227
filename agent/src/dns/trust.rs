//! Which DNS answers may teach belay a hostname.
//!
//! Hostname rules trust what a process learned from DNS. An answer counts only when
//! the kernel saw it come from a resolver the host trusts (port 53 of an address in
//! `/etc/resolv.conf` or given with `--dns-resolver`), received in a network namespace
//! of the host's own user namespace. A process that may query a resolver of its choosing
//! (a common "allow DNS" rule), or that runs a server of its own in a network namespace
//! it made, teaches nothing.
use std::{collections::BTreeSet, net::IpAddr, path::Path};

use crate::kernel::DnsMessage;

const DNS_PORT: u16 = 53;

/// The resolvers whose answers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedResolvers {
    addrs: BTreeSet<IpAddr>,
}

/// Why an answer taught nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Untrusted {
    /// From an address no trusted resolver has, or not from port 53.
    Resolver = 0,
    /// Received in a network namespace an unprivileged process may have made.
    Namespace,
    /// The kernel could not read who sent it.
    UnknownSender,
    /// It answers no query the process sent on that socket to that resolver with that
    /// transaction id (unsolicited, or a second answer to one query).
    Unasked,
    /// A query with its id was sent, but for another question.
    OtherQuestion,
    /// It does not parse as far as its question.
    Unreadable,
}

impl Untrusted {
    pub const ALL: [Untrusted; 6] = [
        Untrusted::Resolver,
        Untrusted::Namespace,
        Untrusted::UnknownSender,
        Untrusted::Unasked,
        Untrusted::OtherQuestion,
        Untrusted::Unreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Untrusted::Resolver => "resolver",
            Untrusted::Namespace => "namespace",
            Untrusted::UnknownSender => "unknown_sender",
            Untrusted::Unasked => "unasked",
            Untrusted::OtherQuestion => "other_question",
            Untrusted::Unreadable => "unreadable",
        }
    }
}

/// The `nameserver` addresses of a resolv.conf text (IPv6 zone ids dropped).
pub fn resolv_conf_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| addr.split('%').next()?.parse().ok())
        .collect()
}

impl TrustedResolvers {
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            addrs: addrs.into_iter().map(|a| a.to_canonical()).collect(),
        }
    }

    /// The nameservers of `resolv_conf` (missing or unreadable: none), and `extra`.
    pub fn from_host(resolv_conf: &Path, extra: &[IpAddr]) -> Self {
        let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
        Self::new(
            resolv_conf_nameservers(&text)
                .into_iter()
                .chain(extra.iter().copied()),
        )
    }

    pub fn addrs(&self) -> impl Iterator<Item = &IpAddr> {
        self.addrs.iter()
    }

    /// Whether `message` went between the process and a trusted resolver, in a network
    /// namespace of the host's (an answer that did may teach a name; a query that did
    /// is one such an answer may answer).
    pub fn check(&self, message: &DnsMessage<'_>) -> Result<(), Untrusted> {
        if !message.host_netns {
            return Err(Untrusted::Namespace);
        }
        let peer = message.peer.ok_or(Untrusted::UnknownSender)?;
        if peer.port() == DNS_PORT && self.addrs.contains(&peer.ip().to_canonical()) {
            Ok(())
        } else {
            Err(Untrusted::Resolver)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(from: &str, host_netns: bool) -> DnsMessage<'static> {
        DnsMessage {
            tgid: 1,
            direction: crate::kernel::DnsDirection::Answer,
            sock: 1,
            peer: Some(from.parse().unwrap()),
            host_netns,
            message: &[],
        }
    }

    #[test]
    fn resolv_conf_nameservers_are_read() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\n\
                    nameserver fe80::1%eth0\nnameserver\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn only_a_trusted_resolver_on_port_53_in_the_hosts_namespace_teaches() {
        let t = TrustedResolvers::new(["127.0.0.53".parse().unwrap()]);
        assert_eq!(t.check(&answer("127.0.0.53:53", true)), Ok(()));
        // As an IPv4-mapped address on an IPv6 socket: the same resolver.
        assert_eq!(t.check(&answer("[::ffff:127.0.0.53]:53", true)), Ok(()));
        assert_eq!(
            t.check(&answer("127.0.0.2:53", true)),
            Err(Untrusted::Resolver)
        );
        assert_eq!(
            t.check(&answer("127.0.0.53:5353", true)),
            Err(Untrusted::Resolver)
        );
        assert_eq!(
            t.check(&answer("127.0.0.53:53", false)),
            Err(Untrusted::Namespace)
        );
        let unknown = DnsMessage {
            peer: None,
            ..answer("127.0.0.53:53", true)
        };
        assert_eq!(t.check(&unknown), Err(Untrusted::UnknownSender));
        assert_eq!(
            TrustedResolvers::default().check(&answer("127.0.0.53:53", true)),
            Err(Untrusted::Resolver)
        );
    }
}
