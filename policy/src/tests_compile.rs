//! Compiling to the kernel's maps, and checking that the kernel never decides
//! differently from the daemon.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use agent_common::{EGRESS_RULES_PER_SUBJECT, EgressRule as KRule, ExecRuleKey, SubjectConf};

use super::{cidr::to_v6, *};

/// A filesystem and cgroup tree in memory: files (path -> ino, dev), symlinks
/// (path -> canonical target), cgroups (path -> id).
#[derive(Default)]
struct Fake {
    files: HashMap<PathBuf, (u64, u32)>,
    links: HashMap<PathBuf, PathBuf>,
    cgroups: HashMap<String, u64>,
}

impl Fake {
    fn with_file(mut self, path: &str, ino: u64) -> Self {
        self.files.insert(path.into(), (ino, 7 << 20 | 1));
        self
    }
    fn link(mut self, path: &str, target: &str) -> Self {
        self.links.insert(path.into(), target.into());
        self
    }
    fn cgroup(mut self, path: &str, id: u64) -> Self {
        self.cgroups.insert(path.into(), id);
        self
    }
}

impl Resolver for Fake {
    fn file(&self, path: &Path) -> Option<(u64, u32)> {
        let target = self.links.get(path).map_or(path, |t| t.as_path());
        self.files.get(target).copied()
    }
    fn cgroup_id(&self, path: &str) -> Option<u64> {
        self.cgroups.get(path).copied()
    }
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        if let Some(t) = self.links.get(path) {
            return Some(t.clone());
        }
        self.files.contains_key(path).then(|| path.to_path_buf())
    }
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, Path::new("p.yaml")).unwrap()
}

fn conf(t: &KernelTables, id: u32) -> SubjectConf {
    t.subjects.iter().find(|(s, _)| *s == id).unwrap().1
}

/// The kernel's exec decision (agent-ebpf `exec_action`).
fn kernel_exec_eval(t: &KernelTables, subject: u32, file: (u64, u32)) -> u32 {
    let key = ExecRuleKey {
        subject,
        dev: file.1,
        ino: file.0,
    };
    if let Some((_, action)) = t.exec.iter().find(|(k, _)| *k == key) {
        return *action;
    }
    t.subjects
        .iter()
        .find(|(s, _)| *s == subject)
        .map_or(rule_action::ASK, |(_, c)| c.exec_miss)
}

/// The kernel's egress decision (agent-ebpf `egress_action`), over the whole table.
fn kernel_egress_eval(
    rules: &[KRule],
    conf: SubjectConf,
    ip: IpAddr,
    port: u16,
    sock_type: u16,
) -> u32 {
    let addr = u128::from(to_v6(ip));
    for i in 0..EGRESS_RULES_PER_SUBJECT {
        if i >= conf.egress_len {
            return conf.egress_miss;
        }
        let Some(rule) = rules.get((conf.egress_first + i) as usize) else {
            return rule_action::ASK;
        };
        if rule.proto != 0 && u16::from(rule.proto) != sock_type {
            continue;
        }
        if port < rule.port_lo || port > rule.port_hi {
            continue;
        }
        let bits = u32::from(rule.prefix_len);
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        if (addr ^ u128::from_be_bytes(rule.addr)) & mask == 0 {
            return rule.action;
        }
    }
    conf.egress_miss
}

const DEV: u32 = 7 << 20 | 1;

fn key(subject: u32, ino: u64) -> ExecRuleKey {
    ExecRuleKey {
        subject,
        dev: DEV,
        ino,
    }
}

#[test]
fn literal_exec_rules_go_to_the_kernel() {
    let fs = Fake::default()
        .with_file("/usr/bin/git", 10)
        .with_file("/usr/bin/curl", 11)
        .with_file("/usr/bin/rm", 12);
    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: {exec: deny}\n    exec:\n      - {path: /usr/bin/git, action: allow}\n      - {path: /usr/bin/curl, action: ask}\n      - {path: /usr/bin/rm, action: kill}\n      - {path: /usr/bin/git, action: deny}\n",
    );
    let id = p.subjects[0].id;
    let t = compile(&p, &fs);
    assert_eq!(
        t.exec,
        vec![
            (key(id, 10), rule_action::ALLOW),
            (key(id, 11), rule_action::ASK),
            (key(id, 12), rule_action::KILL),
        ]
    );
    // Every rule is in the kernel (the last is dead: the first git rule decides), so a
    // miss is the default.
    assert_eq!(conf(&t, id).exec_miss, rule_action::DENY);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert!(t.files.contains(&(PathBuf::from("/usr/bin/git"), 10, DEV)));
    assert_eq!(t.files.len(), 3);
}

