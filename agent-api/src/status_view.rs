//! What `belay status` shows: the daemon's counts, the kernel's counters, the policy in
//! force and the link to belay-server.
use serde::{Deserialize, Serialize};

/// The answer to [`crate::ApiRequest::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub pending: usize,
    pub decided: u64,
    /// Processes watched now.
    #[serde(default)]
    pub watched: usize,
    pub kernel: Counters,
    #[serde(default)]
    pub policy: PolicyStatus,
    /// The link to belay-server, when requests go there.
    #[serde(default)]
    pub server: Option<LinkStatus>,
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub dropped_events: u64,
    pub signal_failed: u64,
    pub paused: u64,
    pub verdicts_applied: u64,
    /// Actions denied in the kernel because the task could not be paused (io_uring,
    /// ptraced, not a restartable syscall).
    pub unpausable_denied: u64,
    /// Actions decided by the fail mode while the daemon's heartbeat was stale.
    pub fail_mode: u64,
    /// Forks of watched processes refused because no more processes could be watched.
    pub fork_refused: u64,
    /// Actions decided by policy rules in the kernel, without a pause.
    #[serde(default)]
    pub policy_decided: u64,
    /// Processes that should have become watched but did not fit the map.
    #[serde(default)]
    pub watch_failed: u64,
    /// DNS answers to watched processes that could not be passed on.
    #[serde(default)]
    pub dns_dropped: u64,
    /// Execs killed because the new image's argv or environment was not what was
    /// reviewed.
    #[serde(default)]
    pub exec_mismatch_killed: u64,
    /// Sends and connects on IP sockets with an address family belay cannot classify:
    /// denied.
    #[serde(default)]
    pub unclassified_denied: u64,
    /// ptrace-class access from a watched process to one outside its subject: denied.
    #[serde(default)]
    pub ptrace_denied: u64,
    /// Processes that exec'd into a subject but did not fit the watch list: killed.
    #[serde(default)]
    pub watch_killed: u64,
    /// Unix connects and sends allowed by a verdict that reached another socket than
    /// the one reviewed: denied.
    #[serde(default)]
    pub unix_peer_denied: u64,
    /// Events the daemon could not decode (their tasks were denied).
    pub undecodable_events: u64,
}

/// What `belay status` shows about the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The file, or None for the built-in standalone policy.
    pub source: Option<String>,
    pub subjects: Vec<String>,
    pub loaded_unix_ms: u64,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// Why the last reload failed, while the file still does not load.
    pub last_error: Option<String>,
    /// What the kernel could not be told (missing files, rules over the limit).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The fleet policy version from belay-server in force (`--policy-from-server`).
    #[serde(default)]
    pub server_version: Option<u64>,
    #[serde(default)]
    pub server_sha256: Option<String>,
}

/// How the link stands, for `belay status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub url: String,
    /// A session with belay-server is open now.
    pub connected: bool,
    /// Submitted and not yet decided (resubmitted on every reconnect).
    pub awaiting: usize,
    pub submitted: u64,
    pub decided: u64,
    /// Refused by belay-server, or not sendable to it (over its limits): each ended
    /// without a decision.
    #[serde(default)]
    pub refused: u64,
    /// Sessions opened, the first included.
    pub connects: u64,
    /// Why the last attempt or session failed.
    pub last_error: Option<String>,
}
