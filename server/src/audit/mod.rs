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
//! the state change they record: see `approvals::store`. [`verify`] checks a database.

mod key;
pub mod postgres;
pub(crate) mod sqlite;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use belay_proto::domain::{Action, Outcome, Protocol, Request};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::approvals::columns::nanos;

pub use key::{AuditKey, default_key_path, key_id, parse_public_key, public_key_hex};

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

/// Signs checkpoints: the key, and how often.
#[derive(Debug)]
pub struct AuditSigner {
    key: AuditKey,
    every: u64,
}

impl AuditSigner {
    /// `every` of 0 is taken as 1.
    pub fn new(key: AuditKey, every: u64) -> Self {
        Self {
            key,
            every: every.max(1),
        }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.public_key()
    }

    /// Whether the record `seq` gets a checkpoint as soon as it is appended.
    fn due(&self, seq: u64) -> bool {
        seq.is_multiple_of(self.every)
    }

    fn checkpoint(&self, seq: u64, hash: [u8; 32]) -> Checkpoint {
        Checkpoint {
            seq,
            hash: hash.to_vec(),
            signature: self.key.sign(&checkpoint_message(seq, &hash)).to_vec(),
            key_id: self.key.key_id(),
        }
    }
}

/// A state change to record, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub at: i64,
    pub kind: &'static str,
    pub request_id: String,
    pub body: String,
}

/// One record of the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Nanoseconds since the epoch of the state change.
    pub at: i64,
    pub kind: String,
    pub request_id: String,
    pub body: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A signature over the chain's head at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
}

