//! Reviewers see the truth: values a watched process chose (path, argv, environment,
//! comm, cwd, cgroup, names) or that came from elsewhere (hostnames, reasons, rule and
//! subject names, identities) reach every human view of `belay` escaped, whether they
//! come from belay-server or from an agent's local socket; JSON output keeps the real
//! values, JSON-escaped. The environment variables that change what a program does are
//! listed first, as masked on the host.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use belay_agent_api::{
    ActionView, Ancestor, ApiRequest, ApiResponse, ProcessContext, RequestView, Verdict,
};
use belay_proto::v1;
use serde_json::Value;
use support::{PATIENCE, agent_session, belay_ok, drain, message, start, wait_pending};

/// Characters that rewrite, reorder or hide text on a terminal: none may reach one raw.
const RAW: &[char] = &[
    '\x1b', '\r', '\x07', '\0', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}',
];

fn assert_no_raw(what: &str, out: &str) {
    for c in RAW {
        assert!(
            !out.contains(*c),
            "{what}: raw {c:?} reached the output:\n{out}"
        );
    }
}

// What the process chose. The server refuses control characters in the context and in
// names, but not format characters, nor anything but NUL in path, argv and env.
const PATH: &str = "/tmp/\x1b[2J\u{202e}evil";
const PATH_SHOWN: &str = r"/tmp/\u{1b}[2J\u{202e}evil";
const ARG: &str = "echo ok\r\x07";
const ARG_SHOWN: &str = r#""echo ok\r\u{7}""#;
const FLIPPED: &str = "\u{202e}txt.exe";
const PRELOAD: &str = "LD_PRELOAD=/tmp/\x1b]0;pwned\x07x.so";
const PRELOAD_SHOWN: &str = r"LD_PRELOAD=/tmp/\u{1b}]0;pwned\u{7}x.so";
/// As the agent masked it: the marker must reach the reviewer as it is.
const SSH: &str = "GIT_SSH_COMMAND=ssh -i ~/.ssh/id …[private-key:0c41d2e7]";
const CWD: &str = "/work/\u{202e}rid";
const COMM: &str = "ba\u{2066}sh";
const AGENT: &str = "copilot\u{200b}";
const RULE: &str = "ask\u{feff}-all";
const HOST: &str = "build\u{202e}7";
/// The host whose agent submits the request: belay-server takes request ids only as
/// `HOST:...` with a host of `[A-Za-z0-9._-]`, so [`HOST`] itself can submit none.
const REQ_HOST: &str = "build-7";
/// The request's id.
const REQ: &str = "build-7:req-1";
/// A reviewer's reason may span lines; the second must not pass for a line of `show`.
const REASON: &str = "fine\nrequest   forged";

fn env() -> Vec<String> {
    [
        "TERM=xterm",
        PRELOAD,
        "LANG=C.UTF-8",
        "PATH=/tmp/bin:/usr/bin",
        SSH,
        "HOME=/home/dev",
    ]
    .map(String::from)
    .to_vec()
}

/// `runs with` lists LD_PRELOAD, PATH, GIT_SSH_COMMAND and HOME, and before any other
/// variable; masked values are shown as masked.
fn assert_env_shown(out: &str) {
    let line = |needle: &str| {
        out.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{out}"))
    };
    let first = line("runs with");
    assert!(
        out.lines().nth(first).unwrap().contains(PRELOAD_SHOWN),
        "{out}"
    );
    let others = line("env       TERM=xterm");
    for needle in [
        PRELOAD_SHOWN,
        "PATH=/tmp/bin:/usr/bin",
        SSH,
        "HOME=/home/dev",
    ] {
        let at = line(needle);
        assert!(
            first <= at && at < others,
            "{needle} not under `runs with`:\n{out}"
        );
    }
    assert!(line("LANG=C.UTF-8") > others, "{out}");
}

