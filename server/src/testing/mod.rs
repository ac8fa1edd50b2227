//! Helpers for tests and benchmarks (the crate's own tests, `server/tests`, `cargo xtask
//! bench`); not part of the server's API.

pub mod postgres;
