use super::*;

/// A name in a test message: text labels, optionally ending in a pointer.
#[derive(Clone, Copy)]
enum N<'a> {
    Text(&'a str),
    Ptr(u16),
    TextPtr(&'a str, u16),
}

/// Builds DNS messages for tests; counts are given at `finish`.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(flags: u16) -> Self {
        let mut buf = vec![0x12, 0x34];
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        Msg { buf }
    }

    fn response() -> Self {
        Self::new(0x8180)
    }

    fn at(&self) -> u16 {
        self.buf.len() as u16
    }

    /// Writes a name; returns its offset.
    fn name(&mut self, n: N<'_>) -> u16 {
        let at = self.at();
        let (text, ptr) = match n {
            N::Text(t) => (t, None),
            N::Ptr(p) => ("", Some(p)),
            N::TextPtr(t, p) => (t, Some(p)),
        };
        for label in text.split('.').filter(|l| !l.is_empty()) {
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label.as_bytes());
        }
        match ptr {
            Some(p) => self.buf.extend_from_slice(&(0xc000 | p).to_be_bytes()),
            None => self.buf.push(0),
        }
        at
    }

    fn question(&mut self, n: N<'_>, qtype: u16) -> u16 {
        let at = self.name(n);
        self.buf.extend_from_slice(&qtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        at
    }

    fn rr_head(&mut self, owner: N<'_>, rtype: u16, ttl: u32, len: u16) {
        self.name(owner);
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
    }

    fn rr(&mut self, owner: N<'_>, rtype: u16, ttl: u32, data: &[u8]) {
        self.rr_head(owner, rtype, ttl, data.len() as u16);
        self.buf.extend_from_slice(data);
    }

    fn a(&mut self, owner: N<'_>, ttl: u32, addr: [u8; 4]) {
        self.rr(owner, TYPE_A, ttl, &addr);
    }

    fn aaaa(&mut self, owner: N<'_>, ttl: u32, addr: Ipv6Addr) {
        self.rr(owner, TYPE_AAAA, ttl, &addr.octets());
    }

    /// A CNAME record; returns the offset of its target name.
    fn cname(&mut self, owner: N<'_>, ttl: u32, target: N<'_>) -> u16 {
        let mut t = Msg { buf: Vec::new() };
        t.name(target);
        self.rr_head(owner, TYPE_CNAME, ttl, t.buf.len() as u16);
        self.name(target)
    }

    /// Starts a record of an unknown type owned by the question, whose data the
    /// caller writes; `opaque_end` fixes its length.
    fn opaque_start(&mut self) -> usize {
        self.rr_head(N::Ptr(12), 99, 1, 0);
        self.buf.len()
    }

    fn opaque_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start - 2..start].copy_from_slice(&len.to_be_bytes());
    }

    fn finish(mut self, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
        for (i, c) in [qd, an, ns, ar].into_iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }
}

fn ans(name: &str, addr: &str, ttl: u32) -> Answer {
    Answer {
        name: name.into(),
        addr: addr.parse().unwrap(),
        ttl,
    }
}

fn simple_a() -> Vec<u8> {
    let mut m = Msg::response();
    let q = m.question(N::Text("Example.COM"), TYPE_A);
    m.a(N::Ptr(q), 300, [93, 184, 216, 34]);
    m.finish(1, 1, 0, 0)
}

/// api.openai.com -> api.openai.com.cdn.cloudflare.net -> edge.cdn.cloudflare.net,
/// two addresses, compressed throughout, plus records that must not be attributed.
fn cname_chain() -> Vec<u8> {
    let mut m = Msg::response();
    let q = m.question(N::Text("API.OpenAI.com"), TYPE_A);
    let alias = m.cname(N::Ptr(q), 300, N::Text("api.openai.com.cdn.cloudflare.net"));
    // "cdn.cloudflare.net" inside the alias: after "api", "openai", "com" labels.
    let cdn = alias + 4 + 7 + 4;
    let edge = m.cname(N::Ptr(alias), 120, N::TextPtr("edge", cdn));
    m.a(N::Ptr(edge), 60, [104, 18, 0, 1]);
    m.a(N::Ptr(edge), 600, [104, 18, 0, 2]);
    // An address for an unrelated name in the answer section.
    m.a(N::Text("tracker.example"), 60, [6, 6, 6, 6]);
    // Glue in the additional section.
    m.a(N::TextPtr("ns1", cdn), 60, [7, 7, 7, 7]);
    m.finish(1, 5, 0, 1)
}

