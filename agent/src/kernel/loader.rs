//! Loads and attaches the embedded kernel programs.
use std::path::{Path, PathBuf};

use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        KProbe, Lsm, RawTracePoint,
        links::{FdLink, PinnedLink},
    },
};

use agent_common::{
    DaemonState, EgressRule, ExeKey, ExecExpect, ExecRuleKey, KernelOffsets, RawEvent, SubjectConf,
    UnixPeer, VerdictKey,
};

use crate::btf::{Btf, BtfError};

/// The object built by `build.rs`, aligned for the ELF parser.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/belay-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this belay-agent was built with BELAY_SKIP_EBPF=1 and has no kernel programs; \
         rebuild it without that variable"
    )]
    NoObject,
    #[error("reading kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    BtfRead(#[source] std::io::Error),
    #[error("kernel BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("kernel BTF (aya): {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error(
        "BPF LSM is not active on this kernel (`bpf` missing from /sys/kernel/security/lsm); \
         boot with lsm=...,bpf (kernel >= 5.15 with CONFIG_BPF_LSM=y)"
    )]
    NoBpfLsm,
    #[error("loading the eBPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {what}")]
    Map { name: &'static str, what: String },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another belay-agent is using {path} (its lock is held); stop it first, or give this \
         one its own --pin-dir"
    )]
    PinDirBusy { path: PathBuf },
    #[error(
        "{source}\n  {path} holds maps and links pinned by an earlier belay-agent; if this \
         follows an upgrade that changed them, stop every belay-agent and remove {path}"
    )]
    StalePins {
        path: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error("pinning the link of {name} at {path}: {what}")]
    PinLink {
        name: &'static str,
        path: PathBuf,
        what: String,
    },
}

/// True when the running kernel has BPF LSM in its active LSM list.
pub fn bpf_lsm_active() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.trim().split(',').any(|m| m == "bpf"))
}

/// The loaded programs and the maps the daemon uses.
///
/// Maps and links are pinned under the pin directory: if the daemon dies, the hooks stay
/// attached and apply the fail verdict, and the next daemon takes over the same maps
/// (who is watched, which tasks are stopped). [`unpin_links`] removes the link pins,
/// for a deliberate stop.
pub struct Loaded {
    /// Keeps the programs alive.
    pub(super) _ebpf: Ebpf,
    pub(super) links: Vec<PinnedLink>,
    pub(super) watched: HashMap<MapData, u32, u32>,
    pub(super) verdicts: HashMap<MapData, VerdictKey, u32>,
    pub(super) paused: HashMap<MapData, u32, RawEvent>,
    pub(super) exec_expect: HashMap<MapData, u32, ExecExpect>,
    pub(super) unix_peer: HashMap<MapData, u32, UnixPeer>,
    /// Taken by the heartbeat thread, its only writer.
    pub(super) daemon: Option<Array<MapData, DaemonState>>,
    pub(super) events: RingBuf<MapData>,
    pub(super) dns_events: RingBuf<MapData>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) subjects: HashMap<MapData, u32, SubjectConf>,
    pub(super) exec_rules: HashMap<MapData, ExecRuleKey, u32>,
    pub(super) egress_rules: Array<MapData, EgressRule>,
    pub(super) watch_uid: HashMap<MapData, u32, u32>,
    pub(super) watch_exe: HashMap<MapData, ExeKey, u32>,
    pub(super) watch_cgroup: HashMap<MapData, u64, u32>,
    pub offsets: KernelOffsets,
    pub pin_dir: PathBuf,
    /// Held for as long as the programs are: one daemon per pin directory.
    pub(super) _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Pins program `name`'s `link` in `pin_dir`, replacing what an earlier daemon pinned
/// there. The new link is attached before the old pin goes, so there is no moment
/// without the hook.
fn pin_link(name: &'static str, link: FdLink, pin_dir: &Path) -> Result<PinnedLink, LoadError> {
    let path = &pin_dir.join(format!("link_{name}"));
    let err = |what: String| LoadError::PinLink {
        name,
        path: path.to_owned(),
        what,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("removing the old pin: {e}"))),
    }
    link.pin(path).map_err(|e| err(e.to_string()))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Map {
        name,
        what: "missing from the object".into(),
    })?;
    T::try_from(map).map_err(|e| LoadError::Map {
        name,
        what: e.to_string(),
    })
}

impl Loaded {
    /// Loads the programs with this kernel's struct offsets, attaches every hook, and
    /// pins maps and links in `pin_dir` (on a bpf filesystem), reusing maps found there.
    pub fn load(pin_dir: &Path) -> Result<Self, LoadError> {
        Self::load_with(pin_dir, None)
    }

    /// [`Loaded::load`], with room for `watched_capacity` watched processes instead of
    /// the built-in 16,384 (only when the pinned maps are created, not when reused).
    pub fn load_with(pin_dir: &Path, watched_capacity: Option<u32>) -> Result<Self, LoadError> {
        let had_pins = std::fs::read_dir(pin_dir).is_ok_and(|mut d| d.next().is_some());
        Self::load_inner(pin_dir, watched_capacity).map_err(|e| match e {
            e @ (LoadError::PinDirBusy { .. }
            | LoadError::NoBpfLsm
            | LoadError::NoObject
            | LoadError::PinDir { .. }) => e,
            e if had_pins => LoadError::StalePins {
                path: pin_dir.to_owned(),
                source: Box::new(e),
            },
            e => e,
        })
    }

