//! Changing the policy in force: compiled into the kernel with the processes it names
//! watched, at start, on SIGHUP or an edit of the file, and when belay-server sends a
//! fleet policy.
use std::sync::Arc;

use anyhow::Context as _;
use belay_proto::domain::{PolicyOutcome, PolicyReport};
use tracing::{error, info, warn};

use super::Shared;
use crate::{
    policy::{self, HostResolver, Policy},
    reload::{Installed, ServerPolicyError},
    sync::lock,
    watch,
};

impl Shared {
    /// Compiles `policy` into the kernel and watches the running processes it names.
    /// `scan_all` walks every process (start and reloads); otherwise only the subjects'
    /// cgroups are read.
    pub(super) async fn apply(&self, policy: Arc<Policy>, scan_all: bool) -> anyhow::Result<()> {
        let p = policy.clone();
        let tables = tokio::task::spawn_blocking(move || policy::compile(&p, &HostResolver))
            .await
            .context("compiling the policy")?;
        let same = lock(&self.applied).as_ref() == Some(&tables);
        if !same {
            for w in &tables.warnings {
                warn!(warning = %w, "policy");
            }
            self.policy.set_warnings(tables.warnings.clone());
            self.enforcer
                .apply_policy(tables.clone())
                .await
                .context("writing the policy into the kernel maps")?;
            *lock(&self.applied) = Some(tables);
        }
        let fail_mode = policy.fail_mode.unwrap_or(self.config.fail_mode);
        self.enforcer
            .set_fail_mode(fail_mode)
            .await
            .context("setting the fail mode")?;
        let except = vec![std::process::id()];
        let found = tokio::task::spawn_blocking(move || {
            if scan_all {
                watch::scan_all(std::path::Path::new("/proc"), &policy, &except)
            } else {
                watch::scan_cgroups(std::path::Path::new(watch::CGROUP_ROOT), &policy, &except)
            }
        })
        .await
        .context("scanning for processes to watch")?;
        for (tgid, subject) in found {
            if self.enforcer.watched_subject(tgid).await?.is_none() {
                match self.enforcer.watch_as(tgid, subject).await {
                    Ok(()) => info!(tgid, subject, "watching a running process the policy names"),
                    Err(e) => warn!(tgid, error = %e, "could not watch a process the policy names"),
                }
            }
        }
        Ok(())
    }

    /// A fleet policy from belay-server: installed and applied if this agent takes the
    /// server's policy; the answer for the server either way.
    pub(super) async fn install_server_policy(&self, version: u64, text: &str) -> PolicyReport {
        let report = |outcome, message: &str| PolicyReport::clipped(version, outcome, message);
        let _one_at_a_time = self.server_policy.lock().await;
        match self.policy.install_from_server(version, text) {
            Ok(Installed::Unchanged) => report(PolicyOutcome::Applied, ""),
            Ok(Installed::New(policy)) => {
                self.metrics.policy_reloaded(true);
                match self.apply(policy, true).await {
                    Ok(()) => {
                        info!(
                            version,
                            subjects = self.policy.status().subjects.len(),
                            "fleet policy from belay-server in force"
                        );
                        report(
                            PolicyOutcome::Applied,
                            &self.policy.status().warnings.join("\n"),
                        )
                    }
                    Err(e) => {
                        let message = format!("applying the policy to the kernel failed: {e:#}");
                        error!(version, error = %message, "fleet policy not applied");
                        report(PolicyOutcome::Failed, &message)
                    }
                }
            }
            Err(ServerPolicyError::NotAccepted) => {
                info!(
                    version,
                    "belay-server sent a fleet policy; this agent keeps its local policy"
                );
                report(
                    PolicyOutcome::NotAccepted,
                    "not accepted: this agent uses a local policy (run without --policy-from-server)",
                )
            }
            Err(e) => {
                self.metrics.policy_reloaded(false);
                error!(version, error = %e, "fleet policy refused; the previous policy stays in force");
                report(PolicyOutcome::Failed, &e.to_string())
            }
        }
    }

    /// SIGHUP or an edit of the file: load it again; a bad file changes nothing.
    pub(super) async fn reload(&self) {
        match self.policy.reload() {
            Ok(Some(policy)) => {
                self.metrics.policy_reloaded(true);
                match self.apply(policy, true).await {
                    Ok(()) => info!(
                        subjects = self.policy.status().subjects.len(),
                        "policy reloaded"
                    ),
                    Err(e) => error!(
                        error = format!("{e:#}"),
                        "applying the reloaded policy failed"
                    ),
                }
            }
            Ok(None) => info!("no policy file to reload (built-in policy, or belay-server's)"),
            Err(e) => {
                self.metrics.policy_reloaded(false);
                error!(error = %e, "policy not reloaded; the previous policy stays in force");
            }
        }
    }
}
