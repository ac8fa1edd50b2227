//! The verdict on a paused action: what a policy's `on_timeout` names, what a reviewer
//! decides on the local socket, and what the kernel applies.

use serde::{Deserialize, Serialize};

/// What happens to a paused action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The syscall runs.
    Allow,
    /// The syscall fails with EPERM.
    Deny,
    /// The process is killed (SIGKILL) without resuming.
    Kill,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Kill => "kill",
        })
    }
}
