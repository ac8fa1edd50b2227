//! Hostnames a watched process learned from its own DNS answers, so a reviewer asked
//! about a connection to 104.18.0.1 sees "api.openai.com" rather than a bare address.
//!
//! The kernel hands the daemon the raw UDP payload of DNS responses a watched process
//! received from port 53 (at most 512 bytes, possibly cut short). That payload comes
//! from the network through an agent we do not trust: the parser is bounded in every
//! loop and allocation, checks every length, and never panics.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

/// An address the process learned for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name the process asked for (or a CNAME alias on the way to the address):
    /// lowercase, no trailing dot, special bytes escaped (see [`parse_response`]).
    pub name: String,
    pub addr: IpAddr,
    /// Seconds, the smallest TTL along the chain from `name` to the address.
    pub ttl: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("DNS message is truncated")]
    Truncated,
    #[error("DNS message is a query, not a response")]
    NotAResponse,
    #[error("DNS message is a response, not a query")]
    NotAQuery,
    #[error("DNS response has no question")]
    NoQuestion,
    #[error("compression pointer at offset {at} points to {target}, outside the message")]
    BadPointer { at: usize, target: usize },
    #[error("compression pointers loop (offset {target} visited twice)")]
    PointerLoop { target: usize },
    #[error("name follows more than {MAX_POINTERS} compression pointers")]
    TooManyPointers,
    #[error(
        "label at offset {at} has length byte {byte:#04x}: labels are at most 63 bytes \
         (extended label types are not supported)"
    )]
    LabelTooLong { at: usize, byte: u8 },
    #[error("name is longer than 255 bytes")]
    NameTooLong,
    #[error("record of type {rtype} has {len} bytes of data, which does not fit its type")]
    BadRdata { rtype: u16, len: u16 },
}

