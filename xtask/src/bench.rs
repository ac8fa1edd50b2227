//! `xtask bench`, release build: `belay-mask-bench` (mask/) on its generated corpus,
//! then `belay mask` on the gitleaks corpus (`../shared/benchmarks/gitleaks`, test
//! cases other people wrote); `belay-server-bench` (bench/) against belay-server on
//! this host, once on SQLite and once on PostgreSQL, then on SQLite again with browser
//! pages open on the reviewer console; then `belay-bench`
//! (tests/src/bin/belay-bench.rs) in a VM with BPF LSM. Repeats every `bench:` line at
//! the end so they read as one table.
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
    /// belay-server on this host: agents held, decisions/s, latency, memory, and the
    /// reviewer console's submission-to-browser latency.
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
        external_mask(ctx, &find(&bins, "belay")?, &mut figures)?;
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

/// Where the gitleaks corpus and its runner are, next to the repository.
const GITLEAKS: &str = "../shared/benchmarks/gitleaks";

/// The contexts the runner reports that a command line or shell variable puts a secret
/// in: after `=` or `:`, as a call argument, alone, or in a URL, header or prose.
const SHELL_CONTEXTS: &[&str] = &[
    "= assignment",
    ": (YAML, JSON)",
    ", (call argument)",
    "bare (secret alone)",
    "other (prose, URL, header, XML...)",
];

/// `belay mask` on the gitleaks corpus (`GITLEAKS`, read-only, not part of the
/// repository): recall over all rows, recall where the secret sits as it would in a
/// shell line, and the false-positive rate on the rows no gitleaks pattern matches.
/// A missing corpus or runner is said loudly and shows in the figures as `n/a`.
fn external_mask(ctx: &Ctx, belay: &Path, figures: &mut Vec<String>) -> Result<()> {
    const NAMES: [&str; 3] = [
        "mask_external_recall",
        "mask_external_shell_recall",
        "mask_external_fp_rate",
    ];
    let dir = ctx.root.join(GITLEAKS);
    let runner = dir.join("run-gitleaks-corpus.py");
    if !runner.is_file() {
        say!(
            "gitleaks masking benchmark MISSING: no {} (expected at {GITLEAKS} next to the \
             repository); the mask_external_* figures are not measured",
            runner.display()
        );
        for name in NAMES {
            figures.push(format!("bench: {name} n/a (runner missing)"));
        }
        return Ok(());
    }
    say!(
        "masking benchmark on the gitleaks corpus ({})",
        dir.display()
    );
    let json = std::env::temp_dir().join(format!("belay-gitleaks-{}.json", std::process::id()));
    let status = util::cmd("python3")
        .arg(&runner)
        .arg(belay)
        .arg("--json")
        .arg(&json)
        .current_dir(&ctx.root)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", runner.display()))?;
    if !status.success() {
        anyhow::bail!("{} failed: {status}", runner.display());
    }
    let text =
        std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()));
    let _ = std::fs::remove_file(&json);
    let summary: serde_json::Value = serde_json::from_str(&text?).context("the runner's JSON")?;
    let summary = &summary["summary"];
    let number = |key: &str| {
        summary[key]
            .as_f64()
            .with_context(|| format!("the runner's JSON has no summary.{key}"))
    };
    let (mut tp, mut caught) = (0.0, 0.0);
    for c in SHELL_CONTEXTS {
        let row = &summary["recall_by_context"][c];
        tp += row["tp"].as_f64().unwrap_or(0.0);
        caught += row["caught"].as_f64().unwrap_or(0.0);
    }
    let values = [
        number("recall")?,
        if tp > 0.0 { caught / tp } else { 0.0 },
        number("fp_rate_no_gitleaks_match")?,
    ];
    for (name, value) in NAMES.into_iter().zip(values) {
        let line = format!("bench: {name} {value:.4}");
        println!("{line}");
        figures.push(line);
    }
    Ok(())
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

/// Signed-in console pages (headless Chromium) open during the SQLite run, for
/// `console_event_to_browser_*`: several reviewers watching, as a team does.
const CONSOLE_PAGES: &str = "4";

/// The server load benchmark, natively on this host, once per storage backend; the
/// SQLite run also with the reviewer console and `CONSOLE_PAGES` browser pages open.
fn server(bins: &[PathBuf], figures: &mut Vec<String>) -> Result<bool> {
    let server = find(bins, "belay-server")?;
    let bench = find(bins, "belay-server-bench")?;
    let mut ok = true;
    // The bare server on each backend, then SQLite again with console pages open (its
    // figures are named server_sqlite_console_*).
    for (backend, pages) in [
        ("sqlite", None),
        ("postgres", None),
        ("sqlite", Some(CONSOLE_PAGES)),
    ] {
        say!(
            "server benchmark on {backend}{}",
            pages.map_or(String::new(), |n| format!(" with {n} console pages open"))
        );
        let mut args: Vec<&OsStr> = vec![
            "--server-bin".as_ref(),
            server.as_os_str(),
            "--backend".as_ref(),
            backend.as_ref(),
        ];
        if let Some(pages) = pages {
            args.extend::<[&OsStr; 2]>(["--console-pages".as_ref(), pages.as_ref()]);
        }
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
