//! Who may decide a request on this host.
//!
//! No agent approves its own actions: a watched process may not decide anything, and the
//! uid that owns the paused process may not decide its request, whatever its role.
//! Beyond that, root and the members of one configured group may decide.

/// The process asking to decide, as the kernel reports it on the socket and in /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub watched: bool,
}

impl Caller {
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Supplementary groups of `pid` (the `Groups:` line of /proc/PID/status).
pub fn groups_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Whether `caller` may decide a request whose paused process runs as `owner_uid`.
pub fn may_decide(caller: &Caller, decider_gid: Option<u32>, owner_uid: u32) -> Result<(), String> {
    if caller.watched {
        return Err(format!(
            "process {} is watched by belay: a watched process cannot decide requests",
            caller.pid
        ));
    }
    if caller.uid == owner_uid {
        return Err(format!(
            "uid {} owns the paused process and may not decide its request",
            caller.uid
        ));
    }
    if caller.uid == 0 || decider_gid.is_some_and(|g| caller.in_group(g)) {
        return Ok(());
    }
    Err(match decider_gid {
        Some(g) => format!(
            "uid {} may not decide requests: only root or group {g} may",
            caller.uid
        ),
        None => format!("uid {} may not decide requests: only root may", caller.uid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            pid: 10,
            uid,
            gid,
            groups: groups.to_vec(),
            watched: false,
        }
    }

    #[test]
    fn root_decides_for_others() {
        assert_eq!(may_decide(&caller(0, 0, &[]), None, 1000), Ok(()));
    }

    #[test]
    fn the_owner_uid_never_decides_even_as_root_or_group_member() {
        let err = may_decide(&caller(1000, 50, &[]), Some(50), 1000).unwrap_err();
        assert!(err.contains("owns the paused process"), "{err}");
        let err = may_decide(&caller(0, 0, &[]), None, 0).unwrap_err();
        assert!(err.contains("owns the paused process"), "{err}");
    }

    #[test]
    fn group_members_decide_by_primary_or_supplementary_group() {
        assert_eq!(may_decide(&caller(1001, 50, &[]), Some(50), 1000), Ok(()));
        assert_eq!(
            may_decide(&caller(1001, 7, &[3, 50]), Some(50), 1000),
            Ok(())
        );
        let err = may_decide(&caller(1001, 7, &[3]), Some(50), 1000).unwrap_err();
        assert!(err.contains("only root or group 50"), "{err}");
        let err = may_decide(&caller(1001, 50, &[]), None, 1000).unwrap_err();
        assert!(err.contains("only root may"), "{err}");
    }

    #[test]
    fn a_watched_process_never_decides() {
        let mut c = caller(0, 0, &[]);
        c.watched = true;
        assert!(may_decide(&c, None, 1000).unwrap_err().contains("watched"));
    }

    #[test]
    fn reads_own_groups() {
        // The test process's groups as /proc shows them, compared with getgroups(2).
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = groups_of(std::process::id());
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
    }
}
