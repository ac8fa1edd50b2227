//! What the daemon decides: first match, defaults, unknown argv, destinations.
use std::{net::IpAddr, path::Path, time::Duration};

use super::*;

fn policy(text: &str) -> Policy {
    Policy::parse(text, Path::new("p.yaml")).unwrap()
}

fn argv(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_owned).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const EXEC: &str = r#"
defaults: {deadline: 1m, on_timeout: deny}
subjects:
  - name: a
    owner: o
    default: {exec: deny, egress: allow}
    exec:
      - name: no-force-push
        path: /usr/bin/git
        argv: "git push *--force*"
        action: ask
        deadline: 30s
        on_timeout: allow
      - name: git
        path: /usr/bin/git
        action: allow
      - name: rm-rf
        path: "/usr/bin/*"
        argv: "rm -rf *"
        action: kill
      - name: audited
        path: "/usr/bin/*"
        argv: "curl *"
        action: audit
      - name: tools
        path: "/usr/**/bin/*"
        action: audit
  - name: b
    owner: o
    deadline: 10s
    on_timeout: kill
"#;

#[test]
fn first_matching_exec_rule_decides() {
    let p = policy(EXEC);
    let s = p.subject_by_name("a").unwrap();

    let d = s.decide_exec(
        &FilePaths::confirmed("/usr/bin/git"),
        Some(&argv("git push origin main --force")),
    );
    assert_eq!(d.action, Action::Ask);
    assert_eq!(d.rule.as_deref(), Some("no-force-push"));
    assert_eq!(d.deadline, Duration::from_secs(30));
    assert_eq!(d.on_timeout, Verdict::Allow);

    let d = s.decide_exec(
        &FilePaths::confirmed("/usr/bin/git"),
        Some(&argv("git status")),
    );
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.rule.as_deref(), Some("git"));
    // Rule without overrides: the subject's.
    assert_eq!(d.deadline, Duration::from_secs(60));
    assert_eq!(d.on_timeout, Verdict::Deny);

    let d = s.decide_exec(
        &FilePaths::confirmed("/usr/bin/rm"),
        Some(&argv("rm -rf /")),
    );
    assert_eq!((d.action, d.rule.as_deref()), (Action::Kill, Some("rm-rf")));
    // `/usr/**/bin/*` needs something between /usr/ and /bin/.
    let d = s.decide_exec(&FilePaths::confirmed("/usr/bin/rm"), Some(&argv("rm -r /")));
    assert_eq!((d.action, d.rule.as_deref()), (Action::Deny, None));
    let d = s.decide_exec(&FilePaths::confirmed("/usr/local/bin/x"), Some(&argv("x")));
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Audit, Some("tools"))
    );
    let d = s.decide_exec(&FilePaths::confirmed("/usr/a/b/bin/x"), Some(&argv("x")));
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Audit, Some("tools"))
    );

    // Nothing matches: the subject's default, no rule.
    let d = s.decide_exec(&FilePaths::confirmed("/opt/x"), Some(&argv("x")));
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.rule, None);
    assert_eq!(d.deadline, Duration::from_secs(60));
}

