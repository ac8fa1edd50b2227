//! The policy file: which processes are AI agents ("subjects") and what each may do.
//!
//! A policy is one YAML document (at most 1 MiB). Unknown keys anywhere are errors, and
//! every error names the file, line and column. `deploy/policy/example.yaml` is a
//! commented example.
//!
//! ```yaml
//! version: 1
//! fail_mode: deny
//! defaults: {deadline: 5m, on_timeout: deny}
//! subjects:
//!   - name: coding-agent
//!     owner: alice@example.com
//!     match: {cgroups: [/system.slice/coding-agent.service], enrolled: true}
//!     default: {exec: ask, egress: deny}
//!     exec:
//!       - {name: git, path: /usr/bin/git, action: allow}
//!       - {path: "/usr/bin/*", argv: "rm -rf *", action: deny}
//!     egress:
//!       - {name: llm-api, to: ["*.anthropic.com", 10.0.0.0/8], ports: [443], action: allow}
//!       - {name: no-docker, to: ["unix:/var/run/docker.sock"], action: deny}
//! ```
//!
//! # Keys
//!
//! Top level:
//! - `version` (optional, default 1): the format version; only `1` exists.
//! - `fail_mode` (optional): `deny` or `allow`, what the kernel hooks do while the daemon
//!   is down. Absent: the daemon's own setting.
//! - `defaults` (optional): `deadline` and `on_timeout`, applied to every subject that
//!   does not set its own. Built in: `deadline: 5m`, `on_timeout: deny`.
//! - `subjects` (required, a list, may be empty): the agents, below.
//! - `mask` (optional): masking of secrets and personal data in what reviewers, the
//!   server and exports see (argv, environment, hostnames), on top of the built-in
//!   detectors (`belay mask --help` lists them and the marker format):
//!   - `patterns` (optional, at most 64): `{name, regex}` detectors of one's own.
//!     `name` is `[a-z0-9-]{1,32}`, unique, shown in markers (`…[NAME:HASH]`); `regex`
//!     is Rust `regex` syntax and must not match the empty string. With a group named
//!     `s` (or else group 1) only that group is masked, otherwise the whole match.
//!   - `allow` (optional, at most 256): regexes; a candidate whose value, or the whole
//!     text its detector matched, one of them matches is not masked. Anchor them
//!     (`^ci@example\.com$`) to allow one value.
//!
//!   ```yaml
//!   mask:
//!     patterns:
//!       - {name: employee-id, regex: '\bEMP-(?P<s>\d{6})\b'}
//!     allow: ['^ci@example\.com$']
//!   ```
//!
//! A subject:
//! - `name` (required): unique, `[A-Za-z0-9._-]+`, at most 64 characters. Its id in the
//!   kernel's maps is `agent_common::subject_id(name)`.
//! - `owner` (required): the identity that owns the agent; it can never approve the
//!   agent's own requests.
//! - `match` (optional): which processes are this subject; any one entry is enough, and
//!   children of a matched process stay matched.
//!   - `cgroups`: cgroup v2 paths relative to the cgroup2 root, starting with `/`; the
//!     whole subtree matches.
//!   - `executables`: absolute paths (no globs) of programs whose processes match.
//!   - `uids`: user ids, as numbers or user names (resolved when the policy is loaded;
//!     an unknown name is an error).
//!   - `enrolled`: `true` for processes started by `belay run --subject NAME -- CMD`.
//!
//!   One uid, executable or cgroup may be claimed by one subject only.
//! - `default` (optional, default `ask`): the action for whatever no rule matches:
//!   an action for both kinds, or a mapping `{exec: ACTION, egress: ACTION}` (a missing
//!   kind is `ask`).
//! - `deadline` (optional): how long a request waits for a person, overriding
//!   `defaults.deadline`.
//! - `on_timeout` (optional): `allow`, `deny` or `kill` when the deadline passes,
//!   overriding `defaults.on_timeout`.
//! - `exec` (optional): an ordered list of exec rules; the first that matches decides.
//! - `egress` (optional): an ordered list of egress rules; the first that matches decides.
//!
//! An exec rule:
//! - `name` (optional): shown to reviewers and in the audit trail; default `exec[I]`
//!   (I counted from 0). Unique within the subject's `exec` list.
//! - `path` (required): a glob on the executable's path. `*` matches any run of
//!   characters except `/`, `**` any run including `/`, `?` one character except `/`,
//!   `[abc]`, `[a-z]`, `[!a]` one character (never `/`) of / not of a set, and `\`
//!   takes the next character literally. A rule matches when the path as the program
//!   asked for it, or the path with symlinks resolved, matches.
//! - `argv` (optional): a glob on the command line, the arguments (argv\[0\] included)
//!   joined by single spaces; here `*` and `?` also match `/`. When the command line
//!   cannot be read, a rule with `argv` matches only if its action is `deny`, `kill` or
//!   `ask`: an unknown command line is never granted.
//! - `action` (required): `allow`, `deny` (EPERM), `ask` (hold for a person), `kill`
//!   (SIGKILL the process) or `audit` (allow and record).
//! - `deadline`, `on_timeout` (optional): per-rule overrides, meaningful for `ask`.
//!
//! An egress rule (connections, and datagrams sent to an address or a Unix socket):
//! - `name` (optional): default `egress[I]`; unique within the subject's `egress` list.
//! - `to` (optional, default any IP destination; not empty): CIDR blocks (`10.0.0.0/8`,
//!   `2001:db8::/32`; host bits must be zero), bare addresses (a /32 or /128),
//!   hostname patterns, or Unix sockets. A hostname pattern matches the names the
//!   process looked the address up as (from the DNS answers it received),
//!   case-insensitively, trailing dot ignored; a leading `*.` matches one or more labels
//!   (`*.example.com` is not `example.com`), any other `*` a run of characters within
//!   one label. IPv4 blocks also match IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`).
//!
//!   `unix:GLOB` names Unix sockets (connects, and datagrams sent to a named socket):
//!   GLOB is a glob as for exec paths (`*` does not cross `/`) on the socket's path,
//!   starting with `/` for sockets in the filesystem (`unix:/var/run/docker.sock`,
//!   `unix:/run/user/*/bus`) or `@` for abstract sockets, whose name is shown as `@`
//!   followed by the name with each NUL byte as `@` (`unix:@/tmp/.X11-unix/*`). A rule
//!   without `to` matches any IP destination but no Unix socket; a rule whose `to`
//!   holds only `unix:` entries matches no IP destination. A Unix socket no rule names
//!   gets the subject's egress default. A rule with a `unix:` entry may not have
//!   `ports` or `protocol`.
//! - `ports` (optional, default any; not empty): ports (`443`) and inclusive ranges
//!   (`"8000-8100"`), 1 to 65535.
//! - `protocol` (optional, default any): `tcp` or `udp`.
//! - `action` (required), `deadline`, `on_timeout` (optional): as for exec rules.
//!
//! A key of a list or mapping with nothing under it (`exec:` alone) is the same as
//! leaving it out. YAML anchors and aliases may be used; tags (`!!str`) and merge keys
//! (`<<`) may not.
//!
//! Durations are `90s`, `5m`, `1h`, combinations such as `1h30m`, or an integer number
//! of seconds; more than zero and at most 24h.
//!
//! # In the kernel
//!
//! [`compile()`] turns what the kernel can decide by itself (exec rules with a literal
//! path and no `argv`, address-based egress rules, the egress default for Unix sockets
//! of a subject with no `unix:` rule) into its maps; everything else makes the kernel
//! pause the process and the daemon decide with [`Subject::decide_exec`],
//! [`Subject::decide_egress`] and [`Subject::decide_unix`]. An exec rule with a literal path is compiled as the file
//! it names (device and inode), so in the kernel it applies to that file under any name
//! (a hard link, a symlink outside the rules' reach); rules are compiled only where no
//! earlier rule could decide otherwise.
use std::{
    net::IpAddr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

pub use agent_common::rule_action;
pub use belay_mask::MaskConfig;

mod cidr;
mod compile;
mod evaluate;
mod glob;
mod parse;
mod values;
mod yaml;

#[cfg(test)]
mod tests_compile;
#[cfg(test)]
mod tests_evaluate;
#[cfg(test)]
mod tests_parse;

pub use belay_proto::domain::Verdict;
pub use cidr::Cidr;
pub use compile::{HostResolver, KernelTables, Resolver, compile, kernel_dev};
pub use glob::{Glob, GlobMode, HostPattern};

/// Largest policy file read.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;
/// Longest deadline a policy may set.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Deadline of subjects when neither they nor `defaults` set one.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// Verdict at the deadline when neither the subject nor `defaults` set one.
pub const DEFAULT_ON_TIMEOUT: Verdict = Verdict::Deny;

/// What a rule (or a subject's default) does with an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The syscall runs.
    Allow,
    /// The syscall fails with EPERM.
    Deny,
    /// The process is held until a person decides (or the deadline passes).
    Ask,
    /// The process is killed.
    Kill,
    /// The syscall runs and is recorded.
    Audit,
}

