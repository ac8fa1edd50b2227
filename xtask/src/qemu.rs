//! Boots a kernel and initramfs under QEMU (TCG), streams the serial console and reads
//! the markers `/init` prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::kernels::KernelImage;
use crate::util;

/// Printed by `/init` once the guest is set up: `BELAY-VM-READY kernel=<uname -r> lsm=<list>`.
pub const READY_MARKER: &str = "BELAY-VM-READY";
/// Printed by `/init` after the payload: `BELAY-VM-EXIT <status>`.
pub const EXIT_MARKER: &str = "BELAY-VM-EXIT";

/// Kernel command line. `panic=-1` with `-no-reboot` ends QEMU on a panic.
const APPEND: &str = "console=ttyS0 panic=-1 quiet lsm=lockdown,capability,landlock,yama,bpf";

/// What a finished VM reported.
#[derive(Debug)]
pub struct Outcome {
    /// `uname -r` in the guest.
    pub release: String,
    /// Contents of /sys/kernel/security/lsm in the guest.
    pub lsm: String,
    /// Exit status of the payload.
    pub status: i32,
    /// From starting QEMU to the ready marker.
    pub boot: Duration,
    /// From starting QEMU to the exit marker.
    pub total: Duration,
}

/// Longest wait for the guest's init to report ready.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest died or hung before its init ran anything of ours: nothing was tested, so
/// the boot may be retried. (Seen once in a few dozen boots: 6.12 panicking in an
/// interrupt at 1.3 s under TCG.)
#[derive(Debug)]
pub struct EarlyBootFailure(pub String);

impl std::fmt::Display for EarlyBootFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EarlyBootFailure {}

/// The guest kernel died on a breakpoint (`int3`) left in kernel text while it was being
/// patched: at the entry of a BPF LSM hook being patched to call an attached program, or
/// at any site whose oops shows the breakpoint already replaced by the patched bytes
/// (`Code: ... <1f> ...` rather than `<cc>`: the trap came from the patch, which had
/// finished by the time the handler looked; seen at the `sched_process_exit` tracepoint's
/// static branch in `do_exit` as a program detached). Seen about once in some hundred of
/// belay's VM runs, always under TCG, where cross-CPU code patching is emulated; a VM run
/// that ends this way is retried once (everything in it runs again).
#[derive(Debug)]
pub struct CodePatchCrash(pub String);

impl std::fmt::Display for CodePatchCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodePatchCrash {}

/// Follows the guest's oops lines for [`CodePatchCrash`].
#[derive(Default)]
struct OopsWatch {
    int3: bool,
    rip: Option<String>,
    /// The faulting byte of the first `Code:` line after the int3, as printed (`1f`).
    code_byte: Option<String>,
}

impl OopsWatch {
    fn line(&mut self, line: &str) {
        if line.contains("Oops: int3") {
            self.int3 = true;
        }
        if self.int3
            && self.code_byte.is_none()
            && let Some(at) = line.find("Code: ")
            && let Some(open) = line[at..].find('<')
        {
            let byte = &line[at + open + 1..];
            self.code_byte = byte.get(..2).map(str::to_owned);
        }
        if let Some(at) = line.find("RIP: 0010:") {
            let func = line[at + "RIP: 0010:".len()..].trim().to_owned();
            if self.rip.is_none() {
                self.rip = Some(func);
            }
        }
    }

    /// The patched function, when the crash was a breakpoint at a BPF LSM hook.
    fn code_patch_crash(&self) -> Option<&str> {
        let rip = self.rip.as_deref()?;
        let patched_away = self.code_byte.as_deref().is_some_and(|b| b != "cc");
        (self.int3 && (rip.starts_with("bpf_lsm_") || patched_away)).then_some(rip)
    }
}