fn paths<'a>(trusted: &[&'a str], claimed: &[&'a str]) -> FilePaths<'a> {
    FilePaths {
        trusted: trusted.to_vec(),
        claimed: claimed.to_vec(),
    }
}

#[test]
fn any_confirmed_path_matches() {
    let p = policy(EXEC);
    let s = p.subject_by_name("a").unwrap();
    // Run through a symlink: the resolved path matches.
    let d = s.decide_exec(
        &paths(&["/home/u/g", "/usr/bin/git"], &[]),
        Some(&argv("g log")),
    );
    assert_eq!(d.rule.as_deref(), Some("git"));
    let d = s.decide_exec(
        &paths(&["/usr/bin/git", "/opt/other"], &[]),
        Some(&argv("git log")),
    );
    assert_eq!(d.rule.as_deref(), Some("git"));
    let d = s.decide_exec(&paths(&[], &[]), Some(&argv("git log")));
    assert_eq!(d.rule, None);
}

#[test]
fn a_claimed_path_restricts_but_never_grants() {
    let p = policy(EXEC);
    let s = p.subject_by_name("a").unwrap();
    // `/usr/bin/../../tmp/evil` passes `/usr/bin/*`-style globs as a string; the file
    // it names is no such thing: the allow rule `git` and the audit rule `tools` do not
    // match what is only claimed.
    let d = s.decide_exec(
        &paths(&["/tmp/evil"], &["/usr/bin/git", "/usr/local/bin/x"]),
        Some(&argv("git status")),
    );
    assert_eq!((d.action, d.rule.as_deref()), (Action::Deny, None));
    // Nothing confirmed at all (a file under a mount the process made): the default.
    let d = s.decide_exec(&paths(&[], &["/usr/bin/git"]), Some(&argv("git status")));
    assert_eq!((d.action, d.rule.as_deref()), (Action::Deny, None));
    // But a restriction matches a claim: the ask rule on force pushes and the kill rule.
    let d = s.decide_exec(
        &paths(&["/tmp/evil"], &["/usr/bin/git"]),
        Some(&argv("git push origin main --force")),
    );
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Ask, Some("no-force-push"))
    );
    let d = s.decide_exec(&paths(&[], &["/usr/bin/rm"]), Some(&argv("rm -rf /")));
    assert_eq!((d.action, d.rule.as_deref()), (Action::Kill, Some("rm-rf")));
}

#[test]
fn unknown_argv_never_grants() {
    let p = policy(EXEC);
    let s = p.subject_by_name("a").unwrap();
    // The ask rule with an argv pattern counts as matching.
    let d = s.decide_exec(&FilePaths::confirmed("/usr/bin/git"), None);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Ask, Some("no-force-push"))
    );
    // The kill rule too; the audit rule (a grant) never does.
    let d = s.decide_exec(&FilePaths::confirmed("/usr/bin/curl"), None);
    assert_eq!((d.action, d.rule.as_deref()), (Action::Kill, Some("rm-rf")));

    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: deny\n    exec:\n      - {path: /bin/x, argv: \"x safe\", action: allow}\n      - {path: /bin/x, argv: \"x *\", action: audit}\n      - {path: /bin/y, argv: \"y *\", action: deny}\n",
    );
    let s = &p.subjects[0];
    let d = s.decide_exec(&FilePaths::confirmed("/bin/x"), None);
    assert_eq!((d.action, d.rule), (Action::Deny, None));
    let d = s.decide_exec(&FilePaths::confirmed("/bin/x"), Some(&argv("x safe")));
    assert_eq!(d.action, Action::Allow);
    let d = s.decide_exec(&FilePaths::confirmed("/bin/y"), None);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("exec[2]"))
    );
}

#[test]
fn defaults_are_per_subject() {
    let p = policy(EXEC);
    let b = p.subject_by_name("b").unwrap();
    let d = b.decide_exec(
        &FilePaths::confirmed("/usr/bin/git"),
        Some(&argv("git status")),
    );
    assert_eq!(d.action, Action::Ask);
    assert_eq!(d.rule, None);
    assert_eq!(d.deadline, Duration::from_secs(10));
    assert_eq!(d.on_timeout, Verdict::Kill);
    let d = b.decide_egress(ip("1.1.1.1"), 443, Some(Proto::Tcp), &[]);
    assert_eq!(d.action, Action::Ask);

    let a = p.subject_by_name("a").unwrap();
    let d = a.decide_egress(ip("1.1.1.1"), 443, Some(Proto::Tcp), &[]);
    assert_eq!((d.action, d.rule), (Action::Allow, None));
}

const EGRESS: &str = r#"
subjects:
  - name: a
    owner: o
    default: deny
    egress:
      - name: dns
        to: [127.0.0.53]
        ports: [53]
        protocol: udp
        action: allow
      - name: llm
        to: ["*.anthropic.com", api.openai.com]
        ports: [443]
        action: allow
      - name: blocked-net
        to: [10.1.0.0/16]
        action: kill
      - name: internal
        to: [10.0.0.0/8, "2001:db8::/32"]
        ports: [80, "8000-8100"]
        protocol: tcp
        action: ask
        deadline: 45s
      - name: any-https
        ports: [443]
        action: audit
