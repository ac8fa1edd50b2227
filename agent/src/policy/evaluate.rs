//! First-match evaluation of a subject's rules (what the daemon decides for a paused
//! action).
use std::net::IpAddr;

use super::{Action, Decision, Destination, EgressRule, ExecRule, Proto, Subject};

fn decision(
    subject: &Subject,
    action: Action,
    rule: Option<&str>,
    deadline: Option<std::time::Duration>,
    on_timeout: Option<super::Verdict>,
) -> Decision {
    Decision {
        action,
        rule: rule.map(str::to_owned),
        deadline: deadline.unwrap_or(subject.deadline),
        on_timeout: on_timeout.unwrap_or(subject.on_timeout),
    }
}

/// Whether `rule` matches an exec of a file known by `paths`, with the command line
/// `argv` (its arguments joined by single spaces; `None`: unknown).
pub(crate) fn exec_rule_matches(rule: &ExecRule, paths: &[&str], argv: Option<&str>) -> bool {
    if !paths.iter().any(|p| rule.path.matches(p)) {
        return false;
    }
    match (&rule.argv, argv) {
        (None, _) => true,
        (Some(pattern), Some(line)) => pattern.matches(line),
        // Never grant on a command line that could not be read.
        (Some(_), None) => matches!(rule.action, Action::Deny | Action::Kill | Action::Ask),
    }
}

pub(crate) fn decide_exec(subject: &Subject, paths: &[&str], argv: Option<&[String]>) -> Decision {
    let line = argv.map(|a| a.join(" "));
    match subject
        .exec
        .iter()
        .find(|rule| exec_rule_matches(rule, paths, line.as_deref()))
    {
        Some(rule) => decision(
            subject,
            rule.action,
            Some(&rule.name),
            rule.deadline,
            rule.on_timeout,
        ),
        None => decision(subject, subject.exec_default, None, None, None),
    }
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

/// Whether `rule` matches the Unix socket `path`. A rule without `to` does not: it is
/// about IP destinations.
pub(crate) fn unix_rule_matches(rule: &EgressRule, path: &str) -> bool {
    rule.to.iter().any(|d| match d {
        Destination::Unix(glob) => glob.matches(path),
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
    match subject
        .egress
        .iter()
        .find(|rule| egress_rule_matches(rule, ip, port, proto, hostnames))
    {
        Some(rule) => decision(
            subject,
            rule.action,
            Some(&rule.name),
            rule.deadline,
            rule.on_timeout,
        ),
        None => decision(subject, subject.egress_default, None, None, None),
    }
}

pub(crate) fn decide_unix(subject: &Subject, path: &str) -> Decision {
    match subject
        .egress
        .iter()
        .find(|rule| unix_rule_matches(rule, path))
    {
        Some(rule) => decision(
            subject,
            rule.action,
            Some(&rule.name),
            rule.deadline,
            rule.on_timeout,
        ),
        None => decision(subject, subject.egress_default, None, None, None),
    }
}
