//! `xtask vm-test`: the tests that need BPF LSM, run inside VMs on each kernel.
//!
//! In the guest, every file in /opt/belay/tests runs in turn as
//! `<exe> --test-threads=1 [ARGS...]`, between the markers
//! `BELAY-VM-TEST-BEGIN <name>` and `BELAY-VM-TEST-END <name> <status>`. The host sums
//! libtest's `test result:` lines per kernel; an executable that exits non-zero without a
//! failing `test result:` line (a crash, a panic outside a test) counts as one failure.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::ValueEnum;

use crate::kernels::{Kernel, KernelImage};
use crate::libtest::Counts;
use crate::util::{self, say};
use crate::vm::{self, GUEST_TESTS, Guest};
use crate::{Ctx, qemu, workspace};

const BEGIN_MARKER: &str = "BELAY-VM-TEST-BEGIN";
const END_MARKER: &str = "BELAY-VM-TEST-END";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelSel {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelSel {
    pub fn kernels(self) -> Vec<Kernel> {
        match self {
            KernelSel::V6_1 => vec![Kernel::V6_1],
            KernelSel::V6_12 => vec![Kernel::V6_12],
            KernelSel::All => Kernel::ALL.to_vec(),
        }
    }
}

pub struct Options {
    pub kernels: KernelSel,
    pub timeout: Duration,
    /// Run these instead of building the tests package's VM tests (and build nothing).
    pub test_exes: Vec<PathBuf>,
    pub includes: Vec<String>,
    /// Passed to every test executable (e.g. a test name filter).
    pub test_args: Vec<String>,
    /// Boot the kernels one after the other instead of at the same time.
    pub sequential: bool,
    /// Virtual CPUs per VM.
    pub smp: u32,
}

/// Result of one kernel.
struct KernelResult {
    name: String,
    counts: Counts,
    error: Option<String>,
}

/// Runs the VM tests; returns the counts over all kernels and whether all passed.
pub fn run(ctx: &Ctx, opts: &Options) -> Result<(Counts, bool)> {
    let started = Instant::now();
    let mut guest = Guest::default();
    if opts.test_exes.is_empty() {
        guest.bins = workspace::build_belay_binaries(ctx, false)?;
        let built = workspace::build_vm_tests(ctx)?;
        guest.bins.extend(built.helpers);
        guest.bins.sort();
        guest.bins.dedup();
        guest.tests = built.tests;
        if guest.tests.is_empty() {
            say!(
                "warning: {} built no VM test executables",
                workspace::TESTS_PACKAGE
            );
        }
    } else {
        for t in &opts.test_exes {
            if !t.is_file() {
                bail!("--test-exe {}: no such file", t.display());
            }
        }
        guest.tests = opts.test_exes.clone();
    }
    for i in &opts.includes {
        guest.include_arg(i)?;
    }
    guest.payload = payload(&opts.test_args);
    let initrd = guest.build(ctx, "vm-test")?;

    let kernels = opts.kernels.kernels();
    let images: Vec<(Kernel, Result<KernelImage>)> = kernels
        .iter()
        .map(|&k| (k, vm::kernel_image(ctx, k)))
        .collect();
    let parallel = !opts.sequential && kernels.len() > 1;
    let run_one = |(kernel, image): &(Kernel, Result<KernelImage>)| match image {
        Ok(image) => run_kernel(image, &initrd, opts, parallel.then(|| kernel.label())),
        Err(e) => KernelResult {
            name: kernel.label().to_string(),
            counts: Counts {
                passed: 0,
                failed: 1,
            },
            error: Some(format!("{e:#}")),
        },
    };
    let results: Vec<KernelResult> = if parallel {
        say!(
            "running {} VMs at the same time; console lines are prefixed with the kernel",
            kernels.len()
        );
        thread::scope(|s| {
            let handles: Vec<_> = images.iter().map(|i| s.spawn(|| run_one(i))).collect();
            handles
                .into_iter()
                .zip(&kernels)
                .map(|(h, k)| {
                    h.join().unwrap_or_else(|_| KernelResult {
                        name: k.label().to_string(),
                        counts: Counts {
                            passed: 0,
                            failed: 1,
                        },
                        error: Some("the thread running this VM panicked".to_string()),
                    })
                })
                .collect()
        })
    } else {
        images.iter().map(run_one).collect()
    };

    let mut total = Counts::default();
    let mut ok = true;
    for r in &results {
        if let Some(e) = &r.error {
            println!("vm-test: kernel {}: error: {e}", r.name);
            ok = false;
        }
    }
    for r in &results {
        println!(
            "vm-test: kernel {}: {} passed, {} failed",
            r.name, r.counts.passed, r.counts.failed
        );
        total.add(r.counts);
        ok &= r.counts.failed == 0;
    }
    say!("vm-test finished in {}", util::secs(started.elapsed()));
    Ok((total, ok))
}

fn run_kernel(
    image: &KernelImage,
    initrd: &Path,
    opts: &Options,
    prefix: Option<&str>,
) -> KernelResult {
    let mut tracker = Tracker::default();
    let res = vm::boot_streaming(image, initrd, opts.smp, opts.timeout, &mut |line| {
        match prefix {
            Some(p) => println!("[{p}] {line}"),
            None => println!("{line}"),
        }
        tracker.line(line);
    });
    let mut counts = tracker.counts;
    match res {
        Ok(out) => {
            if let Some(open) = &tracker.current {
                say!("warning: {open} has a begin marker but no end marker");
                counts.failed += 1;
            }
            if out.status != 0 && counts.failed == 0 {
                // The runner failed without any test failing: count it.
                counts.failed += 1;
            }
            KernelResult {
                name: out.release,
                counts,
                error: None,
            }
        }
        Err(e) => {
            // A VM that did not finish is one failure on top of what it reported.
            counts.failed += 1;
            let name = tracker.release.unwrap_or_else(|| image.release.clone());
            KernelResult {
                name,
                counts,
                error: Some(format!("{e:#}")),
            }
        }
    }
}

/// Follows one kernel's console output.
#[derive(Default)]
struct Tracker {
    counts: Counts,
    release: Option<String>,
    /// Executable running now, and whether it reported a failing test.
    current: Option<String>,
    current_failed: bool,
}

impl Tracker {
    fn line(&mut self, line: &str) {
        if let Some(rest) = qemu::marker(line, qemu::READY_MARKER) {
            // A fresh guest (a retried boot runs everything again): count from here.
            self.counts = Counts::default();
            self.current = None;
            self.current_failed = false;
            self.release = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("kernel="))
                .map(str::to_string);
        } else if let Some(rest) = qemu::marker(line, BEGIN_MARKER) {
            self.current = Some(rest.trim().to_string());
            self.current_failed = false;
        } else if let Some(rest) = qemu::marker(line, END_MARKER) {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            let status: i32 = words.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
            if status != 0 && !self.current_failed {
                say!(
                    "{name} exited with status {status} without a failing test result: counted as 1 failure"
                );
                self.counts.failed += 1;
            }
            self.current = None;
        } else if let Some(c) = self.counts.add_line(line)
            && c.failed > 0
        {
            self.current_failed = true;
        }
    }
}

