//! Which options of well-known command-line tools take a credential, and how the value
//! is passed: `redis-cli -a SECRET`, `7z -pSECRET`, `smbclient -U user%SECRET`,
//! `xfreerdp /p:SECRET`. Generic flag names (`--password`, `--token`) are the
//! `password` and `secret` detectors' business; this table is for the short and odd
//! options only a tool's manual explains.
//!
//! The table serves both paths: command lines the agent owns (argv, where each
//! argument is one element, `argv`) and text (`belay mask`, a shell line inside
//! `sh -c`), where [`find_iter`] splits the words after a tool's name itself. The
//! table is the definition; the detector's regex only names the tools, for the
//! trigger pass.
use std::ops::Range;

use crate::groups::is_space;

/// How an option carries its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    /// The next argument (`-a SECRET`).
    Next,
    /// Glued to the option (`-pSECRET`).
    Attached,
    /// Either (`-p SECRET` or `-pSECRET`).
    Either,
    /// The next argument, `user` `sep` `SECRET` (`-U user%SECRET`, `--creds u:p`).
    UserSep(u8),
}

pub(crate) struct Tool {
    pub(crate) names: &'static [&'static str],
    /// Subcommands one of which must come first (`docker login -p`, not `docker run
    /// -p 8080:80`); empty: any.
    pub(crate) after: &'static [&'static str],
    pub(crate) options: &'static [(&'static str, How)],
}

use How::*;

pub(crate) const TOOLS: &[Tool] = &[
    Tool {
        after: &[],
        names: &["redis-cli", "keydb-cli", "valkey-cli"],
        options: &[("-a", Next), ("--pass", Next), ("--user", Next)],
    },
    Tool {
        after: &["login"],
        names: &[
            "docker", "podman", "buildah", "skopeo", "oras", "crane", "nerdctl", "helm",
        ],
        options: &[("-p", Next)],
    },
    Tool {
        after: &[],
        names: &["skopeo", "buildah", "podman"],
        options: &[
            ("--creds", UserSep(b':')),
            ("--src-creds", UserSep(b':')),
            ("--dest-creds", UserSep(b':')),
        ],
    },
    Tool {
        after: &[],
        names: &["zip", "unzip", "zipcloak", "funzip"],
        options: &[("-P", Next)],
    },
    Tool {
        after: &[],
        names: &["7z", "7za", "7zr", "7zz", "rar", "unrar", "winrar"],
        options: &[("-p", Attached), ("-hp", Attached)],
    },
    Tool {
        after: &[],
        names: &["openssl"],
        options: &[("-k", Next)],
    },
    Tool {
        after: &[],
        names: &[
            "ldapsearch",
            "ldapmodify",
            "ldapadd",
            "ldapdelete",
            "ldapwhoami",
            "ldappasswd",
        ],
        options: &[("-w", Next)],
    },
    Tool {
        after: &[],
        names: &["keytool", "jarsigner"],
        options: &[
            ("-storepass", Next),
            ("-keypass", Next),
            ("-srcstorepass", Next),
            ("-deststorepass", Next),
            ("-srckeypass", Next),
            ("-destkeypass", Next),
        ],
    },
    Tool {
        after: &[],
        names: &[
            "mongo",
            "mongosh",
            "mongodump",
            "mongorestore",
            "mongoexport",
            "mongoimport",
            "mongostat",
            "mongotop",
            "cqlsh",
            "rabbitmqadmin",
            "evil-winrm",
            "smbmap",
            "crackmapexec",
            "nxc",
            "rdesktop",
            "psexec",
            "ncftp",
            "twine",
        ],
        options: &[("-p", Next)],
    },
    Tool {
        after: &[],
        names: &[
            "sqlcmd",
            "bcp",
            "osql",
            "ipmitool",
            "mosquitto_pub",
            "mosquitto_sub",
        ],
        options: &[("-P", Next)],
    },
    Tool {
        after: &[],
        names: &["vsql"],
        options: &[("-w", Next)],
    },
    Tool {
        after: &[],
        names: &["pscp", "plink", "putty", "psftp"],
        options: &[("-pw", Next)],
    },
    Tool {
        after: &[],
        names: &["smbclient", "rpcclient", "smbget", "net"],
        options: &[("-U", UserSep(b'%')), ("--user", UserSep(b'%'))],
    },
    Tool {
        after: &[],
        names: &["lftp"],
        options: &[("-u", UserSep(b','))],
    },
    Tool {
        after: &[],
        names: &["curl"],
        options: &[
            ("-U", UserSep(b':')),
            ("--proxy-user", UserSep(b':')),
            ("--oauth2-bearer", Next),
        ],
    },
    Tool {
        after: &[],
        names: &["xfreerdp", "wlfreerdp", "sdl-freerdp"],
        options: &[("/p:", Attached), ("/gp:", Attached)],
    },
    Tool {
        after: &["login"],
        names: &["az"],
        options: &[("-p", Next)],
    },
    Tool {
        after: &[],
        names: &["sshpass"],
        options: &[("-p", Either)],
    },
    Tool {
        after: &[],
        names: &["ssh-keygen"],
        options: &[("-N", Next), ("-P", Next)],
    },
    Tool {
        after: &[],
        names: &["influx"],
        options: &[("-t", Next), ("-password", Next)],
    },
    Tool {
        after: &[],
        names: &["nmcli"],
        options: &[("password", Next), ("wifi-sec.psk", Next)],
    },
    Tool {
        after: &[],
        names: &["snmpwalk", "snmpget", "snmpset", "snmpbulkwalk"],
        options: &[("-A", Next), ("-X", Next)],
    },
];