#[test]
fn a_glob_or_argv_rule_makes_the_miss_ask() {
    let fs = Fake::default()
        .with_file("/usr/bin/git", 10)
        .with_file("/opt/x", 20);
    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: allow\n    exec:\n      - {path: /usr/bin/git, action: allow}\n      - {path: \"/opt/*\", action: deny}\n  - name: b\n    owner: o\n    default: allow\n    exec:\n      - {path: /usr/bin/git, action: allow}\n      - {path: /opt/x, argv: \"x --bad\", action: deny}\n",
    );
    let t = compile(&p, &fs);
    let (a, b) = (p.subjects[0].id, p.subjects[1].id);
    assert_eq!(conf(&t, a).exec_miss, rule_action::ASK);
    assert_eq!(conf(&t, b).exec_miss, rule_action::ASK);
    assert_eq!(
        t.exec,
        vec![
            (key(a, 10), rule_action::ALLOW),
            (key(b, 10), rule_action::ALLOW)
        ]
    );
    // The glob's miss is the daemon's; what the kernel allows, the daemon allows.
    let d = p.subjects[0].decide_exec(&FilePaths::confirmed("/usr/bin/git"), None);
    assert_eq!(d.action.kernel_code(), kernel_exec_eval(&t, a, (10, DEV)));
}

#[test]
fn shadowed_literal_rules_stay_with_the_daemon() {
    let fs = Fake::default()
        .with_file("/usr/bin/git", 10)
        .with_file("/usr/bin/ls", 11)
        .with_file("/opt/real/tool", 12)
        .link("/usr/bin/tool", "/opt/real/tool")
        .with_file("/usr/bin/cat", 13)
        .with_file("/usr/bin/vi", 14);
    let p = policy(
        r#"subjects:
  - name: a
    owner: o
    default: deny
    exec:
      - {path: "/usr/bin/*", argv: "* --force*", action: ask}
      - {path: /usr/bin/ls, action: allow}
      - {path: "/opt/real/*", action: deny}
      - {path: /usr/bin/tool, action: allow}
      - {path: /usr/bin/cat, argv: "cat /etc/shadow", action: kill}
      - {path: /usr/bin/cat, action: allow}
  - name: b
    owner: o
    exec:
      - {path: "/srv/*", action: allow}
      - {path: /usr/bin/git, action: allow}
      - {path: "/srv/**", action: deny}
      - {path: /usr/bin/vi, action: deny}
"#,
    );
    let t = compile(&p, &fs);
    let (a, b) = (p.subjects[0].id, p.subjects[1].id);
    // ls: the argv glob before it matches its path. tool: a symlink whose target an
    // earlier glob matches. cat: an earlier rule with argv names the same file.
    assert!(!t.exec.iter().any(|(k, _)| k.subject == a), "{:?}", t.exec);
    assert_eq!(conf(&t, a).exec_miss, rule_action::ASK);
    // b: git comes after a glob that does not match it and decides the same (allow), so
    // it is compiled. vi (deny) is not: a symlink to it made under /srv later would be
    // allowed by the daemon's first rule.
    assert_eq!(t.exec, vec![(key(b, 10), rule_action::ALLOW)]);
    assert_eq!(conf(&t, b).exec_miss, rule_action::ASK);
}

