//! Chat messages by platform and result: `belay_chat_messages_total`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// The results a chat message can have, as the `result` label says them.
pub const RESULTS: [&str; 6] = [
    "posted",
    "updated",
    "unrouted",
    "rate_limited",
    "failed_transient",
    "failed_permanent",
];

#[derive(Debug, Default)]
pub struct ChatMessages {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ChatMessages {
    /// Counts one message of `platform` with `result` (one of [`RESULTS`]).
    pub fn record(&self, platform: &'static str, result: &'static str) {
        debug_assert!(RESULTS.contains(&result), "{result}");
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((platform, result))
            .or_default() += 1;
    }

    pub fn count(&self, platform: &str, result: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|((p, r), _)| *p == platform && *r == result)
            .map_or(0, |(_, count)| *count)
    }

    pub(super) fn render(&self, out: &mut String, header: impl Fn(&mut String, &str, &str, &str)) {
        use std::fmt::Write as _;
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if counts.is_empty() {
            return;
        }
        header(
            out,
            "belay_chat_messages_total",
            "counter",
            "Chat messages about requests by platform and result (posted, updated, \
             unrouted: no route posts it, rate_limited, failed_transient: retried, \
             failed_permanent: given up).",
        );
        for ((platform, result), count) in counts {
            let _ = writeln!(
                out,
                "belay_chat_messages_total{{platform=\"{platform}\",result=\"{result}\"}} {count}"
            );
        }
    }
}
