//! The request context: who and where the paused process is, as the host saw it.
//!
//! Fields are private so that the limits hold: the only way in is
//! `TryFrom<v1::RequestContext>`, which every value from the wire goes through and which
//! code building a context (the agent, tests) uses as well.

use super::error::{Problem, ValidationError};
use super::intent::Intent;
use super::limits;
use crate::v1;

/// Everything optional: the agent gathers it best effort, and older agents send none.
/// Boxed: it rides along in every request and message, mostly untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RequestContext(Box<Fields>);

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Fields {
    ancestry: Vec<Ancestor>,
    user: Option<String>,
    cgroup: Option<String>,
    container_id: Option<String>,
    pod_uid: Option<String>,
    cwd: Option<String>,
    subject: Option<String>,
    hostnames: Vec<String>,
    intent: Option<Intent>,
}

/// A process above the paused one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ancestor {
    pid: u32,
    comm: String,
    exe: Option<String>,
}

impl Ancestor {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn comm(&self) -> &str {
        &self.comm
    }

    pub fn exe(&self) -> Option<&str> {
        self.exe.as_deref()
    }
}

impl RequestContext {
    /// Parent first.
    pub fn ancestry(&self) -> &[Ancestor] {
        &self.0.ancestry
    }

    pub fn user(&self) -> Option<&str> {
        self.0.user.as_deref()
    }

    pub fn cgroup(&self) -> Option<&str> {
        self.0.cgroup.as_deref()
    }

    pub fn container_id(&self) -> Option<&str> {
        self.0.container_id.as_deref()
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.0.pod_uid.as_deref()
    }

    pub fn cwd(&self) -> Option<&str> {
        self.0.cwd.as_deref()
    }

    pub fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }

    pub fn hostnames(&self) -> &[String] {
        &self.0.hostnames
    }

    /// What the process declared about why it acts; unverified.
    pub fn intent(&self) -> Option<&Intent> {
        self.0.intent.as_ref()
    }

    /// The same context with `intent` in place of any it had (the agent attaches the
    /// declared intent after gathering the rest, and masks it).
    #[must_use]
    pub fn with_intent(mut self, intent: Option<Intent>) -> Self {
        self.0.intent = intent;
        self
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn err(field: impl Into<String>, problem: Problem) -> ValidationError {
    ValidationError::new(field, problem)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(err(
            field,
            Problem::TooLong {
                len: value.len(),
                max,
            },
        ));
    }
    Ok(())
}

fn check_chars(
    field: &str,
    value: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), ValidationError> {
    match value.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(err(field, Problem::ForbiddenChar(c))),
        None => Ok(()),
    }
}

/// Shown to people on a terminal. The agent escapes these fields (`display::escape`,
/// which also covers bidi overrides and other invisible characters), so a control
/// character arriving here is forged or corrupt. Refusing it is not what keeps a screen
/// safe, though: every view escapes again when it shows a value, since an older agent
/// may send format characters, and path, argv and env arrive raw by design.
fn printable(c: char) -> bool {
    !c.is_control()
}

/// Empty means unknown.
fn optional(
    field: &str,
    value: String,
    max: usize,
    valid: impl Fn(&str, &str) -> Result<(), ValidationError>,
) -> Result<Option<String>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    check_len(field, &value, max)?;
    valid(field, &value)?;
    Ok(Some(value))
}

fn text(field: &str, value: &str) -> Result<(), ValidationError> {
    check_chars(field, value, printable)
}

fn absolute_path(field: &str, value: &str) -> Result<(), ValidationError> {
    if !value.starts_with('/') {
        return Err(err(
            field,
            Problem::Inconsistent("must be an absolute path"),
        ));
    }
    check_chars(field, value, printable)
}

fn lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn container_id(field: &str, value: &str) -> Result<(), ValidationError> {
    if lower_hex(value, 64) {
        return Ok(());
    }
    Err(err(
        field,
        Problem::Inconsistent("must be 64 lowercase hex digits"),
    ))
}

fn pod_uid(field: &str, value: &str) -> Result<(), ValidationError> {
    let parts: Vec<&str> = value.split('-').collect();
    let uuid = parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(part, len)| lower_hex(part, len));
    if uuid || lower_hex(value, 32) {
        return Ok(());
    }
    Err(err(
        field,
        Problem::Inconsistent("must be a lowercase UUID or 32 hex digits"),
    ))
}

/// Letters, digits, `-`, `_` and dots, as resolvers hand them out; no empty labels.
fn dns_name(field: &str, value: &str) -> Result<(), ValidationError> {
    check_chars(field, value, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    })?;
    if value.trim_end_matches('.').split('.').any(str::is_empty) {
        return Err(err(field, Problem::Inconsistent("has an empty label")));
    }
    Ok(())
}

impl TryFrom<v1::RequestContext> for RequestContext {
    type Error = ValidationError;