/// The guest script that runs every test executable.
fn payload(test_args: &[String]) -> String {
    let args: Vec<String> = test_args.iter().map(|a| util::shell_quote(a)).collect();
    format!(
        r#"failed=0
for t in {GUEST_TESTS}/*; do
    [ -f "$t" ] || continue
    n=${{t##*/}}
    echo "{BEGIN_MARKER} $n"
    "$t" --test-threads=1 {args}
    rc=$?
    echo "{END_MARKER} $n $rc"
    [ "$rc" = 0 ] || failed=1
done
exit $failed
"#,
        args = args.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_crashes_once() {
        let mut t = Tracker::default();
        for l in [
            "BELAY-VM-READY kernel=6.12.1-cloud-amd64 lsm=bpf",
            "BELAY-VM-TEST-BEGIN a-1",
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "BELAY-VM-TEST-END a-1 0",
            "BELAY-VM-TEST-BEGIN b-2",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "BELAY-VM-TEST-END b-2 101",
            "BELAY-VM-TEST-BEGIN c-3",
            "BELAY-VM-TEST-END c-3 139",
        ] {
            t.line(l);
        }
        assert_eq!(
            t.counts,
            Counts {
                passed: 3,
                failed: 2
            }
        );
        assert_eq!(t.release.as_deref(), Some("6.12.1-cloud-amd64"));
    }

    #[test]
    fn a_retried_boot_counts_only_the_fresh_run() {
        let mut t = Tracker::default();
        for l in [
            "BELAY-VM-READY kernel=6.12.1-cloud-amd64 lsm=bpf",
            "BELAY-VM-TEST-BEGIN a-1",
            "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "BELAY-VM-TEST-END a-1 0",
            "BELAY-VM-TEST-BEGIN b-2",
            // The guest crashed here; the retried boot starts over.
            "BELAY-VM-READY kernel=6.12.1-cloud-amd64 lsm=bpf",
            "BELAY-VM-TEST-BEGIN a-1",
            "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "BELAY-VM-TEST-END a-1 0",
        ] {
            t.line(l);
        }
        assert_eq!(
            t.counts,
            Counts {
                passed: 5,
                failed: 0
            }
        );
    }

    #[test]
    fn payload_quotes_args() {
        let p = payload(&["it's".to_string(), "x".to_string()]);
        assert!(p.contains(r#""$t" --test-threads=1 'it'\''s' x"#));
    }
}
