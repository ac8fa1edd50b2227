//! What of a policy the kernel can decide by itself, as the contents of its maps.
//!
//! The kernel never decides differently from [`Subject::decide_exec`],
//! [`Subject::decide_egress`] and [`Subject::decide_unix`] would: whatever it cannot settle exactly, it leaves as
//! [`rule_action::ASK`] (pause, and let the daemon evaluate the whole policy).
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_common::{EGRESS_RULES_PER_SUBJECT, ExeKey, ExecRuleKey, SubjectConf};

use super::{Destination, ExecRule, Policy, Subject, rule_action};

/// The kernel maps' contents for a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTables {
    /// Subject id -> its configuration. `egress_first` is relative to [`Self::egress`]
    /// (the caller adds the base of the generation it writes).
    pub subjects: Vec<(u32, SubjectConf)>,
    /// (subject, file) -> [`rule_action`].
    pub exec: Vec<(ExecRuleKey, u32)>,
    pub egress: Vec<agent_common::EgressRule>,
    /// uid -> subject id.
    pub watch_uid: Vec<(u32, u32)>,
    /// Executable file -> subject id.
    pub watch_exe: Vec<(ExeKey, u32)>,
    /// cgroup id -> subject id.
    pub watch_cgroup: Vec<(u64, u32)>,
    /// Files whose identity is compiled in, to re-check later: (path, ino, kernel dev).
    /// When one of them changes, compile again.
    pub files: Vec<(PathBuf, u64, u32)>,
    /// Parts of the policy that could not be put in the kernel, for the operator.
    pub warnings: Vec<String>,
}

/// How [`compile`] learns about files and cgroups on this host.
pub trait Resolver {
    /// The inode number and device (kernel encoding, `major << 20 | minor`) of the file
    /// at `path`, following symlinks; `None` if there is none.
    fn file(&self, path: &Path) -> Option<(u64, u32)>;
    /// The id of the cgroup at `path` (relative to the cgroup2 root); `None` if there is
    /// none.
    fn cgroup_id(&self, path: &str) -> Option<u64>;
    /// `path` with every symlink resolved; `None` if it cannot be (then `path` is taken
    /// as it is).
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        let _ = path;
        None
    }
}

/// The [`Resolver`] of the running host: the filesystem and `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostResolver;

/// A device number as `stat` gives it, in the kernel's `s_dev` encoding.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

impl Resolver for HostResolver {
    fn file(&self, path: &Path) -> Option<(u64, u32)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.ino(), kernel_dev(meta.dev())))
    }

    fn cgroup_id(&self, path: &str) -> Option<u64> {
        let full = format!("/sys/fs/cgroup{}", path.trim_end_matches('/'));
        let meta = std::fs::metadata(full).ok()?;
        meta.is_dir().then(|| meta.ino())
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }
}

