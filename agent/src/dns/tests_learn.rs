//! Which answers teach: only one that answers a query the process sent on that socket
//! to that trusted resolver, with that id and question, once.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{NameCache, PendingQueries, TrustedResolvers, Untrusted, learn::Learner, queries};
use crate::kernel::{DnsDirection, DnsMessage};

const RESOLVER: &str = "127.0.0.53:53";

/// A query for `name` (type A) with transaction id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The answer to `query(id, name)`: `name` is `ip`.
fn answer(id: u16, name: &str, ip: [u8; 4]) -> Vec<u8> {
    let mut m = query(id, name);
    m[2] = 0x81;
    m[3] = 0x80;
    m[6..8].copy_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&ip);
    m
}

fn message<'a>(direction: DnsDirection, sock: u64, peer: &str, bytes: &'a [u8]) -> DnsMessage<'a> {
    DnsMessage {
        tgid: 7,
        direction,
        sock,
        peer: Some(peer.parse().unwrap()),
        host_netns: true,
        message: bytes,
    }
}

fn record(into: &Arc<Mutex<Vec<Untrusted>>>) -> super::learn::IgnoredSink {
    let into = into.clone();
    Box::new(move |why| into.lock().unwrap().push(why))
}

struct Setup {
    learner: Learner,
    names: Arc<Mutex<NameCache>>,
    ignored: Arc<Mutex<Vec<Untrusted>>>,
    now: Instant,
}

impl Setup {
    fn new() -> Self {
        let names = Arc::new(Mutex::new(NameCache::new(64)));
        let ignored = Arc::new(Mutex::new(Vec::new()));
        let resolvers = TrustedResolvers::new(["127.0.0.53".parse().unwrap()]);
        Setup {
            learner: Learner::new(resolvers, names.clone(), record(&ignored)),
            names,
            ignored,
            now: Instant::now(),
        }
    }

    fn ask(&mut self, sock: u64, to: &str, q: &[u8]) {
        let m = message(DnsDirection::Query, sock, to, q);
        assert_eq!(self.learner.observe(&m, self.now), Ok(0));
    }

    fn hear(&mut self, sock: u64, from: &str, a: &[u8]) -> Result<usize, Untrusted> {
        let m = message(DnsDirection::Answer, sock, from, a);
        self.learner.observe(&m, self.now)
    }

    fn known(&self, ip: [u8; 4]) -> Vec<String> {
        self.names
            .lock()
            .unwrap()
            .names(7, IpAddr::from(ip), self.now)
    }
}

#[test]
fn the_answer_to_a_query_the_process_sent_teaches_its_name() {
    let mut s = Setup::new();
    s.ask(1, RESOLVER, &query(0x4242, "api.example.test"));
    assert_eq!(
        s.hear(
            1,
            RESOLVER,
            &answer(0x4242, "api.example.test", [10, 0, 0, 1])
        ),
        Ok(1)
    );
    assert_eq!(s.known([10, 0, 0, 1]), vec!["api.example.test".to_string()]);
}

#[test]
fn an_unsolicited_answer_teaches_nothing() {
    let mut s = Setup::new();
    assert_eq!(
        s.hear(
            1,
            RESOLVER,
            &answer(0x4242, "api.example.test", [10, 0, 0, 1])
        ),
        Err(Untrusted::Unasked)
    );
    assert!(s.known([10, 0, 0, 1]).is_empty());
    assert_eq!(
        *s.ignored.lock().unwrap(),
        [Untrusted::Unasked],
        "told, to be counted"
    );
}

#[test]
fn an_answer_to_another_question_teaches_nothing() {
    let mut s = Setup::new();
    s.ask(1, RESOLVER, &query(0x4242, "harmless.test"));
    assert_eq!(
        s.hear(
            1,
            RESOLVER,
            &answer(0x4242, "api.example.test", [10, 0, 0, 1])
        ),
        Err(Untrusted::OtherQuestion)
    );
    assert!(s.known([10, 0, 0, 1]).is_empty());
}

