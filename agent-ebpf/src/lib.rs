//! See `main.rs`: the kernel programs are the bin target of this crate, built for
//! `bpfel-unknown-none` by `agent/build.rs`.
#![no_std]
