//! What the daemon does with each DNS message the kernel hands over: a query to a
//! trusted resolver waits for its answer; an answer that matches one teaches its names.
use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use tracing::debug;

use super::{NameCache, Pending, PendingQueries, TrustedResolvers, Untrusted, parse_response};
use crate::kernel::{DnsDirection, DnsMessage};

/// Queries waiting for answers, across all watched processes.
const MAX_PENDING: usize = 16 * 1024;

/// Turns the DNS traffic of watched processes into names they learned.
pub struct Learner {
    resolvers: TrustedResolvers,
    queries: PendingQueries,
    names: Arc<Mutex<NameCache>>,
    ignored: IgnoredSink,
}

/// Told why each answer that taught nothing was ignored (the daemon counts them).
pub type IgnoredSink = Box<dyn Fn(Untrusted) + Send>;

impl Learner {
    pub fn new(
        resolvers: TrustedResolvers,
        names: Arc<Mutex<NameCache>>,
        ignored: IgnoredSink,
    ) -> Self {
        Self {
            resolvers,
            queries: PendingQueries::new(MAX_PENDING),
            names,
            ignored,
        }
    }

    /// Handles one message; for an answer, the number of (name, address) pairs it
    /// taught, or why it taught nothing (also told to the `ignored` sink).
    pub fn observe(&mut self, m: &DnsMessage<'_>, now: Instant) -> Result<usize, Untrusted> {
        match m.direction {
            DnsDirection::Query => {
                // A query to anyone else can never be answered in a way that teaches.
                if self.resolvers.check(m).is_ok()
                    && let Some(server) = m.peer
                    && let Err(e) = self.queries.sent(m.tgid, m.sock, server, m.message, now)
                {
                    debug!(tgid = m.tgid, error = %e, "DNS query not understood; its answer will teach nothing");
                }
                Ok(0)
            }
            DnsDirection::Answer => {
                let taught = self.answer(m, now);
                if let Err(why) = taught {
                    debug!(tgid = m.tgid, from = ?m.peer, reason = why.as_str(), "DNS answer ignored");
                    (self.ignored)(why);
                }
                taught
            }
        }
    }

    fn answer(&mut self, m: &DnsMessage<'_>, now: Instant) -> Result<usize, Untrusted> {
        self.resolvers.check(m)?;
        let from = m.peer.ok_or(Untrusted::UnknownSender)?;
        self.queries
            .answered(m.tgid, m.sock, from, m.message, now)
            .map_err(|p| match p {
                Pending::Unasked => Untrusted::Unasked,
                Pending::OtherQuestion => Untrusted::OtherQuestion,
                Pending::Unreadable => Untrusted::Unreadable,
            })?;
        let answers = parse_response(m.message).unwrap_or_default();
        if !answers.is_empty() {
            self.names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .learn(m.tgid, &answers, now);
        }
        Ok(answers.len())
    }
}
