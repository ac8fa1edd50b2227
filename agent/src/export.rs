//! Export of requests to SIEMs (`--export-config`): a request opened (its view, already
//! masked) and how it ended go to belay-export's spool, from where the configured sinks
//! deliver them.
//!
//! The pause path never waits on export: [`opened`] and [`ended`] only hand the event to
//! the exporter's bounded queue (a full queue drops and counts, see belay-export), and do
//! nothing when export is off. The handle is process-wide so that the hooks in the
//! daemon stay one line each.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use belay_export::{Event, ExportConfig, ExportHandle, Exporter};

use crate::api::RequestView;
use crate::requests::Outcome;

static HANDLE: OnceLock<ExportHandle> = OnceLock::new();
static HOST: OnceLock<String> = OnceLock::new();

/// Loads `path`, starts the exporter and routes [`opened`] / [`ended`] to it. Keep the
/// returned exporter and call `shutdown` when the daemon stops.
pub fn start(path: &Path) -> anyhow::Result<Exporter> {
    let config = ExportConfig::load(path)?;
    let exporter = Exporter::start(config).context("cannot start the export spool")?;
    if HANDLE.set(exporter.handle()).is_err() {
        anyhow::bail!("export already started");
    }
    tracing::info!(config = %path.display(), "exporting requests");
    Ok(exporter)
}

fn host() -> &'static str {
    HOST.get_or_init(belay_export::event::local_hostname)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The id of `kind` for this request: the same however often it is computed, distinct
/// across hosts and daemon restarts (the request's creation time is part of it).
fn id(view: &RequestView, kind: &str) -> String {
    belay_export::event::content_id(&[
        b"belay-agent",
        host().as_bytes(),
        &view.id.to_be_bytes(),
        &view.created_unix_ms.to_be_bytes(),
        kind.as_bytes(),
    ])
}

fn view_body(view: &RequestView) -> serde_json::Value {
    let mut body = serde_json::to_value(view)
        .unwrap_or_else(|err| serde_json::json!({ "error": err.to_string() }));
    // The agent's own words: every SIEM rule reading them must be told so, as
    // belay-server's records do.
    if let Some(intent) = body
        .get_mut("intent")
        .and_then(serde_json::Value::as_object_mut)
    {
        intent.insert("verified".into(), false.into());
    }
    body
}

/// A request was opened: a process is paused until someone (or the deadline) decides.
pub fn opened(view: &RequestView) {
    if let Some(handle) = HANDLE.get() {
        handle.offer(opened_event(view));
    }
}

/// A request ended: decided (on this host or by belay-server), expired, or cancelled.
pub fn ended(view: &RequestView, outcome: &Outcome) {
    if let Some(handle) = HANDLE.get() {
        handle.offer(ended_event(view, outcome, now_ns()));
    }
}

/// An action settled by policy without asking anyone, in the kernel or in the daemon:
/// `policy_action` is the rule's action (allow, deny, kill, audit; a task the kernel
/// could not pause counts as deny), `decided_in` where. `action` holds masked values only.
pub struct PolicyDecided<'a> {
    pub tgid: u32,
    pub uid: u32,
    pub comm: &'a str,
    pub subject: &'a str,
    pub rule: &'a str,
    pub policy_action: crate::policy::Action,
    pub decided_in: DecidedIn,
    pub action: crate::api::ActionView,
}

/// Where an action was settled without a person: the `decided_in` field of a `policy`
/// event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedIn {
    /// A rule the daemon evaluated on a pause.
    Daemon,
    /// A rule the kernel applied itself (exact executables, CIDRs and ports).
    Kernel,
    /// Denied by the kernel without a rule: the task could not be paused safely
    /// (ptraced, io_uring worker, a syscall that cannot restart).
    KernelUnpausable,
}

impl DecidedIn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daemon => "daemon",
            Self::Kernel => "kernel",
            Self::KernelUnpausable => "kernel-unpausable",
        }
    }
}

/// Whether export is on: callers skip building events (and masking for them) when not.
pub fn enabled() -> bool {
    HANDLE.get().is_some()
}

pub fn policy_decided(decided: PolicyDecided<'_>) {
    if let Some(handle) = HANDLE.get() {
        handle.offer(policy_event(&decided, now_ns()));
    }
}

fn policy_event(decided: &PolicyDecided<'_>, time_ns: i64) -> Event {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Unique per daemon run; the id is kept in the spool with the event, so a
    // re-delivery carries the same one.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static STARTED: OnceLock<i64> = OnceLock::new();
    let started = *STARTED.get_or_init(now_ns);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Event {
        id: belay_export::event::content_id(&[
            b"belay-agent",
            host().as_bytes(),
            &started.to_be_bytes(),
            &n.to_be_bytes(),
            b"policy",
        ]),
        time_ns,
        app: "belay-agent".into(),
        host: host().to_owned(),
        kind: "policy".into(),
        body: serde_json::json!({
            "tgid": decided.tgid,
            "uid": decided.uid,
            "comm": decided.comm,
            "subject": decided.subject,
            "rule": decided.rule,
            "policy_action": decided.policy_action.as_str(),
            "decided_in": decided.decided_in.as_str(),
            "action": decided.action,
        }),
    }
}

