//! Opening the database file: connection settings (WAL, synchronous=FULL, stable
//! plans) and the schema migrations, run in one transaction at start.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::super::StoreError;
use super::{enroll, grants, policy, requests};

/// How long a statement waits for a lock held by another connection (another process
/// on the same file, an operator's `sqlite3`) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Schema migrations, in order: entry `i` brings the schema from version `i` to `i + 1`.
/// Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    super::audit_log::MIGRATION,
    grants::MIGRATION,
    policy::MIGRATION,
    enroll::MIGRATION_ENROLLED_HOSTS,
    policy::MIGRATION_VOTES,
    MIGRATION_7,
    super::chat_outbox::MIGRATION,
    super::chat_outbox::MIGRATION_SEEN,
];

/// Revocable grants, and the host and action (digest) of each request, by which the
/// earlier requests for the same action are found. Rows stored before have no host
/// and action until [`requests::fill_actions`] fills them, right after.
const MIGRATION_7: &str = "
ALTER TABLE grants ADD COLUMN revoked_at INTEGER;
ALTER TABLE grants ADD COLUMN revoked_by TEXT;
ALTER TABLE grants ADD COLUMN revoke_reason TEXT;
-- A grant's id is the request whose decision created it, which creates at most one.
CREATE UNIQUE INDEX grants_by_request ON grants (from_request);
CREATE INDEX grants_in_force ON grants (expires_at) WHERE revoked_at IS NULL;
ALTER TABLE requests ADD COLUMN host TEXT;
ALTER TABLE requests ADD COLUMN action TEXT;
CREATE INDEX requests_by_action ON requests (host, action, created_secs, created_nanos);
";

const MIGRATION_1: &str = "
CREATE TABLE requests (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    created_secs INTEGER NOT NULL,
    created_nanos INTEGER NOT NULL,
    deadline_secs INTEGER NOT NULL,
    deadline_nanos INTEGER NOT NULL,
    request BLOB NOT NULL,
    resolution BLOB,
    CHECK ((state = 'pending') = (resolution IS NULL))
) STRICT;
-- Only pending requests are listed, expired and waited for: partial indexes stay as
-- small as the pending set however many decided requests accumulate.
CREATE INDEX requests_pending_by_deadline
    ON requests (deadline_secs, deadline_nanos, id) WHERE state = 'pending';
CREATE INDEX requests_pending_by_creation
    ON requests (created_secs, created_nanos, id) WHERE state = 'pending';
";

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |problem: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        problem: Box::new(problem),
    };
    // No SQLITE_OPEN_URI: the path is a file name, whatever it looks like.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // The first statement that reads the file: a file that is not SQLite fails here.
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // In-memory databases have no WAL; on a file the pragma does not fail silently.
        tracing::warn!(path = %path.display(), mode, "the database is not in WAL mode");
    }
    // FULL, not NORMAL: in WAL mode NORMAL does not sync the log at commit, so a power
    // loss or kernel crash could take back the last transactions. Here they are decisions
    // that have already been sent to agents and applied (a process allowed or killed):
    // the record of them must be on disk first. Group commit (see the module comment)
    // keeps the cost to one fsync per batch, not per decision.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(open_error)?;
    stable_plans(&connection).map_err(open_error)?;
    // Each job runs in a savepoint, whose journal of pages changed earlier in the batch
    // would otherwise be a temporary file.
    connection
        .pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_error)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}

/// Brings the schema to the newest version this code knows, in one transaction.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_error = |problem: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.to_path_buf(),
        problem,
    };
    let sql_error = |err: rusqlite::Error| open_error(Box::new(err));
    let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations");

    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let versioned: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema \
             WHERE type = 'table' AND name = 'schema_version')",
            [],
            |row| row.get(0),
        )
        .map_err(sql_error)?;
    if !versioned {
        let mut tables = tx
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sql_error)?;
        tables.retain(|name| !name.starts_with("sqlite_"));
        if !tables.is_empty() {
            return Err(open_error(
                format!(
                    "it is not a belay-server database (it has no schema_version table \
                     but other tables: {})",
                    tables.join(", ")
                )
                .into(),
            ));
        }
        tx.execute_batch(
            "CREATE TABLE schema_version (
                 version INTEGER PRIMARY KEY NOT NULL,
                 applied_at INTEGER NOT NULL
             ) STRICT",
        )
        .map_err(sql_error)?;
    }

    let found: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |row| row.get(0),
        )
        .map_err(sql_error)?;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    let applied = usize::try_from(found)
        .map_err(|_| open_error(format!("schema_version holds version {found}").into()))?;
    for (version, sql) in (1..=known).zip(MIGRATIONS).skip(applied) {
        tx.execute_batch(sql).map_err(sql_error)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, unixepoch())",
            [version],
        )
        .map_err(sql_error)?;
        tracing::info!(path = %path.display(), version, "database schema migrated");
    }
    let filled = requests::fill_actions(&tx).map_err(|err| open_error(Box::new(err)))?;
    if filled > 0 {
        tracing::info!(path = %path.display(), requests = filled, "actions of stored requests indexed");
    }
    tx.commit().map_err(sql_error)
}

/// Plans that do not depend on bound values. Without this, SQLite (built with STAT4)
/// re-plans a cached statement whenever a new value is bound to a parameter in a range
/// or `IS` comparison, e.g. every grant lookup and every deadline sweep: profiles
/// showed most of the readers' time in the parser. Our queries are index lookups whose
/// best plan does not change with the values.
pub(in crate::store) fn stable_plans(connection: &Connection) -> rusqlite::Result<()> {
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map(drop)
}