    fn try_from(context: v1::RequestContext) -> Result<Self, Self::Error> {
        let v1::RequestContext {
            ancestry,
            user,
            cgroup,
            container_id: container,
            pod_uid: pod,
            cwd,
            subject,
            hostnames,
            intent,
        } = context;
        if ancestry.len() > limits::MAX_ANCESTRY {
            return Err(err(
                "ancestry",
                Problem::TooMany {
                    count: ancestry.len(),
                    max: limits::MAX_ANCESTRY,
                },
            ));
        }
        if hostnames.len() > limits::MAX_HOSTNAMES {
            return Err(err(
                "hostnames",
                Problem::TooMany {
                    count: hostnames.len(),
                    max: limits::MAX_HOSTNAMES,
                },
            ));
        }
        let ancestry = ancestry
            .into_iter()
            .enumerate()
            .map(|(i, ancestor)| {
                Ancestor::parse(ancestor).map_err(|e| e.within(&format!("ancestry[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hostnames = hostnames
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let field = format!("hostnames[{i}]");
                if name.is_empty() {
                    return Err(err(field, Problem::Empty));
                }
                check_len(&field, &name, limits::MAX_HOST_LEN)?;
                dns_name(&field, &name)?;
                Ok(name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parsed = Fields {
            ancestry,
            user: optional("user", user, limits::MAX_IDENTITY_LEN, text)?,
            cgroup: optional("cgroup", cgroup, limits::MAX_PATH_LEN, absolute_path)?,
            container_id: optional("container_id", container, 64, container_id)?,
            pod_uid: optional("pod_uid", pod, 36, pod_uid)?,
            cwd: optional("cwd", cwd, limits::MAX_PATH_LEN, absolute_path)?,
            subject: optional("subject", subject, limits::MAX_NAME_LEN, text)?,
            hostnames,
            intent: intent
                .map(Intent::try_from)
                .transpose()
                .map_err(|e| e.within("intent"))?,
        };
        // Each field is bounded; together they would still allow far more than a
        // reviewer reads, and every request is stored and streamed to every watcher.
        let total = parsed.total_len();
        if total > limits::MAX_CONTEXT_TOTAL_LEN {
            return Err(err(
                "total_size",
                Problem::TooLong {
                    len: total,
                    max: limits::MAX_CONTEXT_TOTAL_LEN,
                },
            ));
        }
        Ok(Self(Box::new(parsed)))
    }
}

impl Fields {
    fn total_len(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.ancestry
            .iter()
            .map(|a| a.comm.len() + opt(&a.exe))
            .sum::<usize>()
            + self.hostnames.iter().map(String::len).sum::<usize>()
            + opt(&self.user)
            + opt(&self.cgroup)
            + opt(&self.container_id)
            + opt(&self.pod_uid)
            + opt(&self.cwd)
            + opt(&self.subject)
            + self.intent.as_ref().map_or(0, Intent::total_len)
    }
}

impl Ancestor {
    fn parse(ancestor: v1::Ancestor) -> Result<Self, ValidationError> {
        if ancestor.pid == 0 {
            return Err(err("pid", Problem::Inconsistent("must not be 0")));
        }
        check_len("comm", &ancestor.comm, limits::MAX_COMM_LEN)?;
        text("comm", &ancestor.comm)?;
        Ok(Self {
            pid: ancestor.pid,
            comm: ancestor.comm,
            exe: optional("exe", ancestor.exe, limits::MAX_PATH_LEN, absolute_path)?,
        })
    }
}

impl From<RequestContext> for v1::RequestContext {
    fn from(context: RequestContext) -> Self {
        let context = *context.0;
        Self {
            ancestry: context
                .ancestry
                .into_iter()
                .map(|a| v1::Ancestor {
                    pid: a.pid,
                    comm: a.comm,
                    exe: a.exe.unwrap_or_default(),
                })
                .collect(),
            user: context.user.unwrap_or_default(),
            cgroup: context.cgroup.unwrap_or_default(),
            container_id: context.container_id.unwrap_or_default(),
            pod_uid: context.pod_uid.unwrap_or_default(),
            cwd: context.cwd.unwrap_or_default(),
            subject: context.subject.unwrap_or_default(),
            hostnames: context.hostnames,
            intent: context.intent.map(Into::into),
        }
    }
}

/// Absent on the wire (older agents) is the empty context; an empty one is sent as
/// absent, so requests without context encode as before.
pub(crate) fn parse_optional(
    context: Option<v1::RequestContext>,
) -> Result<RequestContext, ValidationError> {
    context
        .map(RequestContext::try_from)
        .transpose()
        .map_err(|e| e.within("context"))
        .map(Option::unwrap_or_default)
}

pub(crate) fn to_optional(context: RequestContext) -> Option<v1::RequestContext> {
    (!context.is_empty()).then(|| context.into())
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