#[test]
fn missing_files_are_warned_about() {
    let fs = Fake::default();
    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: allow\n    match: {executables: [/usr/local/bin/agent], cgroups: [/agent.slice], uids: [1234]}\n    exec:\n      - {path: /usr/bin/nope, action: deny}\n      - {path: relative, action: deny}\n",
    );
    let t = compile(&p, &fs);
    let id = p.subjects[0].id;
    assert_eq!(conf(&t, id).exec_miss, rule_action::ASK);
    assert!(t.exec.is_empty());
    assert_eq!(t.watch_uid, vec![(1234, id)]);
    assert!(t.watch_exe.is_empty() && t.watch_cgroup.is_empty());
    assert_eq!(
        t.warnings,
        vec![
            "subjects[0].exec[0]: /usr/bin/nope does not exist; decided by the daemon".to_string(),
            "subjects[0].exec[1]: relative is not an absolute path; decided by the daemon".into(),
            "subjects[0].match.executables[0]: /usr/local/bin/agent does not exist; its processes are not watched".into(),
            "subjects[0].match.cgroups[0]: cgroup /agent.slice does not exist; its processes are not watched".into(),
        ]
    );
}

#[test]
fn watch_tables_and_duplicate_claims() {
    let fs = Fake::default()
        .with_file("/usr/local/bin/agent", 50)
        .link("/opt/agent", "/usr/local/bin/agent")
        .with_file("/usr/bin/other", 51)
        .cgroup("/a.slice", 900)
        .cgroup("/b.slice", 901)
        .cgroup("/b-alias.slice", 901);
    let p = policy(
        r#"subjects:
  - name: a
    owner: o
    match:
      executables: [/usr/local/bin/agent]
      cgroups: [/a.slice, /b.slice]
      uids: [1000, 1001]
  - name: b
    owner: o
    match:
      executables: [/opt/agent, /usr/bin/other]
      cgroups: [/b-alias.slice]
      uids: [1002]
"#,
    );
    let t = compile(&p, &fs);
    let (a, b) = (p.subjects[0].id, p.subjects[1].id);
    assert_eq!(t.watch_uid, vec![(1000, a), (1001, a), (1002, b)]);
    assert_eq!(
        t.watch_exe,
        vec![
            (
                agent_common::ExeKey {
                    dev: DEV,
                    _pad: 0,
                    ino: 50
                },
                a
            ),
            (
                agent_common::ExeKey {
                    dev: DEV,
                    _pad: 0,
                    ino: 51
                },
                b
            ),
        ]
    );
    assert_eq!(t.watch_cgroup, vec![(900, a), (901, a)]);
    assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    assert!(t.warnings[0].starts_with(
        "subjects[1].match.executables[0]: /opt/agent is the same file as an executable of subject \"a\""
    ));
    assert!(t.warnings[1].starts_with(
        "subjects[1].match.cgroups[0]: cgroup /b-alias.slice is the same cgroup as one of subject \"a\""
    ));
    assert!(t.files.contains(&(PathBuf::from("/opt/agent"), 50, DEV)));
}

fn krule(addr: &str, prefix_len: u8, proto: u8, ports: (u16, u16), action: u32) -> KRule {
    KRule {
        addr: to_v6(addr.parse().unwrap()).octets(),
        prefix_len,
        proto,
        _pad: 0,
        port_lo: ports.0,
        port_hi: ports.1,
        action,
    }
}

#[test]
fn egress_rules_in_order_with_hostnames_as_ask() {
    let p = policy(
        r#"subjects:
  - name: first
    owner: o
    egress:
      - {to: [127.0.0.1], action: allow}
  - name: a
    owner: o
    default: {egress: deny}
    egress:
      - {to: [10.0.0.0/8, "2001:db8::/32"], ports: [443, "8000-8100"], protocol: tcp, action: allow}
      - {to: ["*.example.com", 192.168.1.0/24], ports: [22], action: audit}
      - {to: [1.2.3.4], protocol: udp, action: kill}
"#,
    );
    let t = compile(&p, &Fake::default());
    let first = conf(&t, p.subjects[0].id);
    assert_eq!(
        first,
        SubjectConf {
            exec_miss: rule_action::ASK,
            egress_miss: rule_action::ASK,
            egress_first: 0,
            egress_len: 1,
            unix_action: rule_action::ASK,
            _pad: 0,
        }
    );
    let c = conf(&t, p.subjects[1].id);
    assert_eq!(c.egress_first, 1);
    assert_eq!(c.egress_miss, rule_action::DENY);
    // An empty exec list is entirely in the kernel: the miss is the default (ask).
    assert_eq!(c.exec_miss, rule_action::ASK);
    let tcp = agent_common::sock_type::STREAM as u8;
    let udp = agent_common::sock_type::DGRAM as u8;
    let ours = &t.egress[c.egress_first as usize..(c.egress_first + c.egress_len) as usize];
    assert_eq!(
        ours,
        &[
            krule("10.0.0.0", 104, tcp, (443, 443), rule_action::ALLOW),
            krule("2001:db8::", 32, tcp, (443, 443), rule_action::ALLOW),
            krule("10.0.0.0", 104, tcp, (8000, 8100), rule_action::ALLOW),
            krule("2001:db8::", 32, tcp, (8000, 8100), rule_action::ALLOW),
            krule("192.168.1.0", 120, 0, (22, 22), rule_action::AUDIT),
            // The hostname: the kernel cannot tell, the daemon decides.
            krule("::", 0, 0, (22, 22), rule_action::ASK),
            krule("1.2.3.4", 128, udp, (0, 65535), rule_action::KILL),
        ]
    );
    assert!(t.warnings.is_empty());
}

