//! The DNS queries watched processes have sent and not yet had answered.
//!
//! An answer teaches a name only if it answers a query the same process sent on the
//! same socket to the server the answer comes from, with the same transaction id and
//! question: a datagram from anyone else, or an answer to a question nobody asked,
//! teaches nothing. Each query is answered at most once.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{DnsError, parse_question};

/// How long a query waits for its answer: resolvers give up and retry well before.
pub const QUERY_TTL: Duration = Duration::from_secs(60);

/// Who asked, where, on which socket and with which id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    tgid: u32,
    sock: u64,
    server: SocketAddr,
    id: u16,
}

/// What was asked, and when.
#[derive(Debug, Clone)]
struct Asked {
    name: String,
    qtype: u16,
    qclass: u16,
    at: Instant,
}

/// Why an answer matched no query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// No query with this id went from this socket to this server (or it was answered
    /// or expired).
    Unasked,
    /// A query with this id did, but it asked another question.
    OtherQuestion,
    /// The answer does not parse as far as its question.
    Unreadable,
}

/// Queries in flight, at most `max` of them (the oldest are forgotten first).
#[derive(Debug)]
pub struct PendingQueries {
    max: usize,
    by_key: HashMap<Key, Vec<Asked>>,
    /// Arrival order, for expiry and eviction; may name entries already answered.
    order: VecDeque<(Instant, Key)>,
    len: usize,
}

impl PendingQueries {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            by_key: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
        }
    }

    /// Records a query `tgid` sent on `sock` to `server`. A message that is not a query
    /// is an error and records nothing.
    pub fn sent(
        &mut self,
        tgid: u32,
        sock: u64,
        server: SocketAddr,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), DnsError> {
        let q = parse_question(msg)?;
        if q.is_response {
            return Err(DnsError::NotAQuery);
        }
        self.expire(now);
        while self.len >= self.max && self.evict_oldest() {}
        let key = Key {
            tgid,
            sock,
            server: canonical(server),
            id: q.id,
        };
        let asked = self.by_key.entry(key).or_default();
        // glibc sends the A and AAAA queries with one id: both wait side by side. A
        // query sent again (a retry) waits once.
        if !asked
            .iter()
            .any(|a| a.name == q.name && a.qtype == q.qtype && a.qclass == q.qclass)
        {
            asked.push(Asked {
                name: q.name,
                qtype: q.qtype,
                qclass: q.qclass,
                at: now,
            });
            self.len += 1;
        }
        self.order.push_back((now, key));
        Ok(())
    }

    /// Matches an answer `tgid` received on `sock` from `server` with the query it
    /// answers, which is then answered (a second answer to it matches nothing).
    pub fn answered(
        &mut self,
        tgid: u32,
        sock: u64,
        server: SocketAddr,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), Pending> {
        self.expire(now);
        let q = parse_question(msg).map_err(|_| Pending::Unreadable)?;
        let key = Key {
            tgid,
            sock,
            server: canonical(server),
            id: q.id,
        };
        let asked = self.by_key.get_mut(&key).ok_or(Pending::Unasked)?;
        let i = asked
            .iter()
            .position(|a| a.name == q.name && a.qtype == q.qtype && a.qclass == q.qclass)
            .ok_or(Pending::OtherQuestion)?;
        asked.swap_remove(i);
        self.len -= 1;
        if asked.is_empty() {
            self.by_key.remove(&key);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops queries older than [`QUERY_TTL`].
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.order.front() {
            if now.saturating_duration_since(at) < QUERY_TTL {
                break;
            }
            self.evict_oldest();
        }
    }

    /// Drops the queries that arrived first under the oldest key in the order; false
    /// when there is nothing left to drop.
    fn evict_oldest(&mut self) -> bool {
        let Some((at, key)) = self.order.pop_front() else {
            return false;
        };
        if let Some(asked) = self.by_key.get_mut(&key) {
            let before = asked.len();
            asked.retain(|a| a.at > at);
            self.len -= before - asked.len();
            if asked.is_empty() {
                self.by_key.remove(&key);
            }
        }
        true
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d` (a v4-mapped destination is answered over IPv4), and
/// the unspecified address is the loopback the kernel sends it to.
fn canonical(addr: SocketAddr) -> SocketAddr {
    let ip = addr.ip().to_canonical();
    let ip = match ip {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
