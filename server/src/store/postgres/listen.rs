//! Replicas learn of each other's changes through LISTEN/NOTIFY.
//!
//! Every transaction that inserts a new request or resolves one sends, before its
//! COMMIT, a notification on [`CHANNEL`] naming the store it came from and the changes;
//! PostgreSQL delivers it to listeners only if, and once, the transaction commits. Each
//! store keeps a connection that listens, reopened when it drops, and hands on what other
//! stores did. Changes committed while that connection is down are not replayed: agents
//! learn of those when they resubmit.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use belay_proto::domain::RequestId;
use futures_util::FutureExt as _;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Notification};
use tokio_util::sync::CancellationToken;

use super::super::RemoteChange;

pub(super) const CHANNEL: &str = "belay_changes";
/// PostgreSQL refuses payloads of 8000 bytes or more; changes are split below that.
const MAX_PAYLOAD: usize = 7000;
/// Wait between attempts to reopen the listening connection.
const RETRY: Duration = Duration::from_secs(1);

/// Where changes of other stores go: the receiver handed out by `remote_changes`, if any.
pub(super) type Subscriber = Arc<Mutex<Option<mpsc::UnboundedSender<RemoteChange>>>>;
/// Where fleet policy versions other stores pushed go (`remote_policy_changes`).
pub(super) type PolicySubscriber = Arc<Mutex<Option<mpsc::UnboundedSender<u64>>>>;

/// The payloads announcing `changes` made by the store `origin`.
pub(super) fn payloads(origin: &str, changes: &[RemoteChange]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut entries = Vec::new();
    let mut size = origin.len() + 32;
    for change in changes {
        let entry = match change {
            RemoteChange::Submitted(id) => json!(["submitted", id.as_str()]),
            RemoteChange::Resolved(id) => json!(["resolved", id.as_str()]),
        };
        let entry_size = entry.to_string().len() + 1;
        if size + entry_size > MAX_PAYLOAD && !entries.is_empty() {
            payloads.push(json!({"origin": origin, "changes": entries}).to_string());
            entries = Vec::new();
            size = origin.len() + 32;
        }
        size += entry_size;
        entries.push(entry);
    }
    if !entries.is_empty() {
        payloads.push(json!({"origin": origin, "changes": entries}).to_string());
    }
    payloads
}

/// The payload announcing version `version` of the fleet policy, stored by `origin`.
/// A message of its own shape, so that an older replica ignores it (with a warning)
/// rather than misreading it.
pub(super) fn policy_payload(origin: &str, version: u64) -> String {
    json!({"origin": origin, "policy": version}).to_string()
}

/// The policy version of a policy payload: `None` if it is not one, `Some(None)` if it
/// comes from `own`.
fn parse_policy(payload: &str, own: &str) -> Option<Option<u64>> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let version = value.get("policy")?.as_u64()?;
    Some((value.get("origin")?.as_str()? != own).then_some(version))
}

/// The changes of a payload, unless it comes from `own` (or is not one of ours).
fn parse(payload: &str, own: &str) -> Option<Vec<RemoteChange>> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    if value.get("origin")?.as_str()? == own {
        return Some(Vec::new());
    }
    value
        .get("changes")?
        .as_array()?
        .iter()
        .map(|entry| {
            let id = RequestId::new(entry.get(1)?.as_str()?).ok()?;
            match entry.get(0)?.as_str()? {
                "submitted" => Some(RemoteChange::Submitted(id)),
                "resolved" => Some(RemoteChange::Resolved(id)),
                _ => None,
            }
        })
        .collect()
}

/// A connection that listens on [`CHANNEL`], with the notifications it receives.
pub(super) struct Listening {
    _client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

/// Opens a connection and starts listening; returns once LISTEN is in effect, so that
/// nothing committed afterwards is missed.
pub(super) async fn listen(config: &Config) -> Result<Listening, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (sender, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if sender.send(notification).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "PostgreSQL listening connection lost");
                    return;
                }
                None => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Listening {
        _client: client,
        notifications,
    })
}

/// Hands on the changes of other stores until `stop`, reopening the connection when it
/// drops.
pub(super) async fn run(
    config: Config,
    mut listening: Listening,
    origin: String,
    subscriber: Subscriber,
    policies: PolicySubscriber,
    stop: CancellationToken,
) {
    loop {
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return,
                notification = listening.notifications.recv() => notification,
            };
            let Some(notification) = notification else {
                break;
            };
            if let Some(version) = parse_policy(notification.payload(), &origin) {
                let mut policies = policies.lock().unwrap_or_else(PoisonError::into_inner);
                if let (Some(version), Some(sender)) = (version, policies.as_ref())
                    && sender.send(version).is_err()
                {
                    *policies = None;
                }
                continue;
            }
            let Some(changes) = parse(notification.payload(), &origin) else {
                tracing::warn!(payload = notification.payload(), "unknown notification");
                continue;
            };
            let mut subscriber = subscriber.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(sender) = subscriber.as_ref() {
                for change in changes {
                    if sender.send(change).is_err() {
                        // Nobody follows the changes any more.
                        *subscriber = None;
                        break;
                    }
                }
            }
        }
        listening = loop {
            if tokio::time::timeout(RETRY, stop.cancelled())
                .map(|r| r.is_ok())
                .await
            {
                return;
            }
            match listen(&config).await {
                Ok(listening) => {
                    tracing::info!("listening to other replicas again");
                    break listening;
                }
                Err(err) => tracing::warn!(error = %err, "cannot listen to other replicas"),
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &str) -> RequestId {
        RequestId::new(value).unwrap()
    }

    #[test]
    fn payloads_round_trip_and_own_changes_are_skipped() {
        let changes = vec![
            RemoteChange::Submitted(id("a")),
            RemoteChange::Resolved(id("a")),
            RemoteChange::Resolved(id("b.c:d-e_f")),
        ];
        let payloads = payloads("store-1", &changes);
        assert_eq!(payloads.len(), 1);
        assert_eq!(parse(&payloads[0], "store-2"), Some(changes));
        assert_eq!(parse(&payloads[0], "store-1"), Some(Vec::new()));
        assert_eq!(parse("not json", "store-2"), None);
        assert_eq!(
            parse(r#"{"origin":"x","changes":[["renamed","a"]]}"#, "y"),
            None
        );
    }

    #[test]
    fn policy_payloads_round_trip_and_are_not_request_changes() {
        let payload = policy_payload("store-1", 7);
        assert_eq!(parse_policy(&payload, "store-2"), Some(Some(7)));
        assert_eq!(parse_policy(&payload, "store-1"), Some(None));
        assert_eq!(parse(&payload, "store-2"), None);
        let requests = payloads("store-1", &[RemoteChange::Resolved(id("a"))]);
        assert_eq!(parse_policy(&requests[0], "store-2"), None);
    }

    #[test]
    fn many_changes_are_split_below_the_payload_limit() {
        let changes: Vec<RemoteChange> = (0..500)
            .map(|n| RemoteChange::Resolved(id(&format!("{n:0>100}"))))
            .collect();
        let payloads = payloads("store-1", &changes);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < 8000, "{}", payload.len());
            back.extend(parse(payload, "other").unwrap());
        }
        assert_eq!(back, changes);
    }
}
