//! A kernel event becomes a policy decision: settled at once by a rule, or a request
//! for a person.
use std::{net::IpAddr, time::Duration};

use belay_proto::{
    display::{Escaped, escape, escape_json},
    v1,
};
use tracing::{info, warn};

use super::Shared;
use crate::{
    api::{ActionView, IntentView, RequestView},
    context::{self, ProcessContext},
    export::DecidedIn,
    intent,
    kernel::{Action, Expectation, PauseEvent, Transport, Verdict},
    policy::{self, Decision, FilePaths, Proto},
    requests::{Outcome, RequestInfo},
    task,
    upstream::Up,
    vouch,
};

/// What the daemon reads about a stopped task before deciding.
#[derive(Default)]
struct Gathered {
    context: ProcessContext,
    argv: Option<Vec<String>>,
    env: Option<Vec<String>>,
    file: Option<String>,
    /// The exec'd file's or the Unix socket's confirmed paths (see
    /// `vouch::exec_trusted_paths`, `vouch::unix_socket_trusted_paths`).
    trusted_file: Vec<String>,
    /// No mount the process sees was made by an unprivileged process.
    mounts_trusted: bool,
    /// What an allow binds: an exec's new image, or the Unix socket vouched for.
    expect: Option<Expectation>,
}

async fn gather(ev: &PauseEvent) -> Gathered {
    let (tgid, pid, uid) = (ev.tgid, ev.pid, ev.uid);
    let exec = match &ev.action {
        Action::Exec { path, ino, dev } => Some((path.clone(), *ino, *dev)),
        _ => None,
    };
    let socket = match &ev.action {
        Action::ConnectUnix { path, .. } | Action::SendUnix { path, .. } => Some(path.clone()),
        _ => None,
    };
    tokio::task::spawn_blocking(move || {
        // The stop is queued before the event is sent, but reading argv needs the task
        // to have actually stopped.
        for _ in 0..100 {
            if task::state(pid) == Some('T') {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let (image, file, mut trusted_file) = match exec {
            Some((path, ino, dev)) => (
                task::exec_image(tgid, pid, task::is_script(tgid, &path, ino, dev)),
                task::exec_file(tgid, &path, ino, dev),
                vouch::exec_trusted_paths(tgid, &path, ino, dev),
            ),
            None => (task::ExecImage::default(), None, Vec::new()),
        };
        let mut expect = image.expect.map(Expectation::Exec);
        if let Some(path) = socket {
            let (paths, peer) = vouch::unix_socket_vouched(tgid, &path);
            trusted_file = paths;
            expect = peer.map(Expectation::UnixPeer);
        }
        Gathered {
            context: context::collect(tgid, uid),
            argv: image.argv,
            env: image.env,
            expect,
            file,
            trusted_file,
            mounts_trusted: vouch::mounts_trusted(tgid),
        }
    })
    .await
    .unwrap_or_default()
}

/// A process that made its own mounts can make any file or socket look like any other,
/// so that no rule names it: the subject's default does not let such a process run a
/// program or reach a Unix socket by itself; a person decides.
fn unvouched_default_asks(decision: Decision, action: &Action, mounts_trusted: bool) -> Decision {
    let by_path = matches!(
        action,
        Action::Exec { .. } | Action::ConnectUnix { .. } | Action::SendUnix { .. }
    );
    let grants = matches!(
        decision.action,
        policy::Action::Allow | policy::Action::Audit
    );
    if by_path && !mounts_trusted && decision.rule.is_none() && grants {
        Decision {
            action: policy::Action::Ask,
            ..decision
        }
    } else {
        decision
    }
}

fn proto(t: Transport) -> Option<Proto> {
    match t {
        Transport::Tcp => Some(Proto::Tcp),
        Transport::Udp => Some(Proto::Udp),
        Transport::Other(_) => None,
    }
}

/// The process and its ancestors, nearest first: names one of them looked up serve
/// the others (a shell resolves, its child connects).
fn lineage(tgid: u32, ctx: &ProcessContext) -> Vec<u32> {
    std::iter::once(tgid)
        .chain(ctx.ancestry.iter().map(|a| a.pid))
        .collect()
}

/// What the process declared about why it acts, looked up when a person is asked (it
/// only ever informs a reviewer): its own declaration on the socket, else its
/// environment's `BELAY_INTENT` (for an exec, the new program's), else the nearest
/// ancestor's declaration on the socket.
fn declared_intent(shared: &Shared, ev: &PauseEvent, g: &Gathered) -> Option<IntentView> {
    let lineage = lineage(ev.tgid, &g.context);
    let now = std::time::Instant::now();
    let (own, ancestors) = lineage.split_at(1);
    let mut intents = shared.intents();
    if let Some(intent) = intents.for_lineage(own, crate::context::start_time, now) {
        return Some(intent);
    }
    let wall = std::time::SystemTime::now();
    let from_env = match (&ev.action, &g.env) {
        (Action::Exec { .. }, Some(env)) => {
            intent::from_env(env.iter().map(String::as_str), ev.tgid, wall)
        }
        _ => intent::environ_entry(ev.tgid, intent::INTENT_ENV)
            .and_then(|entry| intent::from_env([entry.as_str()], ev.tgid, wall)),
    };
    from_env.or_else(|| intents.for_lineage(ancestors, crate::context::start_time, now))
}

pub(super) async fn on_event(shared: Shared, ev: PauseEvent) {
    if !ev.is_pause() {
        report(&shared, &ev);
        return;
    }
    let g = gather(&ev).await;
    let policy = shared.policy.get();
    let subject = policy.subject(ev.subject);
    let mut hostnames = Vec::new();
    let decision = match (&ev.action, subject) {
        (_, None) => Decision {
            action: policy::Action::Ask,
            rule: None,
            deadline: shared.config.decide_timeout,
            on_timeout: shared.config.default_verdict,
        },
        (Action::Exec { path, .. }, Some(s)) => {
            // What the process claims: the path as given, made absolute, and the file it
            // resolved to in its own view. Only the confirmed path can grant.
            let given = match (&g.context.cwd, path.starts_with('/')) {
                (Some(cwd), false) => format!("{}/{path}", cwd.trim_end_matches('/')),
                _ => path.clone(),
            };
            let mut claimed = vec![given.as_str()];
            if let Some(f) = &g.file {
                claimed.push(f);
            }
            let file = FilePaths {
                trusted: g.trusted_file.iter().map(String::as_str).collect(),
                claimed,
            };
            s.decide_exec(&file, g.argv.as_deref())
        }
        (Action::Connect { addr, transport } | Action::Send { addr, transport }, Some(s)) => {
            hostnames = shared.names().names_for_lineage(
                &lineage(ev.tgid, &g.context),
                addr.ip(),
                std::time::Instant::now(),
            );
            s.decide_egress(addr.ip(), addr.port(), proto(*transport), &hostnames)
        }
        (Action::ConnectUnix { path, .. } | Action::SendUnix { path, .. }, Some(s)) => {
            let given = match (&g.context.cwd, path.starts_with(['/', '@'])) {
                (Some(cwd), false) => format!("{}/{path}", cwd.trim_end_matches('/')),
                _ => path.clone(),
            };
            s.decide_unix_file(&FilePaths {
                trusted: g.trusted_file.iter().map(String::as_str).collect(),
                claimed: vec![path.as_str(), given.as_str()],
            })
        }
    };
    let decision = unvouched_default_asks(decision, &ev.action, g.mounts_trusted);
    let verdict = match decision.action {
        policy::Action::Allow | policy::Action::Audit => Some(Verdict::Allow),
        policy::Action::Deny => Some(Verdict::Deny),
        policy::Action::Kill => Some(Verdict::Kill),
        policy::Action::Ask => None,
    };
    let rule = decision.rule.as_deref().unwrap_or("default");
    if let Some(v) = verdict {
        info!(
            tgid = ev.tgid,
            comm = %Escaped(&ev.comm),
            subject = subject.map_or("", |s| s.name.as_str()),
            rule,
            action = %decision.action.as_str(),
            what = %describe(&ev.action, &hostnames),
            "decided by policy"
        );
        shared.metrics.policy_decided(decision.action);
        shared
            .resolve_now(&ev, v, g.expect, Outcome::Decided(v))
            .await;
        export_verdict(
            &policy,
            &ev,
            Settled {
                subject: subject.map_or("", |s| s.name.as_str()),
                rule,
                policy_action: decision.action,
                decided_in: DecidedIn::Daemon,
            },
            g,
            &hostnames,
        );
        return;
    }
    let server_id = shared
        .upstream
        .as_ref()
        .filter(|_| goes_upstream(&ev.action))
        .map(|_| shared.server_ids.next());
    let intent = declared_intent(&shared, &ev, &g);
    let info = RequestInfo {
        intent,
        expect: g.expect,
        server_id: server_id.clone(),
        context: g.context,
        argv: g.argv,
        env: g.env,
        file: g.file,
        hostnames,
        subject: subject.map(|s| (s.name.clone(), s.owner.clone())),
        rule: decision.rule.clone(),
        timeout: decision.deadline,
        default_verdict: decision.on_timeout,
        masker: crate::mask::masker_for(&policy.mask),
    };
    let mut book = shared.book();
    if book.pending_for(&ev.key) {
        info!(
            tgid = ev.tgid,
            "paused again for an action already awaiting a decision (a stray SIGCONT); no new request"
        );
        return;
    }
    let p = book.open(&ev, info);
    // Built from the view, so what goes to belay-server is masked already.
    let upstream_action = server_id
        .as_ref()
        .and_then(|_| wire_action(&ev.action, &p.view));
    crate::export::opened(&p.view);
    if let (Some(up), Some(action), Some(id)) = (&shared.upstream, upstream_action, server_id) {
        let deadline =
            std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(p.view.deadline_unix_ms);
        up.send(Up::Submit(Box::new(v1::NewRequest {
            id,
            agent_name: p.view.subject.clone().unwrap_or_else(|| "unknown".into()),
            pid: ev.tgid,
            uid: ev.uid,
            action: Some(action),
            deadline: Some(prost_types::Timestamp::from(deadline)),
            default_verdict: v1::Verdict::from(p.view.default_verdict) as i32,
            rule: p.view.rule.clone().unwrap_or_else(|| "default".into()),
            // The subject's owner; the built-in policy's placeholder leaves it to the
            // session's (--server-owner).
            owner: p
                .view
                .owner
                .clone()
                .filter(|o| o != crate::policy::UNKNOWN_OWNER)
                .unwrap_or_default(),
            context: Some(crate::upstream::request_context(&p.view)),
        })));
    }
    let action = serde_json::to_string(&p.view.action).unwrap_or_default();
    let action = escape_json(&action);
    info!(
        request = p.view.id,
        tgid = ev.tgid,
        comm = %Escaped(&ev.comm),
        subject = p.view.subject.as_deref().unwrap_or(""),
        rule,
        %action,
        "paused; waiting for a decision"
    );
}

/// The action as belay-server's protocol has it; None for what it cannot carry yet
/// (Unix sockets), which stays with the local socket.
/// Whether belay-server can take this kind of request (it has no Unix sockets).
fn goes_upstream(action: &Action) -> bool {
    !matches!(action, Action::ConnectUnix { .. } | Action::SendUnix { .. })
}

/// The request's action for belay-server, from the (masked) view.
fn wire_action(action: &Action, view: &RequestView) -> Option<v1::Action> {
    use v1::action::Kind;
    let kind = match action {
        Action::Exec { path, .. } => {
            let (file, argv, env) = match &view.action {
                ActionView::Exec {
                    file, argv, env, ..
                } => (file.as_deref(), argv.clone(), env.clone()),
                _ => (None, None, None),
            };
            Kind::Exec(v1::Exec {
                path: file.unwrap_or(path).to_owned(),
                argv: argv.unwrap_or_default(),
                cwd: view.cwd.clone().unwrap_or_default(),
                env: env.unwrap_or_default(),
            })
        }
        Action::Connect { addr, transport } | Action::Send { addr, transport } => {
            Kind::Connect(v1::Connect {
                address: addr.ip().to_string(),
                port: u32::from(addr.port()),
                protocol: match transport {
                    Transport::Udp => v1::Protocol::Udp,
                    _ => v1::Protocol::Tcp,
                } as i32,
            })
        }
        Action::ConnectUnix { .. } | Action::SendUnix { .. } => return None,
    };
    Some(v1::Action { kind: Some(kind) })
}

/// The action for a log line, escaped: paths are the process's choice, and a log is read
/// on a terminal too.
fn describe(action: &Action, hostnames: &[String]) -> String {
    let names = if hostnames.is_empty() {
        String::new()
    } else {
        format!(" ({})", hostnames.join(", "))
    };
    let text = match action {
        Action::Exec { path, .. } => format!("exec {path}"),
        Action::Connect { addr, .. } => format!("connect {addr}{names}"),
        Action::Send { addr, .. } => format!("send {addr}{names}"),
        Action::ConnectUnix { path, .. } => format!("connect unix {path}"),
        Action::SendUnix { path, .. } => format!("send unix {path}"),
    };
    escape(&text).into_owned()
}

/// A verdict reached without a person: by a daemon rule or in the kernel.
struct Settled<'a> {
    subject: &'a str,
    rule: &'a str,
    policy_action: policy::Action,
    decided_in: DecidedIn,
}

/// Exports a settled verdict, masked like every request view (nothing is built when
/// export is off).
fn export_verdict(
    policy: &policy::Policy,
    ev: &PauseEvent,
    settled: Settled<'_>,
    g: Gathered,
    hostnames: &[String],
) {
    if !crate::export::enabled() {
        return;
    }
    crate::export::policy_decided(crate::export::PolicyDecided {
        tgid: ev.tgid,
        uid: ev.uid,
        comm: &ev.comm,
        subject: settled.subject,
        rule: settled.rule,
        policy_action: settled.policy_action,
        decided_in: settled.decided_in,
        action: crate::requests::action_view(
            &crate::mask::masker_for(&policy.mask),
            &ev.action,
            g.file,
            g.argv,
            g.env,
            hostnames,
        ),
    });
}

/// An action the kernel decided by itself.
fn report(shared: &Shared, ev: &PauseEvent) {
    let subject = shared.policy.get();
    let subject = subject.subject(ev.subject).map_or("", |s| s.name.as_str());
    let ip: Option<IpAddr> = match &ev.action {
        Action::Connect { addr, .. } | Action::Send { addr, .. } => Some(addr.ip()),
        Action::Exec { .. } | Action::ConnectUnix { .. } | Action::SendUnix { .. } => None,
    };
    let hostnames = ip.map_or_else(Vec::new, |ip| {
        shared.names().names(ev.tgid, ip, std::time::Instant::now())
    });
    let export = |policy_action: policy::Action, decided_in: DecidedIn| {
        let settled = Settled {
            subject,
            rule: "",
            policy_action,
            decided_in,
        };
        export_verdict(
            &shared.policy.get(),
            ev,
            settled,
            Gathered::default(),
            &hostnames,
        );
    };
    if let Some(decided) = ev.policy_action() {
        let action = policy::Action::from(decided);
        shared.metrics.kernel_policy_reported(action);
        export(action, DecidedIn::Kernel);
        info!(
            tgid = ev.tgid,
            comm = %Escaped(&ev.comm),
            subject,
            action = %action,
            what = %describe(&ev.action, &hostnames),
            "decided in the kernel by policy"
        );
        return;
    }
    warn!(
        tgid = ev.tgid,
        comm = %Escaped(&ev.comm),
        subject,
        what = %describe(&ev.action, &hostnames),
        why = ?ev.unpausable_reasons(),
        "denied in the kernel without a pause: the task cannot be paused safely"
    );
    export(policy::Action::Deny, DecidedIn::KernelUnpausable);
}
