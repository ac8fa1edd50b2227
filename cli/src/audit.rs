//! `belay audit verify`: checks the audit log of a belay-server database file, with
//! belay-server's own verifier (read-only; the server may keep running).
use std::path::PathBuf;

use anyhow::bail;
use belay_audit::{self as audit, Report};
use clap::Subcommand;
use serde_json::json;

use crate::Output;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints of a belay-server database; print
    /// the first edited, removed or reordered record (and fail).
    Verify {
        /// The belay-server database file.
        #[arg(long, env = "BELAY_DB")]
        db: PathBuf,
        /// Public key of the checkpoints (hex, as belay-server logs it at start).
        /// Default: the one of --audit-key.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// Signing key to take the public key from. Default: `<db>.audit-key`.
        #[arg(long, value_name = "PATH")]
        audit_key: Option<PathBuf>,
    },
    /// Print belay-server's audit records in order (needs --server).
    Log {
        /// Only records with a sequence number above N.
        #[arg(long, default_value_t = 0, value_name = "N")]
        after: u64,
        /// At most N records. Default: all.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
}

pub fn run(command: &AuditCommand, output: Output) -> anyhow::Result<()> {
    let AuditCommand::Verify {
        db,
        public_key,
        audit_key,
    } = command
    else {
        bail!("`audit log` reads belay-server's log: add --server URL");
    };
    let key = audit::resolve_public_key(db, public_key.as_deref(), audit_key.as_deref())?;
    let report = audit::verify(db, &key)?;
    match output {
        Output::Json => println!(
            "{}",
            crate::render::json_pretty(&to_json(&report, &audit::public_key_hex(&key)))?
        ),
        Output::Table => {
            if report.is_intact() {
                println!(
                    "audit: {} records intact, {} checkpoints verified with key {}",
                    report.records, report.checkpoints, report.key_id
                );
                if report.unsigned_tail > 0 {
                    println!(
                        "audit: unsigned tail: {} records after the last checkpoint",
                        report.unsigned_tail
                    );
                }
            }
        }
    }
    if let Some(problem) = &report.first_problem {
        bail!("audit: {problem}");
    }
    Ok(())
}

fn to_json(report: &Report, public_key: &str) -> serde_json::Value {
    json!({
        "intact": report.is_intact(),
        "records": report.records,
        "checkpoints": report.checkpoints,
        "unsigned_tail": report.unsigned_tail,
        "key_id": report.key_id,
        "public_key": public_key,
        "first_problem": report.first_problem.as_ref().map(|problem| json!({
            "seq": problem.seq,
            "what": problem.what,
        })),
    })
}

#[cfg(test)]
mod tests {
    use belay_audit::Problem;

    use super::*;

    #[test]
    fn json_names_the_first_problem() {
        let report = Report {
            records: 57,
            checkpoints: 0,
            unsigned_tail: 56,
            key_id: "0011223344556677".into(),
            first_problem: Some(Problem {
                seq: 57,
                what: "hash does not match its contents (edited?)".into(),
            }),
        };
        let value = to_json(&report, "ab");
        assert_eq!(value["intact"], false);
        assert_eq!(value["first_problem"]["seq"], 57);
        assert_eq!(value["public_key"], "ab");
    }
}
