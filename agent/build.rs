//! Builds the kernel programs (`agent-ebpf`) with the nightly toolchain and bpf-linker and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! `BELAY_SKIP_EBPF=1` skips that build (for a quick `cargo check` of userspace on a
//! machine without the eBPF toolchain); the agent then refuses to start with a message
//! that says why.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=BELAY_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("belay-ebpf");
    if env::var_os("BELAY_SKIP_EBPF").is_some_and(|v| v == "1") {
        println!(
            "cargo:warning=BELAY_SKIP_EBPF=1: belay-agent is built without its kernel programs"
        );
        fs::write(&object, []).context("writing the empty placeholder object")?;
        return Ok(());
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        bail!(
            "bpf-linker is not on PATH. Run `cargo xtask setup` to install the eBPF toolchain \
             (or set BELAY_SKIP_EBPF=1 to check userspace code without it)"
        );
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = manifest
        .parent()
        .context("agent crate has no parent directory")?
        .join("agent-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to agent-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the kernel programs (agent-ebpf)")?;
    if !object.exists() {
        bail!("aya-build finished but {} is missing", object.display());
    }
    Ok(())
}
