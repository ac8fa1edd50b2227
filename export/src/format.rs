//! Output formats: belay's native JSON and OCSF 1.3.0 (mapping in `export/OCSF.md`).

use serde_json::{Value, json};

use crate::config::Format;
use crate::event::{Event, rfc3339};

/// The OCSF schema version events are written against.
pub const OCSF_VERSION: &str = "1.3.0";

pub fn render(event: &Event, format: Format) -> Value {
    match format {
        Format::Native => native(event),
        Format::Ocsf => ocsf(event),
    }
}

/// `{"id", "time", "time_ns", "app", "host", "kind", "event": <producer's record>}`.
pub fn native(event: &Event) -> Value {
    json!({
        "id": event.id,
        "time": rfc3339(event.time_ns),
        "time_ns": event.time_ns,
        "app": event.app,
        "host": event.host,
        "kind": event.kind,
        "event": event.body,
    })
}

/// Server audit actions carry their kind in `type`, agent request views in `kind`.
fn action_kind(action: &Value) -> &str {
    action
        .get("type")
        .or_else(|| action.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Where the action happened: the host the body names, else the producer's.
fn device(event: &Event) -> Value {
    let host = str_field(&event.body, "host")
        .or_else(|| event.body.pointer("/context/host").and_then(Value::as_str))
        .unwrap_or(&event.host);
    // type_id 0: Unknown. belay cannot tell a server from a laptop.
    json!({ "hostname": host, "type_id": 0 })
}

/// Whether this event opens a request (the action about to happen) rather than records
/// what was decided about one.
fn is_request(kind: &str) -> bool {
    matches!(kind, "submitted" | "opened")
}

/// For an agent's policy verdict (kind `policy` with an action: a rule settled the
/// action without a person), OCSF's `action_id`: 1 Allowed, 2 Denied. The server's
/// `policy` records (a fleet policy push) have no action.
fn settled_action_id(event: &Event) -> Option<u8> {
    if event.kind != "policy" || !event.body.get("action").is_some_and(Value::is_object) {
        return None;
    }
    Some(match str_field(&event.body, "policy_action") {
        Some("deny" | "kill") => 2,
        _ => 1,
    })
}

/// API Activity's parts that differ by record: operation, service, activity, status,
/// resource and message.
struct ApiCall {
    operation: String,
    service: &'static str,
    /// 1 Create, 3 Update.
    activity: (u32, &'static str),
    /// 1 Success, 2 Failure.
    status_id: u8,
    resource: Value,
    message: String,
    user: Option<String>,
    src_host: String,
}

fn api_call(event: &Event, action: &Value) -> ApiCall {
    let body = &event.body;
    match event.kind.as_str() {
        // An agent enrolling: the service that issued (or, for a token presented for
        // another host, refused and spent) a certificate.
        "enrollment" => {
            let result = str_field(body, "result").unwrap_or("");
            let host = str_field(body, "host").unwrap_or(&event.host);
            ApiCall {
                operation: "Enroll".into(),
                service: "belay.v1.EnrollService",
                activity: (1, "Create"),
                status_id: if result == "enrolled" { 1 } else { 2 },
                resource: json!({
                    "uid": str_field(body, "certificate_serial")
                        .or_else(|| str_field(body, "token_id"))
                        .unwrap_or(""),
                    "name": host,
                    "type": "belay agent certificate",
                }),
                message: format!("enrollment: {result}"),
                user: None,
                src_host: host.to_owned(),
            }
        }
        // A fleet policy pushed by an admin.
        "policy" => {
            let version = body.get("version").and_then(Value::as_u64).unwrap_or(0);
            ApiCall {
                operation: "PushPolicy".into(),
                service: "belay.v1.ReviewerService",
                activity: (3, "Update"),
                status_id: 1,
                resource: json!({
                    "uid": version.to_string(),
                    "name": "fleet policy",
                    "type": "belay policy",
                }),
                message: format!("policy: version {version} pushed"),
                user: str_field(body, "pushed_by").map(str::to_owned),
                src_host: event.host.clone(),
            }
        }
        // An admin's push counted towards a quorum of admins: nothing is in force yet.
        "policy_vote" => {
            let sha256 = str_field(body, "sha256").unwrap_or("");
            ApiCall {
                operation: "PushPolicy".into(),
                service: "belay.v1.ReviewerService",
                activity: (3, "Update"),
                status_id: 1,
                resource: json!({
                    "uid": sha256,
                    "name": "fleet policy",
                    "type": "belay policy",
                }),
                message: format!("policy_vote: push of sha256 {sha256} counted"),
                user: str_field(body, "admin").map(str::to_owned),
                src_host: event.host.clone(),
            }
        }
        // A decision (or expiry, cancellation) changes a request through belay's
        // reviewer API.
        kind => {
            let request_id = str_field(body, "request_id")
                .map(str::to_owned)
                .or_else(|| {
                    body.get("id")
                        .map(|v| v.to_string().trim_matches('"').to_owned())
                })
                .unwrap_or_default();
            let message = match str_field(body, "verdict") {
                Some(verdict) if !verdict.is_empty() => format!("{kind}: {verdict}"),
                _ => kind.to_owned(),
            };
            ApiCall {
                operation: kind.to_owned(),
                service: "belay.v1.ReviewerService",
                activity: (3, "Update"),
                status_id: 1,
                resource: json!({
                    "uid": request_id,
                    "name": str_field(body, "host").unwrap_or(&event.host),
                    "type": format!("belay {} request", action_kind(action)),
                }),
                message,
                user: str_field(body, "reviewer").map(str::to_owned),
                src_host: event.host.clone(),
            }
        }
    }
}

pub fn ocsf(event: &Event) -> Value {
    let time_ms = event.time_ns.div_euclid(1_000_000);
    let body = &event.body;
    let action = body.get("action").cloned().unwrap_or(Value::Null);
    let pid = body.get("pid").and_then(Value::as_u64);
    let uid = body.get("uid").and_then(Value::as_u64);
    let owner = str_field(body, "owner");
    let mut actor_process = serde_json::Map::new();
    if let Some(pid) = pid {
        actor_process.insert("pid".into(), pid.into());
    }
    if let Some(uid) = uid {
        actor_process.insert("user".into(), json!({ "uid": uid.to_string() }));
    }
    let mut actor = json!({ "app_name": event.app });
    if !actor_process.is_empty() {
        actor["process"] = Value::Object(actor_process);
    }
    if let Some(owner) = owner {
        actor["user"] = json!({ "name": owner });
    }

    // 0 Unknown for a request: held, neither allowed nor denied yet.
    let settled = settled_action_id(event);
    let action_id = settled.unwrap_or(0);
    let (class_uid, category_uid, activity_id, class_name, activity_name, mut out) = match (
        is_request(&event.kind) || settled.is_some(),
        action_kind(&action),
    ) {
        (true, "exec") => {
            let path = str_field(&action, "path").unwrap_or("");
            let name = path.rsplit('/').next().unwrap_or(path);
            let mut process = json!({
                // type_id 1: Regular File.
                "file": { "name": name, "path": path, "type_id": 1 },
            });
            if let Some(argv) = action.get("argv").and_then(Value::as_array) {
                let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
                process["cmd_line"] = words.join(" ").into();
            }
            if let Some(cwd) = str_field(&action, "cwd") {
                process["file"]["parent_folder"] = cwd.into();
            }
            if let Some(pid) = pid {
                process["pid"] = pid.into();
            }
            let out = json!({ "process": process, "action_id": action_id });
            (1007, 1, 1, "Process Activity", "Launch", out)
        }
        (true, _) => {
            let mut dst = serde_json::Map::new();
            if let Some(address) = str_field(&action, "address") {
                dst.insert("ip".into(), address.into());
            }
            if let Some(port) = action.get("port").and_then(Value::as_u64) {
                dst.insert("port".into(), port.into());
            }
            if let Some(path) = str_field(&action, "path") {
                dst.insert("name".into(), path.into());
            }
            if let Some(name) = action
                .get("hostnames")
                .and_then(Value::as_array)
                .and_then(|h| h.first())
                .and_then(Value::as_str)
            {
                dst.insert("hostname".into(), name.into());
            }
            let protocol = str_field(&action, "protocol").unwrap_or("");
            let out = json!({
                "dst_endpoint": dst,
                // direction_id 2: Outbound.
                "connection_info": { "direction_id": 2, "protocol_name": protocol },
                "action_id": action_id,
            });
            (4001, 4, 1, "Network Activity", "Open", out)
        }
        (false, _) => {
            let call = api_call(event, &action);
            let mut api_actor = json!({ "app_name": event.app });
            if let Some(user) = call.user {
                api_actor["user"] = json!({ "name": user });
            }
            actor = api_actor;
            let out = json!({
                "api": {
                    "operation": call.operation,
                    "service": { "name": call.service },
                },
                "src_endpoint": { "hostname": call.src_host },
                "resources": [call.resource],
                "status_id": call.status_id,
                "message": call.message,
            });
            let (activity_id, activity_name) = call.activity;
            (6003, 6, activity_id, "API Activity", activity_name, out)
        }
    };
    let severity_id = severity(&event.kind, body);
    let fields = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": time_ms,
        "severity_id": severity_id,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.id,
            "log_name": event.app,
            "product": {
                "name": "belay",
                "vendor_name": "belay",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "actor": actor,
        // Required by the schema (cloud profile); belay runs on premises as far as it knows.
        "cloud": { "provider": "unknown" },
        "osint": [],
        "unmapped": { "belay_kind": event.kind, "belay": body },
    });
    let out_map = out.as_object_mut().expect("object");
    // API Activity has no device: the host the request came from stays in `unmapped`
    // and the resource name.
    if class_uid != 6003 {
        out_map.insert("device".into(), device(event));
    }
    for (k, v) in fields.as_object().expect("object") {
        out_map.insert(k.clone(), v.clone());
    }
    out
}

/// 1 Informational; 2 Low for expiries; 3 Medium for denials and kills.
pub(crate) fn severity(kind: &str, body: &Value) -> u8 {
    let verdict = str_field(body, "policy_action").or_else(|| str_field(body, "verdict"));
    match (kind, verdict) {
        (_, Some("deny" | "kill")) => 3,
        ("enrollment", _) if str_field(body, "result") != Some("enrolled") => 3,
        ("expired", _) => 2,
        _ => 1,
    }
}
