//! [`MemoryStore`]: requests in process memory, for tests and development.
//!
//! Its audit log is in memory too, appended under the same lock as the change it
//! records, with checkpoints signed by a key generated at start.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use belay_proto::domain::{Request, RequestId, Resolution};

use super::enrollment;
use super::policy::{self, NewPolicy, PolicyVote, StoredPolicy};
use super::{
    AuditLogStore, EnrollOutcome, EnrollToken, Enrollment, EnrollmentStore, Grant, GrantKey,
    GrantStore, Inserted, PolicyStore, RequestStore, Resolved, Revocation, Revoked, StoreError,
    Vote, VoteStore, Voted,
};
use crate::audit::{self, AuditKey, AuditSigner, MemoryChain, Report};
use crate::canonical_action::action_digest;

/// Requests in process memory; lost on restart.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    requests: HashMap<RequestId, Request>,
    /// Pending requests ordered by deadline, so expiry does not scan everything.
    pending_deadlines: BTreeSet<(SystemTime, RequestId)>,
    /// Every grant ever made, with its revocation if it was revoked.
    grants: Vec<(Grant, Option<Revocation>)>,
    votes: HashMap<RequestId, Vec<Vote>>,
    enroll_tokens: HashMap<[u8; 32], (EnrollToken, bool)>,
    /// Every host that ever enrolled.
    enrolled_hosts: std::collections::HashSet<belay_proto::domain::HostName>,
    /// Only the newest version of the fleet policy is ever read.
    policy: Option<StoredPolicy>,
    policy_votes: Vec<PolicyVote>,
    chat_outbox: std::collections::BTreeMap<(String, RequestId), super::OutboxRow>,
    /// Platform -> (holder, until).
    chat_leases: HashMap<String, (String, SystemTime)>,
    /// Inbound chat requests accepted, by (platform, key), until when remembered.
    chat_seen: HashMap<(String, String), SystemTime>,
    audit: MemoryChain,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store whose audit checkpoints are signed with a new random key.
    ///
    /// # Panics
    ///
    /// If the kernel's random source cannot be read.
    pub fn new() -> Self {
        let key = AuditKey::generate().expect("cannot read /dev/urandom for the audit key");
        Self::with_audit(AuditSigner::new(key, audit::DEFAULT_CHECKPOINT_EVERY))
    }

    pub fn with_audit(signer: AuditSigner) -> Self {
        Self {
            inner: Mutex::new(MemoryInner {
                requests: HashMap::new(),
                pending_deadlines: BTreeSet::new(),
                grants: Vec::new(),
                votes: HashMap::new(),
                enroll_tokens: HashMap::new(),
                enrolled_hosts: std::collections::HashSet::new(),
                policy: None,
                policy_votes: Vec::new(),
                chat_outbox: std::collections::BTreeMap::new(),
                chat_leases: HashMap::new(),
                chat_seen: HashMap::new(),
                audit: MemoryChain::new(signer),
            }),
        }
    }

    /// The public key that verifies the audit log's checkpoints.
    pub fn audit_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.lock().audit.public_key()
    }

    /// Verifies the in-memory audit log.
    pub fn verify_audit(&self) -> Report {
        let inner = self.lock();
        audit::verify_records(
            inner.audit.records(),
            inner.audit.checkpoints().iter().cloned(),
            &inner.audit.public_key(),
        )
    }

    /// The in-memory audit log's records, oldest first.
    pub fn all_audit_records(&self) -> Vec<audit::Record> {
        self.lock().audit.records().to_vec()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // Every critical section leaves the maps consistent before anything can panic,
        // so a poisoned lock still guards valid data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RequestStore for MemoryStore {
    async fn insert_if_absent(&self, request: Request) -> Result<Inserted, StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.requests.get(&request.id) {
            return Ok(Inserted::Existing(existing.clone()));
        }
        if request.resolution.is_none() {
            inner
                .pending_deadlines
                .insert((request.deadline, request.id.clone()));
        }
        inner.requests.insert(request.id.clone(), request.clone());
        inner.audit.append(audit::submitted(&request));
        if let Some(event) = audit::resolved(&request) {
            inner.audit.append(event);
        }
        Ok(Inserted::New(request))
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        Ok(self.lock().requests.get(id).cloned())
    }

    async fn resolve_pending(
        &self,
        id: &RequestId,
        resolution: Resolution,
    ) -> Result<Resolved, StoreError> {
        let mut inner = self.lock();
        let Some(request) = inner.requests.get_mut(id) else {
            return Ok(Resolved::NotFound);
        };
        if request.resolution.is_some() {
            return Ok(Resolved::Already(request.clone()));
        }
        request.resolution = Some(resolution);
        let request = request.clone();
        inner
            .pending_deadlines
            .remove(&(request.deadline, request.id.clone()));
        if let Some(event) = audit::resolved(&request) {
            inner.audit.append(event);
        }
        Ok(Resolved::Now(request))
    }

    async fn pending(&self) -> Result<Vec<Request>, StoreError> {
        let inner = self.lock();
        let mut pending: Vec<Request> = inner
            .pending_deadlines
            .iter()
            .filter_map(|(_, id)| inner.requests.get(id).cloned())
            .collect();
        pending.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(pending)
    }

    async fn pending_due(&self, now: SystemTime) -> Result<Vec<RequestId>, StoreError> {
        Ok(self
            .lock()
            .pending_deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn next_deadline(&self) -> Result<Option<SystemTime>, StoreError> {
        Ok(self
            .lock()
            .pending_deadlines
            .first()
            .map(|(deadline, _)| *deadline))
    }

    async fn history(&self, request: &Request, limit: usize) -> Result<Vec<Request>, StoreError> {
        let action = action_digest(&request.action);
        let inner = self.lock();
        let mut found: Vec<Request> = inner
            .requests
            .values()
            .filter(|earlier| {
                earlier.host == request.host
                    && earlier.id != request.id
                    && earlier.resolution.is_some()
                    && earlier.created_at <= request.created_at
                    && action_digest(&earlier.action) == action
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        found.truncate(limit);
        Ok(found)
    }
}

impl GrantStore for MemoryStore {
    async fn add_grant(&self, grant: Grant) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let request = inner
            .requests
            .get(&grant.from_request)
            .cloned()
            .ok_or_else(|| {
                StoreError::Backend(
                    format!("no request {} to grant from", grant.from_request).into(),
                )
            })?;
        // As the databases' unique index: a decision creates at most one grant.
        if inner
            .grants
            .iter()
            .any(|(stored, _)| stored.from_request == grant.from_request)
        {
            return Err(StoreError::Backend(
                format!("request {} has created a grant already", grant.from_request).into(),
            ));
        }
        inner.audit.append(grant.audit_event(&request));
        inner.grants.push((grant, None));
        Ok(())
    }

    async fn find_grants(&self, key: &GrantKey, now: SystemTime) -> Result<Vec<Grant>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<Grant> = inner
            .grants
            .iter()
            .filter(|(grant, revoked)| {
                grant.key == *key && grant.expires_at > now && revoked.is_none()
            })
            .map(|(grant, _)| grant.clone())
            .collect();
        found.sort_by_key(|grant| std::cmp::Reverse(grant.granted_at));
        Ok(found)
    }

    async fn grants_in_force(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<Grant> = inner
            .grants
            .iter()
            .filter(|(grant, revoked)| grant.expires_at > now && revoked.is_none())
            .map(|(grant, _)| grant.clone())
            .collect();
        found.sort_by(|a, b| (b.granted_at, &b.from_request).cmp(&(a.granted_at, &a.from_request)));
        found.truncate(limit);
        Ok(found)
    }

    async fn revoke_grant(
        &self,
        id: &RequestId,
        revocation: Revocation,
    ) -> Result<Revoked, StoreError> {
        let mut inner = self.lock();
        let Some(position) = inner
            .grants
            .iter()
            .position(|(grant, _)| grant.from_request == *id)
        else {
            return Ok(Revoked::NotFound);
        };
        let grant = match Revoked::would_be(Some(inner.grants[position].clone()), revocation.at) {
            Revoked::Now(grant) => grant,
            answer => return Ok(answer),
        };
        let request =
            inner.requests.get(id).cloned().ok_or_else(|| {
                StoreError::Backend(format!("no request {id} for its grant").into())
            })?;
        inner.audit.append(revocation.audit_event(&grant, &request));
        inner.grants[position].1 = Some(revocation);
        Ok(Revoked::Now(grant))
    }
}

impl VoteStore for MemoryStore {
    async fn add_vote(&self, id: &RequestId, vote: Vote) -> Result<Voted, StoreError> {
        let mut inner = self.lock();
        let request = inner
            .requests
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::Backend(format!("no request {id} to vote on").into()))?;
        let votes = inner.votes.entry(id.clone()).or_default();
        if votes
            .iter()
            .any(|counted| counted.reviewer == vote.reviewer)
        {
            return Ok(Voted::AlreadyVoted(votes.clone()));
        }
        votes.push(vote.clone());
        let votes = votes.clone();
        inner.audit.append(vote.audit_event(&request));
        Ok(Voted::Added(votes))
    }

    async fn votes(&self, id: &RequestId) -> Result<Vec<Vote>, StoreError> {
        Ok(self.lock().votes.get(id).cloned().unwrap_or_default())
    }
}