fn sorted(mut v: Vec<Answer>) -> Vec<Answer> {
    v.sort_by(|a, b| (&a.name, a.addr).cmp(&(&b.name, b.addr)));
    v
}

#[test]
fn a_record_with_uppercase_question() {
    assert_eq!(
        parse_response(&simple_a()),
        Ok(vec![ans("example.com", "93.184.216.34", 300)])
    );
}

#[test]
fn aaaa_record() {
    let mut m = Msg::response();
    let q = m.question(N::Text("ipv6.example.org."), TYPE_AAAA);
    m.aaaa(N::Ptr(q), 30, "2001:db8::1".parse().unwrap());
    // Another class than IN is ignored.
    m.rr(N::Ptr(q), TYPE_AAAA, 30, &[0; 16]);
    let l = m.buf.len();
    m.buf[l - 16 - 10 + 2..l - 16 - 10 + 4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        parse_response(&m.finish(1, 2, 0, 0)),
        Ok(vec![ans("ipv6.example.org", "2001:db8::1", 30)])
    );
}

#[test]
fn cname_chain_attributes_every_name() {
    let got = parse_response(&cname_chain()).unwrap();
    let mut want = Vec::new();
    for (addr, last) in [("104.18.0.1", 60), ("104.18.0.2", 600)] {
        want.push(ans("api.openai.com", addr, last.min(120).min(300)));
        want.push(ans(
            "api.openai.com.cdn.cloudflare.net",
            addr,
            last.min(120),
        ));
        want.push(ans("edge.cdn.cloudflare.net", addr, last));
    }
    assert_eq!(sorted(got), sorted(want));
}

#[test]
fn records_in_any_order() {
    let mut m = Msg::response();
    let q = m.question(N::Text("a.example"), TYPE_A);
    m.a(N::Text("c.example"), 50, [1, 2, 3, 4]);
    m.cname(N::Text("b.example"), 50, N::Text("c.example"));
    m.cname(N::Ptr(q), 50, N::Text("b.example"));
    let got = parse_response(&m.finish(1, 3, 0, 0)).unwrap();
    let names: Vec<_> = sorted(got).into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["a.example", "b.example", "c.example"]);
}

#[test]
fn cname_loops_and_long_chains_are_bounded() {
    // a -> b -> a, both with addresses: each attributed to the reachable names.
    let mut m = Msg::response();
    m.question(N::Text("a.x"), TYPE_A);
    m.cname(N::Text("a.x"), 5, N::Text("b.x"));
    m.cname(N::Text("b.x"), 5, N::Text("a.x"));
    m.a(N::Text("b.x"), 5, [1, 1, 1, 1]);
    let got = parse_response(&m.finish(1, 3, 0, 0)).unwrap();
    assert_eq!(got.len(), 2);

    // A chain longer than MAX_CHAIN: its end is not followed.
    let mut m = Msg::response();
    m.question(N::Text("n0.x"), TYPE_A);
    let hops = MAX_CHAIN + 4;
    for i in 0..hops {
        m.cname(
            N::Text(&format!("n{i}.x")),
            5,
            N::Text(&format!("n{}.x", i + 1)),
        );
    }
    m.a(N::Text(&format!("n{hops}.x")), 5, [1, 1, 1, 1]);
    m.a(N::Text("n3.x"), 5, [2, 2, 2, 2]);
    let got = parse_response(&m.finish(1, hops as u16 + 2, 0, 0)).unwrap();
    assert!(got.iter().all(|a| a.addr.to_string() == "2.2.2.2"));
    assert_eq!(got.len(), 4, "n0..n3");

    // Many addresses: the answers are capped.
    let mut m = Msg::response();
    let q = m.question(N::Text("many.x"), TYPE_A);
    for i in 0..400u16 {
        let [hi, lo] = i.to_be_bytes();
        m.a(N::Ptr(q), 5, [10, 0, hi, lo]);
    }
    let got = parse_response(&m.finish(1, 400, 0, 0)).unwrap();
    assert_eq!(got.len(), MAX_ANSWERS);
}