#[test]
fn an_answer_with_another_id_socket_or_server_teaches_nothing() {
    let mut s = Setup::new();
    s.ask(1, RESOLVER, &query(0x4242, "api.example.test"));
    let a = answer(0x4242, "api.example.test", [10, 0, 0, 1]);
    let wrong_id = answer(0x4243, "api.example.test", [10, 0, 0, 1]);
    assert_eq!(s.hear(1, RESOLVER, &wrong_id), Err(Untrusted::Unasked));
    assert_eq!(
        s.hear(2, RESOLVER, &a),
        Err(Untrusted::Unasked),
        "another socket"
    );
    // Another trusted resolver than the one asked.
    let mut s2 = Setup::new();
    s2.learner = Learner::new(
        TrustedResolvers::new(["127.0.0.53".parse().unwrap(), "127.0.0.54".parse().unwrap()]),
        s2.names.clone(),
        record(&s2.ignored),
    );
    s2.ask(1, RESOLVER, &query(0x4242, "api.example.test"));
    assert_eq!(s2.hear(1, "127.0.0.54:53", &a), Err(Untrusted::Unasked));
    // The right one still does, once.
    assert_eq!(s.hear(1, RESOLVER, &a), Ok(1));
    assert_eq!(
        s.hear(1, RESOLVER, &a),
        Err(Untrusted::Unasked),
        "a second answer"
    );
}

#[test]
fn a_query_to_an_untrusted_server_is_not_remembered() {
    let mut s = Setup::new();
    s.ask(1, "127.0.0.2:53", &query(0x4242, "api.example.test"));
    assert_eq!(
        s.hear(
            1,
            "127.0.0.2:53",
            &answer(0x4242, "api.example.test", [10, 0, 0, 1])
        ),
        Err(Untrusted::Resolver)
    );
}

#[test]
fn an_answer_matches_a_question_asked_in_any_letter_case() {
    let mut s = Setup::new();
    s.ask(1, RESOLVER, &query(9, "API.Example.test"));
    assert_eq!(
        s.hear(1, RESOLVER, &answer(9, "api.example.TEST", [10, 0, 0, 2])),
        Ok(1)
    );
}

#[test]
fn an_ipv4_mapped_or_unspecified_destination_is_the_server_that_answers() {
    let mut p = PendingQueries::new(8);
    let now = Instant::now();
    let to: SocketAddr = "[::ffff:127.0.0.53]:53".parse().unwrap();
    p.sent(1, 1, to, &query(1, "a.test"), now).unwrap();
    assert_eq!(
        p.answered(
            1,
            1,
            RESOLVER.parse().unwrap(),
            &answer(1, "a.test", [1, 1, 1, 1]),
            now
        ),
        Ok(())
    );
    p.sent(
        1,
        1,
        "0.0.0.0:53".parse().unwrap(),
        &query(2, "a.test"),
        now,
    )
    .unwrap();
    assert_eq!(
        p.answered(
            1,
            1,
            "127.0.0.1:53".parse().unwrap(),
            &answer(2, "a.test", [1, 1, 1, 1]),
            now
        ),
        Ok(())
    );
}

#[test]
fn queries_expire_and_are_bounded() {
    let mut p = PendingQueries::new(2);
    let now = Instant::now();
    let server: SocketAddr = RESOLVER.parse().unwrap();
    for id in 1..=3 {
        p.sent(1, 1, server, &query(id, "a.test"), now).unwrap();
    }
    assert_eq!(p.len(), 2);
    // The oldest was forgotten to make room.
    assert_eq!(
        p.answered(1, 1, server, &answer(1, "a.test", [1, 1, 1, 1]), now),
        Err(queries::Pending::Unasked)
    );
    let later = now + queries::QUERY_TTL + Duration::from_secs(1);
    assert_eq!(
        p.answered(1, 1, server, &answer(3, "a.test", [1, 1, 1, 1]), later),
        Err(queries::Pending::Unasked)
    );
    assert!(p.is_empty());
}

#[test]
fn a_and_aaaa_queries_with_one_id_are_both_answered() {
    let mut p = PendingQueries::new(8);
    let now = Instant::now();
    let server: SocketAddr = RESOLVER.parse().unwrap();
    let a = query(5, "a.test");
    let mut aaaa = a.clone();
    let n = aaaa.len();
    aaaa[n - 3] = 28;
    p.sent(1, 1, server, &a, now).unwrap();
    p.sent(1, 1, server, &aaaa, now).unwrap();
    let mut aaaa_answer = aaaa.clone();
    aaaa_answer[2] = 0x81;
    assert_eq!(p.answered(1, 1, server, &aaaa_answer, now), Ok(()));
    assert_eq!(
        p.answered(1, 1, server, &answer(5, "a.test", [1, 1, 1, 1]), now),
        Ok(())
    );
    assert!(p.is_empty());
}

#[test]
fn a_response_is_not_recorded_as_a_query() {
    let mut p = PendingQueries::new(8);
    let server: SocketAddr = RESOLVER.parse().unwrap();
    assert_eq!(
        p.sent(
            1,
            1,
            server,
            &answer(5, "a.test", [1, 1, 1, 1]),
            Instant::now()
        ),
        Err(super::DnsError::NotAQuery)
    );
    assert!(p.is_empty());
}