impl EnrollmentStore for MemoryStore {
    async fn add_enroll_token(&self, token: EnrollToken) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.enroll_tokens.contains_key(&token.hash) {
            return Err(StoreError::Backend(
                "this enrollment token exists already".into(),
            ));
        }
        inner.enroll_tokens.insert(token.hash, (token, false));
        Ok(())
    }

    async fn enroll(&self, enrollment: Enrollment) -> Result<EnrollOutcome, StoreError> {
        let mut inner = self.lock();
        let Some((token, used)) = inner.enroll_tokens.get_mut(&enrollment.hash) else {
            return Ok(EnrollOutcome::Unknown);
        };
        if *used || token.expires_at <= enrollment.at {
            let row = Some((*used, token.expires_at));
            return Ok(EnrollOutcome::refused(row, enrollment.at));
        }
        // Taken whatever the host: presented for the wrong one, it is spent.
        *used = true;
        let token = token.clone();
        let new_host = enrollment::may_claim_host(&enrollment, &token)
            && inner.enrolled_hosts.insert(enrollment.host.clone());
        let outcome = EnrollOutcome::taken(&enrollment, token.clone(), new_host);
        inner
            .audit
            .append(enrollment::audit_event(&enrollment, &token, &outcome));
        Ok(outcome)
    }
}

