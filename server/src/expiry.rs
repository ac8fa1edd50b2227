//! Background task that ends requests at their deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::approvals::{Approvals, Store};

/// Upper bound on one sleep: deadlines are wall-clock times while tokio sleeps on the
/// monotonic clock, so a wall-clock jump is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Expires due requests, then sleeps until the earliest deadline (brought forward when a
/// new request has an earlier one), until `shutdown` is cancelled.
pub async fn run_expiry<S: Store>(approvals: Arc<Approvals<S>>, shutdown: CancellationToken) {
    loop {
        if let Err(err) = approvals.expire_due(SystemTime::now()).await {
            tracing::error!(error = %err, "expiring due requests failed");
        }
        let now = SystemTime::now();
        let mut wake_at = match approvals.next_deadline().await {
            Ok(Some(deadline)) => deadline.min(now + MAX_SLEEP),
            Ok(None) | Err(_) => now + MAX_SLEEP,
        };
        // New requests only ever bring the wake-up forward; their deadlines come with
        // the notification, so thousands of submissions a second cost no store reads.
        loop {
            let sleep = wake_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(sleep) => break,
                added = approvals.deadlines_changed() => match added {
                    Some(deadline) => wake_at = wake_at.min(deadline),
                    None => break,
                },
            }
        }
    }
}