/// Compiles what the kernel can decide by itself. Never fails: what cannot be compiled
/// is left to the daemon, with a warning when it is something the operator should know.
pub fn compile(policy: &Policy, resolver: &dyn Resolver) -> KernelTables {
    let mut out = KernelTables::default();
    let mut files_seen = HashSet::new();
    let mut exe_claims: HashMap<(u64, u32), usize> = HashMap::new();
    let mut cgroup_claims: HashMap<u64, usize> = HashMap::new();
    for (si, subject) in policy.subjects.iter().enumerate() {
        let exec_miss = compile_exec(si, subject, resolver, &mut out, &mut files_seen);
        let first = out.egress.len();
        let egress_miss = compile_egress(si, subject, &mut out);
        out.subjects.push((
            subject.id,
            SubjectConf {
                exec_miss,
                egress_miss,
                egress_first: first as u32,
                egress_len: (out.egress.len() - first) as u32,
                unix_action: unix_action(subject),
                _pad: 0,
            },
        ));

        for &uid in &subject.uids {
            out.watch_uid.push((uid, subject.id));
        }
        for (i, exe) in subject.executables.iter().enumerate() {
            let Some((ino, dev)) = resolver.file(exe) else {
                out.warnings.push(format!(
                    "subjects[{si}].match.executables[{i}]: {} does not exist; its processes are not watched",
                    exe.display()
                ));
                continue;
            };
            note_file(&mut out, &mut files_seen, exe, ino, dev);
            match exe_claims.get(&(ino, dev)) {
                Some(&owner) if owner == si => {}
                Some(&owner) => out.warnings.push(format!(
                    "subjects[{si}].match.executables[{i}]: {} is the same file as an executable of subject {:?}; it stays watched as that subject",
                    exe.display(),
                    policy.subjects[owner].name
                )),
                None => {
                    exe_claims.insert((ino, dev), si);
                    out.watch_exe.push((ExeKey { dev, _pad: 0, ino }, subject.id));
                }
            }
        }
        for (i, cg) in subject.cgroups.iter().enumerate() {
            let Some(id) = resolver.cgroup_id(cg) else {
                out.warnings.push(format!(
                    "subjects[{si}].match.cgroups[{i}]: cgroup {cg} does not exist; its processes are not watched"
                ));
                continue;
            };
            match cgroup_claims.get(&id) {
                Some(&owner) if owner == si => {}
                Some(&owner) => out.warnings.push(format!(
                    "subjects[{si}].match.cgroups[{i}]: cgroup {cg} is the same cgroup as one of subject {:?}; it stays watched as that subject",
                    policy.subjects[owner].name
                )),
                None => {
                    cgroup_claims.insert(id, si);
                    out.watch_cgroup.push((id, subject.id));
                }
            }
        }
    }
    out
}

fn note_file(
    out: &mut KernelTables,
    seen: &mut HashSet<(PathBuf, u64, u32)>,
    path: &Path,
    ino: u64,
    dev: u32,
) {
    let entry = (path.to_path_buf(), ino, dev);
    if seen.insert(entry.clone()) {
        out.files.push(entry);
    }
}

/// The file a literal, absolute rule path names.
fn literal_file(rule: &ExecRule, resolver: &dyn Resolver) -> Option<(u64, u32)> {
    let lit = rule.path.literal()?;
    if !lit.starts_with('/') {
        return None;
    }
    resolver.file(Path::new(lit))
}

/// Whether the earlier rule `earlier` could decide an exec of the file `file` (reached
/// as `lit`, or `canonical`) before a rule whose kernel code is `code`.
fn could_shadow(
    earlier: &ExecRule,
    lit: &str,
    canonical: Option<&str>,
    file: (u64, u32),
    code: u32,
    resolver: &dyn Resolver,
) -> bool {
    if earlier.path.matches(lit) || canonical.is_some_and(|c| earlier.path.matches(c)) {
        return true;
    }
    if earlier.path.is_literal()
        && let Some(other) = literal_file(earlier, resolver)
    {
        // Its one path names a file: it can only match an exec of that file (which is
        // re-checked through `files`).
        return other == file;
    }
    // A glob, or a path with no file behind it now: some name it matches could lead to
    // this file (a symlink created later), and then the daemon would apply it first.
    // Harmless only when it would decide the same in the kernel.
    earlier.action.kernel_code() != code
}

