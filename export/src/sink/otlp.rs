//! OpenTelemetry logs over OTLP/HTTP with the JSON encoding: `POST <url>/v1/logs`,
//! `Content-Type: application/json`, a body that is an `ExportLogsServiceRequest` in the
//! protobuf JSON mapping (camelCase names, 64-bit integers as strings).
//!
//! One log record per event:
//! - `timeUnixNano`: when it happened; `observedTimeUnixNano`: when it was sent.
//! - `severityNumber` 9 INFO, or 13 WARN for denials, kills and refused enrollments.
//! - `body`: the event in the sink's format (native or OCSF) as a structured value
//!   (`kvlistValue`), so a backend can query its fields.
//! - attributes `log.record.uid` (the stable event id: duplicates after a re-send can be
//!   dropped) and `event.name` (`belay.<kind>`).
//! - resource attributes `service.name` (`belay-agent` or `belay-server`) and `host.name`.
//!
//! Answers follow the OTLP/HTTP specification: 200 delivers the batch (records the
//! receiver says it rejected in `partialSuccess` must not be sent again: counted as
//! dropped and logged); 429, 502, 503 and 504 are retried; any other status is a problem
//! someone must fix (retried slowly, never dropped).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Delivery, SinkError};
use crate::config::OtlpConfig;
use crate::event::Event;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct OtlpSink {
    client: reqwest::Client,
    /// The full logs endpoint, `.../v1/logs`.
    endpoint: String,
}

impl OtlpSink {
    pub fn new(config: &OtlpConfig) -> Result<Self, SinkError> {
        let OtlpConfig {
            endpoint,
            headers,
            ca_file,
            batch_max: _,
        } = config;
        let client = super::http_client(ca_file.as_deref(), headers.clone(), REQUEST_TIMEOUT)?;
        Ok(Self {
            client,
            endpoint: endpoint.clone(),
        })
    }

    pub async fn deliver(
        &mut self,
        events: &[Event],
        rendered: &[Value],
    ) -> Result<Delivery, SinkError> {
        let body = serde_json::to_vec(&request(events, rendered, now_ns())).expect("JSON");
        let response = self
            .client
            .post(&self.endpoint)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| SinkError::Retry(format!("OTLP {}: {err}", self.endpoint)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let problem = format!("OTLP {}: {status}: {}", self.endpoint, text.trim());
            return Err(match status.as_u16() {
                429 | 502 | 503 | 504 => SinkError::Retry(problem),
                _ => SinkError::Config(problem),
            });
        }
        // An empty body, or one without partialSuccess, means every record was accepted.
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let rejected = answer
            .pointer("/partialSuccess/rejectedLogRecords")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(0);
        if rejected > 0 {
            let message = answer
                .pointer("/partialSuccess/errorMessage")
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::error!(
                endpoint = %self.endpoint,
                rejected,
                message,
                "OTLP receiver rejected log records; they are not sent again"
            );
            return Ok(Delivery::Rejected(rejected));
        }
        Ok(Delivery::Confirmed)
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The `ExportLogsServiceRequest`: one `resourceLogs` per producer (app and host), in
/// the order the producers first appear.
pub fn request(events: &[Event], rendered: &[Value], observed_ns: i64) -> Value {
    let mut resources: Vec<(&str, &str, Vec<Value>)> = Vec::new();
    for (event, body) in events.iter().zip(rendered) {
        let record = log_record(event, body, observed_ns);
        match resources
            .iter_mut()
            .find(|(app, host, _)| *app == event.app && *host == event.host)
        {
            Some((_, _, records)) => records.push(record),
            None => resources.push((&event.app, &event.host, vec![record])),
        }
    }
    let resource_logs: Vec<Value> = resources
        .into_iter()
        .map(|(app, host, records)| {
            json!({
                "resource": { "attributes": [
                    attribute("service.name", app),
                    attribute("host.name", host),
                ]},
                "scopeLogs": [{
                    "scope": { "name": "belay", "version": env!("CARGO_PKG_VERSION") },
                    "logRecords": records,
                }],
            })
        })
        .collect();
    json!({ "resourceLogs": resource_logs })
}

fn attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn log_record(event: &Event, body: &Value, observed_ns: i64) -> Value {
    let (number, text) = match crate::format::severity(&event.kind, &event.body) {
        1 | 2 => (9, "INFO"),
        _ => (13, "WARN"),
    };
    json!({
        "timeUnixNano": event.time_ns.to_string(),
        "observedTimeUnixNano": observed_ns.to_string(),
        "severityNumber": number,
        "severityText": text,
        "body": any_value(body),
        "attributes": [
            attribute("log.record.uid", &event.id),
            attribute("event.name", &format!("belay.{}", event.kind)),
        ],
    })
}

/// A JSON value as an OTLP `AnyValue`. Integers that fit int64 become `intValue`
/// (written as a string, as the protobuf JSON mapping has it); larger ones are kept
/// exact as strings; null is the empty `AnyValue`.
pub fn any_value(value: &Value) -> Value {
    match value {
        Value::Null => json!({}),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => json!({ "intValue": i.to_string() }),
            (None, _) if n.is_u64() => json!({ "stringValue": n.to_string() }),
            (None, Some(f)) => json!({ "doubleValue": f }),
            (None, None) => json!({ "stringValue": n.to_string() }),
        },
        Value::String(s) => json!({ "stringValue": s }),
        Value::Array(items) => {
            json!({ "arrayValue": { "values": items.iter().map(any_value).collect::<Vec<_>>() } })
        }
        Value::Object(fields) => json!({ "kvlistValue": { "values": key_values(fields) } }),
    }
}

fn key_values(fields: &Map<String, Value>) -> Vec<Value> {
    fields
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
        .collect()
}
