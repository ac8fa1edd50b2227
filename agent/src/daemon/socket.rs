//! The local API socket: who may connect (its mode and group), and how long a client
//! may take to send its one request line.
//!
//! Deciding is checked per caller (`authz`), but connecting alone already shows every
//! pending request (masked argv, environment, destinations) and holds a task and a file
//! descriptor of the daemon. So the socket is not world-writable by default (0660:
//! root and the socket's group), and a client that connects and sends nothing is
//! dropped after [`READ_TIMEOUT`].
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader},
    net::UnixListener,
};

/// How long a client has to send its whole request line. `belay` sends it at once.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon waits for a client to take its answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default mode of the socket: owner (root) and group read-write, nobody else.
pub const DEFAULT_MODE: u32 = 0o660;

/// Who may connect to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// Permission bits (at most 0o777).
    pub mode: u32,
    /// Group that owns the socket; `None` keeps the daemon's own (root's).
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        Self {
            mode: DEFAULT_MODE,
            group: None,
        }
    }
}

/// Parses `--socket-mode`: octal permission bits such as `0660` or `660`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{text:?} is not an octal mode such as 0660"))?;
    if mode > 0o777 {
        return Err(format!(
            "{text:?} has bits beyond 0777 (setuid, setgid, sticky mean nothing on a socket)"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{text:?} must let the owner (root) read and write, or `belay` as root cannot connect"
        ));
    }
    Ok(mode)
}

/// Binds the socket at `path` with `access`, replacing a stale one. The socket is
/// created under a temporary name, given its mode and group, and only then renamed into
/// place: there is no moment at which `path` accepts a client `access` would refuse.
pub fn bind(path: &Path, access: SocketAccess) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let staging = staging_path(path);
    remove_if_present(&staging)?;
    let listener =
        UnixListener::bind(&staging).with_context(|| format!("binding {}", staging.display()))?;
    let prepared = (|| {
        if let Some(gid) = access.group {
            std::os::unix::fs::chown(&staging, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", staging.display()))?;
        }
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(access.mode))
            .with_context(|| format!("setting permissions of {}", staging.display()))?;
        // Replaces a stale socket of an earlier run atomically.
        std::fs::rename(&staging, path)
            .with_context(|| format!("moving {} to {}", staging.display(), path.display()))
    })();
    if prepared.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    prepared?;
    Ok(listener)
}

fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.new", std::process::id()));
    path.with_file_name(name)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
}

/// Why no request line was read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no complete request within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("request longer than {0} bytes")]
    TooLong(usize),
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request line of at most `max` bytes, within `timeout` in all: a client
/// that sends nothing, or trickles bytes, is dropped when it runs out.
pub async fn read_request(
    read: impl AsyncRead + Unpin,
    max: usize,
    timeout: Duration,
) -> Result<String, ReadError> {
    let mut line = String::new();
    let mut limited = BufReader::new(read.take(max as u64 + 1));
    tokio::time::timeout(timeout, limited.read_line(&mut line))
        .await
        .map_err(|_| ReadError::TimedOut(timeout))??;
    if line.len() > max {
        return Err(ReadError::TooLong(max));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[tokio::test]
    async fn the_socket_is_not_world_writable_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        // A stale socket of an earlier run is replaced.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let _listener = bind(&path, SocketAccess::default()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.permissions().mode() & 0o007, 0, "no access for others");
        // Nothing left behind under the temporary name.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["agent.sock"]);
    }

    #[tokio::test]
    async fn an_explicit_mode_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let access = SocketAccess {
            mode: parse_mode("0600").unwrap(),
            group: None,
        };
        let _listener = bind(&path, access).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn modes_are_octal_and_sane() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("666"), Ok(0o666));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("4660").is_err());
        assert!(parse_mode("0060").is_err());
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_dropped_after_the_timeout() {
        let (_client, server) = tokio::net::UnixStream::pair().unwrap();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            read_request(server, 1024, Duration::from_millis(200)),
        )
        .await
        .expect("the daemon gives up on its own");
        assert!(matches!(read, Err(ReadError::TimedOut(_))), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_client_that_trickles_is_dropped_too() {
        let (mut client, server) = tokio::net::UnixStream::pair().unwrap();
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            read_request(server, 1024, Duration::from_millis(300)),
        )
        .await
        .expect("the daemon gives up on its own");
        assert!(matches!(read, Err(ReadError::TimedOut(_))), "{read:?}");
        trickle.abort();
    }

    #[tokio::test]
    async fn a_prompt_request_is_read() {
        let (mut client, server) = tokio::net::UnixStream::pair().unwrap();
        client.write_all(b"{\"op\":\"status\"}\n").await.unwrap();
        let line = read_request(server, 1024, READ_TIMEOUT).await.unwrap();
        assert_eq!(line, "{\"op\":\"status\"}\n");
        let (mut client, server) = tokio::net::UnixStream::pair().unwrap();
        client.write_all(&[b'x'; 2000]).await.unwrap();
        assert!(matches!(
            read_request(server, 1024, READ_TIMEOUT).await,
            Err(ReadError::TooLong(1024))
        ));
    }
}