/// Fills the `EXEC_RULES` entries of one subject; returns its `exec_miss`.
fn compile_exec(
    si: usize,
    subject: &Subject,
    resolver: &dyn Resolver,
    out: &mut KernelTables,
    files_seen: &mut HashSet<(PathBuf, u64, u32)>,
) -> u32 {
    let mut compiled: HashSet<(u64, u32)> = HashSet::new();
    let mut all_in_kernel = true;
    for (i, rule) in subject.exec.iter().enumerate() {
        let Some(lit) = rule.path.literal() else {
            all_in_kernel = false;
            continue;
        };
        let file = literal_file(rule, resolver);
        if let Some((ino, dev)) = file {
            note_file(out, files_seen, Path::new(lit), ino, dev);
        }
        let Some(file) = file else {
            all_in_kernel = false;
            out.warnings.push(if lit.starts_with('/') {
                format!("subjects[{si}].exec[{i}]: {lit} does not exist; decided by the daemon")
            } else {
                format!(
                    "subjects[{si}].exec[{i}]: {lit} is not an absolute path; decided by the daemon"
                )
            });
            continue;
        };
        if compiled.contains(&file) {
            // An earlier rule already decides every exec of this file: this one can
            // never match anything else.
            continue;
        }
        if rule.argv.is_some() {
            all_in_kernel = false;
            continue;
        }
        let code = rule.action.kernel_code();
        let canonical = resolver
            .canonical(Path::new(lit))
            .and_then(|p| p.to_str().map(str::to_owned));
        let shadowed = subject.exec[..i]
            .iter()
            .any(|earlier| could_shadow(earlier, lit, canonical.as_deref(), file, code, resolver));
        if shadowed {
            all_in_kernel = false;
            continue;
        }
        compiled.insert(file);
        out.exec.push((
            ExecRuleKey {
                subject: subject.id,
                dev: file.1,
                ino: file.0,
            },
            code,
        ));
    }
    if all_in_kernel {
        subject.exec_default.kernel_code()
    } else {
        rule_action::ASK
    }
}

/// The kernel's action for a subject's Unix socket destinations: its egress default
/// when no rule names Unix sockets (then no rule can match one), else ask (the daemon
/// matches the path against the rules).
fn unix_action(subject: &Subject) -> u32 {
    if subject.egress.iter().any(|r| r.has_unix()) {
        rule_action::ASK
    } else {
        subject.egress_default.kernel_code()
    }
}

/// Appends one subject's egress rules to `out.egress`; returns its `egress_miss`.
fn compile_egress(si: usize, subject: &Subject, out: &mut KernelTables) -> u32 {
    let mut rules: Vec<agent_common::EgressRule> = Vec::new();
    let mut miss = subject.egress_default.kernel_code();
    'rules: for rule in &subject.egress {
        if !rule.has_ip() {
            // Only Unix sockets: nothing for the address table.
            continue;
        }
        let proto = rule.protocol.map_or(0, |p| p.sock_type() as u8);
        let ports = if rule.ports.is_empty() {
            vec![0..=u16::MAX]
        } else {
            rule.ports.clone()
        };
        let has_host = rule.to.iter().any(|d| matches!(d, Destination::Host(_)));
        let code = rule.action.kernel_code();
        for range in ports {
            let mut push = |prefix_len: u8, addr: [u8; 16], action: u32| {
                rules.push(agent_common::EgressRule {
                    addr,
                    prefix_len,
                    proto,
                    _pad: 0,
                    port_lo: *range.start(),
                    port_hi: *range.end(),
                    action,
                });
            };
            if rule.to.is_empty() {
                push(0, [0; 16], code);
            } else {
                for dest in &rule.to {
                    if let Destination::Net(cidr) = dest {
                        let (bits, addr) = cidr.kernel_form();
                        push(bits, addr, code);
                    }
                }
                // The kernel does not know hostnames: from here on, for these ports,
                // the daemon decides.
                if has_host {
                    push(0, [0; 16], rule_action::ASK);
                }
            }
            let last = rules[rules.len() - 1];
            if last.prefix_len == 0
                && last.proto == 0
                && last.port_lo == 0
                && last.port_hi == u16::MAX
            {
                // Matches everything: nothing after it is ever reached; it is the miss.
                rules.pop();
                miss = last.action;
                break 'rules;
            }
        }
    }
    let limit = EGRESS_RULES_PER_SUBJECT as usize;
    if rules.len() > limit {
        out.warnings.push(format!(
            "subjects[{si}].egress: needs {} kernel rules, more than the {limit} the kernel walks; the rest are decided by the daemon",
            rules.len()
        ));
        rules.truncate(limit);
        miss = rule_action::ASK;
    }
    if miss == rule_action::ASK {
        // Rules that ask just before a miss that asks change nothing.
        while rules.last().is_some_and(|r| r.action == rule_action::ASK) {
            rules.pop();
        }
    }
    out.egress.extend(rules);
    miss
}
