//! `xtask bench`, release build: `belay-mask-bench` (mask/) on its generated corpus;
//! `belay-server-bench` (bench/) against belay-server on this host, once on SQLite and
//! once on PostgreSQL; then `belay-bench` (tests/src/bin/belay-bench.rs) in a VM with BPF
//! LSM. Repeats every `bench:` line at the end so they read as one table.
use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
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
    /// Masking on this host: recall, false positives, throughput.
    Mask,
}

pub fn run(ctx: &Ctx, kernel: Kernel, timeout: Duration, only: Option<Part>) -> Result<ExitCode> {
    let bins = workspace::build_belay_binaries(ctx, true)?;
    let mut figures = Vec::new();
    let mut ok = true;
    let runs = |part: Part| only.is_none() || only == Some(part);
    if runs(Part::Mask) {
        say!("masking benchmark");
        ok &= local(&find(&bins, "belay-mask-bench")?, &[], &mut figures)?;
    }
    if runs(Part::Server) {
        ok &= server(&bins, &mut figures)?;
    }
    if runs(Part::Vm) {
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

fn find(bins: &[PathBuf], name: &str) -> Result<PathBuf> {
    bins.iter()
        .find(|path| path.file_name().is_some_and(|file| file == name))
        .cloned()
        .with_context(|| format!("cargo built no binary named {name}"))
}

/// The server load benchmark, natively on this host, once per storage backend.
fn server(bins: &[PathBuf], figures: &mut Vec<String>) -> Result<bool> {
    let server = find(bins, "belay-server")?;
    let bench = find(bins, "belay-server-bench")?;
    let mut ok = true;
    for backend in ["sqlite", "postgres"] {
        say!("server benchmark on {backend}");
        let args: [&OsStr; 4] = [
            "--server-bin".as_ref(),
            server.as_os_str(),
            "--backend".as_ref(),
            backend.as_ref(),
        ];
        ok &= local(&bench, &args, figures)?;
    }
    Ok(ok)
}

/// Runs a benchmark binary on this host, echoing its output and keeping its `bench:`
/// lines; false when it failed.
fn local(bin: &Path, args: &[&OsStr], figures: &mut Vec<String>) -> Result<bool> {
    let mut child = util::cmd(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
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
        say!("{} failed: {status}", bin.display());
    }
    Ok(status.success())
}
