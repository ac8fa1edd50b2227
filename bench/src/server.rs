//! The belay-server under test: a child process on loopback.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

pub struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Raises this process's open-file limit (inherited by the server) to at least `want`.
pub fn raise_fd_limit(want: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= want {
        return Ok(());
    }
    limit.rlim_cur = want;
    limit.rlim_max = limit.rlim_max.max(want);
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
        bail!(
            "cannot raise the open-file limit to {want} (run as root, or lower --agents): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

impl Server {
    /// Starts the server; `extra` are more arguments (the console's).
    pub async fn start(
        bin: &Path,
        db: &str,
        dir: &Path,
        extra: &[OsString],
    ) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let http = free_port()?;
        let child = Command::new(bin)
            .args(["--insecure", "--log", "warn", "--db", db])
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--audit-key")
            .arg(dir.join("audit-key"))
            .args(extra)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Self { child, addr };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("belay-server exited at start: {status}");
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("belay-server did not listen on {addr} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Samples the server's resident memory every 100 ms until stopped; the peak wins.
    pub fn sample_rss(&self) -> RssSampler {
        let pid = self.pid();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0.0_f64;
            let mut stopped = stopped;
            loop {
                peak = peak.max(rss_mb(pid).unwrap_or(0.0));
                tokio::select! {
                    _ = &mut stopped => return peak,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        RssSampler { stop, task }
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(libc::pid_t::try_from(pid)?, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("belay-server stopped with {status}");
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("belay-server did not stop within 15 s of SIGTERM");
            }
        }
        Ok(())
    }
}

pub struct RssSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    /// The peak resident memory seen, in MB.
    pub async fn stop(self) -> f64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0.0)
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