fn exec_request(id: &str) -> v1::AgentMessage {
    message(v1::agent_message::Kind::Request(v1::NewRequest {
        id: id.into(),
        agent_name: AGENT.into(),
        pid: 4242,
        uid: 1000,
        action: Some(v1::Action {
            kind: Some(v1::action::Kind::Exec(v1::Exec {
                path: PATH.into(),
                argv: vec!["sh".into(), "-c".into(), ARG.into(), FLIPPED.into()],
                cwd: "/work/\x1b[31mred".into(),
                env: env(),
            })),
        }),
        deadline: Some((SystemTime::now() + Duration::from_secs(300)).into()),
        default_verdict: v1::Verdict::Deny.into(),
        rule: RULE.into(),
        context: Some(v1::RequestContext {
            ancestry: vec![v1::Ancestor {
                pid: 812,
                comm: COMM.into(),
                exe: "/usr/bin/\u{202e}bash".into(),
            }],
            user: "dev\u{2066}".into(),
            cgroup: "/system.slice/\u{200b}agent.service".into(),
            cwd: CWD.into(),
            subject: AGENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// A server with an agent on host [`HOST`], and one on [`REQ_HOST`] that submitted
/// [`exec_request`] [`REQ`].
async fn server_with_request() -> (String, [tokio::sync::mpsc::Sender<v1::AgentMessage>; 2]) {
    let url = start().await;
    let hello = |host: &str| v1::Hello {
        host: host.into(),
        version: "1.2\u{202e}3".into(),
        owner: "alice\u{200b}@example.com".into(),
    };
    let (hostile, inbound) = agent_session(&url, hello(HOST)).await;
    drain(inbound);
    let (agent, inbound) = agent_session(&url, hello(REQ_HOST)).await;
    drain(inbound);
    agent.send(exec_request(REQ)).await.unwrap();
    wait_pending(&url, 1).await;
    (url, [hostile, agent])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_views_escape_every_field_and_list_the_program_environment() {
    let (url, _agent) = server_with_request().await;

    let pending = belay_ok(&url, &["pending"]).await;
    assert_no_raw("pending", &pending);
    assert!(pending.contains(PATH_SHOWN), "{pending}");
    assert!(pending.contains(ARG_SHOWN), "{pending}");
    assert!(pending.contains(r#""\u{202e}txt.exe""#), "{pending}");

    let shown = belay_ok(&url, &["show", REQ]).await;
    assert_no_raw("show", &shown);
    for needle in [
        PATH_SHOWN,
        ARG_SHOWN,
        r"copilot\u{200b} (owner alice\u{200b}@example.com) on build-7",
        r"rule      ask\u{feff}-all",
        r"cwd       /work/\u{202e}rid",
        r"user      dev\u{2066}",
        r"cgroup    /system.slice/\u{200b}agent.service",
        r"812 ba\u{2066}sh (/usr/bin/\u{202e}bash)",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing:\n{shown}");
    }
    assert_env_shown(&shown);

    let agents = belay_ok(&url, &["agents"]).await;
    assert_no_raw("agents", &agents);
    assert!(agents.contains(r"1.2\u{202e}3"), "{agents}");
    assert!(agents.contains(r"build\u{202e}7"), "{agents}");

    let decided = belay_ok(
        &url,
        &["--reviewer", "bob\u{202e}", "deny", REQ, "--reason", REASON],
    )
    .await;
    assert_no_raw("deny", &decided);
    let shown = belay_ok(&url, &["show", REQ]).await;
    assert_no_raw("show decided", &shown);
    assert!(
        shown.contains(r"by bob\u{202e} (fine\nrequest   forged)"),
        "{shown}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("request   forged")),
        "{shown}"
    );

    let log = belay_ok(&url, &["audit", "log"]).await;
    assert_no_raw("audit log", &log);
    assert!(log.contains(REQ), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_json_keeps_the_real_values_and_nothing_raw() {
    let (url, _agent) = server_with_request().await;
    for args in [
        &["show", REQ, "--output", "json"][..],
        &["pending", "--output", "json"],
        &["agents", "--output", "json"],
        &["audit", "log", "--output", "json"],
    ] {
        let out = belay_ok(&url, args).await;
        assert_no_raw(&format!("{args:?}"), &out);
        let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let request = match args[0] {
            "show" => &json,
            "pending" => &json["requests"][0],
            "agents" => {
                let hosts = json["agents"].as_array().unwrap();
                assert!(hosts.iter().any(|a| a["host"] == HOST), "{out}");
                continue;
            }
            _ => &json["records"][0]["body"],
        };
        let action = &request["action"];
        assert_eq!(action["path"], PATH, "{args:?}: {out}");
        assert_eq!(action["argv"][2], ARG, "{args:?}");
        if args[0] != "audit" {
            assert_eq!(action["env"][1], PRELOAD, "{args:?}");
            assert_eq!(request["context"]["cwd"], CWD, "{args:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_escapes_live_lines_and_keeps_json_lines_valid() {
    let (url, agent) = server_with_request().await;
    for output in ["table", "json"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_belay"))
            .args(["--server", &url, "watch", "--output", output])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std_mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(PATIENCE).expect("watch printed nothing");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_no_raw(&format!("watch {output}"), &first);
        if output == "json" {
            let json: Value = serde_json::from_str(&first).unwrap();
            assert_eq!(json["request"]["action"]["path"], PATH);
        } else {
            assert!(first.contains(PATH_SHOWN), "{first}");
            assert!(first.contains(ARG_SHOWN), "{first}");
        }
    }
    drop(agent);
}

/// A request full of hostile values, NUL included, as an older or compromised agent
/// could send it.
fn hostile_view() -> RequestView {
    RequestView {
        id: 7,
        tgid: 4242,
        pid: 4243,
        ppid: Some(812),
        uid: 1000,
        comm: "cu\x1b[2Jrl\0".into(),
        cwd: Some(CWD.into()),
        action: ActionView::Exec {
            path: PATH.into(),
            file: Some("/usr/bin/\u{202e}evil\r".into()),
            argv: Some(vec!["sh".into(), "-c".into(), ARG.into(), FLIPPED.into()]),
            env: Some(env()),
        },
        created_unix_ms: 0,
        deadline_unix_ms: u64::MAX / 2,
        default_verdict: Verdict::Deny,
        subject: Some(AGENT.into()),
        owner: Some("alice\x1b[8m".into()),
        rule: Some(RULE.into()),
        context: ProcessContext {
            host: HOST.into(),
            ppid: Some(812),
            ancestry: vec![Ancestor {
                pid: 812,
                comm: COMM.into(),
                exe: Some("/usr/bin/ba\x07sh".into()),
            }],
            user: Some("dev\r".into()),
            cgroup: Some("/x/\u{9b}2J".into()),
            container_id: None,
            pod_uid: None,
            cwd: Some(CWD.into()),
        },
        server_id: None,
        intent: None,
    }
}

/// A stand-in for belay-agent's socket: answers `pending` and `show` with `view`.
fn fake_agent(socket: &Path, view: RequestView) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let answer = match serde_json::from_str::<ApiRequest>(&line).unwrap() {
                ApiRequest::Pending => ApiResponse::Requests {
                    requests: vec![view.clone()],
                },
                ApiRequest::Show { .. } => ApiResponse::Request {
                    request: view.clone(),
                },
                _ => ApiResponse::Error {
                    message: "no such \x1b[2Jthing".into(),
                },
            };
            let mut out = serde_json::to_vec(&answer).unwrap();
            out.push(b'\n');
            stream.write_all(&out).unwrap();
        }
    });
}

fn belay_local(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_belay"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("BELAY_SERVER")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn local_views_escape_every_field_and_list_the_program_environment() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    fake_agent(&socket, hostile_view());

    let (ok, pending, _) = belay_local(&socket, &["pending"]);
    assert!(ok);
    assert_no_raw("pending", &pending);
    assert!(pending.contains(r"cu\u{1b}[2Jrl\u{0}"), "{pending}");
    assert!(pending.contains(ARG_SHOWN), "{pending}");

    let (ok, shown, _) = belay_local(&socket, &["show", "7"]);
    assert!(ok);
    assert_no_raw("show", &shown);
    for needle in [
        r"exec /usr/bin/\u{202e}evil\r (as /tmp/\u{1b}[2J\u{202e}evil)",
        ARG_SHOWN,
        r#""\u{202e}txt.exe""#,
        r"agent     copilot\u{200b} (owner alice\u{1b}[8m)",
        r"rule      ask\u{feff}-all",
        r"host      build\u{202e}7",
        r"comm cu\u{1b}[2Jrl\u{0}",
        r"user      dev\r (uid 1000)",
        r"cwd       /work/\u{202e}rid",
        r"812 ba\u{2066}sh (/usr/bin/ba\u{7}sh)",
        r"cgroup    /x/\u{9b}2J",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing:\n{shown}");
    }
    assert_env_shown(&shown);

    let (ok, json, _) = belay_local(&socket, &["show", "7", "--output", "json"]);
    assert!(ok);
    assert_no_raw("show json", &json);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["request"]["comm"], "cu\x1b[2Jrl\0");
    assert_eq!(json["request"]["action"]["path"], PATH);
    assert_eq!(json["request"]["action"]["env"][1], PRELOAD);

    // An error the agent sends is quoted escaped too.
    let (ok, _, stderr) = belay_local(&socket, &["status"]);
    assert!(!ok);
    assert_no_raw("error", &stderr);
    assert!(stderr.contains(r"no such \u{1b}[2Jthing"), "{stderr}");
}

/// An environment of ordinary values, as the agent masked it.
fn clean_env() -> Vec<String> {
    [
        "TERM=xterm",
        "GIT_SSH_COMMAND=ssh -i …[private-key:0c41d2e7]",
        "LANG=C.UTF-8",
        "LD_PRELOAD=/tmp/x.so",
        "AWS_SECRET_ACCESS_KEY=…[aws-secret-key:5be0a1f3]",
        "PATH=/tmp/bin:/usr/bin",
    ]
    .map(String::from)
    .to_vec()
}

/// `runs with` first: LD_PRELOAD, PATH and GIT_SSH_COMMAND (its masked value as the
/// agent masked it), then the others, the masked secret among them.
fn assert_clean_env_shown(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no line {line:?}:\n{out}"))
    };
    let first = at("runs with GIT_SSH_COMMAND=ssh -i …[private-key:0c41d2e7]");
    assert_eq!(at("          LD_PRELOAD=/tmp/x.so"), first + 1, "{out}");
    assert_eq!(at("          PATH=/tmp/bin:/usr/bin"), first + 2, "{out}");
    assert_eq!(at("env       TERM=xterm"), first + 3, "{out}");
    assert_eq!(at("          LANG=C.UTF-8"), first + 4, "{out}");
    assert_eq!(
        at("          AWS_SECRET_ACCESS_KEY=…[aws-secret-key:5be0a1f3]"),
        first + 5,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_lists_the_program_environment_first_and_masked() {
    // belay-server.
    let url = start().await;
    let (agent, inbound) = agent_session(&url, support::hello("build-7", "1.2.3")).await;
    drain(inbound);
    let mut request = support::connect_request(REQ, 4242);
    request.action = Some(v1::Action {
        kind: Some(v1::action::Kind::Exec(v1::Exec {
            path: "/usr/bin/git".into(),
            argv: vec!["git".into(), "push".into()],
            cwd: "/work".into(),
            env: clean_env(),
        })),
    });
    agent
        .send(message(v1::agent_message::Kind::Request(request)))
        .await
        .unwrap();
    wait_pending(&url, 1).await;
    assert_clean_env_shown(&belay_ok(&url, &["show", REQ]).await);

    // The agent's local socket.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut view = hostile_view();
    view.action = ActionView::Exec {
        path: "/usr/bin/git".into(),
        file: None,
        argv: Some(vec!["git".into(), "push".into()]),
        env: Some(clean_env()),
    };
    fake_agent(&socket, view);
    let (ok, shown, stderr) = belay_local(&socket, &["show", "7"]);
    assert!(ok, "{stderr}");
    assert_clean_env_shown(&shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_views_escape_the_document_reasons_and_agent_answers() {
    let url = start().await;
    let (agent, inbound) = agent_session(&url, support::hello("build-7", "1.2.3")).await;
    drain(inbound);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    // YAML allows format characters; a comment is where nobody looks twice.
    let text = format!(
        "# owner: \u{202e}moc.elpmaxe@eve\u{200b}\n{}",
        support::GOOD
    );
    std::fs::write(&file, &text).unwrap();
    let reason = "roll\u{202e}out";
    belay_ok(
        &url,
        &["policy", "push", file.to_str().unwrap(), "--reason", reason],
    )
    .await;
    agent
        .send(message(v1::agent_message::Kind::PolicyReport(
            v1::PolicyReport {
                version: 1,
                outcome: v1::PolicyOutcome::Failed as i32,
                message: "bad\u{202e} rule".into(),
            },
        )))
        .await
        .unwrap();
    let table = tokio::time::timeout(PATIENCE, async {
        loop {
            let table = belay_ok(&url, &["policy", "show"]).await;
            if table.contains("failed") {
                return table;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent's answer never showed");
    assert_no_raw("policy show", &table);
    assert!(table.contains(r"reason     roll\u{202e}out"), "{table}");
    assert!(table.contains(r"bad\u{202e} rule"), "{table}");

    let shown = belay_ok(&url, &["policy", "show", "--text"]).await;
    assert_no_raw("policy show --text", &shown);
    assert!(
        shown.starts_with("# owner: \\u{202e}moc.elpmaxe@eve\\u{200b}\n"),
        "{shown}"
    );

    let json = belay_ok(&url, &["policy", "show", "--output", "json"]).await;
    assert_no_raw("policy show json", &json);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["policy"]["reason"], reason);
    assert_eq!(json["agents"][0]["message"], "bad\u{202e} rule");
}
