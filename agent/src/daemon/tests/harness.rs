//! The daemon on a [`FakeKernel`], talked to as `belay` does (its local socket), and the
//! stopped processes its pauses stand for.
//!
//! The pauses are the fake's, but the processes are real: the daemon reads a paused
//! task's /proc (its context, whether it is still there), so each pause belongs to a
//! child stopped with SIGSTOP, as the kernel leaves a paused task.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    api::{ActionView, ApiRequest, ApiResponse, RequestView},
    daemon::{Config, run_on, socket::SocketAccess},
    kernel::{Action, FailMode, FakeKernel, Transport, Verdict},
};

/// The uid paused processes run as in the fake's events: not the test's (root), so
/// root may decide their requests.
pub const AGENT_UID: u32 = 1000;

/// A configuration for a daemon whose files live in `dir`: built-in policy, requests
/// wait 60 s and are denied by default, no server.
pub fn config(dir: &Path) -> Config {
    Config {
        socket: dir.join("agent.sock"),
        socket_access: SocketAccess::default(),
        policy: None,
        decide_timeout: Duration::from_secs(60),
        default_verdict: Verdict::Deny,
        shutdown_verdict: Verdict::Deny,
        watch_pids: Vec::new(),
        pin_dir: dir.join("pins"),
        stale_after: Duration::from_secs(5),
        fail_mode: FailMode::Deny,
        decider_gid: None,
        metrics_listen: None,
        server: None,
        server_owner: "owner@example.com".into(),
        server_cert_dir: dir.join("certs"),
        policy_from_server: false,
        dns_resolvers: Vec::new(),
    }
}

/// A child process stopped as the kernel stops a paused task; killed when dropped.
pub struct Stopped {
    child: Child,
}

impl Stopped {
    pub fn new() -> Self {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep starts");
        let stopped = Self { child };
        // Stopped in its sleep, not in the execve that started it (whose argv the
        // daemon would read, as for an exec the kernel paused).
        let pid = stopped.pid();
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        for _ in 0..1000 {
            if comm() == "sleep\n" && crate::task::state(pid) == Some('S') {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        for _ in 0..1000 {
            if crate::task::state(stopped.pid()) == Some('T') {
                return stopped;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("process {} never stopped", stopped.pid());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the process (and reaps it), as if it was killed while paused.
    pub fn end(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.end();
    }
}

pub fn connect(addr: &str) -> Action {
    Action::Connect {
        addr: addr.parse().unwrap(),
        transport: Transport::Tcp,
    }
}

/// A running daemon over a fake kernel.
pub struct Daemon {
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Starts the daemon on `kernel` (a new backend of it, as a (re)started daemon loads
/// one) and waits until its socket answers.
pub async fn start(kernel: &FakeKernel, config: Config) -> Daemon {
    let (stop, stopped) = oneshot::channel::<()>();
    let socket = config.socket.clone();
    let kernel = kernel.clone();
    let task = tokio::spawn(run_on(config, move |_| Ok(kernel.backend()?), async {
        let _ = stopped.await;
    }));
    let mut daemon = Daemon {
        socket,
        stop: Some(stop),
        task,
    };
    // A socket left by a daemon that died does not answer: wait for this one's.
    for _ in 0..2000 {
        if daemon.task.is_finished() {
            let result = (&mut daemon.task).await.expect("the daemon task");
            panic!("the daemon stopped at start: {result:?}");
        }
        if let Ok(ApiResponse::Status { .. }) = daemon.try_call(ApiRequest::Status).await {
            return daemon;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the daemon never answered on its socket");
}

impl Daemon {
    async fn try_call(&self, req: ApiRequest) -> Result<ApiResponse, crate::api::ClientError> {
        let socket = self.socket.clone();
        // Blocking, as `belay` is: a blocking task also keeps a paused clock from
        // jumping ahead while the daemon answers.
        tokio::task::spawn_blocking(move || crate::api::call(&socket, &req))
            .await
            .unwrap()
    }

    pub async fn call(&self, req: ApiRequest) -> ApiResponse {
        self.try_call(req).await.expect("the daemon answers")
    }

    pub async fn pending(&self) -> Vec<RequestView> {
        match self.call(ApiRequest::Pending).await {
            ApiResponse::Requests { requests } => requests,
            other => panic!("pending: {other:?}"),
        }
    }

    /// Waits until `n` requests are pending, and returns them.
    pub async fn until_pending(&self, n: usize) -> Vec<RequestView> {
        for _ in 0..2000 {
            let pending = self.pending().await;
            if pending.len() >= n {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{n} requests never became pending");
    }

    /// Decides request `id` as root (the test) on the local socket.
    pub async fn decide(&self, id: u64, verdict: Verdict) -> ApiResponse {
        self.call(ApiRequest::Decide {
            id,
            verdict,
            reason: None,
        })
        .await
    }

    /// Stops the daemon the way SIGTERM does, and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().map(|s| s.send(()));
        (&mut self.task).await.expect("the daemon task")
    }

    /// Starts stopping the daemon the way SIGTERM does, without waiting for it.
    pub fn begin_stop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// The pending request for a connect to `address`.
pub fn request_to(pending: &[RequestView], address: &str) -> RequestView {
    pending
        .iter()
        .find(|r| matches!(&r.action, ActionView::Connect { address: a, .. } if a == address))
        .unwrap_or_else(|| panic!("no request to {address} in {pending:?}"))
        .clone()
}
