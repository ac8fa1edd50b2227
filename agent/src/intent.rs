//! Declared intents: what a watched process said it is about to do, kept per declaring
//! process and attached to its own and its descendants' next requests.
//!
//! The declarer is the tgid the kernel reported for the socket's peer, never a pid the
//! caller names, so a process can speak only for itself (and, through the ancestry, for
//! the children it starts). A declaration is tied to the process's start time: a pid
//! that is reused after the declarer exits does not inherit its words. Nothing here is
//! verified or decides anything; it is context for people, labelled as such.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use belay_agent_api::{
    DEFAULT_INTENT_TTL_SECS, IntentDeclaration, IntentView, MAX_INTENT_TTL_SECS,
};
use belay_proto::domain::{Intent, IntentDetails};

/// Declarations kept at most (one per declaring process); beyond it, expired ones are
/// dropped first and then new declarations are refused, so a process forking
/// declarers cannot grow the daemon without bound.
pub const MAX_DECLARED: usize = 4096;

#[derive(Debug, Clone)]
struct Declared {
    start_time: u64,
    view: IntentView,
    expires: Instant,
}

/// The declared intents of live processes, by tgid.
#[derive(Debug, Default)]
pub struct Intents {
    by_tgid: HashMap<u32, Declared>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Intents {
    /// Records `declaration` for process `tgid` (started at `start_time`), replacing any
    /// earlier one of the same process. Refuses what belay-server would refuse (empty,
    /// too long, control characters) with a message saying what is wrong, and changes
    /// nothing then. Returns when it expires.
    pub fn declare(
        &mut self,
        tgid: u32,
        start_time: u64,
        declaration: IntentDeclaration,
        now: Instant,
        wall: SystemTime,
    ) -> Result<SystemTime, String> {
        let ttl = declaration.ttl_seconds.unwrap_or(DEFAULT_INTENT_TTL_SECS);
        if ttl == 0 || ttl > MAX_INTENT_TTL_SECS {
            return Err(format!(
                "ttl_seconds must be in 1..={MAX_INTENT_TTL_SECS}, got {ttl}"
            ));
        }
        let IntentDeclaration {
            text,
            model,
            session_id,
            tool_call_id,
            user_request_id,
            ttl_seconds: _,
        } = declaration;
        // The server's limits, checked here so that the declarer hears about them.
        let checked = Intent::new(
            text,
            IntentDetails {
                model,
                session_id,
                tool_call_id,
                user_request_id,
            },
            tgid,
            wall,
        )
        .map_err(|e| format!("intent refused: {e}"))?;
        if !self.by_tgid.contains_key(&tgid) && self.by_tgid.len() >= MAX_DECLARED {
            self.by_tgid.retain(|_, d| d.expires > now);
            if self.by_tgid.len() >= MAX_DECLARED {
                return Err(format!(
                    "too many declared intents ({MAX_DECLARED} live); try again later"
                ));
            }
        }
        let view = IntentView {
            text: checked.text().to_owned(),
            model: checked.model().map(str::to_owned),
            session_id: checked.session_id().map(str::to_owned),
            tool_call_id: checked.tool_call_id().map(str::to_owned),
            user_request_id: checked.user_request_id().map(str::to_owned),
            declared_by_pid: tgid,
            declared_unix_ms: unix_ms(wall),
        };
        let ttl = Duration::from_secs(ttl);
        self.by_tgid.insert(
            tgid,
            Declared {
                start_time,
                view,
                expires: now + ttl,
            },
        );
        Ok(wall + ttl)
    }

    /// The intent that applies to a request of the process whose lineage (itself, then
    /// its ancestors, nearest first) is `lineage`: the nearest declarer's, if it has not
    /// expired and is still the process that declared it (`start_time_of` reads a pid's
    /// start time now).
    pub fn for_lineage(
        &mut self,
        lineage: &[u32],
        start_time_of: impl Fn(u32) -> Option<u64>,
        now: Instant,
    ) -> Option<IntentView> {
        for pid in lineage {
            let Some(declared) = self.by_tgid.get(pid) else {
                continue;
            };
            if declared.expires <= now || start_time_of(*pid) != Some(declared.start_time) {
                // Expired, or the declarer is gone and the pid is someone else's.
                self.by_tgid.remove(pid);
                continue;
            }
            return Some(declared.view.clone());
        }
        None
    }

    pub fn len(&self) -> usize {
        self.by_tgid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tgid.is_empty()
    }
}

/// The environment variable a process (or `belay intent`) sets to declare its intent:
/// plain text, or a JSON object with the fields of [`IntentDeclaration`] (`ttl_seconds`
/// then counts from `declared_unix_ms`). Children inherit it with the environment,
/// which is what makes it theirs too; nobody else's environment can be set this way.
pub const INTENT_ENV: &str = "BELAY_INTENT";

/// Environment variable JSON: a declaration plus when it was made.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvIntent {
    text: String,
    model: Option<String>,
    session_id: Option<String>,
    tool_call_id: Option<String>,
    user_request_id: Option<String>,
    ttl_seconds: Option<u64>,
    declared_unix_ms: Option<u64>,
}

