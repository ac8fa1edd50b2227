//! The guest: what goes into the initramfs, its `/init`, and `xtask vm-run`.
//!
//! Guest layout (the contract with test binaries and the demo script):
//! * `/opt/belay/bin/`: the workspace's binaries but xtask (`belay-agent`, `belay`,
//!   `belay-server`, `belay-actor`), first on PATH. Each is also reachable at its host path
//!   (`<workspace>/target/debug/<name>`, a symlink).
//! * `/opt/belay/tests/`: the VM test executables (`xtask vm-test`).
//! * `/opt/belay/<name>`: each `--include PATH` (or the guest path given as `PATH:GUEST`).
//! * `/opt/belay/payload.sh`: what runs, with `/bin/sh`, cwd `/opt/belay`, stdin /dev/null.
//! * Environment: `BELAY_VM=1`, `BELAY_BIN_DIR=/opt/belay/bin`, `PATH`, `HOME=/root`,
//!   `TMPDIR=/tmp`, `RUST_BACKTRACE=1`.
//! * Userland is busybox (`/bin/sh` is ash); proc, sysfs, devtmpfs, securityfs, bpffs,
//!   tracefs, debugfs and cgroup2 are mounted; `lo` is up (127.0.0.1 and ::1); no other
//!   network. Everyone is root.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::initramfs::{self, Initramfs};
use crate::kernels::{self, Kernel, KernelImage};
use crate::util::{self, say};
use crate::{Ctx, qemu, workspace};

pub const GUEST_ROOT: &str = "/opt/belay";
pub const GUEST_BIN: &str = "/opt/belay/bin";
pub const GUEST_TESTS: &str = "/opt/belay/tests";

/// Virtual CPUs per VM.
pub const DEFAULT_SMP: u32 = 2;

/// Everything that goes into one initramfs.
#[derive(Default)]
pub struct Guest {
    /// Host executables to put in /opt/belay/bin.
    pub bins: Vec<PathBuf>,
    /// Host test executables to put in /opt/belay/tests.
    pub tests: Vec<PathBuf>,
    /// (host path, guest path).
    pub includes: Vec<(PathBuf, String)>,
    /// Shell script run by /init.
    pub payload: String,
}

impl Guest {
    /// Parses `--include HOST[:GUEST]`; the default guest path is /opt/belay/<basename>.
    pub fn include_arg(&mut self, arg: &str) -> Result<()> {
        let (host, guest) = match arg.split_once(':') {
            Some((h, g)) if g.starts_with('/') => (h, g.to_string()),
            _ => {
                let name = Path::new(arg)
                    .file_name()
                    .with_context(|| format!("--include {arg}: no file name"))?;
                (arg, format!("{GUEST_ROOT}/{}", name.to_string_lossy()))
            }
        };
        let host = PathBuf::from(host);
        if !host.exists() {
            bail!("--include {arg}: {} does not exist", host.display());
        }
        self.includes.push((host, guest));
        Ok(())
    }

    /// Writes the initramfs to `<target>/belay-vm/<name>.cpio`.
    pub fn build(&self, ctx: &Ctx, name: &str) -> Result<PathBuf> {
        let started = Instant::now();
        let vm_dir = ctx.vm_dir();
        let mut fs = Initramfs::new(&vm_dir.join("scratch"))?;
        base_system(&mut fs)?;
        for bin in &self.bins {
            let file = bin
                .file_name()
                .context("binary name")?
                .to_string_lossy()
                .into_owned();
            let guest = format!("{GUEST_BIN}/{file}");
            fs.add_host_path(bin, &guest)
                .with_context(|| format!("adding {}", bin.display()))?;
            // Also at the host's path, for tests that know binaries by their build path.
            if bin.is_absolute() && !fs.contains(&bin.to_string_lossy()) {
                fs.symlink(&bin.to_string_lossy(), &guest);
            }
        }
        fs.dir(GUEST_TESTS);
        for t in &self.tests {
            let file = t
                .file_name()
                .context("test name")?
                .to_string_lossy()
                .into_owned();
            fs.add_host_path(t, &format!("{GUEST_TESTS}/{file}"))
                .with_context(|| format!("adding {}", t.display()))?;
        }
        for (host, guest) in &self.includes {
            fs.add_host_path(host, guest)
                .with_context(|| format!("adding {}", host.display()))?;
        }
        fs.file(
            &format!("{GUEST_ROOT}/payload.sh"),
            0o755,
            self.payload.as_str(),
        );
        let out = vm_dir.join(format!("{name}.cpio"));
        fs.write(&out)
            .with_context(|| format!("writing {}", out.display()))?;
        say!(
            "initramfs {} ({:.1} MiB) built in {}",
            out.display(),
            fs.payload_bytes() as f64 / (1024.0 * 1024.0),
            util::secs(started.elapsed())
        );
        Ok(out)
    }
}