"#;

#[test]
fn egress_first_match() {
    let p = policy(EGRESS);
    let s = &p.subjects[0];
    let tcp = Some(Proto::Tcp);
    let udp = Some(Proto::Udp);

    let d = s.decide_egress(ip("127.0.0.53"), 53, udp, &[]);
    assert_eq!(d.rule.as_deref(), Some("dns"));
    // Protocol and port must both match.
    let d = s.decide_egress(ip("127.0.0.53"), 53, tcp, &[]);
    assert_eq!((d.action, d.rule), (Action::Deny, None));
    let d = s.decide_egress(ip("127.0.0.53"), 54, udp, &[]);
    assert_eq!(d.rule, None);
    // An unknown socket type matches only rules without a protocol.
    let d = s.decide_egress(ip("127.0.0.53"), 53, None, &[]);
    assert_eq!(d.rule, None);

    let d = s.decide_egress(ip("10.1.2.3"), 80, tcp, &[]);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Kill, Some("blocked-net"))
    );
    let d = s.decide_egress(ip("10.2.2.3"), 80, tcp, &[]);
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Ask, Some("internal"))
    );
    assert_eq!(d.deadline, Duration::from_secs(45));
    let d = s.decide_egress(ip("10.2.2.3"), 80, udp, &[]);
    assert_eq!(d.rule, None);
    let d = s.decide_egress(ip("2001:db8::7"), 8100, tcp, &[]);
    assert_eq!(d.rule.as_deref(), Some("internal"));
    let d = s.decide_egress(ip("2001:db8::7"), 8101, tcp, &[]);
    assert_eq!(d.rule, None);
    let d = s.decide_egress(ip("2001:db8::7"), 7999, tcp, &[]);
    assert_eq!(d.rule, None);
    let d = s.decide_egress(ip("10.2.2.3"), 443, tcp, &[]);
    assert_eq!(d.rule.as_deref(), Some("any-https"));
}

#[test]
fn ipv4_mapped_ipv6_is_ipv4() {
    let p = policy(EGRESS);
    let s = &p.subjects[0];
    let d = s.decide_egress(ip("::ffff:10.1.9.9"), 1, None, &[]);
    assert_eq!(d.rule.as_deref(), Some("blocked-net"));
    let d = s.decide_egress(ip("::ffff:127.0.0.53"), 53, Some(Proto::Udp), &[]);
    assert_eq!(d.rule.as_deref(), Some("dns"));
    let d = s.decide_egress(ip("::ffff:10.2.0.1"), 8050, Some(Proto::Tcp), &[]);
    assert_eq!(d.rule.as_deref(), Some("internal"));
}

#[test]
fn hostnames_from_dns() {
    let p = policy(EGRESS);
    let s = &p.subjects[0];
    let tcp = Some(Proto::Tcp);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let d = s.decide_egress(ip("1.2.3.4"), 443, tcp, &names(&["api.anthropic.com"]));
    assert_eq!((d.action, d.rule.as_deref()), (Action::Allow, Some("llm")));
    let d = s.decide_egress(ip("1.2.3.4"), 443, tcp, &names(&["x.y.Anthropic.COM."]));
    assert_eq!(d.rule.as_deref(), Some("llm"));
    let d = s.decide_egress(ip("1.2.3.4"), 443, tcp, &names(&["API.OPENAI.COM"]));
    assert_eq!(d.rule.as_deref(), Some("llm"));
    // Any of the names the address was looked up as.
    let d = s.decide_egress(
        ip("1.2.3.4"),
        443,
        tcp,
        &names(&["cdn.example", "api.openai.com"]),
    );
    assert_eq!(d.rule.as_deref(), Some("llm"));
    // Not the bare domain, not a look-alike, not another port.
    let d = s.decide_egress(ip("1.2.3.4"), 443, tcp, &names(&["anthropic.com"]));
    assert_eq!(d.rule.as_deref(), Some("any-https"));
    let d = s.decide_egress(ip("1.2.3.4"), 443, tcp, &names(&["evilanthropic.com"]));
    assert_eq!(d.rule.as_deref(), Some("any-https"));
    let d = s.decide_egress(ip("1.2.3.4"), 80, tcp, &names(&["api.anthropic.com"]));
    assert_eq!(d.rule, None);
    // No names known: hostname rules do not match.
    let d = s.decide_egress(ip("1.2.3.4"), 443, tcp, &[]);
    assert_eq!(d.rule.as_deref(), Some("any-https"));
}

