//! belay's host daemon as a library: the kernel programs' loader and owner task, the
//! book of paused requests, and the local API the `belay` CLI talks to.
pub mod authz;
pub mod btf;
pub mod context;
pub mod daemon;
pub mod dns;
pub mod enroll;
pub mod export;
pub mod intent;
pub mod kernel;
pub mod mask;
pub mod metrics;
pub mod reload;
pub mod requests;
pub mod server_policy;
pub mod sync;
pub mod task;
pub mod upstream;
pub mod vouch;
pub mod watch;

// The local socket protocol and the policy language are crates of their own, so the CLI
// uses them without linking the daemon. Re-exported under their old module names so the
// daemon's paths (`crate::api`, `crate::policy`) stay as they were.
pub use belay_agent_api as api;
pub use belay_policy as policy;
