//! The process context a reviewer sees on belay-server, made fit to leave the host:
//! clipped to the server's limits and escaped. Apart from the link, which only carries
//! what this builds.
use belay_proto::{display::escape, domain, v1};
use tracing::warn;

use crate::api::{ActionView, RequestView};

/// The context a reviewer sees on belay-server, from what the daemon gathered: clipped
/// to the server's limits (`domain::limits`) and escaped (`display::escape`), so
/// that a long or odd value costs that value, never the whole request.
pub fn request_context(view: &RequestView) -> v1::RequestContext {
    use domain::limits;
    let hostnames = match &view.action {
        ActionView::Connect { hostnames, .. } | ActionView::Send { hostnames, .. } => {
            hostnames.as_slice()
        }
        _ => &[],
    };
    let ctx = &view.context;
    let mut wire = v1::RequestContext {
        ancestry: ctx
            .ancestry
            .iter()
            .filter(|a| a.pid != 0)
            .take(limits::MAX_ANCESTRY)
            .map(|a| v1::Ancestor {
                pid: a.pid,
                comm: clip(&escape(&a.comm), limits::MAX_COMM_LEN),
                exe: absolute(a.exe.as_deref(), limits::MAX_PATH_LEN),
            })
            .collect(),
        user: text(ctx.user.as_deref(), limits::MAX_IDENTITY_LEN),
        cgroup: absolute(ctx.cgroup.as_deref(), limits::MAX_PATH_LEN),
        container_id: ctx.container_id.clone().unwrap_or_default(),
        pod_uid: ctx.pod_uid.clone().unwrap_or_default(),
        cwd: absolute(ctx.cwd.as_deref(), limits::MAX_PATH_LEN),
        subject: text(view.subject.as_deref(), limits::MAX_NAME_LEN),
        hostnames: hostnames
            .iter()
            .filter(|h| is_dns_name(h))
            .take(limits::MAX_HOSTNAMES)
            .cloned()
            .collect(),
        intent: None,
    };
    // Deep ancestries of long paths can pass the total: the far end goes first.
    while domain::RequestContext::try_from(wire.clone()).is_err() && wire.ancestry.pop().is_some() {
    }
    if let Err(e) = domain::RequestContext::try_from(wire.clone()) {
        warn!(error = %e, "request context not sendable; sending none");
        return v1::RequestContext::default();
    }
    wire
}

/// At most `max` bytes, cut at a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Escaped; empty (unknown) when too long, since a cut value would mislead.
fn text(s: Option<&str>, max: usize) -> String {
    let s = escape(s.unwrap_or_default());
    if s.len() > max {
        String::new()
    } else {
        s.into_owned()
    }
}

fn absolute(path: Option<&str>, max: usize) -> String {
    path.filter(|p| p.starts_with('/'))
        .map(|p| text(Some(p), max))
        .unwrap_or_default()
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= domain::limits::MAX_HOST_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.trim_end_matches('.').split('.').any(str::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Ancestor, ProcessContext};
    use crate::kernel::Verdict;

    fn view(context: ProcessContext, hostnames: Vec<String>) -> RequestView {
        RequestView {
            id: 1,
            tgid: 10,
            pid: 10,
            ppid: Some(9),
            uid: 1000,
            comm: "curl".into(),
            cwd: context.cwd.clone(),
            action: ActionView::Connect {
                address: "192.0.2.1".into(),
                port: 443,
                protocol: "tcp".into(),
                hostnames,
            },
            created_unix_ms: 0,
            deadline_unix_ms: 0,
            default_verdict: Verdict::Deny,
            subject: Some("copilot".into()),
            owner: Some("alice".into()),
            rule: None,
            context,
            server_id: None,
        }
    }

    #[test]
    fn the_daemons_context_goes_up_as_the_server_accepts_it() {
        let context = ProcessContext {
            host: "build-7".into(),
            ppid: Some(9),
            ancestry: vec![
                Ancestor {
                    pid: 9,
                    comm: "ba\u{1b}s\u{202e}h".into(),
                    exe: Some("/usr/bin/bash".into()),
                },
                Ancestor {
                    pid: 1,
                    comm: "systemd".into(),
                    exe: None,
                },
            ],
            user: Some("dev".into()),
            cgroup: Some("/user.slice/user-1000.slice".into()),
            container_id: None,
            pod_uid: None,
            cwd: Some(format!("/{}", "d".repeat(5000))),
        };
        let names = vec!["api.example.com".into(), "bad name".into()];
        let wire = request_context(&view(context, names));
        let parsed = domain::RequestContext::try_from(wire.clone()).expect("server accepts it");
        assert_eq!(parsed.ancestry().len(), 2);
        assert_eq!(parsed.ancestry()[0].comm(), "ba\\u{1b}s\\u{202e}h");
        assert_eq!(parsed.ancestry()[1].exe(), None);
        assert_eq!(parsed.user(), Some("dev"));
        assert_eq!(parsed.subject(), Some("copilot"));
        // Too long to be useful cut: left out rather than cost the whole request.
        assert_eq!(parsed.cwd(), None);
        assert_eq!(parsed.hostnames(), ["api.example.com"]);
    }

    #[test]
    fn deep_ancestries_of_long_paths_are_trimmed_to_the_total() {
        let exe = format!("/{}", "e".repeat(domain::limits::MAX_PATH_LEN - 1));
        let context = ProcessContext {
            ancestry: (1..=30)
                .map(|pid| Ancestor {
                    pid,
                    comm: "sh".into(),
                    exe: Some(exe.clone()),
                })
                .collect(),
            ..ProcessContext::default()
        };
        let wire = request_context(&view(context, vec![]));
        assert!(!wire.ancestry.is_empty());
        assert!(wire.ancestry.len() < 30);
        assert_eq!(wire.ancestry[0].pid, 1);
        domain::RequestContext::try_from(wire).expect("server accepts it");
    }
}
