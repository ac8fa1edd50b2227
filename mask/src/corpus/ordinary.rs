//! Ordinary command lines and environments: what agents run all day, which must come
//! out of the masker unchanged. Ports, PIDs, versions, dates, hashes, UUIDs, paths,
//! logins and base64 of ordinary data are all here on purpose.
use base64::Engine as _;

use super::{DIGITS, HEX, LOWER, Rng};

const WORDS: &[&str] = &[
    "api",
    "web",
    "worker",
    "billing",
    "auth",
    "search",
    "cache",
    "gateway",
    "frontend",
    "backend",
    "metrics",
    "ingest",
    "scheduler",
    "payments",
    "users",
    "reports",
    "notifier",
    "docs",
    "admin",
    "core",
];
const MSGS: &[&str] = &[
    "fix flaky test in scheduler",
    "bump serde to 1.0.210",
    "add retry with backoff",
    "refactor config loading",
    "handle empty response from upstream",
    "update README with install steps",
    "increase timeout to 30s",
    "remove dead code",
    "log request ids",
    "support IPv6 listeners on port 8443",
    "release 2.4.1",
];
const HOSTS: &[&str] = &[
    "web1.example.com",
    "db.internal",
    "10.0.3.17",
    "build-02.ci.example.org",
    "bastion.example.net",
    "192.168.1.20",
];
const USERS: &[&str] = &["deploy", "admin", "ubuntu", "root", "git", "ops", "alice"];

fn w(r: &mut Rng) -> &'static str {
    r.pick(WORDS)
}

fn ver(r: &mut Rng) -> String {
    format!("{}.{}.{}", r.range(0, 4), r.range(0, 40), r.range(0, 20))
}

fn date(r: &mut Rng) -> String {
    format!(
        "{}-{:02}-{:02}",
        r.range(2019, 2026),
        r.range(1, 12),
        r.range(1, 28)
    )
}

fn uuid(r: &mut Rng) -> String {
    format!(
        "{}-{}-4{}-a{}-{}",
        r.chars(HEX, 8),
        r.chars(HEX, 4),
        r.chars(HEX, 3),
        r.chars(HEX, 3),
        r.chars(HEX, 12)
    )
}

fn path(r: &mut Rng) -> String {
    let base = r.pick(&[
        "/home/alice/src",
        "/srv/app",
        "/var/log",
        "/tmp",
        "/etc/nginx",
        "./src",
        "../lib",
    ]);
    format!(
        "{base}/{}/{}.{}",
        w(r),
        w(r),
        r.pick(&["rs", "py", "json", "yaml", "log", "conf", "toml", "ts"])
    )
}

fn args(v: Vec<String>) -> Vec<String> {
    v
}

macro_rules! a {
    ($($x:expr),* $(,)?) => { args(vec![$(String::from($x)),*]) };
}

