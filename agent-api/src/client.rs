//! The blocking client of the socket, for the CLI: one request line out, one answer line
//! in.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use crate::{ApiRequest, ApiResponse};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach belay-agent at {path}: {source} (is belay-agent running? see --socket)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to belay-agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("belay-agent sent an unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request and reads the answer (blocking; for the CLI).
pub fn call(socket: &Path, req: &ApiRequest) -> Result<ApiResponse, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}