#[test]
fn duplicates_keep_the_longest_ttl() {
    let mut m = Msg::response();
    let q = m.question(N::Text("d.x"), TYPE_A);
    m.a(N::Ptr(q), 10, [1, 1, 1, 1]);
    m.a(N::Ptr(q), 90, [1, 1, 1, 1]);
    assert_eq!(
        parse_response(&m.finish(1, 2, 0, 0)),
        Ok(vec![ans("d.x", "1.1.1.1", 90)])
    );
    // TTLs with the top bit set mean 0.
    let mut m = Msg::response();
    let q = m.question(N::Text("d.x"), TYPE_A);
    m.a(N::Ptr(q), 0x8000_0001, [1, 1, 1, 1]);
    assert_eq!(
        parse_response(&m.finish(1, 1, 0, 0)),
        Ok(vec![ans("d.x", "1.1.1.1", 0)])
    );
}

#[test]
fn queries_and_error_responses() {
    let mut q = simple_a();
    q[2] &= 0x7f;
    assert_eq!(parse_response(&q), Err(DnsError::NotAResponse));
    let mut nx = simple_a();
    nx[3] = (nx[3] & 0xf0) | 3; // NXDOMAIN
    assert_eq!(parse_response(&nx), Ok(vec![]));
    let mut op = simple_a();
    op[2] |= 0x2 << 3; // STATUS
    assert_eq!(parse_response(&op), Ok(vec![]));
    let no_q = Msg::response().finish(0, 0, 0, 0);
    assert_eq!(parse_response(&no_q), Err(DnsError::NoQuestion));
    assert_eq!(parse_response(&[]), Err(DnsError::Truncated));
}

#[test]
fn pointer_loops_and_bad_pointers() {
    // The question name points at itself.
    let mut m = Msg::response();
    m.question(N::Ptr(12), TYPE_A);
    assert_eq!(
        parse_response(&m.finish(1, 0, 0, 0)),
        Err(DnsError::PointerLoop { target: 12 })
    );
    // Two pointers pointing at each other, in an answer's owner.
    let mut m = Msg::response();
    m.question(N::Text("x.y"), TYPE_A);
    let a = m.at();
    m.name(N::Ptr(a + 2));
    m.name(N::Ptr(a));
    let mut msg = m.finish(1, 1, 0, 0);
    msg.extend_from_slice(&[0; 10]);
    assert_eq!(
        parse_response(&msg),
        Err(DnsError::PointerLoop {
            target: a as usize + 2
        })
    );
    // Forward out of the message.
    let mut m = Msg::response();
    m.question(N::TextPtr("x", 0x3fff), TYPE_A);
    assert_eq!(
        parse_response(&m.finish(1, 0, 0, 0)),
        Err(DnsError::BadPointer {
            at: 14,
            target: 0x3fff
        })
    );
    // A long chain of distinct backward pointers (kept in an opaque record's data),
    // no loop: MAX_POINTERS jumps (the owner's own pointer and MAX_POINTERS - 1 more)
    // pass, one more fails.
    for (chain, want) in [
        (MAX_POINTERS - 1, Ok(vec![ans("end", "1.1.1.1", 1)])),
        (MAX_POINTERS, Err(DnsError::TooManyPointers)),
    ] {
        let mut m = Msg::response();
        let mut prev = m.question(N::Text("End"), TYPE_A);
        let blob = m.opaque_start();
        for _ in 0..chain {
            prev = m.name(N::Ptr(prev));
        }
        m.opaque_end(blob);
        m.a(N::Ptr(prev), 1, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.finish(1, 2, 0, 0)), want, "{chain}");
    }
}

