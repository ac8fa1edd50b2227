//! The book of paused requests: ids, deadlines, and the rule that each request ends
//! exactly once.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

// tokio's clock: the same as std's, except in tests that pause it to reach deadlines
// without waiting for them.
use tokio::time::Instant;

use agent_common::VerdictKey;

use crate::{
    api::{ActionView, IntentView, RequestView},
    context::ProcessContext,
    kernel::{Action, PauseEvent, Transport, Verdict},
    mask::Masker,
};

/// Everything the daemon learned about a paused action besides the kernel's event.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub context: ProcessContext,
    /// Exec: argv read from the stopped process (raw: [`RequestBook::open`] masks it).
    pub argv: Option<Vec<String>>,
    /// Exec: the environment read from the stopped process (raw, masked by `open`).
    pub env: Option<Vec<String>>,
    /// Exec: the file that will run, confirmed by inode and device.
    pub file: Option<String>,
    /// Egress: names the process looked the address up as.
    pub hostnames: Vec<String>,
    /// Subject name and owner.
    pub subject: Option<(String, String)>,
    pub rule: Option<String>,
    pub timeout: Duration,
    pub default_verdict: Verdict,
    /// Its id on belay-server, if it goes there.
    pub server_id: Option<String>,
    /// The masker of the policy in force.
    pub masker: Arc<Masker>,
    /// What an allow binds: for an exec what the new image must carry (`None` when argv
    /// or the environment could not be read whole: then no allow is given); for a Unix
    /// connect or send the socket the reviewer saw.
    pub expect: Option<crate::kernel::Expectation>,
    /// What the process or an ancestor declared (raw: [`RequestBook::open`] masks it).
    pub intent: Option<belay_agent_api::IntentView>,
}

impl RequestInfo {
    /// A request with nothing known but its deadline and default verdict.
    pub fn bare(timeout: Duration, default_verdict: Verdict) -> Self {
        Self {
            context: ProcessContext::default(),
            argv: None,
            env: None,
            file: None,
            hostnames: Vec::new(),
            subject: None,
            rule: None,
            timeout,
            default_verdict,
            server_id: None,
            masker: crate::mask::current(),
            expect: None,
            intent: None,
        }
    }
}

/// A request still waiting for its verdict.
#[derive(Debug, Clone)]
pub struct Pending {
    pub view: RequestView,
    pub key: VerdictKey,
    pub deadline: Instant,
    /// When the request was opened (for the pause-duration metric).
    pub opened: Instant,
    /// See [`RequestInfo::expect`].
    pub expect: Option<crate::kernel::Expectation>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Decided(Verdict),
    /// The deadline passed: the default verdict applies.
    Expired(Verdict),
    /// The process went away while paused.
    Cancelled,
    /// belay-server refused the request, or it could not be sent there at all (over the
    /// server's size limits): nobody who may decide it has seen it, so it ends with
    /// [`refused_verdict`], never on this host's local socket.
    Refused(Verdict),
}

/// The verdict of a request belay-server refused: its default verdict, but never an
/// allow. A default of allow means "let it through if nobody answers in time"; a
/// refused request was never shown to anyone who could answer (argv over the limits,
/// an id the server would not take), so letting it through would grant what nobody saw.
pub fn refused_verdict(default_verdict: Verdict) -> Verdict {
    match default_verdict {
        Verdict::Allow => Verdict::Deny,
        other => other,
    }
}

#[derive(Debug, Default)]
pub struct RequestBook {
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    decided: u64,
}

fn protocol(t: Transport) -> String {
    match t {
        Transport::Tcp => "tcp".into(),
        Transport::Udp => "udp".into(),
        Transport::Other(n) => format!("socket-type-{n}"),
    }
}

