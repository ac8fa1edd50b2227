//! Background task that ends requests at their deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::approvals::{Approvals, Store};

/// Upper bound on one sleep: deadlines are wall-clock times while tokio sleeps on the
/// monotonic clock, so a wall-clock jump is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Expires due requests, then sleeps until the earliest deadline or until a new request
/// arrives, until `shutdown` is cancelled.
pub async fn run_expiry<S: Store>(approvals: Arc<Approvals<S>>, shutdown: CancellationToken) {
    loop {
        if let Err(err) = approvals.expire_due(SystemTime::now()).await {
            tracing::error!(error = %err, "expiring due requests failed");
        }
        let sleep = match approvals.next_deadline().await {
            Ok(Some(deadline)) => deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            Ok(None) | Err(_) => MAX_SLEEP,
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(sleep) => {}
            () = approvals.deadlines_changed() => {}
        }
    }
}
