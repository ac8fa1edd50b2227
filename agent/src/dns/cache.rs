use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Answer, Entry, MAX_TTL, MIN_TTL};

/// Per-process memory of names: which hostnames each process learned for an address.
/// Holds at most `max_entries` (process, address, name) entries, evicting the least
/// recently learned.
#[derive(Debug)]
pub struct NameCache {
    max_entries: usize,
    by_tgid: HashMap<u32, HashMap<IpAddr, BTreeMap<String, Entry>>>,
    /// Learn order, oldest first: seq -> entry.
    order: BTreeMap<u64, (u32, IpAddr, String)>,
    next_seq: u64,
}

impl NameCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            by_tgid: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Remembers `answers` as learned by `tgid` at `now`. A name learned again is
    /// refreshed: its expiry is the later of the two and it becomes the newest entry.
    pub fn learn(&mut self, tgid: u32, answers: &[Answer], now: Instant) {
        for a in answers {
            let ttl = Duration::from_secs(a.ttl.into()).clamp(MIN_TTL, MAX_TTL);
            let Some(expires) = now.checked_add(ttl) else {
                continue;
            };
            let addr = a.addr.to_canonical();
            let seq = self.next_seq;
            self.next_seq += 1;
            let names = self
                .by_tgid
                .entry(tgid)
                .or_default()
                .entry(addr)
                .or_default();
            match names.get_mut(&a.name) {
                Some(e) => {
                    self.order.remove(&e.seq);
                    e.expires = e.expires.max(expires);
                    e.seq = seq;
                }
                None => {
                    names.insert(a.name.clone(), Entry { expires, seq });
                }
            }
            self.order.insert(seq, (tgid, addr, a.name.clone()));
        }
        while self.order.len() > self.max_entries {
            let Some((_, (tgid, addr, name))) = self.order.pop_first() else {
                break;
            };
            self.remove(tgid, addr, &name);
        }
    }

    fn remove(&mut self, tgid: u32, addr: IpAddr, name: &str) {
        let Some(addrs) = self.by_tgid.get_mut(&tgid) else {
            return;
        };
        if let Some(names) = addrs.get_mut(&addr) {
            names.remove(name);
            if names.is_empty() {
                addrs.remove(&addr);
            }
        }
        if addrs.is_empty() {
            self.by_tgid.remove(&tgid);
        }
    }

    /// Names `tgid` learned for `addr` that have not expired, sorted and deduplicated.
    /// An IPv4-mapped IPv6 address matches its IPv4 form and the other way round.
    pub fn names(&self, tgid: u32, addr: IpAddr, now: Instant) -> Vec<String> {
        self.live(tgid, addr, now).map(str::to_owned).collect()
    }

    fn live(&self, tgid: u32, addr: IpAddr, now: Instant) -> impl Iterator<Item = &str> {
        self.by_tgid
            .get(&tgid)
            .and_then(|a| a.get(&addr.to_canonical()))
            .into_iter()
            .flatten()
            .filter(move |(_, e)| now < e.expires)
            .map(|(n, _)| n.as_str())
    }

    /// A process's names also serve its children (a child's copy of the parent's
    /// resolver cache is not tracked): the names any of `lineage` (the process and its
    /// ancestors) learned for `addr`, sorted and deduplicated.
    pub fn names_for_lineage(&self, lineage: &[u32], addr: IpAddr, now: Instant) -> Vec<String> {
        let mut seen = HashSet::new();
        let names: BTreeSet<&str> = lineage
            .iter()
            .filter(|t| seen.insert(**t))
            .flat_map(|&t| self.live(t, addr, now))
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Drops everything `tgid` learned (it exited).
    pub fn forget(&mut self, tgid: u32) {
        if let Some(addrs) = self.by_tgid.remove(&tgid) {
            for e in addrs.values().flat_map(|n| n.values()) {
                self.order.remove(&e.seq);
            }
        }
    }

    /// Drops the entries expired at `now`.
    pub fn prune(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (&tgid, addrs) in &self.by_tgid {
            for (&addr, names) in addrs {
                for (name, e) in names {
                    if e.expires <= now {
                        expired.push((tgid, addr, name.clone(), e.seq));
                    }
                }
            }
        }
        for (tgid, addr, name, seq) in expired {
            self.order.remove(&seq);
            self.remove(tgid, addr, &name);
        }
    }

    /// (process, address, name) entries held, expired ones included until evicted.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
