//! The audit trail: every state change of a request (submitted, decided, expired,
//! cancelled) appended to an append-only, hash-chained log with signed checkpoints.
//!
//! - A record is `(seq, at, kind, request_id, body, prev_hash, hash)`. `body` is canonical
//!   JSON (keys sorted, no whitespace) holding everything a reader needs: request id,
//!   host, owner, agent, action, reviewer, verdict, reason, times.
//! - `hash = SHA-256(prev_hash || seq as 8 bytes big-endian || body)`; the first record's
//!   `prev_hash` is 32 zero bytes. Editing, removing or reordering a record breaks the
//!   chain at that record.
//! - Every [`DEFAULT_CHECKPOINT_EVERY`] records (and when the store closes) the head is
//!   signed: an ed25519 signature over `seq as 8 bytes big-endian || hash`, so that a
//!   rewritten chain (edited and re-hashed to the end) no longer matches the signatures.
//!   Records after the last checkpoint are an "unsigned tail": intact as a chain, but
//!   someone with write access could have rewritten or truncated them.
//!
//! Records are appended by the stores in the same transaction (or critical section) as
//! the state change they record (belay-server's stores). [`verify`] checks a SQLite
//! database; [`Verifier`] checks records from anywhere.
//!
//! A crate of its own so that `belay audit verify` checks a log without linking the
//! server.

mod chain;
mod key;
mod sqlite;
mod verify;

use std::path::Path;

use ed25519_dalek::VerifyingKey;

pub use chain::{
    AuditSigner, Checkpoint, Event, MemoryChain, Record, checkpoint_message, record_hash,
};
pub use key::{AuditKey, default_key_path, key_id, parse_public_key, public_key_hex};
pub use verify::{Problem, Report, Verifier, verify_records};

/// Records between two signed checkpoints, unless configured otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100;

/// `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit key {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("cannot read the audit log of {path}: {problem}")]
    Read { path: String, problem: String },
}

/// Checks the audit log of the belay-server SQLite database at `db_path` (opened
/// read-only) against `public_key`: the chain from the first record, and every
/// checkpoint. Reports the first edited, removed or reordered record.
pub fn verify(db_path: &Path, public_key: &VerifyingKey) -> Result<Report, AuditError> {
    sqlite::verify(db_path, public_key)
}

/// The public key to verify the log of `db` with: `public_key` (hex) if given, else the
/// one of the signing key at `key_path` (default `<db>.audit-key`), which is only read.
pub fn resolve_public_key(
    db: &Path,
    public_key: Option<&str>,
    key_path: Option<&Path>,
) -> Result<VerifyingKey, AuditError> {
    if let Some(text) = public_key {
        return parse_public_key(text).map_err(|problem| AuditError::Key {
            path: "--public-key".into(),
            problem,
        });
    }
    let path = key_path.map_or_else(|| default_key_path(db), Path::to_path_buf);
    AuditKey::load(&path)
        .map(|key| key.public_key())
        .map_err(|err| match err {
            AuditError::Key { path, problem } => AuditError::Key {
                path,
                problem: format!("{problem} (give the public key with --public-key)"),
            },
            other => other,
        })
}