/// `SHA-256(prev_hash || seq (8 bytes, big-endian) || body)`.
pub fn record_hash(prev_hash: &[u8], seq: u64, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(seq.to_be_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// What a checkpoint signs: `seq (8 bytes, big-endian) || hash`.
pub fn checkpoint_message(seq: u64, hash: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(8 + hash.len());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message
}

impl Record {
    /// The record following `(head_seq, head_hash)` (`(0, GENESIS)` for the first).
    pub(crate) fn chained(head_seq: u64, head_hash: &[u8], event: Event) -> Self {
        let seq = head_seq + 1;
        let hash = record_hash(head_hash, seq, event.body.as_bytes());
        Self {
            seq,
            at: event.at,
            kind: event.kind.to_owned(),
            request_id: event.request_id,
            body: event.body,
            prev_hash: head_hash.to_vec(),
            hash: hash.to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Events

fn action(action: &Action) -> serde_json::Value {
    match action {
        Action::Exec(exec) => json!({
            "type": "exec",
            "path": exec.path(),
            "argv": exec.argv(),
            "cwd": exec.cwd(),
        }),
        Action::Connect(connect) => json!({
            "type": "connect",
            "address": connect.address.to_string(),
            "port": connect.port.get(),
            "protocol": match connect.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            },
        }),
    }
}

/// The common part of every body; `serde_json::Value` keeps keys sorted, so the text is
/// canonical.
fn base(
    request: &Request,
    kind: &'static str,
    at: i64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("kind".into(), kind.into());
    body.insert("at".into(), at.into());
    body.insert("request_id".into(), request.id.as_str().into());
    body.insert("host".into(), request.host.as_str().into());
    body.insert("owner".into(), request.owner.as_str().into());
    body.insert("agent".into(), request.agent_name.as_str().into());
    body.insert("action".into(), action(&request.action));
    body
}

fn event(
    request: &Request,
    kind: &'static str,
    at: i64,
    body: serde_json::Map<String, serde_json::Value>,
) -> Event {
    Event {
        at,
        kind,
        request_id: request.id.as_str().to_owned(),
        body: serde_json::Value::Object(body).to_string(),
    }
}

/// A request was submitted (recorded as it was stored, even if already final).
pub(crate) fn submitted(request: &Request) -> Event {
    let at = nanos(request.created_at);
    let mut body = base(request, "submitted", at);
    body.insert("pid".into(), request.pid.into());
    body.insert("uid".into(), request.uid.into());
    body.insert("rule".into(), request.rule.as_str().into());
    body.insert("deadline".into(), nanos(request.deadline).into());
    body.insert(
        "default_verdict".into(),
        request.default_verdict.as_str().into(),
    );
    event(request, "submitted", at, body)
}

/// A request ended: decided, expired or cancelled. `None` if it is still pending.
pub(crate) fn resolved(request: &Request) -> Option<Event> {
    let resolution = request.resolution.as_ref()?;
    let at = nanos(resolution.resolved_at);
    let kind = match &resolution.outcome {
        Outcome::Decided { .. } => "decided",
        Outcome::Expired { .. } => "expired",
        Outcome::Cancelled => "cancelled",
    };
    let mut body = base(request, kind, at);
    body.insert("state".into(), resolution.outcome.state().as_str().into());
    body.insert("reason".into(), resolution.reason.as_str().into());
    if let Some(verdict) = resolution.outcome.verdict() {
        body.insert("verdict".into(), verdict.as_str().into());
    }
    if let Some(reviewer) = resolution.outcome.reviewer() {
        body.insert("reviewer".into(), reviewer.as_str().into());
    }
    Some(event(request, kind, at, body))
}

/// A reviewer's approval was counted towards the request's quorum.
pub(crate) fn voted(request: &Request, vote: &crate::approvals::Vote) -> Event {
    let at = nanos(vote.at);
    let mut body = base(request, "voted", at);
    body.insert("reviewer".into(), vote.reviewer.as_str().into());
    body.insert("reason".into(), vote.reason.as_str().into());
    body.insert("scope".into(), vote.scope.as_str().into());
    event(request, "voted", at, body)
}

/// A decision on `request` became a standing grant for the same action.
pub(crate) fn granted(request: &Request, grant: &crate::approvals::Grant) -> Event {
    let at = nanos(grant.granted_at);
    let mut body = base(request, "granted", at);
    body.insert("reviewer".into(), grant.reviewer.as_str().into());
    body.insert("verdict".into(), grant.verdict.as_str().into());
    body.insert("reason".into(), grant.reason.as_str().into());
    body.insert("scope".into(), grant.scope.as_str().into());
    body.insert("expires_at".into(), nanos(grant.expires_at).into());
    event(request, "granted", at, body)
}

// ---------------------------------------------------------------------------------------
// The in-memory chain

/// The log of the in-memory store: same records, hashes and checkpoints as in SQLite.
#[derive(Debug)]
pub(crate) struct MemoryChain {
    signer: AuditSigner,
    records: Vec<Record>,
    checkpoints: Vec<Checkpoint>,
}

impl MemoryChain {
    pub fn new(signer: AuditSigner) -> Self {
        Self {
            signer,
            records: Vec::new(),
            checkpoints: Vec::new(),
        }
    }

    pub fn append(&mut self, event: Event) {
        let (seq, hash) = self
            .records
            .last()
            .map_or((0, &GENESIS[..]), |head| (head.seq, &head.hash[..]));
        let record = Record::chained(seq, hash, event);
        if self.signer.due(record.seq) {
            let hash: [u8; 32] = record.hash.as_slice().try_into().expect("SHA-256 hash");
            self.checkpoints
                .push(self.signer.checkpoint(record.seq, hash));
        }
        self.records.push(record);
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.signer.public_key()
    }
}

// ---------------------------------------------------------------------------------------
// Verifying

/// The first thing wrong in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub seq: u64,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.seq, self.what)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records read (up to the first problem, or all).
    pub records: u64,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints: u64,
    /// Records after the last good checkpoint: chained, not signed (not an error).
    pub unsigned_tail: u64,
    /// Key id of the public key checked against.
    pub key_id: String,
    pub first_problem: Option<Problem>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.first_problem.is_none()
    }
}

/// Checks records one by one, in seq order, against the checkpoints.
struct Verifier<'a> {
    key: &'a VerifyingKey,
    key_id: String,
    checkpoints: BTreeMap<u64, Checkpoint>,
    checked_checkpoints: u64,
    last_signed: u64,
    head_seq: u64,
    head_hash: Vec<u8>,
    records: u64,
    problem: Option<Problem>,
}

impl<'a> Verifier<'a> {
    fn new(key: &'a VerifyingKey, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Self {
        Self {
            key,
            key_id: key_id(key),
            checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(),
            checked_checkpoints: 0,
            last_signed: 0,
            head_seq: 0,
            head_hash: GENESIS.to_vec(),
            records: 0,
            problem: None,
        }
    }

    /// Checks the next record; returns whether to go on.
    fn push(&mut self, record: &Record) -> bool {
        match self.check(record) {
            Ok(()) => true,
            Err(problem) => {
                self.problem = Some(problem);
                false
            }
        }
    }

    fn check(&mut self, record: &Record) -> Result<(), Problem> {
        let expected = self.head_seq + 1;
        let problem = |seq, what: String| Problem { seq, what };
        if record.seq != expected {
            let what = if record.seq > expected {
                format!(
                    "missing: the chain goes from record {} to record {} (removed?)",
                    self.head_seq, record.seq
                )
            } else {
                format!("out of order after record {}", self.head_seq)
            };
            return Err(problem(expected, what));
        }
        self.records += 1;
        if record.prev_hash != self.head_hash {
            return Err(problem(
                record.seq,
                format!(
                    "its previous hash is not the hash of record {} (removed or reordered?)",
                    self.head_seq
                ),
            ));
        }
        let hash = record_hash(&record.prev_hash, record.seq, record.body.as_bytes());
        if record.hash != hash {
            return Err(problem(
                record.seq,
                "hash does not match its contents (edited?)".into(),
            ));
        }
        if !columns_match_body(record) {
            return Err(problem(
                record.seq,
                "its kind, request id or time differ from its body (edited?)".into(),
            ));
        }
        self.head_seq = record.seq;
        self.head_hash = record.hash.clone();
        if let Some(checkpoint) = self.checkpoints.remove(&record.seq) {
            self.check_checkpoint(&checkpoint)?;
        }
        Ok(())
    }

    fn check_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), Problem> {
        let seq = checkpoint.seq;
        let problem = |what: String| Problem { seq, what };
        if checkpoint.hash != self.head_hash {
            return Err(problem(
                "its checkpoint's hash does not match the chain (chain rewritten?)".into(),
            ));
        }
        let signature = Signature::from_slice(&checkpoint.signature)
            .map_err(|_| problem("its checkpoint's signature is malformed (forged?)".into()))?;
        if self
            .key
            .verify(&checkpoint_message(seq, &checkpoint.hash), &signature)
            .is_err()
        {
            let whose = if checkpoint.key_id == self.key_id {
                String::new()
            } else {
                format!(
                    "; it names key {}, not the given key {}",
                    checkpoint.key_id, self.key_id
                )
            };
            return Err(problem(format!(
                "its checkpoint's signature does not verify with the public key \
                 (forged, or signed by another key{whose})"
            )));
        }
        self.checked_checkpoints += 1;
        self.last_signed = seq;
        Ok(())
    }

    fn finish(mut self) -> Report {
        if self.problem.is_none()
            && let Some((&seq, _)) = self.checkpoints.first_key_value()
        {
            // Every record up to the head was checked, so a checkpoint left over signs
            // a record that is no longer there.
            self.problem = Some(Problem {
                seq,
                what: format!(
                    "signed by a checkpoint but missing: the log ends at record {} \
                     (removed?)",
                    self.head_seq
                ),
            });
        }
        Report {
            records: self.records,
            checkpoints: self.checked_checkpoints,
            unsigned_tail: self.head_seq - self.last_signed,
            key_id: self.key_id,
            first_problem: self.problem,
        }
    }
}

fn columns_match_body(record: &Record) -> bool {
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&record.body) else {
        return false;
    };
    body.get("kind").and_then(|v| v.as_str()) == Some(record.kind.as_str())
        && body.get("request_id").and_then(|v| v.as_str()) == Some(record.request_id.as_str())
        && body.get("at").and_then(serde_json::Value::as_i64) == Some(record.at)
}

/// Checks a log held in memory (records in seq order).
pub fn verify_records<'r>(
    records: impl IntoIterator<Item = &'r Record>,
    checkpoints: impl IntoIterator<Item = Checkpoint>,
    public_key: &VerifyingKey,
) -> Report {
    let mut verifier = Verifier::new(public_key, checkpoints);
    for record in records {
        if !verifier.push(record) {
            break;
        }
    }
    verifier.finish()
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
