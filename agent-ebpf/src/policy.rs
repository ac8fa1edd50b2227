//! In-kernel policy: what the daemon compiled into maps is decided here without a pause.
//! Anything the maps do not settle is `rule_action::ASK`: the task pauses and the daemon
//! evaluates the whole policy (globs, argv, hostnames).
use agent_common::{EGRESS_RULES_PER_SUBJECT, ExecRuleKey, family, rule_action};

use crate::{EGRESS_RULES, EXEC_RULES, SUBJECTS};

/// The `rule_action` for running the file `(dev, ino)`.
#[inline(always)]
pub fn exec_action(subject: u32, dev: u32, ino: u64) -> u32 {
    let key = ExecRuleKey { subject, dev, ino };
    // SAFETY: values are copied out at once.
    if let Some(&action) = unsafe { EXEC_RULES.get(key) } {
        return action;
    }
    // SAFETY: as above.
    match unsafe { SUBJECTS.get(subject) } {
        Some(conf) => conf.exec_miss,
        None => rule_action::ASK,
    }
}

/// The `rule_action` for a Unix socket destination: the daemon matches paths, so the
/// kernel only applies the subject's egress default when no rule names Unix sockets.
#[inline(always)]
pub fn unix_action(subject: u32) -> u32 {
    // SAFETY: the value is copied out at once.
    match unsafe { SUBJECTS.get(subject) } {
        Some(conf) => conf.unix_action,
        None => rule_action::ASK,
    }
}

/// Network-order halves of an address as the rules store it: IPv4 as IPv4-mapped IPv6.
#[inline(always)]
fn halves(fam: u16, addr: &[u8; 16]) -> (u64, u64) {
    if fam == family::INET {
        let v4 = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]) as u64;
        (0, 0xffff_0000_0000 | v4)
    } else {
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&addr[..8]);
        lo.copy_from_slice(&addr[8..]);
        (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
    }
}

/// Mask of the first `bits` (0..=64) bits of a u64.
#[inline(always)]
fn mask(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else if bits >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - bits)
    }
}

/// The `rule_action` for sending to `addr:port` on a socket of `sock_type`: the first of
/// the subject's rules that matches, else its `egress_miss`.
#[inline(always)]
pub fn egress_action(subject: u32, fam: u16, addr: &[u8; 16], port: u16, sock_type: u16) -> u32 {
    // SAFETY: the value is copied out at once.
    let Some(conf) = (unsafe { SUBJECTS.get(subject) }).copied() else {
        return rule_action::ASK;
    };
    let (hi, lo) = halves(fam, addr);
    let mut i = 0;
    while i < EGRESS_RULES_PER_SUBJECT {
        if i >= conf.egress_len {
            return conf.egress_miss;
        }
        let Some(rule) = EGRESS_RULES.get(conf.egress_first.wrapping_add(i)) else {
            // Out of the array: the table is broken, let the daemon decide.
            return rule_action::ASK;
        };
        i += 1;
        if rule.proto != 0 && u16::from(rule.proto) != sock_type {
            continue;
        }
        if port < rule.port_lo || port > rule.port_hi {
            continue;
        }
        let (rhi, rlo) = halves(family::INET6, &rule.addr);
        let bits = u32::from(rule.prefix_len);
        let (mhi, mlo) = if bits >= 64 {
            (u64::MAX, mask(bits - 64))
        } else {
            (mask(bits), 0)
        };
        if (hi ^ rhi) & mhi == 0 && (lo ^ rlo) & mlo == 0 {
            return rule.action;
        }
    }
    // More rules than the kernel walks: the compiler sets egress_miss to ASK then.
    conf.egress_miss
}
