//! Chat, by platform and result: the messages the outbox sends
//! (`belay_chat_messages_total`) and the presses that arrive (`belay_chat_presses_total`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// The results a chat message can have, as the `result` label says them.
pub const MESSAGE_RESULTS: [&str; 6] = [
    "posted",
    "updated",
    "unrouted",
    "rate_limited",
    "failed_transient",
    "failed_permanent",
];

/// The results of a press (a button, a card action), as the `result` label says them.
pub const PRESS_DECIDED: &str = "decided";
/// An approval short of the quorum.
pub const PRESS_COUNTED: &str = "counted";
pub const PRESS_REFUSED: &str = "refused";
pub const PRESS_UNMAPPED: &str = "unmapped";
pub const PRESS_UNAUTHENTICATED: &str = "unauthenticated";
pub const PRESS_RESULTS: [&str; 5] = [
    PRESS_DECIDED,
    PRESS_COUNTED,
    PRESS_REFUSED,
    PRESS_UNMAPPED,
    PRESS_UNAUTHENTICATED,
];

/// A counter by (platform, result), rendered only once something was counted.
#[derive(Debug)]
pub struct ByPlatform {
    name: &'static str,
    help: &'static str,
    results: &'static [&'static str],
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ByPlatform {
    fn new(name: &'static str, help: &'static str, results: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            results,
            counts: Mutex::default(),
        }
    }

    /// Chat messages about requests.
    pub fn messages() -> Self {
        Self::new(
            "belay_chat_messages_total",
            "Chat messages about requests by platform and result (posted, updated, \
             unrouted: no route posts it, rate_limited, failed_transient: retried, \
             failed_permanent: given up).",
            &MESSAGE_RESULTS,
        )
    }

    /// Presses arriving from chat.
    pub fn presses() -> Self {
        Self::new(
            "belay_chat_presses_total",
            "Button presses and card actions from chat by platform and result (decided, \
             counted: an approval short of the quorum, refused: by the rules or a missing \
             role, unmapped: a chat user who is no belay reviewer, unauthenticated: a bad \
             signature or token, a replay, another workspace or tenant).",
            &PRESS_RESULTS,
        )
    }

    /// Counts one of `platform` with `result` (one of the counter's results).
    pub fn record(&self, platform: &'static str, result: &'static str) {
        debug_assert!(self.results.contains(&result), "{result}");
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
        header(out, self.name, "counter", self.help);
        for ((platform, result), count) in counts {
            let _ = writeln!(
                out,
                "{}{{platform=\"{platform}\",result=\"{result}\"}} {count}",
                self.name
            );
        }
    }
}
