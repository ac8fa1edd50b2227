//! The daemon on the host, through the fake backend: what happens to a pause from the
//! kernel's event to the verdict written back, in milliseconds (tokio's clock paused
//! where deadlines are involved). What only a kernel proves stays in `tests/` (VM).
mod harness;
mod intent;
mod lifecycle;
mod recovery;
mod reload;
mod server_link;
