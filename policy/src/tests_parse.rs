//! Reading policy files: what is accepted, and where each error is reported.
use std::{path::Path, time::Duration};

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("policy.yaml"))
}

/// The error message of an invalid policy.
fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// A policy with one subject whose body is `body` (indented by 4), so that the
/// subject's own keys start on line 5.
fn one(body: &str) -> String {
    let mut s = String::from("version: 1\nsubjects:\n  - name: a\n    owner: o\n");
    for line in body.lines() {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[test]
fn full_example_is_read() {
    let text = r#"version: 1
fail_mode: allow
defaults:
  deadline: 5m
  on_timeout: kill
subjects:
  - name: coding-agent
    owner: alice@example.com
    match:
      cgroups: [/system.slice/coding-agent.service/]
      executables: [/usr/local/bin/agent]
      uids: [1001, root]
      enrolled: true
    default: {exec: allow, egress: deny}
    deadline: 2m
    exec:
      - name: git
        path: /usr/bin/git
        action: allow
      - path: /usr/bin/*
        argv: "rm -rf *"
        action: deny
        deadline: 30s
        on_timeout: allow
    egress:
      - name: llm-api
        to: [api.openai.com, "*.anthropic.com", 10.0.0.0/8, "2001:db8::/32", 127.0.0.1]
        ports: [443, "8000-8100"]
        protocol: tcp
        action: allow
      - action: ask
  - name: other
    owner: bob
"#;
    let p = parse(text).unwrap();
    assert_eq!(p.source, Path::new("policy.yaml"));
    assert_eq!(p.fail_mode, Some(FailMode::Allow));
    assert_eq!(p.subjects.len(), 2);
    let s = &p.subjects[0];
    assert_eq!(s.name, "coding-agent");
    assert_eq!(s.owner, "alice@example.com");
    assert_eq!(s.id, agent_common::subject_id(b"coding-agent"));
    assert_eq!(s.line, 7);
    assert_eq!(
        s.cgroups,
        vec!["/system.slice/coding-agent.service".to_string()]
    );
    assert_eq!(s.executables, vec![PathBuf::from("/usr/local/bin/agent")]);
    assert_eq!(s.uids, vec![1001, 0]);
    assert!(s.enrolled);
    assert_eq!(s.exec_default, Action::Allow);
    assert_eq!(s.egress_default, Action::Deny);
    assert_eq!(s.deadline, Duration::from_secs(120));
    assert_eq!(s.on_timeout, Verdict::Kill);

    assert_eq!(s.exec.len(), 2);
    assert_eq!(s.exec[0].name, "git");
    assert_eq!(s.exec[0].line, 17);
    assert!(s.exec[0].path.is_literal());
    assert_eq!(s.exec[0].action, Action::Allow);
    assert_eq!(s.exec[1].name, "exec[1]");
    assert_eq!(s.exec[1].line, 20);
    assert_eq!(s.exec[1].path.as_str(), "/usr/bin/*");
    assert_eq!(s.exec[1].argv.as_ref().unwrap().as_str(), "rm -rf *");
    assert_eq!(s.exec[1].deadline, Some(Duration::from_secs(30)));
    assert_eq!(s.exec[1].on_timeout, Some(Verdict::Allow));
    assert_eq!(s.exec[0].deadline, None);

    let e = &s.egress[0];
    assert_eq!(e.name, "llm-api");
    assert_eq!(e.to.len(), 5);
    assert!(matches!(&e.to[0], Destination::Host(h) if h.as_str() == "api.openai.com"));
    assert!(matches!(&e.to[2], Destination::Net(c) if c.prefix == 8));
    assert!(matches!(&e.to[4], Destination::Net(c) if c.prefix == 32));
    assert_eq!(e.ports, vec![443..=443, 8000..=8100]);
    assert_eq!(e.protocol, Some(Proto::Tcp));
    assert_eq!(s.egress[1].name, "egress[1]");
    assert!(s.egress[1].to.is_empty() && s.egress[1].ports.is_empty());
    assert_eq!(s.egress[1].protocol, None);

    // Defaults apply where the subject sets nothing.
    let o = &p.subjects[1];
    assert_eq!(o.deadline, Duration::from_secs(300));
    assert_eq!(o.on_timeout, Verdict::Kill);
    assert_eq!(o.exec_default, Action::Ask);
    assert_eq!(o.egress_default, Action::Ask);
    assert!(!o.enrolled);

    assert_eq!(p.subject(s.id).unwrap().name, "coding-agent");
    assert_eq!(p.subject_by_name("other").unwrap().owner, "bob");
    assert!(p.subject(12345).is_none());
    assert_eq!(p.default_enroll_subject().unwrap().name, "coding-agent");
}

#[test]
fn built_in_defaults_and_optional_keys() {
    let p = parse("subjects:\n  - name: a\n    owner: o\n    default: deny\n").unwrap();
    assert_eq!(p.fail_mode, None);
    let s = &p.subjects[0];
    assert_eq!(s.deadline, DEFAULT_DEADLINE);
    assert_eq!(s.on_timeout, DEFAULT_ON_TIMEOUT);
    assert_eq!(s.exec_default, Action::Deny);
    assert_eq!(s.egress_default, Action::Deny);
    assert!(s.exec.is_empty() && s.egress.is_empty());

    let p = parse(&one("default: {egress: allow}\ndeadline: 90\n")).unwrap();
    assert_eq!(p.subjects[0].exec_default, Action::Ask);
    assert_eq!(p.subjects[0].egress_default, Action::Allow);
    assert_eq!(p.subjects[0].deadline, Duration::from_secs(90));

    assert!(parse("subjects: []\n").unwrap().subjects.is_empty());

    // A collection key with nothing under it is as if it were left out.
    let p = parse(&one("match:\nexec:\negress:\n")).unwrap();
    assert!(p.subjects[0].exec.is_empty() && p.subjects[0].egress.is_empty());
    let p = parse("defaults:\nsubjects:\n  - {name: a, owner: o, match: {uids:, cgroups: }}\n")
        .unwrap();
    assert!(p.subjects[0].uids.is_empty());
    // But a scalar key with nothing under it is an error.
    assert_eq!(
        err(&one("deadline:\n")),
        "policy.yaml:5:13: subjects[0].deadline: expected a duration (e.g. 90s, 5m, 1h), found null"
    );
}

#[test]
fn example_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy/example.yaml");
    let p = Policy::load(&path).unwrap();
    assert_eq!(p.fail_mode, Some(FailMode::Deny));
    let s = p.subject_by_name("coding-agent").unwrap();
    assert!(s.enrolled);
    assert_eq!(s.deadline, Duration::from_secs(120));
    assert_eq!(s.exec[0].name, "git");
    assert!(!s.egress.is_empty());
    let n = p.subject_by_name("nightly-pipeline").unwrap();
    assert_eq!(n.exec_default, Action::Deny);
    assert_eq!(n.deadline, Duration::from_secs(300));
    assert_eq!(p.default_enroll_subject().unwrap().name, "coding-agent");

    // And it decides as its comments say.
    let d = s.decide_exec(
        &FilePaths::confirmed("/usr/bin/git"),
        Some(&["git".into(), "status".into()]),
    );
    assert_eq!((d.action, d.rule.as_deref()), (Action::Allow, Some("git")));
    let argv: Vec<String> = ["rm", "-rf", "/home"].map(String::from).to_vec();
    let d = s.decide_exec(&FilePaths::confirmed("/usr/bin/rm"), Some(&argv));
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("no-rm-rf"))
    );
    // Unknown argv: the deny rule with an argv pattern counts as matching.
    let d = s.decide_exec(&FilePaths::confirmed("/usr/bin/apt-get"), None);
    assert_eq!(d.action, Action::Deny);
    let install: Vec<String> = ["apt-get", "install", "x"].map(String::from).to_vec();
    let d = s.decide_exec(&FilePaths::confirmed("/usr/bin/apt-get"), Some(&install));
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Ask, Some("package-installs"))
    );
    assert_eq!(d.deadline, Duration::from_secs(30));
    let d = s.decide_egress(
        "1.2.3.4".parse().unwrap(),
        443,
        Some(Proto::Tcp),
        &["API.anthropic.com.".into()],
    );
    assert_eq!(d.rule.as_deref(), Some("llm-api"));
    let d = s.decide_unix("/run/systemd/journal/socket");
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Audit, Some("local-sockets"))
    );
    let d = s.decide_unix("/var/run/docker.sock");
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("no-docker"))
    );
    let d = s.decide_unix("/tmp/other.sock");
    assert_eq!((d.action, d.rule), (Action::Ask, None));
    // The unix: rules do not change what happens to addresses.
    let d = s.decide_egress("10.1.2.3".parse().unwrap(), 443, Some(Proto::Tcp), &[]);
    assert_eq!(d.rule.as_deref(), Some("internal"));
    let d = s.decide_egress("8.8.8.8".parse().unwrap(), 80, Some(Proto::Tcp), &[]);
    assert_eq!((d.action, d.rule), (Action::Ask, None));
}

#[test]
fn standalone_default_policy() {
    let p = Policy::standalone_default(Duration::from_secs(42), Verdict::Allow);
    assert_eq!(p.subjects.len(), 1);
    let s = &p.subjects[0];
    assert_eq!(s.name, "enrolled");
    assert_eq!(s.owner, "unknown");
    assert_eq!(s.id, agent_common::subject_id(b"enrolled"));
    assert!(s.enrolled);
    assert_eq!(p.default_enroll_subject().unwrap().id, s.id);
    let d = s.decide_exec(&FilePaths::confirmed("/bin/true"), None);
    assert_eq!(d.action, Action::Ask);
    assert_eq!(d.rule, None);
    assert_eq!(d.deadline, Duration::from_secs(42));
    assert_eq!(d.on_timeout, Verdict::Allow);
    let d = s.decide_egress("::1".parse().unwrap(), 1, None, &[]);
    assert_eq!(d.action, Action::Ask);
}

#[test]
fn default_enroll_subject_needs_exactly_one() {
    let none = parse("subjects:\n  - {name: a, owner: o}\n").unwrap();
    assert!(none.default_enroll_subject().is_none());
    let two = parse(
        "subjects:\n  - {name: a, owner: o, match: {enrolled: true}}\n  - {name: b, owner: o, match: {enrolled: true}}\n",
    )
    .unwrap();
    assert!(two.default_enroll_subject().is_none());
}

#[test]
fn unknown_action_names_line_and_column() {
    let text =
        one("exec:\n  - path: /bin/ls\n    action: allow\n  - path: /bin/cat\n    action: alow\n");
    assert_eq!(
        err(&text),
        "policy.yaml:9:17: subjects[0].exec[1].action: unknown action \"alow\" (expected allow, deny, ask, kill or audit)"
    );
}

#[test]
fn unknown_keys_are_errors() {
    assert_eq!(
        err("version: 1\nsubject: []\n"),
        "policy.yaml:2:1: unknown key \"subject\" (expected version, fail_mode, defaults, subjects or mask)"
    );
    assert_eq!(
        err(&one("exec:\n  - path: /bin/ls\n    acton: allow\n")),
        "policy.yaml:7:9: subjects[0].exec[0]: unknown key \"acton\" (expected name, path, argv, action, deadline or on_timeout)"
    );
    assert!(err(&one("match: {cgroup: [/a]}\n")).starts_with(
        "policy.yaml:5:13: subjects[0].match: unknown key \"cgroup\" (expected cgroups, executables, uids or enrolled)"
    ));
    assert!(
        err("defaults: {timeout: 5m}\nsubjects: []\n")
            .starts_with("policy.yaml:1:12: defaults: unknown key \"timeout\"")
    );
    assert!(
        err(&one("egress:\n  - {action: allow, port: [1]}\n"))
            .starts_with("policy.yaml:6:25: subjects[0].egress[0]: unknown key \"port\"")
    );
}

#[test]
fn missing_required_keys_point_at_the_mapping() {
    assert_eq!(
        err("version: 1\nsubjects:\n  - name: a\n"),
        "policy.yaml:3:5: subjects[0]: missing required key \"owner\""
    );
    assert_eq!(
        err("version: 1\nsubjects:\n  - owner: a\n"),
        "policy.yaml:3:5: subjects[0]: missing required key \"name\""
    );
    assert_eq!(
        err(&one("exec:\n  - name: x\n    action: allow\n")),
        "policy.yaml:6:9: subjects[0].exec[0]: missing required key \"path\""
    );
    assert_eq!(
        err(&one("egress:\n  - name: x\n")),
        "policy.yaml:6:9: subjects[0].egress[0]: missing required key \"action\""
    );
    assert_eq!(
        err("version: 1\nfail_mode: deny\n"),
        "policy.yaml:1:1: missing required key \"subjects\""
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        err("subjects: {a: 1}\n"),
        "policy.yaml:1:11: subjects: expected a list, found a mapping"
    );
    assert_eq!(
        err("- a\n"),
        "policy.yaml:1:1: expected a mapping, found a sequence"
    );
    assert_eq!(
        err(&one("match: {enrolled: yes}\n")),
        "policy.yaml:5:23: subjects[0].match.enrolled: expected true or false, found \"yes\""
    );
    assert_eq!(
        err(&one("match: {enrolled: \"true\"}\n")),
        "policy.yaml:5:23: subjects[0].match.enrolled: expected true or false, found the string \"true\""
    );
    assert_eq!(
        err("subjects:\n  - name: [a]\n    owner: o\n"),
        "policy.yaml:2:11: subjects[0].name: expected a string, found a sequence"
    );
    assert_eq!(
        err("subjects:\n  - name: a\n    owner:\n"),
        "policy.yaml:3:10: subjects[0].owner: expected a string, found null"
    );
    assert_eq!(
        err(&one("exec: /bin/ls\n")),
        "policy.yaml:5:11: subjects[0].exec: expected a list, found a scalar"
    );
    assert_eq!(
        err(&one("default: [ask]\n")),
        "policy.yaml:5:14: subjects[0].default: expected an action or a mapping {exec: ACTION, egress: ACTION}, found a sequence"
    );
    assert_eq!(
        err("version: 2\nsubjects: []\n"),
        "policy.yaml:1:10: version: unsupported version \"2\" (this belay reads version 1)"
    );
    assert_eq!(
        err("fail_mode: open\nsubjects: []\n"),
        "policy.yaml:1:12: fail_mode: unknown fail mode \"open\" (expected deny or allow)"
    );
    assert_eq!(
        err(&one("exec:\n  - {path: /a, action: [allow]}\n")),
        "policy.yaml:6:28: subjects[0].exec[0].action: expected an action (allow, deny, ask, kill or audit), found a sequence"
    );
    assert_eq!(
        err(&one("on_timeout: ask\n")),
        "policy.yaml:5:17: subjects[0].on_timeout: unknown verdict \"ask\" (expected allow, deny or kill)"
    );
    assert_eq!(
        err(&one("egress:\n  - {protocol: icmp, action: deny}\n")),
        "policy.yaml:6:20: subjects[0].egress[0].protocol: unknown protocol \"icmp\" (expected tcp or udp)"
    );
}

#[test]
fn names() {
    assert_eq!(
        err("subjects:\n  - name: \"\"\n    owner: o\n"),
        "policy.yaml:2:11: subjects[0].name: must not be empty"
    );
    assert_eq!(
        err("subjects:\n  - name: a b\n    owner: o\n"),
        "policy.yaml:2:11: subjects[0].name: \"a b\" contains ' ' (letters, digits, '.', '_' and '-' only)"
    );
    let long = "x".repeat(65);
    assert!(
        err(&format!("subjects:\n  - name: {long}\n    owner: o\n"))
            .contains("is longer than 64 characters")
    );
    assert!(
        parse(&format!(
            "subjects:\n  - name: {}\n    owner: o\n",
            "x".repeat(64)
        ))
        .is_ok()
    );
    assert_eq!(
        err("subjects:\n  - name: a\n    owner: \"  \"\n"),
        "policy.yaml:3:12: subjects[0].owner: must not be empty"
    );
    assert_eq!(
        err(
            "subjects:\n  - {name: a, owner: o}\n  - {name: b, owner: o}\n  - {name: a, owner: o}\n"
        ),
        "policy.yaml:4:12: subjects[2].name: duplicate subject name \"a\" (first at line 2)"
    );
    assert_eq!(
        err(&one(
            "exec:\n  - {name: x, path: /a, action: allow}\n  - {name: x, path: /b, action: allow}\n"
        )),
        "policy.yaml:7:16: subjects[0].exec[1]: duplicate rule name \"x\" (first at line 6)"
    );
    // A given name may not take a generated one's place either.
    assert!(
        err(&one(
            "egress:\n  - {action: allow}\n  - {name: \"egress[0]\", action: deny}\n"
        ))
        .contains("duplicate rule name \"egress[0]\"")
    );
    assert!(
        err(&one("exec:\n  - {name: \"\", path: /a, action: allow}\n"))
            .ends_with("subjects[0].exec[0].name: must not be empty")
    );
}

/// Two names whose FNV-1a ids collide (the birthday bound says after about 80k names).
fn colliding_names() -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for n in 0u32..10_000_000 {
        let name = format!("s{n}");
        if let Some(prev) = seen.insert(agent_common::subject_id(name.as_bytes()), name.clone()) {
            return (prev, name);
        }
    }
    panic!("no collision found");
}

#[test]
fn subject_id_collisions_are_refused() {
    let (a, b) = colliding_names();
    assert_ne!(a, b);
    let text = format!("subjects:\n  - {{name: {a}, owner: o}}\n  - {{name: {b}, owner: o}}\n");
    let e = err(&text);
    assert!(
        e.starts_with(&format!(
            "policy.yaml:3:12: subjects[1].name: subject name \"{b}\" has the same id"
        )),
        "{e}"
    );
    assert!(e.contains(&format!("as subject \"{a}\"")), "{e}");
}

#[test]
fn addresses_and_ports() {
    assert_eq!(
        err(&one("egress:\n  - to: [10.0.0.1/8]\n    action: allow\n")),
        "policy.yaml:6:14: subjects[0].egress[0].to[0]: 10.0.0.1/8 has bits set outside the /8 prefix"
    );
    assert_eq!(
        err(&one(
            "egress:\n  - to: [1.2.3.4, 300.1.1.1]\n    action: allow\n"
        )),
        "policy.yaml:6:23: subjects[0].egress[0].to[1]: \"300.1.1.1\" is not a valid IP address or CIDR block"
    );
    assert!(
        err(&one(
            "egress:\n  - to: [\"2001:db8::/129\"]\n    action: allow\n"
        ))
        .ends_with("prefix length must be 0 to 128")
    );
    assert_eq!(
        err(&one("egress:\n  - to: [\"bad host\"]\n    action: allow\n")),
        "policy.yaml:6:14: subjects[0].egress[0].to[0]: hostname \"bad host\" contains ' ' (letters, digits, '-', '_', '.' and '*' only)"
    );
    assert!(
        err(&one("egress:\n  - to: []\n    action: allow\n"))
            .starts_with("policy.yaml:6:13: subjects[0].egress[0].to: must not be empty")
    );
    assert_eq!(
        err(&one(
            "egress:\n  - ports: [443, \"8100-8000\"]\n    action: allow\n"
        )),
        "policy.yaml:6:22: subjects[0].egress[0].ports[1]: port range \"8100-8000\" is reversed (8100 is above 8000)"
    );
    assert_eq!(
        err(&one("egress:\n  - ports: [0]\n    action: allow\n")),
        "policy.yaml:6:17: subjects[0].egress[0].ports[0]: port 0 in \"0\" is not a port (1 to 65535)"
    );
    assert!(err(&one("egress:\n  - ports: [70000]\n    action: allow\n")).contains("out of range"));
    assert!(err(&one("egress:\n  - ports: [https]\n    action: allow\n")).contains("invalid port"));
}

#[test]
fn unix_destinations() {
    let p = parse(&one(
        "egress:\n  - to: [\"unix:/run/user/*/bus\", \"unix:@/tmp/.X11-unix/*\", 10.0.0.0/8, \"*.x.com\"]\n    action: allow\n",
    ))
    .unwrap();
    let rule = &p.subjects[0].egress[0];
    assert_eq!(rule.to.len(), 4);
    assert!(
        matches!(&rule.to[0], Destination::Unix(g) if g.as_str() == "/run/user/*/bus" && g.mode() == GlobMode::Path)
    );
    assert!(matches!(&rule.to[1], Destination::Unix(g) if g.as_str() == "@/tmp/.X11-unix/*"));
    assert!(rule.has_unix() && rule.has_ip());
    // Repeated entries are kept once.
    let p = parse(&one(
        "egress:\n  - to: [\"unix:/a.sock\", \"unix:/a.sock\"]\n    action: deny\n",
    ))
    .unwrap();
    let rule = &p.subjects[0].egress[0];
    assert_eq!(rule.to.len(), 1);
    assert!(rule.has_unix() && !rule.has_ip());

    assert_eq!(
        err(&one(
            "egress:\n  - to: [\"unix:run/docker.sock\"]\n    action: deny\n"
        )),
        "policy.yaml:6:14: subjects[0].egress[0].to[0]: \"unix:run/docker.sock\": a unix: destination is a path glob starting with '/' (a socket in the filesystem) or '@' (an abstract socket), e.g. unix:/var/run/docker.sock"
    );
    assert!(
        err(&one("egress:\n  - to: [1.2.3.4, \"unix:\"]\n    action: deny\n"))
            .starts_with("policy.yaml:6:23: subjects[0].egress[0].to[1]: \"unix:\": a unix: destination is a path glob")
    );
    assert_eq!(
        err(&one(
            "egress:\n  - to: [\"unix:/run/[a\"]\n    action: deny\n"
        )),
        "policy.yaml:6:14: subjects[0].egress[0].to[0]: \"unix:/run/[a\": pattern \"/run/[a\": '[' at character 6 is never closed by ']'"
    );
    assert_eq!(
        err(&one(
            "egress:\n  - name: ok\n    action: allow\n  - name: bad\n    to: [10.0.0.0/8, \"unix:/var/run/docker.sock\"]\n    ports: [443]\n    action: deny\n"
        )),
        "policy.yaml:8:9: subjects[0].egress[1]: ports and protocol do not apply to unix: destinations (put them in a rule of their own)"
    );
    assert_eq!(
        err(&one(
            "egress:\n  - {to: [\"unix:@bus\"], protocol: tcp, action: deny}\n"
        )),
        "policy.yaml:6:9: subjects[0].egress[0]: ports and protocol do not apply to unix: destinations (put them in a rule of their own)"
    );
}

