//! `xtask bench`: runs `belay-bench` (tests/src/bin/belay-bench.rs) in a VM with BPF LSM,
//! release build, and repeats its `bench:` lines at the end so they read as one table.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::kernels::Kernel;
use crate::util::say;
use crate::vm::{self, DEFAULT_SMP, Guest};
use crate::{Ctx, workspace};

pub fn run(ctx: &Ctx, kernel: Kernel, timeout: Duration) -> Result<ExitCode> {
    let guest = Guest {
        bins: workspace::build_belay_binaries(ctx, true)?,
        payload: "belay-bench\n".into(),
        ..Guest::default()
    };
    let image = vm::kernel_image(ctx, kernel)?;
    let initrd = guest.build(ctx, "bench")?;
    let mut figures = Vec::new();
    let out = vm::boot_streaming(&image, &initrd, DEFAULT_SMP, timeout, &mut |l| {
        println!("{l}");
        if let Some(at) = l.find("bench: ")
            && !l.contains("round")
        {
            figures.push(l[at..].to_owned());
        }
    })?;
    say!(
        "benchmark on kernel {} (QEMU TCG, {DEFAULT_SMP} vCPUs):",
        out.release
    );
    for f in &figures {
        println!("{f}");
    }
    Ok(ExitCode::from(u8::try_from(out.status).unwrap_or(1)))
}
