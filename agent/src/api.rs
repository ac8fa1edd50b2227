//! The local API on the daemon's Unix socket: one JSON request line, one JSON response
//! line. `belay` (standalone mode) and `belay run` use it.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    context::ProcessContext,
    kernel::{Counters, Verdict},
    reload::PolicyStatus,
};

pub const DEFAULT_SOCKET: &str = "/run/belay/agent.sock";
/// Longest request line the daemon reads; anything longer is refused.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Watch the calling process (its tgid as the kernel reports it on the socket) as a
    /// policy subject: the one named, or the policy's only subject that accepts
    /// enrollment.
    Enroll {
        #[serde(default)]
        subject: Option<String>,
    },
    Pending,
    Show {
        id: u64,
    },
    Decide {
        id: u64,
        verdict: Verdict,
        #[serde(default)]
        reason: Option<String>,
    },
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ApiResponse {
    Enrolled {
        tgid: u32,
        #[serde(default)]
        subject: String,
    },
    Requests {
        requests: Vec<RequestView>,
    },
    Request {
        request: RequestView,
    },
    Decided {
        id: u64,
        verdict: Verdict,
    },
    Status {
        status: StatusView,
    },
    Error {
        message: String,
    },
}

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
}

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
    pub server: Option<crate::upstream::LinkStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach belay-agent at {path}: {source} (is belay-agent running? see --socket)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to belay-agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("belay-agent sent an unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request and reads the answer (blocking; for the CLI).
pub fn call(socket: &Path, req: &ApiRequest) -> Result<ApiResponse, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let req = ApiRequest::Decide {
            id: 3,
            verdict: Verdict::Deny,
            reason: Some("no".into()),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"op":"decide","id":3,"verdict":"deny","reason":"no"}"#
        );
        assert_eq!(serde_json::from_str::<ApiRequest>(&json).unwrap(), req);
    }

    #[test]
    fn unknown_ops_fields_and_verdicts_are_refused() {
        for bad in [
            r#"{"op":"format_disk"}"#,
            r#"{"op":"show","id":1,"extra":true}"#,
            r#"{"op":"decide","id":1,"verdict":"maybe"}"#,
            r#"{"op":"show","id":-1}"#,
        ] {
            assert!(serde_json::from_str::<ApiRequest>(bad).is_err(), "{bad}");
        }
    }
}
