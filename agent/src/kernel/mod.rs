//! Everything that touches the kernel programs: loading them with offsets from the
//! running kernel, and the one task that owns their maps.
mod enforcer;
mod loader;
mod offsets;

pub use agent_common::decode::{Action, PauseEvent, Transport};
pub use enforcer::{Counters, Enforcer, EnforcerError, FailMode, Verdict};
pub use loader::{LoadError, Loaded, bpf_lsm_active, unpin_links};
pub use offsets::kernel_offsets;