#[test]
fn globs_and_durations() {
    assert_eq!(
        err(&one("exec:\n  - path: /usr/bin/[ab\n    action: allow\n")),
        "policy.yaml:6:15: subjects[0].exec[0].path: pattern \"/usr/bin/[ab\": '[' at character 10 is never closed by ']'"
    );
    assert!(
        err(&one(
            "exec:\n  - {path: /a, argv: \"x [z-a]\", action: deny}\n"
        ))
        .starts_with(
            "policy.yaml:6:26: subjects[0].exec[0].argv: pattern \"x [z-a]\": range z-a is reversed"
        )
    );
    assert_eq!(
        err(&one("deadline: 5x\n")),
        "policy.yaml:5:15: subjects[0].deadline: invalid duration \"5x\" (expected e.g. 90s, 5m, 1h, 1h30m or a number of seconds)"
    );
    assert_eq!(
        err(&one("deadline: 0s\n")),
        "policy.yaml:5:15: subjects[0].deadline: duration \"0s\" must be more than zero"
    );
    assert_eq!(
        err("defaults:\n  deadline: 25h\nsubjects: []\n"),
        "policy.yaml:2:13: defaults.deadline: duration \"25h\" is longer than the maximum, 24h"
    );
    assert!(parse("defaults: {deadline: 24h}\nsubjects: []\n").is_ok());
    assert!(
        err(&one("exec:\n  - {path: /a, action: ask, deadline: -1}\n"))
            .contains("subjects[0].exec[0].deadline: invalid duration \"-1\"")
    );
}

