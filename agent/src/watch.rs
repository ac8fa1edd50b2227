//! Finding the processes a policy's subjects name (by uid, executable or cgroup) that
//! already run. New processes are caught by the kernel when they exec (`WATCH_UID`,
//! `WATCH_EXE`, `WATCH_CGROUP`); this covers those started before the daemon or the
//! policy, and those moved into a cgroup without exec'ing afterwards.
use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::policy::Policy;

/// Where the cgroup v2 hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Deepest cgroup tree walked under a subject's cgroup.
const MAX_DEPTH: usize = 16;

/// Who a process is, as far as subjects' `match` sections care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    /// `(ino, st_dev)` of its executable.
    pub exe: Option<(u64, u64)>,
    /// Its cgroup v2 path.
    pub cgroup: Option<String>,
}

/// Reads a process's identity from `proc` (normally /proc); None if it is gone.
pub fn identity(proc: &Path, tgid: u32) -> Option<Identity> {
    let dir = proc.join(tgid.to_string());
    let status = fs::read_to_string(dir.join("status")).ok()?;
    // "Uid:\treal\teffective\tsaved\tfs": the real uid, as the kernel's check on exec.
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())?;
    let exe = fs::metadata(dir.join("exe"))
        .ok()
        .map(|m| (m.ino(), m.dev()));
    let cgroup = fs::read_to_string(dir.join("cgroup")).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
    });
    Some(Identity { uid, exe, cgroup })
}

/// True when `path` is `prefix` or inside it (whole path segments).
fn in_subtree(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The subject (id) a process with `who` belongs to, in the policy's order of subjects.
pub fn subject_for(policy: &Policy, who: &Identity) -> Option<u32> {
    policy.subjects.iter().find_map(|s| {
        let by_uid = s.uids.contains(&who.uid);
        let by_exe = who.exe.is_some_and(|(ino, dev)| {
            s.executables.iter().any(|p| {
                fs::metadata(p)
                    .map(|m| m.ino() == ino && m.dev() == dev)
                    .unwrap_or(false)
            })
        });
        let by_cgroup = who
            .cgroup
            .as_deref()
            .is_some_and(|cg| s.cgroups.iter().any(|p| in_subtree(cg, p)));
        (by_uid || by_exe || by_cgroup).then_some(s.id)
    })
}

/// Every running process (other than `except`) that a subject names, with its subject.
/// Walks all of /proc: for start-up and reloads.
pub fn scan_all(proc: &Path, policy: &Policy, except: &[u32]) -> BTreeMap<u32, u32> {
    let mut found = BTreeMap::new();
    let Ok(dir) = fs::read_dir(proc) else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(tgid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if except.contains(&tgid) || is_kernel_thread(proc, tgid) {
            continue;
        }
        if let Some(subject) = identity(proc, tgid).and_then(|who| subject_for(policy, &who)) {
            found.insert(tgid, subject);
        }
    }
    found
}

/// Kernel threads have no memory map; they never act for an agent.
fn is_kernel_thread(proc: &Path, tgid: u32) -> bool {
    fs::read_to_string(proc.join(tgid.to_string()).join("stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            // Field 9 (flags) is the 7th after the comm; PF_KTHREAD = 0x00200000.
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & 0x0020_0000 != 0)
}

/// The processes in the subjects' cgroups (whole subtrees), read from `cgroup.procs`.
/// Cheap enough to run every few seconds: it only reads the named subtrees.
pub fn scan_cgroups(root: &Path, policy: &Policy, except: &[u32]) -> BTreeMap<u32, u32> {
    let mut found = BTreeMap::new();
    for s in &policy.subjects {
        for cg in &s.cgroups {
            let dir = root.join(cg.trim_start_matches('/'));
            collect_procs(&dir, 0, &mut |tgid| {
                if !except.contains(&tgid) {
                    found.entry(tgid).or_insert(s.id);
                }
            });
        }
    }
    found
}

fn collect_procs(dir: &PathBuf, depth: usize, out: &mut dyn FnMut(u32)) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for tgid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
            out(tgid);
        }
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&e.path(), depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_matches_whole_segments_only() {
        assert!(in_subtree(
            "/system.slice/a.service",
            "/system.slice/a.service"
        ));
        assert!(in_subtree(
            "/system.slice/a.service/x",
            "/system.slice/a.service"
        ));
        assert!(in_subtree(
            "/system.slice/a.service/x",
            "/system.slice/a.service/"
        ));
        assert!(!in_subtree(
            "/system.slice/a.service2",
            "/system.slice/a.service"
        ));
        assert!(!in_subtree("/system.slice", "/system.slice/a.service"));
        assert!(in_subtree("/anything", "/"));
    }

    #[test]
    fn reads_this_process_identity() {
        let me = std::process::id();
        let who = identity(Path::new("/proc"), me).expect("own /proc entry");
        assert_eq!(who.uid, nix::unistd::getuid().as_raw());
        let exe = fs::metadata("/proc/self/exe").unwrap();
        assert_eq!(who.exe, Some((exe.ino(), exe.dev())));
        assert!(!is_kernel_thread(Path::new("/proc"), me));
    }

    #[test]
    fn fake_cgroup_tree_is_walked_recursively() {
        let root = tempfile::tempdir().unwrap();
        let unit = root.path().join("system.slice/agent.service");
        fs::create_dir_all(unit.join("child")).unwrap();
        fs::write(unit.join("cgroup.procs"), "10\n11\n").unwrap();
        fs::write(unit.join("child/cgroup.procs"), "12\n").unwrap();
        fs::create_dir_all(root.path().join("system.slice/other.service")).unwrap();
        fs::write(
            root.path().join("system.slice/other.service/cgroup.procs"),
            "13\n",
        )
        .unwrap();
        let text = "version: 1\nsubjects:\n  - name: a\n    owner: o\n    match:\n      cgroups: [/system.slice/agent.service]\n    default: ask\n";
        let policy = Policy::parse(text, Path::new("p.yaml")).unwrap();
        let id = policy.subjects[0].id;
        let found = scan_cgroups(root.path(), &policy, &[11]);
        assert_eq!(found, BTreeMap::from([(10, id), (12, id)]));
    }
}
