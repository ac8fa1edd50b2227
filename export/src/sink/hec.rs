//! Splunk HTTP Event Collector: `POST /services/collector/event` with
//! `Authorization: Splunk <token>` and a body of concatenated JSON objects
//! (`{"time": <epoch seconds>, "host", "source", "sourcetype", "event"}`).
//!
//! With `acks = true` every request carries `X-Splunk-Request-Channel: <GUID>`; the
//! answer's `ackId` is polled on `/services/collector/ack` until Splunk reports it indexed.
//! A batch whose ack does not come within `ack_timeout_seconds` (default 60) is sent again (at-least-once;
//! the event ids let the SIEM drop the duplicates).

use std::time::Duration;

use serde_json::{Value, json};

use super::SinkError;
use crate::config::HecConfig;
use crate::event::{Event, random_id};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const ACK_POLL: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct HecSink {
    client: reqwest::Client,
    url: String,
    authorization: String,
    acks: bool,
    channel: String,
    sourcetype: String,
    index: Option<String>,
    ack_timeout: Duration,
}

impl HecSink {
    pub fn new(config: &HecConfig) -> Result<Self, SinkError> {
        let HecConfig {
            url,
            token,
            acks,
            sourcetype,
            index,
            ca_file,
            ack_timeout,
            batch_max: _,
        } = config;
        let client = super::http_client(ca_file.as_deref(), Default::default(), REQUEST_TIMEOUT)?;
        Ok(Self {
            client,
            url: url.clone(),
            authorization: format!("Splunk {token}"),
            acks: *acks,
            channel: random_id(),
            sourcetype: sourcetype.clone(),
            index: index.clone(),
            ack_timeout: *ack_timeout,
        })
    }

    /// The HEC envelope of one event.
    fn envelope(&self, event: &Event, rendered: &Value) -> Value {
        let mut envelope = json!({
            // Epoch seconds with milliseconds, as HEC wants them.
            "time": event.time_ns.div_euclid(1_000_000) as f64 / 1000.0,
            "host": event.host,
            "source": event.app,
            "sourcetype": self.sourcetype,
            "event": rendered,
            "fields": { "event_id": event.id },
        });
        if let Some(index) = &self.index {
            envelope["index"] = index.clone().into();
        }
        envelope
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Value, SinkError> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json")
            .body(body);
        if self.acks {
            request = request.header("X-Splunk-Request-Channel", &self.channel);
        }
        let response = request
            .send()
            .await
            .map_err(|err| SinkError::Retry(format!("HEC {path}: {err}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|err| {
                SinkError::Retry(format!("HEC {path}: bad answer {text:?}: {err}"))
            });
        }
        let problem = format!("HEC {path}: {status}: {}", text.trim());
        match status.as_u16() {
            // Bad token, disabled token, bad request format: retrying will not help until
            // someone fixes the configuration.
            400 | 401 | 403 => Err(SinkError::Config(problem)),
            _ => Err(SinkError::Retry(problem)),
        }
    }

    pub async fn deliver(&mut self, events: &[Event], rendered: &[Value]) -> Result<(), SinkError> {
        let mut body = Vec::new();
        for (event, value) in events.iter().zip(rendered) {
            serde_json::to_writer(&mut body, &self.envelope(event, value))
                .expect("JSON values serialize");
            body.push(b'\n');
        }
        let answer = self.post("/services/collector/event", body).await?;
        if answer.get("code").and_then(Value::as_i64) != Some(0) {
            return Err(SinkError::Retry(format!("HEC refused the batch: {answer}")));
        }
        if !self.acks {
            return Ok(());
        }
        let Some(ack_id) = answer.get("ackId").and_then(Value::as_u64) else {
            return Err(SinkError::Config(format!(
                "acks = true but HEC answered without an ackId ({answer}): is indexer \
                 acknowledgement enabled on the token?"
            )));
        };
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        loop {
            tokio::time::sleep(ACK_POLL).await;
            let body = serde_json::to_vec(&json!({ "acks": [ack_id] })).expect("JSON");
            let acks = self.post("/services/collector/ack", body).await?;
            if acks
                .pointer(&format!("/acks/{ack_id}"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SinkError::Retry(format!(
                    "HEC ack {ack_id} not confirmed within {} s; sending the batch again",
                    self.ack_timeout.as_secs()
                )));
            }
        }
    }
}
