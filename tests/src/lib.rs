//! Helpers for belay's end-to-end tests: finding belay's binaries and driving the
//! `belay-actor` stand-in process.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Finds one of belay's binaries: on PATH (as in the VM), else next to the test
/// executable's target directory (a `cargo test` on a host with BPF LSM).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found on PATH nor near {}", exe.display())
}

/// A running `belay-actor`, stopped at its start line until [`Actor::go`].
pub struct Actor {
    pub child: Child,
    pub pid: u32,
    stdout: BufReader<ChildStdout>,
}

impl Actor {
    pub fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_with(Command::new(binary("belay-actor")?).args(args))
    }

    /// Spawns `cmd`, which must end up running belay-actor, and waits for its ready line.
    pub fn spawn_with(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut actor = Self::start(cmd)?;
        actor.ready()?;
        Ok(actor)
    }

    /// Spawns `cmd` without waiting: when its exec is held by belay, the ready line only
    /// comes once that is approved.
    pub fn start(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let pid = child.id();
        Ok(Self { child, pid, stdout })
    }

    /// Waits for the ready line; the pid it names must be the process spawned.
    pub fn ready(&mut self) -> anyhow::Result<()> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let pid: u32 = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("actor's first line was {line:?}"))?;
        if pid != self.pid {
            bail!("actor says it is {pid}, but {} was spawned", self.pid);
        }
        Ok(())
    }

    /// The next line the actor prints.
    pub fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// What the process wrote on stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }

    /// Lets the actor do its action.
    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("no stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Reads everything the actor prints and its exit status.
    pub fn finish(&mut self, timeout: Duration) -> anyhow::Result<(String, ExitStatus)> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut out = String::new();
                std::io::Read::read_to_string(&mut self.stdout, &mut out)?;
                return Ok((out, status));
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                bail!("actor {} did not finish within {timeout:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True if the actor has exited (without reaping it).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 5 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// A fresh directory on the bpf filesystem for one test's pinned maps and links, removed
/// (with everything pinned in it) when dropped.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/belay-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
