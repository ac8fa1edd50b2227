//! The chain: records hashed one onto the next, and the signer of its checkpoints.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};

use crate::{AuditKey, GENESIS};

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
    pub fn due(&self, seq: u64) -> bool {
        seq.is_multiple_of(self.every)
    }

    pub fn checkpoint(&self, seq: u64, hash: [u8; 32]) -> Checkpoint {
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
pub struct Event {
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
    pub fn chained(head_seq: u64, head_hash: &[u8], event: Event) -> Self {
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

/// The log of the in-memory store: same records, hashes and checkpoints as in SQLite.
#[derive(Debug)]
pub struct MemoryChain {
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
