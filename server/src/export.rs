//! Audit export (`--export-config`): tails the audit log into belay-export's spool, from
//! where each configured sink delivers it.
//!
//! The audit log is the source of truth, so nothing is offered that it does not hold:
//! records are read after a cursor (`source-audit-seq` in the spool directory, the last
//! seq made durable in the spool), appended to the spool with one fsync, and only then is
//! the cursor advanced. A crash between the two re-spools a few records under the same
//! ids; the sinks' cursors do the rest. Event id: a UUID derived from the record's seq and
//! hash, the same on every replica and every restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use belay_export::{Event, ExportConfig, Exporter};
use tokio_util::sync::CancellationToken;

use crate::approvals::{Approvals, Store};
use crate::audit::Record;

/// Records read from the store per spool append.
const PAGE: usize = 512;
/// How often the log is polled when idle (changes usually wake the tailer sooner).
const POLL: Duration = Duration::from_millis(500);
const CURSOR_FILE: &str = "source-audit-seq";

/// The exported form of one audit record.
pub fn event_of(record: &Record, host: &str) -> Event {
    let mut body = serde_json::from_str::<serde_json::Value>(&record.body)
        .unwrap_or_else(|_| serde_json::Value::String(record.body.clone()));
    if let Some(map) = body.as_object_mut() {
        map.insert("audit_seq".into(), record.seq.into());
        map.insert("audit_hash".into(), hex(&record.hash).into());
    }
    Event {
        id: belay_export::event::content_id(&[
            b"belay-audit",
            &record.seq.to_be_bytes(),
            &record.hash,
        ]),
        time_ns: record.at,
        app: "belay-server".into(),
        host: host.to_owned(),
        kind: record.kind.clone(),
        body,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_cursor(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse()?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err.into()),
    }
}

/// Replaces the cursor file atomically: temp file, fsync, rename, fsync of the directory.
fn write_cursor(dir: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{CURSOR_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(seq.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Starts the exporter and tails the audit log into it until `stop`.
pub async fn run<S: Store>(
    approvals: Arc<Approvals<S>>,
    config: ExportConfig,
    stop: CancellationToken,
) {
    let dir: PathBuf = config.spool.dir.clone();
    let exporter = match Exporter::start(config) {
        Ok(exporter) => exporter,
        Err(err) => {
            tracing::error!(error = %err, "audit export disabled: cannot open the spool");
            return;
        }
    };
    let mut after = match read_cursor(&dir.join(CURSOR_FILE)) {
        Ok(seq) => seq,
        Err(err) => {
            tracing::error!(error = %err, "audit export disabled: unreadable {CURSOR_FILE}");
            exporter.shutdown().await;
            return;
        }
    };
    tracing::info!(spool = %dir.display(), after_seq = after, "exporting the audit log");
    let host = belay_export::event::local_hostname();
    let mut changes = approvals.changes();
    while !stop.is_cancelled() {
        let records = match approvals.store().audit_records(after, PAGE).await {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(error = %err, "audit export: cannot read the audit log; retrying");
                Vec::new()
            }
        };
        let Some(last) = records.last().map(|r| r.seq) else {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = changes.recv() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            continue;
        };
        let events: Vec<Event> = records.iter().map(|r| event_of(r, &host)).collect();
        if let Err(err) = exporter.append_durable(events).await {
            tracing::error!(error = %err, "audit export: spool write failed; retrying");
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(POLL * 4) => {}
            }
            continue;
        }
        let dir = dir.clone();
        match tokio::task::spawn_blocking(move || write_cursor(&dir, last)).await {
            Ok(Ok(())) => after = last,
            Ok(Err(err)) => {
                // Spooled but the cursor did not move: the records are spooled again
                // next time, under the same ids.
                tracing::error!(error = %err, "audit export: cannot persist {CURSOR_FILE}");
                after = last;
            }
            Err(err) => tracing::error!(error = %err, "audit export cursor write panicked"),
        }
    }
    exporter.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use belay_export::format::{native, ocsf};
    use belay_proto::domain::HostName;

    use super::event_of;
    use crate::approvals::{EnrollToken, Enrollment, IssuedCertificate, MemoryStore};
    use crate::store::{AuditLogStore as _, EnrollmentStore as _};

    /// An enrollment record (no request id, no action) goes through both export forms
    /// with its fields intact; the OCSF mapping does not know the kind and files it as
    /// generic API activity (see the report of the change that added it).
    #[tokio::test]
    async fn an_enrollment_record_exports_in_both_forms() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        store
            .add_enroll_token(EnrollToken {
                hash: [9; 32],
                host: None,
                created_at: now,
                expires_at: now + Duration::from_secs(60),
            })
            .await
            .unwrap();
        store
            .enroll(Enrollment {
                hash: [9; 32],
                host: HostName::new("web-1").unwrap(),
                at: now,
                certificate: IssuedCertificate {
                    serial: "41:02".into(),
                    sha256: "ab".repeat(32),
                },
            })
            .await
            .unwrap();
        let records = store.audit_records(0, 10).await.unwrap();
        let event = event_of(&records[0], "server-1");
        assert_eq!(event.kind, "enrollment");
        assert_eq!(event.body["host"], "web-1");
        assert_eq!(event.body["audit_seq"], 1);
        let native = native(&event);
        assert_eq!(native["kind"], "enrollment");
        assert_eq!(native["event"]["certificate_serial"], "41:02");
        let ocsf = ocsf(&event);
        assert_eq!(ocsf["unmapped"]["belay_kind"], "enrollment");
        assert_eq!(ocsf["unmapped"]["belay"]["token_id"], "0909090909090909");
    }
}