#[test]
fn match_section() {
    assert_eq!(
        err(&one("match:\n  executables: [bin/agent]\n")),
        "policy.yaml:6:21: subjects[0].match.executables[0]: \"bin/agent\" is not an absolute path"
    );
    assert!(
        err(&one("match:\n  executables: [\"/opt/*/agent\"]\n"))
            .contains("globs are not supported")
    );
    assert_eq!(
        err(&one("match:\n  cgroups: [system.slice/x.service]\n")),
        "policy.yaml:6:17: subjects[0].match.cgroups[0]: cgroup path \"system.slice/x.service\" must start with '/' (it is relative to the cgroup2 root)"
    );
    assert_eq!(
        err(&one("match:\n  uids: [no-such-user-belay-test]\n")),
        "policy.yaml:6:14: subjects[0].match.uids[0]: unknown user \"no-such-user-belay-test\""
    );
    assert!(err(&one("match:\n  uids: [4294967295]\n")).contains("not a valid uid"));
    assert!(err(&one("match:\n  uids: [99999999999]\n")).contains("not a valid uid"));
    // The same entry twice in one subject is harmless.
    let p = parse(&one("match:\n  uids: [7, 7]\n  cgroups: [/a, /a/]\n")).unwrap();
    assert_eq!(p.subjects[0].uids, vec![7]);
    assert_eq!(p.subjects[0].cgroups, vec!["/a".to_string()]);
}

