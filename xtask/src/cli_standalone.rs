//! `xtask cli-standalone` (and the first step of `xtask test`): the reviewer's CLI stands
//! on its own. A reviewer builds `belay` on a laptop without the eBPF toolchain, so its
//! dependency tree must hold neither the host daemon (whose build script needs
//! bpf-linker and the nightly) nor the server (PostgreSQL client and all), and it must
//! build with the stable toolchain and no bpf-linker on PATH.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, say};
use crate::{Ctx, workspace};

pub const CLI_PACKAGE: &str = "belay-cli";

/// Packages `belay` must not depend on (normal dependencies, any target): the daemon, the
/// kernel programs and what builds or loads them, and the server with its database
/// client.
pub const FORBIDDEN: &[&str] = &[
    "belay-agent",
    "agent-ebpf",
    "aya",
    "aya-obj",
    "aya-build",
    "belay-server",
    "tokio-postgres",
];

/// Both checks; fails naming what is wrong.
pub fn check(ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    check_tree(ctx)?;
    say!(
        "{CLI_PACKAGE}: no {} in its dependency tree ({})",
        FORBIDDEN.join(", "),
        util::secs(started.elapsed())
    );
    let started = Instant::now();
    build_standalone(ctx)?;
    say!(
        "{CLI_PACKAGE}: builds with the stable toolchain and no bpf-linker ({})",
        util::secs(started.elapsed())
    );
    Ok(())
}

/// `cargo tree -p belay-cli -e normal`: none of [`FORBIDDEN`] in it.
fn check_tree(ctx: &Ctx) -> Result<()> {
    let tree = util::output(workspace::cargo(ctx).args([
        "tree",
        "-p",
        CLI_PACKAGE,
        "-e",
        "normal",
        "--target",
        "all",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]))
    .context("listing belay-cli's dependencies")?;
    let found = forbidden_in(&tree);
    if !found.is_empty() {
        bail!(
            "{CLI_PACKAGE} depends on {} (see `cargo tree -p {CLI_PACKAGE} -e normal -i NAME`): \
             the CLI must build without the daemon and the server",
            found.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The [`FORBIDDEN`] packages named in `cargo tree --prefix none --format {p}` output
/// (`name vX.Y.Z (source)` per line).
fn forbidden_in(tree: &str) -> BTreeSet<&str> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN.contains(name))
        .collect()
}

/// `cargo build -p belay-cli` as a reviewer's machine would run it: the stable toolchain
/// called directly (no rustup proxy, so no `+nightly`), and a PATH without bpf-linker.
/// It shares the workspace's target dir: after the first run only changed crates build.
fn build_standalone(ctx: &Ctx) -> Result<()> {
    let toolchain_bin = stable_bin_dir();
    let path = path_without_bpf_toolchain(toolchain_bin.as_deref())?;
    let cargo = toolchain_bin
        .as_ref()
        .map_or_else(|| PathBuf::from("cargo"), |bin| bin.join("cargo"));
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(&ctx.root)
        .env("CARGO_TARGET_DIR", ctx.target_dir())
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("PATH", path)
        .env("RUSTUP_TOOLCHAIN", "stable")
        .args(["build", "-p", CLI_PACKAGE, "--bin", "belay"]);
    util::without_cargo_run_env(&mut build);
    match &toolchain_bin {
        Some(bin) => build.env("RUSTC", bin.join("rustc")),
        None => build.env_remove("RUSTC"),
    };
    util::run(&mut build).context("building belay-cli without the eBPF toolchain")
}

/// The stable toolchain's own `bin` directory (cargo and rustc, no proxies), when rustup
/// manages the toolchains.
fn stable_bin_dir() -> Option<PathBuf> {
    let out =
        util::output(util::cmd("rustup").args(["which", "--toolchain", "stable", "cargo"])).ok()?;
    Path::new(out.trim()).parent().map(Path::to_path_buf)
}

/// The child PATH without any directory holding bpf-linker or rustup's proxies (which
/// would reach the nightly), with the stable toolchain's directory first.
fn path_without_bpf_toolchain(toolchain_bin: Option<&Path>) -> Result<std::ffi::OsString> {
    let mut dirs: Vec<PathBuf> = toolchain_bin.map(Path::to_path_buf).into_iter().collect();
    dirs.extend(
        std::env::split_paths(&util::path_env())
            .filter(|d| !d.join("bpf-linker").exists() && !d.join("rustup").exists()),
    );
    std::env::join_paths(dirs).context("building PATH")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_packages_are_found_by_name_only() {
        let tree = "belay-cli v0.1.0 (/w/cli)\n\
                    belay-agent-api v0.1.0 (/w/agent-api)\n\
                    aya-obj v0.2.1\n\
                    tokio v1.48.0\n\
                    belay-agent v0.1.0 (/w/agent)\n";
        assert_eq!(
            forbidden_in(tree).into_iter().collect::<Vec<_>>(),
            ["aya-obj", "belay-agent"]
        );
        assert!(forbidden_in("belay-policy v0.1.0 (/w/policy)\nagent-common v0.1.0\n").is_empty());
    }
}