#[test]
fn label_and_name_limits() {
    let mut m = Msg::response();
    m.buf.extend_from_slice(&[0x41, b'a', 0]);
    m.buf.extend_from_slice(&[0, 1, 0, 1]);
    assert_eq!(
        parse_response(&m.finish(1, 0, 0, 0)),
        Err(DnsError::LabelTooLong { at: 12, byte: 0x41 })
    );
    let l63 = "a".repeat(63);
    let long = [&l63[..]; 4].join(".");
    let mut m = Msg::response();
    m.question(N::Text(&long), TYPE_A);
    assert_eq!(
        parse_response(&m.finish(1, 0, 0, 0)),
        Err(DnsError::NameTooLong)
    );
    // 3 * 64 + 62 + 1 = 255: the longest name allowed.
    let ok = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
    let mut m = Msg::response();
    let q = m.question(N::Text(&ok), TYPE_A);
    m.a(N::Ptr(q), 1, [1, 2, 3, 4]);
    assert_eq!(
        parse_response(&m.finish(1, 1, 0, 0)),
        Ok(vec![ans(&ok, "1.2.3.4", 1)])
    );
    // Pointers cannot stretch a name past the limit either.
    let mut m = Msg::response();
    let mut prev = m.question(N::Text(&l63), TYPE_A);
    let blob = m.opaque_start();
    for _ in 0..4 {
        prev = m.name(N::TextPtr(&l63, prev));
    }
    m.opaque_end(blob);
    m.a(N::Ptr(prev), 1, [1, 1, 1, 1]);
    assert_eq!(
        parse_response(&m.finish(1, 2, 0, 0)),
        Err(DnsError::NameTooLong)
    );
}

#[test]
fn bad_rdata_lengths() {
    for (rtype, len) in [(TYPE_A, 5u16), (TYPE_A, 3), (TYPE_AAAA, 4), (TYPE_AAAA, 17)] {
        let mut m = Msg::response();
        let q = m.question(N::Text("r.x"), TYPE_A);
        m.rr(N::Ptr(q), rtype, 1, &vec![1; usize::from(len)]);
        assert_eq!(
            parse_response(&m.finish(1, 1, 0, 0)),
            Err(DnsError::BadRdata { rtype, len }),
            "type {rtype} len {len}"
        );
    }
    // A CNAME whose target runs past its rdata, or stops short of it.
    for len in [2u16, 6] {
        let mut m = Msg::response();
        let q = m.question(N::Text("r.x"), TYPE_A);
        m.rr_head(N::Ptr(q), TYPE_CNAME, 1, len);
        m.buf.extend_from_slice(&[1, b't', 0, 0, 0, 0]);
        m.a(N::Text("t"), 1, [1, 1, 1, 1]);
        assert_eq!(
            parse_response(&m.finish(1, 2, 0, 0)),
            Err(DnsError::BadRdata {
                rtype: TYPE_CNAME,
                len
            })
        );
    }
    // Unknown types are skipped whatever their data.
    let mut m = Msg::response();
    let q = m.question(N::Text("r.x"), TYPE_A);
    m.rr(N::Ptr(q), 16, 1, b"\x05hello");
    m.a(N::Ptr(q), 1, [1, 1, 1, 1]);
    assert_eq!(
        parse_response(&m.finish(1, 2, 0, 0)),
        Ok(vec![ans("r.x", "1.1.1.1", 1)])
    );
}

#[test]
fn odd_bytes_are_escaped() {
    let mut m = Msg::response();
    m.buf.push(9);
    m.buf.extend_from_slice(b"a\x07.\\ \xffB\x1b[");
    m.buf
        .extend_from_slice(&[3, b'c', b'O', b'm', 0, 0, 1, 0, 1]);
    m.a(N::Ptr(12), 1, [1, 1, 1, 1]);
    let got = parse_response(&m.finish(1, 1, 0, 0)).unwrap();
    assert_eq!(got[0].name, r"a\007\.\\\032\255b\027[.com");
}

