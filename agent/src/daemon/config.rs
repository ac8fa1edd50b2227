//! What the daemon is told at start (the command line and environment, `main.rs`).
use std::{path::PathBuf, time::Duration};

use super::socket;
use crate::kernel::{FailMode, Verdict};

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// Who may connect to `socket` (mode and group).
    pub socket_access: socket::SocketAccess,
    /// The policy file; None runs the built-in standalone policy (one subject,
    /// "enrolled", where every action asks a person).
    pub policy: Option<PathBuf>,
    /// How long a request waits for a person before its default verdict applies (for
    /// the built-in policy and processes whose subject is unknown).
    pub decide_timeout: Duration,
    pub default_verdict: Verdict,
    /// Applied to every pending request when the daemon shuts down.
    pub shutdown_verdict: Verdict,
    /// Processes to watch from the start (besides those that enroll).
    pub watch_pids: Vec<u32>,
    /// Where maps and links are pinned (a bpf filesystem), so enforcement survives a
    /// daemon crash and the next daemon takes over.
    pub pin_dir: PathBuf,
    /// How long the hooks wait for a heartbeat before applying `fail_mode`.
    pub stale_after: Duration,
    /// Used unless the policy sets `fail_mode`.
    pub fail_mode: FailMode,
    /// Members of this group may decide besides root.
    pub decider_gid: Option<u32>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// belay-server's URL: requests that need a person are decided there instead of on
    /// the local socket.
    pub server: Option<String>,
    /// The identity this host's agents belong to, as told to belay-server (it never
    /// lets that identity approve their requests).
    pub server_owner: String,
    /// Where `belay-agent enroll` put this host's certificate, key and the server's CA,
    /// used with an `https://` server.
    pub server_cert_dir: PathBuf,
    /// Enforce the fleet policy belay-server sends (saved in `server_cert_dir`) instead
    /// of `policy`; without it, the agent tells the server it keeps its own.
    pub policy_from_server: bool,
    /// Resolvers trusted for hostnames besides those in /etc/resolv.conf.
    pub dns_resolvers: Vec<std::net::IpAddr>,
}
