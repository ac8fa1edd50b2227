//! Address blocks (`10.0.0.0/8`, `2001:db8::/32`, bare addresses).
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// An address block. IPv4 blocks also contain the IPv4-mapped IPv6 forms of their
/// addresses, and an IPv6 block covering `::ffff:0:0/96` space contains the IPv4
/// addresses it maps, exactly as the kernel matches (it keeps IPv4 as IPv4-mapped IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The first address of the block (host bits are always zero).
    pub addr: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An address as the kernel's rules hold it: IPv6, IPv4 as `::ffff:a.b.c.d`.
pub(crate) fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn mask128(bits: u32) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits.min(128))
    }
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a block of one).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{text:?} is not a valid IP address or CIDR block"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let n: u8 = p
                    .parse()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {max}"))?;
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{text:?}: prefix length must be 0 to {max}"));
                }
                n
            }
        };
        let cidr = Cidr { addr, prefix };
        let (bits, _) = cidr.kernel_form();
        let v6 = u128::from(to_v6(addr));
        if v6 & !mask128(u32::from(bits)) != 0 {
            return Err(format!("{text} has bits set outside the /{prefix} prefix"));
        }
        Ok(cidr)
    }

    /// The block as the kernel's egress rules hold it: prefix length over the IPv6 (or
    /// IPv4-mapped) form, and that form's bytes.
    pub fn kernel_form(&self) -> (u8, [u8; 16]) {
        let bits = match self.addr {
            IpAddr::V4(_) => 96 + self.prefix,
            IpAddr::V6(_) => self.prefix,
        };
        (bits, to_v6(self.addr).octets())
    }

    /// Whether `ip` is in the block, comparing IPv4 as IPv4-mapped IPv6 on both sides.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (bits, net) = self.kernel_form();
        let m = mask128(u32::from(bits));
        (u128::from_be_bytes(net) ^ u128::from(to_v6(ip))) & m == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_contains_v4() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert_eq!(c.prefix, 8);
        assert!(c.contains(ip("10.1.2.3")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")));
        // IPv4-mapped IPv6 counts as the IPv4 address.
        assert!(c.contains(ip("::ffff:10.9.8.7")));
        assert!(!c.contains(ip("::ffff:11.9.8.7")));
        // A plain IPv6 address is not in an IPv4 block.
        assert!(!c.contains(ip("a00::1")));
        assert_eq!(c.kernel_form().0, 104);

        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains(ip("127.0.0.1")));
        assert!(one.contains(ip("::ffff:127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));

        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn parse_and_contains_v6() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(ip("2001:db8:1::5")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));
        let one = Cidr::parse("::1").unwrap();
        assert_eq!(one.prefix, 128);
        assert!(one.contains(ip("::1")));
        let all = Cidr::parse("::/0").unwrap();
        assert!(all.contains(ip("2001:db8::1")));
        // The kernel matches IPv4 as ::ffff:a.b.c.d, so ::/0 covers IPv4 too.
        assert!(all.contains(ip("1.2.3.4")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.2.3.4")));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Cidr::parse("10.0.0.1/8").unwrap_err(),
            "10.0.0.1/8 has bits set outside the /8 prefix"
        );
        assert!(
            Cidr::parse("2001:db8::1/32")
                .unwrap_err()
                .contains("outside the /32 prefix")
        );
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("::/129").unwrap_err().contains("0 to 128"));
        assert!(Cidr::parse("10.0.0.0/+8").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("10.0.0.0/").unwrap_err().contains("0 to 32"));
        assert!(
            Cidr::parse("10.0.0.300")
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(
            Cidr::parse("fe80::1%eth0")
                .unwrap_err()
                .contains("not a valid")
        );
    }
}