#[test]
fn mixed_destinations_in_one_rule() {
    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: deny\n    egress:\n      - {to: [\"*.corp.example\", 192.168.0.0/16], action: allow}\n",
    );
    let s = &p.subjects[0];
    let d = s.decide_egress(ip("192.168.4.4"), 22, None, &[]);
    assert_eq!(d.action, Action::Allow);
    let d = s.decide_egress(ip("8.8.8.8"), 22, None, &["git.corp.example".into()]);
    assert_eq!(d.action, Action::Allow);
    let d = s.decide_egress(ip("8.8.8.8"), 22, None, &["corp.example".into()]);
    assert_eq!(d.action, Action::Deny);
}

#[test]
fn decisions_serialize() {
    let p = policy(EGRESS);
    let d = p.subjects[0].decide_egress(ip("10.9.9.9"), 80, Some(Proto::Tcp), &[]);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["action"], "ask");
    assert_eq!(v["rule"], "internal");
    assert_eq!(v["on_timeout"], "deny");
    assert_eq!(Action::Audit.to_string(), "audit");
    assert_eq!(Action::Allow.kernel_code(), rule_action::ALLOW);
    assert_eq!(Action::Deny.kernel_code(), rule_action::DENY);
    assert_eq!(Action::Ask.kernel_code(), rule_action::ASK);
    assert_eq!(Action::Kill.kernel_code(), rule_action::KILL);
    assert_eq!(Action::Audit.kernel_code(), rule_action::AUDIT);
}

const UNIX: &str = r#"
defaults: {deadline: 1m, on_timeout: deny}
subjects:
  - name: a
    owner: o
    default: {exec: ask, egress: ask}
    egress:
      - name: any-ip
        action: allow
      - name: no-docker
        to: ["unix:/var/run/docker.sock", "unix:/run/docker.sock"]
        action: deny
      - name: bus
        to: ["unix:/run/user/*/bus", 10.0.0.0/8]
        action: ask
        deadline: 20s
        on_timeout: allow
      - name: journal
        to: ["unix:/run/systemd/journal/*"]
        action: audit
      - name: x11
        to: ["unix:@/tmp/.X11-unix/*"]
        action: allow
      - name: run
        to: ["unix:/run/**"]
        action: kill
  - name: b
    owner: o
    default: {egress: deny}
    deadline: 10s
    on_timeout: kill
"#;

