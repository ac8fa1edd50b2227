//! belay's build and test orchestration: `cargo xtask <command>`.
//!
//! BPF LSM cannot be loaded on the development and CI machines (see
//! ../shared/DESIGN.md), so the tests that need it run inside QEMU (TCG) on Debian's
//! cloud kernels: `vm-test` builds them, packs them into an initramfs with busybox, boots
//! each kernel and sums libtest's results.

mod bench;
mod cli_standalone;
mod demo;
mod deploy_test;
mod disk;
mod dist;
mod initramfs;
mod kernels;
mod libtest;
mod modules;
mod qemu;
mod setup;
mod util;
mod vm;
mod vm_test;
mod workspace;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::kernels::Kernel;
use crate::util::say;
use crate::vm_test::KernelSel;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "belay build and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install prerequisites (Debian packages for the VM, nightly rust-src, bpf-linker).
    Setup,
    /// Build the workspace (the agent's build script builds the eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Boot a VM with belay's binaries and run a shell command in it.
    VmRun {
        /// Kernel to boot.
        #[arg(long, value_enum, default_value = "6.12")]
        kernel: Kernel,
        /// File or directory to add to the guest: HOST[:GUEST]; default GUEST is
        /// /opt/belay/<basename>.
        #[arg(long = "include", value_name = "PATH")]
        includes: Vec<String>,
        /// Seconds before QEMU is killed.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Do not build belay's binaries; boot with only what --include adds.
        #[arg(long)]
        no_build: bool,
        /// Command run in the guest with `/bin/sh -c` (arguments joined with spaces).
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Run the tests that need BPF LSM in VMs, on each kernel.
    VmTest {
        #[arg(long, value_enum, default_value = "all")]
        kernel: KernelSel,
        /// Seconds per kernel before QEMU is killed (the two kernels' VMs run at once, in
        /// software emulation; a busy 2-core host has needed more than 20 minutes).
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Run this prebuilt libtest executable instead of building the VM tests
        /// (repeatable; nothing is built).
        #[arg(long = "test-exe", value_name = "PATH")]
        test_exes: Vec<PathBuf>,
        /// Extra file or directory for the guest: HOST[:GUEST].
        #[arg(long = "include", value_name = "PATH")]
        includes: Vec<String>,
        /// Boot the kernels one after the other (default: at the same time).
        #[arg(long)]
        sequential: bool,
        /// Virtual CPUs per VM.
        #[arg(long, default_value_t = vm::DEFAULT_SMP, value_parser = clap::value_parser!(u32).range(1..=16))]
        smp: u32,
        /// Arguments passed to every test executable (e.g. a name filter).
        #[arg(last = true, value_name = "TEST-ARGS")]
        test_args: Vec<String>,
    },
    /// Check that `belay` (the CLI) depends on no daemon, server, aya or PostgreSQL
    /// crate, and builds with the stable toolchain and no bpf-linker.
    CliStandalone,
    /// `cli-standalone`, host tests (`cargo test --workspace`), then the VM tests on all
    /// kernels.
    Test {
        /// Seconds per kernel before QEMU is killed (the two kernels' VMs run at once, in
        /// software emulation; a busy 2-core host has needed more than 20 minutes).
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Benchmarks (release build). On this host: belay-server with 10,000 simulated
    /// agents and automated reviewers, on SQLite then PostgreSQL (decisions/s, p50/p99
    /// decision latency, server memory). In the VM: exec and connect rates with belay
    /// loaded against without, and pause -> decision -> resume against a bare
    /// SIGSTOP/SIGCONT. Prints `bench: <name> <value> <unit>` lines.
    Bench {
        #[arg(long, value_enum, default_value = "6.12")]
        kernel: Kernel,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
        /// Run only one part: `mask` (masking), `server` (belay-server load) or `vm`
        /// (enforcement in a VM).
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
    },
    /// Release artifacts in target/dist: binaries, a tarball, Debian packages for the agent,
    /// the server and the CLI, OCI image archives (podman/docker load), SHA256SUMS.
    Dist {
        /// Debian revision of the packages (VERSION-REVISION).
        #[arg(long, default_value_t = 1)]
        revision: u32,
        /// Output directory (default: target/dist).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// `dist`, then its artifacts installed and run: the Helm chart rendered and validated
    /// against Kubernetes schemas, the packages in a Debian 12 root booted with
    /// systemd-nspawn (install, run, upgrade), the images under podman.
    DeployTest {
        /// Rewrite deploy/kubernetes/belay.yaml from the chart.
        #[arg(long)]
        update_manifests: bool,
    },
    /// Build everything and run xtask/demo/demo.sh (natively with BPF LSM, else in a VM).
    Demo {
        /// Use the VM even when this host has BPF LSM.
        #[arg(long)]
        vm: bool,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
}

/// Where the workspace is, and where it builds.
pub struct Ctx {
    pub root: PathBuf,
    /// The workspace's own `target/` (not $CARGO_TARGET_DIR), or a tmpfs directory when
    /// the disk is short (see `disk`).
    target: PathBuf,
}

impl Ctx {
    pub fn target_dir(&self) -> PathBuf {
        self.target.clone()
    }

    /// Kernels, apt state, initramfs images.
    pub fn vm_dir(&self) -> PathBuf {
        self.target_dir().join("belay-vm")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    let placement = disk::placement(&root);
    if let Some(tmp) = &placement.tmpdir {
        std::fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // SAFETY: xtask is single-threaded here, before any child or thread starts.
        unsafe { std::env::set_var("TMPDIR", tmp) };
    }
    if matches!(cli.command, Cmd::Test { .. }) && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        // A one-shot test run gains nothing from the incremental cache, which was 3 GB of
        // a clean build's 11 GB.
        // SAFETY: as above, still single-threaded.
        unsafe { std::env::set_var("CARGO_INCREMENTAL", "0") };
    }
    let ctx = Ctx {
        root,
        target: placement.target,
    };
    setup::run()?;
    match cli.command {
        Cmd::Setup => {
            deploy_test::python_tools(&ctx)?;
            say!("setup: all prerequisites present");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Build { release } => {
            workspace::build_all(&ctx, release)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::VmRun {
            kernel,
            includes,
            timeout,
            no_build,
            command,
        } => vm::vm_run(
            &ctx,
            kernel,
            &includes,
            no_build,
            Duration::from_secs(timeout),
            &command,
        ),
        Cmd::VmTest {
            kernel,
            timeout,
            test_exes,
            includes,
            sequential,
            smp,
            test_args,
        } => {
            let opts = vm_test::Options {
                kernels: kernel,
                timeout: Duration::from_secs(timeout),
                test_exes,
                includes,
                test_args,
                sequential,
                smp,
            };
            let (_, ok) = vm_test::run(&ctx, &opts)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::CliStandalone => {
            cli_standalone::check(&ctx)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { timeout } => test(&ctx, Duration::from_secs(timeout)),
        Cmd::Dist { revision, out } => {
            dist::run(&ctx, &dist::Options { revision, out })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::DeployTest { update_manifests } => {
            deploy_test::run(&ctx, &deploy_test::Options { update_manifests })
        }
        Cmd::Demo { vm, timeout } => demo::run(&ctx, vm, Duration::from_secs(timeout)),
        Cmd::Bench {
            kernel,
            timeout,
            only,
        } => bench::run(&ctx, kernel, Duration::from_secs(timeout), only),
    }
}

/// `xtask test`: the CLI's standalone check, host tests, VM tests, then the deployment
/// checks (`deploy-test`); one closing summary line.
fn test(ctx: &Ctx, timeout: Duration) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    // Counted as one host test: it passes or fails as a whole.
    let standalone_ok = match cli_standalone::check(ctx) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("xtask: error: cli-standalone: {e:#}");
            false
        }
    };
    let (mut host, cargo_ok) = workspace::host_tests(ctx)?;
    // A failed cargo run with no failing test line (build error) still counts.
    if !cargo_ok && host.failed == 0 {
        host.failed += 1;
    }
    if standalone_ok {
        host.passed += 1;
    } else {
        host.failed += 1;
    }
    let host_ok = cargo_ok && standalone_ok;
    if !host_ok {
        say!("host tests failed; running the VM tests anyway");
    }
    let opts = vm_test::Options {
        kernels: KernelSel::All,
        timeout,
        test_exes: Vec::new(),
        includes: Vec::new(),
        test_args: Vec::new(),
        sequential: false,
        smp: vm::DEFAULT_SMP,
    };
    let (vm_counts, vm_ok) = match vm_test::run(ctx, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xtask: error: vm-test: {e:#}");
            (
                libtest::Counts {
                    passed: 0,
                    failed: 1,
                },
                false,
            )
        }
    };
    // Release artifacts as users install them: the chart, the packages in a booted
    // Debian 12 root, the images under podman, the packaged agent in the VM.
    let deploy = deploy_test::checks(
        ctx,
        &deploy_test::Options {
            update_manifests: false,
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("xtask: error: deploy-test: {e:#}");
        libtest::Counts {
            passed: 0,
            failed: 1,
        }
    });
    let mut total = host;
    total.add(vm_counts);
    total.add(deploy);
    say!(
        "host: {} passed, {} failed; VM: {} passed, {} failed; deploy: {} passed, {} failed; {}",
        host.passed,
        host.failed,
        vm_counts.passed,
        vm_counts.failed,
        deploy.passed,
        deploy.failed,
        util::secs(started.elapsed())
    );
    println!("test: {} passed, {} failed", total.passed, total.failed);
    Ok(if host_ok && vm_ok && deploy.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
