//! `xtask setup`: idempotent prerequisites on a fresh Debian machine (as root).
//!
//! * Debian packages for the VM tests: QEMU, a static busybox, binutils (`strip`); and
//!   `postgresql`, whose server binaries the belay-server tests run a throwaway cluster
//!   with (`belay_server::testing::postgres`); Chromium and chromedriver for the
//!   browser tests of the reviewer console.
//! * `rust-src` for the nightly toolchain (the eBPF crate is built with `-Z build-std`).
//! * bpf-linker 0.13, built against the nightly's own LLVM (see ../shared/DESIGN.md,
//!   Toolchain).
//!
//! Every step first checks whether it is needed, so running it again costs well under a
//! second.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::util::{self, say};

/// Debian packages and how to tell they are present.
const APT_PACKAGES: &[(&str, Present)] = &[
    ("qemu-system-x86", Present::Program("qemu-system-x86_64")),
    ("busybox-static", Present::Package),
    ("binutils", Present::Program("strip")),
    // Its binaries live in /usr/lib/postgresql/<version>/bin, not on PATH.
    ("postgresql", Present::Package),
    // belay-export's syslog tests run a real rsyslogd; rsyslog-gnutls is its TLS driver.
    ("rsyslog", Present::Program("rsyslogd")),
    ("rsyslog-gnutls", Present::Package),
    // Browser tests of the reviewer console drive a real headless Chromium through
    // chromedriver (WebDriver); server/tests/support/browser.rs fails without them.
    ("chromium", Present::Program("chromium")),
    ("chromium-driver", Present::Program("chromedriver")),
    // `xtask demo` approves through the console's HTTPS endpoint with curl, in the VM too.
    ("curl", Present::Program("curl")),
];

/// bpf-linker release line that matches aya 0.14 / aya-build 0.2.
const BPF_LINKER_REQ: &str = "^0.13";
const BPF_LINKER_PREFIX: &str = "0.13.";

enum Present {
    /// The package is present when this program is on PATH.
    Program(&'static str),
    /// Ask dpkg (busybox-static and busybox both ship /bin/busybox; only one is static).
    Package,
}

pub fn run() -> Result<()> {
    apt_packages().context("setup: installing Debian packages")?;
    deploy_apt_packages().context("setup: installing Debian packages for deploy-test")?;
    rust_src().context("setup: adding rust-src to the nightly toolchain")?;
    bpf_linker().context("setup: installing bpf-linker")?;
    Ok(())
}

fn apt_packages() -> Result<()> {
    let mut missing = Vec::new();
    for (pkg, present) in APT_PACKAGES {
        let ok = match present {
            Present::Program(p) => util::which(p).is_some(),
            Present::Package => dpkg_installed(pkg),
        };
        if !ok {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    say!(
        "installing Debian packages: {} (first run only)",
        missing.join(" ")
    );
    let apt_get = |args: &[&str]| {
        let mut c = util::cmd("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    util::run(&mut apt_get(&["update", "-q"]))?;
    let mut install = apt_get(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    util::run(&mut install)?;
    for (pkg, present) in APT_PACKAGES {
        if let Present::Program(p) = present
            && util::which(p).is_none()
        {
            bail!("`{p}` is still missing after installing {pkg}");
        }
    }
    Ok(())
}

/// What `xtask deploy-test` runs: debootstrap, systemd-nspawn, podman, curl (the list is
/// in `deploy_test`, next to its use).
fn deploy_apt_packages() -> Result<()> {
    let missing: Vec<&str> = crate::deploy_test::APT_PACKAGES
        .iter()
        .filter(|(_, program)| util::which(program).is_none())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say!(
        "installing Debian packages: {} (first run only)",
        missing.join(" ")
    );
    let mut c = util::cmd("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing);
    if util::run(&mut c).is_err() {
        util::run(
            util::cmd("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["update", "-q"]),
        )?;
        util::run(&mut c)?;
    }
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    util::output(util::cmd("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .map(|s| s.trim() == "install ok installed")
        .unwrap_or(false)
}

fn rust_src() -> Result<()> {
    let installed = util::output(util::cmd("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(());
    }
    say!("adding rust-src to the nightly toolchain (first run only)");
    util::run(util::cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = bpf_linker_version()
        && v.starts_with(BPF_LINKER_PREFIX)
    {
        return Ok(());
    }
    let sysroot = util::output(util::cmd("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let (dylib, llvm_major) = find_libllvm(&lib_dir)?;
    say!(
        "building bpf-linker {BPF_LINKER_REQ} against the nightly's LLVM {llvm_major} \
         ({dylib}) (first run only, about 2 minutes)"
    );
    let lib = lib_dir.display();
    let mut c = util::cmd("cargo");
    c.args([
        "+nightly",
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_REQ,
    ])
    .args(["--no-default-features", "--features"])
    .arg(format!("llvm-{llvm_major},no-llvm-linking"))
    .env(
        "RUSTFLAGS",
        format!("-L {lib} -l dylib={dylib} -C link-arg=-Wl,-rpath,{lib}"),
    )
    // Build in a temporary directory, not in the workspace's target dir.
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET_DIR")
    .env_remove("RUSTUP_TOOLCHAIN");
    util::run(&mut c)?;
    match bpf_linker_version() {
        Some(v) if v.starts_with(BPF_LINKER_PREFIX) => Ok(()),
        other => bail!("bpf-linker still not usable after installing it (version: {other:?})"),
    }
}

/// The version bpf-linker reports, e.g. `0.13.0`, if it runs.
fn bpf_linker_version() -> Option<String> {
    let out = util::output(util::cmd("bpf-linker").arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_string)
}

/// Finds `libLLVM-<major>-rust-<version>.so` in the nightly sysroot's lib directory and
/// returns the name to link it by (`LLVM-22-rust-1.97.0-nightly`) and LLVM's major version.
fn find_libllvm(lib_dir: &Path) -> Result<(String, u32)> {
    let mut names: Vec<String> = fs::read_dir(lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .find_map(|n| parse_libllvm(n))
        .with_context(|| {
            format!(
                "no libLLVM-<major>-rust-*.so in {} (found: {})",
                lib_dir.display(),
                names.join(", ")
            )
        })
}

fn parse_libllvm(file: &str) -> Option<(String, u32)> {
    let stem = file.strip_prefix("lib")?.strip_suffix(".so")?;
    let rest = stem.strip_prefix("LLVM-")?;
    let (major, tail) = rest.split_once('-')?;
    if !tail.starts_with("rust-") {
        return None;
    }
    Some((stem.to_string(), major.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libllvm_names() {
        assert_eq!(
            parse_libllvm("libLLVM-22-rust-1.97.0-nightly.so"),
            Some(("LLVM-22-rust-1.97.0-nightly".to_string(), 22))
        );
        assert_eq!(parse_libllvm("libLLVM.so.22.1-rust-1.97.0-nightly"), None);
        assert_eq!(parse_libllvm("librustc_driver-b5a965480ee51f9a.so"), None);
    }
}