#[test]
fn catch_all_rules_end_the_table() {
    let p = policy(
        r#"subjects:
  - name: a
    owner: o
    default: deny
    egress:
      - {to: [10.0.0.0/8], action: allow}
      - {action: audit}
      - {to: [1.1.1.1], action: allow}
  - name: b
    owner: o
    default: allow
    egress:
      - {to: [10.0.0.0/8], action: deny}
      - {to: ["*.x.com"], action: allow}
      - {to: [1.1.1.1], action: kill}
"#,
    );
    let t = compile(&p, &Fake::default());
    let a = conf(&t, p.subjects[0].id);
    assert_eq!((a.egress_len, a.egress_miss), (1, rule_action::AUDIT));
    let b = conf(&t, p.subjects[1].id);
    assert_eq!((b.egress_len, b.egress_miss), (1, rule_action::ASK));
    assert_eq!(t.egress[b.egress_first as usize].action, rule_action::DENY);
}

#[test]
fn too_many_egress_rules_are_cut_and_the_rest_asks() {
    let mut text =
        String::from("subjects:\n  - name: a\n    owner: o\n    default: allow\n    egress:\n");
    for i in 0..70 {
        text.push_str(&format!("      - {{to: [10.0.{i}.0/24], action: deny}}\n"));
    }
    let p = policy(&text);
    let t = compile(&p, &Fake::default());
    let c = conf(&t, p.subjects[0].id);
    assert_eq!(c.egress_len, EGRESS_RULES_PER_SUBJECT);
    assert_eq!(t.egress.len(), EGRESS_RULES_PER_SUBJECT as usize);
    assert_eq!(c.egress_miss, rule_action::ASK);
    assert_eq!(t.warnings.len(), 1);
    assert!(
        t.warnings[0].contains("needs 70 kernel rules"),
        "{}",
        t.warnings[0]
    );
    let s = &p.subjects[0];
    let ip: IpAddr = "10.0.69.1".parse().unwrap();
    assert_eq!(kernel_egress_eval(&t.egress, c, ip, 1, 1), rule_action::ASK);
    assert_eq!(
        s.decide_egress(ip, 1, Some(Proto::Tcp), &[]).action,
        Action::Deny
    );
    let ip: IpAddr = "10.0.3.1".parse().unwrap();
    assert_eq!(
        kernel_egress_eval(&t.egress, c, ip, 1, 1),
        rule_action::DENY
    );
}

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const ACTIONS: [&str; 5] = ["allow", "deny", "ask", "kill", "audit"];

const UNIX_DESTS: [&str; 4] = [
    "unix:/run/*.sock",
    "unix:/var/run/docker.sock",
    "unix:@**",
    "unix:/**",
];

