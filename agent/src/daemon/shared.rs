//! The state every daemon task shares, and how a request ends: its verdict written to
//! the kernel, belay-server told, the metrics counted.
use std::sync::{Arc, Mutex, MutexGuard};

use agent_common::VerdictKey;
use tracing::{error, info, warn};

use super::Config;
use crate::{
    dns::NameCache,
    kernel::{Enforcer, EnforcerError, Expectation, PauseEvent, Verdict},
    metrics::{Ended, Metrics},
    policy,
    reload::LivePolicy,
    requests::{Outcome, Pending, RequestBook},
    sync::lock,
    upstream::{Up, Upstream},
};

#[derive(Clone)]
pub(super) struct Shared {
    pub(super) enforcer: Enforcer,
    pub(super) book: Arc<Mutex<RequestBook>>,
    pub(super) config: Arc<Config>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) policy: Arc<LivePolicy>,
    pub(super) names: Arc<Mutex<NameCache>>,
    /// What watched processes declared about their next actions (`belay intent`).
    pub(super) intents: Arc<Mutex<crate::intent::Intents>>,
    /// The kernel tables last applied, to skip identical re-applies.
    pub(super) applied: Arc<Mutex<Option<policy::KernelTables>>>,
    pub(super) upstream: Option<Upstream>,
    /// Makes request ids on belay-server unique: `host.start.counter`.
    pub(super) server_ids: Arc<ServerIds>,
    /// Held while a fleet policy is installed and applied: messages from the server are
    /// handled on tasks of their own, and two versions applied at once could leave the
    /// older one in the kernel.
    pub(super) server_policy: Arc<tokio::sync::Mutex<()>>,
}

/// Request ids for belay-server: `HOST:START:N`, unique across hosts (the host name, as
/// the hello names it: belay-server takes from a host only ids in its namespace) and
/// restarts (the daemon's start time), in the server's id alphabet.
pub(super) struct ServerIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl ServerIds {
    pub(super) fn new() -> Self {
        let hostname = crate::context::hostname();
        let host: String = hostname
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if host != hostname {
            // The server takes only ids that start with the hello's host name.
            error!(
                hostname,
                "this host name cannot start a belay-server request id ([A-Za-z0-9._-] only): belay-server will refuse every request, and each ends with its default verdict (never allow)"
            );
        }
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self {
            prefix: format!("{host}:{start}"),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub(super) fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.prefix)
    }
}

impl Shared {
    pub(super) fn book(&self) -> MutexGuard<'_, RequestBook> {
        lock(&self.book)
    }

    pub(super) fn names(&self) -> MutexGuard<'_, NameCache> {
        lock(&self.names)
    }

    pub(super) fn intents(&self) -> MutexGuard<'_, crate::intent::Intents> {
        lock(&self.intents)
    }

    pub(super) async fn end(&self, p: Pending, outcome: Outcome) {
        crate::export::ended(&p.view, &outcome);
        let id = p.view.id;
        let (verdict, ended) = match outcome {
            Outcome::Decided(v) => (v, Ended::from(v)),
            Outcome::Expired(v) => (v, Ended::Expired),
            Outcome::Refused(v) => (v, Ended::Refused),
            Outcome::Cancelled => {
                self.cancelled(&p);
                return;
            }
        };
        self.withdraw(&p, || format!("ended on the host ({verdict})"));
        match self.apply_verdict(p.key, verdict, p.expect).await {
            Ok(()) => {
                self.metrics.ended(ended, p.opened.elapsed());
                info!(request = id, tgid = p.view.tgid, %verdict, ?outcome, "request ended");
            }
            // Gone before the verdict could reach it: counted as cancelled, not as the verdict.
            Err(EnforcerError::Gone(_)) => self.cancelled(&p),
            Err(e) => {
                self.metrics.ended(ended, p.opened.elapsed());
                error!(request = id, error = %e, "applying the verdict failed");
            }
        }
    }

    /// Writes a verdict. An exec is allowed only together with what its new image must
    /// carry (what was read and shown): without that (argv or the environment could not
    /// be read whole), nobody saw all of it, and the allow becomes a deny. A Unix connect
    /// or send to a socket the daemon vouched for is allowed to reach that socket only.
    pub(super) async fn apply_verdict(
        &self,
        key: VerdictKey,
        verdict: Verdict,
        expect: Option<Expectation>,
    ) -> Result<(), EnforcerError> {
        if verdict != Verdict::Allow {
            return self.enforcer.resolve(key, verdict).await;
        }
        let exec = key.kind == agent_common::kind::EXEC;
        match expect {
            Some(e @ Expectation::Exec(_)) if exec => {
                self.enforcer.resolve_expecting(key, verdict, e).await
            }
            Some(e @ Expectation::UnixPeer(_)) if !exec => {
                self.enforcer.resolve_expecting(key, verdict, e).await
            }
            _ if !exec => self.enforcer.resolve(key, verdict).await,
            _ => {
                warn!(
                    tgid = key.tgid,
                    "exec denied instead of allowed: its argv or environment was not read whole"
                );
                self.enforcer.resolve(key, Verdict::Deny).await
            }
        }
    }

    /// Applies a verdict the policy settled, without opening a request.
    pub(super) async fn resolve_now(
        &self,
        ev: &PauseEvent,
        verdict: Verdict,
        expect: Option<Expectation>,
        outcome: Outcome,
    ) {
        if let Err(e) = self.apply_verdict(ev.key, verdict, expect).await
            && !matches!(e, EnforcerError::Gone(_))
        {
            error!(tgid = ev.tgid, error = %e, ?outcome, "applying the policy's verdict failed");
        }
    }

    /// Tells belay-server a request it holds ended here (deadline, shutdown, process
    /// gone), so reviewers no longer see it.
    pub(super) fn withdraw(&self, p: &Pending, reason: impl FnOnce() -> String) {
        if let (Some(up), Some(id)) = (&self.upstream, &p.view.server_id) {
            up.send(Up::Withdraw {
                id: id.clone(),
                reason: reason(),
            });
        }
    }

    pub(super) fn cancelled(&self, p: &Pending) {
        self.withdraw(p, || "the process is gone".into());
        self.metrics.ended(Ended::Cancelled, p.opened.elapsed());
        info!(
            request = p.view.id,
            tgid = p.view.tgid,
            "request cancelled: process gone"
        );
    }
}

/// Ends the requests whose deadline passed (with their default verdict) and those
/// whose process is gone.
pub(super) async fn sweep(shared: &Shared) {
    let (expired, gone) = {
        let mut book = shared.book();
        let expired = book.take_expired(tokio::time::Instant::now());
        let gone = book.take_gone(|tgid| std::path::Path::new(&format!("/proc/{tgid}")).exists());
        (expired, gone)
    };
    for p in expired {
        let v = p.view.default_verdict;
        shared.end(p, Outcome::Expired(v)).await;
    }
    for p in gone {
        shared.end(p, Outcome::Cancelled).await;
    }
}