/// `n` ordinary command lines.
pub fn ordinary_argv(seed: u64, n: usize) -> Vec<Vec<String>> {
    let mut r = Rng::new(seed ^ 0x07d1);
    let r = &mut r;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let sha = r.chars(HEX, 40);
        // One line in ten near the vendor, tool and assignment detectors.
        if r.below(10) == 0 {
            out.push(super::formats::ordinary(r));
            continue;
        }
        let line = match r.below(60) {
            0 => a!["git", "commit", "-m", r.pick(MSGS)],
            1 => a![
                "git",
                "checkout",
                "-b",
                format!("feature/{}-{}", w(r), r.range(1, 9999))
            ],
            2 => a!["git", "show", sha.clone()],
            3 => a![
                "git",
                "diff",
                format!("{}..{}", &sha[..7], r.chars(HEX, 7)),
                "--stat"
            ],
            4 => a![
                "git",
                "clone",
                format!("git@github.com:{}/{}.git", w(r), w(r))
            ],
            5 => a![
                "git",
                "clone",
                format!("https://github.com/{}/{}.git", w(r), w(r))
            ],
            6 => a![
                "git",
                "log",
                "--oneline",
                "-n",
                r.range(1, 100).to_string(),
                "--since",
                date(r)
            ],
            7 => a!["git", "push", "origin", format!("release/{}", ver(r))],
            8 => a![
                "cargo",
                "build",
                "--release",
                "-p",
                format!("{}-{}", w(r), w(r))
            ],
            9 => a![
                "cargo",
                "test",
                "--workspace",
                "--",
                "--nocapture",
                "--test-threads",
                r.range(1, 16).to_string()
            ],
            10 => a!["cargo", "install", "ripgrep", "--version", ver(r)],
            11 => a!["kubectl", "get", "pods", "-n", w(r), "-o", "wide"],
            12 => a![
                "kubectl",
                "logs",
                format!("deploy/{}", w(r)),
                "--since=1h",
                format!("--tail={}", r.range(10, 5000))
            ],
            13 => a![
                "kubectl",
                "port-forward",
                format!("svc/{}", w(r)),
                format!(
                    "{}:{}",
                    r.range(1024, 65535),
                    r.pick(&["80", "443", "8080"])
                )
            ],
            14 => a![
                "kubectl",
                "describe",
                "pod",
                format!("{}-{}-{}", w(r), r.chars(HEX, 9), r.chars(LOWER, 5))
            ],
            15 => a![
                "kubectl",
                "set",
                "image",
                format!("deployment/{}", w(r)),
                format!("app=registry.example.com/{}:{}", w(r), ver(r))
            ],
            16 => a![
                "kubectl",
                "get",
                "secret",
                format!("{}-creds", w(r)),
                "-o",
                "jsonpath={.data.password}"
            ],
            17 => a![
                "docker",
                "run",
                "--rm",
                "-it",
                "-p",
                format!("{}:80", r.range(1024, 65535)),
                "-v",
                "/srv/data:/data",
                format!("nginx:{}", ver(r))
            ],
            18 => a![
                "docker",
                "build",
                "-t",
                format!("{}:{}", w(r), date(r).replace('-', ".")),
                "."
            ],
            19 => a![
                "docker",
                "pull",
                format!("ghcr.io/{}/{}@sha256:{}", w(r), w(r), r.chars(HEX, 64))
            ],
            20 => a!["docker", "exec", "-it", r.chars(HEX, 12), "/bin/sh"],
            21 => a![
                "docker",
                "run",
                "-e",
                "RUST_LOG=debug",
                "-e",
                format!("PORT={}", r.range(1024, 65535)),
                "-e",
                format!("CACHE_KEY={}-{}-build", w(r), w(r)),
                w(r)
            ],
            22 => a![
                "curl",
                "-fsSL",
                format!("https://{}.example.com/install.sh", w(r))
            ],
            23 => a![
                "curl",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                format!("{{\"name\":\"{}\",\"count\":{}}}", w(r), r.range(1, 500)),
                format!("https://api.example.com/v1/{}", w(r))
            ],
            24 => a![
                "curl",
                "-H",
                "Accept: application/vnd.github+json",
                format!(
                    "https://api.github.com/repos/{}/{}/releases?per_page=100&page={}",
                    w(r),
                    w(r),
                    r.range(1, 9)
                )
            ],
            25 => a![
                "curl",
                "-o",
                format!("{}-{}.tar.gz", w(r), ver(r)),
                format!("https://dl.example.org/{}/{}-{}.tar.gz", w(r), w(r), ver(r))
            ],
            26 => a!["ls", "-la", path(r)],
            27 => a!["cat", path(r)],
            28 => a![
                "find",
                ".",
                "-name",
                "*.rs",
                "-mtime",
                format!("-{}", r.range(1, 30))
            ],
            29 => a![
                "grep",
                "-rn",
                r.pick(&["TODO", "password", "api_key", "token", "secret"]),
                "src/"
            ],
            30 => a![
                "tar",
                "-czf",
                format!("backup-{}.tar.gz", date(r)),
                "/var/www"
            ],
            31 => a!["kill", "-9", r.range(300, 4_000_000).to_string()],
            32 => a![
                "ps",
                "-o",
                "pid,ppid,cmd",
                "-p",
                r.range(300, 4_000_000).to_string()
            ],
            33 => a![
                "ssh",
                "-p",
                r.range(22, 2222).to_string(),
                format!("{}@{}", r.pick(USERS), r.pick(HOSTS))
            ],
            34 => a![
                "scp",
                path(r),
                format!("{}@{}:/tmp/", r.pick(USERS), r.pick(HOSTS))
            ],
            35 => a![
                "rsync",
                "-avz",
                "./dist/",
                format!("{}@{}:/var/www/", r.pick(USERS), r.pick(HOSTS))
            ],
            36 => a![
                "python3",
                "-m",
                "http.server",
                r.range(1024, 65535).to_string()
            ],
            37 => a![
                "python",
                "-m",
                "pytest",
                "tests/",
                "-k",
                format!("test_{} and not slow", w(r)),
                "-x"
            ],
            38 => a![
                "npm",
                "install",
                "--save-dev",
                format!("typescript@{}", ver(r))
            ],
            39 => a!["node", "--max-old-space-size=4096", "build.js"],
            40 => a![
                "go",
                "test",
                "./...",
                "-run",
                format!("Test{}", w(r).to_uppercase()),
                "-count=1"
            ],
            41 => a!["make", format!("-j{}", r.range(1, 32)), "CFLAGS=-O2 -g"],
            42 => a!["systemctl", "restart", format!("{}.service", w(r))],
            43 => a![
                "journalctl",
                "-u",
                format!("{}.service", w(r)),
                "--since",
                format!("{} {:02}:{:02}:00", date(r), r.range(0, 23), r.range(0, 59))
            ],
            44 => a![
                "terraform",
                "plan",
                "-var=region=us-east-1",
                format!("-var=instance_count={}", r.range(1, 20)),
                "-out=plan.tfplan"
            ],
            45 => a![
                "helm",
                "upgrade",
                "--install",
                w(r),
                "./chart",
                "--set",
                format!("image.tag={}", ver(r)),
                "--set",
                format!("replicas={}", r.range(1, 9))
            ],
            46 => a!["openssl", "x509", "-in", "cert.pem", "-noout", "-text"],
            47 => a![
                "openssl",
                "s_client",
                "-connect",
                format!("{}:443", r.pick(HOSTS))
            ],
            48 => a![
                "echo",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{} {} {}",
                    w(r),
                    r.pick(MSGS),
                    r.range(0, 99999)
                ))
            ],
            49 => a!["echo", uuid(r)],
            50 => a![
                "jq",
                ".items[] | {name: .metadata.name, uid: .metadata.uid}",
                "pods.json"
            ],
            51 => a![
                "psql",
                "-h",
                r.pick(HOSTS),
                "-p",
                "5432",
                "-U",
                "app",
                "-d",
                w(r)
            ],
            52 => a!["mysql", "-h", "db", "-P", "3306", "-u", "root", "-p", w(r)],
            53 => a!["date", "+%Y-%m-%dT%H:%M:%S%z"],
            54 => a!["tail", "-n", format!("+{}", r.range(1, 100000)), path(r)],
            55 => a![
                "dd",
                "if=/dev/zero",
                "of=/tmp/blob",
                "bs=1M",
                format!("count={}", r.range(1, 4096))
            ],
            56 => a!["sha256sum", format!("{}-{}.tar.gz", w(r), ver(r))],
            57 => a![
                "aws",
                "s3",
                "cp",
                format!("s3://{}-{}/keys/{}.json", w(r), r.chars(DIGITS, 4), w(r)),
                "."
            ],
            58 => a!["gpg", "--recv-keys", r.chars("0123456789ABCDEF", 40)],
            _ => a![
                "ssh-keygen",
                "-t",
                "ed25519",
                "-C",
                format!(
                    "{}@{}",
                    r.pick(USERS),
                    r.pick(&["laptop", "build-02", "ci"])
                ),
                "-f",
                format!("/home/alice/.ssh/id_{}", w(r))
            ],
        };
        out.push(line);
    }
    out
}