fn random_egress_policy(rng: &mut Rng, rules: usize) -> String {
    let dests = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3",
        "192.168.0.0/24",
        "0.0.0.0/0",
        "::/0",
        "2001:db8::/32",
        "2001:db8::1",
        "::ffff:10.0.0.0/104",
        "*.example.com",
        "api.example.com",
        "other.net",
    ];
    let ports = ["53", "80", "443", "1-1024", "8000-8100", "65535"];
    let mut text = format!(
        "subjects:\n  - name: a\n    owner: o\n    default: {}\n    egress:\n",
        rng.pick(&ACTIONS)
    );
    for _ in 0..rules {
        text.push_str("      - {");
        let mut unix = false;
        if rng.chance(75) {
            let n = 1 + rng.below(3);
            let mut to: Vec<String> = (0..n)
                .map(|_| format!("\"{}\"", rng.pick(&dests)))
                .collect();
            // Unix sockets, alone or among addresses (then without ports or protocol).
            if rng.chance(20) {
                let unix_dest = format!("\"{}\"", rng.pick(&UNIX_DESTS));
                if rng.chance(50) {
                    to = vec![unix_dest];
                } else {
                    to.push(unix_dest);
                }
                unix = true;
            }
            text.push_str(&format!("to: [{}], ", to.join(", ")));
        }
        if rng.chance(50) && !unix {
            let n = 1 + rng.below(2);
            let p: Vec<String> = (0..n)
                .map(|_| format!("\"{}\"", rng.pick(&ports)))
                .collect();
            text.push_str(&format!("ports: [{}], ", p.join(", ")));
        }
        if rng.chance(40) && !unix {
            text.push_str(&format!("protocol: {}, ", rng.pick(&["tcp", "udp"])));
        }
        text.push_str(&format!("action: {}}}\n", rng.pick(&ACTIONS)));
    }
    text
}

