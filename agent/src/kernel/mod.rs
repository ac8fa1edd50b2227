//! Everything that touches the kernel: the [`Backend`] seam, the BPF LSM backend (its
//! programs loaded with offsets from the running kernel), and the one task that owns
//! the backend.
mod backend;
mod enforcer;
mod heartbeat;
mod loader;
mod lsm;
mod offsets;

pub use agent_common::decode::{Action, PauseEvent, Transport};
pub use backend::{
    Backend, Counters, DnsDirection, DnsMessage, EnforcerError, FailMode, KernelEvent, Verdict,
};
pub use enforcer::{DnsSink, Enforcer};
pub use loader::{LoadError, Loaded, bpf_lsm_active, unpin_links};
pub use lsm::LsmBackend;
pub use offsets::kernel_offsets;