/// Every tool name, for the detector's pattern.
pub(crate) fn names() -> Vec<&'static str> {
    TOOLS.iter().flat_map(|t| t.names.iter().copied()).collect()
}

/// Every option, for the triggers.
pub(crate) fn options() -> impl Iterator<Item = &'static str> {
    TOOLS.iter().flat_map(|t| t.options.iter().map(|(o, _)| *o))
}

/// Every tool name with the tools (indices in `TOOLS`) it names, in buckets by a
/// cheap hash of the name: every command name is looked up here, and a bucket holds
/// one or two names (a sorted list took seven string comparisons, a tenth of the
/// time of an ordinary command line).
static INDEX: std::sync::LazyLock<Vec<Bucket>> = std::sync::LazyLock::new(|| {
    let mut index: Vec<Bucket> = vec![Vec::new(); BUCKETS];
    for (i, t) in TOOLS.iter().enumerate() {
        for &n in t.names {
            let bucket = &mut index[bucket(n.as_bytes())];
            match bucket.iter_mut().find(|(m, _)| *m == n) {
                Some((_, v)) => v.push(i),
                None => bucket.push((n, vec![i])),
            }
        }
    }
    index
});

/// Names with the indices in `TOOLS` of the tools they name.
type Bucket = Vec<(&'static str, Vec<usize>)>;

const BUCKETS: usize = 256;

/// The bucket of a name: its length and its first, second and last bytes.
fn bucket(n: &[u8]) -> usize {
    let (first, second, last) = (n[0], n[1], n[n.len() - 1]);
    (n.len()
        .wrapping_mul(131)
        .wrapping_add(usize::from(first).wrapping_mul(31))
        .wrapping_add(usize::from(second).wrapping_mul(7))
        .wrapping_add(usize::from(last)))
        % BUCKETS
}

/// Commands that run the command after them (`sudo redis-cli …`): the tool is the
/// first word after these, their options, `NAME=VALUE` and numbers.
const WRAPPERS: &[&str] = &[
    "sudo",
    "doas",
    "env",
    "nice",
    "nohup",
    "time",
    "timeout",
    "exec",
    "xargs",
    "watch",
    "command",
    "builtin",
    "strace",
    "ltrace",
    "chroot",
    "ionice",
    "taskset",
    "stdbuf",
    "unbuffer",
    "caffeinate",
    "then",
    "do",
    "else",
    "sh",
    "bash",
    "zsh",
    "dash",
    "ksh",
];

/// Whether a word keeps the next one in command position: a wrapper, an option, an
/// environment assignment or a number.
pub(crate) fn keeps_command_position(w: &str) -> bool {
    WRAPPERS.contains(&w)
        || w.starts_with('-')
        || w.contains('=')
        || w.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Longest tool name: longer words need no lookup.
const MAX_NAME: usize = 16;

/// What the command so far says: its tools, and whether a subcommand a tool wants
/// has come.
#[derive(Clone, Copy)]
pub(crate) struct Cmd {
    tools: &'static [usize],
    sub: Option<&'static str>,
}

impl Cmd {
    /// The command a word starts, when it names a tool (a path's last part).
    pub(crate) fn start(word: &str) -> Option<Cmd> {
        let base = match word.rfind('/') {
            Some(i) => &word[i + 1..],
            None => word,
        };
        if base.len() < 2 || base.len() > MAX_NAME || base.starts_with('-') {
            return None;
        }
        let (_, tools) = INDEX[bucket(base.as_bytes())]
            .iter()
            .find(|(n, _)| *n == base)?;
        Some(Cmd { tools, sub: None })
    }

    /// Notes a subcommand; what an option says.
    pub(crate) fn word(&mut self, w: &str) -> Option<Says> {
        let mut says = None;
        for t in self.tools.iter().map(|&i| &TOOLS[i]) {
            if t.after.is_empty() || self.sub.is_some_and(|s| t.after.contains(&s)) {
                says = says.or_else(|| option(t, w));
            }
            if let Some(s) = t.after.iter().find(|s| **s == w) {
                self.sub = Some(s);
            }
        }
        says
    }
}

/// What an argument of `tool` says: where the secret is in `arg` itself (an attached
/// value), or that the next argument holds one (and how).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Says {
    Here(Range<usize>),
    Next(How),
}

pub(crate) fn option(tool: &Tool, arg: &str) -> Option<Says> {
    for &(opt, how) in tool.options {
        match how {
            Next | UserSep(_) if arg == opt => return Some(Says::Next(how)),
            Either if arg == opt => return Some(Says::Next(Next)),
            Attached | Either if arg.len() > opt.len() && arg.starts_with(opt) => {
                return Some(Says::Here(opt.len()..arg.len()));
            }
            _ => {}
        }
    }
    None
}

/// Where the secret is in the argument after an option that announced `how`.
pub(crate) fn value(how: How, arg: &str) -> Option<Range<usize>> {
    match how {
        UserSep(sep) => arg
            .bytes()
            .position(|b| b == sep)
            .map(|i| i + 1..arg.len())
            .filter(|r| !r.is_empty()),
        _ => (!arg.is_empty()).then_some(0..arg.len()),
    }
}

/// One word of a shell line: its range, and the range inside its quotes.
fn words(h: &[u8], from: usize) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
    let mut at = from;
    std::iter::from_fn(move || {
        while at < h.len() && is_space(h[at]) {
            at += 1;
        }
        if at >= h.len() {
            return None;
        }
        let start = at;
        let inner = match h[at] {
            q @ (b'"' | b'\'') => {
                let close = h[at + 1..].iter().position(|&b| b == q);
                let end = close.map_or(h.len(), |c| at + 1 + c);
                at = (end + 1).min(h.len());
                start + 1..end
            }
            _ => {
                while at < h.len() && !is_space(h[at]) {
                    at += 1;
                }
                start..at
            }
        };
        Some((start..at, inner))
    })
}

