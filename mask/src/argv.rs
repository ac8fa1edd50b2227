//! Command lines and environments: context that crosses element boundaries.
use regex::Regex;

use crate::{Ctx, Finding, Hit, Masker, checks, tools};

/// Programs whose `user@host` arguments are logins, not email addresses.
const SSH_LIKE: &[&str] = &[
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "mosh",
    "ssh-copy-id",
    "autossh",
    "sshpass",
    "sshfs",
];

pub(crate) struct ArgvRules {
    /// A flag whose value is the next argument and a password (`--password SECRET`).
    password_flag: Regex,
    /// Same for values masked unless they are paths or references (`--token X`).
    secret_flag: Regex,
}

impl ArgvRules {
    pub(crate) fn new() -> Self {
        Self {
            password_flag: Regex::new(
                r"^--?(?i:(?:[a-z0-9]+[-_])*(?:password|passwd|passphrase|pass(?:in|out)?|pwd))$",
            )
            .expect("password flag regex"),
            secret_flag: Regex::new(
                r"^--?(?i:(?:[a-z0-9]+[-_])*(?:token|secret|api[-_]?key|apikey|access[-_]?key|secret[-_]?key|client[-_]?secret|auth[-_]?token))$",
            )
            .expect("secret flag regex"),
        }
    }
}

fn basename(arg0: &str) -> &str {
    arg0.rfind('/').map_or(arg0, |i| &arg0[i + 1..])
}

/// Every name the flag regexes accept ends in one of these: most flags (`-n`,
/// `--release`) are ruled out without running either regex.
const FLAG_ENDINGS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "passin",
    "passout",
    "pwd",
    "token",
    "secret",
    "key",
];

fn may_name_a_secret(flag: &str) -> bool {
    let f = flag.as_bytes();
    FLAG_ENDINGS
        .iter()
        .any(|e| f.len() >= e.len() && f[f.len() - e.len()..].eq_ignore_ascii_case(e.as_bytes()))
}

fn is_mysql(cmd: &str) -> bool {
    matches!(
        cmd,
        "mysql"
            | "mysqldump"
            | "mysqladmin"
            | "mysqlimport"
            | "mysqlshow"
            | "mysqlcheck"
            | "mariadb"
            | "mariadb-dump"
    )
}

/// What the previous argument says about this one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Plain,
    Password,
    Secret,
    /// `curl -u user:password`.
    UserColonPassword,
    /// `aws configure set aws_secret_access_key SECRET`.
    AwsSecret,
    /// An option of a well-known tool (`tools`): `redis-cli -a SECRET`.
    Tool(tools::How),
    /// The secret is in this argument, at this range (`7z -pSECRET`).
    Here(usize),
}

/// What the command (argv[0]) says about its arguments, worked out before any of them
/// is replaced.
#[derive(Clone, Copy)]
struct Command {
    ssh_like: bool,
    mysql: bool,
    sshpass: bool,
    curl: bool,
}

impl Command {
    fn of(argv: &[String]) -> Command {
        let cmd = argv.first().map_or("", |a| basename(a));
        Command {
            ssh_like: SSH_LIKE.contains(&cmd),
            mysql: is_mysql(cmd),
            sshpass: cmd == "sshpass",
            curl: cmd == "curl",
        }
    }
}

/// Masks `argv` in place: an argument with nothing to mask is left as it is, neither
/// copied nor reallocated. `report`: also say what was found where.
pub(crate) fn mask_argv(m: &Masker, argv: &mut [String], report: bool) -> Vec<Finding> {
    let cmd = Command::of(argv);
    let ctx = Ctx {
        no_email: cmd.ssh_like,
    };
    let mut findings = Vec::new();
    let mut next = Next::Plain;
    let mut tool = argv.first().and_then(|a| tools::Cmd::start(a));
    let mut command_position = argv
        .first()
        .is_some_and(|a| tools::keeps_command_position(basename(a)));
    for (i, slot) in argv.iter_mut().enumerate() {
        let arg = slot.as_str();
        let mut this = std::mem::replace(&mut next, Next::Plain);
        // A tool's option: the secret is attached to it, or comes next.
        let says = match &mut tool {
            Some(t) if i > 0 && this == Next::Plain => t.word(arg),
            _ => None,
        };
        match says {
            Some(tools::Says::Here(r)) => this = Next::Here(r.start),
            Some(tools::Says::Next(how)) => next = Next::Tool(how),
            // A tool after a wrapper (`sudo`, `env`, `timeout 5`) starts its command.
            None if i > 0 && command_position => {
                if let Some(t) = tools::Cmd::start(arg) {
                    tool = Some(t);
                }
                command_position = tools::keeps_command_position(arg);
            }
            None => {}
        }
        let hits = hits(m, arg, i, this, cmd, ctx);
        // Only flags can announce a secret in the next argument: skip the regexes for
        // the common case.
        if next != Next::Plain {
            // Announced by the tool table.
        } else if i > 0 && arg.starts_with('-') {
            let named = may_name_a_secret(arg);
            if (named && m.argv.password_flag.is_match(arg)) || (cmd.sshpass && arg == "-p") {
                next = Next::Password;
            } else if named && m.argv.secret_flag.is_match(arg) {
                next = Next::Secret;
            } else if cmd.curl && (arg == "-u" || arg == "--user") {
                next = Next::UserColonPassword;
            }
        } else if i > 0 && arg.eq_ignore_ascii_case("aws_secret_access_key") {
            next = Next::AwsSecret;
        }
        if hits.is_empty() {
            continue;
        }
        if report {
            findings.extend(m.findings(&hits, Some(i)));
        }
        let masked = m.render(arg, &hits).into_owned();
        *slot = masked;
    }
    findings
}

