//! The belay wire protocol, package `belay.v1`.
//!
//! - [`v1`]: the prost messages and tonic clients/servers generated from
//!   `proto/belay/v1/*.proto`.
//! - [`domain`]: the same data as validated Rust types. Everything that arrives from the
//!   wire goes through `TryFrom<v1::X> for domain::X` before any logic looks at it.
//! - [`display`]: how those values are shown to people: escaped, and the environment
//!   variables that change what a program runs first.

pub mod display;
pub mod domain;

/// Generated code for package `belay.v1`.
pub mod v1 {
    #![allow(clippy::all, rust_2018_idioms, missing_docs)]
    tonic::include_proto!("belay.v1");
}