    fn load_inner(pin_dir: &Path, watched_capacity: Option<u32>) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        if !bpf_lsm_active() {
            return Err(LoadError::NoBpfLsm);
        }
        let btf = Btf::from_sys_fs().map_err(LoadError::BtfRead)??;
        let offsets = super::kernel_offsets(&btf)?;
        std::fs::create_dir_all(pin_dir).map_err(|source| LoadError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        let dir = std::fs::File::open(pin_dir).map_err(|source| LoadError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        let lock = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => LoadError::PinDirBusy {
                    path: pin_dir.to_owned(),
                },
                other => LoadError::PinDir {
                    path: pin_dir.to_owned(),
                    source: other.into(),
                },
            })?;
        let mut loader = EbpfLoader::new();
        loader
            .override_global("OFFSETS", &offsets, true)
            .default_map_pin_directory(pin_dir);
        if let Some(n) = watched_capacity {
            loader.map_max_entries("WATCHED", n);
        }
        let mut ebpf = loader.load(OBJECT)?;
        let aya_btf = AyaBtf::from_sys_fs()?;
        let mut links = Vec::new();
        // (program, hook): most programs are named after their hooks.
        for (name, hook) in [
            ("bprm_check_security", "bprm_check_security"),
            ("socket_connect", "socket_connect"),
            ("socket_sendmsg", "socket_sendmsg"),
            ("socket_sendmsg_content", "socket_sendmsg"),
            ("task_alloc", "task_alloc"),
            ("ptrace_access_check", "ptrace_access_check"),
            ("sctp_bind_connect", "sctp_bind_connect"),
            ("unix_stream_connect", "unix_stream_connect"),
            ("unix_may_send", "unix_may_send"),
        ] {
            let err = |source| LoadError::Program { name, source };
            let prog: &mut Lsm = program(&mut ebpf, name)?;
            prog.load(hook, &aya_btf).map_err(err)?;
            let id = prog.attach().map_err(err)?;
            let link = prog.take_link(id).map_err(err)?;
            links.push(pin_link(name, link.into(), pin_dir)?);
        }
        for (name, tp) in [
            ("on_fork", "sched_process_fork"),
            ("on_exit", "sched_process_exit"),
            ("on_exec", "sched_process_exec"),
        ] {
            let err = |source| LoadError::Program { name, source };
            let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
            prog.load().map_err(err)?;
            let id = prog.attach(tp).map_err(err)?;
            let link = prog.take_link(id).map_err(err)?;
            links.push(pin_link(name, link.into(), pin_dir)?);
        }
        {
            let name = "on_udp_consume";
            let err = |source| LoadError::Program { name, source };
            let prog: &mut KProbe = program(&mut ebpf, name)?;
            prog.load().map_err(err)?;
            let id = prog.attach("skb_consume_udp", 0).map_err(err)?;
            let link = prog.take_link(id).map_err(err)?;
            let link: FdLink = link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| LoadError::PinLink {
                    name,
                    path: pin_dir.join(format!("link_{name}")),
                    what: format!("the kprobe link cannot be pinned: {e}"),
                })?;
            links.push(pin_link(name, link, pin_dir)?);
        }
        Ok(Self {
            watched: take(&mut ebpf, "WATCHED")?,
            verdicts: take(&mut ebpf, "VERDICTS")?,
            paused: take(&mut ebpf, "PAUSED")?,
            exec_expect: take(&mut ebpf, "EXEC_EXPECT")?,
            unix_peer: take(&mut ebpf, "UNIX_PEER")?,
            daemon: Some(take(&mut ebpf, "DAEMON")?),
            events: take(&mut ebpf, "EVENTS")?,
            dns_events: take(&mut ebpf, "DNS_EVENTS")?,
            counters: take(&mut ebpf, "COUNTERS")?,
            subjects: take(&mut ebpf, "SUBJECTS")?,
            exec_rules: take(&mut ebpf, "EXEC_RULES")?,
            egress_rules: take(&mut ebpf, "EGRESS_RULES")?,
            watch_uid: take(&mut ebpf, "WATCH_UID")?,
            watch_exe: take(&mut ebpf, "WATCH_EXE")?,
            watch_cgroup: take(&mut ebpf, "WATCH_CGROUP")?,
            _ebpf: ebpf,
            links,
            offsets,
            pin_dir: pin_dir.to_owned(),
            _lock: lock,
        })
    }
}

/// Removes the link pins in `pin_dir`, so the hooks detach once their last holder goes.
/// The map pins stay: a later daemon still finds who is watched.
pub fn unpin_links(links: Vec<PinnedLink>) {
    for link in links {
        if let Err(e) = link.unpin() {
            tracing::warn!(error = %e, "removing a link pin failed");
        }
    }
}