/// Boots the VM and calls `on_line` with every console line (markers included) until the
/// exit marker, QEMU's end, or the timeout. Anything but an exit marker is an error.
pub fn boot(
    kernel: &KernelImage,
    initrd: &Path,
    smp: u32,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let initrd = with_modules(initrd, kernel)?;
    let mut c = qemu_command(&kernel.vmlinuz, &initrd, smp);
    let what = util::describe(&c);
    let started = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start `{what}`"))?;
    let stdout = child.stdout.take().context("QEMU stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = sanitize(&String::from_utf8_lossy(&buf));
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let deadline = started + timeout;
    // These kernels boot to init in 5-15 s under TCG; far longer is a hang worth a retry.
    let boot_deadline = started + BOOT_TIMEOUT.min(timeout);
    let mut ready: Option<(String, String, Duration)> = None;
    let mut oops = OopsWatch::default();
    let result = loop {
        let until = if ready.is_some() {
            deadline
        } else {
            boot_deadline
        };
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                on_line(&line);
                oops.line(&line);
                if let Some(rest) = marker(&line, READY_MARKER) {
                    let (release, lsm) = parse_ready(rest);
                    ready = Some((release, lsm, started.elapsed()));
                } else if let Some(rest) = marker(&line, EXIT_MARKER) {
                    let status = rest.trim().parse::<i32>().unwrap_or(-1);
                    let (release, lsm, boot) = ready.take().unwrap_or_else(|| {
                        (kernel.release.clone(), String::new(), started.elapsed())
                    });
                    break Ok(Outcome {
                        release,
                        lsm,
                        status,
                        boot,
                        total: started.elapsed(),
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                if ready.is_none() {
                    break Err(EarlyBootFailure(format!(
                        "VM with kernel {} did not reach init within {} s (boot hang?); QEMU killed",
                        kernel.release,
                        BOOT_TIMEOUT.min(timeout).as_secs(),
                    ))
                    .into());
                }
                break Err(anyhow::anyhow!(
                    "VM with kernel {} timed out after {} s while the payload was running; QEMU killed",
                    kernel.release,
                    timeout.as_secs(),
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                if ready.is_none() {
                    break Err(EarlyBootFailure(format!(
                        "VM with kernel {} ended ({status}) before init reported ready \
                         (kernel panic or bad initramfs?)",
                        kernel.release,
                    ))
                    .into());
                }
                if let Some(rip) = oops.code_patch_crash() {
                    break Err(CodePatchCrash(format!(
                        "VM with kernel {} crashed on a breakpoint in {rip} while kernel code \
                         was being patched (an emulator artefact of TCG)",
                        kernel.release,
                    ))
                    .into());
                }
                break Err(anyhow::anyhow!(
                    "VM with kernel {} ended ({status}) without printing `{EXIT_MARKER}` \
                     (guest crashed or powered off early?)",
                    kernel.release,
                ));
            }
        }
    };
    finish(&mut child, Duration::from_secs(20));
    // Unblocks once QEMU is gone; remaining lines (usually the poweroff) are dropped.
    let _ = reader.join();
    result
}

/// `initrd` with the kernel's modules appended: the kernel unpacks one newc archive
/// after another (each is a multiple of 4 bytes long).
fn with_modules(initrd: &Path, kernel: &KernelImage) -> Result<std::path::PathBuf> {
    let stem = initrd
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = initrd.with_file_name(format!("{stem}-{}.cpio", kernel.release));
    let mut bytes =
        std::fs::read(initrd).with_context(|| format!("reading {}", initrd.display()))?;
    let modules = std::fs::read(&kernel.modules)
        .with_context(|| format!("reading {}", kernel.modules.display()))?;
    bytes.extend_from_slice(&modules);
    std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

fn qemu_command(vmlinuz: &Path, initrd: &Path, smp: u32) -> Command {
    let mut c = util::cmd("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-m", "2048", "-smp", &smp.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", APPEND]);
    c
}

/// Waits for QEMU to power off by itself; kills it after `grace`.
fn finish(child: &mut Child, grace: Duration) {
    let until = Instant::now() + grace;
    while Instant::now() < until {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => thread::sleep(Duration::from_millis(100)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The text after `marker ` when the line carries it (anywhere, in case the payload's
/// last output had no newline).
pub fn marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let at = line.find(marker)?;
    let rest = &line[at + marker.len()..];
    (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim_start())
}

/// Drops the line ending, carriage returns and terminal escape sequences (SeaBIOS
/// clears the screen and resets the terminal: not something to pass to ours).
fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn parse_ready(rest: &str) -> (String, String) {
    let mut release = String::new();
    let mut lsm = String::new();
    for word in rest.split_whitespace() {
        if let Some(v) = word.strip_prefix("kernel=") {
            release = v.to_string();
        } else if let Some(v) = word.strip_prefix("lsm=") {
            lsm = v.to_string();
        }
    }
    (release, lsm)
}

/// Fails unless QEMU can be found (setup installs it).
pub fn check_available() -> Result<()> {
    if util::which("qemu-system-x86_64").is_none() {
        bail!("qemu-system-x86_64 not found; run `cargo xtask setup`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_breakpoint_at_a_bpf_lsm_hook_is_a_code_patch_crash() {
        // From a real 6.12 crash under TCG (a daemon attaching while kthreadd forked).
        let crash = [
            "[   20.752082] RIP: 0010:bpf_lsm_task_alloc+0x5/0x10",
            "[   20.758429]  security_task_alloc+0x76/0x190",
            "[   20.760621] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI",
            "[   20.760774] RIP: 0010:bpf_lsm_task_alloc+0x5/0x10",
        ];
        let mut w = super::OopsWatch::default();
        crash.iter().for_each(|l| w.line(l));
        assert_eq!(w.code_patch_crash(), Some("bpf_lsm_task_alloc+0x5/0x10"));

        // Any other oops stands as a failure.
        let mut w = super::OopsWatch::default();
        for l in [
            "[   20.1] Oops: general protection fault, probably for non-canonical address",
            "[   20.2] RIP: 0010:bpf_lsm_task_alloc+0x5/0x10",
        ] {
            w.line(l);
        }
        assert_eq!(w.code_patch_crash(), None);
        let mut w = super::OopsWatch::default();
        for l in [
            "[ 1.0] Oops: int3: 0000 [#1]",
            "[ 1.1] RIP: 0010:tcp_connect+0x5/0x10",
        ] {
            w.line(l);
        }
        assert_eq!(w.code_patch_crash(), None);
        // A breakpoint still in the text (`<cc>`) is not a patch in flight.
        let mut w = super::OopsWatch::default();
        for l in [
            "[ 1.0] Oops: int3: 0000 [#1]",
            "[ 1.1] RIP: 0010:tcp_connect+0x5/0x10",
            "[ 1.2] Code: 90 90 <cc> 90 90",
        ] {
            w.line(l);
        }
        assert_eq!(w.code_patch_crash(), None);
    }

    #[test]
    fn a_breakpoint_already_patched_away_is_a_code_patch_crash() {
        // From a real 6.12 crash under TCG: a test process exiting as belay's programs
        // detached from sched_process_exit.
        let crash = [
            "[  379.907466] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
            "[  379.908911] RIP: 0010:do_exit+0x2f6/0xad0",
            "[  379.909412] Code: 07 00 48 89 ef e8 ba fb ff ff 48 89 ef e8 72 60 ff ff 48 8b 03 a9 \
             00 00 10 00 0f 85 a7 02 00 00 45 84 ed 0f 85 de 04 00 00 0f <1f> 44 00 00 48 89 df",
        ];
        let mut w = super::OopsWatch::default();
        crash.iter().for_each(|l| w.line(l));
        assert_eq!(w.code_patch_crash(), Some("do_exit+0x2f6/0xad0"));
    }

    use super::*;

    #[test]
    fn escapes_removed() {
        assert_eq!(
            sanitize("\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS 1.16\r\n"),
            "SeaBIOS 1.16"
        );
        assert_eq!(sanitize("a\tb\r\n"), "a\tb");
    }

    #[test]
    fn markers() {
        assert_eq!(marker("BELAY-VM-EXIT 3", EXIT_MARKER), Some("3"));
        assert_eq!(marker("no newlineBELAY-VM-EXIT 0", EXIT_MARKER), Some("0"));
        assert_eq!(marker("BELAY-VM-EXITS", EXIT_MARKER), None);
        let r = marker(
            "BELAY-VM-READY kernel=6.1.0-56-cloud-amd64 lsm=lockdown,bpf",
            READY_MARKER,
        )
        .unwrap();
        assert_eq!(
            parse_ready(r),
            (
                "6.1.0-56-cloud-amd64".to_string(),
                "lockdown,bpf".to_string()
            )
        );
    }
}