impl AuditLogStore for MemoryStore {
    async fn audit_records(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<audit::Record>, StoreError> {
        Ok(self
            .lock()
            .audit
            .records()
            .iter()
            .filter(|record| record.seq > after_seq)
            .take(limit)
            .cloned()
            .collect())
    }
}

impl PolicyStore for MemoryStore {
    async fn push_policy(&self, new: NewPolicy) -> Result<StoredPolicy, StoreError> {
        let mut inner = self.lock();
        let version = inner.policy.as_ref().map_or(0, |p| p.version) + 1;
        let stored = StoredPolicy::numbered(version, new);
        inner.audit.append(policy::audit_event(&stored));
        inner
            .policy_votes
            .retain(|vote| vote.sha256 != stored.sha256);
        inner.policy = Some(stored.clone());
        Ok(stored)
    }

    async fn add_policy_vote(
        &self,
        vote: PolicyVote,
        since: SystemTime,
    ) -> Result<Vec<PolicyVote>, StoreError> {
        let mut inner = self.lock();
        inner.audit.append(policy::vote_audit_event(&vote));
        inner
            .policy_votes
            .retain(|v| !(v.sha256 == vote.sha256 && v.admin == vote.admin));
        let sha256 = vote.sha256.clone();
        inner.policy_votes.push(vote);
        let mut votes: Vec<PolicyVote> = inner
            .policy_votes
            .iter()
            .filter(|v| v.sha256 == sha256 && v.at >= since)
            .cloned()
            .collect();
        votes.sort_by(|a, b| (a.at, &a.admin).cmp(&(b.at, &b.admin)));
        Ok(votes)
    }

    async fn current_policy(&self) -> Result<Option<StoredPolicy>, StoreError> {
        Ok(self.lock().policy.clone())
    }
}

impl super::ChatOutboxStore for MemoryStore {
    async fn put_outbox_row(&self, row: super::OutboxRow) -> Result<(), StoreError> {
        let key = (row.platform.clone(), row.request_id.clone());
        self.lock().chat_outbox.insert(key, row);
        Ok(())
    }

    async fn remove_outbox_row(&self, id: &RequestId, platform: &str) -> Result<(), StoreError> {
        self.lock()
            .chat_outbox
            .remove(&(platform.to_owned(), id.clone()));
        Ok(())
    }

    async fn outbox_rows(&self, platform: &str) -> Result<Vec<super::OutboxRow>, StoreError> {
        Ok(self
            .lock()
            .chat_outbox
            .values()
            .filter(|row| row.platform == platform)
            .cloned()
            .collect())
    }

    async fn lease_outbox(
        &self,
        platform: &str,
        holder: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let lease = inner
            .chat_leases
            .entry(platform.to_owned())
            .or_insert_with(|| (holder.to_owned(), until));
        if lease.0 == holder || lease.1 < now {
            *lease = (holder.to_owned(), until);
            return Ok(true);
        }
        Ok(false)
    }

    async fn accept_inbound_once(
        &self,
        platform: &str,
        key: &str,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.chat_seen.retain(|_, kept| *kept >= now);
        let entry = (platform.to_owned(), key.to_owned());
        if inner.chat_seen.contains_key(&entry) {
            return Ok(false);
        }
        inner.chat_seen.insert(entry, until);
        Ok(true)
    }
}