/// Compression pointers one name may follow.
pub const MAX_POINTERS: usize = 128;
/// Names in wire form are at most 255 bytes (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// CNAME hops followed from the question (resolvers give up well before this).
pub const MAX_CHAIN: usize = 16;
/// Answers one message may yield.
pub const MAX_ANSWERS: usize = 256;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// The first question of a DNS message, as its header and question section give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Transaction id.
    pub id: u16,
    /// The QR bit: a response, not a query.
    pub is_response: bool,
    /// Lowercased, escaped as in [`Answer::name`].
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// Reads the header and the first question of `msg` (a query or a response).
pub fn parse_question(msg: &[u8]) -> Result<Question, DnsError> {
    let mut r = Reader { msg, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let qdcount = r.u16()?;
    r.skip(6)?;
    if qdcount == 0 {
        return Err(DnsError::NoQuestion);
    }
    let name = r.name()?;
    let qtype = r.u16()?;
    let qclass = r.u16()?;
    Ok(Question {
        id,
        is_response: flags & 0x8000 != 0,
        name,
        qtype,
        qclass,
    })
}

/// Parses a DNS response (RFC 1035 wire format, name compression included) and returns
/// every A/AAAA record of the answer section reachable from the question name through
/// CNAME records: one [`Answer`] per address for the question name and one for each
/// name on the CNAME chain to it (the CDN's names too), deduplicated.
///
/// Names are lowercased; bytes other than printable ASCII in a label are shown as
/// `\DDD`, and a `.` or `\` inside a label as `\.` and `\\`, so neither control
/// characters nor a label holding dots can pass for something else.
///
/// A query is [`DnsError::NotAResponse`]; an error response (RCODE other than 0) or one
/// to another opcode than QUERY teaches nothing and is `Ok(vec![])`. A message cut short
/// inside the answer section (the kernel captures at most 512 bytes) yields the answers
/// of its complete records; cut short before, it is [`DnsError::Truncated`].
pub fn parse_response(msg: &[u8]) -> Result<Vec<Answer>, DnsError> {
    let mut r = Reader { msg, pos: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    let qdcount = r.u16()?;
    let ancount = r.u16()?;
    let (_nscount, _arcount) = (r.u16()?, r.u16()?);
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotAResponse);
    }
    let (opcode, rcode) = ((flags >> 11) & 0xf, flags & 0xf);
    if opcode != 0 || rcode != 0 {
        return Ok(Vec::new());
    }
    if qdcount == 0 {
        return Err(DnsError::NoQuestion);
    }
    // The first question is the one attributed; others (never sent in practice) are
    // skipped.
    let question = r.name()?;
    r.skip(4)?;
    for _ in 1..qdcount {
        r.name()?;
        r.skip(4)?;
    }

    // The answer section: CNAMEs by owner, and address records.
    let mut cnames: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    let mut addrs: Vec<(String, IpAddr, u32)> = Vec::new();
    for _ in 0..ancount {
        match r.record() {
            Ok(Some(Record { owner, ttl, data })) => match data {
                Data::Addr(addr) => addrs.push((owner, addr, ttl)),
                Data::Cname(target) => cnames.entry(owner).or_default().push((target, ttl)),
            },
            Ok(None) => {}
            // Cut short: keep the records that were complete.
            Err(DnsError::Truncated) => break,
            Err(e) => return Err(e),
        }
    }

    // Breadth first from the question: each reached name remembers how it was reached
    // (previous name and that CNAME's TTL), so each address can be attributed to every
    // name on its path.
    let mut reached: HashMap<String, Option<(String, u32)>> = HashMap::new();
    reached.insert(question.clone(), None);
    let mut frontier = vec![question];
    for _ in 0..MAX_CHAIN {
        let mut next = Vec::new();
        for name in &frontier {
            for (target, ttl) in cnames.get(name).into_iter().flatten() {
                if !reached.contains_key(target) {
                    reached.insert(target.clone(), Some((name.clone(), *ttl)));
                    next.push(target.clone());
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }

    let mut out: Vec<Answer> = Vec::new();
    let mut index: HashMap<(String, IpAddr), usize> = HashMap::new();
    for (owner, addr, ttl) in addrs {
        if !reached.contains_key(&owner) {
            continue;
        }
        let mut name = owner;
        let mut ttl = ttl;
        // At most MAX_CHAIN + 1 names: the path is at most as long as the search above.
        loop {
            match index.get(&(name.clone(), addr)) {
                Some(&i) => out[i].ttl = out[i].ttl.max(ttl),
                None if out.len() < MAX_ANSWERS => {
                    index.insert((name.clone(), addr), out.len());
                    out.push(Answer {
                        name: name.clone(),
                        addr,
                        ttl,
                    });
                }
                None => {}
            }
            match reached.get(&name).cloned().flatten() {
                Some((prev, cname_ttl)) => {
                    ttl = ttl.min(cname_ttl);
                    name = prev;
                }
                None => break,
            }
        }
    }
    Ok(out)
}

struct Record {
    owner: String,
    ttl: u32,
    data: Data,
}

enum Data {
    Addr(IpAddr),
    Cname(String),
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DnsError> {
        let end = self.pos.checked_add(n).ok_or(DnsError::Truncated)?;
        let bytes = self.msg.get(self.pos..end).ok_or(DnsError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn skip(&mut self, n: usize) -> Result<(), DnsError> {
        self.take(n).map(drop)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<String, DnsError> {
        let (name, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Ok(name)
    }

    /// One resource record; `None` for the types and classes that teach nothing here.
    fn record(&mut self) -> Result<Option<Record>, DnsError> {
        let owner = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        // RFC 2181 §8: a TTL with the top bit set means zero.
        let ttl = match self.u32()? {
            t if t > i32::MAX as u32 => 0,
            t => t,
        };
        let len = self.u16()?;
        let start = self.pos;
        let rdata = self.take(usize::from(len))?;
        if class != CLASS_IN {
            return Ok(None);
        }
        let bad = DnsError::BadRdata { rtype, len };
        let data = match rtype {
            TYPE_A => Data::Addr(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(rdata).map_err(|_| bad)?,
            ))),
            TYPE_AAAA => Data::Addr(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(rdata).map_err(|_| bad)?,
            ))),
            TYPE_CNAME => {
                // The target may point anywhere in the message, but its own bytes must
                // fill the rdata exactly.
                let (target, end) = match read_name(self.msg, start) {
                    Ok(v) => v,
                    Err(DnsError::Truncated) => return Err(bad),
                    Err(e) => return Err(e),
                };
                if end != self.pos {
                    return Err(bad);
                }
                Data::Cname(target)
            }
            _ => return Ok(None),
        };
        Ok(Some(Record { owner, ttl, data }))
    }
}

/// Reads the (possibly compressed) name at `at`; returns its text form and the offset
/// just past its bytes at `at` (past the first pointer, if any).
fn read_name(msg: &[u8], at: usize) -> Result<(String, usize), DnsError> {
    let mut text = String::new();
    let mut pos = at;
    let mut end = None;
    let mut wire_len = 1; // the root label
    let mut visited: Vec<usize> = Vec::new();
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len {
            0 => {
                let end = end.unwrap_or(pos + 1);
                if text.is_empty() {
                    text.push('.');
                }
                return Ok((text, end));
            }
            1..=63 => {
                let len = usize::from(len);
                wire_len += len + 1;
                if wire_len > MAX_NAME {
                    return Err(DnsError::NameTooLong);
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(DnsError::Truncated)?;
                if !text.is_empty() {
                    text.push('.');
                }
                push_label(&mut text, label);
                pos += 1 + len;
            }
            0xc0..=0xff => {
                let low = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if end.is_none() {
                    end = Some(pos + 2);
                }
                if target >= msg.len() {
                    return Err(DnsError::BadPointer { at: pos, target });
                }
                if visited.contains(&target) {
                    return Err(DnsError::PointerLoop { target });
                }
                if visited.len() == MAX_POINTERS {
                    return Err(DnsError::TooManyPointers);
                }
                visited.push(target);
                pos = target;
            }
            byte => return Err(DnsError::LabelTooLong { at: pos, byte }),
        }
    }
}

/// Appends one label in presentation form, lowercased (RFC 4343: only A-Z fold).
fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' => text.push_str("\\."),
            b'\\' => text.push_str("\\\\"),
            0x21..=0x7e => text.push(char::from(b.to_ascii_lowercase())),
            _ => {
                text.push('\\');
                text.push(char::from(b'0' + b / 100));
                text.push(char::from(b'0' + b / 10 % 10));
                text.push(char::from(b'0' + b % 10));
            }
        }
    }
}

/// How long a learned name serves: even a 0-TTL answer must serve the connect that
/// follows it, and an hour bounds how stale a name may be.
const MIN_TTL: Duration = Duration::from_secs(30);
const MAX_TTL: Duration = Duration::from_secs(3600);

/// When a name a process learned stops serving, and its place in the eviction order.
#[derive(Debug, Clone, Copy)]
struct Entry {
    expires: Instant,
    seq: u64,
}

mod cache;

pub use cache::NameCache;
mod learn;
pub use learn::Learner;
mod queries;
pub use queries::{Pending, PendingQueries};
mod trust;
pub use trust::{TrustedResolvers, Untrusted, resolv_conf_nameservers};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_learn;
