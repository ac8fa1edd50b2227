//! Loads and attaches the embedded kernel programs.
use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Lsm, RawTracePoint},
};

use agent_common::{KernelOffsets, VerdictKey};

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
}

/// True when the running kernel has BPF LSM in its active LSM list.
pub fn bpf_lsm_active() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.trim().split(',').any(|m| m == "bpf"))
}

/// The loaded programs and the maps the daemon uses. Dropping it detaches everything.
pub struct Loaded {
    /// Keeps the programs and their links alive.
    pub(super) _ebpf: Ebpf,
    pub(super) watched: HashMap<MapData, u32, u32>,
    pub(super) verdicts: HashMap<MapData, VerdictKey, u32>,
    pub(super) events: RingBuf<MapData>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub offsets: KernelOffsets,
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
    /// Loads the programs with this kernel's struct offsets and attaches every hook.
    pub fn load() -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        if !bpf_lsm_active() {
            return Err(LoadError::NoBpfLsm);
        }
        let btf = Btf::from_sys_fs().map_err(LoadError::BtfRead)??;
        let offsets = super::kernel_offsets(&btf)?;
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .load(OBJECT)?;
        let aya_btf = AyaBtf::from_sys_fs()?;
        for (name, hook) in [
            ("bprm_check_security", "bprm_check_security"),
            ("socket_connect", "socket_connect"),
            ("socket_sendmsg", "socket_sendmsg"),
        ] {
            let err = |source| LoadError::Program { name, source };
            let prog: &mut Lsm = ebpf
                .program_mut(name)
                .ok_or(LoadError::Map {
                    name,
                    what: "program missing from the object".into(),
                })?
                .try_into()
                .map_err(err)?;
            prog.load(hook, &aya_btf).map_err(err)?;
            prog.attach().map_err(err)?;
        }
        for (name, tp) in [
            ("on_fork", "sched_process_fork"),
            ("on_exit", "sched_process_exit"),
        ] {
            let err = |source| LoadError::Program { name, source };
            let prog: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(LoadError::Map {
                    name,
                    what: "program missing from the object".into(),
                })?
                .try_into()
                .map_err(err)?;
            prog.load().map_err(err)?;
            prog.attach(tp).map_err(err)?;
        }
        Ok(Self {
            watched: take(&mut ebpf, "WATCHED")?,
            verdicts: take(&mut ebpf, "VERDICTS")?,
            events: take(&mut ebpf, "EVENTS")?,
            counters: take(&mut ebpf, "COUNTERS")?,
            _ebpf: ebpf,
            offsets,
        })
    }
}
