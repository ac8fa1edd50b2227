//! `xtask bench`, release build: `belay-server-bench` (bench/) against belay-server on
//! this host, once on SQLite and once on PostgreSQL; then `belay-bench`
//! (tests/src/bin/belay-bench.rs) in a VM with BPF LSM. Repeats every `bench:` line at
//! the end so they read as one table.
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::kernels::Kernel;
use crate::util::{self, say};
use crate::vm::{self, DEFAULT_SMP, Guest};
use crate::{Ctx, workspace};

/// Which half of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Enforcement in the VM: exec/connect rates and pause latency.
    Vm,
    /// belay-server on this host: agents held, decisions/s, latency, memory.
    Server,
}

pub fn run(ctx: &Ctx, kernel: Kernel, timeout: Duration, only: Option<Part>) -> Result<ExitCode> {
    let bins = workspace::build_belay_binaries(ctx, true)?;
    let mut figures = Vec::new();
    let mut ok = true;
    if only != Some(Part::Vm) {
        ok &= server(&bins, &mut figures)?;
    }
    if only != Some(Part::Server) {
        ok &= in_vm(ctx, kernel, timeout, bins, &mut figures)?;
    }
    say!("benchmark figures:");
    for f in &figures {
        println!("{f}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn in_vm(
    ctx: &Ctx,
    kernel: Kernel,
    timeout: Duration,
    bins: Vec<PathBuf>,
    figures: &mut Vec<String>,
) -> Result<bool> {
    let guest = Guest {
        bins,
        payload: "belay-bench\n".into(),
        ..Guest::default()
    };
    let image = vm::kernel_image(ctx, kernel)?;
    let initrd = guest.build(ctx, "bench")?;
    let out = vm::boot_streaming(&image, &initrd, DEFAULT_SMP, timeout, &mut |l| {
        println!("{l}");
        if let Some(at) = l.find("bench: ")
            && !l.contains("round")
        {
            figures.push(l[at..].to_owned());
        }
    })?;
    say!(
        "VM benchmark ran on kernel {} (QEMU TCG, {DEFAULT_SMP} vCPUs)",
        out.release
    );
    Ok(out.status == 0)
}

/// The server load benchmark, natively on this host, once per storage backend.
fn server(bins: &[PathBuf], figures: &mut Vec<String>) -> Result<bool> {
    let find = |name: &str| {
        bins.iter()
            .find(|path| path.file_name().is_some_and(|file| file == name))
            .cloned()
            .with_context(|| format!("cargo built no binary named {name}"))
    };
    let server = find("belay-server")?;
    let bench = find("belay-server-bench")?;
    let mut ok = true;
    for backend in ["sqlite", "postgres"] {
        say!("server benchmark on {backend}");
        let mut child = util::cmd(&bench)
            .arg("--server-bin")
            .arg(&server)
            .args(["--backend", backend])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bench.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if line.starts_with("bench: ") {
                figures.push(line);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            say!("server benchmark on {backend} failed: {status}");
            ok = false;
        }
    }
    Ok(ok)
}