#[test]
fn truncated_at_every_offset() {
    for msg in [simple_a(), cname_chain()] {
        let full = parse_response(&msg).unwrap();
        assert!(!full.is_empty());
        for cut in 0..msg.len() {
            match parse_response(&msg[..cut]) {
                Err(_) => {}
                Ok(part) => {
                    for a in &part {
                        assert!(
                            full.iter().any(|f| f.name == a.name && f.addr == a.addr),
                            "cut at {cut}: {a:?} not in the full answer"
                        );
                    }
                }
            }
        }
    }
    // Cut inside the only answer: nothing learned, no error.
    let msg = simple_a();
    assert_eq!(parse_response(&msg[..msg.len() - 1]), Ok(vec![]));
    // Cut inside the question: an error.
    assert_eq!(parse_response(&msg[..14]), Err(DnsError::Truncated));
    // cname_chain cut just after both addresses: nothing lost.
    let msg = cname_chain();
    let glue = (1 + 3 + 2) + 10 + 4; // "ns1" + pointer, fixed fields, address
    let unrelated = 17 + 10 + 4; // "tracker.example" uncompressed
    let cut = msg.len() - glue - unrelated;
    assert_eq!(parse_response(&msg[..cut - 1]).unwrap().len(), 3);
    assert_eq!(
        sorted(parse_response(&msg[..cut]).unwrap()),
        sorted(parse_response(&msg).unwrap())
    );
}