/// busybox, /init, /etc basics, device node for the console.
fn base_system(fs: &mut Initramfs) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    initramfs::require_file(busybox, "busybox (Debian package busybox-static)")?;
    fs.add_host_path(busybox, "/bin/busybox")?;
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/root",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/var/tmp",
        "/etc",
    ] {
        fs.dir(d);
    }
    fs.char_dev("/dev/console", 5, 1);
    fs.char_dev("/dev/null", 1, 3);
    fs.file("/init", 0o755, INIT);
    fs.file(
        "/etc/hosts",
        0o644,
        "127.0.0.1 localhost belay-vm\n::1 localhost ip6-localhost\n",
    );
    fs.file(
        "/etc/nsswitch.conf",
        0o644,
        "passwd: files\ngroup: files\nhosts: files\n",
    );
    fs.file(
        "/etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:AI agent:/nonexistent:/bin/false\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    fs.file(
        "/etc/group",
        0o644,
        "root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n",
    );
    Ok(())
}

/// The guest's /init. Markers are parsed by [`qemu::boot`].
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/opt/belay/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp TERM=dumb
export BELAY_VM=1 BELAY_BIN_DIR=/opt/belay/bin RUST_BACKTRACE=1
chmod 1777 /tmp
m() {
    mkdir -p "$3"
    mount -t "$1" "$2" "$3" 2>/dev/null || echo "belay-vm: warning: could not mount $1 on $3"
}
m proc proc /proc
m sysfs sysfs /sys
m devtmpfs devtmpfs /dev
m devpts devpts /dev/pts
m tmpfs tmpfs /dev/shm
m securityfs securityfs /sys/kernel/security
m bpf bpffs /sys/fs/bpf
m tracefs tracefs /sys/kernel/tracing
m debugfs debugfs /sys/kernel/debug
m cgroup2 cgroup2 /sys/fs/cgroup
hostname belay-vm
ip link set lo up
# Modules the tests need (SCTP), dependencies first; see xtask/src/modules.rs.
for mod in $(cat /lib/modules/belay/order 2>/dev/null); do
    insmod "/lib/modules/belay/$mod.ko" || echo "belay-vm: warning: could not load module $mod"
done
echo "BELAY-VM-READY kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)"
cd /opt/belay
/bin/sh /opt/belay/payload.sh </dev/null
rc=$?
echo "BELAY-VM-EXIT $rc"
sync
poweroff -f
"#;

/// The kernel image for `kernel` (downloaded the first time), once QEMU is known to be
/// there.
pub fn kernel_image(ctx: &Ctx, kernel: Kernel) -> Result<KernelImage> {
    qemu::check_available()?;
    kernels::ensure(ctx, kernel).with_context(|| format!("getting the {} kernel", kernel.label()))
}

/// Boots `image` with `initrd`, handing console lines to `on_line` as they come.
pub fn boot_streaming(
    image: &KernelImage,
    initrd: &Path,
    smp: u32,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<qemu::Outcome> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    let mut patch_crash_retried = false;
    let out = loop {
        say!("booting {} under QEMU (TCG, {smp} CPUs)", image.release);
        match qemu::boot(image, initrd, smp, timeout, on_line) {
            Ok(out) => break out,
            // Retried when nothing of ours ran yet; any later failure stands, except one
            // emulator code-patching crash (see `qemu::CodePatchCrash`), after which the
            // whole run starts again in a fresh guest (results restart at its ready line).
            Err(e)
                if attempt < ATTEMPTS && e.downcast_ref::<qemu::EarlyBootFailure>().is_some() =>
            {
                say!("{e:#}; retrying the boot ({} of {ATTEMPTS})", attempt + 1);
                attempt += 1;
            }
            Err(e)
                if !patch_crash_retried && e.downcast_ref::<qemu::CodePatchCrash>().is_some() =>
            {
                say!("{e:#}; running everything again in a fresh VM (once)");
                patch_crash_retried = true;
            }
            Err(e) => return Err(e),
        }
    };
    say!(
        "kernel {}: ready after {}, payload exited {} after {} (lsm: {})",
        out.release,
        util::secs(out.boot),
        out.status,
        util::secs(out.total),
        out.lsm
    );
    if !out.lsm.split(',').any(|l| l == "bpf") {
        say!(
            "warning: BPF LSM is not active in the guest (lsm: {:?})",
            out.lsm
        );
    }
    Ok(out)
}

/// `xtask vm-run`.
pub fn vm_run(
    ctx: &Ctx,
    kernel: Kernel,
    includes: &[String],
    no_build: bool,
    timeout: Duration,
    command: &[String],
) -> Result<ExitCode> {
    let mut guest = Guest::default();
    if !no_build {
        guest.bins = workspace::build_belay_binaries(ctx, false)?;
    }
    for i in includes {
        guest.include_arg(i)?;
    }
    guest.payload = format!("{}\n", command.join(" "));
    let image = kernel_image(ctx, kernel)?;
    let initrd = guest.build(ctx, "vm-run")?;
    let out = boot_streaming(&image, &initrd, DEFAULT_SMP, timeout, &mut |l| {
        println!("{l}")
    })?;
    Ok(ExitCode::from(u8::try_from(out.status).unwrap_or(1)))
}