impl Action {
    /// The [`rule_action`] code the kernel's maps hold for this action.
    pub fn kernel_code(self) -> u32 {
        match self {
            Action::Allow => rule_action::ALLOW,
            Action::Deny => rule_action::DENY,
            Action::Ask => rule_action::ASK,
            Action::Kill => rule_action::KILL,
            Action::Audit => rule_action::AUDIT,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Ask => "ask",
            Action::Kill => "kill",
            Action::Audit => "audit",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Action> {
        Some(match s {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            "ask" => Action::Ask,
            "kill" => Action::Kill,
            "audit" => Action::Audit,
            _ => return None,
        })
    }
}

impl From<agent_common::KernelDecision> for Action {
    fn from(decided: agent_common::KernelDecision) -> Self {
        use agent_common::KernelDecision;
        match decided {
            KernelDecision::Deny => Action::Deny,
            KernelDecision::Kill => Action::Kill,
            KernelDecision::Audit => Action::Audit,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol of an egress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The `socket::type` the kernel compares ([`agent_common::sock_type`]).
    pub fn sock_type(self) -> u16 {
        match self {
            Proto::Tcp => agent_common::sock_type::STREAM,
            Proto::Udp => agent_common::sock_type::DGRAM,
        }
    }

    /// The protocol of a `socket::type`, `None` for any other type.
    pub fn from_sock_type(sock_type: u16) -> Option<Proto> {
        match sock_type {
            agent_common::sock_type::STREAM => Some(Proto::Tcp),
            agent_common::sock_type::DGRAM => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// What the kernel hooks do while the daemon is down: the policy's `fail_mode`, and the
/// daemon's `--fail-mode` when the policy names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    // Plain comments, not doc comments: clap would show these as each value's help.
    // Watched processes' actions fail with EPERM until a daemon is back.
    Deny,
    // Watched processes' actions run unchecked until a daemon is back.
    Allow,
}

/// A policy that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_BYTES`].
    #[error("{}: the file is {size} bytes, more than the {MAX_POLICY_BYTES}-byte limit", file.display())]
    TooLarge { file: PathBuf, size: u64 },
    /// Something in the file is wrong, at `line`:`col` (both from 1).
    #[error("{}:{line}:{col}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

/// A loaded policy.
/// The owner of the built-in policy's subject: nobody was named.
pub const UNKNOWN_OWNER: &str = "unknown";

#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it was read from.
    pub source: PathBuf,
    pub fail_mode: Option<FailMode>,
    pub subjects: Vec<Subject>,
    /// The `mask:` section (validated); the daemon builds its masker (`belay_mask::Masker`).
    pub mask: MaskConfig,
}

/// One agent and what it may do.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub owner: String,
    /// `agent_common::subject_id(name)`: never 0, unique in the policy.
    pub id: u32,
    pub cgroups: Vec<String>,
    pub executables: Vec<PathBuf>,
    pub uids: Vec<u32>,
    pub enrolled: bool,
    pub exec_default: Action,
    pub egress_default: Action,
    pub deadline: Duration,
    pub on_timeout: Verdict,
    pub exec: Vec<ExecRule>,
    pub egress: Vec<EgressRule>,
    /// Line of the subject in the policy file (0 for the built-in policy).
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct ExecRule {
    pub name: String,
    pub line: usize,
    pub path: Glob,
    pub argv: Option<Glob>,
    pub action: Action,
    pub deadline: Option<Duration>,
    pub on_timeout: Option<Verdict>,
}

#[derive(Debug, Clone)]
pub struct EgressRule {
    pub name: String,
    pub line: usize,
    /// Empty: any IP destination (and no Unix socket).
    pub to: Vec<Destination>,
    /// Empty: any port.
    pub ports: Vec<RangeInclusive<u16>>,
    /// `None`: any protocol.
    pub protocol: Option<Proto>,
    pub action: Action,
    pub deadline: Option<Duration>,
    pub on_timeout: Option<Verdict>,
}

/// Where an egress rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Net(Cidr),
    Host(HostPattern),
    /// `unix:GLOB`: Unix sockets whose path (`/...`, or `@...` for an abstract name)
    /// matches the glob ([`GlobMode::Path`]). Never matches an IP destination.
    Unix(Glob),
}

impl EgressRule {
    /// Whether the rule names Unix sockets.
    pub fn has_unix(&self) -> bool {
        self.to.iter().any(|d| matches!(d, Destination::Unix(_)))
    }

    /// Whether the rule can match an IP destination: it has no `to`, or an address or
    /// hostname in it.
    pub fn has_ip(&self) -> bool {
        self.to.is_empty() || self.to.iter().any(|d| !matches!(d, Destination::Unix(_)))
    }
}

/// What the policy says about one action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub action: Action,
    /// The rule that decided; `None` for the subject's default.
    pub rule: Option<String>,
    /// How long an `ask` waits for a person.
    pub deadline: Duration,
    /// The verdict when the deadline passes.
    pub on_timeout: Verdict,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        use std::io::Read;
        let io = |source| PolicyError::Io {
            file: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                file: path.to_path_buf(),
                size,
            });
        }
        let mut bytes = Vec::new();
        // Read one byte past the limit, in case the file grew since the stat.
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                file: path.to_path_buf(),
                size: bytes.len() as u64,
            });
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let good = String::from_utf8_lossy(good);
                let line = good.matches('\n').count() + 1;
                let col = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                return Err(PolicyError::Invalid {
                    file: path.to_path_buf(),
                    line,
                    col,
                    message: "the file is not valid UTF-8".into(),
                });
            }
        };
        Policy::parse(&text, path)
    }

    /// Validates a policy given as text; `source` names it in errors.
    pub fn parse(text: &str, source: &Path) -> Result<Policy, PolicyError> {
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                file: source.to_path_buf(),
                size: text.len() as u64,
            });
        }
        parse::parse(text, source)
    }

    /// The policy used when no file is given: one subject "enrolled" (owner "unknown")
    /// for the processes started by `belay run`, which asks about every exec and
    /// connection.
    pub fn standalone_default(deadline: Duration, on_timeout: Verdict) -> Policy {
        let name = "enrolled".to_string();
        Policy {
            source: PathBuf::from("(built-in policy)"),
            fail_mode: None,
            mask: MaskConfig::default(),
            subjects: vec![Subject {
                id: agent_common::subject_id(name.as_bytes()),
                name,
                owner: UNKNOWN_OWNER.into(),
                cgroups: Vec::new(),
                executables: Vec::new(),
                uids: Vec::new(),
                enrolled: true,
                exec_default: Action::Ask,
                egress_default: Action::Ask,
                deadline,
                on_timeout,
                exec: Vec::new(),
                egress: Vec::new(),
                line: 0,
            }],
        }
    }

    /// The subject with this kernel id.
    pub fn subject(&self, id: u32) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.id == id)
    }

    pub fn subject_by_name(&self, name: &str) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.name == name)
    }

    /// The subject `belay run` enrolls into when no `--subject` is given: the only
    /// subject with `match.enrolled`; `None` if there are none or several.
    pub fn default_enroll_subject(&self) -> Option<&Subject> {
        let mut enrolled = self.subjects.iter().filter(|s| s.enrolled);
        let first = enrolled.next()?;
        match enrolled.next() {
            Some(_) => None,
            None => Some(first),
        }
    }
}