fn opened_event(view: &RequestView) -> Event {
    Event {
        id: id(view, "opened"),
        time_ns: (view.created_unix_ms as i64).saturating_mul(1_000_000),
        app: "belay-agent".into(),
        host: host().to_owned(),
        kind: "opened".into(),
        body: view_body(view),
    }
}

fn ended_event(view: &RequestView, outcome: &Outcome, time_ns: i64) -> Event {
    let (state, verdict) = match outcome {
        Outcome::Decided(v) => ("decided", Some(v.to_string())),
        Outcome::Expired(v) => ("expired", Some(v.to_string())),
        Outcome::Cancelled => ("cancelled", None),
        Outcome::Refused(v) => ("refused", Some(v.to_string())),
    };
    let decided_by = match (outcome, &view.server_id) {
        (Outcome::Decided(_), Some(_)) => "belay-server",
        (Outcome::Decided(_), None) => "local",
        (Outcome::Expired(_), _) => "deadline",
        (Outcome::Cancelled, _) => "process-gone",
        (Outcome::Refused(_), _) => "belay-server-refused",
    };
    let mut body = view_body(view);
    if let Some(map) = body.as_object_mut() {
        map.insert("state".into(), state.into());
        map.insert("verdict".into(), verdict.into());
        map.insert("decided_by".into(), decided_by.into());
    }
    Event {
        id: id(view, "ended"),
        time_ns,
        app: "belay-agent".into(),
        host: host().to_owned(),
        kind: "ended".into(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Verdict;

    fn view(server_id: Option<&str>) -> RequestView {
        serde_json::from_value(serde_json::json!({
            "id": 3, "tgid": 10, "pid": 10, "uid": 1000, "comm": "node",
            "action": {"kind": "connect", "address": "10.0.0.1", "port": 443, "protocol": "tcp"},
            "created_unix_ms": 1_780_000_000_000u64, "deadline_unix_ms": 1_780_000_060_000u64,
            "default_verdict": "deny", "server_id": server_id,
        }))
        .expect("a request view")
    }

    #[test]
    fn policy_events_have_distinct_ids_and_say_where_they_were_decided() {
        let decided = || PolicyDecided {
            tgid: 7,
            uid: 1000,
            comm: "curl",
            subject: "ci",
            rule: "no-metadata",
            policy_action: crate::policy::Action::Deny,
            decided_in: DecidedIn::Kernel,
            action: crate::api::ActionView::Connect {
                address: "169.254.169.254".into(),
                port: 80,
                protocol: "tcp".into(),
                hostnames: vec![],
            },
        };
        let (a, b) = (policy_event(&decided(), 1), policy_event(&decided(), 1));
        assert_ne!(a.id, b.id, "two events, two ids");
        assert_eq!(a.kind, "policy");
        assert_eq!(a.body["decided_in"], "kernel");
        assert_eq!(a.body["policy_action"], "deny");
        assert_eq!(a.body["action"]["address"], "169.254.169.254");
    }

    #[test]
    fn events_carry_stable_ids_and_who_decided() {
        let local = view(None);
        let opened = opened_event(&local);
        assert_eq!(opened.id, opened_event(&local).id, "re-computed ids match");
        assert_eq!(opened.time_ns, 1_780_000_000_000_000_000);
        assert_eq!(opened.body["action"]["port"], 443);
        let ended = ended_event(&local, &Outcome::Decided(Verdict::Deny), 5);
        assert_ne!(ended.id, opened.id);
        assert_eq!(ended.body["verdict"], "deny");
        assert_eq!(ended.body["decided_by"], "local");
        let remote = ended_event(&view(Some("h:1:1")), &Outcome::Decided(Verdict::Allow), 5);
        assert_eq!(remote.body["decided_by"], "belay-server");
        let gone = ended_event(&local, &Outcome::Cancelled, 5);
        assert_eq!(gone.body["state"], "cancelled");
        assert!(gone.body["verdict"].is_null());
        assert!(
            opened.body["intent"].is_null(),
            "no intent declared, none exported"
        );
    }

    #[test]
    fn a_declared_intent_is_exported_as_unverified() {
        let mut declared = view(None);
        declared.intent = Some(crate::api::IntentView {
            text: "tidy the logs".into(),
            declared_by_pid: 10,
            ..Default::default()
        });
        let opened = opened_event(&declared);
        assert_eq!(opened.body["intent"]["text"], "tidy the logs");
        assert_eq!(opened.body["intent"]["verified"], false);
        let ended = ended_event(&declared, &Outcome::Decided(Verdict::Allow), 5);
        assert_eq!(ended.body["intent"]["verified"], false);
    }
}
