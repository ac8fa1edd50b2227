//! What belay-server sends down: decisions and refusals of this host's requests, and
//! the fleet policy.
use belay_proto::display::Escaped;
use tracing::{error, info};

use super::Shared;
use crate::{
    requests::Outcome,
    upstream::{Down, Up},
};

/// A decision (or a refusal) from belay-server for one of this host's requests.
pub(super) async fn from_server(shared: Shared, d: Down) {
    match d {
        Down::Decided {
            id,
            verdict,
            reason,
            expired,
        } => {
            let p = {
                let mut book = shared.book();
                book.by_server_id(&id).and_then(|local| book.close(local))
            };
            let Some(mut p) = p else {
                // Already ended here (deadline, process gone): nothing to apply.
                return;
            };
            // The server has it resolved already: nothing to withdraw there.
            p.view.server_id = None;
            info!(request = p.view.id, server_id = %id, %verdict, reason = %Escaped(&reason), "decided on belay-server");
            let outcome = if expired {
                Outcome::Expired(verdict)
            } else {
                Outcome::Decided(verdict)
            };
            shared.end(p, outcome).await;
        }
        Down::Policy { version, text } => {
            let report = shared.install_server_policy(version, &text).await;
            if let Some(up) = &shared.upstream {
                up.send(Up::PolicyReport(report));
            }
        }
        Down::Refused { id, message } => {
            // Never handed to the local socket: one local root could then approve alone
            // what was meant for belay-server's reviewers (and its quorum). It ends now.
            let Some(mut p) = shared.book().refused(&id) else {
                // Already ended here (deadline, process gone): nothing to apply.
                return;
            };
            // The server holds nothing to withdraw.
            p.view.server_id = None;
            let verdict = crate::requests::refused_verdict(p.view.default_verdict);
            error!(request = p.view.id, server_id = %id, %verdict, %message, "belay-server refused the request; it ends without a decision");
            shared.end(p, Outcome::Refused(verdict)).await;
        }
    }
}
