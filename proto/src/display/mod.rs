//! How values from watched processes are shown to people.
//!
//! Every string a reviewer reads (paths, argv, the environment, comm, hostnames, cwd,
//! cgroups, reasons, rule and subject names, identities, request ids) may have been
//! chosen by the process under review, or forged on its way. [`escape`] is the one
//! function that makes such a string safe to print: the CLI, the agent's logs and the
//! server's logs all go through it, and the agent also uses it on the context it sends,
//! so that a value escaped twice reads the same as once.
//!
//! [`env`] says which environment variables change what a program does, so that every
//! view shows them first and the agent never leaves them out.

pub mod env;
mod escape;

pub use escape::{Escaped, Quoted, escape, escape_json, needs_escape};
