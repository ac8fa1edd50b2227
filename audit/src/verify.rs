//! Checking a log: the chain from the first record, and every checkpoint's signature.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use crate::{Checkpoint, GENESIS, Record, checkpoint_message, key_id, record_hash};

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
pub struct Verifier<'a> {
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
    pub fn new(key: &'a VerifyingKey, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Self {
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
    pub fn push(&mut self, record: &Record) -> bool {
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

    pub fn finish(mut self) -> Report {
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