/// The intent `BELAY_INTENT` declares among `entries` (`NAME=VALUE`, raw) of process
/// `tgid`; `None` when it is absent, expired or unusable (an unusable one is logged, never
/// fatal: it is only context). `now` is wall-clock time.
pub fn from_env<'a>(
    entries: impl IntoIterator<Item = &'a str>,
    tgid: u32,
    now: SystemTime,
) -> Option<IntentView> {
    let prefix = format!("{INTENT_ENV}=");
    let value = entries
        .into_iter()
        .find_map(|entry| entry.strip_prefix(prefix.as_str()))?;
    let (declaration, declared) = if value.trim_start().starts_with('{') {
        match serde_json::from_str::<EnvIntent>(value) {
            Ok(parsed) => (
                IntentDeclaration {
                    text: parsed.text,
                    model: parsed.model,
                    session_id: parsed.session_id,
                    tool_call_id: parsed.tool_call_id,
                    user_request_id: parsed.user_request_id,
                    ttl_seconds: parsed.ttl_seconds,
                },
                parsed
                    .declared_unix_ms
                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            ),
            Err(e) => {
                tracing::warn!(tgid, error = %e, "{INTENT_ENV} is not a usable intent; ignored");
                return None;
            }
        }
    } else {
        (
            IntentDeclaration {
                text: value.to_owned(),
                ..Default::default()
            },
            None,
        )
    };
    if let (Some(ttl), Some(declared)) = (declaration.ttl_seconds, declared)
        && declared + Duration::from_secs(ttl) <= now
    {
        return None;
    }
    let mut scratch = Intents::default();
    let when = declared.unwrap_or(now);
    match scratch.declare(tgid, 0, declaration, Instant::now(), when) {
        Ok(_) => scratch.by_tgid.remove(&tgid).map(|d| d.view),
        Err(why) => {
            tracing::warn!(tgid, %why, "{INTENT_ENV} is not a usable intent; ignored");
            None
        }
    }
}

