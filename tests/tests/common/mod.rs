//! What the daemon tests share: a `belay-agent` on its own socket, pin directory and
//! metrics port, and `belay` run against it.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use belay_tests::{Actor, PinDir, binary, wait_until};

pub mod belay_server;
use serde_json::Value;

pub const LONG: Duration = Duration::from_secs(30);
/// The uid the AI agents of these tests run as.
pub const AGENT_UID: u32 = 1000;

/// A policy file in its own directory, kept for the test's lifetime.
pub struct PolicyFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl PolicyFile {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).unwrap();
        Self { _dir: dir, path }
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// Replaces the file the way editors do (write a new file, rename it over).
    pub fn replace(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    pub metrics: std::net::SocketAddr,
    pub pins: PinDir,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(PinDir::new(), extra)
    }

    /// Starts a daemon on `pins`, which an earlier daemon may have left behind.
    pub fn start_with(pins: PinDir, extra: &[&str]) -> Self {
        Self::spawn(pins, extra, Stdio::inherit())
    }

    /// Starts a daemon whose log (stderr) goes to the file `log`, for a test to read.
    pub fn start_logging_to(log: &std::path::Path, extra: &[&str]) -> Self {
        let file = std::fs::File::create(log).expect("the agent's log file");
        Self::spawn(PinDir::new(), extra, Stdio::from(file))
    }

    fn spawn(pins: PinDir, extra: &[&str], stderr: Stdio) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The agents run as AGENT_UID and must reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let socket = dir.path().join("agent.sock");
        // A free port for this daemon's metrics.
        let metrics = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(binary("belay-agent").unwrap())
            .arg("--socket")
            .arg(&socket)
            // Not world-writable by default; these agents run `belay run` as AGENT_UID.
            .args(["--socket-mode", "0666"])
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--pin-dir")
            .arg(&pins.0)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("belay-agent starts");
        let mut exited = None;
        let up = wait_until(LONG, || {
            exited = child.try_wait().unwrap();
            socket.exists() || exited.is_some()
        });
        assert!(exited.is_none(), "belay-agent exited at start: {exited:?}");
        assert!(up, "belay-agent opened its socket");
        Self {
            child,
            socket,
            metrics,
            pins,
            _dir: dir,
        }
    }

    /// SIGKILLs the daemon, as a crash would, and hands back its pin directory.
    pub fn crash(mut self) -> PinDir {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::replace(&mut self.pins, PinDir(PathBuf::new()))
    }

    pub fn belay(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("belay").unwrap())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("belay runs")
    }

    pub fn pending(&self) -> Vec<Value> {
        let out = self.belay(&["pending", "--output", "json"]);
        assert!(out.status.success(), "belay pending: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["result"], "requests");
        v["requests"].as_array().unwrap().clone()
    }

    /// Waits for exactly one pending request and returns it.
    pub fn one_pending(&self) -> Value {
        let mut found = Vec::new();
        assert!(
            wait_until(LONG, || {
                found = self.pending();
                found.len() == 1
            }),
            "one pending request, got {found:?}"
        );
        found.remove(0)
    }

    /// `belay run -- CMD` as the AI agent's own user, AGENT_UID: root decides for it.
    pub fn run(&self, cmd: &[&str]) -> Actor {
        let mut c = Command::new(binary("belay").unwrap());
        c.arg("--socket")
            .arg(&self.socket)
            .arg("run")
            .arg("--")
            .args(cmd)
            .uid(AGENT_UID)
            .gid(AGENT_UID);
        Actor::start(&mut c).unwrap()
    }

    /// `belay run -- CMD` as AGENT_UID, with `env` added to CMD's environment.
    pub fn run_env(&self, env: &[(&str, &str)], cmd: &[&str]) -> Actor {
        let mut c = Command::new(binary("belay").unwrap());
        c.arg("--socket")
            .arg(&self.socket)
            .arg("run")
            .arg("--")
            .args(cmd)
            .envs(env.iter().copied())
            .uid(AGENT_UID)
            .gid(AGENT_UID);
        Actor::start(&mut c).unwrap()
    }

    /// `belay run --subject SUBJECT -- CMD` as AGENT_UID.
    pub fn run_as(&self, subject: &str, cmd: &[&str]) -> Actor {
        let mut c = Command::new(binary("belay").unwrap());
        c.arg("--socket")
            .arg(&self.socket)
            .args(["run", "--subject", subject, "--"])
            .args(cmd)
            .uid(AGENT_UID)
            .gid(AGENT_UID);
        Actor::start(&mut c).unwrap()
    }

    /// `belay status --output json`'s status object.
    pub fn status(&self) -> Value {
        let out = self.belay(&["status", "--output", "json"]);
        let v: Value = serde_json::from_str(&ok(&out)).unwrap();
        v["status"].clone()
    }

    /// `belay ARGS` as `uid`/`gid`.
    pub fn belay_as(&self, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
        Command::new(binary("belay").unwrap())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("belay runs")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn actor_path() -> String {
    binary("belay-actor").unwrap().display().to_string()
}

pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "belay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: belay\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// A DNS server on `bind` answering `answers` A queries, each with `ip`.
pub fn dns_server(bind: &str, ip: [u8; 4], answers: usize) -> std::thread::JoinHandle<()> {
    dns_server_forging(bind, ip, answers, Forge::Nothing)
}

/// What a [`dns_server_forging`] changes in its answers.
#[derive(Debug, Clone, Copy)]
pub enum Forge {
    Nothing,
    /// Answers for this name, whatever was asked (the id stays).
    Question(&'static str),
    /// Answers with another transaction id.
    Id,
}

/// [`dns_server`], answering what `forge` says rather than what was asked: what an
/// answer injected from the resolver's address would be.
pub fn dns_server_forging(
    bind: &str,
    ip: [u8; 4],
    answers: usize,
    forge: Forge,
) -> std::thread::JoinHandle<()> {
    let sock = std::net::UdpSocket::bind(bind).expect("port 53 free in the VM");
    std::thread::spawn(move || {
        for _ in 0..answers {
            let mut buf = [0u8; 512];
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let mut r = match forge {
                Forge::Question(name) => {
                    let mut r = buf[..12].to_vec();
                    for label in name.split('.') {
                        r.push(label.len() as u8);
                        r.extend_from_slice(label.as_bytes());
                    }
                    r.extend_from_slice(&[0, 0, 1, 0, 1]);
                    r
                }
                _ => buf[..n].to_vec(),
            };
            if let Forge::Id = forge {
                r[1] ^= 0x5a;
            }
            r[2] = 0x81; // QR, RD
            r[3] = 0x80; // RA, NOERROR
            r[6..8].copy_from_slice(&1u16.to_be_bytes()); // one answer
            // Name pointer to the question, type A, class IN, TTL 60, 4 bytes.
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&ip);
            let _ = sock.send_to(&r, from);
        }
    })
}
