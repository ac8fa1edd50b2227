//! A paused request as the local socket shows it: what the process was about to do, and
//! who and where the process is.
use serde::{Deserialize, Serialize};

use crate::Verdict;

/// What the paused process was about to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionView {
    Exec {
        /// The path as passed to execve (the kernel's copy).
        path: String,
        /// The file that will run, when a path to it could be confirmed by inode and
        /// device (resolves `/proc/self/exe`, relative paths, container roots).
        file: Option<String>,
        /// Read from the stopped process's memory: for the reviewer's eyes, not part of
        /// the verdict key (the process cannot change it while stopped, but another
        /// process sharing its memory could). Masked (`belay_mask`): secrets show as
        /// `PREFIX…[KIND:HASH]`.
        argv: Option<Vec<String>>,
        /// The new program's environment, `NAME=VALUE` each, read like argv and masked
        /// like it; None when unknown.
        #[serde(default)]
        env: Option<Vec<String>>,
    },
    Connect {
        address: String,
        port: u16,
        /// `tcp`, `udp`, or `socket-type-N`.
        protocol: String,
        /// Names the process itself looked this address up as (from the DNS answers it
        /// received), newest lookups included; masked like argv.
        #[serde(default)]
        hostnames: Vec<String>,
    },
    /// A datagram (or TCP Fast Open data) sent to a named destination.
    Send {
        address: String,
        port: u16,
        protocol: String,
        #[serde(default)]
        hostnames: Vec<String>,
    },
    /// A connection to a Unix socket: its path, or `@name` for an abstract socket.
    ConnectUnix {
        path: String,
        /// `unix-stream`, `unix-dgram`, or `unix-type-N`.
        protocol: String,
    },
    /// A datagram sent to a named Unix socket.
    SendUnix { path: String, protocol: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    pub id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub uid: u32,
    pub comm: String,
    pub cwd: Option<String>,
    pub action: ActionView,
    pub created_unix_ms: u64,
    pub deadline_unix_ms: u64,
    pub default_verdict: Verdict,
    /// The policy subject the process is watched as, and who owns that agent.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    /// The rule that asked for a person; None when it is the subject's default.
    #[serde(default)]
    pub rule: Option<String>,
    /// Host, ancestry, user, cgroup and container of the process.
    #[serde(default)]
    pub context: ProcessContext,
    /// The request's id on belay-server, when it was sent there to be decided.
    #[serde(default)]
    pub server_id: Option<String>,
    /// What the process (or an ancestor) declared about why it acts: unverified.
    #[serde(default)]
    pub intent: Option<crate::IntentView>,
}

/// How many ancestors the daemon walks up at most.
pub const MAX_ANCESTRY: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    /// The task's `comm`, escaped (`belay_proto::display::escape`).
    pub comm: String,
    /// What `/proc/PID/exe` links to; `None` when not readable (another user's process
    /// without privilege, a kernel thread).
    pub exe: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessContext {
    /// This machine's hostname.
    pub host: String,
    pub ppid: Option<u32>,
    /// Parent first, at most [`MAX_ANCESTRY`] levels, ending at pid 1 (included) or where
    /// the chain can no longer be followed.
    pub ancestry: Vec<Ancestor>,
    /// The name of the uid, `None` when the uid has no passwd entry.
    pub user: Option<String>,
    /// The cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
    pub cgroup: Option<String>,
    /// Full 64-hex container id parsed from the cgroup path.
    pub container_id: Option<String>,
    /// Kubernetes pod UID parsed from the cgroup path.
    pub pod_uid: Option<String>,
    pub cwd: Option<String>,
}