/// The values to mask in one argument, given what the previous one announced.
fn hits(m: &Masker, arg: &str, i: usize, this: Next, cmd: Command, ctx: Ctx) -> Vec<Hit> {
    let whole = match this {
        Next::Password if checks::is_literal_password(arg) => Some(Hit {
            range: 0..arg.len(),
            kind: m.password,
            sub: None,
        }),
        Next::Secret
            if checks::is_literal_password(arg) && !arg.starts_with(['/', '~', '.', '@']) =>
        {
            Some(Hit {
                range: 0..arg.len(),
                kind: m.secret,
                sub: None,
            })
        }
        Next::AwsSecret
            if arg.len() == 40
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+') =>
        {
            Some(Hit {
                range: 0..arg.len(),
                kind: m.aws_secret,
                sub: None,
            })
        }
        Next::Tool(how) => tools::value(how, arg)
            .filter(|r| {
                let v = &arg[r.clone()];
                checks::is_literal_password(v) && !checks::not_a_password(v)
            })
            .map(|range| Hit {
                range,
                kind: m.password,
                sub: None,
            }),
        Next::Here(at) => {
            let v = &arg[at..];
            (checks::is_literal_password(v) && !checks::not_a_password(v)).then_some(Hit {
                range: at..arg.len(),
                kind: m.password,
                sub: None,
            })
        }
        Next::UserColonPassword => arg.find(':').and_then(|c| {
            let pw = &arg[c + 1..];
            let literal = checks::is_literal_password(pw) && !checks::not_a_password(pw);
            (literal && !pw.bytes().all(|b| b.is_ascii_digit())).then(|| Hit {
                range: c + 1..arg.len(),
                kind: m.password,
                sub: None,
            })
        }),
        _ => None,
    };
    match whole {
        Some(h) if m.markers(arg).is_empty() && !m.allowed(&arg[h.range.clone()], arg) => {
            // A value a detector recognises keeps its own kind (`--token ghp_…`).
            let found = m.find(arg, ctx);
            if found
                .iter()
                .any(|f| f.range.start <= h.range.start && f.range.end >= h.range.end)
            {
                found
            } else {
                vec![h]
            }
        }
        Some(_) => Vec::new(),
        None if i > 0
            && arg.len() > 2
            && arg.starts_with("-p")
            && !arg.starts_with("--")
            && cmd.mysql =>
        {
            if m.markers(arg).is_empty() && !m.allowed(&arg[2..], arg) {
                vec![Hit {
                    range: 2..arg.len(),
                    kind: m.password,
                    sub: None,
                }]
            } else {
                Vec::new()
            }
        }
        None => m.find(arg, ctx),
    }
}

/// Masks `env` (`NAME=VALUE` each) in place, as [`mask_argv`] does argv.
pub(crate) fn mask_env(m: &Masker, env: &mut [String], report: bool) -> Vec<Finding> {
    let (password, secret) = (m.password, m.secret);
    let mut findings = Vec::new();
    for (i, slot) in env.iter_mut().enumerate() {
        let var = slot.as_str();
        let mut hits = m.find(var, Ctx::default());
        if let Some(eq) = var.find('=') {
            let (name, value) = (&var[..eq], &var[eq + 1..]);
            let vrange = eq + 1..var.len();
            let covered = hits
                .iter()
                .any(|h| h.range.start <= vrange.start && h.range.end >= vrange.end);
            let kind =
                if crate::detectors::password_name(name) && checks::is_literal_password(value) {
                    Some(password)
                } else if secret_name(name) && checks::looks_random(value) {
                    Some(secret)
                } else {
                    None
                };
            // A password with spaces or quotes is still one value: mask all of it.
            if let Some(kind) = kind
                && !covered
                && m.markers(value).is_empty()
                && !m.allowed(value, var)
            {
                hits = vec![Hit {
                    range: vrange,
                    kind,
                    sub: None,
                }];
            }
        }
        if hits.is_empty() {
            continue;
        }
        if report {
            findings.extend(m.findings(&hits, Some(i)));
        }
        let masked = m.render(var, &hits).into_owned();
        *slot = masked;
    }
    findings
}

fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if crate::detectors::public_name(&n) {
        return false;
    }
    [
        "secret",
        "token",
        "key",
        "apikey",
        "credentials",
        "credential",
        "auth",
    ]
    .iter()
    .any(|w| n.ends_with(w))
}
