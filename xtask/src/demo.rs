//! `xtask demo`: runs `xtask/demo/demo.sh` natively when this host has BPF LSM, else in a
//! VM with the 6.12 kernel.
//!
//! The script runs with `/bin/sh` (busybox ash in the VM: keep it POSIX), and gets
//! `BELAY_BIN_DIR` (directory with `belay-agent` and `belay`, also first on PATH) and
//! `BELAY_DEMO_MODE` (`native` or `vm`). Natively its cwd is the workspace root; in the VM
//! the script's directory is at /opt/belay/demo and the cwd is /opt/belay.

use std::fs;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::kernels::Kernel;
use crate::util::{self, say};
use crate::vm::{self, GUEST_BIN, GUEST_ROOT, Guest};
use crate::{Ctx, workspace};

pub fn run(ctx: &Ctx, force_vm: bool, timeout: Duration) -> Result<ExitCode> {
    let demo_dir = ctx.root.join("xtask").join("demo");
    let script = demo_dir.join("demo.sh");
    crate::initramfs::require_file(&script, "demo script")?;
    match host_bpf_lsm() {
        Ok(()) if !force_vm => {
            say!("this host has BPF LSM: running the demo natively");
            workspace::build_all(ctx, false)?;
            let bin_dir = ctx.target_dir().join("debug");
            let mut path = std::ffi::OsString::from(&bin_dir);
            path.push(":");
            path.push(util::path_env());
            let status = util::cmd("/bin/sh")
                .arg(&script)
                .current_dir(&ctx.root)
                .env("PATH", path)
                .env("BELAY_BIN_DIR", &bin_dir)
                .env("BELAY_DEMO_MODE", "native")
                .status()
                .with_context(|| format!("could not run {}", script.display()))?;
            Ok(ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            ))
        }
        why => {
            match why {
                Err(reason) => say!("{reason}: running the demo in a VM (kernel 6.12)"),
                Ok(()) => say!("--vm: running the demo in a VM (kernel 6.12)"),
            }
            let mut bins = workspace::build_belay_binaries(ctx, false)?;
            // The demo approves through the console's HTTPS endpoint with curl, which
            // checks the console's certificate against the server's CA (busybox's wget
            // cannot, and its TLS client sends no signature_algorithms, which rustls
            // requires). Its libraries go along, as for belay's own binaries.
            bins.push(util::which("curl").ok_or_else(|| {
                anyhow::anyhow!("the demo needs curl (run `cargo xtask setup`, which installs it)")
            })?);
            let mut guest = Guest {
                bins,
                ..Guest::default()
            };
            guest
                .includes
                .push((demo_dir, format!("{GUEST_ROOT}/demo")));
            guest.payload = format!(
                "export BELAY_DEMO_MODE=vm BELAY_BIN_DIR={GUEST_BIN}\n/bin/sh {GUEST_ROOT}/demo/demo.sh\n"
            );
            let image = vm::kernel_image(ctx, Kernel::V6_12)?;
            let initrd = guest.build(ctx, "demo")?;
            let out = vm::boot_streaming(&image, &initrd, vm::DEFAULT_SMP, timeout, &mut |l| {
                println!("{l}")
            })?;
            Ok(ExitCode::from(u8::try_from(out.status).unwrap_or(1)))
        }
    }
}

/// Ok when BPF LSM is active here (`bpf` in the LSM list, kernel >= 5.15).
fn host_bpf_lsm() -> Result<(), String> {
    let lsm = fs::read_to_string("/sys/kernel/security/lsm")
        .map_err(|e| format!("cannot read /sys/kernel/security/lsm ({e})"))?;
    if !lsm.trim().split(',').any(|l| l == "bpf") {
        return Err(format!(
            "BPF LSM is not active on this host (lsm: {})",
            lsm.trim()
        ));
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !kernel_at_least(release.trim(), (5, 15)) {
        return Err(format!("host kernel {} is older than 5.15", release.trim()));
    }
    Ok(())
}

fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = nums.next().unwrap_or(0);
    let minor = nums.next().unwrap_or(0);
    (major, minor) >= want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.0-1-cloud-amd64", (5, 15)));
        assert!(kernel_at_least("5.15.0", (5, 15)));
        assert!(!kernel_at_least("5.10.0-30-amd64", (5, 15)));
        assert!(!kernel_at_least("", (5, 15)));
    }
}