#[test]
fn unix_sockets_first_match_and_default() {
    let p = policy(UNIX);
    let s = &p.subjects[0];
    let decide = |path: &str| {
        let d = s.decide_unix(path);
        (d.action, d.rule)
    };
    assert_eq!(
        decide("/var/run/docker.sock"),
        (Action::Deny, Some("no-docker".into()))
    );
    assert_eq!(
        decide("/run/docker.sock"),
        (Action::Deny, Some("no-docker".into()))
    );
    let d = s.decide_unix("/run/user/1000/bus");
    assert_eq!((d.action, d.rule.as_deref()), (Action::Ask, Some("bus")));
    assert_eq!(d.deadline, Duration::from_secs(20));
    assert_eq!(d.on_timeout, Verdict::Allow);
    // `*` does not cross '/': a deeper path is not the bus, but `/run/**` takes it.
    assert_eq!(
        decide("/run/user/1000/x/bus"),
        (Action::Kill, Some("run".into()))
    );
    assert_eq!(
        decide("/run/systemd/journal/socket"),
        (Action::Audit, Some("journal".into()))
    );
    assert_eq!(
        decide("/run/systemd/journal/dev-log"),
        (Action::Audit, Some("journal".into()))
    );
    // Abstract names: `@`, then the name with NULs shown as `@`.
    assert_eq!(
        decide("@/tmp/.X11-unix/X0"),
        (Action::Allow, Some("x11".into()))
    );
    assert_eq!(decide("/tmp/.X11-unix/X0"), (Action::Ask, None));
    // No rule names it: the egress default, with the subject's timeouts; the rule
    // without `to` ("any-ip") is about IP destinations only.
    let d = s.decide_unix("/tmp/some.sock");
    assert_eq!((d.action, d.rule), (Action::Ask, None));
    assert_eq!(d.deadline, Duration::from_secs(60));
    assert_eq!(d.on_timeout, Verdict::Deny);

    let b = &p.subjects[1];
    let d = b.decide_unix("/var/run/docker.sock");
    assert_eq!((d.action, d.rule), (Action::Deny, None));
    assert_eq!(
        (d.deadline, d.on_timeout),
        (Duration::from_secs(10), Verdict::Kill)
    );
}

#[test]
fn unix_rules_never_match_ip_destinations() {
    let p = policy(
        r#"subjects:
  - name: a
    owner: o
    default: deny
    egress:
      - {name: docker, to: ["unix:/var/run/docker.sock"], action: allow}
      - {name: any-sock, to: ["unix:/**", "unix:@**"], action: kill}
      - {name: mixed, to: ["unix:/x.sock", 10.0.0.0/8, "*.corp.example"], action: audit}
"#,
    );
    let s = &p.subjects[0];
    for (addr, names) in [
        ("1.2.3.4", vec![]),
        ("::1", vec![]),
        ("8.8.8.8", vec!["unix".to_string()]),
    ] {
        for proto in [None, Some(Proto::Tcp), Some(Proto::Udp)] {
            let d = s.decide_egress(ip(addr), 443, proto, &names);
            assert_eq!((d.action, d.rule), (Action::Deny, None), "{addr}");
        }
    }
    // The IP part of a mixed rule still applies.
    let d = s.decide_egress(ip("10.1.1.1"), 80, None, &[]);
    assert_eq!(d.rule.as_deref(), Some("mixed"));
    let d = s.decide_egress(ip("1.1.1.1"), 80, None, &["git.corp.example".into()]);
    assert_eq!(d.rule.as_deref(), Some("mixed"));
    // And its unix part, behind the earlier catch-all for sockets.
    assert_eq!(
        s.decide_unix("/var/run/docker.sock").rule.as_deref(),
        Some("docker")
    );
    assert_eq!(s.decide_unix("/x.sock").rule.as_deref(), Some("any-sock"));
    assert_eq!(s.decide_unix("@abstract@name").action, Action::Kill);
}

#[test]
fn rules_without_to_never_match_unix_sockets() {
    let p = policy(UNIX);
    let s = &p.subjects[0];
    // The first rule, without `to`, takes every IP destination...
    for addr in ["10.1.2.3", "127.0.0.1", "2001:db8::1"] {
        let d = s.decide_egress(ip(addr), 80, Some(Proto::Tcp), &[]);
        assert_eq!(d.rule.as_deref(), Some("any-ip"));
    }
    // ...and no Unix socket.
    for path in ["/tmp/a.sock", "@x", "/"] {
        let d = s.decide_unix(path);
        assert_eq!((d.action, d.rule), (Action::Ask, None), "{path}");
    }
    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: {egress: deny}\n    egress:\n      - {action: allow}\n      - {ports: [443], action: allow}\n      - {protocol: tcp, action: allow}\n",
    );
    let d = p.subjects[0].decide_unix("/var/run/docker.sock");
    assert_eq!((d.action, d.rule), (Action::Deny, None));
}
