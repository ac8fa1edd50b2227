//! Size limits the server enforces on what agents and reviewers send. Agents truncate or
//! summarise (argv) before submitting rather than have a request refused.

/// Request ids: room for a UUID, a ULID or a host-prefixed counter.
pub const MAX_ID_LEN: usize = 128;
/// A DNS name is at most 253 characters.
pub const MAX_HOST_LEN: usize = 253;
/// Owner and reviewer identities (OIDC subjects, emails, API token names).
pub const MAX_IDENTITY_LEN: usize = 256;
/// Agent names, rule names, versions.
pub const MAX_NAME_LEN: usize = 256;
/// Free-text reasons given by reviewers and agents.
pub const MAX_REASON_LEN: usize = 1024;
/// PATH_MAX on Linux.
pub const MAX_PATH_LEN: usize = 4096;
/// Reviewers cannot judge more than this anyway; the agent elides the middle.
pub const MAX_ARGV_ENTRIES: usize = 256;
pub const MAX_ARG_LEN: usize = 4096;
/// Bytes of all argv entries together.
pub const MAX_ARGV_TOTAL_LEN: usize = 64 * 1024;
/// Environment entries of an exec (`NAME=VALUE`), masked on the host; the agent reads at
/// most this many and this much from the stopped process.
pub const MAX_ENV_ENTRIES: usize = 512;
/// Bytes of all environment entries together.
pub const MAX_ENV_TOTAL_LEN: usize = 64 * 1024;
/// Longest textual IPv6 address with an IPv4 tail is 45 bytes.
pub const MAX_ADDRESS_LEN: usize = 64;
/// Request context: ancestors walked up from the paused process (the agent walks 16).
pub const MAX_ANCESTRY: usize = 32;
/// A task's comm is 16 bytes; escaping control characters can make it up to 4x longer.
pub const MAX_COMM_LEN: usize = 64;
/// DNS names a destination was looked up as.
pub const MAX_HOSTNAMES: usize = 16;
/// Bytes of all strings of a request context together.
pub const MAX_CONTEXT_TOTAL_LEN: usize = 64 * 1024;
/// A declared intent's text: a sentence or a paragraph, not a document.
pub const MAX_INTENT_LEN: usize = 1024;
/// A declared intent's model, session, tool-call and user-request ids.
pub const MAX_INTENT_FIELD_LEN: usize = 256;
