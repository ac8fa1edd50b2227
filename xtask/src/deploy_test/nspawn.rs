//! A clean Debian 12 root (debootstrap, from the mirror apt is configured with) booted
//! with `systemd-nspawn --boot`: the packages from `dist` are installed there as an
//! administrator would, and belay-server runs under that root's systemd.
//!
//! The host need not run systemd: nspawn runs in a private mount namespace with a tmpfs
//! on /run/systemd/nspawn (it refuses to clean up on a disk-backed /run), without
//! registering with machined (`--register=no --keep-unit`), with a private network (only
//! loopback: the container's ports cannot collide with anything on the host). Commands
//! run inside through `nsenter` into the container's init.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{self, say};

/// Packages added to debootstrap's minbase: an init, what any Debian install has
/// (procps: `kill`, which the agent's unit reloads with), and what the test calls.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,procps,curl,ca-certificates";
const SUITE: &str = "bookworm";

/// The pristine root as a tar, made once and kept under `cache`.
pub fn pristine_root(cache: &Path) -> Result<PathBuf> {
    // Named after what it holds, so a changed INCLUDE makes a new one.
    let tag: u32 = INCLUDE.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    let tarball = cache.join(format!("debian-{SUITE}-root-{tag:08x}.tar"));
    if tarball.exists() {
        return Ok(tarball);
    }
    let mirror = debian_mirror()?;
    let dir = cache.join("debootstrap.tmp");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let started = Instant::now();
    say!("deploy-test: debootstrap {SUITE} from {mirror} (first run only, about 2 minutes)");
    util::run(
        util::cmd("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
            .arg(&dir)
            .arg(&mirror)
            .stdout(Stdio::null()),
    )
    .context("debootstrap of a Debian 12 root")?;
    let tmp = cache.join("root.tar.tmp");
    util::run(
        util::cmd("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&dir)
            .args(["-cf"])
            .arg(&tmp)
            .arg("."),
    )?;
    fs::rename(&tmp, &tarball)?;
    fs::remove_dir_all(&dir)?;
    say!(
        "deploy-test: Debian root made in {}",
        util::secs(started.elapsed())
    );
    Ok(tarball)
}

/// The Debian mirror apt uses here (deb822 `URIs:` of a stanza with `bookworm`, or a
/// one-line `deb URI bookworm ...`), since no other host may be reachable.
fn debian_mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if let Some(m) = mirror_in(&text) {
            return Ok(m);
        }
    }
    Ok("http://deb.debian.org/debian".to_string())
}

fn mirror_in(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
            && suites.split_whitespace().any(|s| s == SUITE)
        {
            return uris.split_whitespace().next().map(str::to_string);
        }
        for l in stanza.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"deb") {
                let rest: Vec<&str> = w[1..]
                    .iter()
                    .copied()
                    .filter(|x| !x.starts_with('['))
                    .collect();
                if rest.len() >= 2 && rest[1] == SUITE {
                    return Some(rest[0].to_string());
                }
            }
        }
    }
    None
}

/// A booted container; powered off (or killed) on drop.
pub struct Machine {
    pub root: PathBuf,
    child: Option<Child>,
    init: u32,
}

impl Machine {
    /// Unpacks `tarball` into `root` and boots it.
    pub fn boot(tarball: &Path, root: &Path, log: &Path) -> Result<Machine> {
        if root.exists() {
            fs::remove_dir_all(root)?;
        }
        fs::create_dir_all(root)?;
        util::run(
            util::cmd("tar")
                .args(["--numeric-owner", "-C"])
                .arg(root)
                .arg("-xf")
                .arg(tarball),
        )?;
        fs::create_dir_all("/run/systemd/nspawn")?;
        let name = format!("belay-deploy-{}", std::process::id());
        let script = format!(
            "mount -t tmpfs tmpfs /run/systemd/nspawn && exec systemd-nspawn -D {} --boot \
             --register=no --keep-unit --private-network --console=pipe -M {name}",
            util::shell_quote(&root.to_string_lossy())
        );
        let out = fs::File::create(log)?;
        let child = util::cmd("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting systemd-nspawn")?;
        let pid = child.id();
        let mut m = Machine {
            root: root.to_path_buf(),
            child: Some(child),
            init: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.init == 0 {
            if Instant::now() > deadline {
                bail!(
                    "the container's init did not appear within 30 s (log: {})",
                    log.display()
                );
            }
            if let Some(c) = m.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "systemd-nspawn exited ({status}): {}",
                    fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
            let children =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            m.init = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
        }
        // `--wait` returns once boot is done (running, or degraded with failed units); it
        // fails at once while the container's bus is not up yet.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut state = String::new();
        while Instant::now() < deadline {
            state = m.sh_status("systemctl is-system-running --wait")?.1;
            if matches!(state.trim(), "running" | "degraded") {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        if state.trim() != "running" {
            let failed = m.sh("systemctl --failed --no-legend --plain || true")?;
            say!(
                "deploy-test: container state {}: failed units: {}",
                state.trim(),
                failed.trim()
            );
        }
        Ok(m)
    }

    /// Runs a shell command in the container (as root); its output, or an error with it.
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.command(script).output().context("running nsenter")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "in the container, `{script}` failed ({}): {}",
                out.status,
                text.trim()
            );
        }
        Ok(text)
    }

    /// Like [`Machine::sh`], but returns stdout only and succeeds or fails alike.
    pub fn sh_status(&self, script: &str) -> Result<(bool, String)> {
        let out = self.command(script).output().context("running nsenter")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-a", "env", "-i"])
            .args([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
            ])
            .args(["sh", "-c", script])
            .stdin(Stdio::null());
        c
    }

    /// Copies a host file into the container's filesystem.
    pub fn put(&self, src: &Path, dest: &str) -> Result<()> {
        let to = self.root.join(dest.trim_start_matches('/'));
        if let Some(p) = to.parent() {
            fs::create_dir_all(p)?;
        }
        fs::copy(src, &to)
            .with_context(|| format!("copying {} into the container", src.display()))?;
        Ok(())
    }

    /// Waits until `curl` in the container gets a 2xx from `url`.
    pub fn wait_http(&self, url: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let (ok, body) = self.sh_status(&format!("curl -fsS --max-time 2 {url}"))?;
            if ok {
                return Ok(body);
            }
            if Instant::now() > deadline {
                let journal = self
                    .sh("journalctl --no-pager -n 30 -u belay-server")
                    .unwrap_or_default();
                bail!(
                    "{url} did not answer 2xx within {} s; journal:\n{journal}",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Powers the container off and waits for nspawn to exit; kills it after 60 s.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = self.command("systemctl poweroff").output();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the container did not power off within 60 s; killed")
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one = "deb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(mirror_in(one).as_deref(), Some("http://m.example/debian"));
        assert_eq!(mirror_in("deb http://x/ cloud-sdk-bookworm main\n"), None);
    }
}