/// `n` ordinary `NAME=VALUE` environment entries.
pub fn ordinary_env(seed: u64, n: usize) -> Vec<String> {
    let mut r = Rng::new(seed ^ 0xe4);
    let r = &mut r;
    (0..n)
        .map(|_| match r.below(24) {
            0 => format!("HOME=/home/{}", r.pick(USERS)),
            1 => "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            2 => "LANG=en_US.UTF-8".to_owned(),
            3 => "TERM=xterm-256color".to_owned(),
            4 => format!("PWD=/home/alice/src/{}", w(r)),
            5 => format!("OLDPWD=/home/alice/src/{}", w(r)),
            6 => format!(
                "SSH_AUTH_SOCK=/tmp/ssh-{}/agent.{}",
                r.chars(
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                    12
                ),
                r.range(300, 99999)
            ),
            7 => format!("XDG_RUNTIME_DIR=/run/user/{}", r.range(1000, 1010)),
            8 => format!("RUST_LOG={}=debug,info", w(r)),
            9 => "KUBECONFIG=/home/alice/.kube/config".to_owned(),
            10 => format!(
                "HOSTNAME={}-{}-{}",
                w(r),
                r.chars(HEX, 9),
                r.chars(LOWER, 5)
            ),
            11 => format!("INVOCATION_ID={}", r.chars(HEX, 32)),
            12 => format!("GITHUB_SHA={}", r.chars(HEX, 40)),
            13 => format!("GITHUB_RUN_ID={}", r.range(1_000_000_000, 9_000_000_000)),
            14 => "AWS_REGION=eu-west-1".to_owned(),
            15 => format!("AWS_PROFILE={}", w(r)),
            16 => "TOKENIZERS_PARALLELISM=false".to_owned(),
            17 => "KEYTIMEOUT=1".to_owned(),
            18 => format!("SORT_KEY={}", w(r)),
            19 => format!("JOURNAL_STREAM=8:{}", r.range(10000, 99999)),
            20 => format!(
                "SSH_CONNECTION={} {} 10.0.0.1 22",
                r.pick(HOSTS),
                r.range(1024, 65535)
            ),
            21 => "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus".to_owned(),
            22 => format!("GPG_KEY={}", r.chars("0123456789ABCDEF", 40)),
            _ => format!("NODE_OPTIONS=--max-old-space-size={}", r.range(512, 8192)),
        })
        .collect()
}