/// Reads variable `name` of the environment process `tgid` started with
/// (`/proc/PID/environ`, at most 256 KiB of it), as `NAME=VALUE`.
pub fn environ_entry(tgid: u32, name: &str) -> Option<String> {
    use std::io::Read as _;
    let mut raw = Vec::new();
    std::fs::File::open(format!("/proc/{tgid}/environ"))
        .ok()?
        .take(256 * 1024)
        .read_to_end(&mut raw)
        .ok()?;
    let prefix = format!("{name}=");
    raw.split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .find(|entry| entry.starts_with(&prefix))
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration(text: &str) -> IntentDeclaration {
        IntentDeclaration {
            text: text.into(),
            model: Some("gpt-x".into()),
            ..Default::default()
        }
    }

    const START: u64 = 1000;

    #[test]
    fn an_intent_applies_to_the_declarer_and_its_descendants_only() {
        let mut intents = Intents::default();
        let now = Instant::now();
        intents
            .declare(100, START, declaration("migrate"), now, SystemTime::now())
            .unwrap();
        let alive = |_: u32| Some(START);
        // The declarer itself, and a child of it (lineage child, declarer, init).
        assert_eq!(
            intents.for_lineage(&[100, 1], alive, now).unwrap().text,
            "migrate"
        );
        let child = intents.for_lineage(&[200, 100, 1], alive, now).unwrap();
        assert_eq!(child.declared_by_pid, 100);
        // Its parent and a sibling are not covered.
        assert!(intents.for_lineage(&[50, 1], alive, now).is_none());
        assert!(intents.for_lineage(&[300, 50, 1], alive, now).is_none());
    }

    #[test]
    fn the_nearest_declarer_wins() {
        let mut intents = Intents::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        intents
            .declare(100, START, declaration("outer"), now, wall)
            .unwrap();
        intents
            .declare(200, START, declaration("inner"), now, wall)
            .unwrap();
        let alive = |_: u32| Some(START);
        assert_eq!(
            intents
                .for_lineage(&[300, 200, 100], alive, now)
                .unwrap()
                .text,
            "inner"
        );
    }

    #[test]
    fn an_intent_expires_and_a_reused_pid_does_not_inherit_it() {
        let mut intents = Intents::default();
        let now = Instant::now();
        let mut short = declaration("soon gone");
        short.ttl_seconds = Some(5);
        intents
            .declare(100, START, short, now, SystemTime::now())
            .unwrap();
        let alive = |_: u32| Some(START);
        assert!(
            intents
                .for_lineage(&[100], alive, now + Duration::from_secs(4))
                .is_some()
        );
        assert!(
            intents
                .for_lineage(&[100], alive, now + Duration::from_secs(5))
                .is_none()
        );
        assert!(intents.is_empty(), "an expired intent is dropped");

        intents
            .declare(100, START, declaration("mine"), now, SystemTime::now())
            .unwrap();
        let reused = |_: u32| Some(START + 1);
        assert!(intents.for_lineage(&[100], reused, now).is_none());
        assert!(intents.is_empty(), "a reused pid's declaration is dropped");
    }

    #[test]
    fn bad_declarations_are_refused_and_change_nothing() {
        let mut intents = Intents::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        intents
            .declare(100, START, declaration("kept"), now, wall)
            .unwrap();
        let long = "x".repeat(belay_proto::domain::limits::MAX_INTENT_LEN + 1);
        for (bad, says) in [
            (declaration(""), "text"),
            (declaration(&long), "text"),
            (declaration("clear\u{1b}[2J"), "text"),
            (
                IntentDeclaration {
                    ttl_seconds: Some(0),
                    ..declaration("ok")
                },
                "ttl_seconds",
            ),
            (
                IntentDeclaration {
                    ttl_seconds: Some(MAX_INTENT_TTL_SECS + 1),
                    ..declaration("ok")
                },
                "ttl_seconds",
            ),
            (
                IntentDeclaration {
                    model: Some("m\n".into()),
                    ..declaration("ok")
                },
                "model",
            ),
        ] {
            let err = intents.declare(100, START, bad, now, wall).unwrap_err();
            assert!(err.contains(says), "{err:?} should name {says}");
        }
        let alive = |_: u32| Some(START);
        assert_eq!(
            intents.for_lineage(&[100], alive, now).unwrap().text,
            "kept"
        );
    }

    #[test]
    fn the_environment_declares_in_text_or_json_and_expires() {
        let now = SystemTime::now();
        let plain = from_env(["PATH=/bin", "BELAY_INTENT=tidy the logs"], 7, now).unwrap();
        assert_eq!(plain.text, "tidy the logs");
        assert_eq!(plain.declared_by_pid, 7);

        let declared = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let json = format!(
            r#"BELAY_INTENT={{"text":"migrate","model":"gpt-x","ttl_seconds":60,"declared_unix_ms":{declared}}}"#
        );
        let parsed = from_env([json.as_str()], 7, now).unwrap();
        assert_eq!(
            (parsed.text.as_str(), parsed.model.as_deref()),
            ("migrate", Some("gpt-x"))
        );
        assert!(
            from_env([json.as_str()], 7, now + Duration::from_secs(61)).is_none(),
            "expired"
        );
        for bad in [
            "BELAY_INTENT=",
            "BELAY_INTENT={\"text\":\"x\",\"unknown\":1}",
            "BELAY_INTENT={not json",
            "BELAY_INTENT=beep\u{7}",
        ] {
            assert!(from_env([bad], 7, now).is_none(), "{bad:?}");
        }
        assert!(from_env(["NOT_BELAY_INTENT=x"], 7, now).is_none());
    }

    #[test]
    fn the_number_of_declarers_is_bounded() {
        let mut intents = Intents::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        for tgid in 1..=u32::try_from(MAX_DECLARED).unwrap() {
            intents
                .declare(tgid, START, declaration("x"), now, wall)
                .unwrap();
        }
        let err = intents
            .declare(999_999, START, declaration("x"), now, wall)
            .unwrap_err();
        assert!(err.contains("too many"), "{err}");
        // A process already declared may still replace its own.
        intents
            .declare(1, START, declaration("y"), now, wall)
            .unwrap();
        // Once they expire, there is room again.
        let later = now + Duration::from_secs(DEFAULT_INTENT_TTL_SECS);
        intents
            .declare(999_999, START, declaration("x"), later, wall)
            .unwrap();
    }
}
