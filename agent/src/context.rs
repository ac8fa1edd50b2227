//! What a reviewer needs to know about a paused process, beyond the request itself: the
//! machine, who started it (its ancestry), as which user, in which cgroup, container and
//! Kubernetes pod, from which directory. Everything is read from /proc on a best-effort
//! basis: a process may exit while we look, and nothing here may fail or panic.
use std::{fs, sync::OnceLock};

pub use belay_agent_api::{Ancestor, ProcessContext};
use belay_proto::display::escape;

/// How many ancestors [`collect`] walks up at most.
pub const MAX_ANCESTRY: usize = belay_agent_api::MAX_ANCESTRY;

/// Fields of `/proc/PID/stat` this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Raw `comm` (between the first `(` and the last `)`), not escaped.
    pub comm: String,
    pub ppid: u32,
    /// Start time in clock ticks after boot (field 22).
    pub start_time: u64,
}

/// Gathers the context of process `tgid` (running as `uid`) from /proc. Every field is
/// best effort; a vanished process yields only `host` (and `user`).
pub fn collect(tgid: u32, uid: u32) -> ProcessContext {
    let own = read_stat(tgid);
    let ppid = own.as_ref().map(|s| s.ppid).or_else(|| {
        read_lossy(&format!("/proc/{tgid}/status")).and_then(|s| parse_status_ppid(&s))
    });
    let ancestry = ancestry(ppid, own.as_ref().map(|s| s.start_time));
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let cgroup = read_lossy(&format!("/proc/{tgid}/cgroup")).and_then(|s| parse_cgroup_v2(&s));
    let container_id = cgroup.as_deref().and_then(container_id_from_cgroup);
    let pod_uid = cgroup.as_deref().and_then(pod_uid_from_cgroup);
    let cwd = fs::read_link(format!("/proc/{tgid}/cwd"))
        .ok()
        .map(|p| p.display().to_string());
    ProcessContext {
        host: hostname(),
        ppid,
        ancestry,
        user,
        cgroup,
        container_id,
        pod_uid,
        cwd,
    }
}

/// Walks up from `ppid`. `child_start` is the start time of the process whose parent
/// `ppid` is: a parent cannot have started after its child, so an entry that did is a
/// recycled pid and ends the walk.
fn ancestry(ppid: Option<u32>, mut child_start: Option<u64>) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut next = ppid;
    while let Some(pid) = next {
        if pid == 0 || out.len() >= MAX_ANCESTRY {
            break;
        }
        let Some(stat) = read_stat(pid) else { break };
        if child_start.is_some_and(|c| stat.start_time > c) {
            break;
        }
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
        out.push(Ancestor {
            pid,
            // A process names itself (`prctl(PR_SET_NAME)`): its name reaches belay-server,
            // which refuses control characters in a context, escaped.
            comm: escape(&stat.comm).into_owned(),
            exe,
        });
        if pid == 1 || stat.ppid == pid {
            break;
        }
        next = Some(stat.ppid);
        child_start = Some(stat.start_time);
    }
    out
}

/// This machine's hostname, looked up once.
pub fn hostname() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| read_lossy("/proc/sys/kernel/hostname").map(|h| h.trim_end().to_owned()))
            .unwrap_or_else(|| "unknown".to_owned())
    })
    .clone()
}

/// The `PPid:` line of `/proc/PID/status`.
pub fn parse_status_ppid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid ...`. `comm` may contain spaces and
/// parentheses, so it runs from the first `(` to the *last* `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = stat[open + 1..close].to_owned();
    // After comm: state(3) ppid(4) ... starttime(22), numbered as in proc(5).
    let mut rest = stat[close + 1..].split_whitespace();
    let ppid = rest.nth(1)?.parse().ok()?;
    let start_time = rest.nth(22 - 5)?.parse().ok()?;
    Some(Stat {
        comm,
        ppid,
        start_time,
    })
}

/// The start time of `pid` (clock ticks after boot): with the pid, it names one process
/// across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&read_lossy(&format!("/proc/{pid}/stat"))?)
}

/// Reads a /proc file as text; comm and paths need not be UTF-8.
fn read_lossy(path: &str) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The unified hierarchy's path from the contents of `/proc/PID/cgroup`.
fn parse_cgroup_v2(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Segment prefixes container runtimes put before the id (`docker-<id>.scope` under
/// systemd, `crio-<id>` under cgroupfs, ...). `crio-conmon-<id>` and
/// `libpod-conmon-<id>` are the runtimes' monitor processes, not containers: what follows
/// the prefix is then not a bare id, so they never match.
const CONTAINER_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];

/// The container id in a cgroup path: the full 64-hex id of the innermost segment that
/// names a container (Docker, containerd/CRI, CRI-O, podman; systemd or cgroupfs
/// drivers). Ids are lowercase hex as every runtime writes them; a segment with uppercase
/// hex is not taken for a container.
pub fn container_id_from_cgroup(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|seg| {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = CONTAINER_PREFIXES
            .iter()
            .find_map(|p| seg.strip_prefix(p))
            .unwrap_or(seg);
        is_lower_hex(id, 64).then(|| id.to_owned())
    })
}