fn unix_protocol(t: Transport) -> String {
    match t {
        Transport::Tcp => "unix-stream".into(),
        Transport::Udp => "unix-dgram".into(),
        Transport::Other(n) => format!("unix-type-{n}"),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A declared intent with every field masked: the agent may quote the secrets it was
/// given ("deploy with token ghp_...").
fn mask_intent(masker: &Masker, intent: IntentView) -> IntentView {
    let mask = |s: String| masker.mask(&s).into_owned();
    IntentView {
        text: mask(intent.text),
        model: intent.model.map(mask),
        session_id: intent.session_id.map(mask),
        tool_call_id: intent.tool_call_id.map(mask),
        user_request_id: intent.user_request_id.map(mask),
        ..intent
    }
}

/// What a kernel action looks like to people, with argv, the environment and hostnames
/// masked by `masker`: every view is built here, so none leaves the daemon unmasked.
pub fn action_view(
    masker: &Masker,
    action: &Action,
    file: Option<String>,
    argv: Option<Vec<String>>,
    env: Option<Vec<String>>,
    hostnames: &[String],
) -> ActionView {
    let masked_hostnames = || {
        hostnames
            .iter()
            .map(|h| masker.mask(h).into_owned())
            .collect()
    };
    match action {
        Action::Exec { path, .. } => ActionView::Exec {
            path: path.clone(),
            file,
            argv: argv.map(|mut a| {
                masker.mask_argv_in_place(&mut a);
                a
            }),
            env: env.map(|mut e| {
                masker.mask_env_in_place(&mut e);
                e
            }),
        },
        Action::Connect { addr, transport } => ActionView::Connect {
            address: addr.ip().to_string(),
            port: addr.port(),
            protocol: protocol(*transport),
            hostnames: masked_hostnames(),
        },
        Action::ConnectUnix { path, transport } => ActionView::ConnectUnix {
            path: path.clone(),
            protocol: unix_protocol(*transport),
        },
        Action::SendUnix { path, transport } => ActionView::SendUnix {
            path: path.clone(),
            protocol: unix_protocol(*transport),
        },
        Action::Send { addr, transport } => ActionView::Send {
            address: addr.ip().to_string(),
            port: addr.port(),
            protocol: protocol(*transport),
            hostnames: masked_hostnames(),
        },
    }
}

impl RequestBook {
    /// Opens a request for a paused task and returns its id. This is where argv, the
    /// environment and hostnames are masked: the view is all that ever leaves the daemon
    /// (local socket, belay-server, exports), so nothing unmasked can.
    pub fn open(&mut self, ev: &PauseEvent, info: RequestInfo) -> &Pending {
        let RequestInfo {
            context,
            argv,
            env,
            file,
            hostnames,
            subject,
            rule,
            timeout,
            default_verdict,
            server_id,
            masker,
            expect,
            intent,
        } = info;
        self.next_id += 1;
        let id = self.next_id;
        let now = SystemTime::now();
        let action = action_view(&masker, &ev.action, file, argv, env, &hostnames);
        let view = RequestView {
            id,
            tgid: ev.tgid,
            pid: ev.pid,
            ppid: context.ppid,
            uid: ev.uid,
            comm: ev.comm.clone(),
            cwd: context.cwd.clone(),
            action,
            created_unix_ms: unix_ms(now),
            deadline_unix_ms: unix_ms(now + timeout),
            default_verdict,
            owner: subject.as_ref().map(|(_, o)| o.clone()),
            subject: subject.map(|(s, _)| s),
            rule,
            context,
            server_id,
            intent: intent.map(|i| mask_intent(&masker, i)),
        };
        self.pending.entry(id).or_insert(Pending {
            view,
            key: ev.key,
            deadline: Instant::now() + timeout,
            opened: Instant::now(),
            expect,
        })
    }

    /// Whether a request for exactly this paused action is open already: the task was
    /// resumed by a stray SIGCONT and paused again. A second request would leave a spare
    /// verdict once both are decided, for a later identical action nobody reviewed.
    pub fn pending_for(&self, key: &VerdictKey) -> bool {
        self.pending.values().any(|p| p.key == *key)
    }

    pub fn get(&self, id: u64) -> Option<&Pending> {
        self.pending.get(&id)
    }

    /// The local id of the request sent to belay-server as `server_id`.
    pub fn by_server_id(&self, server_id: &str) -> Option<u64> {
        self.pending
            .iter()
            .find(|(_, p)| p.view.server_id.as_deref() == Some(server_id))
            .map(|(id, _)| *id)
    }

    /// Ends the request sent to belay-server as `server_id`, which the server refused.
    /// A request that went to the server is decided there or by its deadline, never on
    /// the local socket (where one local root could approve it alone), so a refusal
    /// ends it here and now: the caller applies [`Outcome::Refused`].
    pub fn refused(&mut self, server_id: &str) -> Option<Pending> {
        let local = self.by_server_id(server_id)?;
        self.close(local)
    }

    pub fn list(&self) -> Vec<RequestView> {
        self.pending.values().map(|p| p.view.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn decided(&self) -> u64 {
        self.decided
    }

    /// Ends a request; `None` when it is unknown or already ended, so a request cannot
    /// be decided twice.
    pub fn close(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.decided += 1;
        Some(p)
    }

    /// Ends and returns every request whose deadline has passed.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Pending> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter().filter_map(|id| self.close(id)).collect()
    }

    /// Ends and returns every request whose process `alive` says is gone.
    pub fn take_gone(&mut self, alive: impl Fn(u32) -> bool) -> Vec<Pending> {
        let gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !alive(p.view.tgid))
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter().filter_map(|id| self.close(id)).collect()
    }

    /// Ends every request (shutdown).
    pub fn take_all(&mut self) -> Vec<Pending> {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.close(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tgid: u32) -> PauseEvent {
        PauseEvent {
            tgid,
            pid: tgid,
            uid: 1000,
            gid: 1000,
            comm: "agent".into(),
            subject: 0,
            flags: 0,
            action: Action::Connect {
                addr: "10.0.0.1:443".parse().unwrap(),
                transport: Transport::Tcp,
            },
            key: VerdictKey {
                tgid,
                kind: agent_common::kind::CONNECT,
                action_hash: 1,
            },
        }
    }

    #[test]
    fn ids_are_unique_and_a_request_closes_once() {
        let mut book = RequestBook::default();
        let a = book
            .open(
                &event(1),
                RequestInfo::bare(Duration::from_secs(60), Verdict::Deny),
            )
            .view
            .id;
        let b = book
            .open(
                &event(2),
                RequestInfo::bare(Duration::from_secs(60), Verdict::Deny),
            )
            .view
            .id;
        assert_ne!(a, b);
        assert_eq!(book.len(), 2);
        assert!(book.close(a).is_some());
        assert!(book.close(a).is_none(), "second decision refused");
        assert_eq!(book.decided(), 1);
        assert_eq!(
            book.get(b).unwrap().view.action,
            ActionView::Connect {
                address: "10.0.0.1".into(),
                port: 443,
                protocol: "tcp".into(),
                hostnames: vec![],
            }
        );
    }

    #[test]
    fn views_of_requests_never_hold_planted_secrets() {
        let aws = "AKIAQ2X7ZP4LMN3RT5VW";
        let gh = "ghp_Zx9Qw2Lm8Rt5Yp3Kq7Vb1Nc4Jd6Hf0Gs2Ta8";
        let pw = "hunter2-Blue!";
        let mut ev = event(9);
        ev.action = Action::Exec {
            path: "/usr/bin/git".into(),
            ino: 1,
            dev: 1,
        };
        let mut info = RequestInfo::bare(Duration::from_secs(60), Verdict::Deny);
        info.argv = Some(
            [
                "git",
                "clone",
                &format!("https://deploy:{pw}@git.example.com/r.git"),
                "--token",
                gh,
            ]
            .map(String::from)
            .to_vec(),
        );
        info.env = Some(vec![
            format!("AWS_ACCESS_KEY_ID={aws}"),
            format!("GITHUB_TOKEN={gh}"),
            format!("DB_PASSWORD={pw}"),
            "HOME=/home/alice".into(),
        ]);
        let mut book = RequestBook::default();
        let view = book.open(&ev, info).view.clone();
        let json = serde_json::to_string(&view).unwrap();
        for secret in [aws, gh, pw, &aws[4..], &gh[4..]] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        let ActionView::Exec { argv, env, .. } = &view.action else {
            panic!("exec view");
        };
        let (argv, env) = (argv.as_ref().unwrap(), env.as_ref().unwrap());
        assert!(
            argv[2].starts_with("https://deploy:…[password:"),
            "{argv:?}"
        );
        assert!(argv[4].starts_with("ghp_…[github-token:"), "{argv:?}");
        assert!(
            env[0].starts_with("AWS_ACCESS_KEY_ID=AKIA…[aws-access-key:"),
            "{env:?}"
        );
        assert_eq!(env[3], "HOME=/home/alice", "ordinary values are kept");
        // The same token in argv and env has the same keyed hash.
        let hash = |s: &str| s[s.find(':').unwrap()..].to_owned();
        assert_eq!(hash(&argv[4]), hash(env[1].split_once('=').unwrap().1));
    }

    #[test]
    fn expiry_takes_only_due_requests() {
        let mut book = RequestBook::default();
        book.open(&event(1), RequestInfo::bare(Duration::ZERO, Verdict::Deny));
        let later = book
            .open(
                &event(2),
                RequestInfo::bare(Duration::from_secs(3600), Verdict::Deny),
            )
            .view
            .id;
        let expired = book.take_expired(Instant::now());
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].view.tgid, 1);
        assert_eq!(
            book.list().iter().map(|v| v.id).collect::<Vec<_>>(),
            [later]
        );
    }

    #[test]
    fn gone_processes_are_cancelled() {
        let mut book = RequestBook::default();
        book.open(
            &event(7),
            RequestInfo::bare(Duration::from_secs(60), Verdict::Deny),
        );
        book.open(
            &event(8),
            RequestInfo::bare(Duration::from_secs(60), Verdict::Deny),
        );
        let gone = book.take_gone(|tgid| tgid != 7);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].view.tgid, 7);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn a_request_the_server_refused_ends_and_is_not_left_for_the_local_socket() {
        let mut book = RequestBook::default();
        let mut info = RequestInfo::bare(Duration::from_secs(60), Verdict::Allow);
        info.server_id = Some("build-7:1:1".into());
        book.open(&event(3), info);
        let other = book
            .open(
                &event(4),
                RequestInfo::bare(Duration::from_secs(60), Verdict::Deny),
            )
            .view
            .id;
        let ended = book
            .refused("build-7:1:1")
            .expect("the refused request ends");
        assert_eq!(ended.view.tgid, 3);
        // Nothing left that a local decider could approve, and the rest is untouched.
        assert_eq!(
            book.list().iter().map(|v| v.id).collect::<Vec<_>>(),
            [other]
        );
        assert!(book.refused("build-7:1:1").is_none(), "ends once");
        // Its default was allow: a refusal still never lets it through.
        assert_eq!(refused_verdict(ended.view.default_verdict), Verdict::Deny);
        assert_eq!(refused_verdict(Verdict::Kill), Verdict::Kill);
    }
}
