//! A throwaway PostgreSQL cluster: Debian's `postgresql` server binaries, run by the
//! tests themselves, one cluster per process, a fresh database per test.
//!
//! - The cluster lives in a temporary directory owned by the `postgres` system user
//!   (PostgreSQL refuses to run as root; as any other user it runs as that user), listens
//!   on 127.0.0.1 on a free port with its Unix socket in that directory, and runs with
//!   fsync off: nothing in it has to survive a crash.
//! - It is stopped at process exit (an `atexit` hook sends the immediate-shutdown signal
//!   and removes the directory). Should the process die without running it, the
//!   postmaster gets the same signal from the kernel (parent-death signal of the thread
//!   that started it, which never ends), and the next process removes the directory.
//! - Missing binaries fail the caller with a message naming `cargo xtask setup`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// Where Debian installs the server binaries, one directory per major version.
const DEBIAN_BINARIES: &str = "/usr/lib/postgresql";
/// Name prefix of cluster directories under the temporary directory.
const DIR_PREFIX: &str = "belay-pg-";
/// How long the cluster may take to accept connections.
const STARTUP: Duration = Duration::from_secs(60);

/// The running cluster of this process.
#[derive(Debug)]
pub struct Cluster {
    port: u16,
    dir: PathBuf,
    pid: i32,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The cluster of this process, started on first use.
///
/// # Panics
///
/// If it cannot be started, with the reason (and `cargo xtask setup` when the binaries
/// are missing): a test that needs PostgreSQL fails rather than silently skipping.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start_on_own_thread) {
        Ok(cluster) => cluster,
        Err(problem) => panic!("cannot start a PostgreSQL cluster for the tests: {problem}"),
    }
}

impl Cluster {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data in `data/`, server log in `postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// URL of `database` as the superuser `postgres` (trust authentication on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("belay_test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .unwrap_or_else(|err| panic!("cannot connect to the test cluster: {err}"));
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
        drop(client);
        let _ = driver.await;
        self.url(&name)
    }
}

/// A new empty database in this process's cluster; its URL.
pub async fn database() -> String {
    // Starting the cluster blocks (once per process, about a second).
    cluster().create_database().await
}

/// [`database`] for callers that are not async, or are inside a runtime they may not
/// block on: runs on a thread of its own.
pub fn database_blocking() -> String {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(database())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A multi-threaded runtime that runs for the whole process: stores opened on it from
/// synchronous code keep their background tasks running whatever runtime uses them.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("belay-test-pg")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Runs `future` to completion on [`runtime`], from any thread (also one inside another
/// runtime, which it blocks meanwhile).
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| runtime().block_on(future))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Starts the cluster from a thread that then sleeps until the process exits: the
/// postmaster's parent-death signal fires when the thread that started it ends.
fn start_on_own_thread() -> Result<Cluster, String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("belay-test-postgres".into())
        .spawn(move || {
            let _ = sender.send(start());
            loop {
                std::thread::park();
            }
        })
        .map_err(|err| format!("cannot start a thread: {err}"))?;
    receiver
        .recv()
        .map_err(|_| "the cluster's thread ended".to_owned())?
}

/// The bin directory of the newest PostgreSQL installed.
fn binaries() -> Result<PathBuf, String> {
    binaries_in(Path::new(DEBIAN_BINARIES))
}

/// The bin directory of the newest PostgreSQL under `base` (Debian's layout).
fn binaries_in(base: &Path) -> Result<PathBuf, String> {
    let missing = || {
        format!(
            "no PostgreSQL server binaries in {}/<version>/bin: run `cargo xtask setup` \
             (it installs Debian's postgresql package)",
            base.display()
        )
    };
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(base)
        .map_err(|_| missing())?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

/// uid and gid of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|err| format!("/etc/passwd: {err}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            "no `postgres` user (created by Debian's postgresql package): run \
             `cargo xtask setup`"
                .to_owned()
        })
}

/// Removes cluster directories left by processes that no longer exist.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|err| format!("cannot find a free port: {err}"))
}

fn start() -> Result<Cluster, String> {
    let bin = binaries()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let user = if root { Some(postgres_user()?) } else { None };
    sweep_stale();

    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    if let Some((uid, gid)) = user {
        chown(&dir, Some(uid), Some(gid))
            .map_err(|err| format!("cannot give {} to postgres: {err}", dir.display()))?;
    }
    let data = dir.join("data");
    let as_postgres = |command: &mut Command| {
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        // Under root's home directory the postgres user may not even look.
        command.current_dir(&dir);
    };

    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"]);
    as_postgres(&mut initdb);
    let output = initdb
        .output()
        .map_err(|err| format!("cannot run {}: {err}", bin.join("initdb").display()))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }

    let log_path = dir.join("postgres.log");
    let log = fs::File::create(&log_path).map_err(|err| format!("cannot create the log: {err}"))?;
    if let Some((uid, gid)) = user {
        let _ = chown(&log_path, Some(uid), Some(gid));
    }
    let port = free_port()?;
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|err| err.to_string())?)
        .stderr(log);
    as_postgres(&mut postgres);
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit)
    // between fork and exec.
    unsafe {
        postgres.pre_exec(|| {
            // SIGQUIT: the postmaster's immediate shutdown, which also ends its backends.
            // Set after the uid change, which would clear it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = postgres
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", bin.join("postgres").display()))?;
    let pid = i32::try_from(child.id()).map_err(|err| err.to_string())?;
    let cluster = Cluster { port, dir, pid };
    register_cleanup(&cluster);

    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("postgres exited ({status}): {}", log.trim()));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            // The thread keeps `child` (and so its pid) until the atexit hook reaps it.
            std::mem::forget(child);
            return Ok(cluster);
        }
        if started.elapsed() > STARTUP {
            let _ = child.kill();
            return Err(format!("postgres not ready after {} s", STARTUP.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static CLEANUP: OnceLock<(i32, PathBuf)> = OnceLock::new();

fn register_cleanup(cluster: &Cluster) {
    if CLEANUP.set((cluster.pid, cluster.dir.clone())).is_ok() {
        // SAFETY: `stop_at_exit` is a plain `extern "C" fn()` that does not unwind.
        unsafe {
            libc::atexit(stop_at_exit);
        }
    }
}

extern "C" fn stop_at_exit() {
    let Some((pid, dir)) = CLEANUP.get() else {
        return;
    };
    // SAFETY: signalling and reaping our own child; no memory is involved.
    unsafe {
        libc::kill(*pid, libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => eprintln!("cannot remove the test cluster {}: {err}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_server_binaries_are_found_or_setup_is_named() {
        let base = tempfile::tempdir().unwrap();
        let err = binaries_in(base.path()).unwrap_err();
        assert!(err.contains("run `cargo xtask setup`"), "{err}");
        let err = binaries_in(&base.path().join("absent")).unwrap_err();
        assert!(err.contains("run `cargo xtask setup`"), "{err}");

        for (version, complete) in [("9", true), ("15", true), ("16", false), ("main", true)] {
            let bin = base.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::write(bin.join("initdb"), "").unwrap();
            if complete {
                fs::write(bin.join("postgres"), "").unwrap();
            }
        }
        // 15, not 9 (numbers, not text), nor 16 (no server binary).
        assert_eq!(
            binaries_in(base.path()).unwrap(),
            base.path().join("15").join("bin")
        );
    }
}
