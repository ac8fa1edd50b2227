//! Everything that touches the kernel: the [`Backend`] seam, the BPF LSM backend (its
//! programs loaded with offsets from the running kernel), and the one task that owns
//! the backend; and, for host tests, a fake backend with the kernel's maps in memory.
mod backend;
mod enforcer;
#[cfg(any(test, feature = "fake-backend"))]
mod fake;
mod heartbeat;
mod loader;
mod lsm;
mod offsets;
#[cfg(test)]
mod tests_enforcer;

pub use agent_common::decode::{Action, PauseEvent, Transport};
pub use backend::{
    Backend, Counters, DnsDirection, DnsMessage, EnforcerError, Expectation, FailMode, KernelEvent,
    Verdict,
};
pub use enforcer::{DnsSink, Enforcer};
#[cfg(any(test, feature = "fake-backend"))]
pub use fake::{FakeBackend, FakeKernel};
pub use loader::{LoadError, Loaded, bpf_lsm_active, unpin_links};
pub use lsm::LsmBackend;
pub use offsets::kernel_offsets;