/// The secrets that options of the tools in `text` carry, in order. A command ends at
/// `|`, `;`, `&` or a newline; quotes around a value are not part of it.
pub(crate) fn find_iter(text: &str, mut found: impl FnMut(Range<usize>)) {
    let h = text.as_bytes();
    let mut cmd: Option<Cmd> = None;
    let mut next: Option<How> = None;
    let mut command_position = true;
    let mut last = 0;
    for (word, inner) in words(h, 0) {
        let w = &text[inner.clone()];
        if w.is_empty() {
            continue;
        }
        if let Some(how) = next.take() {
            if let Some(r) = value(how, w) {
                let r = inner.start + r.start..inner.start + r.end;
                if r.start >= last {
                    last = r.end;
                    found(r);
                }
            }
            continue;
        }
        if matches!(w, "|" | "||" | ";" | "&&" | "&" | "(" | "{") || w.ends_with(';') {
            cmd = None;
            command_position = true;
            continue;
        }
        if let Some(c) = &mut cmd
            && let Some(says) = c.word(w)
        {
            match says {
                Says::Here(r) => {
                    let r = inner.start + r.start..inner.start + r.end;
                    if r.start >= last {
                        last = r.end;
                        found(r);
                    }
                }
                Says::Next(how) => next = Some(how),
            }
            continue;
        }
        // A tool starts a command where a command name stands (`sudo redis-cli`).
        if command_position {
            if word == inner
                && let Some(c) = Cmd::start(w)
            {
                cmd = Some(c);
            }
            command_position = keeps_command_position(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{MaskConfig, Masker};

    fn masker() -> Masker {
        Masker::new(&MaskConfig::default(), [4; 32]).unwrap()
    }

    #[track_caller]
    fn masked(m: &Masker, line: &str, secret: &str) {
        let out = m.mask(line);
        assert!(!out.contains(secret), "{secret} survived in {out}");
        assert!(out.contains("[password:"), "{out}");
        let argv: Vec<String> = shell_words(line);
        let masked = m.mask_argv(&argv);
        assert!(
            masked.iter().all(|a| !a.contains(secret)),
            "argv: {secret} survived in {masked:?}"
        );
    }

    fn shell_words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn credential_options_of_common_tools() {
        let m = masker();
        masked(&m, "redis-cli -h cache -a Xk3mQ9pL2v info", "Xk3mQ9pL2v");
        masked(
            &m,
            "docker login -u ci -p Hq8vN2kLx3 registry.example.com",
            "Hq8vN2kLx3",
        );
        masked(&m, "zip -P Zr5tY8uI0p -r out.zip dir", "Zr5tY8uI0p");
        masked(&m, "7z a -pWq2eR4tY6u secret.7z file", "Wq2eR4tY6u");
        masked(
            &m,
            "ldapsearch -x -D cn=admin -w Lp9oK8iJ7u -b dc=x",
            "Lp9oK8iJ7u",
        );
        masked(
            &m,
            "keytool -list -keystore k.jks -storepass Ks4dF5gH6j",
            "Ks4dF5gH6j",
        );
        masked(
            &m,
            "smbclient //srv/share -U alice%Sm8nB7vC6x",
            "Sm8nB7vC6x",
        );
        masked(&m, "xfreerdp /v:host /u:bob /p:Rd3sE4dR5t", "Rd3sE4dR5t");
        masked(
            &m,
            "sudo mongosh --host db -u root -p Mg5hJ6kL7z",
            "Mg5hJ6kL7z",
        );
        masked(
            &m,
            "sqlcmd -S db -U sa -P Sq1wE2rT3y -Q 'select 1'",
            "Sq1wE2rT3y",
        );
        masked(
            &m,
            "skopeo copy --src-creds me:Sk7uI8oP9a docker://a docker://b",
            "Sk7uI8oP9a",
        );
        masked(&m, "plink -ssh -pw Pl0kM9nB8v root@host", "Pl0kM9nB8v");
    }

    #[test]
    fn placeholders_and_other_commands_are_left() {
        let m = masker();
        for line in [
            "redis-cli -a $REDIS_PASSWORD ping",
            "redis-cli -a \"${REDIS_PASS}\" ping",
            "docker login -p <password> registry",
            "docker run -p 8080:80 nginx",
            "ls -a /tmp",
            "echo redis-cli; ls -a Xk3mQ9pL2v",
            "echo redis-cli -a Xk3mQ9pL2v",
            "zip -r -P",
        ] {
            let out = m.mask(line);
            assert!(!out.contains("[password:"), "{line} -> {out}");
        }
    }
}