#[test]
fn one_process_one_subject() {
    let text = "subjects:\n  - name: a\n    owner: o\n    match: {uids: [5], cgroups: [/x], executables: [/bin/a]}\n  - name: b\n    owner: o\n    match:\n      uids: [6, 5]\n";
    assert_eq!(
        err(text),
        "policy.yaml:8:17: subjects[1].match.uids[1]: uid 5 is already claimed by subject \"a\" (line 4); a process can be one subject only"
    );
    let text = "subjects:\n  - name: a\n    owner: o\n    match: {cgroups: [/x]}\n  - name: b\n    owner: o\n    match: {cgroups: [/x/]}\n";
    assert!(err(text).starts_with(
        "policy.yaml:7:23: subjects[1].match.cgroups[0]: cgroup /x is already claimed by subject \"a\" (line 4)"
    ));
    let text = "subjects:\n  - name: a\n    owner: o\n    match: {executables: [/bin/a]}\n  - name: b\n    owner: o\n    match: {executables: [/bin/a]}\n";
    assert!(err(text).starts_with(
        "policy.yaml:7:27: subjects[1].match.executables[0]: executable /bin/a is already claimed by subject \"a\""
    ));
}

#[test]
fn yaml_errors_have_locations() {
    let e = err("subjects:\n  - name: a\n   owner: o\n");
    assert!(e.starts_with("policy.yaml:3:"), "{e}");
    assert!(e.contains("YAML syntax error"), "{e}");
    let e = err("subjects: [\n");
    assert!(e.starts_with("policy.yaml:2:"), "{e}");
    assert_eq!(
        err("subjects: []\nsubjects: []\n"),
        "policy.yaml:2:1: duplicate key \"subjects\" (first at line 1)"
    );
    assert_eq!(
        err(""),
        "policy.yaml:1:1: the policy file is empty (expected a mapping with `subjects`)"
    );
    assert!(err("subjects: !!seq []\n").contains("tags"));
    // Anchors and aliases work, and their errors point at the anchor.
    let p = parse(
        "subjects:\n  - name: a\n    owner: o\n    exec: &rules\n      - {path: /bin/ls, action: allow}\n  - name: b\n    owner: o\n    exec: *rules\n",
    )
    .unwrap();
    assert_eq!(p.subjects[1].exec[0].line, 5);
}

#[test]
fn files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = Policy::load(&missing).unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{e}"
    );

    let big = dir.path().join("big.yaml");
    let mut text = String::from("subjects: []\n");
    while text.len() <= MAX_POLICY_BYTES as usize {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap();
    let e = Policy::load(&big).unwrap_err();
    assert!(matches!(e, PolicyError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("1048576-byte limit"), "{e}");
    assert!(matches!(parse(&text), Err(PolicyError::TooLarge { .. })));

    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, b"subjects: []\n# \xff\n").unwrap();
    let e = Policy::load(&bin).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:3: the file is not valid UTF-8", bin.display())
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "subjects: [{name: a, owner: o}]\n").unwrap();
    let p = Policy::load(&good).unwrap();
    assert_eq!(p.source, good);
    assert_eq!(p.subjects[0].name, "a");
}