#[test]
fn kernel_egress_agrees_with_the_daemon() {
    let ips: Vec<IpAddr> = [
        "10.0.0.1",
        "10.1.2.3",
        "10.1.2.4",
        "10.255.255.255",
        "11.0.0.0",
        "192.168.0.9",
        "192.168.1.0",
        "1.2.3.4",
        "::ffff:10.1.2.3",
        "::ffff:192.168.0.1",
        "2001:db8::1",
        "2001:db8:ffff::",
        "2001:db9::",
        "::1",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let names: [&[&str]; 5] = [
        &[],
        &["api.example.com"],
        &["x.y.example.com"],
        &["other.net"],
        &["example.com", "nope.org"],
    ];
    let port_pool = [
        0u16, 1, 53, 79, 80, 443, 1024, 1025, 8000, 8050, 8100, 8101, 65535,
    ];
    let sockets = [
        "/run/a.sock",
        "/run/x/a.sock",
        "/var/run/docker.sock",
        "@bus@1",
        "/tmp/.X11-unix/X0",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut kernel_decided = 0;
    let mut unix_decided = 0;
    for round in 0..300 {
        // Now and then more rules than the kernel walks.
        let n = if round % 25 == 0 { 40 } else { rng.below(8) };
        let text = random_egress_policy(&mut rng, n);
        let p = policy(&text);
        let t = compile(&p, &Fake::default());
        let s = &p.subjects[0];
        let c = conf(&t, s.id);
        assert!(c.egress_len <= EGRESS_RULES_PER_SUBJECT);
        if c.unix_action != rule_action::ASK {
            for path in sockets {
                unix_decided += 1;
                assert_eq!(
                    c.unix_action,
                    s.decide_unix(path).action.kernel_code(),
                    "kernel and daemon differ for unix socket {path}\npolicy:\n{text}"
                );
            }
        }
        for _ in 0..200 {
            let ip = *rng.pick(&ips);
            let port = *rng.pick(&port_pool);
            let sock_type = *rng.pick(&[1u16, 2, 3]);
            let hostnames: Vec<String> = rng.pick(&names).iter().map(|s| s.to_string()).collect();
            let k = kernel_egress_eval(&t.egress, c, ip, port, sock_type);
            if k == rule_action::ASK {
                continue;
            }
            kernel_decided += 1;
            let d = s.decide_egress(ip, port, Proto::from_sock_type(sock_type), &hostnames);
            assert_eq!(
                k,
                d.action.kernel_code(),
                "kernel and daemon differ for {ip} port {port} type {sock_type} names {hostnames:?}\npolicy:\n{}\ntables: {:?}",
                text,
                t.egress
            );
        }
    }
    // The comparison must have had something to compare.
    assert!(kernel_decided > 10_000, "{kernel_decided}");
    assert!(unix_decided > 100, "{unix_decided}");
}

#[test]
fn unix_action_is_the_default_unless_a_rule_names_sockets() {
    let p = policy(
        r#"subjects:
  - name: plain
    owner: o
    default: {egress: deny}
    egress:
      - {to: [10.0.0.0/8], ports: [443], action: allow}
      - {action: audit}
  - name: none
    owner: o
    default: kill
  - name: sockets
    owner: o
    default: {egress: allow}
    egress:
      - {to: ["unix:/var/run/docker.sock"], action: deny}
      - {to: [1.2.3.4], action: kill}
  - name: mixed
    owner: o
    default: {egress: deny}
    egress:
      - {to: ["unix:@bus", 10.0.0.0/8, "*.x.com"], action: allow}
"#,
    );
    let t = compile(&p, &Fake::default());
    let [plain, none, sockets, mixed] = [0, 1, 2, 3].map(|i| conf(&t, p.subjects[i].id));
    assert_eq!(plain.unix_action, rule_action::DENY);
    assert_eq!(none.unix_action, rule_action::KILL);
    assert_eq!(sockets.unix_action, rule_action::ASK);
    assert_eq!(mixed.unix_action, rule_action::ASK);
    assert!([plain, none, sockets, mixed].iter().all(|c| c._pad == 0));
    // The `to`-less rule still ends the address table; it says nothing about sockets.
    assert_eq!(
        (plain.egress_len, plain.egress_miss),
        (1, rule_action::AUDIT)
    );
    // A unix-only rule puts nothing in the address table (it is not "any address").
    let ours = |c: SubjectConf| {
        &t.egress[c.egress_first as usize..(c.egress_first + c.egress_len) as usize]
    };
    assert_eq!(
        ours(sockets),
        &[krule("1.2.3.4", 128, 0, (0, 65535), rule_action::KILL)]
    );
    assert_eq!(sockets.egress_miss, rule_action::ALLOW);
    // A mixed rule: its addresses, then ask for its hostnames (here: the miss); the
    // socket is left out.
    assert_eq!(
        ours(mixed),
        &[krule("10.0.0.0", 104, 0, (0, 65535), rule_action::ALLOW)]
    );
    assert_eq!(mixed.egress_miss, rule_action::ASK);
    let s = &p.subjects[2];
    let ip: IpAddr = "9.9.9.9".parse().unwrap();
    assert_eq!(
        kernel_egress_eval(&t.egress, sockets, ip, 80, 1),
        rule_action::ALLOW
    );
    assert_eq!(
        s.decide_egress(ip, 80, Some(Proto::Tcp), &[]).action,
        Action::Allow
    );
    // A subject with only unix rules: every address is the miss.
    let p = policy(
        "subjects:\n  - name: a\n    owner: o\n    default: {egress: deny}\n    egress:\n      - {to: [\"unix:/**\"], action: allow}\n",
    );
    let t = compile(&p, &Fake::default());
    let c = conf(&t, p.subjects[0].id);
    assert_eq!(
        (c.egress_len, c.egress_miss, c.unix_action),
        (0, rule_action::DENY, rule_action::ASK)
    );
    assert!(t.egress.is_empty() && t.warnings.is_empty());
}

/// A small filesystem: canonical files (a hard link among them), and symlinks.
fn exec_fs() -> Fake {
    Fake::default()
        .with_file("/usr/bin/a", 1)
        .with_file("/usr/bin/b", 2)
        .with_file("/usr/bin/c", 3)
        .with_file("/opt/x/a", 4)
        .with_file("/opt/x/d", 5)
        .with_file("/usr/lib/h", 2)
        .link("/usr/bin/link", "/opt/x/a")
        .link("/bin/c", "/usr/bin/c")
        .link("/tmp/t", "/usr/bin/a")
}

const EXEC_PATHS: [&str; 9] = [
    "/usr/bin/a",
    "/usr/bin/b",
    "/usr/bin/c",
    "/opt/x/a",
    "/opt/x/d",
    "/usr/lib/h",
    "/usr/bin/link",
    "/bin/c",
    "/tmp/t",
];

fn random_exec_policy(rng: &mut Rng, rules: usize) -> String {
    let globs = [
        "/usr/bin/*",
        "/opt/**",
        "/usr/bin/?",
        "**/a",
        "/bin/*",
        "/tmp/*",
        "/usr/*/h",
    ];
    let argvs = ["* -x*", "a *"];
    let mut text = format!(
        "subjects:\n  - name: a\n    owner: o\n    default: {}\n    exec:\n",
        rng.pick(&ACTIONS)
    );
    for _ in 0..rules {
        let path = if rng.chance(65) {
            *rng.pick(&[&EXEC_PATHS[..], &["/usr/bin/missing"]].concat())
        } else {
            *rng.pick(&globs)
        };
        text.push_str(&format!("      - {{path: \"{path}\", "));
        if rng.chance(25) {
            text.push_str(&format!("argv: \"{}\", ", rng.pick(&argvs)));
        }
        text.push_str(&format!("action: {}}}\n", rng.pick(&ACTIONS)));
    }
    text
}

/// What the kernel decides for an exec is what the daemon decides for that file: for
/// the name it was run by, or, when a literal rule decided by the file's identity and
/// that name is not the rule's (a hard link, the target of a symlinked rule path), for
/// the name the rule lists.
#[test]
fn kernel_exec_agrees_with_the_daemon() {
    let fs = exec_fs();
    let argvs: [Option<Vec<String>>; 4] = [
        None,
        Some(vec!["a".into()]),
        Some(vec!["a".into(), "-x".into()]),
        Some(vec!["a".into(), "y".into()]),
    ];
    let candidates = |p: &str| -> Vec<String> {
        let canon = fs.canonical(Path::new(p)).unwrap();
        vec![p.to_owned(), canon.to_str().unwrap().to_owned()]
    };
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let (mut kernel_decided, mut by_identity) = (0, 0);
    for _ in 0..1500 {
        let n = rng.below(7);
        let text = random_exec_policy(&mut rng, n);
        let p = policy(&text);
        let t = compile(&p, &fs);
        let s = &p.subjects[0];
        for path in EXEC_PATHS {
            let file = fs.file(Path::new(path)).unwrap();
            let k = kernel_exec_eval(&t, s.id, file);
            if k == rule_action::ASK {
                continue;
            }
            let given = candidates(path);
            let given: Vec<&str> = given.iter().map(String::as_str).collect();
            // The literal rule that was compiled for this file, if any: the first.
            let entry = t.exec.iter().any(|(key, _)| key.ino == file.0);
            let listed = s.exec.iter().find(|r| {
                r.path
                    .literal()
                    .is_some_and(|l| fs.file(Path::new(l)) == Some(file))
            });
            for argv in &argvs {
                kernel_decided += 1;
                let names: Vec<String> = match listed {
                    Some(rule) if entry && !given.iter().any(|g| rule.path.matches(g)) => {
                        by_identity += 1;
                        candidates(rule.path.literal().unwrap())
                    }
                    _ => given.iter().map(|g| g.to_string()).collect(),
                };
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let d = s.decide_exec(
                    &FilePaths {
                        trusted: names.clone(),
                        claimed: Vec::new(),
                    },
                    argv.as_deref(),
                );
                assert_eq!(
                    k,
                    d.action.kernel_code(),
                    "kernel and daemon differ for {path} ({names:?}) argv {argv:?}\npolicy:\n{text}\ntables: {:?}",
                    t.exec
                );
            }
        }
    }
    assert!(kernel_decided > 5_000, "{kernel_decided}");
    assert!(by_identity > 0);
}

#[test]
fn host_resolver_reads_the_filesystem() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tool");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let got = HostResolver.file(&file).unwrap();
    assert_eq!(got, (meta.ino(), kernel_dev(meta.dev())));
    assert_eq!(HostResolver.file(&link), Some(got));
    assert_eq!(
        HostResolver.canonical(&link),
        Some(std::fs::canonicalize(&file).unwrap())
    );
    assert_eq!(HostResolver.file(&dir.path().join("missing")), None);
    assert_eq!(HostResolver.cgroup_id("/no/such/belay/cgroup"), None);
    // The kernel's s_dev: major << 20 | minor (user space packs them differently).
    assert_eq!(kernel_dev(libc::makedev(8, 1)), 8 << 20 | 1);
    assert_eq!(kernel_dev(libc::makedev(259, 70_000)), 259 << 20 | 70_000);
    assert_eq!(kernel_dev(libc::makedev(0, 42)), 42);
}
