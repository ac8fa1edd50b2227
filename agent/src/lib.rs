//! belay's host daemon as a library: the kernel programs' loader and owner task, the
//! book of paused requests, and the local API the `belay` CLI talks to.
pub mod api;
pub mod authz;
pub mod btf;
pub mod context;
pub mod daemon;
pub mod dns;
pub mod enroll;
pub mod export;
pub mod kernel;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod requests;
pub mod server_policy;
pub mod sync;
pub mod task;
pub mod upstream;
pub mod vouch;
pub mod watch;
