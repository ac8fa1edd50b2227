//! The PostgreSQL schema and its migrations, run at start under an advisory lock so that
//! replicas starting together migrate once.

use tokio_postgres::Client;

use super::super::StoreError;
use super::audit_log;

/// Key of the advisory lock held while migrating ("belay" + 2).
const MIGRATION_LOCK: i64 = 0x6265_6c61_7902;

/// Schema migrations, in order: entry `i` brings the schema from version `i` to `i + 1`.
/// Never edit one that has shipped; add the next. The numbering follows SQLite's.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    audit_log::MIGRATION,
    MIGRATION_3,
    super::policy::MIGRATION,
    MIGRATION_5,
    super::policy::MIGRATION_VOTES,
];

/// Every host that ever enrolled (see `store::enrollment`), filled from the audit log's
/// accepted enrollments.
const MIGRATION_5: &str = r#"
CREATE TABLE enrolled_hosts (
    host TEXT COLLATE "C" PRIMARY KEY,
    first_enrolled_at BIGINT NOT NULL
);
INSERT INTO enrolled_hosts (host, first_enrolled_at)
    SELECT body::jsonb ->> 'host', MIN(at) FROM audit
    WHERE kind = 'enrollment' AND body::jsonb ->> 'result' = 'enrolled'
        AND body::jsonb ->> 'host' IS NOT NULL
    GROUP BY 1
    ON CONFLICT DO NOTHING;
"#;

/// Requests: protobuf blobs plus the columns that are queried, as in SQLite. Ids compare
/// bytewise (`COLLATE "C"`) so that ties list in the same order whatever the database's
/// locale.
const MIGRATION_1: &str = r#"
CREATE TABLE requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    created_secs BIGINT NOT NULL,
    created_nanos BIGINT NOT NULL,
    deadline_secs BIGINT NOT NULL,
    deadline_nanos BIGINT NOT NULL,
    request BYTEA NOT NULL,
    resolution BYTEA,
    CHECK ((state = 'pending') = (resolution IS NULL))
);
-- Only pending requests are listed, expired and waited for: partial indexes stay as
-- small as the pending set however many decided requests accumulate.
CREATE INDEX requests_pending_by_deadline
    ON requests (deadline_secs, deadline_nanos, id) WHERE state = 'pending';
CREATE INDEX requests_pending_by_creation
    ON requests (created_secs, created_nanos, id) WHERE state = 'pending';
"#;

/// Grants, quorum votes and enrollment tokens (times in nanoseconds since the epoch).
const MIGRATION_3: &str = r#"
CREATE TABLE grants (
    host TEXT COLLATE "C" NOT NULL,
    agent TEXT COLLATE "C",
    action TEXT COLLATE "C" NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('allow', 'deny')),
    reviewer TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_request TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    scope TEXT NOT NULL CHECK (scope IN ('agent', 'host')),
    granted_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX grants_by_key ON grants (host, action, expires_at);
CREATE TABLE votes (
    request_id TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    reviewer TEXT COLLATE "C" NOT NULL,
    reason TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_secs BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (request_id, reviewer)
);
CREATE TABLE enroll_tokens (
    hash BYTEA PRIMARY KEY,
    host TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
"#;

/// Brings the schema to the newest version this code knows, in one transaction.
pub(super) async fn migrate(client: &Client, target: &str) -> Result<(), StoreError> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|err| open(target, err))?;
    let result = migrate_locked(client, target).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client
        .batch_execute(end)
        .await
        .map_err(|err| open(target, err))?;
    result
}

async fn migrate_locked(client: &Client, target: &str) -> Result<(), StoreError> {
    let sql = |err| open(target, err);
    let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations");
    // Held until COMMIT: a replica starting at the same time waits here, then finds the
    // schema up to date (each statement below reads what committed before it began).
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(sql)?;
    let versioned: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(sql)?
        .get(0);
    if !versioned {
        let tables: Vec<String> = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 ORDER BY tablename",
                &[],
            )
            .await
            .map_err(sql)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !tables.is_empty() {
            return Err(StoreError::Open {
                path: target.into(),
                problem: format!(
                    "it is not a belay-server database (it has no schema_version table \
                     but other tables: {})",
                    tables.join(", ")
                )
                .into(),
            });
        }
        client
            .batch_execute(
                "CREATE TABLE schema_version (
                     version BIGINT PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(sql)?;
    }
    let found: i64 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(sql)?
        .get(0);
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: target.into(),
            found,
            known,
        });
    }
    let applied = usize::try_from(found).map_err(|_| StoreError::Open {
        path: target.into(),
        problem: format!("schema_version holds version {found}").into(),
    })?;
    for (version, migration) in (1..=known).zip(MIGRATIONS).skip(applied) {
        client.batch_execute(migration).await.map_err(sql)?;
        client
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(sql)?;
        tracing::info!(db = target, version, "database schema migrated");
    }
    Ok(())
}

fn open(target: &str, err: tokio_postgres::Error) -> StoreError {
    StoreError::Open {
        path: target.into(),
        problem: Box::new(err),
    }
}