/// The paths of a file about to be executed, or of a Unix socket about to be reached,
/// as rules see them.
///
/// Only paths the daemon confirmed (they lead to the kernel's device and inode, in a
/// mount namespace the process could not have built itself, without `.` or `..`) can
/// grant: a rule that allows or audits matches `trusted` alone. The paths the process
/// claimed (the string it passed, made absolute; what it resolved to in its own view)
/// can still make a deny, kill or ask rule match: naming a file oddly never escapes a
/// restriction.
#[derive(Debug, Clone, Default)]
pub struct FilePaths<'a> {
    pub trusted: Vec<&'a str>,
    pub claimed: Vec<&'a str>,
}

impl<'a> FilePaths<'a> {
    /// A file whose path the daemon confirmed, claimed as nothing else.
    pub fn confirmed(path: &'a str) -> Self {
        Self {
            trusted: vec![path],
            claimed: Vec::new(),
        }
    }
}

impl Subject {
    /// What the policy says about running an executable. `file`: its canonical path,
    /// when the daemon could confirm it, and the paths it was claimed to be. `argv`:
    /// `None` when it could not be read: then a rule with an argv pattern counts as
    /// matching only if its action is deny, kill or ask.
    pub fn decide_exec(&self, file: &FilePaths<'_>, argv: Option<&[String]>) -> Decision {
        evaluate::decide_exec(self, file, argv)
    }

    /// What the policy says about sending to `ip:port`. `proto`: `None` for a socket
    /// that is neither TCP nor UDP (it matches only rules without `protocol`).
    /// `hostnames`: names the process learned for `ip` from DNS answers (may be empty).
    pub fn decide_egress(
        &self,
        ip: IpAddr,
        port: u16,
        proto: Option<Proto>,
        hostnames: &[String],
    ) -> Decision {
        evaluate::decide_egress(self, ip, port, proto, hostnames)
    }

    /// What the policy says about connecting (or sending a datagram) to the Unix socket
    /// at `path`: a filesystem path, or for an abstract socket `@` followed by the name
    /// with its NUL bytes shown as `@`. The first rule with a `unix:` destination whose
    /// glob matches decides; else the subject's egress default.
    pub fn decide_unix(&self, path: &str) -> Decision {
        evaluate::decide_unix(self, &FilePaths::confirmed(path))
    }

    /// [`Subject::decide_unix`] for a socket known by confirmed and claimed paths (see
    /// [`FilePaths`]): only a confirmed path can grant.
    pub fn decide_unix_file(&self, socket: &FilePaths<'_>) -> Decision {
        evaluate::decide_unix(self, socket)
    }
}
