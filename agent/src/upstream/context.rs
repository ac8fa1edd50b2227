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
        intent: view.intent.as_ref().map(intent),
    };
    // An intent that cannot be sent (masking made it too long) costs the intent only.
    if wire.intent.is_some() && domain::RequestContext::try_from(wire.clone()).is_err() {
        warn!("declared intent not sendable; sending the request without it");
        wire.intent = None;
    }
    // Deep ancestries of long paths can pass the total: the far end goes first.
    while domain::RequestContext::try_from(wire.clone()).is_err() && wire.ancestry.pop().is_some() {
    }
    if let Err(e) = domain::RequestContext::try_from(wire.clone()) {
        warn!(error = %e, "request context not sendable; sending none");
        return v1::RequestContext::default();
    }
    wire
}

/// The declared intent as belay-server takes it: escaped and clipped like the rest.
fn intent(view: &crate::api::IntentView) -> v1::DeclaredIntent {
    use domain::limits::{MAX_INTENT_FIELD_LEN, MAX_INTENT_LEN};
    let field = |s: &Option<String>| text(s.as_deref(), MAX_INTENT_FIELD_LEN);
    v1::DeclaredIntent {
        text: clip(&escape(&view.text), MAX_INTENT_LEN),
        model: field(&view.model),
        session_id: field(&view.session_id),
        tool_call_id: field(&view.tool_call_id),
        user_request_id: field(&view.user_request_id),
        declared_by_pid: view.declared_by_pid,
        declared_at: Some(
            (std::time::UNIX_EPOCH + std::time::Duration::from_millis(view.declared_unix_ms))
                .into(),
        ),
    }
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
            intent: None,
        }
    }

    #[test]
    fn a_declared_intent_goes_up_escaped_and_an_unsendable_one_costs_only_itself() {
        let mut request = view(ProcessContext::default(), vec![]);
        request.intent = Some(crate::api::IntentView {
            text: "migrate the \u{1b}[2J database".into(),
            model: Some("gpt-x".into()),
            session_id: None,
            tool_call_id: Some("call_7".into()),
            user_request_id: None,
            declared_by_pid: 9,
            declared_unix_ms: 1_000,
        });
        let parsed = domain::RequestContext::try_from(request_context(&request)).unwrap();
        let intent = parsed.intent().expect("the intent goes up");
        assert!(!intent.text().contains('\u{1b}'), "{:?}", intent.text());
        assert_eq!(intent.model(), Some("gpt-x"));
        assert_eq!(intent.tool_call_id(), Some("call_7"));
        assert_eq!(intent.declared_by_pid(), 9);

        // A pid of 0 cannot have declared anything: the intent is dropped, the rest stays.
        request.intent.as_mut().unwrap().declared_by_pid = 0;
        let parsed = domain::RequestContext::try_from(request_context(&request)).unwrap();
        assert!(parsed.intent().is_none());
        assert_eq!(parsed.subject(), Some("copilot"));
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