/// xorshift64*: a deterministic source of mutations without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_messages_never_panic() {
    let seeds = [simple_a(), cname_chain()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0, 0);
    for i in 0..5000 {
        let mut msg = seeds[i % seeds.len()].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(msg.len());
            msg[at] = match rng.below(4) {
                // Pointer-ish and length-ish bytes are the interesting ones.
                0 => 0xc0 | rng.below(4) as u8,
                1 => rng.below(64) as u8,
                _ => rng.next() as u8,
            };
        }
        if rng.below(4) == 0 {
            msg.truncate(rng.below(msg.len() + 1));
        }
        if rng.below(8) == 0 {
            // Splice a random stretch onto the end.
            let from = rng.below(msg.len().max(1));
            let tail = msg[from.min(msg.len())..].to_vec();
            msg.extend_from_slice(&tail);
        }
        match parse_response(&msg) {
            Ok(answers) => {
                ok += 1;
                assert!(answers.len() <= MAX_ANSWERS);
                for a in answers {
                    assert!(a.name.len() <= 4 * MAX_NAME, "{}", a.name);
                    assert!(!a.name.chars().any(|c| c.is_control()));
                    assert!(!a.name.chars().any(|c| c.is_ascii_uppercase()));
                }
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");

    // Pure noise, too.
    for _ in 0..2000 {
        let len = rng.below(600);
        let mut msg: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if msg.len() > 3 {
            msg[2] |= 0x80;
            msg[3] &= 0xf0;
        }
        let _ = parse_response(&msg);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ttl_is_clamped() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut c = NameCache::new(100);
    c.learn(
        1,
        &[
            ans("zero.x", "1.1.1.1", 0),
            ans("five-min.x", "1.1.1.1", 300),
            ans("day.x", "1.1.1.1", 86_400),
        ],
        t0,
    );
    let at = |d| c.names(1, ip("1.1.1.1"), t0 + d);
    assert_eq!(at(s(0)), ["day.x", "five-min.x", "zero.x"]);
    assert_eq!(at(s(29)), ["day.x", "five-min.x", "zero.x"]);
    assert_eq!(at(s(30)), ["day.x", "five-min.x"]);
    assert_eq!(at(s(299)), ["day.x", "five-min.x"]);
    assert_eq!(at(s(300)), ["day.x"]);
    assert_eq!(at(s(3599)), ["day.x"]);
    assert!(at(s(3600)).is_empty());
    assert_eq!(c.len(), 3, "expired entries stay until pruned or evicted");
    c.prune(t0 + s(300));
    assert_eq!(c.len(), 1);
    assert_eq!(c.names(1, ip("1.1.1.1"), t0), ["day.x"]);
    // Learning again refreshes.
    c.learn(1, &[ans("zero.x", "1.1.1.1", 0)], t0 + s(1000));
    assert_eq!(c.names(1, ip("1.1.1.1"), t0 + s(1010)), ["day.x", "zero.x"]);
}

#[test]
fn ipv4_mapped_addresses_match() {
    let t0 = Instant::now();
    let mut c = NameCache::new(100);
    c.learn(
        1,
        &[
            ans("v4.x", "192.0.2.1", 60),
            ans("mapped.x", "::ffff:192.0.2.1", 60),
            ans("v6.x", "2001:db8::1", 60),
        ],
        t0,
    );
    let both = ["mapped.x", "v4.x"];
    assert_eq!(c.names(1, ip("192.0.2.1"), t0), both);
    assert_eq!(c.names(1, ip("::ffff:192.0.2.1"), t0), both);
    assert_eq!(c.names(1, ip("2001:db8::1"), t0), ["v6.x"]);
    assert!(c.names(1, ip("::192.0.2.1"), t0).is_empty(), "not mapped");
    assert!(c.names(2, ip("192.0.2.1"), t0).is_empty(), "per process");
}

#[test]
fn eviction_keeps_the_newest() {
    let t0 = Instant::now();
    let mut c = NameCache::new(3);
    for i in 0..3u8 {
        c.learn(
            1,
            &[ans(&format!("n{i}.x"), &format!("10.0.0.{i}"), 60)],
            t0,
        );
    }
    // Refresh n0: n1 is now the oldest.
    c.learn(1, &[ans("n0.x", "10.0.0.0", 60)], t0);
    c.learn(2, &[ans("n3.x", "10.0.0.3", 60)], t0);
    assert_eq!(c.len(), 3);
    assert!(c.names(1, ip("10.0.0.1"), t0).is_empty());
    assert_eq!(c.names(1, ip("10.0.0.0"), t0), ["n0.x"]);
    assert_eq!(c.names(1, ip("10.0.0.2"), t0), ["n2.x"]);
    assert_eq!(c.names(2, ip("10.0.0.3"), t0), ["n3.x"]);
    // One message larger than the whole cache.
    let many: Vec<_> = (0..10u8)
        .map(|i| ans(&format!("m{i}.x"), "10.1.0.0", 60))
        .collect();
    c.learn(3, &many, t0);
    assert_eq!(c.len(), 3);
    assert_eq!(c.names(3, ip("10.1.0.0"), t0), ["m7.x", "m8.x", "m9.x"]);
    assert!(c.names(1, ip("10.0.0.0"), t0).is_empty());

    let mut none = NameCache::new(0);
    none.learn(1, &many, t0);
    assert!(none.is_empty());
}

#[test]
fn lineage_and_forget() {
    let t0 = Instant::now();
    let mut c = NameCache::new(100);
    let addr = ip("203.0.113.7");
    c.learn(10, &[ans("parent.x", "203.0.113.7", 60)], t0);
    c.learn(
        11,
        &[
            ans("child.x", "203.0.113.7", 60),
            ans("parent.x", "203.0.113.7", 60),
        ],
        t0,
    );
    c.learn(12, &[ans("sibling.x", "203.0.113.7", 60)], t0);
    assert_eq!(
        c.names_for_lineage(&[11, 10, 1], addr, t0),
        ["child.x", "parent.x"]
    );
    assert_eq!(c.names_for_lineage(&[13, 10, 1], addr, t0), ["parent.x"]);
    assert!(c.names_for_lineage(&[], addr, t0).is_empty());
    assert!(
        c.names_for_lineage(&[10], addr, t0 + Duration::from_secs(61))
            .is_empty()
    );

    assert_eq!(c.len(), 4);
    c.forget(11);
    assert_eq!(c.len(), 2);
    assert_eq!(c.names_for_lineage(&[11, 10], addr, t0), ["parent.x"]);
    c.forget(10);
    c.forget(99);
    assert_eq!(c.len(), 1);
    // Forgotten entries are not evicted a second time.
    for i in 0..100u8 {
        c.learn(12, &[ans(&format!("s{i}.x"), "203.0.113.7", 60)], t0);
    }
    assert_eq!(c.len(), 100);
}

#[test]
fn parsed_answers_feed_the_cache() {
    let t0 = Instant::now();
    let mut c = NameCache::new(100);
    c.learn(7, &parse_response(&cname_chain()).unwrap(), t0);
    assert_eq!(
        c.names(7, ip("::ffff:104.18.0.1"), t0),
        [
            "api.openai.com",
            "api.openai.com.cdn.cloudflare.net",
            "edge.cdn.cloudflare.net"
        ]
    );
    assert!(c.names(7, ip("6.6.6.6"), t0).is_empty());
    assert!(c.names(7, ip("7.7.7.7"), t0).is_empty());
}
