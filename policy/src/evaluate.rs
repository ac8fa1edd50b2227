//! First-match evaluation of a subject's rules (what the daemon decides for a paused
//! action).
use std::net::IpAddr;

use super::{Action, Decision, Destination, EgressRule, ExecRule, FilePaths, Proto, Subject};

/// What a matching rule says: its name, action, and its own deadline and verdict.
struct Matched<'a> {
    name: &'a str,
    action: Action,
    deadline: Option<std::time::Duration>,
    on_timeout: Option<super::Verdict>,
}

impl<'a> From<&'a ExecRule> for Matched<'a> {
    fn from(r: &'a ExecRule) -> Self {
        Self {
            name: &r.name,
            action: r.action,
            deadline: r.deadline,
            on_timeout: r.on_timeout,
        }
    }
}

impl<'a> From<&'a EgressRule> for Matched<'a> {
    fn from(r: &'a EgressRule) -> Self {
        Self {
            name: &r.name,
            action: r.action,
            deadline: r.deadline,
            on_timeout: r.on_timeout,
        }
    }
}

/// The first matching rule's decision, or the subject's `default` when none matched;
/// deadline and timeout verdict fall back to the subject's.
fn decision(subject: &Subject, default: Action, matched: Option<Matched<'_>>) -> Decision {
    let (action, rule, deadline, on_timeout) = match matched {
        Some(m) => (m.action, Some(m.name.to_owned()), m.deadline, m.on_timeout),
        None => (default, None, None, None),
    };
    Decision {
        action,
        rule,
        deadline: deadline.unwrap_or(subject.deadline),
        on_timeout: on_timeout.unwrap_or(subject.on_timeout),
    }
}

/// A rule that can only hold a process back (deny, kill, ask): it may match on what the
/// process claims; one that lets it through may not.
fn restricts(action: Action) -> bool {
    matches!(action, Action::Deny | Action::Kill | Action::Ask)
}

/// Whether `rule` matches an exec of `file`, with the command line `argv` (its
/// arguments joined by single spaces; `None`: unknown).
pub(crate) fn exec_rule_matches(rule: &ExecRule, file: &FilePaths<'_>, argv: Option<&str>) -> bool {
    let by_trusted = file.trusted.iter().any(|p| rule.path.matches(p));
    let by_claim = restricts(rule.action) && file.claimed.iter().any(|p| rule.path.matches(p));
    if !(by_trusted || by_claim) {
        return false;
    }
    match (&rule.argv, argv) {
        (None, _) => true,
        (Some(pattern), Some(line)) => pattern.matches(line),
        // Never grant on a command line that could not be read.
        (Some(_), None) => restricts(rule.action),
    }
}

pub(crate) fn decide_exec(
    subject: &Subject,
    file: &FilePaths<'_>,
    argv: Option<&[String]>,
) -> Decision {
    let line = argv.map(|a| a.join(" "));
    let matched = subject
        .exec
        .iter()
        .find(|rule| exec_rule_matches(rule, file, line.as_deref()));
    decision(subject, subject.exec_default, matched.map(Matched::from))
}

pub(crate) fn egress_rule_matches(
    rule: &EgressRule,
    ip: IpAddr,
    port: u16,
    proto: Option<Proto>,
    hostnames: &[String],
) -> bool {
    if let Some(want) = rule.protocol
        && proto != Some(want)
    {
        return false;
    }
    if !rule.ports.is_empty() && !rule.ports.iter().any(|r| r.contains(&port)) {
        return false;
    }
    rule.to.is_empty()
        || rule.to.iter().any(|d| match d {
            Destination::Net(cidr) => cidr.contains(ip),
            Destination::Host(pattern) => hostnames.iter().any(|h| pattern.matches(h)),
            Destination::Unix(_) => false,
        })
}

/// Whether `rule` matches the Unix socket `socket` (only its confirmed paths, unless
/// the rule restricts). A rule without `to` does not: it is about IP destinations.
pub(crate) fn unix_rule_matches(rule: &EgressRule, socket: &FilePaths<'_>) -> bool {
    let claims = restricts(rule.action);
    rule.to.iter().any(|d| match d {
        Destination::Unix(glob) => {
            socket.trusted.iter().any(|p| glob.matches(p))
                || (claims && socket.claimed.iter().any(|p| glob.matches(p)))
        }
        Destination::Net(_) | Destination::Host(_) => false,
    })
}

pub(crate) fn decide_egress(
    subject: &Subject,
    ip: IpAddr,
    port: u16,
    proto: Option<Proto>,
    hostnames: &[String],
) -> Decision {
    let matched = subject
        .egress
        .iter()
        .find(|rule| egress_rule_matches(rule, ip, port, proto, hostnames));
    decision(subject, subject.egress_default, matched.map(Matched::from))
}

pub(crate) fn decide_unix(subject: &Subject, socket: &FilePaths<'_>) -> Decision {
    let matched = subject
        .egress
        .iter()
        .find(|rule| unix_rule_matches(rule, socket));
    decision(subject, subject.egress_default, matched.map(Matched::from))
}