/// The Kubernetes pod UID in a cgroup path: `pod<uid>` under the cgroupfs driver,
/// `kubepods-<qos>-pod<uid with '_' for '-'>.slice` under systemd. Returned with dashes,
/// as the API server shows it; the innermost match wins. Static pods' UIDs are 32 hex
/// digits without dashes.
pub fn pod_uid_from_cgroup(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|seg| {
        let seg = seg.strip_suffix(".slice").unwrap_or(seg);
        let uid = match seg.strip_prefix("pod") {
            Some(uid) => uid,
            None => seg.rsplit_once('-')?.1.strip_prefix("pod")?,
        };
        let uid = uid.replace('_', "-");
        is_pod_uid(&uid).then_some(uid)
    })
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A UUID (8-4-4-4-12 lowercase hex) or a static pod's 32-hex hash.
fn is_pod_uid(s: &str) -> bool {
    if is_lower_hex(s, 32) {
        return true;
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| is_lower_hex(p, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_cgroups() {
        assert_eq!(
            container_id_from_cgroup(&format!("/docker/{ID}")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            container_id_from_cgroup(&format!("/system.slice/docker-{ID}.scope")).as_deref(),
            Some(ID)
        );
        // Docker in Docker: the innermost container is the process's own.
        assert_eq!(
            container_id_from_cgroup(&format!("/docker/{ID}/docker/{ID2}")).as_deref(),
            Some(ID2)
        );
        // A cgroup the container created below its own still belongs to it.
        assert_eq!(
            container_id_from_cgroup(&format!("/system.slice/docker-{ID}.scope/init.scope"))
                .as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn containerd_and_kubepods_cgroups() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod6d3a1c2e_8f4b_4c1d_9e2a_0b1c2d3e4f50.slice/\
             cri-containerd-{ID}.scope"
        );
        assert_eq!(container_id_from_cgroup(&systemd).as_deref(), Some(ID));
        assert_eq!(
            pod_uid_from_cgroup(&systemd).as_deref(),
            Some("6d3a1c2e-8f4b-4c1d-9e2a-0b1c2d3e4f50")
        );

        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod0b1c2d3e_4f50_6d3a_1c2e_8f4b4c1d9e2a.slice/\
             cri-containerd-{ID2}.scope"
        );
        assert_eq!(container_id_from_cgroup(&besteffort).as_deref(), Some(ID2));
        assert_eq!(
            pod_uid_from_cgroup(&besteffort).as_deref(),
            Some("0b1c2d3e-4f50-6d3a-1c2e-8f4b4c1d9e2a")
        );

        // Guaranteed QoS: no QoS slice.
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/\
             cri-containerd-{ID}.scope"
        );
        assert_eq!(
            pod_uid_from_cgroup(&guaranteed).as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(container_id_from_cgroup(&guaranteed).as_deref(), Some(ID));

        // cgroupfs driver.
        let cgroupfs = format!("/kubepods/burstable/pod6d3a1c2e-8f4b-4c1d-9e2a-0b1c2d3e4f50/{ID}");
        assert_eq!(container_id_from_cgroup(&cgroupfs).as_deref(), Some(ID));
        assert_eq!(
            pod_uid_from_cgroup(&cgroupfs).as_deref(),
            Some("6d3a1c2e-8f4b-4c1d-9e2a-0b1c2d3e4f50")
        );

        // A static pod's UID is a hash of its manifest.
        let static_pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0c7f0f6f1d8b6b7a3e4c3b7f1f1a0f0c.slice/\
             cri-containerd-{ID}.scope"
        );
        assert_eq!(
            pod_uid_from_cgroup(&static_pod).as_deref(),
            Some("0c7f0f6f1d8b6b7a3e4c3b7f1f1a0f0c")
        );
    }

    #[test]
    fn crio_and_podman_cgroups() {
        let crio = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod6d3a1c2e_8f4b_4c1d_9e2a_0b1c2d3e4f50.slice/crio-{ID}.scope"
        );
        assert_eq!(container_id_from_cgroup(&crio).as_deref(), Some(ID));
        assert_eq!(
            container_id_from_cgroup(&format!("/kubepods/besteffort/podx/crio-{ID}")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            container_id_from_cgroup(&format!("/machine.slice/libpod-{ID}.scope")).as_deref(),
            Some(ID)
        );
        // Rootless podman, with the container's own sub-cgroup.
        assert_eq!(
            container_id_from_cgroup(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/\
                 libpod-{ID}.scope/container"
            ))
            .as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn monitors_and_lookalikes_are_not_containers() {
        let conmon = [
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod6d3a1c2e_8f4b_4c1d_9e2a_0b1c2d3e4f50.slice/\
                 crio-conmon-{ID}.scope"
            ),
        ];
        for path in &conmon {
            assert_eq!(container_id_from_cgroup(path), None, "{path}");
        }
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/docker-3f4e5d6c7b8a.scope", // short
            "/docker/3f4e5d6c7b8a99887766554433221100ffee", // short
            &format!("/docker/{ID}0"),                 // too long
            &format!("/docker/{}", ID.to_uppercase()), // uppercase: rejected
            &format!("/system.slice/docker-{}.scope", ID.replace('f', "g")),
            &format!("/system.slice/podman-{ID}.scope"), // unknown prefix
        ] {
            assert_eq!(container_id_from_cgroup(path), None, "{path}");
        }
        for path in [
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods.slice",
            "/kubepods/burstable/podnot-a-uid",
            "/kubepods/burstable/pod6D3A1C2E-8F4B-4C1D-9E2A-0B1C2D3E4F50",
            "/system.slice/pod.service",
        ] {
            assert_eq!(pod_uid_from_cgroup(path), None, "{path}");
        }
    }

    #[test]
    fn cgroup_file_v2_line() {
        let hybrid = "12:pids:/user.slice\n1:name=systemd:/user.slice/session-2.scope\n\
                      0::/user.slice/session-2.scope\n";
        assert_eq!(
            parse_cgroup_v2(hybrid).as_deref(),
            Some("/user.slice/session-2.scope")
        );
        assert_eq!(parse_cgroup_v2("12:pids:/user.slice\n"), None);
    }

    #[test]
    fn stat_with_odd_comm() {
        // 52 fields as in proc(5); starttime (22) is 4242.
        let tail = "S 77 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let stat = format!("12 (a) (b c)) {tail}\n");
        assert_eq!(
            parse_stat(&stat),
            Some(Stat {
                comm: "a) (b c)".into(),
                ppid: 77,
                start_time: 4242
            })
        );
        let stat = format!("12 ( x ) ) {tail}");
        assert_eq!(parse_stat(&stat).map(|s| s.comm), Some(" x ) ".into()));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (a) S"), None);
        assert_eq!(parse_stat(") 1 ("), None);
        assert_eq!(parse_stat("12 (a) S x 1"), None);
    }

    #[test]
    fn status_ppid() {
        let status = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t9\nNgid:\t0\n\
                      Pid:\t9\nPPid:\t4\nTracerPid:\t0\n";
        assert_eq!(parse_status_ppid(status), Some(4));
        assert_eq!(parse_status_ppid("Name:\tPPid: 3\n"), None);
        assert_eq!(parse_status_ppid("PPid:\tx\n"), None);
    }

    #[test]
    fn own_context() {
        let me = std::process::id();
        let uid = nix::unistd::getuid();
        let ctx = collect(me, uid.as_raw());
        let parent = std::os::unix::process::parent_id();
        assert_eq!(ctx.ppid, Some(parent));
        let first = ctx.ancestry.first().expect("the test runner has a parent");
        assert_eq!(first.pid, parent);
        let comm = fs::read_to_string(format!("/proc/{parent}/comm")).unwrap();
        assert_eq!(first.comm, escape(comm.trim_end_matches('\n')));
        assert!(ctx.ancestry.len() <= MAX_ANCESTRY);
        let last = ctx.ancestry.last().unwrap();
        assert!(
            last.pid == 1 || ctx.ancestry.len() == MAX_ANCESTRY,
            "ancestry ends at init: {:?}",
            ctx.ancestry
        );
        // Each entry is the parent of the one before it.
        for w in ctx.ancestry.windows(2) {
            assert_eq!(read_stat(w[0].pid).map(|s| s.ppid), Some(w[1].pid));
        }
        assert_eq!(
            ctx.cwd.as_deref(),
            Some(std::env::current_dir().unwrap().to_str().unwrap())
        );
        assert_eq!(ctx.host, hostname());
        assert!(!ctx.host.is_empty());
        let name = nix::unistd::User::from_uid(uid).unwrap().map(|u| u.name);
        assert_eq!(ctx.user, name);
        let cgroup = fs::read_to_string(format!("/proc/{me}/cgroup")).unwrap();
        assert_eq!(ctx.cgroup, parse_cgroup_v2(&cgroup));
    }

    #[test]
    fn vanished_process() {
        // Beyond the kernel's pid_max limit (4194304): never a live process.
        let ctx = collect(u32::MAX - 1, u32::MAX - 1);
        assert_eq!(
            ctx,
            ProcessContext {
                host: hostname(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn context_round_trips_through_json() {
        let ctx = ProcessContext {
            host: "h".into(),
            ppid: Some(2),
            ancestry: vec![Ancestor {
                pid: 2,
                comm: "bash".into(),
                exe: Some("/usr/bin/bash".into()),
            }],
            user: Some("u".into()),
            cgroup: Some(format!("/docker/{ID}")),
            container_id: Some(ID.into()),
            pod_uid: None,
            cwd: Some("/".into()),
        };
        let json = serde_json::to_string(&ctx).unwrap();
        assert_eq!(serde_json::from_str::<ProcessContext>(&json).unwrap(), ctx);
    }
}
